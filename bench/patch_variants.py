"""Candidate for SEAL's accuracy: patch features from other layers or a higher resolution.

SEAL's default patches are EfficientNet-Lite2's last MBConv block (352 channels) on its
9 x 9 grid at the native 260 px. This embeds the same images' patches otherwise and fits
SEAL's default (or SATC's: `--methods`) on Lite0's phi (the cached store) with each, on
the same seeds:

- `block`: the default, recomputed here (checks that this script reproduces the store);
- `head`: the 1280-channel head's map (`patch_layer="head"`), a pointwise expansion of it;
- `two-layers` (`patch_layer="block+stride16"`): the last block's map beside the last
  stride-16 block's (120 channels, 17 x 17, average-pooled to the 9 x 9 grid), each
  divided by its mean patch norm in the image so that both weigh alike;
- `hires`: the last block's map at 1.5x the resolution (390 px, a 13 x 13 grid).

`--dataset digits` or `fashion-mnist-test` fit and label the same rows; `fashion-mnist`
is the papers' protocol (fit on the 60k train split, label the 10k test split). The
patches are cached as `.npy` files in --cache, so a rerun only fits.

    python bench/patch_variants.py --dataset digits --variants block head two-layers hires \
        --seeds 0 1 2 --cache feats --out bench/results/patch-variants-cpu-DATE.jsonl
"""
from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from accuracy import NETS, inputs, machine, seal_stage_seconds, splits, store_for
from seal_fast import pipeline
from seal_fast.backbones.efficientnet import EfficientNetLite
from seal_fast.data.preprocess import Preprocessing
from seal_fast.data.sources import open_source
from seal_fast.files import npy_writer
from seal_fast.inputs import ArrayInputs
from seal_fast.metrics import evaluate

# variant -> (EfficientNetLite's patch_layer, resolution as a multiple of the native one)
VARIANTS = {"block": ("block", 1), "head": ("head", 1), "two-layers": ("block+stride16", 1), "hires": ("block", 1.5)}


@torch.no_grad()
def embed_patches(source: str, variant: str, path: Path, batch_size: int = 64, compile: bool = False) -> None:
    """Write the variant's patches of every image of `source` to `path` (float16 .npy), batch by batch."""
    layer, scale = VARIANTS[variant]
    backbone = EfficientNetLite(NETS["lite2"], patch_layer=layer).eval()
    native = backbone.preprocessing
    prep = Preprocessing(int(native.size * scale), native.mean, native.std, native.interpolation)

    def patches_of(x):
        return backbone(x, pooled=False, patches=True)["patches"]
    forward = torch.compile(patches_of) if compile else patches_of
    images = open_source(source)
    grid = -(-prep.size // 32)  # the network's "same" padding: ceil(size / 32) cells a side
    with npy_writer(path, (len(images), grid * grid, backbone.patch_dim), np.float16) as out:  # complete, or absent
        for start in tqdm(range(0, len(images), batch_size), desc=f"patches {variant}", unit="batch"):
            batch = [images.read(i) for i in range(start, min(start + batch_size, len(images)))]
            out[start:start + len(batch)] = forward(prep(batch)).to(torch.float16).numpy()


def cached_patches(source: str, variant: str, cache: Path, compile: bool = False) -> np.ndarray:
    path = cache / f"{source}-lite2-patches-{variant}.npy"
    if not path.exists():
        embed_patches(source, variant, path, compile=compile)
    return np.load(path, mmap_mode="r")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    p.add_argument("--methods", nargs="+", choices=["seal", "satc"], default=["seal"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--cache", default="feats")
    p.add_argument("--compile", action="store_true", help="torch.compile the network when embedding")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    source, evaluated = splits(args.dataset)  # fashion-mnist: fit on the train split, label the test split
    cache = Path(args.cache)
    store = store_for(source, "lite0", cache)
    phi, y = np.asarray(store.space(NETS["lite0"])), store.labels()
    scored = inputs(evaluated, ["lite0"], None, cache)
    for variant in args.variants:
        patches = cached_patches(source, variant, cache, compile=args.compile)
        if variant == "block":  # the store's layer: this script must reproduce the store's patches
            rows = slice(0, 2000)  # a sample: two float32 copies of 60k images' patches would not fit
            stored = np.asarray(store_for(source, "lite2", cache).patches()[rows], dtype=np.float32)
            error = float(np.abs(np.asarray(patches[rows], dtype=np.float32) - stored).max() / np.abs(stored).max())
            print(f"block patches vs the store: max relative error {error:.1e}", flush=True)
            if error > 1e-2:
                raise SystemExit("the recomputed block patches differ from the store's")
        data = ArrayInputs({NETS["lite0"]: phi}, patches=patches, labels=y,
                           description={"kind": "bench", "source": source, "patches": variant})
        with open(args.out, "a") as f:
            for method, seed in ((m, s) for m in args.methods for s in args.seeds):
                run = pipeline.cluster(data, method, int(len(np.unique(y))), seed=seed)
                labels = run.labels if evaluated == source else pipeline.predict(run.model, scored)
                row = {"dataset": args.dataset, "method": method, "patches": variant,
                       "patch_layer": VARIANTS[variant][0], "resolution": VARIANTS[variant][1],
                       "patch_shape": list(patches.shape[1:]), "seed": seed, **evaluate(scored.labels(), labels),
                       "fit_s": round(run.report["timings"]["fit_s"], 1),
                       "machine": machine(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
                if method == "seal":  # where the fit's time went
                    row["stage_s"] = seal_stage_seconds(run.model.fit_details_)
                print(json.dumps(row), file=f, flush=True)
                print(method, variant, seed, row["acc"], row["nmi"], row["ari"], row["fit_s"], flush=True)


if __name__ == "__main__":
    main()
