"""What `cluster`, `predict` and `import` read: a feature store, or array files
standing in for one (embeddings a user already has).

Array files, one or more, each giving one or more embedding spaces:
- `.npy`: one (N, d) space, memory-mapped;
- `.npz`: every array in it is a space (all must be 2-D);
- `.pt`: a tensor, or a dict of tensors, each a space (`weights_only=True`).
Patch features (N, M, c), text features (N, d) and labels (N,) come from their
own `.npy` files. Nothing is ever unpickled: object arrays and pickles are refused.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from .errors import SealFastError
from .store import FeatureStore
from .validation import as_feature_matrix, check_finite, check_labels

ARRAY_SUFFIXES = (".npy", ".npz", ".pt")


def _numeric(arr: np.ndarray, what: str) -> np.ndarray:
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise SealFastError(f"{what}: expected numbers, got dtype {arr.dtype}")
    return arr


def read_npy(path: Path) -> np.ndarray:
    """A memory-mapped .npy array; pickles and damaged files are refused with a reason."""
    path = Path(path)
    if not path.is_file():
        raise SealFastError(f"{path} does not exist")
    if path.stat().st_size == 0:
        raise SealFastError(f"{path}: empty file, not a .npy array")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Python objects" in str(exc):
            raise SealFastError(f"{path}: holds Python objects (pickled data), which are never loaded; save a "
                                "plain numeric array") from None
        raise SealFastError(f"{path}: not a readable .npy array ({str(exc).splitlines()[0]})") from None
    except (OSError, EOFError) as exc:
        raise SealFastError(f"{path}: not a readable .npy array ({str(exc).splitlines()[0]})") from None


def _read_spaces(path: Path) -> list[tuple[str, np.ndarray]]:
    """(name, array) of every space in one array file."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return [(path.stem, read_npy(path))]
    if suffix == ".npz":
        from .data.sources import open_npz

        with open_npz(path) as members:
            return [(f"{key}", members[key]) for key in members]
    if suffix == ".pt":
        return _read_pt(path)
    raise SealFastError(f"{path}: expected a feature store directory or array files ({', '.join(ARRAY_SUFFIXES)})")


def _read_pt(path: Path) -> list[tuple[str, np.ndarray]]:
    import torch

    if not path.is_file():
        raise SealFastError(f"{path} does not exist")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        text = str(exc).strip()
        reason = ("it holds Python objects other than tensors, which are never unpickled"
                  if "weights" in text.lower() else (text.splitlines()[0][:200] if text else type(exc).__name__))
        raise SealFastError(f"{path}: not a readable tensor file ({reason})") from None
    items = [(path.stem, obj)] if isinstance(obj, torch.Tensor) else list(obj.items()) if isinstance(obj, dict) else None
    if not items or not all(isinstance(t, torch.Tensor) for _, t in items):
        raise SealFastError(f"{path}: expected a tensor or a dict of tensors, got {type(obj).__name__}")
    return [(str(name), t.detach().cpu().numpy()) for name, t in items]


class ArrayInputs:
    """Array files read the way a FeatureStore is read (`spaces`, `space(name)`,
    `patches()`, `text()`, `labels()`, `has(key)`), checked when opened: numeric,
    2-D spaces, one N for everything, finite values (the first bad row is named)."""

    def __init__(self, files, *, patches=None, labels=None, text=None, names=None):
        self.files = [Path(f) for f in files]
        found = [(name, arr, f) for f in self.files for name, arr in _read_spaces(f)]
        if not found:
            raise SealFastError("no embedding space in the given files")
        if names:
            if len(names) != len(found):
                raise SealFastError(f"--names gives {len(names)} name(s) for {len(found)} space(s) "
                                    f"({', '.join(f'{f.name}:{n}' for n, _, f in found)})")
            found = [(name, arr, f) for name, (_, arr, f) in zip(names, found)]
        seen = {}
        for name, arr, f in found:
            if name in seen:
                raise SealFastError(f"two spaces are called {name!r} ({seen[name]} and {f}); name them with --names")
            seen[name] = f
        self._spaces = {}
        for name, arr, f in found:
            what = f"{f}" if f.suffix.lower() == ".npy" else f"{f} [{name}]"
            if arr.ndim == 3:
                raise SealFastError(f"{what}: a 3-D array {arr.shape} is not an embedding space; patch features "
                                    "go with --patches")
            self._spaces[name] = as_feature_matrix(_numeric(arr, what), what)
        ns = {name: Z.shape[0] for name, Z in self._spaces.items()}
        self.n = next(iter(ns.values()))
        if len(set(ns.values())) != 1:
            raise SealFastError(f"the spaces have different numbers of rows: {ns}")
        self._patches = self._extra(patches, "--patches", 3)
        self._text = self._extra(text, "--text", 2)
        self._labels = None
        if labels is not None:
            self._labels = check_labels(np.asarray(_numeric(read_npy(labels), str(labels))), self.n, str(labels),
                                        allow_unlabelled=True)
        self.path = self.files[0]
        self.description = {"kind": "arrays", "files": [str(f.resolve()) for f in self.files],
                            "patches": str(Path(patches).resolve()) if patches else None,
                            "labels": str(Path(labels).resolve()) if labels else None,
                            "text": str(Path(text).resolve()) if text else None}

    def _extra(self, path, flag: str, ndim: int):
        if path is None:
            return None
        arr = _numeric(read_npy(path), str(path))
        if arr.ndim != ndim:
            raise SealFastError(f"{flag} {path}: expected a {ndim}-D array, got shape {arr.shape}")
        if arr.shape[0] != self.n:
            raise SealFastError(f"{flag} {path}: {arr.shape[0]} rows for {self.n} samples")
        check_finite(arr, f"{flag} {path}")
        return arr

    @property
    def spaces(self) -> list[str]:
        return list(self._spaces)

    def space(self, name: str):
        if name not in self._spaces:
            raise SealFastError(f"no space {name!r} in the given arrays; they have {self.spaces}")
        return self._spaces[name]

    def has(self, key: str) -> bool:
        return {"patches": self._patches, "text": self._text, "labels": self._labels}.get(key) is not None

    def patches(self):
        if self._patches is None:
            raise SealFastError("this method needs patch features: give them with --patches P.npy (N, M, c)")
        return self._patches

    def text(self):
        return self._text

    def labels(self):
        return self._labels

    def __repr__(self):
        return f"ArrayInputs(n={self.n}, spaces={self.spaces}, patches={self.has('patches')})"


def open_inputs(paths, *, patches=None, labels=None, text=None, names=None):
    """A FeatureStore when `paths` is one directory, otherwise ArrayInputs of the files."""
    paths = [Path(p) for p in paths]
    if len(paths) == 1 and paths[0].is_dir():
        given = [flag for flag, value in (("--patches", patches), ("--labels", labels), ("--text", text),
                                          ("--names", names)) if value]
        if given:
            raise SealFastError(f"{', '.join(given)} {'apply' if len(given) > 1 else 'applies'} to array inputs; "
                                "a feature store has its own")
        return FeatureStore(paths[0])
    for p in paths:
        if not p.exists():
            raise SealFastError(f"{p} does not exist")
        if p.is_dir():
            raise SealFastError(f"{p} is a directory: give one feature store, or array files only")
        if p.suffix.lower() not in ARRAY_SUFFIXES:
            raise SealFastError(f"{p}: expected a feature store directory or array files "
                                f"({', '.join(ARRAY_SUFFIXES)})")
    return ArrayInputs(paths, patches=patches, labels=labels, text=text, names=names)
