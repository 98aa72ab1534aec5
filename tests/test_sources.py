import numpy as np
import pytest
from PIL import Image

from seal_fast.data.preprocess import Preprocessing
from seal_fast.data.sources import (FASHION_MNIST_DIR, ArraySource, FolderSource, UnreadableImage, open_source,
                                    read_many, to_rgb)
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
    with pytest.raises(SealFastError, match="labels shape"):
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
