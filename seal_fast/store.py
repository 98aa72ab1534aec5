"""The feature store: a directory of `.npy` arrays described by `manifest.json`.

Layout (fixed, see the README):

    FEATDIR/manifest.json         format version, N, one entry per array, provenance
    FEATDIR/space_<name>.npy      (N, d) visual embedding of one backbone
    FEATDIR/patches.npy           (N, M, c) patch features on a row-major grid
    FEATDIR/labels.npy            (N,) int64, optional
    FEATDIR/text.npy              (N, d) textual counterparts, optional

Every file is written to a temporary name and renamed into place, and the
manifest is written last, so a crash never leaves a store that looks complete
but is not. Arrays are memory-mapped on read, so N can exceed RAM.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import SealFastError

FORMAT = "seal_fast.features"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def space_file(name: str) -> str:
    return f"space_{name}.npy"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """Yield a temporary path next to `path`; rename it onto `path` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_npy_atomic(path, array: np.ndarray) -> None:
    with atomic_path(path, ".npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(array), allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())


def save_json_atomic(path, obj) -> None:
    with atomic_path(path, ".json") as tmp:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=False, default=_json_default)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o)}")


@contextlib.contextmanager
def npy_writer(path, shape, dtype) -> Iterator[np.memmap]:
    """A memory-mapped `.npy` being filled in place; appears at `path` only when complete."""
    with atomic_path(path, ".npy") as tmp:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.dtype(dtype), shape=tuple(shape))
        yield arr
        arr.flush()
        del arr


class FeatureStore:
    """Read access to a feature store directory.

    Example:
        >>> store = FeatureStore("feats/")            # doctest: +SKIP
        >>> store.spaces                              # doctest: +SKIP
        ['efficientnet-lite0']
        >>> Z = store.space("efficientnet-lite0")     # (N, d) memory map
    """

    def __init__(self, path):
        self.path = Path(path)
        manifest_path = self.path / MANIFEST
        if not self.path.is_dir():
            raise SealFastError(f"feature store {self.path} does not exist or is not a directory")
        if not manifest_path.is_file():
            raise SealFastError(f"{self.path} is not a feature store: {MANIFEST} is missing")
        try:
            self.manifest = json.loads(manifest_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise SealFastError(f"{manifest_path}: unreadable manifest ({exc})") from exc
        if self.manifest.get("format") != FORMAT:
            raise SealFastError(f"{manifest_path}: not a seal_fast feature store manifest")
        version = self.manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise SealFastError(
                f"{manifest_path}: format version {version!r} is not supported (this seal_fast reads "
                f"version {FORMAT_VERSION}); re-create the store with `seal-fast embed`")
        self.n = int(self.manifest["n"])
        self._arrays = self.manifest.get("arrays", {})
        for key, entry in self._arrays.items():
            file = self.path / entry["file"]
            if not file.is_file():
                raise SealFastError(f"feature store {self.path}: array {key!r} is listed but {file.name} is missing")

    # --- listing -------------------------------------------------------------
    @property
    def spaces(self) -> list[str]:
        return [e["name"] for e in self._arrays.values() if e.get("kind") == "space"]

    def has(self, key: str) -> bool:
        return key in self._arrays

    @property
    def labels_available(self) -> bool:
        return self.has("labels")

    def entry(self, key: str) -> dict:
        return self._arrays[key]

    # --- reading -------------------------------------------------------------
    def _load(self, key: str, what: str, hint: str = "") -> np.ndarray:
        if key not in self._arrays:
            raise SealFastError(f"feature store {self.path} has no {what}{hint}")
        entry = self._arrays[key]
        file = self.path / entry["file"]
        try:
            arr = np.load(file, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise SealFastError(f"{file}: unreadable array ({exc})") from exc
        if list(arr.shape) != list(entry["shape"]) or str(arr.dtype) != entry["dtype"]:
            raise SealFastError(
                f"{file}: shape {arr.shape}/{arr.dtype} differs from the manifest's "
                f"{tuple(entry['shape'])}/{entry['dtype']}; the store is damaged")
        return arr

    def space(self, name: str) -> np.ndarray:
        if f"space_{name}" not in self._arrays:
            raise SealFastError(
                f"feature store {self.path} has no space {name!r}; it has {self.spaces or 'none'}")
        return self._load(f"space_{name}", f"space {name!r}")

    def patches(self) -> np.ndarray:
        return self._load("patches", "patch features",
                          " (needed by SEAL/SATC): make them with `seal-fast embed SOURCE --out FEATDIR` "
                          "(patches are extracted with --patch-backbone, default efficientnet-lite0)")

    def labels(self) -> np.ndarray | None:
        return np.asarray(self._load("labels", "labels")) if self.has("labels") else None

    def text(self) -> np.ndarray | None:
        return self._load("text", "text features") if self.has("text") else None

    def __repr__(self):
        parts = [f"{k}{tuple(e['shape'])}" for k, e in self._arrays.items()]
        return f"FeatureStore({str(self.path)!r}, n={self.n}, arrays=[{', '.join(parts)}])"


def _entry(file: str, arr_shape, dtype, kind: str, **extra) -> dict:
    return {"file": file, "shape": list(arr_shape), "dtype": str(np.dtype(dtype)), "kind": kind, **extra}


def write_store(path, *, spaces: dict[str, np.ndarray] | None = None, patches: np.ndarray | None = None,
                labels: np.ndarray | None = None, text: np.ndarray | None = None,
                meta: dict | None = None, entries: dict | None = None) -> FeatureStore:
    """Write a complete feature store from in-memory (or memory-mapped) arrays.

    `entries` carries per-array metadata (e.g. ``{"patches": {"grid": [7, 7]}}``).
    Already-written arrays can be declared with `entries` alone (used by `embed`,
    which streams its large arrays to disk itself).
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    entries = {k: dict(v) for k, v in (entries or {}).items()}
    arrays: dict[str, dict] = {}
    ns = set()

    def put(key, file, arr, kind, **extra):
        arr = np.asarray(arr) if not isinstance(arr, np.ndarray) else arr
        save_npy_atomic(path / file, arr)
        arrays[key] = _entry(file, arr.shape, arr.dtype, kind, **extra, **entries.pop(key, {}))
        ns.add(arr.shape[0])

    for name, Z in (spaces or {}).items():
        put(f"space_{name}", space_file(name), Z, "space", name=name, backbone=name)
    if patches is not None:
        put("patches", "patches.npy", patches, "patches")
    if labels is not None:
        put("labels", "labels.npy", np.asarray(labels, dtype=np.int64), "labels")
    if text is not None:
        put("text", "text.npy", text, "text")
    for key, entry in entries.items():  # arrays the caller wrote itself
        arrays[key] = entry
        ns.add(entry["shape"][0])
    if len(ns) != 1:
        raise SealFastError(f"arrays of a feature store must share N; got {sorted(ns)}")
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "n": ns.pop(),
        "arrays": arrays,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **(meta or {}),
    }
    save_json_atomic(path / MANIFEST, manifest)
    return FeatureStore(path)


def add_array(path, key: str, array: np.ndarray, kind: str, **extra) -> FeatureStore:
    """Add (or replace) one array of an existing store, e.g. `text` after embedding."""
    store = FeatureStore(path)
    array = np.asarray(array)
    if array.shape[0] != store.n:
        raise SealFastError(f"{key}: {array.shape[0]} rows for a store of N={store.n}")
    file = f"{key}.npy"
    save_npy_atomic(store.path / file, array)
    manifest = dict(store.manifest)
    manifest["arrays"] = dict(manifest["arrays"])
    manifest["arrays"][key] = _entry(file, array.shape, array.dtype, kind, **extra)
    save_json_atomic(store.path / MANIFEST, manifest)
    return FeatureStore(path)
