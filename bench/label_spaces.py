"""Which spaces should SEAL's human labeling see? phi_hat alone (the paper) or phi and phi_hat.

Fits SEAL with 3 restarts, labeling (T = 2000, batch 10,000) on the 2-space [phi, phi_hat
of the consensus restart] of the train split (label_on="phi+phi_hat", label_restarts="kept"),
and reports test-split ACC / NMI / ARI, with the kept visual head's own answer for context:

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

from seal_fast.metrics import evaluate
from seal_fast.models.seal import SEAL
from seal_fast.store import FeatureStore

SPACE = "efficientnet-lite0"


def run(seed: int, Z: np.ndarray, patches, Z_test: np.ndarray, y_test: np.ndarray, iterations: int) -> dict:
    t0 = time.perf_counter()
    model = SEAL(10, iterations=iterations, restarts=3, label_on="phi+phi_hat", label_restarts="kept",
                 seed=seed).fit([Z], patches=patches)
    with torch.no_grad():
        head_test = model.heads_[0].eval()(F.normalize(torch.from_numpy(Z_test), dim=1)).argmax(1).numpy()
    details = model.fit_details_
    return {"seed": seed, "restart_kept": details["distill"][0]["restart_kept"],
            "head_test": evaluate(y_test, head_test), "phi_and_phi_hat_test": evaluate(y_test, model.predict([Z_test])),
            "distill_s": round(time.perf_counter() - t0 - details["labeling_s"]),
            "labeling_s": round(details["labeling_s"]),
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
    Z = np.array(train.space(SPACE), dtype=np.float32)        # read once, shared by every seed
    Z_test = np.array(test.space(SPACE), dtype=np.float32)
    for seed in args.seeds:
        row = run(seed, Z, train.patches(), Z_test, test.labels(), args.iterations)
        print(json.dumps(row), flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
