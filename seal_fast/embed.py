"""Feature extraction: images -> visual spaces (+ patch features) -> feature store.

The job is resumable: finished chunks of images are kept in
`FEATDIR/.partial/` (each written atomically), so a crash or Ctrl-C loses at
most the chunk in progress; running the same command again picks up where it
stopped. The final arrays are assembled only when every chunk is done, and the
manifest is written last.
"""
from __future__ import annotations

import contextlib
import json
import shutil
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .backbones import DEFAULT_BACKBONE, get_backbone, known_backbones
from .data.sources import open_source, read_many
from .errors import SealFastError
from .store import FeatureStore, atomic_path, npy_writer, space_file, write_store
from .validation import resolve_device

PARTIAL = ".partial"
PATCH_DTYPE = np.float16  # halves the largest array; patch features are inputs to a GAT, not targets


def embed(source, out, *, backbones: Sequence[str] = (DEFAULT_BACKBONE,),
          patch_backbone: str | None = DEFAULT_BACKBONE, weights: dict[str, str] | None = None,
          device="auto", batch_size: int = 64, chunk_size: int = 1024, compile: bool = False,
          progress: bool = True) -> FeatureStore:
    """Embed every image of `source` and write a feature store at `out`.

    Args:
        source: image folder, `.npz` path, built-in name (`digits`,
            `fashion-mnist[-train|-test]`) or an ImageSource.
        out: feature store directory (created; an existing store is replaced).
        backbones: visual spaces to compute, one `space_<name>.npy` each.
        patch_backbone: backbone whose feature map gives `patches.npy`, or None.
        weights: optional local checkpoint per backbone name.
        compile: `torch.compile` the backbones (pays off for large N on CPU).

    Unreadable images are skipped, counted, reported and listed in the manifest.
    """
    backbones = list(dict.fromkeys(backbones))
    if not backbones:
        raise SealFastError("at least one backbone is needed")
    for name in backbones + ([patch_backbone] if patch_backbone else []):
        if name not in known_backbones():
            raise SealFastError(f"unknown backbone {name!r}; known backbones: {', '.join(known_backbones())}")
    weights = dict(weights or {})
    for name in weights:
        if name not in backbones and name != patch_backbone:
            raise SealFastError(f"--weights given for {name!r}, which is not one of the backbones used")
    if batch_size < 1 or chunk_size < 1:
        raise SealFastError("batch size and chunk size must be positive")
    src = open_source(source)
    dev = resolve_device(device)
    out = Path(out)
    n = len(src)

    # one model per distinct backbone; each is asked for what it must provide
    wanted = {name: {"pooled": name in backbones, "patches": name == patch_backbone}
              for name in dict.fromkeys(backbones + ([patch_backbone] if patch_backbone else []))}
    models = {name: get_backbone(name, weights.get(name)).to(dev) for name in wanted}
    runners = {name: _runner(m, dev, compile) for name, m in models.items()}

    job = {"source": src.description, "n": n, "backbones": backbones, "patch_backbone": patch_backbone,
           "models": {name: m.describe() for name, m in models.items()}, "weights": weights,
           "chunk_size": chunk_size}
    partial = out / PARTIAL
    _prepare_partial(partial, job)

    chunks = [(start, min(start + chunk_size, n)) for start in range(0, n, chunk_size)]
    done = {start for start, _ in chunks if (partial / _chunk_name(start)).exists()}
    t0 = time.perf_counter()
    bar = tqdm(total=n, desc="embed", unit="img", disable=not progress,
               initial=sum(end - start for start, end in chunks if start in done))
    try:
        for start, end in chunks:
            if start in done:
                continue
            _embed_chunk(src, range(start, end), models, runners, wanted, dev, batch_size,
                         partial / _chunk_name(start), bar)
    except KeyboardInterrupt:
        bar.close()
        finished = len([c for c in chunks if (partial / _chunk_name(c[0])).exists()])
        raise SealFastError(f"interrupted after {finished}/{len(chunks)} chunks; run the same command "
                            "again to resume") from None
    bar.close()
    seconds = time.perf_counter() - t0
    store = _assemble(out, partial, chunks, src, models, wanted, job, seconds)
    shutil.rmtree(partial, ignore_errors=True)
    return store


def _runner(model, dev, compile: bool):
    """The callable that runs a backbone: channels-last, optionally compiled."""
    if dev.type == "cpu" or dev.type == "cuda":
        with contextlib.suppress(Exception):
            model.to(memory_format=torch.channels_last)
    fn = model.forward
    if compile:
        fn = torch.compile(fn)
    return fn


def _chunk_name(start: int) -> str:
    return f"chunk_{start:010d}.npz"


def _prepare_partial(partial: Path, job: dict) -> None:
    job_file = partial / "job.json"
    if partial.exists():
        try:
            same = json.loads(job_file.read_text()) == json.loads(json.dumps(job))
        except (OSError, json.JSONDecodeError):
            same = False
        if not same:  # a different job stopped here earlier: its chunks are not ours
            shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    if not job_file.exists():
        job_file.write_text(json.dumps(job, indent=1))


@torch.inference_mode()
def _embed_chunk(src, indices, models, runners, wanted, dev, batch_size, path: Path, bar) -> None:
    outputs: dict[str, list[np.ndarray]] = {}
    ok_all, failed_all = [], []
    idx = list(indices)
    for b in range(0, len(idx), batch_size):
        ok, images, failures = read_many(src, idx[b:b + batch_size])
        ok_all += ok
        failed_all += failures
        if images:
            inputs = {}  # backbones that share preprocessing share the resized batch
            for name, model in models.items():
                pp = model.preprocessing
                if pp not in inputs:
                    x = pp(images).to(dev, non_blocking=True).contiguous(memory_format=torch.channels_last)
                    inputs[pp] = x
                with torch.autocast(dev.type, dtype=torch.float16, enabled=dev.type == "cuda"):
                    res = runners[name](inputs[pp], **wanted[name])
                if "pooled" in res:
                    outputs.setdefault(f"space_{name}", []).append(res["pooled"].float().cpu().numpy())
                if "patches" in res:
                    outputs.setdefault("patches", []).append(res["patches"].float().cpu().numpy().astype(PATCH_DTYPE))
        bar.update(len(idx[b:b + batch_size]))
    arrays = {k: np.concatenate(v) for k, v in outputs.items()}
    arrays["index"] = np.asarray(ok_all, dtype=np.int64)
    arrays["failed"] = np.asarray([json.dumps(f) for f in failed_all], dtype=np.str_)
    with atomic_path(path, ".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def _assemble(out: Path, partial: Path, chunks, src, models, wanted, job, seconds) -> FeatureStore:
    """Concatenate the chunks into the store's arrays, streaming through memory maps."""
    paths = [partial / _chunk_name(start) for start, _ in chunks]
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
        with np.load(paths[0]) as z:
            first = z[key] if key in z.files else None
        # a chunk whose images all failed has no arrays; find the shape elsewhere
        for p in paths:
            if first is not None:
                break
            with np.load(p) as z:
                first = z[key] if key in z.files else None
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
        entries[key] = _store_entry(key, file, shape, dtype, models, wanted)
    labels = src.labels[index] if src.labels is not None else None
    meta = {
        "source": src.description,
        "class_names": src.class_names,
        "preprocessing": {name: m.preprocessing.to_dict() for name, m in models.items()},
        "backbones": job["models"],
        "skipped": [{"index": i, "name": name, "reason": reason} for i, name, reason in failed],
        "n_skipped": len(failed),
        "embed_seconds": round(seconds, 2),
    }
    if failed:
        save_index = index  # rows of the store -> indices in the source
        meta["source_index_file"] = "source_index.npy"
        from .store import save_npy_atomic
        save_npy_atomic(out / "source_index.npy", save_index)
    return write_store(out, labels=labels, meta=meta, entries=entries)


def _store_entry(key, file, shape, dtype, models, wanted) -> dict:
    entry = {"file": file, "shape": list(shape), "dtype": str(np.dtype(dtype))}
    if key == "patches":
        name = next(n for n, w in wanted.items() if w["patches"])
        m = models[name]
        entry.update(kind="patches", backbone=name, grid=list(m.grid), layer=m.patch_layer)
    else:
        name = key[len("space_"):]
        entry.update(kind="space", name=name, backbone=name)
    return entry


def add_text_features(out, clip_backbone: str, *, weights: str | None = None, nouns_path=None, device="auto",
                      batch_size: int = 1024, seed: int = 0, progress: bool = True, model=None) -> FeatureStore:
    """Add TAC-style textual counterparts (`text.npy`) to a feature store that holds
    the CLIP space `clip_backbone`; the noun embeddings are cached in the store
    (`nouns_<backbone>.npy`, with the noun list in the manifest) and reused."""
    from .backbones.clip import CLIP_MODELS, create_clip_model
    from .store import add_array, save_json_atomic
    from .text import embed_nouns, read_nouns, text_counterparts

    if clip_backbone not in CLIP_MODELS:
        raise SealFastError(f"text features need a CLIP backbone (its text tower embeds the nouns); "
                            f"{clip_backbone!r} is not one of {', '.join(CLIP_MODELS)}")
    store = FeatureStore(out)
    images = store.space(clip_backbone)
    nouns = read_nouns(nouns_path)
    dev = resolve_device(device)
    cache_key = f"nouns_{clip_backbone}"
    cached = store.manifest.get("text", {}).get("nouns") == nouns and store.has(cache_key)
    if cached:
        noun_emb = np.load(store.path / store.entry(cache_key)["file"])
    else:
        import open_clip

        clip = model if model is not None else create_clip_model(clip_backbone, weights)
        clip = clip.to(dev)
        tokenizer = open_clip.get_tokenizer(CLIP_MODELS[clip_backbone])
        noun_emb = embed_nouns(clip, tokenizer, nouns, dev, batch_size, progress)
        store = add_array(out, cache_key, noun_emb, "nouns", backbone=clip_backbone)
    text, selected = text_counterparts(images, noun_emb, seed=seed, device=dev)
    store = add_array(out, "text", text, "text", backbone=clip_backbone)
    manifest = dict(store.manifest)
    manifest["text"] = {"backbone": clip_backbone, "nouns_source": str(nouns_path or "WordNet 3.0 (data.noun)"),
                        "n_nouns": len(nouns), "nouns": nouns, "n_selected": int(selected.size),
                        "selected_nouns": [nouns[i] for i in selected.tolist()], "retrieval_tau": 0.005,
                        "images_per_center": 300, "nouns_per_center": 5}
    save_json_atomic(store.path / "manifest.json", manifest)
    return FeatureStore(out)
