"""Distillation variants on the Fashion-MNIST train split, scored by the visual head alone.

One frozen GAT (seed 0), then one distillation per seed; prints per seed the visual
head's ACC on the train and test splits and its NMI to the earlier seeds' partitions.
Cheaper than bench/fashion_mnist.py (no labeling stage), for comparing settings:

    python bench/distill_variants.py --tag base --out base.npz
    python bench/distill_variants.py --tag nn300 --nn 300 --out nn300.npz
    python bench/distill_variants.py --tag warm --warm 300 --out warm.npz   # K-Means warm start
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F

from seal_fast.distill import ClusterHead, DistillConfig, Modality, mutual_distillation
from seal_fast.metrics import evaluate, normalized_mutual_info
from seal_fast.models.kmeans import KMeans
from seal_fast.models.seal import spatial_embeddings
from seal_fast.spatial import SpatialEncoder
from seal_fast.store import FeatureStore

SPACE = "efficientnet-lite0"


def warm_start(modality: Modality, targets: torch.Tensor, steps: int, generator: torch.Generator):
    """Cross-entropy of the head to a fixed partition for `steps` batches of 512."""
    optimizer = torch.optim.Adam(modality.head.parameters(), 1e-3, betas=(0.9, 0.99))
    for _ in range(steps):
        idx = torch.randint(0, len(targets), (512,), generator=generator)
        loss = F.nll_loss(torch.log(modality.head(modality.inputs[idx]).clamp_min(1e-9)), targets[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@torch.no_grad()
def head_partition(head: ClusterHead, X: torch.Tensor) -> np.ndarray:
    head.eval()
    return head(X).argmax(1).numpy()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", default="feats/fmnist-train")
    ap.add_argument("--test", default="feats/fmnist-test")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--warm", type=int, default=0, help="steps of CE to a K-Means partition before distilling")
    ap.add_argument("--nn", type=int, default=50, help="cross-modal neighbours per sample")
    ap.add_argument("--tag", default="")
    ap.add_argument("--out", required=True, help=".npz of the train-split partitions")
    args = ap.parse_args()
    torch.set_num_threads(2)

    train, test = FeatureStore(args.store), FeatureStore(args.test)
    y, y_test = train.labels(), test.labels()
    Z = F.normalize(torch.from_numpy(np.array(train.space(SPACE))), dim=1)
    Z_test = F.normalize(torch.from_numpy(np.array(test.space(SPACE))), dim=1)
    P = train.patches()
    encoder = SpatialEncoder(P.shape[2], P.shape[2], k=8, generator=torch.Generator().manual_seed(0))
    G = spatial_embeddings(encoder, P, "cpu")
    if args.warm:
        t0 = time.time()
        kmeans = torch.from_numpy(KMeans(10, n_init=3, seed=0).fit([Z.numpy()]).labels_).long()
        print("kmeans", evaluate(y, kmeans.numpy())["acc"], round(time.time() - t0), flush=True)

    neighbors, parts = None, {}  # the neighbour lists depend on the fixed features only: computed once
    for seed in [int(x) for x in args.seeds.split(",")]:
        t0 = time.time()
        heads = torch.Generator().manual_seed(seed)
        visual = Modality("visual", Z, ClusterHead(Z.shape[1], 10, generator=heads))
        spatial = Modality("spatial", G, ClusterHead(G.shape[1], 10, generator=heads))
        if args.warm:
            generator = torch.Generator().manual_seed(seed + 100)
            for m in (visual, spatial):
                warm_start(m, kmeans, args.warm, generator)
        if neighbors is not None:
            visual.neighbors, spatial.neighbors = neighbors
        result = mutual_distillation([visual, spatial], [(0, 1, 1.0)], DistillConfig(n_neighbors=args.nn),
                                     generator=torch.Generator().manual_seed(seed))
        neighbors = (visual.neighbors, spatial.neighbors)
        p, p_test = head_partition(visual.head, Z), head_partition(visual.head, Z_test)
        earlier = [normalized_mutual_info(q, p) for q in parts.values()]
        parts[f"s{seed}"] = p
        print(json.dumps({"tag": args.tag, "warm": args.warm, "nn": args.nn, "seed": seed,
                          "train": round(evaluate(y, p)["acc"], 2), "test": round(evaluate(y_test, p_test)["acc"], 2),
                          "nmi_to_previous": [round(x, 3) for x in earlier], "loss": round(result.losses[-1], 4),
                          "s": round(time.time() - t0)}), flush=True)
        np.savez(args.out, y=y, **parts)


if __name__ == "__main__":
    main()
