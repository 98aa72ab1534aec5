"""Does a seed repeat a SEAL fit exactly? Fits SEAL twice per CPU thread count on one
store (a short schedule: one epoch, one restart, 100 labeling iterations) and prints,
for every pair of fits, the largest difference of phi_hat and the share of rows whose
labels agree.

    python bench/seed_repeat.py --store feats/digits-lite0 --patches feats/digits-lite2 --threads 1 2
"""
from __future__ import annotations

import argparse
import itertools

import numpy as np
import torch

from seal_fast import SEAL, FeatureStore


def fit(Z, P, n_clusters: int, threads: int, backend: str):
    torch.set_num_threads(threads)
    model = SEAL(n_clusters, seed=0, epochs=1, restarts=1, iterations=100, backend=backend, verbose=False)
    model.fit([Z], patches=P)
    return model.labels_, model.transform([Z])[0]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", required=True)
    p.add_argument("--patches", required=True, help="a store of the same images whose patches SEAL uses")
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--n-clusters", type=int, default=10)
    p.add_argument("--backend", default="auto")
    args = p.parse_args(argv)
    store = FeatureStore(args.store)
    Z, P = np.asarray(store.space(store.spaces[0])), FeatureStore(args.patches).patches()
    threads_before = torch.get_num_threads()
    try:  # the caller (a test session, say) keeps its own thread count
        runs = {(t, i): fit(Z, P, args.n_clusters, t, args.backend) for t in args.threads for i in (0, 1)}
    finally:
        torch.set_num_threads(threads_before)
    print("| fit A (threads, run) | fit B | max abs diff of phi_hat | labels equal |")
    print("|---|---|---|---|")
    for a, b in itertools.combinations(runs, 2):
        (la, ha), (lb, hb) = runs[a], runs[b]
        print(f"| {a} | {b} | {np.abs(ha - hb).max():.3g} | {(la == lb).mean():.1%} |")


if __name__ == "__main__":
    main()
