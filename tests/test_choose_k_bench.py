"""bench/choose_k.py, the command behind the README's "Choosing K" table: its criteria
on a small mixture and the table it writes."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import load_bench


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))  # its `from accuracy import`
    try:
        yield load_bench("choose_k")
    finally:
        sys.path.pop(0)


def test_every_criterion_scores_every_k(bench):
    X, _ = bench.mixture(4, 1.0, seed=0, n=400)
    row = bench.criteria_row("m", 4, 0, X, kmax=8)
    assert row["eigengap_10nn"]["choice"] == 4 and row["eigengap_20nn"]["choice"] == 4
    for crit in ("stability", "generalisation"):
        assert sorted(row[crit]["raw"]) == list(range(2, 9)) and 2 <= row[crit]["vs_null_choice"] <= 8


def test_the_gaussian_null_keeps_mean_and_covariance(bench):
    X = np.random.default_rng(0).normal(size=(4000, 3)) @ np.array([[2.0, 0, 0], [1, 1, 0], [0, 0, 0.5]]) + 3
    null = bench.gaussian_null(X.astype(np.float32), seed=1)
    np.testing.assert_allclose(null.mean(0), X.mean(0), atol=0.1)
    np.testing.assert_allclose(np.cov(null.T), np.cov(X.T), atol=0.25)


def test_the_table_reports_every_seed_and_the_cost(bench):
    rows = [{"dataset": "digits", "method": "kmeans", "seed": s, "true_k": 10, "chosen_k": k,
             "at_chosen": {"acc": 50.0 + s, "nmi": 40.0}, "at_true": {"acc": 49.0, "nmi": 41.0},
             "search_s": 0.5, "true_k_fit_s": 2.0 + s} for s, k in ((0, 9), (1, 10), (2, 9))]
    text = bench.table(rows)
    assert "| digits | kmeans | 10 | 9, 10, 9 | 51.0 ± 0.8 | 49.0 ± 0.0 | 40.0 ± 0.0 | 41.0 ± 0.0 | 0.5 | 3.0 | 0.25 |" \
        in text


def test_the_graphs_table_gives_every_graph_size_its_choice(bench):
    graphs = {str(k): {"choice": 10 + i, "next": [3, 4], "eigenvalues": []} for i, k in enumerate(bench.GRAPH_SIZES)}
    text = bench.table([{"dataset": "fashion-mnist-train", "true_k": 10, "seed": 2, "n": 10000, "graphs": graphs}])
    header, _, row = text.splitlines()[:3]
    assert header.count("eigengap") == len(bench.GRAPH_SIZES)
    assert row.startswith("| fashion-mnist-train | 10 | 10000 (2) | 10 (3, 4) | 11 (3, 4) |")


def test_turtle_is_stable_across_halves_at_a_separable_mixtures_k(bench):
    X, _ = bench.mixture(3, 1.0, seed=0, n=600)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    at_k = bench.turtle_stability(X, 3, seed=0, rows=300, iterations=300)
    assert at_k > 0.9
    assert bench.turtle_stability(X, 6, seed=0, rows=300, iterations=300) < at_k  # splitting a blob is unstable


def test_the_turtle_table_gives_every_seed_its_choices(bench):
    row = {"dataset": "digits", "true_k": 10, "seed": 1, "rows_per_half": 898,
           "turtle_stability": {"raw_choice": 6, "vs_null_choice": 9, "seconds": 123.4}, "eigengap_10nn": {"choice": 9}}
    assert "| digits | 10 | 1 | 898 | 6 | 9 | 9 | 123 |" in bench.table([row])


def test_the_turtle_command_writes_a_row_per_mixture_and_resumes(bench, tmp_path):
    out = tmp_path / "rows.jsonl"
    argv = ["turtle", "--datasets", "mixtures", "--seeds", "0", "--kmax", "7", "--rows", "150",
            "--iterations", "30", "--out", str(out)]
    bench.main(argv)  # only the mixtures with room above their K in 2..7: K = 3
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["dataset"] for r in rows] == ["mixture-K3-separable", "mixture-K3-overlapping"]
    for r in rows:
        t = r["turtle_stability"]
        assert r["range"] == [2, 7] and r["rows_per_half"] == 150 and sorted(map(int, t["raw"])) == list(range(2, 8))
        assert 2 <= t["raw_choice"] <= 7 and 2 <= t["vs_null_choice"] <= 7 and r["eigengap_10nn"]["choice"] == 3
    bench.main(argv)  # every row already there: nothing is fitted again
    assert out.read_text().count("\n") == 2


def test_every_graph_variant_scores_a_separable_mixture(bench):
    X, _ = bench.mixture(4, 1.0, seed=0, n=400)
    row = bench.variants_row("m", 4, 0, "x", X)
    assert sorted(row["variants"]) == sorted(f"{p}/{g}" for p in bench.PREPARATIONS for g in bench.GRAPHS)
    assert all(2 <= v["choice"] <= 30 and len(v["next"]) == 2 for v in row["variants"].values())
    for prep in bench.PREPARATIONS:  # the either- and weighted graphs keep the four blobs apart
        for how in ("either-10", "either-20", "self-tuning-10"):
            assert row["variants"][f"{prep}/{how}"]["choice"] == 4, (prep, how)


def test_the_graphs_are_symmetric_and_mutual_is_within_either(bench):
    X = np.random.default_rng(3).normal(size=(300, 8)).astype(np.float32)
    either, mutual, tuned = (bench.graph(X, how) for how in ("either-10", "mutual-10", "self-tuning-10"))
    for W in (either, mutual, tuned):
        assert abs(W - W.T).max() == 0
    assert (either > 0).sum(axis=1).min() >= 10
    assert set(zip(*mutual.nonzero())) <= set(zip(*either.nonzero())) and 0 < mutual.nnz < either.nnz
    assert (tuned > 0).nnz == either.nnz and 0 < tuned.data.min() and tuned.data.max() <= 1


def test_the_variants_command_writes_a_row_per_mixture_and_resumes(bench, tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "MIXTURES", [(3, "separable", 1.0)])
    out = tmp_path / "rows.jsonl"
    argv = ["variants", "--datasets", "mixtures", "--seeds", "0", "--out", str(out)]
    bench.main(argv)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["variants"]["as-is/either-10"]["choice"] == 3
    assert "| mixture-K3-separable | 3 | x | as-is | 3 | 3 |" in bench.table(rows)
    bench.main(argv)  # the row is there: nothing is computed again
    assert out.read_text().count("\n") == 1


def test_every_index_scores_every_k_and_finds_a_separable_mixtures_k(bench):
    X, _ = bench.mixture(4, 1.0, seed=0, n=400)
    row = bench.indices_row("m", 4, 0, X, kmax=8, draws=2)
    assert sorted(row["indices"]) == sorted(bench.INDICES) and row["eigengap_10nn"]["choice"] == 4
    for name in bench.INDICES:
        assert row["indices"][name]["choice"] == 4, name
        if name != "gap_first":
            assert sorted(map(int, row["indices"][name]["values"])) == list(range(2, 9))


def test_the_gap_references_fill_the_box_of_the_rows(bench):
    Xp = np.random.default_rng(0).normal(size=(2000, 3)).astype(np.float32) * [1.0, 3.0, 0.5]
    refs = bench.gap_references(Xp, seed=1, draws=2)
    assert len(refs) == 2 and refs[0].shape == Xp.shape and not np.array_equal(refs[0], refs[1])
    for R in refs:
        assert (R.min(0) >= Xp.min(0)).all() and (R.max(0) <= Xp.max(0)).all()
        np.testing.assert_allclose(R.max(0) - R.min(0), Xp.max(0) - Xp.min(0), rtol=0.02)


def test_the_indices_command_writes_a_row_per_mixture_and_seed_and_resumes(bench, tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "MIXTURES", [(3, "separable", 1.0)])
    small = bench.mixture
    monkeypatch.setattr(bench, "mixture", lambda k, std, seed: small(k, std, seed, n=300))
    out = tmp_path / "rows.jsonl"
    argv = ["indices", "--datasets", "mixtures", "--seeds", "0", "1", "--out", str(out)]
    bench.main(argv)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["dataset"], r["seed"]) for r in rows] == [("mixture-K3-separable", 0), ("mixture-K3-separable", 1)]
    assert rows[0]["range"] == [2, 20]
    assert "| mixture-K3-separable | 3 | 2 | 3, 3 | 3, 3 | 3, 3 |" in bench.table(rows)
    bench.main(argv)  # the rows are there: nothing is computed again
    assert out.read_text().count("\n") == 2


def test_the_inputs_command_scores_every_input_of_small_stores_and_resumes(bench, tmp_path):
    from seal_fast.store import write_store

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 60)
    for net in ("lite0", "lite1", "lite2"):  # stores as bench/accuracy.py names them: <dataset>-<net>
        Z = (np.eye(4)[y] @ rng.normal(size=(4, 16)) * 6 + rng.normal(size=(240, 16))).astype(np.float32)
        P = (Z[:, None, :8] + rng.normal(size=(240, 9, 8))).astype(np.float32)
        write_store(tmp_path / f"tiny-{net}", spaces={bench.NETS[net]: Z}, patches=P, labels=y)
    out = tmp_path / "rows.jsonl"
    argv = ["inputs", "--datasets", "tiny", "--seeds", "0", "1", "--cache", str(tmp_path), "--out", str(out)]
    bench.main(argv)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["dataset"], r["seed"], r["true_k"], r["n"]) for r in rows] == [("tiny", 0, 4, 240), ("tiny", 1, 4, 240)]
    for r in rows:
        assert list(r["inputs"]) == list(bench.INPUTS)
        assert all(2 <= v["choice"] <= 30 and len(v["next"]) == 2 for v in r["inputs"].values())
        assert r["inputs"]["lite0"]["choice"] == r["inputs"]["lite2"]["choice"] == 4  # separable blobs
    assert bench.table(rows).splitlines()[2].startswith("| tiny | 4 | 0 | 4 (")
    bench.main(argv)  # the rows are there: nothing is computed again
    assert out.read_text().count("\n") == 2


def test_the_inputs_command_refuses_mixtures(bench, tmp_path, capsys):
    with pytest.raises(SystemExit):
        bench.main(["inputs", "--datasets", "mixtures", "--out", str(tmp_path / "r.jsonl")])
    assert "inputs reads the feature stores" in capsys.readouterr().err
