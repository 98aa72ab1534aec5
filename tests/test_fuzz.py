"""Random bad input at the CLI's readers (cluster, evaluate, predict, import): every run
either succeeds with a valid result or exits with one line and code 2; no other
exception escapes, and nothing is written on failure."""
import contextlib
import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seal_fast import KMeans
from seal_fast.cli import main

DTYPES = [np.float32, np.float64, np.float16, np.int64, np.uint8, np.bool_, np.complex64, "U3", object]
SHAPES = st.lists(st.integers(0, 7), min_size=0, max_size=4).map(tuple)


def array(shape, dtype, fill, rng):
    if dtype == object:
        return np.array([None] * int(np.prod(shape)), dtype=object).reshape(shape)
    a = rng.normal(size=shape) * 3
    if fill == "nan" and a.size:
        a.flat[rng.integers(a.size)] = np.nan
    if fill == "inf" and a.size:
        a.flat[rng.integers(a.size)] = np.inf
    if dtype == "U3":
        return a.astype(str).astype("U3")
    with np.errstate(invalid="ignore"):
        return a.astype(dtype)


def save(path, arr, kind):
    if kind == "npy":
        np.save(path, arr, allow_pickle=True)
    elif kind == "npz":
        np.savez(path, x=arr)
    elif kind == "junk":
        path.write_bytes(b"\x00\x01junk" * 3)
    return path


def call(*argv):
    """(exit code, stderr) of the CLI run in this process."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse: a malformed command line
            rc = exc.code
    return rc, err.getvalue()


def check_outcome(rc, err, out):
    if rc == 0:
        labels = np.load(out)
        assert labels.dtype == np.int64 and labels.ndim == 1
    else:
        assert rc == 2, err
        assert len([line for line in err.strip().splitlines() if line.strip()]) == 1, err
        assert not out.exists()


FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(shape=SHAPES, dtype=st.sampled_from(DTYPES), fill=st.sampled_from(["", "nan", "inf"]),
       kind=st.sampled_from(["npy", "npz", "junk"]), k=st.integers(-2, 9), seed=st.integers(0, 2**64 + 5),
       method=st.sampled_from(["kmeans", "turtle"]))
def test_cluster(tmp_path_factory, shape, dtype, fill, kind, k, seed, method):
    tmp = tmp_path_factory.mktemp("c")
    rng = np.random.default_rng(0)
    src = save(tmp / f"x.{'npz' if kind == 'npz' else 'npy'}", array(shape, dtype, fill, rng), kind)
    out = tmp / "r.npy"
    rc, err = call("cluster", src, "--method", method, "--n-clusters", k, "--seed", seed, "--out", out,
                   "--quiet", *(["--iterations", 3] if method == "turtle" else []))
    check_outcome(rc, err, out)


@FUZZ
@given(pred_shape=SHAPES, truth_shape=SHAPES, pred_dtype=st.sampled_from(DTYPES),
       truth_dtype=st.sampled_from(DTYPES), fill=st.sampled_from(["", "nan", "inf"]))
def test_evaluate(tmp_path_factory, pred_shape, truth_shape, pred_dtype, truth_dtype, fill):
    tmp = tmp_path_factory.mktemp("e")
    rng = np.random.default_rng(1)
    pred = save(tmp / "p.npy", np.abs(array(pred_shape, pred_dtype, fill, rng)), "npy") \
        if pred_dtype not in ("U3", object) else save(tmp / "p.npy", array(pred_shape, pred_dtype, fill, rng), "npy")
    truth = save(tmp / "t.npy", array(truth_shape, truth_dtype, fill, rng), "npy")
    rc, err = call("evaluate", pred, "--truth", truth)
    assert rc in (0, 2), err
    if rc == 2:
        assert len(err.strip().splitlines()) == 1, err


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "m.pt"
    KMeans(3, device="cpu").fit(np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)).save(path)
    return path


@FUZZ
@given(shape=SHAPES, dtype=st.sampled_from(DTYPES), fill=st.sampled_from(["", "nan", "inf"]),
       kind=st.sampled_from(["npy", "npz", "junk"]))
def test_predict(tmp_path_factory, model, shape, dtype, fill, kind):
    tmp = tmp_path_factory.mktemp("p")
    src = save(tmp / f"x.{'npz' if kind == 'npz' else 'npy'}", array(shape, dtype, fill, np.random.default_rng(2)),
               kind)
    out = tmp / "r.npy"
    rc, err = call("predict", model, src, "--out", out)
    check_outcome(rc, err, out)


@FUZZ
@given(shape=SHAPES, dtype=st.sampled_from(DTYPES), fill=st.sampled_from(["", "nan", "inf"]),
       patch_shape=SHAPES, labels_shape=SHAPES, kind=st.sampled_from(["npy", "npz", "junk"]))
def test_import(tmp_path_factory, shape, dtype, fill, patch_shape, labels_shape, kind):
    tmp = tmp_path_factory.mktemp("i")
    rng = np.random.default_rng(3)
    src = save(tmp / f"x.{'npz' if kind == 'npz' else 'npy'}", array(shape, dtype, fill, rng), kind)
    patches = save(tmp / "p.npy", array(patch_shape, np.float32, "", rng), "npy")
    labels = save(tmp / "l.npy", array(labels_shape, np.int64, "", rng), "npy")
    out = tmp / "store"
    rc, err = call("import", src, "--patches", patches, "--labels", labels, "--out", out)
    if rc == 0:
        assert (out / "manifest.json").exists()
    else:
        assert rc == 2 and len(err.strip().splitlines()) == 1, err
        assert not (out / "manifest.json").exists()


NAMES = st.one_of(st.sampled_from(["../x", "../../../x", "a/b", "/abs", "", "..", "a\\b", "n\x00l", "x" * 300, "ok",
                                   "é", "a..b", ".hidden"]), st.text(max_size=12))


def _tree(path):
    return sorted((str(p), p.read_bytes() if p.is_file() else b"") for p in path.rglob("*"))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.lists(NAMES, min_size=1, max_size=2, unique=True), kind=st.sampled_from(["flag", "npz", "pt"]))
def test_import_names(tmp_path_factory, names, kind):
    """Names from every source (--names, .npz members, .pt keys): a store whose every
    file lies inside --out, or one line and exit 2; never a file outside --out."""
    import torch

    tmp = tmp_path_factory.mktemp("n")
    inner = tmp / "a" / "b" / "c"
    inner.mkdir(parents=True)
    arrays = {n: np.full((5, 2), i + 1, np.float32) for i, n in enumerate(names)}
    (tmp / "x.npy").write_bytes(b"bystander")
    if kind == "flag":
        srcs = []
        for i, name in enumerate(names):
            np.save(inner / f"s{i}.npy", arrays[name])
            srcs.append(inner / f"s{i}.npy")
        argv = [*srcs, "--names", *names]
    elif kind == "npz":
        try:
            np.savez(inner / "m.npz", **arrays)
        except (ValueError, OSError, TypeError):  # a name numpy itself cannot store
            return
        argv = [inner / "m.npz"]
    else:
        torch.save({n: torch.from_numpy(a) for n, a in arrays.items()}, inner / "m.pt")
        argv = [inner / "m.pt"]
    out = inner / "st"
    before = _tree(tmp)
    rc, err = call("import", *argv, "--out", out)
    outside = [entry for entry in _tree(tmp) if not entry[0].startswith(str(out))]
    assert outside == before, "a file outside --out changed"
    if rc == 0:
        from seal_fast import FeatureStore

        store = FeatureStore(out)
        assert all((out / store.entry(f"space_{n}")["file"]).resolve().parent == out.resolve() for n in store.spaces)
    else:
        assert rc == 2 and len(err.strip().splitlines()) == 1, err


MAGNITUDES = st.sampled_from([1.0, 1e38, 1e-38, 1e-45, 1e20, 1e-40, 1e30, "mixed"])


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scale=MAGNITUDES, predict_scale=MAGNITUDES, method=st.sampled_from(["kmeans", "turtle"]))
def test_extreme_magnitudes(tmp_path_factory, scale, predict_scale, method):
    """Rows of any float32 magnitude (subnormals, near the largest, mixed) through
    cluster and predict: K-Means finds the clusters, TURTLE either does or refuses in one line."""
    from conftest import blobs

    tmp = tmp_path_factory.mktemp("m")
    Z, y = blobs(n=120, k=3, seed=9)

    def scaled(s):
        factor = np.where(np.arange(len(Z)) % 2, 1e-38, 1e37)[:, None] if s == "mixed" else s
        return (Z.astype(np.float64) * factor).astype(np.float32)

    np.save(tmp / "fit.npy", scaled(scale))
    np.save(tmp / "other.npy", scaled(predict_scale))
    out, model = tmp / "r.npy", tmp / "m.pt"
    rc, err = call("cluster", tmp / "fit.npy", "--method", method, "--n-clusters", 3, "--out", out,
                   "--save-model", model, "--quiet", *(["--iterations", 50] if method == "turtle" else []))
    check_outcome(rc, err, out)
    def usable(s):  # subnormal rows hold 1-2 significant bits (the clusters are gone); 1e38 x 15 is inf
        return s != 1e-45 and bool(np.isfinite(scaled(s)).all())

    if method == "kmeans" and usable(scale):
        assert rc == 0 and len(np.unique(np.load(out))) == 3, err
    if rc == 0:
        out2 = tmp / "p.npy"
        rc2, err2 = call("predict", model, tmp / "other.npy", "--out", out2)
        check_outcome(rc2, err2, out2)
        if method == "kmeans" and usable(scale) and usable(predict_scale):
            assert rc2 == 0 and len(np.unique(np.load(out2))) == 3, err2
