import numpy as np
import pytest
from PIL import Image

from seal_fast.data.preprocess import Preprocessing
from seal_fast.data.builtin import FASHION_MNIST_DIR
from seal_fast.data.decode import UnreadableImage, to_rgb
from seal_fast.data.sources import ArraySource, FolderSource, open_source, read_many
from seal_fast.errors import SealFastError


def _folder(tmp_path):
    root = tmp_path / "imgs"
    (root / "cats").mkdir(parents=True)
    (root / "dogs" / "nested").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(root / "cats" / "a.png")
    Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8), "L").save(root / "cats" / "grey.jpg")
    rgba = rng.integers(0, 255, (12, 10, 4), dtype=np.uint8)
    rgba[..., 3] = 0  # fully transparent: must become white, not black
    Image.fromarray(rgba, "RGBA").save(root / "dogs" / "clear.png")
    Image.fromarray(rng.integers(0, 255, (40, 8, 3), dtype=np.uint8)).convert("P").save(root / "dogs" / "nested" / "p.gif")
    (root / "dogs" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    full = root / "cats" / "a.png"
    (root / "dogs" / "truncated.png").write_bytes(full.read_bytes()[:60])
    (root / "dogs" / "notes.txt").write_text("ignored")
    return root


def test_folder_classes_modes_and_failures(tmp_path):
    src = FolderSource(_folder(tmp_path))
    assert src.class_names == ["cats", "dogs"]
    assert len(src) == 6  # the .txt is not an image
    ok, images, failures = read_many(src, range(len(src)))
    assert len(ok) == 4 and len(failures) == 2
    assert {f[1] for f in failures} == {"dogs/broken.jpg", "dogs/truncated.png"}
    assert all(im.dtype == np.uint8 and im.ndim == 3 and im.shape[2] == 3 for im in images)
    clear = images[[src.name_of(i) for i in ok].index("dogs/clear.png")]
    assert (clear == 255).all()
    np.testing.assert_array_equal(src.labels[ok], [0, 0, 1, 1])


def test_empty_folder(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(SealFastError, match="no image files"):
        open_source(tmp_path / "empty")


def test_unlabeled_folder(tmp_path):
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(tmp_path / "x.png")
    src = open_source(tmp_path)
    assert src.labels is None and len(src) == 1


def test_npz_source(tmp_path):
    np.savez(tmp_path / "d.npz", images=np.zeros((3, 8, 8), np.uint8), labels=np.array([0, 1, 1]))
    src = open_source(tmp_path / "d.npz")
    assert len(src) == 3 and src.read(0).shape == (8, 8, 3)
    np.savez(tmp_path / "bad.npz", pixels=np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(SealFastError, match="no 'images'"):
        open_source(tmp_path / "bad.npz")
    np.savez(tmp_path / "float.npz", images=np.zeros((3, 8, 8), np.float32))
    with pytest.raises(SealFastError, match="uint8"):
        open_source(tmp_path / "float.npz")


def test_array_source_checks():
    with pytest.raises(SealFastError, match="labels: 2 labels for 3 samples"):
        ArraySource(np.zeros((3, 4, 4), np.uint8), labels=[0, 1])
    with pytest.raises(SealFastError, match=r"\(N, H, W\)"):
        ArraySource(np.zeros((3, 4, 4, 2), np.uint8))


def test_unknown_source_lists_builtins():
    with pytest.raises(SealFastError, match="digits"):
        open_source("no-such-thing")


def test_digits_builtin():
    src = open_source("digits")
    assert len(src) == 1797 and src.read(0).shape == (8, 8, 3)
    # sklearn stores 17 grey levels (0..16); they are spread over 0..255
    assert max(int(src.read(i).max()) for i in range(20)) == 255
    assert sorted(set(src.labels.tolist())) == list(range(10))


@pytest.mark.skipif(not (FASHION_MNIST_DIR and __import__("os").path.isdir(FASHION_MNIST_DIR)),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_builtin():
    src = open_source("fashion-mnist-test")
    assert len(src) == 10000 and src.read(0).shape == (28, 28, 3)
    assert np.bincount(src.labels).tolist() == [1000] * 10
    assert len(open_source("fashion-mnist-train")) == 60000


def test_to_rgb_rejects_odd_channels():
    with pytest.raises(UnreadableImage):
        to_rgb(np.zeros((4, 4, 2), np.uint8))


def test_preprocessing_sizes_and_normalisation():
    pp = Preprocessing(32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    same = pp([np.full((8, 8, 3), 255, np.uint8)] * 2)
    assert same.shape == (2, 3, 32, 32) and same.allclose(1.0 * same.new_ones(1))
    mixed = pp([np.zeros((10, 40, 3), np.uint8), np.zeros((50, 20, 3), np.uint8)])
    assert mixed.shape == (2, 3, 32, 32) and mixed.allclose(-1.0 * mixed.new_ones(1))


def test_a_needle_image_is_embedded_within_bounded_memory(tmp_path):
    """A 20000 x 1 image once grew to 224 x 4.5M floats (12 GB) on resize: the long side
    is cut to its middle first. Run under a 1.5 GB address-space budget."""
    import subprocess
    import sys

    script = (
        "import resource, numpy as np, torch\n"
        "from seal_fast.data.preprocess import Preprocessing\n"
        "used = int(open('/proc/self/statm').read().split()[0]) * resource.getpagesize()\n"
        "resource.setrlimit(resource.RLIMIT_AS, (used + 1_500_000_000, resource.RLIM_INFINITY))\n"
        "for shape in ((20000, 1, 3), (1, 20000, 3)):\n"
        "    x = Preprocessing(224)([np.full(shape, 128, np.uint8)])\n"
        "    assert x.shape == (1, 3, 224, 224) and bool(torch.isfinite(x).all())\n"
        "print('OK')\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "OK", proc.stderr[-2000:]


def test_ordinary_images_are_preprocessed_as_before():
    """The cut applies past 3:1 only: a 4:3 photo gives what a plain resize + centre crop gives."""
    import torch.nn.functional as F

    img = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    got = Preprocessing(224, mean=(0, 0, 0), std=(1, 1, 1))([img])
    x = F.interpolate(torch_from(img), size=(224, 299), mode="bicubic", align_corners=False, antialias=True)
    np.testing.assert_allclose(got.numpy(), x.clamp(0, 1)[:, :, :, 37:261].numpy(), atol=1e-6)


def torch_from(img):
    import torch

    return torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255


def test_fingerprint_sees_an_edit_that_keeps_size_and_mtime(tmp_path):
    import os

    root = tmp_path / "imgs"
    root.mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(root / f"{i}.png")
    before = FolderSource(root).fingerprint(samples=0)  # no content sampled: names and stat only
    target = root / "1.png"
    st = target.stat()
    data = bytearray(target.read_bytes())
    data[-20] ^= 1
    target.write_bytes(bytes(data))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # touch -r: the same size and mtime
    assert target.stat().st_size == st.st_size and target.stat().st_mtime_ns == st.st_mtime_ns
    assert FolderSource(root).fingerprint(samples=0) != before


def test_a_dangling_link_in_a_folder_is_an_unreadable_image(tmp_path):
    for root in (tmp_path / "flat", tmp_path / "classes" / "cat"):  # top level, and a class folder
        root.mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "a.png")
        (root / "b.png").symlink_to(tmp_path / "gone.png")
    for source in (FolderSource(tmp_path / "flat"), FolderSource(tmp_path / "classes")):
        assert len(source) == 2 and len(source.fingerprint()) == 64  # listed, and no traceback from stat()
        with pytest.raises(UnreadableImage):
            source.read(1)


@pytest.mark.parametrize("labels,message", [([0, -3, 1], "found -3"), ([-1, -1, -1], "every row is unlabelled")])
def test_npz_labels_that_cluster_would_refuse_are_refused_at_embed(labels, message):
    with pytest.raises(SealFastError, match=message):
        ArraySource(np.zeros((3, 8, 8), np.uint8), np.array(labels))


def test_npz_suffix_in_capitals(tmp_path):
    with open(tmp_path / "x.NPZ", "wb") as f:  # np.savez would append .npz to the name
        np.savez(f, images=np.zeros((2, 8, 8), np.uint8))
    assert len(open_source(tmp_path / "x.NPZ")) == 2


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


def test_folder_fingerprint_sees_edits(tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "a.png")
    before = FolderSource(root).fingerprint()
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(root / "a.png")
    assert FolderSource(root).fingerprint() != before
