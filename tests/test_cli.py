import json
import subprocess
import sys

import numpy as np
import pytest

from seal_fast.cli import main
from seal_fast.store import write_store

from conftest import blobs


@pytest.fixture
def store(tmp_path):
    Zs, y = blobs(n=300, k=3, spaces=2, seed=21)
    return write_store(tmp_path / "feats", spaces={"a": Zs[0], "b": Zs[1]}, labels=y)


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_info(capsys):
    rc, out, _ = run(capsys, "info")
    info = json.loads(out)
    assert rc == 0 and "compiled_ops" in info and "efficientnet-lite0" in info["backbones"]


def test_public_api_imports():
    import subprocess
    import sys

    code = "from seal_fast import SEAL, SATC, TURTLE, KMeans, FeatureStore, load_model, build_info"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.parametrize("method,extra", [("kmeans", []), ("turtle", ["--iterations", "800"])])
def test_cluster_evaluate_predict(capsys, tmp_path, store, method, extra):
    res = tmp_path / "r.npy"
    rc, out, err = run(capsys, "cluster", store.path, "--method", method, "--n-clusters", 3, "--out", res,
                       "--save-model", tmp_path / "m.pt", "--quiet", *extra)
    assert rc == 0, err
    labels = np.load(res)
    assert labels.dtype == np.int64 and labels.shape == (300,)
    report = json.loads(res.with_suffix(".json").read_text())
    assert report["method"] == method and report["spaces"] == ["a", "b"]
    assert report["n"] == 300 and "fit_s" in report["timings"] and report["backend"]
    rc, out, _ = run(capsys, "evaluate", res, "--truth", store.path)
    metrics = json.loads(out)
    assert rc == 0 and set(metrics) == {"acc", "nmi", "ari", "n"} and metrics["acc"] >= 95
    np.save(tmp_path / "y.npy", store.labels())
    rc, out2, _ = run(capsys, "evaluate", res, "--truth", tmp_path / "y.npy")
    assert json.loads(out2) == metrics
    rc, _, err = run(capsys, "predict", tmp_path / "m.pt", store.path, "--out", tmp_path / "p.npy")
    assert rc == 0, err
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), labels)


def test_single_space_selection(capsys, tmp_path, store):
    res = tmp_path / "r.npy"
    rc, _, err = run(capsys, "cluster", store.path, "--method", "kmeans", "--n-clusters", 3, "--out", res,
                     "--spaces", "b")
    assert rc == 0, err
    assert json.loads(res.with_suffix(".json").read_text())["spaces"] == ["b"]


def _nan_store(tmp_path):
    Z = np.ones((20, 3), np.float32)
    Z[4, 0] = np.nan
    return write_store(tmp_path / "nan", spaces={"a": Z})


@pytest.mark.parametrize("case,args,message", [
    ("k_small", ["--n-clusters", "0"], "at least 1"),
    ("k_large", ["--n-clusters", "1000"], "exceeds"),
    ("space", ["--n-clusters", "3", "--spaces", "zzz"], "no space 'zzz'"),
    ("seal_no_patches", ["--n-clusters", "3", "--method", "seal"], "patch features"),
    ("epochs_kmeans", ["--n-clusters", "3", "--epochs", "2"], "--epochs applies to seal and satc only"),
    ("restarts_turtle", ["--n-clusters", "3", "--method", "turtle", "--restarts", "2"],
     "--restarts applies to seal and satc only, not turtle"),
    ("iterations_satc", ["--n-clusters", "3", "--method", "satc", "--iterations", "5"],
     "--iterations applies to turtle and seal only"),
    ("neighbors_kmeans", ["--n-clusters", "3", "--neighbors", "10"], "--n-neighbors applies to seal and satc"),
    ("label_on_turtle", ["--n-clusters", "3", "--method", "turtle", "--label-on", "phi+phi_hat"],
     "--label-on applies to seal only"),
    ("restart_choice_seal", ["--n-clusters", "3", "--method", "seal", "--restart-choice", "neighbors"],
     "--restart-choice applies to satc only"),
    ("backend_kmeans", ["--n-clusters", "3", "--backend", "reference"], "--backend applies to turtle, seal and satc only"),
    ("stop_tol_satc", ["--n-clusters", "3", "--method", "satc", "--stop-tol", "0.1"],
     "--stop-tol applies to turtle and seal only"),
    ("stop_tol_negative", ["--n-clusters", "3", "--method", "turtle", "--stop-tol", "-0.1"], "stop_tol"),
])
def test_cluster_bad_input(capsys, tmp_path, store, case, args, message):
    res = tmp_path / "r.npy"
    argv = ["cluster", store.path, "--out", res]
    if "--method" not in args:
        argv += ["--method", "kmeans"]
    rc, out, err = run(capsys, *argv, *args)
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not res.exists() and not res.with_suffix(".json").exists()


def test_nan_row_named(capsys, tmp_path):
    s = _nan_store(tmp_path)
    res = tmp_path / "r.npy"
    rc, _, err = run(capsys, "cluster", s.path, "--method", "turtle", "--n-clusters", 2, "--out", res)
    assert rc == 2 and "row 4" in err and not res.exists()


def test_missing_store_and_files(capsys, tmp_path):
    rc, _, err = run(capsys, "cluster", tmp_path / "none", "--method", "kmeans", "--n-clusters", 2,
                     "--out", tmp_path / "r.npy")
    assert rc == 2 and "does not exist" in err
    rc, _, err = run(capsys, "evaluate", tmp_path / "none.npy", "--truth", tmp_path / "y.npy")
    assert rc == 2 and "does not exist" in err
    rc, _, err = run(capsys, "predict", tmp_path / "none.pt", tmp_path, "--out", tmp_path / "r.npy")
    assert rc == 2 and "does not exist" in err


def test_wrong_format_version(capsys, tmp_path, store):
    m = json.loads((store.path / "manifest.json").read_text())
    m["format_version"] = 7
    (store.path / "manifest.json").write_text(json.dumps(m))
    rc, _, err = run(capsys, "cluster", store.path, "--method", "kmeans", "--n-clusters", 2,
                     "--out", tmp_path / "r.npy")
    assert rc == 2 and "format version 7" in err


def test_evaluate_store_without_labels(capsys, tmp_path):
    s = write_store(tmp_path / "nolab", spaces={"a": np.zeros((4, 2), np.float32)})
    np.save(tmp_path / "r.npy", np.zeros(4, np.int64))
    rc, _, err = run(capsys, "evaluate", tmp_path / "r.npy", "--truth", s.path)
    assert rc == 2 and "no labels" in err


def test_unknown_method_exits_nonzero(tmp_path, store):
    with pytest.raises(SystemExit) as exc:
        main(["cluster", str(store.path), "--method", "dbscan", "--n-clusters", "2", "--out", str(tmp_path / "r.npy")])
    assert exc.value.code == 2 and not (tmp_path / "r.npy").exists()


def test_entry_point_runs():
    proc = subprocess.run([sys.executable, "-m", "seal_fast", "info"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and json.loads(proc.stdout)["seal_fast"]


def test_stop_rule_recorded_in_the_report(capsys, tmp_path, store):
    res = tmp_path / "r.npy"
    rc, _, err = run(capsys, "cluster", store.path, "--method", "turtle", "--n-clusters", 3, "--out", res,
                     "--iterations", 400, "--stop-tol", 1.0)
    assert rc == 0, err
    details = json.loads(res.with_suffix(".json").read_text())["fit_details"]
    assert details["labeling_iterations"] == 300 and details["labeling_stopped_early"]  # 3 quiet windows of 100
