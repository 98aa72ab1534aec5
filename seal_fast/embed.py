"""Feature extraction: images -> visual spaces (+ patch features) -> feature store.

Under torchrun (`torchrun --nproc-per-node G -m seal_fast embed ...`) every
process embeds a contiguous share of the images into the same `.partial/`
folder (a filesystem all of them see) and rank 0 assembles the store; the store
is the one a single process would write, plus a record of who did what.

The job is resumable: finished chunks of images are kept in
`FEATDIR/.partial/` (each written atomically; a chunk closes after `chunk_size`
images or `chunk_seconds` of work, whichever comes first), so a crash or Ctrl-C
loses at most a minute of work; running the same command again picks up where
it stopped, provided the job is the same: same backbones, same settings, and the
same source (its fingerprint: file names, sizes, times and sampled bytes, or the
arrays' hash). The final arrays are assembled only when every image is done, and
the manifest is written last.
"""
from __future__ import annotations

import contextlib
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from . import distributed
from .backbones import DEFAULT_BACKBONE, DEFAULT_PATCH_BACKBONE, get_backbone, known_backbones
from .data.sources import open_source, read_many
from .errors import Interrupted, SealFastError
from .files import atomic_path, check_outputs, npy_writer, save_npy_atomic
from .store import FeatureStore, space_file, write_store
from .validation import resolve_device

PARTIAL = ".partial"
PATCH_DTYPE = np.float16  # halves the largest array; patch features are inputs to a GAT, not targets


def embed(source, out, *, backbones: Sequence[str] = (DEFAULT_BACKBONE,),
          patch_backbone: str | None = DEFAULT_PATCH_BACKBONE, weights: dict[str, str] | None = None,
          device="auto", batch_size: int = 64, chunk_size: int = 1024, chunk_seconds: float = 60.0,
          compile: bool = False, progress: bool = True) -> FeatureStore:
    """Embed every image of `source` and write a feature store at `out`.

    Args:
        source: image folder, `.npz` path, built-in name (`digits`,
            `fashion-mnist[-train|-test]`) or an ImageSource.
        out: feature store directory (created; an existing store is replaced, an
            interrupted job in it resumed; any other non-empty folder is refused).
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
    if batch_size < 1 or chunk_size < 1 or chunk_seconds <= 0:
        raise SealFastError("batch size, chunk size and chunk seconds must be positive")
    out = Path(out)
    rank, world, dev = distributed.init(device) if distributed.launched() else (0, 1, resolve_device(device))
    # rank 0 checks the output folder and prepares the job; every rank hears how that went
    distributed.on_rank0_then_share(lambda: _check_out(out))
    src = open_source(source)
    n = len(src)

    # one model per distinct backbone; each is asked for what it must provide
    wanted = {name: {"pooled": name in backbones, "patches": name == patch_backbone}
              for name in dict.fromkeys(backbones + ([patch_backbone] if patch_backbone else []))}
    models = {name: get_backbone(name, weights.get(name)).to(dev) for name in wanted}
    runners = {name: _runner(m, dev, compile) for name, m in models.items()}

    job = {"source": src.description, "fingerprint": src.fingerprint(), "n": n, "backbones": backbones,
           "patch_backbone": patch_backbone, "models": {name: m.describe() for name, m in models.items()},
           "weights": {name: _file_identity(path) for name, path in weights.items()}, "world_size": world}
    partial = out / PARTIAL
    distributed.on_rank0_then_share(lambda: _prepare_partial(partial, job, progress))

    lo, hi = distributed.shard(n, rank, world)  # this rank's images; all of them outside torchrun
    start = _resume_position(partial, lo, hi)
    t0 = time.perf_counter()
    desc = "embed" if world == 1 else f"embed [rank {rank}/{world}]"
    bar = tqdm(total=hi - lo, desc=desc, unit="img", disable=not progress or rank != 0, initial=start - lo)
    try:
        while start < hi:
            start = _embed_chunk(src, start, min(hi, start + chunk_size), time.perf_counter() + chunk_seconds,
                                 models, runners, wanted, dev, batch_size, partial, bar)
    except KeyboardInterrupt:
        bar.close()
        done = _resume_position(partial, lo, hi) - lo
        raise Interrupted(f"interrupted after {done} of {hi - lo} images; the finished ones are kept: run the same "
                          "command again to resume") from None
    bar.close()
    seconds = time.perf_counter() - t0
    ranks = distributed.gather({"rank": rank, "rows": [lo, hi], "seconds": round(seconds, 2),
                                "device": str(dev)})
    store = distributed.on_rank0_then_share(
        lambda: _assemble(out, partial, n, src, models, wanted, job, max(r["seconds"] for r in ranks),
                          compile, ranks if world > 1 else None))
    if rank == 0:
        shutil.rmtree(partial, ignore_errors=True)
    return store if store is not None else FeatureStore(out)


def _check_out(out: Path) -> None:
    """The store may be written at `out`: a new path, an earlier store (replaced), an
    interrupted job's folder (resumed) or an empty folder -- never a file or a folder
    of the user's own files."""
    if out.exists() and not out.is_dir():
        raise SealFastError(f"--out {out} is an existing file; give a directory for the feature store")
    if out.is_dir() and any(out.iterdir()) and not (out / "manifest.json").exists() and not (out / PARTIAL).exists():
        raise SealFastError(f"--out {out} is a non-empty directory that is not a feature store; refusing to "
                            "write among its files (give a new or empty directory)")
    check_outputs({"--out": out / "manifest.json"}, inputs=[])


def _runner(model, dev, compile: bool):
    """The callable that runs a backbone: channels-last, optionally compiled."""
    if dev.type == "cpu" or dev.type == "cuda":
        with contextlib.suppress(Exception):
            model.to(memory_format=torch.channels_last)
    fn = model.forward
    if compile:
        fn = torch.compile(fn)
    return fn


def _file_identity(path) -> dict:
    """A checkpoint as the resume journal knows it: a new file under the same path is another job."""
    st = Path(path).stat()
    return {"path": str(Path(path).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "ctime_ns": st.st_ctime_ns}


def _chunk_name(start: int, end: int) -> str:
    return f"chunk_{start:010d}_{end:010d}.npz"


def _chunks(partial: Path) -> list[tuple[int, int, Path]]:
    """(start, end, path) of the finished chunks, by start."""
    found = []
    for p in partial.glob("chunk_*_*.npz"):
        _, start, end = p.stem.split("_")
        found.append((int(start), int(end), p))
    return sorted(found)


def _resume_position(partial: Path, lo: int, hi: int) -> int:
    """The first index of [lo, hi) not covered by finished chunks that tile [lo, it)."""
    pos = lo
    for start, end, _ in _chunks(partial):
        if start == pos and end <= hi:
            pos = end
    return pos


def _prepare_partial(partial: Path, job: dict, progress: bool) -> None:
    job_file = partial / "job.json"
    if partial.exists():
        try:
            same = json.loads(job_file.read_text()) == json.loads(json.dumps(job))
        except (OSError, json.JSONDecodeError):
            same = False
        if not same:  # another job, or the same source changed since: its chunks are not ours
            if progress and _chunks(partial):
                print(f"{partial.parent}: the interrupted job there had other settings or the source has changed "
                      "since; starting over", file=sys.stderr)
            shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    if not job_file.exists():
        job_file.write_text(json.dumps(job, indent=1))


@torch.inference_mode()
def _embed_chunk(src, start: int, stop: int, deadline: float, models, runners, wanted, dev, batch_size,
                 partial: Path, bar) -> int:
    """Embed images start.. in batches until `stop` or the deadline; write them as one
    chunk and return where the chunk ended."""
    outputs: dict[str, list[np.ndarray]] = {}
    ok_all, failed_all = [], []
    end = start
    while end < stop and (end == start or time.perf_counter() < deadline):
        batch = list(range(end, min(stop, end + batch_size)))
        ok, images, failures = read_many(src, batch)
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
        end = batch[-1] + 1
        bar.update(len(batch))
    arrays = {k: np.concatenate(v) for k, v in outputs.items()}
    arrays["index"] = np.asarray(ok_all, dtype=np.int64)
    arrays["failed"] = np.asarray([json.dumps(f) for f in failed_all], dtype=np.str_)
    with atomic_path(partial / _chunk_name(start, end), ".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return end


def _assemble(out: Path, partial: Path, n: int, src, models, wanted, job, seconds, compiled: bool,
              ranks=None) -> FeatureStore:
    """Concatenate the chunks into the store's arrays, streaming through memory maps."""
    chunks = _chunks(partial)
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
        "compiled": compiled,  # torch.compile'd backbones: the same features up to float rounding
    }
    if ranks is not None:  # made by several processes (torchrun): who embedded what, how fast
        meta["distributed"] = {"world_size": len(ranks), "ranks": ranks}
    if failed:  # rows of the store -> indices in the source
        meta["source_index_file"] = "source_index.npy"
        save_npy_atomic(out / "source_index.npy", index)
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
        noun_emb = np.asarray(store.array(cache_key))
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
