"""SATC's visual head epoch by epoch on Fashion-MNIST (fit on train 60k, scored on test 10k).

Runs exactly what `SATC(10, epochs=E, restarts=1, seed=s).fit` runs (same modalities,
generators and configuration; early stopping on the training loss), and after
every epoch scores the visual head's argmax on the test split. The labels are
only read for the report, never by the training. Shows whether the 20-epoch runs
in the README table were cut short, and what the default (200 epochs, patience 10)
keeps:

    python bench/satc_epochs.py --train feats/fmnist-train --test feats/fmnist-test \
        --epochs 200 --seeds 0 1 2 --out bench/results/satc-epochs.jsonl
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from seal_fast.distill import mutual_distillation, restart_seed
from seal_fast.metrics import evaluate, normalized_mutual_info
from seal_fast.models.base import to_tensors
from seal_fast.models.satc import SATC
from seal_fast.models.seal import visual_and_spatial
from seal_fast.store import FeatureStore

SPACE = "efficientnet-lite0"


def run(seed: int, epochs: int, train: FeatureStore, Z_test: torch.Tensor, y_test: np.ndarray, out: Path):
    model = SATC(10, epochs=epochs, restarts=1, seed=seed)
    Z = to_tensors([np.array(train.space(SPACE))], "cpu")[0]
    generator = torch.Generator().manual_seed(seed)  # as SATC.fit: heads and GAT drawn from it
    visual, spatial = visual_and_spatial(Z, train.patches(), 10, spatial_dim=model.spatial_dim,
                                         patch_neighbors=model.patch_neighbors, backend=model.backend,
                                         generator=generator, device="cpu")
    previous, t0 = None, time.perf_counter()

    def score(epoch: int, loss: float):
        nonlocal previous
        visual.head.eval()
        with torch.no_grad():
            labels = visual.head(Z_test).argmax(1).numpy()
        visual.head.train()
        row = {"seed": seed, "epoch": epoch, "loss": round(loss, 4), "test": evaluate(y_test, labels),
               "nmi_to_previous_epoch": None if previous is None else round(normalized_mutual_info(previous, labels), 4),
               "s": round(time.perf_counter() - t0, 1)}
        previous = labels
        print(json.dumps(row), flush=True)
        with open(out, "a") as f:
            f.write(json.dumps(row) + "\n")

    result = mutual_distillation([visual, spatial], [(0, 1, 1.0)], model.distill_config(model.n_neighbors),
                                 generator=torch.Generator().manual_seed(restart_seed(seed, 0)),
                                 backend=model.backend, on_epoch=score)
    with torch.no_grad():  # the weights SATC keeps: those of the best-loss epoch
        kept = visual.head(Z_test).argmax(1).numpy()
    row = {"seed": seed, "kept_epoch": result.best_epoch, "epochs_run": len(result.losses),
           "stopped_early": result.stopped_early, "test": evaluate(y_test, kept),
           "s": round(time.perf_counter() - t0, 1)}
    print(json.dumps(row), flush=True)
    with open(out, "a") as f:
        f.write(json.dumps(row) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train", type=Path, required=True)
    ap.add_argument("--test", type=Path, required=True)
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, required=True, help="JSON-lines file, one row per epoch")
    args = ap.parse_args()
    train, test = FeatureStore(args.train), FeatureStore(args.test)
    Z_test = F.normalize(torch.from_numpy(np.array(test.space(SPACE))).float(), dim=1)
    for seed in args.seeds:
        run(seed, args.epochs, train, Z_test, test.labels(), args.out)


if __name__ == "__main__":
    main()
