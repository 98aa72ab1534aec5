"""Where images come from: a folder tree, an `.npz` file, or a built-in dataset
(builtin.py). Every source yields RGB uint8 arrays (H, W, 3), one per index
(decode.py), and optional integer labels."""
from __future__ import annotations

import abc
import hashlib
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import SealFastError
from ..readers import open_npz
from ..validation import check_labels
from .decode import UnreadableImage, decode, to_rgb

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class ImageSource(abc.ABC):
    """A sequence of images with optional labels.

    Attributes:
        labels: (N,) int64 or None.
        class_names: names of the label values, or None.
        description: JSON-able provenance written into the feature store.
    """

    labels: np.ndarray | None = None
    class_names: list[str] | None = None
    description: dict = {}

    @abc.abstractmethod
    def __len__(self) -> int:
        ...

    @abc.abstractmethod
    def read(self, index: int) -> np.ndarray:
        """The image at `index` as (H, W, 3) uint8; raises UnreadableImage."""

    def name_of(self, index: int) -> str:
        return f"#{index}"

    @abc.abstractmethod
    def fingerprint(self) -> str:
        """A hash that changes when the images change (an interrupted embed resumes only
        on the same fingerprint)."""


class ArraySource(ImageSource):
    """Images already in memory: (N, H, W), (N, H, W, 1|3|4) uint8."""

    def __init__(self, images: np.ndarray, labels=None, class_names=None, description=None):
        images = np.asarray(images)
        if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[3] not in (1, 3, 4)):
            raise SealFastError(f"images must be (N, H, W) or (N, H, W, 1|3|4); got shape {images.shape}")
        if images.dtype != np.uint8:
            raise SealFastError(f"images must be uint8 (0-255); got {images.dtype}")
        if images.shape[0] == 0:
            raise SealFastError("no images (N = 0)")
        if images.shape[1] == 0 or images.shape[2] == 0:
            raise SealFastError(f"images have a zero-size axis: shape {images.shape}")
        self.images = images
        if labels is not None:
            # checked as `cluster` checks them, so a store never holds labels every later step refuses
            labels = check_labels(np.asarray(labels), images.shape[0], "labels", allow_unlabelled=True)
        self.labels = labels
        self.class_names = class_names
        self.description = description or {"kind": "array", "shape": list(images.shape)}

    def __len__(self):
        return self.images.shape[0]

    def read(self, index):
        return to_rgb(self.images[index])

    def fingerprint(self) -> str:
        h = hashlib.sha256(repr((self.images.shape, str(self.images.dtype))).encode())
        h.update(np.ascontiguousarray(self.images).data)
        if self.labels is not None:
            h.update(np.ascontiguousarray(self.labels).data)
        return h.hexdigest()


class FolderSource(ImageSource):
    """A folder of images; its sub-folders, when it has any, are the classes."""

    def __init__(self, root):
        root = Path(root)
        if not root.is_dir():
            raise SealFastError(f"{root} is not a directory")
        classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        files: list[Path] = []
        labels: list[int] = []
        kept_classes: list[str] = []
        for name in classes:
            found = _image_files(root / name)
            if found:
                labels += [len(kept_classes)] * len(found)
                kept_classes.append(name)
                files += found
        self.ignored_top_level = 0
        # a link whose target is gone is kept, so that it is reported unreadable rather than silently left out
        top_level = [p for p in sorted(root.iterdir()) if (p.is_file() or p.is_symlink())
                     and p.suffix.lower() in IMAGE_EXTENSIONS]
        if files:
            self.ignored_top_level = len(top_level)
            self.labels = np.asarray(labels, dtype=np.int64)
            self.class_names = kept_classes
        else:
            files = top_level
            self.labels = None
            self.class_names = None
        if not files:
            raise SealFastError(f"{root}: no image files found (looked for {', '.join(IMAGE_EXTENSIONS)})")
        self.root = root
        self.files = files
        self.description = {"kind": "folder", "path": str(root.resolve()), "n_files": len(files),
                            "classes": self.class_names}

    @classmethod
    def listed(cls, root, names) -> "FolderSource":
        """The files `names` (paths relative to `root`) in that order, as an embed listed
        them, without scanning the folder: a file gone since is unreadable, not skipped."""
        self = cls.__new__(cls)
        self.root = Path(root)
        self.files = [self.root / name for name in names]
        self.labels, self.class_names, self.ignored_top_level = None, None, 0
        self.description = {"kind": "folder", "path": str(self.root), "n_files": len(self.files)}
        return self

    def __len__(self):
        return len(self.files)

    def name_of(self, index):
        return str(self.files[index].relative_to(self.root))

    def fingerprint(self, samples: int = 64, sample_bytes: int = 1 << 16) -> str:
        """Every file's name, size, modification time and change time, and the first
        bytes of an evenly spaced sample of files (cheap for a million files). The
        change time moves with every write and with `touch -r`, and only the kernel
        sets it, so an edit that keeps size and modification time is still seen; a
        file that cannot be read counts as such (it is skipped when embedded)."""
        h = hashlib.sha256()
        for i, path in enumerate(self.files):
            try:
                st = path.stat()
                h.update(f"{self.name_of(i)}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0".encode())
            except OSError:
                h.update(f"{self.name_of(i)}\0unreadable\0".encode())
        for i in np.linspace(0, len(self.files) - 1, min(samples, len(self.files))).astype(int):
            try:
                with open(self.files[i], "rb") as f:
                    h.update(f.read(sample_bytes))
            except OSError:
                h.update(b"unreadable")
        return h.hexdigest()

    def read(self, index):
        from PIL import Image, UnidentifiedImageError

        path = self.files[index]
        try:
            with Image.open(path) as im:
                arr = decode(im)
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise UnreadableImage(f"{self.name_of(index)}: {exc}") from exc
        return to_rgb(arr)


def _image_files(folder: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [Path(dirpath) / f for f in sorted(filenames)
                if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")]
    return out


def load_npz(path) -> ArraySource:
    path = Path(path)
    with open_npz(path) as members:
        if "images" not in members:
            raise SealFastError(f"{path}: no 'images' array (it has {list(members)})")
        images = members["images"]
        labels = members["labels"] if "labels" in members else None
    return ArraySource(images, labels, description={"kind": "npz", "path": str(path.resolve())})


def open_source(spec) -> ImageSource:
    """An image folder, an `.npz` path, a built-in name, or an ImageSource."""
    if isinstance(spec, ImageSource):
        return spec
    from .builtin import BUILTIN_SOURCES  # here: builtin.py makes its sources with ArraySource

    spec_str = str(spec)
    if spec_str in BUILTIN_SOURCES:
        return BUILTIN_SOURCES[spec_str]()
    path = Path(spec_str)
    if path.is_dir():
        return FolderSource(path)
    if path.is_file() and path.suffix.lower() == ".npz":
        return load_npz(path)
    if path.exists():
        raise SealFastError(f"{spec_str}: expected an image folder or a .npz file")
    raise SealFastError(
        f"{spec_str!r} is not an image folder, a .npz file or a built-in dataset "
        f"({', '.join(BUILTIN_SOURCES)})")


def read_many(source: ImageSource, indices: Sequence[int]):
    """Read images; returns (ok_indices, images, failures[(index, name, reason)])."""
    ok, images, failures = [], [], []
    for i in indices:
        try:
            images.append(source.read(int(i)))
            ok.append(int(i))
        except UnreadableImage as exc:
            failures.append((int(i), source.name_of(int(i)), str(exc)))
    return ok, images, failures
