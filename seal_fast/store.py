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

import datetime as _dt
import json
from pathlib import Path

import numpy as np

from .errors import SealFastError
from .files import atomic_path, held_folder, npy_writer, save_json_atomic, save_npy_atomic  # noqa: F401  (re-exported)
from .readers import read_npy
from .validation import check_labels

FORMAT = "seal_fast.features"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


ROW_KINDS = ("space", "patches", "labels", "text")  # one row per image
KINDS = (*ROW_KINDS, "nouns")  # nouns: a CLIP backbone's noun embeddings, cached by `embed --with-text`
MAX_NAME_BYTES = 200  # "space_<name>.npy" stays under the 255 bytes a file name may have


def check_space_name(name, where: str = "space name") -> str:
    """A space name that can only ever name a file inside its store: not empty, no path
    separator, no '..', no NUL or other control character, not too long."""
    if not isinstance(name, str) or not name:
        raise SealFastError(f"{where}: a space needs a non-empty name")
    bad = [c for c in ("/", "\\", "..") if c in name] + (["a control character"] if any(ord(c) < 32 for c in name)
                                                          else [])
    if bad:
        raise SealFastError(f"{where} {name!r}: a space name may not contain {' or '.join(map(str, bad))} "
                            "(it names the file space_<name>.npy inside the store)")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise SealFastError(f"{where}: {len(name)} characters is too long for a space name (at most "
                            f"{MAX_NAME_BYTES} bytes)")
    return name


def space_file(name: str) -> str:
    return f"space_{check_space_name(name)}.npy"


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
            self.manifest = json.loads(manifest_path.read_text(), object_pairs_hook=_no_duplicate_keys)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
            raise SealFastError(f"{manifest_path}: unreadable manifest ({exc})") from None
        if not isinstance(self.manifest, dict) or self.manifest.get("format") != FORMAT:
            raise SealFastError(f"{manifest_path}: not a seal_fast feature store manifest")
        version = self.manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise SealFastError(
                f"{manifest_path}: format version {version!r} is not supported (this seal_fast reads "
                f"version {FORMAT_VERSION}); re-create the store with `seal-fast embed`")
        n = self.manifest.get("n")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise SealFastError(f"{manifest_path}: 'n' must be a positive integer, got {n!r}; the store is damaged")
        self.n = n
        self._arrays = self.manifest.get("arrays")
        if not isinstance(self._arrays, dict):
            raise SealFastError(f"{manifest_path}: 'arrays' must be a mapping of name to entry; the store is damaged")
        # every array is checked now, not after a long fit: a damaged store fails at once
        for key, entry in self._arrays.items():
            self._open(key, entry)

    def _open(self, key: str, entry) -> np.ndarray:
        """The array of manifest entry `key`, memory-mapped, after checking it against the manifest."""
        where = f"feature store {self.path}: array {key!r}"
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str) \
                or not isinstance(entry.get("shape"), list) or not isinstance(entry.get("dtype"), str):
            raise SealFastError(f"{where}: its manifest entry needs 'file', 'shape' and 'dtype'; the store is damaged")
        kind = entry.get("kind")
        if kind not in KINDS:
            raise SealFastError(f"{where}: kind {kind!r} is not one of {KINDS}; the store is damaged")
        if kind == "space":
            check_space_name(entry.get("name"), f"{where}: name")
            if key != f"space_{entry['name']}":
                raise SealFastError(f"{where}: a space named {entry['name']!r} must be listed as "
                                    f"'space_{entry['name']}'; the store is damaged")
        elif kind == "nouns":
            check_space_name(key.removeprefix("nouns_") if key.startswith("nouns_") else "", f"{where}: key")
        elif key != kind:
            raise SealFastError(f"{where}: an entry of kind {kind!r} must be listed as {kind!r}; the store is damaged")
        file = self.path / entry["file"]
        # a manifest names files inside its own store only (no absolute paths, no '..')
        try:
            outside = Path(entry["file"]).is_absolute() or file.resolve().parent != self.path.resolve()
        except (RuntimeError, OSError):  # a loop of links
            outside = True
        if outside:
            raise SealFastError(f"{where}: file {entry['file']!r} lies outside the store; refused")
        if not file.exists() and not file.is_symlink():
            raise SealFastError(f"{where} is listed but {file.name} is missing")
        arr = read_npy(file, f"{where} ({file.name})")
        if list(arr.shape) != list(entry["shape"]) or str(arr.dtype) != entry["dtype"]:
            raise SealFastError(
                f"{file}: shape {arr.shape}/{arr.dtype} differs from the manifest's "
                f"{tuple(entry['shape'])}/{entry['dtype']}; the store is damaged")
        if kind in ROW_KINDS and (arr.ndim == 0 or arr.shape[0] != self.n):
            raise SealFastError(f"{where}: {arr.shape[0] if arr.ndim else 0} rows where the manifest says "
                                f"n={self.n}; the store is damaged")
        if kind == "space" and arr.ndim != 2:
            raise SealFastError(f"{where}: a space needs a 2-D array; the store is damaged")
        if entry.get("kind") == "labels" and (arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer)):
            raise SealFastError(f"{where}: labels must be a 1-D integer array, got {arr.shape}/{arr.dtype}")
        return arr

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
        return self._open(key, self._arrays[key])

    def array(self, key: str) -> np.ndarray:
        """Any array of the store by its manifest key, checked, memory-mapped."""
        return self._load(key, f"array {key!r}")

    def space(self, name: str) -> np.ndarray:
        if f"space_{name}" not in self._arrays:
            raise SealFastError(
                f"feature store {self.path} has no space {name!r}; it has {self.spaces or 'none'}")
        return self._load(f"space_{name}", f"space {name!r}")

    def patches(self) -> np.ndarray:
        return self._load("patches", "patch features",
                          " (needed by SEAL/SATC): make them with `seal-fast embed SOURCE --out FEATDIR` "
                          "(the patch features come from --patch-backbone, a second network by default)")

    def labels(self) -> np.ndarray | None:
        if not self.has("labels"):
            return None
        return check_labels(np.asarray(self._load("labels", "labels")), self.n, f"feature store {self.path}: labels",
                            allow_unlabelled=True)

    def text(self) -> np.ndarray | None:
        return self._load("text", "text features") if self.has("text") else None

    def summary(self) -> str:
        """One line: where the store is and what it holds."""
        extra = [f"{key} {tuple(self.entry(key)['shape'])}" for key in ("patches", "text") if self.has(key)]
        line = ", ".join([f"{self.path}: N={self.n}", f"spaces={self.spaces}", *extra,
                          *(["labels"] if self.labels_available else [])])
        if self.manifest.get("n_skipped", 0):
            first = self.manifest["skipped"][0]
            line += (f"\nskipped {self.manifest['n_skipped']} unreadable image(s), e.g. {first['name']}: "
                     f"{first['reason']} (all listed in {self.path / MANIFEST})")
        return line

    def __repr__(self):
        parts = [f"{k}{tuple(e['shape'])}" for k, e in self._arrays.items()]
        return f"FeatureStore({str(self.path)!r}, n={self.n}, arrays=[{', '.join(parts)}])"


def _no_duplicate_keys(pairs):
    keys = [k for k, _ in pairs]
    dup = next((k for k in keys if keys.count(k) > 1), None)
    if dup is not None:
        raise ValueError(f"the key {dup!r} appears twice")
    return dict(pairs)


def _entry(file: str, arr_shape, dtype, kind: str, **extra) -> dict:
    return {"file": file, "shape": list(arr_shape), "dtype": str(np.dtype(dtype)), "kind": kind, **extra}


def held_for_writing(path):
    """The store's folder, held while one job writes it (embedding, adding text, an
    import): a second job on it is refused at once (files.held_folder)."""
    return held_folder(Path(path), f"--out {path}: another job is writing a feature store there now; wait for "
                                   "it to finish or give another --out")


def write_store(path, *, spaces: dict[str, np.ndarray] | None = None, patches: np.ndarray | None = None,
                labels: np.ndarray | None = None, text: np.ndarray | None = None,
                meta: dict | None = None, entries: dict | None = None) -> FeatureStore:
    """Write a complete feature store from in-memory (or memory-mapped) arrays.

    `entries` carries per-array metadata (e.g. ``{"patches": {"grid": [7, 7]}}``).
    Already-written arrays can be declared with `entries` alone (used by `embed`,
    which streams its large arrays to disk itself).
    """
    path = Path(path)
    # every name and the labels are checked before anything is written
    files = {name: space_file(name) for name in (spaces or {})}
    if labels is not None:
        labels = check_labels(np.asarray(labels), None, "labels", allow_unlabelled=True)
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
        put(f"space_{name}", files[name], Z, "space", name=name, backbone=name)
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


def add_array(path, key: str, array: np.ndarray, kind: str, *, meta: dict | None = None, **extra) -> FeatureStore:
    """Add (or replace) one array of an existing store, e.g. `text` after embedding;
    `meta` sets top-level manifest sections (how the array was made) in the same write."""
    store = FeatureStore(path)
    array = np.asarray(array)
    check_space_name(key, "array key")
    if kind in ROW_KINDS and array.shape[0] != store.n:
        raise SealFastError(f"{key}: {array.shape[0]} rows for a store of N={store.n}")
    file = f"{key}.npy"
    save_npy_atomic(store.path / file, array)
    manifest = dict(store.manifest)
    manifest["arrays"] = dict(manifest["arrays"])
    manifest["arrays"][key] = _entry(file, array.shape, array.dtype, kind, **extra)
    manifest.update(meta or {})
    save_json_atomic(store.path / MANIFEST, manifest)
    return FeatureStore(path)
