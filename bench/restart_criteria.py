"""Label-free criteria for choosing among SATC's distillation restarts, Fashion-MNIST 60k -> 10k.

Trains `--restarts` restarts exactly as `SATC(10, epochs=E, restarts=R, seed=s).fit`
does, then scores every restart's visual-head partition of the train split by
criteria that need no labels, next to its test ACC (read for the report only):

- consensus: mean NMI to the other restarts' partitions (what SATC keeps today);
- knn_visual / knn_spatial: share of the top-50 neighbour pairs of the visual
  (spatial) features that the partition puts in the same cluster;
- heads_nmi: NMI between the restart's visual-head and spatial-head partitions.

    python bench/restart_criteria.py --train feats/fmnist-train --test feats/fmnist-test \
        --epochs 5 --restarts 5 --seeds 0 1 2 --out restart-criteria.jsonl
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from seal_fast.distill import distill_with_restarts, head_labels, neighbor_agreement
from seal_fast.metrics import evaluate, normalized_mutual_info
from seal_fast.models.base import to_tensors
from seal_fast.models.satc import SATC
from seal_fast.models.seal import restart_modalities, visual_and_spatial
from seal_fast.store import FeatureStore

SPACE = "efficientnet-lite0"


def run(seed: int, args, train: FeatureStore, Z_test: torch.Tensor, y_test: np.ndarray):
    model = SATC(10, epochs=args.epochs, restarts=args.restarts, seed=seed)
    Z = to_tensors([np.array(train.space(SPACE))], "cpu")[0]
    generator = torch.Generator().manual_seed(seed)  # as SATC.fit
    first = visual_and_spatial(Z, train.patches(), 10, spatial_dim=model.spatial_dim,
                               patch_neighbors=model.patch_neighbors, backend=model.backend,
                               generator=generator, device="cpu")
    t0 = time.perf_counter()
    runs = distill_with_restarts(lambda r: restart_modalities(list(first), r, 10, seed, "cpu"), [(0, 1, 1.0)],
                                 model.distill_config(model.n_neighbors), restarts=args.restarts, seed=seed,
                                 device="cpu", backend=model.backend)
    partitions = [head_labels(m[0]) for m in runs.runs]
    visual_nb, spatial_nb = runs.runs[0][0].neighbors, runs.runs[0][1].neighbors
    rows = []
    for r, (modalities, part) in enumerate(zip(runs.runs, partitions)):
        with torch.no_grad():
            test_labels = modalities[0].head(Z_test).argmax(1).numpy()
        rows.append({
            "seed": seed, "restart": r, "epochs": args.epochs, "test": evaluate(y_test, test_labels),
            "consensus": runs.scores[r],  # the consensus rule (the default) scored every restart
            "knn_visual": round(neighbor_agreement(part, visual_nb), 4),
            "knn_spatial": round(neighbor_agreement(part, spatial_nb), 4),
            "heads_nmi": round(normalized_mutual_info(part.numpy(), head_labels(modalities[1]).numpy()), 4),
        })
    rows[runs.chosen]["kept_by_consensus"] = True
    for row in rows:
        print(json.dumps(row), flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")
    print(f"seed {seed}: {time.perf_counter() - t0:.0f} s", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train", type=Path, required=True)
    ap.add_argument("--test", type=Path, required=True)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--restarts", type=int, default=5)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    train, test = FeatureStore(args.train), FeatureStore(args.test)
    Z_test = F.normalize(torch.from_numpy(np.array(test.space(SPACE))).float(), dim=1)
    for seed in args.seeds:
        run(seed, args, train, Z_test, test.labels())


if __name__ == "__main__":
    main()
