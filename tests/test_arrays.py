"""Embeddings a user already has: array files straight into the CLI, `seal-fast import`,
and the estimators on numpy memory maps and torch tensors."""
import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from seal_fast import TURTLE, KMeans, pipeline
from seal_fast.cli import main
from seal_fast.errors import SealFastError
from seal_fast.inputs import open_inputs
from seal_fast.models.tensors import to_tensors
from seal_fast.store import FeatureStore

from conftest import blobs, one_line_error


@pytest.fixture
def arrays(tmp_path):
    (a, b), y = blobs(n=240, k=3, spaces=2, seed=8)
    P = (np.eye(3)[y] @ np.random.default_rng(1).normal(size=(3, 6)))[:, None, :] \
        + np.random.default_rng(2).normal(size=(240, 9, 6))
    for name, arr in (("a", a), ("b", b), ("p", P.astype(np.float32)), ("y", y)):
        np.save(tmp_path / f"{name}.npy", arr)
    return tmp_path


def run(*argv):
    return main([str(a) for a in argv])


def test_arrays_in_equal_import_then_cluster(arrays, capsys):
    t = arrays
    assert run("cluster", t / "a.npy", t / "b.npy", "--method", "turtle", "--n-clusters", 3, "--iterations", 300,
               "--out", t / "direct.npy", "--labels", t / "y.npy", "--quiet") == 0
    assert run("import", t / "a.npy", t / "b.npy", "--out", t / "store", "--patches", t / "p.npy",
               "--labels", t / "y.npy") == 0
    store = FeatureStore(t / "store")
    assert store.spaces == ["a", "b"] and store.has("patches") and store.manifest["source"]["kind"] == "import"
    assert run("cluster", t / "store", "--method", "turtle", "--n-clusters", 3, "--iterations", 300,
               "--out", t / "via_store.npy", "--quiet") == 0
    np.testing.assert_array_equal(np.load(t / "direct.npy"), np.load(t / "via_store.npy"))
    report = json.loads((t / "direct.json").read_text())
    assert report["evaluation"]["acc"] > 90 and report["inputs"]["kind"] == "arrays"


def test_seal_with_patches_from_arrays(arrays):
    t = arrays
    common = ["--method", "seal", "--n-clusters", 3, "--iterations", 30, "--epochs", 1, "--restarts", 1, "--quiet"]
    assert run("cluster", t / "a.npy", "--patches", t / "p.npy", "--out", t / "r1.npy", *common,
               "--save-model", t / "m.pt") == 0
    assert run("import", t / "a.npy", "--patches", t / "p.npy", "--out", t / "s") == 0
    assert run("cluster", t / "s", "--out", t / "r2.npy", *common) == 0
    np.testing.assert_array_equal(np.load(t / "r1.npy"), np.load(t / "r2.npy"))
    np.save(t / "other.npy", np.load(t / "a.npy")[:50])  # another name, the same space by position
    assert run("predict", t / "m.pt", t / "other.npy", "--out", t / "p.npy") == 0
    np.testing.assert_array_equal(np.load(t / "p.npy"), np.load(t / "r1.npy")[:50])


def test_npz_and_pt_inputs_and_names(arrays):
    a, b = np.load(arrays / "a.npy"), np.load(arrays / "b.npy")
    np.savez(arrays / "ab.npz", first=a, second=b)
    torch.save({"first": torch.from_numpy(a), "second": torch.from_numpy(b)}, arrays / "ab.pt")
    torch.save(torch.from_numpy(a), arrays / "one.pt")
    for files in (["ab.npz"], ["ab.pt"]):
        inputs = open_inputs([arrays / f for f in files])
        assert inputs.spaces == ["first", "second"] and inputs.n == 240
        np.testing.assert_array_equal(np.asarray(inputs.space("second")), b)
    named = open_inputs([arrays / "one.pt", arrays / "b.npy"], names=["clip", "dino"])
    assert named.spaces == ["clip", "dino"]
    with pytest.raises(SealFastError, match="two spaces are called 'a'"):
        open_inputs([arrays / "a.npy", arrays / "a.npy"])
    with pytest.raises(SealFastError, match="--names gives 1 name"):
        open_inputs([arrays / "a.npy", arrays / "b.npy"], names=["x"])


BAD = {
    "different_n": lambda t: (np.save(t / "x.npy", np.zeros((17, 4), np.float32)), ["a.npy", "x.npy"],
                              "different numbers of rows"),
    "one_d": lambda t: (np.save(t / "x.npy", np.zeros(240, np.float32)), ["x.npy"], "expected a 2-D array"),
    "three_d": lambda t: (None, ["p.npy"], "patch features go with --patches"),
    "strings": lambda t: (np.save(t / "x.npy", np.array([["a", "b"]] * 240)), ["x.npy"], "expected numbers"),
    "nan": lambda t: (np.save(t / "x.npy", np.where(np.arange(240)[:, None] == 57, np.nan,
                                                     np.ones((240, 3), np.float32))), ["x.npy"],
                      "x.npy: row 57 contains NaN or inf"),
    "object_npy": lambda t: (np.save(t / "x.npy", np.array([{"a": 1}] * 240, dtype=object), allow_pickle=True),
                             ["x.npy"], "holds Python objects"),
    "object_npz": lambda t: (np.savez(t / "x.npz", e=np.array([None] * 240, dtype=object)), ["x.npz"],
                             "holds Python objects"),
    "pickle_pt": lambda t: ((t / "x.pt").write_bytes(pickle.dumps({"e": np.zeros((240, 3))})), ["x.pt"],
                            "not a readable tensor file"),
    "k_too_large": lambda t: (None, ["a.npy", "--n-clusters", 1000], "exceeds the number of samples"),
    "patches_other_n": lambda t: (np.save(t / "q.npy", np.zeros((10, 9, 6), np.float32)),
                                  ["a.npy", "--method", "seal", "--patches", "q.npy"], "10 rows for 240 samples"),
    "labels_other_n": lambda t: (np.save(t / "l.npy", np.zeros(7, np.int64)), ["a.npy", "--labels", "l.npy"],
                                 "7 labels for 240 samples"),
    "store_and_patches": lambda t: (None, ["s", "--patches", "p.npy"], "--patches applies to array inputs"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_arrays(arrays, case):
    t = arrays
    if case == "store_and_patches":
        assert run("import", t / "a.npy", "--out", t / "s") == 0
    _, args, message = BAD[case](t)
    argv = [str(t / a) if str(a).endswith((".npy", ".npz", ".pt")) or a == "s" else str(a) for a in args]
    if "--method" not in argv:
        argv += ["--method", "kmeans"]
    if "--n-clusters" not in argv:
        argv += ["--n-clusters", "3"]
    proc = subprocess.run([sys.executable, "-m", "seal_fast", "cluster", *argv, "--out", str(t / "r.npy")],
                          capture_output=True, text=True, timeout=300)
    one_line_error(proc.returncode, proc.stderr, message)
    assert not (t / "r.npy").exists() and not (t / "r.json").exists()


def test_import_refuses_to_write_among_files(arrays):
    (arrays / "full").mkdir()
    (arrays / "full" / "notes.txt").write_text("mine")
    assert run("import", arrays / "a.npy", "--out", arrays / "full") == 2
    assert sorted(p.name for p in (arrays / "full").iterdir()) == ["notes.txt"]


def test_estimators_take_memory_maps_and_tensors_without_a_copy(arrays):
    m = np.load(arrays / "a.npy", mmap_mode="r")
    t = to_tensors([m], "cpu")[0]
    assert t.data_ptr() == m.ctypes.data  # the memory map itself, no copy in RAM
    x = torch.from_numpy(np.load(arrays / "a.npy"))
    assert to_tensors([x], "cpu")[0].data_ptr() == x.data_ptr()
    y = np.load(arrays / "y.npy")
    a = KMeans(3, seed=0, device="cpu").fit(m).labels_
    b = KMeans(3, seed=0, device="cpu").fit(x).labels_
    c = KMeans(3, seed=0, device="cpu").fit(np.load(arrays / "a.npy").astype(np.float64)).labels_
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    assert TURTLE(3, iterations=50, device="cpu").fit(m).labels_.shape == y.shape


def test_big_endian_arrays_through_the_api_and_the_cli(tmp_path):
    Z, y = blobs(n=120, k=3, seed=8)
    big = Z.astype(">f4")
    native = KMeans(3, seed=0, device="cpu").fit([Z]).labels_
    np.testing.assert_array_equal(KMeans(3, seed=0, device="cpu").fit([big]).labels_, native)
    np.testing.assert_array_equal(TURTLE(3, iterations=20, seed=0, device="cpu").fit([big]).labels_,
                                  TURTLE(3, iterations=20, seed=0, device="cpu").fit([Z]).labels_)
    np.save(tmp_path / "be.npy", big)
    assert main(["cluster", str(tmp_path / "be.npy"), "--method", "kmeans", "--n-clusters", "3", "--seed", "0",
                 "--out", str(tmp_path / "r.npy"), "--quiet"]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "r.npy"), native)


def test_a_refused_fit_is_blamed_on_the_arrays_it_used_only(tmp_path):
    """NaN in patches K-Means never reads: the fit's own error (K > N) is the one reported."""
    Z, _ = blobs(n=40, k=3)
    P = np.ones((40, 9, 4), np.float32)
    P[5, 0, 0] = np.nan
    np.save(tmp_path / "z.npy", Z)
    np.save(tmp_path / "p.npy", P)
    with pytest.raises(SealFastError, match="exceeds"):
        pipeline.cluster([tmp_path / "z.npy"], "kmeans", 300, array_options={"patches": tmp_path / "p.npy"})
    with pytest.raises(SealFastError, match=r"p.npy: row 5 contains NaN"):
        pipeline.cluster([tmp_path / "z.npy"], "seal", 3, array_options={"patches": tmp_path / "p.npy"})
