import json
import os
import subprocess
import sys

import numpy as np
import pytest

from seal_fast.cli import main
from seal_fast.errors import Interrupted
from seal_fast.store import write_store

from conftest import blobs, cli, digest, one_line_error


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
    ("epochs_kmeans", ["--n-clusters", "3", "--epochs", "2"], "--epochs applies to seal only, not kmeans"),
    ("epochs_satc", ["--n-clusters", "3", "--method", "satc", "--epochs", "2"],
     "SATC: --epochs is now --max-epochs"),
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


# --- damaged inputs and outputs: one line, exit 2, nothing half-written ----------------------------
def _fitted_kmeans(tmp_path, store):
    rc = main(["cluster", str(store.path), "--method", "kmeans", "--n-clusters", "3", "--out",
               str(tmp_path / "r.npy"), "--save-model", str(tmp_path / "km.pt"), "--quiet"])
    assert rc == 0
    return tmp_path / "km.pt"


def test_a_bit_flipped_model_is_refused(tmp_path, store):
    import zipfile

    from conftest import cli, one_line_error

    model = _fitted_kmeans(tmp_path, store)
    raw = bytearray(model.read_bytes())
    with zipfile.ZipFile(model) as z:  # the centres' storage is the largest member
        info = max(z.infolist(), key=lambda i: i.file_size)
    local = info.header_offset
    start = local + 30 + int.from_bytes(raw[local + 26:local + 28], "little") + \
        int.from_bytes(raw[local + 28:local + 30], "little")
    raw[start + info.file_size // 2] ^= 0x10
    model.write_bytes(bytes(raw))
    rc, _, err = cli("predict", model, store.path, "--out", tmp_path / "p.npy")
    one_line_error(rc, err, "damaged file (checksum mismatch")
    assert not (tmp_path / "p.npy").exists()


def test_a_model_whose_params_contradict_its_state_is_refused(tmp_path, store):
    import torch

    from conftest import cli, one_line_error

    model = _fitted_kmeans(tmp_path, store)
    payload = torch.load(model, weights_only=True)
    payload["params"]["n_clusters"] = 4  # the state holds K=3 and 3 centres
    torch.save(payload, model)
    rc, _, err = cli("predict", model, store.path, "--out", tmp_path / "p.npy")
    one_line_error(rc, err, "damaged or altered", "n_clusters_=3 disagrees with n_clusters=4")
    payload["state"]["n_clusters_"] = 4  # K agrees now, the centres do not
    torch.save(payload, model)
    rc, _, err = cli("predict", model, store.path, "--out", tmp_path / "p.npy")
    one_line_error(rc, err, "damaged or altered", "cluster_centers_ has shape (3,")


@pytest.mark.parametrize("args,message", [
    (["--method", "turtle", "--iterations", str(10**23)], "iterations must be an integer >= 1 (at most"),
    (["--method", "seal", "--epochs", "0"], "epochs must be an integer >= 1"),
])
def test_absurd_counts_are_one_line(capsys, tmp_path, store, args, message):
    rc, _, err = run(capsys, "cluster", store.path, "--n-clusters", 3, "--out", tmp_path / "r.npy", *args)
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1


def test_evaluate_refuses_what_is_not_labels(capsys, tmp_path):
    (tmp_path / "empty.npy").write_bytes(b"")
    np.savez(tmp_path / "x.npz", y=np.zeros(3))
    np.save(tmp_path / "y.npy", np.zeros(3, np.int64))
    for bad, message in (("empty.npy", "empty file"), ("x.npz", "zip archive")):
        rc, _, err = run(capsys, "evaluate", tmp_path / bad, "--truth", tmp_path / "y.npy")
        assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, err
    rc, _, err = run(capsys, "evaluate", tmp_path / "y.npy", "--truth", tmp_path)
    assert rc == 2 and "is not a feature store" in err


def test_evaluation_labels_are_checked_before_the_fit_and_never_block_a_store(tmp_path, store):
    import time

    from conftest import cli, one_line_error

    np.save(tmp_path / "a.npy", store.space("a"))
    np.save(tmp_path / "none.npy", np.full(store.n, -1))
    t0 = time.monotonic()
    rc, _, err = cli("cluster", tmp_path / "a.npy", "--labels", tmp_path / "none.npy", "--method", "turtle",
                     "--n-clusters", 3, "--iterations", 10**8, "--stop-tol", 0, "--out", tmp_path / "r.npy")
    one_line_error(rc, err, "--labels", "every row is unlabelled")
    assert time.monotonic() - t0 < 60 and not (tmp_path / "r.npy").exists()  # refused before 10^8 iterations
    np.save(store.path / "labels.npy", np.full(store.n, -3))  # a store edited by hand: labels it cannot use
    rc, out, err = cli("cluster", store.path, "--method", "kmeans", "--n-clusters", 3, "--out", tmp_path / "r.npy")
    assert rc == 0 and "no evaluation (" in out and "found -3" in out, err
    report = json.loads((tmp_path / "r.json").read_text())
    assert "evaluation" not in report and "found -3" in report["evaluation_skipped"]


def test_a_bad_row_of_a_store_is_named_with_its_store_and_space(capsys, tmp_path):
    Z, _ = blobs(n=50, k=2, seed=3)
    Z[33, 1] = np.nan
    s = write_store(tmp_path / "nan", spaces={"vis": Z})
    rc, _, err = run(capsys, "cluster", s.path, "--method", "kmeans", "--n-clusters", 2, "--out", tmp_path / "r.npy")
    assert rc == 2 and f"feature store {s.path}: space 'vis': row 33 contains NaN" in err
    c = write_store(tmp_path / "complex", spaces={"vis": Z[:, :2].astype(np.complex64)})
    rc, _, err = run(capsys, "cluster", c.path, "--method", "kmeans", "--n-clusters", 2, "--out", tmp_path / "r.npy")
    assert rc == 2 and "space 'vis': Complex data not supported" in err


def test_the_patch_graph_hint_names_the_option(capsys, tmp_path):
    Z, y = blobs(n=60, k=2, seed=4)
    P = np.random.default_rng(0).normal(size=(60, 4, 3)).astype(np.float32)
    s = write_store(tmp_path / "f", spaces={"vis": Z}, patches=P)
    args = ["cluster", s.path, "--method", "seal", "--n-clusters", 2, "--out", tmp_path / "r.npy", "--quiet",
            "--epochs", 1, "--restarts", 1, "--iterations", 5]
    rc, _, err = run(capsys, *args)
    assert rc == 2 and "--patch-neighbors" in err
    rc, _, err = run(capsys, *args, "--patch-neighbors", 2)
    assert rc == 0, err


def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, store):
    """A 1,000-byte file size limit stands in for a full disk (the write fails with EFBIG)."""
    wrapper = ("import resource, signal, sys\n"
               "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
               "resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))\n"
               "from seal_fast.cli import main\n"
               "sys.exit(main(sys.argv[1:]))\n")
    out = tmp_path / "out"
    out.mkdir()
    np.save(tmp_path / "a.npy", store.space("a"))
    for argv in (["cluster", store.path, "--method", "kmeans", "--n-clusters", 3, "--out", out / "r.npy",
                  "--save-model", out / "m.pt", "--quiet"],
                 ["import", tmp_path / "a.npy", "--out", out / "st"]):
        proc = subprocess.run([sys.executable, "-c", wrapper, *map(str, argv)], capture_output=True, text=True,
                              timeout=300)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and "cannot write" in lines[0], proc.stderr
        assert "nothing was written" in lines[0]
        assert not [p for p in out.rglob("*") if p.is_file()]  # no output, no temporary file


def test_ctrl_c_while_the_modules_load_is_one_line(tmp_path):
    import signal
    import time
    from pathlib import Path

    # On a loaded machine the whole run can end between the moment torch is seen and the
    # signal (exit 0, nothing interrupted): then the interrupt missed the loading, try again.
    # A suite started in the background (`pytest &`) ignores SIGINT, and so would its children:
    # the child restores the default and execs the command (same pid), as a terminal would run it.
    command = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
               "os.execv(sys.executable, [sys.executable, '-m', 'seal_fast', 'info'])")
    for _ in range(5):
        proc = subprocess.Popen([sys.executable, "-c", command], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        # Interrupt as soon as torch's library is mapped: main is then loading the heavy modules
        # (a fixed delay raced with a warm page cache, which loads them in under a second)
        maps, deadline = Path(f"/proc/{proc.pid}/maps"), time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                if "libtorch" in maps.read_text():
                    break
            except OSError:
                pass
            time.sleep(0.002)
        assert proc.poll() is None, "seal-fast info ended before torch was seen loading"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
        if not (proc.returncode == 0 and '"methods"' in out):  # the run had not ended: the signal landed
            break
    assert proc.returncode == 130 and len(err.strip().splitlines()) == 1 and "interrupted" in err, err


def test_torchrun_says_a_bad_input_once(tmp_path):
    """Every rank meets the same error; rank 0 alone prints it (torchrun adds its own summary after)."""
    import os

    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "seal_fast", "cluster", str(tmp_path / "missing"), "--method", "kmeans",
                           "--n-clusters", "3", "--out", str(tmp_path / "r.npy"), "--device", "cpu"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode != 0
    assert (proc.stdout + proc.stderr).count("seal-fast cluster: error:") == 1, proc.stderr[-3000:]


def test_out_must_be_npy_and_not_collide(tmp_path, patch_store):
    before = digest(patch_store.path)
    rc, _, err = cli("cluster", patch_store.path, "--method", "kmeans", "--n-clusters", 3, "--out", tmp_path / "x.json")
    one_line_error(rc, err, "ending in .npy")
    assert not (tmp_path / "x.json").exists()
    rc, _, err = cli("cluster", patch_store.path, "--method", "kmeans", "--n-clusters", 3,
                     "--out", patch_store.path / "manifest.npy")
    one_line_error(rc, err, "would overwrite the input")
    rc, _, err = cli("cluster", patch_store.path, "--method", "kmeans", "--n-clusters", 3, "--out", tmp_path / "r.npy",
                     "--save-model", tmp_path / "r.npy")
    one_line_error(rc, err, "same file")
    rc, _, err = cli("cluster", patch_store.path, "--method", "kmeans", "--n-clusters", 3, "--out", tmp_path / "r.npy",
                     "--save-model", tmp_path / "r.json")
    one_line_error(rc, err, "same file")
    assert digest(patch_store.path) == before and not (tmp_path / "r.npy").exists()


@pytest.mark.parametrize("method,flag,value", [("turtle", "--iterations", 0), ("seal", "--iterations", -3),
                                               ("seal", "--epochs", 0), ("satc", "--max-epochs", -1)])
def test_counts_must_be_positive(tmp_path, patch_store, method, flag, value):
    rc, _, err = cli("cluster", patch_store.path, "--method", method, "--n-clusters", 3, flag, value,
                     "--out", tmp_path / "r.npy")
    one_line_error(rc, err, f"{flag[2:].replace('-', '_')} must be an integer >= 1")
    assert not (tmp_path / "r.npy").exists()


def test_iterations_do_not_apply_to_kmeans(tmp_path, patch_store):
    rc, _, err = cli("cluster", patch_store.path, "--method", "kmeans", "--n-clusters", 3, "--iterations", 5,
                     "--out", tmp_path / "r.npy")
    one_line_error(rc, err, "--iterations applies to turtle and seal only")


def test_outputs_checked_before_the_fit(tmp_path, patch_store):
    (tmp_path / "adir.npy").mkdir()
    rc, _, err = cli("cluster", patch_store.path, "--method", "kmeans", "--n-clusters", 3, "--out", tmp_path / "adir.npy",
                     "--save-model", tmp_path / "m.pt")
    one_line_error(rc, err, "is a directory")
    assert not (tmp_path / "m.pt").exists()
    (tmp_path / "afile").write_text("x")
    rc, _, err = cli("cluster", patch_store.path, "--method", "kmeans", "--n-clusters", 3, "--out", tmp_path / "r.npy",
                     "--save-model", tmp_path / "afile" / "m.pt")
    one_line_error(rc, err, "is a file, not a directory")
    assert not (tmp_path / "r.npy").exists() and not (tmp_path / "r.json").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder(tmp_path, patch_store):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    rc, _, err = cli("cluster", patch_store.path, "--method", "kmeans", "--n-clusters", 3, "--out", ro / "r.npy")
    one_line_error(rc, err, "cannot write")


def test_embed_out_that_is_not_a_store(tmp_path):
    np.savez(tmp_path / "s.npz", images=np.zeros((2, 8, 8), np.uint8))
    (tmp_path / "file").write_text("keep me")
    rc, _, err = cli("embed", tmp_path / "s.npz", "--out", tmp_path / "file", "--quiet")
    one_line_error(rc, err, "is an existing file")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    rc, _, err = cli("embed", tmp_path / "s.npz", "--out", mine, "--quiet")
    one_line_error(rc, err, "not a feature store")
    assert (tmp_path / "file").read_text() == "keep me" and sorted(os.listdir(mine)) == ["thesis.tex"]
    (tmp_path / "junk.pt").write_bytes(b"not weights")
    rc, _, err = cli("embed", tmp_path / "s.npz", "--out", tmp_path / "f", "--weights",
                     f"efficientnet-lite0={tmp_path / 'junk.pt'}", "--quiet")
    one_line_error(rc, err, "could not load efficientnet-lite0 weights")
    # two backbones by default (visual + patch network): a bare path would be a guess
    rc, _, err = cli("embed", tmp_path / "s.npz", "--out", tmp_path / "f", "--weights", tmp_path / "junk.pt",
                     "--quiet")
    one_line_error(rc, err, "several backbones are used (efficientnet-lite0, efficientnet-lite2)")
    rc, _, err = cli("embed", tmp_path / "s.npz", "--out", tmp_path / "f", "--backbone", "efficientnet-lite1",
                     "--weights", tmp_path / "junk.pt", "--quiet")
    one_line_error(rc, err, "could not load efficientnet-lite1 weights")
    assert not (tmp_path / "f").exists()


def test_embed_text_flag_is_now_with_text(tmp_path):
    np.savez(tmp_path / "s.npz", images=np.zeros((2, 8, 8), np.uint8))
    rc, _, err = cli("embed", tmp_path / "s.npz", "--out", tmp_path / "f", "--text", "--quiet")
    one_line_error(rc, err, "--text is now --with-text")
    assert not (tmp_path / "f").exists()


def test_interrupts_exit_130():
    """Both interruptions, the resumable one (embed) and the plain one, exit with 130."""
    from seal_fast.cli import main

    def boom(_args):
        raise Interrupted("interrupted after 3 of 9 images")
    import seal_fast.cli as cli_module

    original = cli_module.cmd_info
    try:
        cli_module.cmd_info = boom
        assert main(["info"]) == 130
        cli_module.cmd_info = lambda _args: (_ for _ in ()).throw(KeyboardInterrupt)
        assert main(["info"]) == 130
    finally:
        cli_module.cmd_info = original
