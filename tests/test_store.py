import json

import numpy as np
import pytest

from seal_fast.errors import SealFastError
from seal_fast.store import FeatureStore, add_array, save_npy_atomic, write_store

from conftest import cli, one_line_error


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


# --- names can only ever name a file inside the store ----------------------------------------------
BAD_NAMES = ["../../../b", "../../evil", "sub/x", "/abs/path", "", "a\\b", "nul\x00x", "x" * 300, "..", "a..b"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_write_store_refuses_a_bad_name_before_writing(tmp_path, name):
    with pytest.raises(SealFastError, match="space name|non-empty name|too long"):
        write_store(tmp_path / "f", spaces={name: np.zeros((3, 2), np.float32)})
    assert not (tmp_path / "f").exists()


def _tree(path):
    return sorted((str(p.relative_to(path)), p.read_bytes() if p.is_file() else b"")
                  for p in path.rglob("*"))


def _import_case(tmp_path, how):
    """A working folder with two arrays (and a bystander file); the command to run in it."""
    work = tmp_path / "w" / "x" / "y"
    work.mkdir(parents=True)
    np.save(work / "a.npy", np.ones((6, 3), np.float32))
    np.save(work / "b.npy", np.full((6, 2), 7, np.float32))
    np.save(tmp_path / "victim.npy", np.zeros(1))
    (tmp_path / "b.npy").write_bytes(b"not to be touched")
    if how == "flag":
        args = ["a.npy", "b.npy", "--names", "../../../b", "other"]
    elif how == "flag-victim":
        args = ["a.npy", "--names", "../../../victim"]
    elif how == "npz":
        np.savez(work / "m.npz", **{"../../../x": np.ones((6, 3), np.float32)})
        args = ["m.npz"]
    elif how == "pt":
        import torch

        torch.save({"../../../x": torch.ones(6, 3)}, work / "m.pt")
        args = ["m.pt"]
    else:
        args = ["a.npy", "--names", how]
    return work, args


@pytest.mark.parametrize("how", ["flag", "flag-victim", "npz", "pt", "sub/x", "/abs/path", "", "../../evil"])
def test_import_never_writes_outside_out(tmp_path, how):
    from conftest import cli, one_line_error

    work, args = _import_case(tmp_path, how)
    before = _tree(tmp_path)
    rc, _, err = cli("import", *args, "--out", "st", cwd=work)
    one_line_error(rc, err, "space name" if how != "" else "non-empty name")
    assert rc == 2
    assert _tree(tmp_path) == before  # nothing changed, nothing added (no st/ either)


def _edit_manifest(store, edit):
    path = store.path / "manifest.json"
    m = json.loads(path.read_text())
    edit(m)
    path.write_text(json.dumps(m))


@pytest.mark.parametrize("edit,message", [
    (lambda m: m["arrays"]["space_a"].pop("kind"), "kind None is not one of"),
    (lambda m: m["arrays"].__setitem__("space_b", dict(m["arrays"]["space_a"])), "must be listed as 'space_a'"),
    (lambda m: m["arrays"]["space_a"].__setitem__("name", "../a"), "name '../a': a space name may not"),
    (lambda m: m["arrays"].__setitem__("extra", {**m["arrays"]["labels"], "kind": "labels"}),
     "must be listed as 'labels'"),
])
def test_edited_manifests_are_refused(tmp_path, edit, message):
    store = _store(tmp_path)
    _edit_manifest(store, edit)
    with pytest.raises(SealFastError, match=message):
        FeatureStore(store.path)


def test_a_manifest_with_a_key_twice_is_refused(tmp_path):
    store = _store(tmp_path)
    path = store.path / "manifest.json"
    text = path.read_text()
    entry = json.dumps(json.loads(text)["arrays"]["space_a"])
    path.write_text(text.replace('"arrays": {', f'"arrays": {{"space_a": {entry}, ', 1))
    with pytest.raises(SealFastError, match="'space_a' appears twice"):
        FeatureStore(store.path)


@pytest.mark.parametrize("labels,message", [(np.array([0, 1, -3, 2, 0, 1]), "found -3"),
                                            (np.full(6, -1), "every row is unlabelled")])
def test_labels_every_later_step_would_refuse_are_refused_when_written(tmp_path, labels, message):
    from conftest import cli, one_line_error

    np.save(tmp_path / "a.npy", np.ones((6, 3), np.float32))
    np.save(tmp_path / "l.npy", labels)
    rc, _, err = cli("import", tmp_path / "a.npy", "--labels", tmp_path / "l.npy", "--out", tmp_path / "st")
    one_line_error(rc, err, message)
    assert not (tmp_path / "st").exists()
    with pytest.raises(SealFastError, match=message.replace("every row is unlabelled", "unlabelled")):
        write_store(tmp_path / "w", spaces={"a": np.ones((6, 3), np.float32)}, labels=labels)


def test_a_link_loop_in_a_store_is_refused(tmp_path):
    store = _store(tmp_path)
    (store.path / "loop.npy").symlink_to(store.path / "loop.npy")
    _edit_manifest(store, lambda m: m["arrays"]["space_a"].__setitem__("file", "loop.npy"))
    with pytest.raises(SealFastError, match="lies outside the store|symbolic link|cannot be read"):
        FeatureStore(store.path)


def test_manifest_n_disagrees_with_the_arrays(tmp_path, patch_store):
    m = json.loads((patch_store.path / "manifest.json").read_text())
    del m["arrays"]["labels"]
    m["n"] = 150
    (patch_store.path / "manifest.json").write_text(json.dumps(m))
    rc, _, err = cli("cluster", patch_store.path, "--method", "kmeans", "--n-clusters", 3, "--out", tmp_path / "r.npy")
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
def test_damaged_manifests(patch_store, edit, message):
    m = json.loads((patch_store.path / "manifest.json").read_text())
    (patch_store.path / "manifest.json").write_text(json.dumps(edit(m)))
    with pytest.raises(SealFastError, match=message):
        FeatureStore(patch_store.path)


def test_zero_byte_array_file(patch_store):
    (patch_store.path / "labels.npy").write_bytes(b"")
    with pytest.raises(SealFastError, match="empty file"):
        FeatureStore(patch_store.path)
