"""Thumbnails for the report, read back from the source a feature store records
(an image folder, an `.npz`, a built-in dataset), inlined as `data:` URIs so the page
needs nothing but itself. A source that moved or changed since it was embedded gives
no thumbnails rather than the wrong ones; a folder whose rows' files the store lists is
read by file name, with a note that files may have been edited, and files gone since
are named.
"""
from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np

from ..data.decode import UnreadableImage
from ..errors import SealFastError
from ..store import FeatureStore

SMALL = 64      # images this small or smaller are kept at their size (PNG) and scaled up by the browser
THUMB = 96      # larger images are shrunk to this long side (JPEG)


class Thumbnails:
    """Row of the store -> `data:` URI of its image (or None when it cannot be read)."""

    def __init__(self, source, index=None):
        self.source = source
        self.index = index        # store row -> source index, when some images were skipped at embed time
        self.missing: list[str] = []

    def uri(self, row: int) -> str | None:
        i = int(self.index[row]) if self.index is not None else int(row)
        try:
            image = self.source.read(i)
        except (UnreadableImage, OSError) as exc:
            self.missing.append(str(exc) if str(exc).startswith(self.source.name_of(i))
                                else f"{self.source.name_of(i)}: {exc}")
            return None
        return image_uri(image)


def data_uri(img, kind: str = "png") -> str:
    """A PIL image as a `data:` URI (PNG, or JPEG at quality 80)."""
    buf = io.BytesIO()
    img.save(buf, format=kind.upper(), **({"optimize": True} if kind == "png" else {"quality": 80}))
    return f"data:image/{kind};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


def image_uri(image: np.ndarray) -> str:
    """(H, W, 3) uint8 -> a small PNG (tiny images, kept sharp) or JPEG `data:` URI."""
    from PIL import Image

    img = Image.fromarray(image)
    if max(img.size) <= SMALL:
        return data_uri(img, "png")
    img.thumbnail((THUMB, THUMB), Image.BICUBIC)
    return data_uri(img, "jpeg")


def _source(store):
    """(the ImageSource the store was embedded from, as the manifest describes it, or None; why not)."""
    from ..data.sources import FolderSource, load_npz, open_source

    desc = store.manifest.get("source")
    kind = desc.get("kind") if isinstance(desc, dict) else None
    where = desc.get("path") if kind in ("folder", "npz") else desc.get("name") if kind == "builtin" else None
    if kind in ("array", "import"):
        what = "images given as an in-memory array" if kind == "array" else "imported arrays"
        return None, f"the store records {what}: no images to read back"
    if not isinstance(where, str) or not where:
        return None, "the store records no image source to read back"
    listed = store.manifest.get("source_files_file")
    try:
        if kind == "folder" and listed:  # each row's file by name: a file gone since is named, the rest shown
            return FolderSource.listed(where, _listed_files(store, listed)), None
        if kind == "builtin":
            return open_source(where), None
        if kind == "folder":
            return FolderSource(where), None
        return load_npz(where), None
    except (SealFastError, OSError, ValueError) as exc:
        return None, f"the store's images could not be opened: {exc}"


def _listed_files(store, listed) -> list[str]:
    """The file of each row, from the store's list: relative paths inside the folder only."""
    path = store.path / Path(listed).name
    try:
        with open(path, encoding="utf-8") as f:
            names = [json.loads(line) for line in f]
    except (OSError, ValueError) as exc:
        raise SealFastError(f"{path} is unreadable ({exc})") from None
    if len(names) != store.n or not all(isinstance(n, str) and n and not Path(n).is_absolute()
                                        and ".." not in Path(n).parts for n in names):
        raise SealFastError(f"{path} does not list one relative file name per row")
    return names


def _source_index(store, n_images: int):
    """Rows of the store -> indices in the source (when images were skipped at embed time)."""
    name = store.manifest.get("source_index_file")
    if not name:
        return None
    from ..readers import read_npy

    index = np.asarray(read_npy(store.path / Path(str(name)).name, f"{store.path}: source index"))
    if index.shape != (store.n,) or not np.issubdtype(index.dtype, np.integer) or \
            (index.size and (index.min() < 0 or index.max() >= n_images)):
        raise SealFastError(f"{store.path}: source_index.npy does not map the {store.n} rows into the "
                            f"{n_images} source images")
    return index


def open_thumbnails(store) -> tuple[Thumbnails | None, str | None]:
    """(the store's images, or None; a note for the page: why none, or why to doubt them)."""
    if not isinstance(store, FeatureStore):
        return None, "the features are arrays: no images to show"
    source, why = _source(store)
    if source is None:
        return None, why
    recorded = store.manifest.get("source_fingerprint")
    desc = store.manifest["source"]
    where = desc.get("path") or desc.get("name")
    try:
        changed = recorded != source.fingerprint() if recorded else (
            desc.get("kind") == "folder" and desc.get("n_files") not in (None, len(source)))
        if changed and store.manifest.get("source_files_file"):
            # read by file name, so each row still gets its own file, unless a file was edited or swapped
            return Thumbnails(source), (f"the images at {where} changed since they were embedded (files added, "
                                        "removed or edited): the thumbnails are read by file name and may show "
                                        "edited files")
        if changed:
            return None, (f"the images at {where} changed since they were embedded: no thumbnails (they could "
                          "show other images than the rows)")
        return Thumbnails(source, _source_index(store, len(source))), None
    except (SealFastError, OSError, ValueError) as exc:
        return None, f"the store's images could not be opened: {exc}"
