"""Candidate for SEAL's accuracy: the visual embedding averaged over a horizontal flip.

phi(x) is replaced by (phi(x) + phi(flip(x))) / 2, EfficientNet-Lite0's pooled
embedding of each image and of its mirror image (test-time augmentation; the patch
features stay those of the image as it is). The mirrored images are embedded once
(`seal_fast.embed`, into a store beside the others in --cache) and averaged with the
cached store's phi; then SEAL's default and TURTLE fit and label the same rows on it,
to compare with their rows on phi alone (`bench/accuracy.py`, the same seeds and stores).

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

from accuracy import NETS, machine, splits, store_for
from seal_fast import FeatureStore, pipeline
from seal_fast.data.sources import ImageSource, open_source
from seal_fast.embed import embed
from seal_fast.inputs import ArrayInputs
from seal_fast.metrics import evaluate


class Mirrored(ImageSource):
    """The images of another source, each mirrored left to right."""

    def __init__(self, source: ImageSource):
        self.source = source
        self.labels, self.class_names = source.labels, source.class_names
        self.description = {"mirrored": source.description}

    def __len__(self) -> int:
        return len(self.source)

    def read(self, index: int) -> np.ndarray:
        return np.ascontiguousarray(self.source.read(index)[:, ::-1])

    def name_of(self, index: int) -> str:
        return self.source.name_of(index)

    def fingerprint(self) -> str:
        return "mirrored:" + self.source.fingerprint()


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
    store = store_for(source, "lite0", cache)
    flipped_path = cache / f"{source}-lite0-flipped"
    try:
        flipped_store = FeatureStore(flipped_path)
    except Exception:  # not made yet, or interrupted: embed() resumes it
        flipped_store = embed(Mirrored(open_source(source)), flipped_path, backbones=[NETS["lite0"]],
                              patch_backbone=None)
    phi = np.asarray(store.space(NETS["lite0"]))
    flipped = np.asarray(flipped_store.space(NETS["lite0"]))
    if not np.array_equal(flipped_store.labels(), store.labels()):
        raise SystemExit(f"{flipped_path} does not hold the images of {source} in the same order")
    averaged = (phi + flipped) / 2
    cos_phi_flipped = round(float(np.mean(np.sum(phi * flipped, 1) / (
        np.linalg.norm(phi, axis=1) * np.linalg.norm(flipped, axis=1)))), 4)
    data = ArrayInputs({NETS["lite0"]: averaged}, patches=store_for(source, "lite2", cache).patches(),
                       labels=store.labels(), description={"kind": "bench", "source": source})
    y = store.labels()
    with open(args.out, "a") as f:
        for method in args.methods:
            for seed in args.seeds:
                t0 = time.perf_counter()
                run = pipeline.cluster(data, method, int(len(np.unique(y))), seed=seed)
                row = {"dataset": args.dataset, "method": method, "visual": "lite0 flip-averaged", "seed": seed,
                       **evaluate(y, run.labels), "fit_s": round(time.perf_counter() - t0, 1),
                       "cos_phi_flipped": cos_phi_flipped,
                       "machine": machine(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
                print(json.dumps(row), file=f, flush=True)
                print(method, seed, row["acc"], row["nmi"], row["ari"], flush=True)


if __name__ == "__main__":
    main()
