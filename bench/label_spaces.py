"""Which spaces should SEAL's human labeling see? phi_hat alone (the paper) or phi and phi_hat.

Fits SEAL exactly as the Fashion-MNIST table does (3 restarts, consensus restart kept;
the labeling stage is skipped), then runs TURTLE's labeling (T = 2000, batch 10,000) on
the 2-space [phi, phi_hat] of the train split and reports test-split ACC / NMI / ARI,
with the kept visual head's own answer for context:

    python bench/label_spaces.py --train feats/fmnist-train --test feats/fmnist-test \
        --seeds 2 1 --out bench/results/label-spaces-cpu.jsonl
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from seal_fast.cluster.labeling import LabelingConfig, human_labeling
from seal_fast.metrics import evaluate
from seal_fast.models.seal import SEAL
from seal_fast.store import FeatureStore

SPACE = "efficientnet-lite0"


def run(seed: int, train: FeatureStore, test: FeatureStore, iterations: int) -> dict:
    Z = torch.from_numpy(np.array(train.space(SPACE))).float()
    Zt = torch.from_numpy(np.array(test.space(SPACE))).float()
    yt = test.labels()
    t0 = time.perf_counter()
    model = SEAL(10, iterations=1, restarts=3, seed=seed).fit([Z.numpy()], patches=train.patches())
    head = model.heads_[0].eval()
    phi_hat, phi_hat_test = SEAL._embed(head, Z), SEAL._embed(head, Zt)
    with torch.no_grad():
        head_test = head(F.normalize(Zt, dim=1)).argmax(1).numpy()
    t1 = time.perf_counter()
    labeling = human_labeling([Z, phi_hat], 10, LabelingConfig(iterations=iterations, batch_size=10000), seed=seed)
    with torch.no_grad():
        pair_test = labeling.encoder.predict_proba([Zt, phi_hat_test]).argmax(1).numpy()
    return {"seed": seed, "restart_kept": model.fit_details_["distill"][0]["restart_kept"],
            "head_test": evaluate(yt, head_test), "phi_and_phi_hat_test": evaluate(yt, pair_test),
            "distill_s": round(t1 - t0), "labeling_s": round(time.perf_counter() - t1),
            "iterations": iterations, "threads": torch.get_num_threads()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train", type=Path, required=True)
    ap.add_argument("--test", type=Path, required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--iterations", type=int, default=2000)
    ap.add_argument("--out", type=Path, required=True, help="JSON-lines file, one row per seed")
    args = ap.parse_args()
    train, test = FeatureStore(args.train), FeatureStore(args.test)
    for seed in args.seeds:
        row = run(seed, train, test, args.iterations)
        print(json.dumps(row), flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
