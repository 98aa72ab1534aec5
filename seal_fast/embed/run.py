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
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import distributed
from ..backbones import DEFAULT_BACKBONE, DEFAULT_PATCH_BACKBONE, get_backbone, known_backbones
from ..data.sources import open_source, read_many
from ..errors import Interrupted, SealFastError
from ..files import check_outputs
from ..store import FeatureStore, held_for_writing
from ..validation import resolve_device
from .assemble import assemble
from .journal import PARTIAL, file_identity, prepare_partial, resume_position, write_chunk

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
    # rank 0 checks the output folder and holds it until the store is written (a second
    # job on the same folder is refused at once); every rank hears how that went
    held = contextlib.ExitStack()
    distributed.on_rank0_then_share(lambda: _check_and_hold(out, held))
    with held:
        src = open_source(source)
        n = len(src)

        # one model per distinct backbone; each is asked for what it must provide
        wanted = {name: {"pooled": name in backbones, "patches": name == patch_backbone}
                  for name in dict.fromkeys(backbones + ([patch_backbone] if patch_backbone else []))}
        models = {name: get_backbone(name, weights.get(name)).to(dev) for name in wanted}
        runners = {name: _runner(m, dev, compile) for name, m in models.items()}

        job = {"source": src.description, "fingerprint": src.fingerprint(), "n": n, "backbones": backbones,
               "patch_backbone": patch_backbone, "models": {name: m.describe() for name, m in models.items()},
               "weights": {name: file_identity(path) for name, path in weights.items()}, "world_size": world}
        partial = out / PARTIAL
        distributed.on_rank0_then_share(lambda: prepare_partial(partial, job, progress))

        lo, hi = distributed.shard(n, rank, world)  # this rank's images; all of them outside torchrun
        start = resume_position(partial, lo, hi)
        t0 = time.perf_counter()
        desc = "embed" if world == 1 else f"embed [rank {rank}/{world}]"
        bar = tqdm(total=hi - lo, desc=desc, unit="img", disable=not progress or rank != 0, initial=start - lo)
        try:
            while start < hi:
                start = _embed_chunk(src, start, min(hi, start + chunk_size), time.perf_counter() + chunk_seconds,
                                     models, runners, wanted, dev, batch_size, partial, bar)
        except KeyboardInterrupt:
            bar.close()
            done = resume_position(partial, lo, hi) - lo
            raise Interrupted(f"interrupted after {done} of {hi - lo} images; the finished ones are kept: run the same "
                              "command again to resume") from None
        bar.close()
        seconds = time.perf_counter() - t0
        ranks = distributed.gather({"rank": rank, "rows": [lo, hi], "seconds": round(seconds, 2),
                                    "device": str(dev)})
        store = distributed.on_rank0_then_share(
            lambda: assemble(out, partial, n, src, models, wanted, job, max(r["seconds"] for r in ranks),
                              compile, ranks if world > 1 else None))
        if rank == 0:
            shutil.rmtree(partial, ignore_errors=True)
        return store if store is not None else FeatureStore(out)


def _check_and_hold(out: Path, held: contextlib.ExitStack) -> None:
    _check_out(out)
    held.enter_context(held_for_writing(out))


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
    write_chunk(partial, start, end, arrays)
    return end


