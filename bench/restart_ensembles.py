"""Combine SEAL's distillation restarts instead of keeping one?

For each seed: R restarts of the distillation, trained by `SEAL.fit` itself, every
restart's visual head saved to --heads. Then, on the Fashion-MNIST test split:

- members: each restart's visual head alone (test ACC);
- consensus: the restart SEAL keeps (highest mean NMI to the others), of the first 3 and of all R;
- ensemble: K-Means (K = 10) on the restarts' stacked head probabilities [p_1(x), ..., p_R(x)]
  of the train split, test rows assigned to the nearest centre, of the first 3 and of all R;
- with --label: TURTLE's labeling (T = 2000) on [phi, phi_hat_1, phi_hat_2, phi_hat_3] —
  SEAL(label_on="phi+phi_hat", label_restarts="all") on the first three restarts.

    python bench/restart_ensembles.py --train feats/fmnist-train --test feats/fmnist-test \
        --seeds 0 1 2 --restarts 5 --heads heads/ --out restart-ensembles.jsonl [--label]

Heads already in --heads are loaded instead of trained, so the evaluation can be rerun.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from seal_fast.cluster.kmeans import assign, kmeans
from seal_fast.cluster.labeling import LabelingConfig, human_labeling
from seal_fast.distill import ClusterHead, consensus_index
from seal_fast.metrics import evaluate
from seal_fast.models.seal import SEAL
from seal_fast.store import FeatureStore

SPACE = "efficientnet-lite0"
K = 10


def train_heads(seed: int, Z: torch.Tensor, patches, restarts: int, path: Path) -> list[dict]:
    """Every restart's visual head, trained by SEAL.fit itself (its labeling cut to one iteration)."""
    if path.exists():
        heads = torch.load(path)
        if len(heads) >= restarts:
            return heads[:restarts]
    model = SEAL(K, iterations=1, restarts=restarts, label_restarts="all", seed=seed).fit([Z], patches=patches)
    heads = [{k: v.clone() for k, v in head.state_dict().items()} for head in model.label_heads_[0]]
    torch.save(heads, path)
    return heads


def ensemble(train_probs: list[torch.Tensor], test_probs: list[torch.Tensor], seed: int) -> np.ndarray:
    centers, _, _, _ = kmeans(torch.cat(train_probs, 1), K, n_init=10, seed=seed)
    return assign(torch.cat(test_probs, 1), centers)[0].numpy()


def evaluate_seed(seed: int, heads: list[dict], Z, Zt, yt, label: bool) -> list[dict]:
    models = []
    for state in heads:
        head = ClusterHead(Z.shape[1], K)
        head.load_state_dict(state)
        models.append(head.eval())
    with torch.no_grad():
        P = [h(F.normalize(Z, dim=1)) for h in models]
        Pt = [h(F.normalize(Zt, dim=1)) for h in models]
    rows = [{"seed": seed, "variant": "members", "test_acc": [evaluate(yt, p.argmax(1).numpy())["acc"] for p in Pt]}]
    for r in sorted({3, len(models)}):
        if r > len(models):
            continue
        kept, _ = consensus_index([p.argmax(1) for p in P[:r]])
        rows.append({"seed": seed, "restarts": r, "variant": "consensus", "kept": kept,
                     "test": evaluate(yt, Pt[kept].argmax(1).numpy())})
        rows.append({"seed": seed, "restarts": r, "variant": "ensemble",
                     "test": evaluate(yt, ensemble(P[:r], Pt[:r], seed))})
    if label:
        t0 = time.perf_counter()
        spaces = [Z] + [SEAL._embed(h, Z) for h in models[:3]]
        spaces_test = [Zt] + [SEAL._embed(h, Zt) for h in models[:3]]
        result = human_labeling(spaces, K, LabelingConfig(iterations=2000, batch_size=10000), seed=seed)
        with torch.no_grad():
            pred = result.encoder.predict_proba(spaces_test).argmax(1).numpy()
        rows.append({"seed": seed, "restarts": 3, "variant": "labeling on phi + every phi_hat",
                     "test": evaluate(yt, pred), "labeling_s": round(time.perf_counter() - t0)})
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train", type=Path, required=True)
    ap.add_argument("--test", type=Path, required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--restarts", type=int, default=5)
    ap.add_argument("--heads", type=Path, required=True, help="folder for the trained heads")
    ap.add_argument("--label", action="store_true", help="also label on [phi, every phi_hat] (~16 min a seed)")
    ap.add_argument("--out", type=Path, required=True, help="JSON-lines file")
    args = ap.parse_args()
    args.heads.mkdir(parents=True, exist_ok=True)
    train, test = FeatureStore(args.train), FeatureStore(args.test)
    Z = torch.from_numpy(np.array(train.space(SPACE), dtype=np.float32))
    Zt = torch.from_numpy(np.array(test.space(SPACE), dtype=np.float32))
    for seed in args.seeds:
        heads = train_heads(seed, Z, train.patches(), args.restarts, args.heads / f"heads_s{seed}.pt")
        for row in evaluate_seed(seed, heads, Z, Zt, test.labels(), args.label):
            print(json.dumps(row), flush=True)
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
