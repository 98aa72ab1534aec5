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

from pathlib import Path

import numpy as np

from .errors import SealFastError
from .readers import load_torch, open_npz, read_npy, regular_file
from .store import FeatureStore, check_space_name
from .validation import as_feature_matrix, check_finite, check_labels

ARRAY_SUFFIXES = (".npy", ".npz", ".pt")


def _numeric(arr: np.ndarray, what: str) -> np.ndarray:
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise SealFastError(f"{what}: expected numbers, got dtype {arr.dtype}")
    return arr


def _read_spaces(path: Path) -> list[tuple[str, np.ndarray]]:
    """(name, array) of every space in one array file."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return [(path.stem, read_npy(path))]
    if suffix == ".npz":
        with open_npz(path) as members:
            return [(f"{key}", members[key]) for key in members]
    if suffix == ".pt":
        return _read_pt(path)
    raise SealFastError(f"{path}: expected a feature store directory or array files ({', '.join(ARRAY_SUFFIXES)})")


def _read_pt(path: Path) -> list[tuple[str, np.ndarray]]:
    import torch

    obj = load_torch(path)
    items = [(path.stem, obj)] if isinstance(obj, torch.Tensor) else \
        list(obj.items()) if isinstance(obj, dict) else None
    if not items or not all(isinstance(t, torch.Tensor) for _, t in items):
        raise SealFastError(f"{path}: expected a tensor or a dict of tensors, got {type(obj).__name__}")
    # numpy has no bfloat16: such a tensor is read as float32, which holds its values exactly
    return [(str(name), (t.float() if t.dtype == torch.bfloat16 else t).detach().cpu().numpy()) for name, t in items]


class ArrayInputs:
    """Arrays read the way a FeatureStore is read (`spaces`, `space(name)`, `patches()`,
    `text()`, `labels()`, `has(key)`), their form checked when made: named spaces,
    numeric, 2-D, one N for everything. Their values are scanned once, where they are
    used, as a store's are: by the fit (and, if it refuses them, by `check_values`,
    which names the file) or by `check_values` before an import. Labels are checked
    when asked for, so that `cluster` can leave bad ones out of its evaluation rather
    than refuse to cluster."""

    def __init__(self, spaces: dict, *, patches=None, labels=None, text=None, description=None, sources=None):
        # sources: what to call each array in messages (its file, when read from files)
        self._what = {"patches": "patches", "text": "text", "labels": "labels", **(sources or {})}
        if not spaces:
            raise SealFastError("no embedding space given")
        self._spaces = {}
        for name, arr in spaces.items():
            check_space_name(name)
            what = self._what.get(f"space {name}", name)
            if arr.ndim == 3:
                raise SealFastError(f"{what}: a 3-D array {arr.shape} is not an embedding space; patch features "
                                    "go with --patches")
            self._spaces[name] = as_feature_matrix(_numeric(arr, what), what, finite=False)
        ns = {name: Z.shape[0] for name, Z in self._spaces.items()}
        self.n = next(iter(ns.values()))
        if len(set(ns.values())) != 1:
            raise SealFastError(f"the spaces have different numbers of rows: {ns}")
        self._patches = self._rows(patches, self._what["patches"], 3)
        self._text = self._rows(text, self._what["text"], 2)
        self._labels = labels
        self.description = description or {"kind": "arrays", "spaces": list(self._spaces)}
        self.path = None

    @classmethod
    def from_files(cls, files, *, patches=None, labels=None, text=None, names=None) -> "ArrayInputs":
        """The spaces of array files (.npy, .npz, .pt), with `--names` for them, and the
        patches, text and labels of their own .npy files. Every name is checked before
        anything is read."""
        files = [Path(f) for f in files]
        for name in names or []:
            check_space_name(name, "--names")
        found = [(name, arr, f) for f in files for name, arr in _read_spaces(f)]
        if not found:
            raise SealFastError("no embedding space in the given files")
        if names:
            if len(names) != len(found):
                raise SealFastError(f"--names gives {len(names)} name(s) for {len(found)} space(s) "
                                    f"({', '.join(f'{f.name}:{n}' for n, _, f in found)})")
            found = [(name, arr, f) for name, (_, arr, f) in zip(names, found)]
        seen = {}
        for name, _, f in found:
            check_space_name(name, f"{f}: space name" if f.suffix.lower() != ".npy" else f"{f}: file name")
            if name in seen:
                raise SealFastError(f"two spaces are called {name!r} ({seen[name]} and {f}); name them with --names")
            seen[name] = f
        arrays = {name: arr for name, arr, _ in found}
        spaces_what = {f"space {name}": f"{f}" if f.suffix.lower() == ".npy" else f"{f} [{name}]"
                       for name, _, f in found}
        description = {"kind": "arrays", "files": [str(f.resolve()) for f in files],
                       "patches": str(Path(patches).resolve()) if patches else None,
                       "labels": str(Path(labels).resolve()) if labels else None,
                       "text": str(Path(text).resolve()) if text else None}
        sources = {key: f"--{key} {value}" for key, value in (("patches", patches), ("text", text), ("labels", labels))
                   if value is not None} | spaces_what
        inputs = cls(arrays, description=description, sources=sources,
                     **{key: read_npy(value) if value is not None else None
                        for key, value in (("patches", patches), ("text", text), ("labels", labels))})
        inputs.path = files[0]
        return inputs

    def _rows(self, arr, what: str, ndim: int):
        if arr is None:
            return None
        arr = _numeric(arr, what)
        if arr.ndim != ndim:
            raise SealFastError(f"{what}: expected a {ndim}-D array, got shape {arr.shape}")
        if arr.shape[0] != self.n:
            raise SealFastError(f"{what}: {arr.shape[0]} rows for {self.n} samples")
        return arr

    def check_values(self, spaces=None, kinds=("patches", "text")) -> None:
        """The arrays named (default: all) finite and within float32, or an error naming
        the file and the first bad row."""
        for name in self.spaces if spaces is None else spaces:
            check_finite(self._spaces[name], self._what.get(f"space {name}", name))
        for key, arr in (("patches", self._patches), ("text", self._text)):
            if arr is not None and key in kinds:
                check_finite(arr, self._what[key])

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
        """The true labels (N,) int64, -1 for an unlabelled row, or None; bad ones raise."""
        if self._labels is None:
            return None
        what = self._what["labels"]
        return check_labels(np.asarray(_numeric(self._labels, what)), self.n, what, allow_unlabelled=True)

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
        if p.is_dir():
            raise SealFastError(f"{p} is a directory: give one feature store, or array files only")
        regular_file(p)
        if p.suffix.lower() not in ARRAY_SUFFIXES:
            raise SealFastError(f"{p}: expected a feature store directory or array files "
                                f"({', '.join(ARRAY_SUFFIXES)})")
    return ArrayInputs.from_files(paths, patches=patches, labels=labels, text=text, names=names)
