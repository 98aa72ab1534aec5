"""Candidate for SEAL's accuracy: the visual embedding averaged over a horizontal flip.

phi(x) is replaced by (phi(x) + phi(flip(x))) / 2, EfficientNet-Lite0's pooled
embedding of each image and of its mirror image (test-time augmentation; the patch
features stay those of the image as it is). The flipped embedding is computed here
and averaged with the cached store's phi; then SEAL's default and TURTLE fit and
label the same rows on it, to compare with their rows on phi alone
(`bench/accuracy.py`, the same seeds and stores).

    python bench/flip_average.py --dataset digits --seeds 0 1 2 --cache feats \
        --out bench/results/flip-average-cpu-DATE.jsonl
"""
from __future__ import annotations

import argparse
import json
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from accuracy import NETS, machine, splits, store_for
from seal_fast import pipeline
from seal_fast.backbones import get_backbone
from seal_fast.data.sources import open_source, read_many
from seal_fast.inputs import ArrayInputs
from seal_fast.metrics import evaluate


@torch.inference_mode()
def flipped_embedding(source: str, net: str, batch_size: int = 64) -> np.ndarray:
    """The pooled embedding of every image of `source`, mirrored left to right."""
    model = get_backbone(NETS[net]).eval()
    src = open_source(source)
    out = []
    for s in tqdm(range(0, len(src), batch_size), desc=f"flipped {source}"):
        ok, images, failures = read_many(src, range(s, min(len(src), s + batch_size)))
        if failures:
            raise SystemExit(f"unreadable images in {source}: {failures[:3]}")
        x = model.preprocessing(images)
        out.append(model(x.flip(-1), pooled=True)["pooled"].float().numpy())
    return np.concatenate(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=["seal", "turtle"])
    p.add_argument("--cache", default="feats")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    source, evaluated = splits(args.dataset)
    if source != evaluated:
        raise SystemExit("this experiment fits and labels the same rows: use digits or fashion-mnist-test")
    cache = Path(args.cache)
    flipped_path = cache / f"{source}-lite0-flipped.npy"
    if not flipped_path.exists():
        np.save(flipped_path, flipped_embedding(source, "lite0"))
    store = store_for(source, "lite0", cache)
    phi = np.asarray(store.space(NETS["lite0"]))
    flipped = np.load(flipped_path, allow_pickle=False)
    if flipped.shape != phi.shape:
        raise SystemExit(f"{flipped_path} holds {flipped.shape}, the store {phi.shape}: delete it and rerun")
    averaged = (phi + flipped) / 2
    data = ArrayInputs({NETS["lite0"]: averaged}, patches=store_for(source, "lite2", cache).patches(),
                       labels=store.labels(), description={"kind": "bench", "source": source})
    y = store.labels()
    with open(args.out, "a") as f:
        for method in args.methods:
            for seed in args.seeds:
                t0 = time.perf_counter()
                run = pipeline.cluster(data, method, 10, seed=seed)
                row = {"dataset": args.dataset, "method": method, "visual": "lite0 flip-averaged", "seed": seed,
                       **evaluate(y, run.labels), "fit_s": round(time.perf_counter() - t0, 1),
                       "cos_phi_flipped": round(float(np.mean(np.sum(phi * flipped, 1) / (
                           np.linalg.norm(phi, axis=1) * np.linalg.norm(flipped, axis=1)))), 4),
                       "machine": machine(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
                print(json.dumps(row), file=f, flush=True)
                print(method, seed, row["acc"], row["nmi"], row["ari"], flush=True)


if __name__ == "__main__":
    main()
