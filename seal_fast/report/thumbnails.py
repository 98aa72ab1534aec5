"""Thumbnails for the report, read back from the source a feature store records
(an image folder, an `.npz`, a built-in dataset), inlined as `data:` URIs so the page
needs nothing but itself. A source that moved or changed since it was embedded gives
no thumbnails rather than the wrong ones; single images that went missing are named.
"""
from __future__ import annotations

import base64
import io
import json

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


def image_uri(image: np.ndarray) -> str:
    """(H, W, 3) uint8 -> a small PNG (tiny images, kept sharp) or JPEG `data:` URI."""
    from PIL import Image

    img = Image.fromarray(image)
    buf = io.BytesIO()
    if max(img.size) <= SMALL:
        img.save(buf, format="PNG", optimize=True)
        kind = "png"
    else:
        img.thumbnail((THUMB, THUMB), Image.BICUBIC)
        img.save(buf, format="JPEG", quality=80)
        kind = "jpeg"
    return f"data:image/{kind};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


def open_thumbnails(store) -> tuple[Thumbnails | None, str | None]:
    """(the store's images, or None; why there are none)."""
    from ..data.sources import FolderSource, load_npz, open_source

    if not isinstance(store, FeatureStore):
        return None, "the features are arrays: no images to show"
    desc = store.manifest.get("source") or {}
    kind = desc.get("kind")
    listed = store.manifest.get("source_files_file")
    if kind == "folder" and listed:  # each row's file by name: a file gone since is named, the rest shown
        try:
            with open(store.path / listed, encoding="utf-8") as f:
                names = [json.loads(line) for line in f]
        except (OSError, ValueError) as exc:
            return None, f"{store.path / listed} is unreadable ({exc}): no thumbnails"
        if len(names) != store.n or not all(isinstance(n, str) for n in names):
            return None, f"{store.path / listed} does not list one file per row: no thumbnails"
        return Thumbnails(FolderSource.listed(desc["path"], names)), None
    try:
        if kind == "builtin":
            source = open_source(desc["name"])
        elif kind == "folder":
            source = FolderSource(desc["path"])
        elif kind == "npz":
            source = load_npz(desc["path"])
        else:
            what = {"array": "images given as an in-memory array", "import": "imported arrays"}.get(kind, "no source")
            return None, f"the store records {what}: no images to read back"
    except (SealFastError, OSError, KeyError) as exc:
        return None, f"the store's images could not be opened: {exc}"
    recorded = store.manifest.get("source_fingerprint")
    changed = recorded != source.fingerprint() if recorded else (
        kind == "folder" and desc.get("n_files") not in (None, len(source)))
    if changed:
        return None, (f"the images at {desc.get('path') or desc.get('name')} changed since they were embedded: "
                      "no thumbnails (they could show other images than the rows)")
    index = None
    if store.manifest.get("source_index_file"):
        index = np.load(store.path / store.manifest["source_index_file"], allow_pickle=False)
    return Thumbnails(source, index), None
