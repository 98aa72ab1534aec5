"""The store from a finished job: the chunks concatenated into the store's arrays
(streamed through memory maps) and the manifest, written last through store.py."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import SealFastError
from ..data.sources import FolderSource
from ..files import atomic_path, npy_writer, save_npy_atomic
from ..store import FeatureStore, space_file, write_store
from .journal import finished_chunks

SOURCE_FILES = "source_files.txt"


def assemble(out: Path, partial: Path, n: int, src, models, wanted, job, seconds, compiled: bool,
              ranks=None) -> FeatureStore:
    """Concatenate the chunks into the store's arrays, streaming through memory maps."""
    chunks = finished_chunks(partial)
    ends = [0] + [end for _, end, _ in chunks]
    if [start for start, _, _ in chunks] != ends[:-1] or ends[-1] != n:
        raise SealFastError(f"{partial}: the finished chunks do not cover the {n} images exactly; delete the folder "
                            "and embed again")
    paths = [p for _, _, p in chunks]
    index_parts, failed = [], []
    for p in paths:
        with np.load(p) as z:
            index_parts.append(z["index"])
            failed += [json.loads(s) for s in z["failed"].tolist()]
    index = np.concatenate(index_parts)
    n_ok = index.shape[0]
    if n_ok == 0:
        raise SealFastError(f"none of the {len(src)} images could be read; first error: "
                            f"{failed[0][2] if failed else 'unknown'}")
    keys = [f"space_{name}" for name, w in wanted.items() if w["pooled"]]
    keys += ["patches"] if any(w["patches"] for w in wanted.values()) else []
    entries = {}
    for key in keys:
        first = None  # a chunk whose images all failed has no arrays; find the shape in another
        for p in paths:
            with np.load(p) as z:
                if key in z.files:
                    first = z[key]
                    break
        shape, dtype = (n_ok, *first.shape[1:]), first.dtype
        file = "patches.npy" if key == "patches" else space_file(key[len("space_"):])
        with npy_writer(out / file, shape, dtype) as arr:
            row = 0
            for p in paths:
                with np.load(p) as z:
                    if key in z.files:
                        part = z[key]
                        arr[row:row + part.shape[0]] = part
                        row += part.shape[0]
        entries[key] = store_entry(key, file, shape, dtype, models, wanted)
    labels = src.labels[index] if src.labels is not None else None
    meta = {
        "source": src.description,
        "source_fingerprint": job["fingerprint"],  # the report's thumbnails are read back only if it still matches
        "class_names": src.class_names,
        "preprocessing": {name: m.preprocessing.to_dict() for name, m in models.items()},
        "backbones": job["models"],
        "weights": job["weights"],  # local checkpoints given with --weights (none: the installed ImageNet weights)
        "skipped": [{"index": i, "name": name, "reason": reason} for i, name, reason in failed],
        "n_skipped": len(failed),
        "embed_seconds": round(seconds, 2),
        "compiled": compiled,  # torch.compile'd backbones: the same features up to float rounding
    }
    if ranks is not None:  # made by several processes (torchrun): who embedded what, how fast
        meta["distributed"] = {"world_size": len(ranks), "ranks": ranks}
    if failed:  # rows of the store -> indices in the source
        meta["source_index_file"] = "source_index.npy"
        save_npy_atomic(out / "source_index.npy", index)
    if isinstance(src, FolderSource):  # each row's file, one JSON string a line: the report reads the images back
        meta["source_files_file"] = SOURCE_FILES
        with atomic_path(out / SOURCE_FILES, ".txt") as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                f.writelines(json.dumps(src.name_of(int(i))) + "\n" for i in index)
    return write_store(out, labels=labels, meta=meta, entries=entries)


def store_entry(key, file, shape, dtype, models, wanted) -> dict:
    entry = {"file": file, "shape": list(shape), "dtype": str(np.dtype(dtype))}
    if key == "patches":
        name = next(n for n, w in wanted.items() if w["patches"])
        m = models[name]
        entry.update(kind="patches", backbone=name, grid=list(m.grid), layer=m.patch_layer)
    else:
        name = key[len("space_"):]
        entry.update(kind="space", name=name, backbone=name)
    return entry
