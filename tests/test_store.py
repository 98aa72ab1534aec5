import json

import numpy as np
import pytest

from seal_fast.errors import SealFastError
from seal_fast.store import FeatureStore, add_array, save_npy_atomic, write_store


def _store(tmp_path, n=10):
    rng = np.random.default_rng(0)
    return write_store(tmp_path / "f", spaces={"a": rng.normal(size=(n, 4)).astype(np.float32)},
                       patches=rng.normal(size=(n, 9, 3)).astype(np.float16),
                       labels=np.arange(n) % 3, entries={"patches": {"grid": [3, 3]}},
                       meta={"source": {"kind": "test"}})


def test_roundtrip_and_memory_map(tmp_path):
    s = _store(tmp_path)
    assert s.n == 10 and s.spaces == ["a"]
    Z = s.space("a")
    assert isinstance(Z, np.memmap) and Z.shape == (10, 4)
    assert s.patches().dtype == np.float16
    assert s.entry("patches")["grid"] == [3, 3]
    np.testing.assert_array_equal(s.labels(), np.arange(10) % 3)
    assert s.text() is None
    m = json.loads((s.path / "manifest.json").read_text())
    assert m["format_version"] == 1 and m["arrays"]["space_a"]["shape"] == [10, 4]


def test_add_text(tmp_path):
    s = _store(tmp_path)
    s = add_array(s.path, "text", np.ones((10, 4), np.float32), "text")
    assert s.text().shape == (10, 4)
    with pytest.raises(SealFastError, match="rows"):
        add_array(s.path, "text", np.ones((3, 4), np.float32), "text")


def test_missing_array_is_named(tmp_path):
    s = _store(tmp_path)
    (s.path / "patches.npy").unlink()
    with pytest.raises(SealFastError, match="patches"):
        FeatureStore(s.path)


def test_wrong_format_version(tmp_path):
    s = _store(tmp_path)
    m = json.loads((s.path / "manifest.json").read_text())
    m["format_version"] = 99
    (s.path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(SealFastError, match="format version 99"):
        FeatureStore(s.path)


def test_not_a_store(tmp_path):
    with pytest.raises(SealFastError, match="does not exist"):
        FeatureStore(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SealFastError, match="manifest.json is missing"):
        FeatureStore(tmp_path / "empty")


def test_damaged_array_shape(tmp_path):
    s = _store(tmp_path)
    np.save(s.path / "space_a.npy", np.zeros((9, 4), np.float32))
    with pytest.raises(SealFastError, match="damaged"):
        FeatureStore(s.path).space("a")


def test_missing_space_and_patches_messages(tmp_path):
    s = write_store(tmp_path / "g", spaces={"a": np.zeros((3, 2), np.float32)})
    with pytest.raises(SealFastError, match="no space 'b'"):
        s.space("b")
    with pytest.raises(SealFastError, match="seal-fast embed"):
        s.patches()


def test_mismatched_n_rejected(tmp_path):
    with pytest.raises(SealFastError, match="share N"):
        write_store(tmp_path / "h", spaces={"a": np.zeros((3, 2))}, labels=np.zeros(4, int))


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    class Boom:
        def __array__(self, *a, **k):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        save_npy_atomic(tmp_path / "x.npy", Boom())
    assert list(tmp_path.iterdir()) == []
