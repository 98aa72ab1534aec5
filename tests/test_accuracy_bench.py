"""bench/accuracy.py, the command behind the README's accuracy tables, end to end on a
tiny image set: stores made and cached, rows written, reruns skip done rows, table."""
import json

import numpy as np
from conftest import load_bench

from seal_fast.data.sources import open_source


def test_accuracy_bench_end_to_end(tmp_path):
    digits = open_source("digits")
    keep = np.concatenate([np.flatnonzero(digits.labels == c)[:8] for c in range(3)])
    np.savez(tmp_path / "tiny.npz", images=np.stack([digits.read(int(i)) for i in keep]),
             labels=digits.labels[keep])
    bench = load_bench("accuracy")
    out, table = tmp_path / "rows.jsonl", tmp_path / "table.md"
    args = ["--dataset", str(tmp_path / "tiny.npz"), "--configs", "kmeans", "turtle-2space", "seal", "satc",
            "--seeds", "0", "1", "--cache", str(tmp_path / "cache"), "--out", str(out), "--table", str(table),
            "--iterations", "3", "--epochs", "1", "--max-epochs", "1", "--restarts", "2"]
    bench.main(args)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["config"], r["seed"]) for r in rows] == [(c, s) for c in ("kmeans", "turtle-2space", "seal", "satc")
                                                        for s in (0, 1)]
    for r in rows:
        assert 0 <= r["acc"] <= 100 and r["n"] == 24 and r["fit_s"] >= 0 and r["machine"] and r["date"]
    seal = [r for r in rows if r["config"] == "seal"][0]
    assert seal["spaces"] == ["efficientnet-lite0"] and seal["patches"] == "efficientnet-lite2"
    assert seal["params"]["iterations"] == 3 and seal["params"]["restarts"] == 2
    assert 0 <= seal["triplet_phi"] <= 1 and 0 <= seal["triplet_phi_hat"] <= 1 and len(seal["restart_head_acc"]) == 2
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["tiny-lite0", "tiny-lite2"]
    seal_line = [line for line in table.read_text().splitlines() if line.startswith("| tiny.npz | seal | lite0 | lite2 |")]
    assert len(seal_line) == 1 and "| 2 |" in seal_line[0]  # two seeds in one row
    assert all(f"{k}={v}" in seal_line[0] for k, v in (("iterations", 3), ("epochs", 1), ("restarts", 2)))
    bench.main(args)  # every row is done: nothing is appended
    assert len(out.read_text().splitlines()) == len(rows)
