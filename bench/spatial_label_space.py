"""Candidate for SEAL's accuracy: the spatial head's hidden layer as a second labeling space.

SEAL's labeling sees phi_hat, the kept restart's visual-head hidden layer. The same
restart also trained a spatial head on g(x); its hidden layer (g_hat) carries what
the patch graph adds. This runs SEAL's default stages once per seed (the steps of
`SEAL.fit`, from the package's own stage functions) and then labels twice from the
same distillation and the same consensus start: on [phi_hat] (SEAL's default: the
same stages as a default SEAL fit, whose ACC it matches to a few tenths) and on
[phi_hat, g_hat]. Fit and label the same
rows (digits, fashion-mnist-test, or any dataset `bench/accuracy.py` knows).

`--graph complete` joins every patch of an image to all the others (Lite2's 9 x 9 grid:
80 neighbours and the self loop), as the SEAL paper's edge set E = {(i, j) | i != j}
does, instead of the default 8 most similar patches (the estimator's `patch_neighbors`
stops at 32, a bound of the CUDA kernel; the CPU `patch_gat` used here has none).

    python bench/spatial_label_space.py --dataset digits --seeds 0 1 2 --cache feats \
        --out bench/results/spatial-label-space-cpu-DATE.jsonl
"""
from __future__ import annotations

import argparse
import json
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from accuracy import inputs, machine, splits
from seal_fast.distillation import distill_with_restarts, spatially_aware_embedding, visual_and_spatial
from seal_fast.distillation.heads import ClusterHead
from seal_fast.distillation.modalities import Modality
from seal_fast.labeling import human_labeling
from seal_fast.metrics import evaluate
from seal_fast.models.seal import SEAL
from seal_fast.spatial import SpatialEncoder, spatial_embeddings


class CompleteGraphEncoder(SpatialEncoder):
    """SEAL's frozen GAT over each image's complete patch graph (every patch attends to all)."""

    def forward(self, P, edges=None):
        B, M = P.shape[:2]
        nodes = torch.arange(M)
        others = nodes.expand(M, M)[~torch.eye(M, dtype=torch.bool)].view(M, M - 1)
        edges = torch.cat([nodes[:, None], others], 1).expand(B, M, M).contiguous()  # self first, as patch_knn
        return super().forward(P, edges)


def complete_graph_modalities(X, P, n_clusters, model, generator):
    """`visual_and_spatial` with the complete patch graph: the same draws in the same order."""
    visual = Modality("visual", torch.nn.functional.normalize(X, dim=1), ClusterHead(X.shape[1], n_clusters, generator=generator))
    encoder = CompleteGraphEncoder(P.shape[2], model.spatial_dim or P.shape[2], backend=model.backend,
                                   generator=generator)
    G = spatial_embeddings(encoder, P, torch.device("cpu"))
    return [visual, Modality("spatial", G, ClusterHead(G.shape[1], n_clusters, generator=generator))]


def run(dataset: str, seed: int, cache: Path, graph: str = "knn") -> list[dict]:
    source, evaluated = splits(dataset)
    if source != evaluated:
        raise SystemExit("this experiment fits and labels the same rows: use digits or fashion-mnist-test")
    data = inputs(source, ["lite0"], "lite2", cache)
    Z = np.asarray(data.space(data.spaces[0]))
    y = data.labels()
    model = SEAL(int(len(np.unique(y))), seed=seed)  # the defaults, for the settings only
    n_clusters, P, config = model._check_distillation_input([Z], data.patches())
    generator = torch.Generator().manual_seed(seed)
    X = torch.from_numpy(np.ascontiguousarray(Z, dtype=np.float32))
    t0 = time.perf_counter()
    if graph == "complete":
        first = complete_graph_modalities(X, P, n_clusters, model, generator)
    else:
        first = visual_and_spatial(X, P, n_clusters, spatial_dim=model.spatial_dim,
                                   patch_neighbors=model.patch_neighbors, backend=model.backend,
                                   generator=generator, device=torch.device("cpu"))
    runs = distill_with_restarts(first, [(0, 1, 1.0)], config, n_clusters=n_clusters, restarts=model.restarts,
                                 seed=seed, device=torch.device("cpu"))
    distill_s = time.perf_counter() - t0
    visual, spatial = runs.modalities
    phi_hat = spatially_aware_embedding(visual.head, X)
    # the spatial head reads g(x) as it is (visual_and_spatial normalised it already)
    g_hat = spatially_aware_embedding(spatial.head, spatial.features)
    rows = []
    for name, spaces in (("phi_hat", [phi_hat]), ("phi_hat+g_hat", [phi_hat, g_hat])):
        t0 = time.perf_counter()
        labeling = human_labeling(spaces, n_clusters, model._labeling_config(), seed=seed, init_labels=runs.labels)
        labels = labeling.encoder.predict(spaces).numpy()
        rows.append({"dataset": dataset, "labeling_spaces": name, "patch_graph": graph if graph == "complete" else f"{model.patch_neighbors}-NN", "seed": seed,
                     **evaluate(y, labels),
                     "kept_head": evaluate(y, runs.labels.numpy())["acc"], "restart_kept": runs.chosen,
                     "distill_s": round(distill_s, 1), "labeling_s": round(time.perf_counter() - t0, 1),
                     "labeling_iterations": labeling.iterations, "machine": machine(),
                     "date": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--cache", default="feats")
    p.add_argument("--graph", choices=["knn", "complete"], default="knn",
                   help="each image's patch graph: SEAL's k nearest patches, or every patch joined to all")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    with open(args.out, "a") as f:
        for seed in args.seeds:
            for row in run(args.dataset, seed, Path(args.cache), args.graph):
                print(json.dumps(row), file=f, flush=True)
                print(row["dataset"], row["labeling_spaces"], row["patch_graph"], seed, row["acc"], row["nmi"],
                      flush=True)


if __name__ == "__main__":
    main()
