"""Bad input must give a one-line error and a non-zero exit, never wrong output or a
destroyed file. CLI cases run the real command in a subprocess and check the exit
code and that nothing was written or changed; API cases check the message."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from seal_fast import KMeans, SEAL, TURTLE, load_model
from seal_fast.data.sources import ArraySource, FolderSource, open_source
from seal_fast.embed import PARTIAL, embed
from seal_fast.errors import Interrupted, SealFastError
from seal_fast.metrics import evaluate
from seal_fast.store import FeatureStore, write_store

from conftest import blobs, cli, digest, one_line_error


@pytest.fixture
def store(tmp_path):
    Z, y = blobs(n=120, k=3, seed=3)
    P = np.random.default_rng(0).normal(size=(120, 9, 4)).astype(np.float32)
    return write_store(tmp_path / "feats", spaces={"a": Z}, patches=P, labels=y)


# --- 1. outputs that collide with each other or with the inputs ----------------------------------
def test_out_must_be_npy_and_not_collide(tmp_path, store):
    before = digest(store.path)
    rc, _, err = cli("cluster", store.path, "--method", "kmeans", "--n-clusters", 3, "--out", tmp_path / "x.json")
    one_line_error(rc, err, "ending in .npy")
    assert not (tmp_path / "x.json").exists()
    rc, _, err = cli("cluster", store.path, "--method", "kmeans", "--n-clusters", 3,
                     "--out", store.path / "manifest.npy")
    one_line_error(rc, err, "would overwrite the input")
    rc, _, err = cli("cluster", store.path, "--method", "kmeans", "--n-clusters", 3, "--out", tmp_path / "r.npy",
                     "--save-model", tmp_path / "r.npy")
    one_line_error(rc, err, "same file")
    rc, _, err = cli("cluster", store.path, "--method", "kmeans", "--n-clusters", 3, "--out", tmp_path / "r.npy",
                     "--save-model", tmp_path / "r.json")
    one_line_error(rc, err, "same file")
    assert digest(store.path) == before and not (tmp_path / "r.npy").exists()


# --- 2. whole numbers >= 1, checked up front ------------------------------------------------------
@pytest.mark.parametrize("method,flag,value", [("turtle", "--iterations", 0), ("seal", "--iterations", -3),
                                               ("seal", "--epochs", 0), ("satc", "--epochs", -1)])
def test_counts_must_be_positive(tmp_path, store, method, flag, value):
    rc, _, err = cli("cluster", store.path, "--method", method, "--n-clusters", 3, flag, value,
                     "--out", tmp_path / "r.npy")
    one_line_error(rc, err, f"{flag[2:]} must be an integer >= 1")
    assert not (tmp_path / "r.npy").exists()


@pytest.mark.parametrize("cls,param,value,message", [
    (TURTLE, "iterations", 0, "iterations must be an integer >= 1"),
    (TURTLE, "iterations", "10", r"iterations must be an integer >= 1 \(at most 1,000,000,000\), got '10'"),
    (SEAL, "epochs", -2, "epochs must be an integer >= 1"),
    (KMeans, "n_init", 1.5, "n_init must be an integer"),
    (TURTLE, "seed", 2**64, "seed must be an integer in [0, 9223372036854775807]"),
    (TURTLE, "outer_lr", float("nan"), "outer_lr must be a finite number > 0.0"),
    (SEAL, "level", "pixel", "level must be one of"),
    (TURTLE, "backend", "fast", "backend must be one of"),
])
def test_api_parameters_are_checked_before_work(cls, param, value, message):
    Z, _ = blobs(n=60, k=3)
    with pytest.raises(SealFastError, match=message.replace("[", r"\[").replace("]", r"\]")):
        cls(3, device="cpu", **{param: value}).fit(Z)


def test_iterations_do_not_apply_to_kmeans(tmp_path, store):
    rc, _, err = cli("cluster", store.path, "--method", "kmeans", "--n-clusters", 3, "--iterations", 5,
                     "--out", tmp_path / "r.npy")
    one_line_error(rc, err, "--iterations applies to turtle and seal only")


# --- 3. unwritable outputs are found before any work, and nothing is written -------------------------
def test_outputs_checked_before_the_fit(tmp_path, store):
    (tmp_path / "adir.npy").mkdir()
    rc, _, err = cli("cluster", store.path, "--method", "kmeans", "--n-clusters", 3, "--out", tmp_path / "adir.npy",
                     "--save-model", tmp_path / "m.pt")
    one_line_error(rc, err, "is a directory")
    assert not (tmp_path / "m.pt").exists()
    (tmp_path / "afile").write_text("x")
    rc, _, err = cli("cluster", store.path, "--method", "kmeans", "--n-clusters", 3, "--out", tmp_path / "r.npy",
                     "--save-model", tmp_path / "afile" / "m.pt")
    one_line_error(rc, err, "is a file, not a directory")
    assert not (tmp_path / "r.npy").exists() and not (tmp_path / "r.json").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder(tmp_path, store):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    rc, _, err = cli("cluster", store.path, "--method", "kmeans", "--n-clusters", 3, "--out", ro / "r.npy")
    one_line_error(rc, err, "cannot write")


# --- 4. 16-bit and 32-bit images are scaled, not clipped ---------------------------------------------
def test_16_bit_png_is_scaled(tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(root / "deep.png")
    Image.fromarray((ramp // 257).astype(np.uint8), "L").save(root / "eight.png")
    f = np.linspace(0, 1, 64 * 64).reshape(64, 64).astype(np.float32)
    Image.fromarray(f, "F").save(root / "float.tif")
    src = FolderSource(root)
    deep, eight, flt = (src.read(src.files.index(root / name)) for name in ("deep.png", "eight.png", "float.tif"))
    assert deep.dtype == np.uint8 and deep.min() == 0 and deep.max() == 255
    assert np.abs(deep.astype(int) - eight.astype(int)).max() <= 1  # the same picture, not a white square
    assert flt.min() == 0 and flt.max() == 255


# --- 5. decompression bombs are skipped, huge images shrunk on decode ------------------------------
def _bomb_png(path, side=100_000):
    """A PNG header claiming side x side pixels, with no pixel data."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
                     + chunk(b"IEND", b""))


def test_decompression_bomb_is_skipped_and_huge_images_shrink(tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    _bomb_png(root / "bomb.png")
    Image.fromarray(np.full((5000, 4200, 3), 90, np.uint8)).save(root / "big.png")
    Image.fromarray(np.full((30, 30, 3), 10, np.uint8)).save(root / "small.png")
    src = FolderSource(root)
    from seal_fast.data.sources import read_many

    ok, images, failures = read_many(src, range(len(src)))
    assert [f[1] for f in failures] == ["bomb.png"]
    big = images[[src.name_of(i) for i in ok].index("big.png")]
    assert min(big.shape[:2]) <= 2048 and (big == 90).all()


# --- 6. a changed source is not mixed into a resumed embed -------------------------------------------
class _StopAt(ArraySource):
    stop_at = None

    def read(self, index):
        if index == self.stop_at:
            raise KeyboardInterrupt
        return super().read(index)


def test_resume_refuses_a_changed_source(tmp_path):
    rng = np.random.default_rng(0)
    first = rng.integers(0, 255, (12, 16, 16, 3), dtype=np.uint8)
    src = _StopAt(first)
    src.stop_at = 9
    with pytest.raises(Interrupted, match="resume"):
        embed(src, tmp_path / "f", batch_size=4, chunk_size=4, patch_backbone=None, progress=False)
    changed = first.copy()
    changed[:4] = 255 - changed[:4]  # same count, other images
    resumed = embed(ArraySource(changed), tmp_path / "f", batch_size=4, chunk_size=4, patch_backbone=None,
                    progress=False)
    fresh = embed(ArraySource(changed), tmp_path / "g", batch_size=4, chunk_size=4, patch_backbone=None,
                  progress=False)
    np.testing.assert_allclose(resumed.space("efficientnet-lite0"), fresh.space("efficientnet-lite0"), atol=1e-5)


def test_folder_fingerprint_sees_edits(tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "a.png")
    before = FolderSource(root).fingerprint()
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(root / "a.png")
    assert FolderSource(root).fingerprint() != before


def test_small_embeds_keep_their_progress(tmp_path):
    """Chunks close on time as well as on count: an interrupted embed of a few hundred
    images keeps what it finished."""
    rng = np.random.default_rng(1)
    src = _StopAt(rng.integers(0, 255, (40, 16, 16, 3), dtype=np.uint8))
    src.stop_at = 30
    with pytest.raises(Interrupted):
        embed(src, tmp_path / "f", batch_size=8, chunk_seconds=1e-9, patch_backbone=None, progress=False)
    assert len(list((tmp_path / "f" / PARTIAL).glob("chunk_*.npz"))) == 3  # 0-8, 8-16, 16-24


# --- 7. every array agrees with the manifest's n, checked when the store opens -------------------------
def test_manifest_n_disagrees_with_the_arrays(tmp_path, store):
    m = json.loads((store.path / "manifest.json").read_text())
    del m["arrays"]["labels"]
    m["n"] = 150
    (store.path / "manifest.json").write_text(json.dumps(m))
    rc, _, err = cli("cluster", store.path, "--method", "kmeans", "--n-clusters", 3, "--out", tmp_path / "r.npy")
    one_line_error(rc, err, "120 rows where the manifest says n=150")
    assert not (tmp_path / "r.npy").exists()


@pytest.mark.parametrize("edit,message", [
    (lambda m: [], "not a seal_fast feature store manifest"),
    (lambda m: {**m, "n": "sixty"}, "'n' must be a positive integer"),
    (lambda m: {k: v for k, v in m.items() if k != "n"}, "'n' must be a positive integer"),
    (lambda m: {**m, "arrays": ["space_a"]}, "'arrays' must be a mapping"),
    (lambda m: {**m, "arrays": {"space_a": {"shape": [120, 16], "dtype": "float32"}}}, "needs 'file'"),
    (lambda m: {**m, "arrays": {"space_a": {**m["arrays"]["space_a"], "file": "../../etc/passwd"}}},
     "lies outside the store"),
    (lambda m: {**m, "arrays": {"space_a": {**m["arrays"]["space_a"], "file": "/etc/passwd"}}},
     "lies outside the store"),
])
def test_damaged_manifests(store, edit, message):
    m = json.loads((store.path / "manifest.json").read_text())
    (store.path / "manifest.json").write_text(json.dumps(edit(m)))
    with pytest.raises(SealFastError, match=message):
        FeatureStore(store.path)


def test_zero_byte_array_file(store):
    (store.path / "labels.npy").write_bytes(b"")
    with pytest.raises(SealFastError, match="empty file"):
        FeatureStore(store.path)


# --- 8. evaluate: whole numbers only; -1 is "unlabelled" in the truth -------------------------------
def test_evaluate_labels(tmp_path):
    y = np.array([0, 0, 1, 1, 2, 2])
    np.save(tmp_path / "huge.npy", np.array([0, 0, 2.0**63, 2.0**63, 2.0**64, 2.0**64]))
    np.save(tmp_path / "y.npy", y)
    rc, _, err = cli("evaluate", tmp_path / "huge.npy", "--truth", tmp_path / "y.npy")
    one_line_error(rc, err, "whole numbers within the int64 range")
    truth = np.array([0, 0, 1, 1, -1, -1])
    scores = evaluate(truth, np.array([5, 5, 3, 3, 0, 3]))
    assert scores["acc"] == 100.0 and scores["n"] == 4 and scores["n_unlabelled"] == 2
    with pytest.raises(SealFastError, match="-1 \\(unlabelled\\) is the only negative value"):
        evaluate(np.array([0, -2, 1]), np.array([0, 1, 1]))
    with pytest.raises(SealFastError, match="must be >= 0"):
        evaluate(y, np.array([0, 0, 1, 1, -1, 2]))


# --- 9. a model with NaN (or altered) state is refused --------------------------------------------------
def test_model_with_nan_or_altered_state(tmp_path):
    Z, _ = blobs(n=80, k=3)
    TURTLE(3, iterations=5, device="cpu").fit(Z).save(tmp_path / "m.pt")
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    payload["state"]["encoder"]["v.0"][0, 0] = float("nan")
    torch.save(payload, tmp_path / "nan.pt")
    with pytest.raises(SealFastError, match="NaN or inf"):
        load_model(tmp_path / "nan.pt")
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    payload["state"]["feature_dims_"] = [7]
    torch.save(payload, tmp_path / "dims.pt")
    with pytest.raises(SealFastError, match="damaged or altered"):
        load_model(tmp_path / "dims.pt")
    for change in ({"method": "dbscan"}, {"params": {**payload["params"], "n_init": 3}},
                   {"params": {**payload["params"], "iterations": -1}}, {"state": {}}):
        torch.save({**payload, **change}, tmp_path / "t.pt")
        with pytest.raises(SealFastError):
            load_model(tmp_path / "t.pt")


def test_predict_refuses_junk_model_files(tmp_path, store):
    (tmp_path / "junk.pt").write_bytes(os.urandom(300))
    torch.save({"weights": torch.ones(3)}, tmp_path / "foreign.pt")
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))
    (tmp_path / "evil.pt").write_bytes(pickle.dumps(Evil()))
    for name in ("junk.pt", "foreign.pt", "evil.pt"):
        rc, _, err = cli("predict", tmp_path / name, store.path, "--out", tmp_path / "p.npy")
        one_line_error(rc, err, "not a seal_fast model file")
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "p.npy").exists()


# --- 10. npz sources ------------------------------------------------------------------------------------
def test_npz_sources(tmp_path):
    np.savez(tmp_path / "zero.npz", images=np.zeros((3, 0, 5), np.uint8))
    with pytest.raises(SealFastError, match="zero-size axis"):
        open_source(tmp_path / "zero.npz")
    np.savez(tmp_path / "obj.npz", images=np.array([np.zeros((2, 2)), np.zeros((3, 3))], dtype=object))
    with pytest.raises(SealFastError, match="Python objects"):
        open_source(tmp_path / "obj.npz")
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(SealFastError, match="empty file"):
        open_source(tmp_path / "empty.npz")
    (tmp_path / "text.npz").write_text("images,labels\n1,2\n")
    with pytest.raises(SealFastError, match="not a readable .npz archive"):
        open_source(tmp_path / "text.npz")
    np.savez(tmp_path / "ok.npz", images=np.zeros((50, 20, 20), np.uint8))
    data = (tmp_path / "ok.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(SealFastError, match="npz"):
        open_source(tmp_path / "cut.npz").read(0)


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


# --- the Python API's unclear errors ------------------------------------------------------------------
def test_api_inputs(tmp_path):
    with pytest.raises(SealFastError, match="got None"):
        KMeans(2, device="cpu").fit(None)
    model = KMeans(2, device="cpu").fit([[0.0, 1.0], [0.1, 1.0], [5.0, 0.0], [5.1, 0.2]])  # a list of rows
    assert model.labels_.shape == (4,)
    with pytest.raises(SealFastError, match="is a directory"):
        model.save(tmp_path)


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


def test_mixed_size_folder_gives_no_warning(tmp_path):
    import warnings

    from seal_fast.data.preprocess import Preprocessing

    root = tmp_path / "imgs"
    root.mkdir()
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(root / "a.png")
    Image.fromarray(np.zeros((14, 9, 3), np.uint8)).save(root / "b.png")
    src = FolderSource(root)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Preprocessing(32)([src.read(0), src.read(1)])
