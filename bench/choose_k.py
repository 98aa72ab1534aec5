"""Choosing K without labels: the criteria compared, and `n_clusters="auto"` per method
against the true K. The command behind the "Choosing K" tables (README, docs/results.md).

    # which criterion: three label-free criteria on mixtures with known K, digits, Fashion-MNIST
    python bench/choose_k.py criteria --datasets mixtures digits fashion-mnist-test \
        --out bench/results/choose-k-criteria.jsonl
    # n_clusters="auto" per method: the chosen K, ACC/NMI at it and at the true K, and the
    # seconds of the auto fit (search included) against one fit at the true K
    python bench/choose_k.py methods --datasets mixtures digits --methods kmeans turtle satc seal \
        --seeds 0 1 2 --out bench/results/choose-k-methods.jsonl
    # the eigengap's choice at other graph sizes (k neighbours), on 10,000-row slices
    python bench/choose_k.py graphs --datasets digits fashion-mnist-test fashion-mnist-train \
        --seeds 0 1 2 3 4 --out bench/results/choose-k-graphs.jsonl
    # ... and at the default k on larger slices of the train split (all 60,000 rows)
    python bench/choose_k.py graphs --datasets fashion-mnist-train --seeds 0 1 2 --rows 20000 60000 \
        --out bench/results/choose-k-graphs.jsonl
    # the eigengap on other features (Lite2, both) and other graphs (mutual, self-tuning
    # weights; centred or principal-component rows)
    python bench/choose_k.py variants --datasets mixtures digits fashion-mnist-test \
        --seeds 0 1 2 --out bench/results/choose-k-variants.jsonl
    # the criterion from TURTLE's own fits: stability across halves in 2..16, raw and
    # against the Gaussian null (about 28x one TURTLE fit on digits, per seed)
    python bench/choose_k.py turtle --datasets mixtures digits fashion-mnist-test \
        --seeds 0 1 --out bench/results/choose-k-turtle.jsonl
    # classical indices on K-Means partitions (silhouette, Calinski-Harabasz, Davies-Bouldin,
    # the gap statistic, Gaussian mixtures' BIC) against the eigengap, on the same rows
    python bench/choose_k.py indices --datasets mixtures digits fashion-mnist-test fashion-mnist-train \
        --seeds 0 1 2 --out bench/results/choose-k-indices.jsonl
    # the eigengap on other inputs: Lite1's and Lite2's pooled features, Lite2's mean patch,
    # g(x) (SEAL's and SATC's frozen GAT on Lite2's patches, drawn per seed), Lite0 and g(x)
    python bench/choose_k.py inputs --datasets digits fashion-mnist-test --seeds 0 1 2 \
        --out bench/results/choose-k-inputs.jsonl
    python bench/choose_k.py table bench/results/choose-k-*.jsonl

Mixtures are scikit-learn's `make_blobs` (N=3,000, d=32, centres in a box of +-10) with
K in 3, 6, 12, 25 at two spreads: "separable" (cluster std 1) and "overlapping" (std 12,
where K-Means at the true K no longer finds them all; the row says how well it does).
Real data comes from bench/accuracy.py's cached feature stores (--cache); the search
reads the visual spaces (Lite0's pooled features), as every method's fit does. Rows
already in --out are skipped, so an interrupted run continues.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from sklearn.cluster import KMeans as SkKMeans
from sklearn.datasets import make_blobs
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import adjusted_rand_score, cohen_kappa_score
from tqdm import tqdm

from accuracy import NETS, inputs, machine, store_for
from seal_fast import choose_k as ck
from seal_fast import pipeline
from seal_fast.inputs import ArrayInputs
from seal_fast.kmeans_algorithm import prepare_spaces

MIXTURES = [(k, spread, std) for spread, std in (("separable", 1.0), ("overlapping", 12.0)) for k in (3, 6, 12, 25)]
PATCHES = {"kmeans": None, "turtle": None, "satc": "lite2", "seal": "lite2"}  # as bench/accuracy.py's defaults


def mixture(k: int, std: float, seed: int, n: int = 3000, d: int = 32):
    X, y = make_blobs(n_samples=n, centers=k, n_features=d, cluster_std=std, center_box=(-10, 10), random_state=seed)
    return X.astype(np.float32), y


def datasets(names: list[str], seeds: list[int], cache: Path):
    """(name, true K, seed, ArrayInputs) for every dataset asked; a mixture is drawn per seed."""
    for name in names:
        if name == "mixtures":
            for k, spread, std in MIXTURES:
                for seed in seeds:
                    X, y = mixture(k, std, seed)
                    yield f"mixture-K{k}-{spread}", k, seed, ArrayInputs({"x": X}, labels=y)
        else:
            for seed in seeds:
                yield name, None, seed, None


def real_inputs(name: str, method: str, cache: Path) -> ArrayInputs:
    return inputs(name, ["lite0"], PATCHES[method], cache)


# --- the criteria ---------------------------------------------------------------------
def gaussian_null(X: np.ndarray, seed: int) -> np.ndarray:
    """Data with X's mean and covariance and no clusters: the reference a chance-corrected
    criterion subtracts."""
    rng = np.random.default_rng(seed)
    mean = X.mean(0)
    _, s, vt = np.linalg.svd(X - mean, full_matrices=False)
    return (mean + rng.standard_normal((X.shape[0], s.size)) * (s / np.sqrt(X.shape[0])) @ vt).astype(X.dtype)


def halves(n: int, seed: int):
    order = np.random.default_rng(seed).permutation(n)
    return order[: n // 2], order[n // 2:]


def stability(X: np.ndarray, k: int, seed: int) -> float:
    """ARI between the partitions of all rows by K-Means fitted on either half."""
    a, b = halves(X.shape[0], seed)
    fa = SkKMeans(k, n_init=3, random_state=seed).fit(X[a])
    fb = SkKMeans(k, n_init=3, random_state=seed).fit(X[b])
    return adjusted_rand_score(fa.predict(X), fb.predict(X))


def generalisation(X: np.ndarray, k: int, seed: int) -> float:
    """Cohen's kappa of a linear classifier, trained on one half's K-Means labels, on the
    other half's (TURTLE's generalisation score, corrected for chance)."""
    a, b = halves(X.shape[0], seed)
    km = SkKMeans(k, n_init=3, random_state=seed).fit(X[a])
    clf = LogisticRegression(max_iter=300).fit(X[a], km.labels_)
    return cohen_kappa_score(km.predict(X[b]), clf.predict(X[b]))


def against_null(score, X: np.ndarray, null: np.ndarray, ks: list[int], desc: str | None = None) -> dict:
    """`score(X, k)` for every k in ks, raw and minus the same on the Gaussian null, each
    with its choice (ties to the smaller K), and the seconds; `desc` shows a bar over ks."""
    t0 = time.perf_counter()
    raw, vs_null = {}, {}
    for k in tqdm(ks, desc=desc, file=sys.stderr, disable=desc is None):
        raw[k] = score(X, k)
        vs_null[k] = raw[k] - score(null, k)
    return {"raw_choice": max(ks, key=lambda k: (raw[k], -k)),
            "vs_null_choice": max(ks, key=lambda k: (vs_null[k], -k)),
            "raw": {k: round(v, 4) for k, v in raw.items()},
            "vs_null": {k: round(v, 4) for k, v in vs_null.items()}, "seconds": round(time.perf_counter() - t0, 1)}


def criteria_row(name: str, true_k: int, seed: int, X: np.ndarray, kmax: int) -> dict:
    """Every criterion's choice in 2..kmax on X (N, d) and what it cost."""
    Xn = prepare_spaces([torch.from_numpy(np.ascontiguousarray(X))]).numpy()
    # the two K-Means criteria run on 64 principal components (cost; the clusters live there)
    Xp = PCA(min(64, Xn.shape[1]), random_state=seed).fit_transform(Xn).astype(np.float32)
    null = gaussian_null(Xp, seed)
    ks = list(range(2, kmax + 1))
    row = {"dataset": name, "true_k": true_k, "seed": seed, "n": int(X.shape[0]), "range": [2, kmax]}
    for crit, score in (("stability", stability), ("generalisation", generalisation)):
        row[crit] = against_null(lambda Y, k: score(Y, k, seed), Xp, null, ks)
    for neighbors in (10, 20):
        t0 = time.perf_counter()
        eig, _ = ck.knn_graph_spectrum(torch.from_numpy(Xn), kmax + 1, n_neighbors=neighbors, seed=seed)
        row[f"eigengap_{neighbors}nn"] = {"choice": ck.ranked(ck.eigengap_scores(eig, 2, kmax))[0],
                                          "eigenvalues": [round(float(v), 5) for v in eig],
                                          "seconds": round(time.perf_counter() - t0, 1)}
    return row


def run_criteria(args) -> None:
    for name, true_k, seed, given in datasets(args.datasets, args.seeds, args.cache):
        if (name, seed) in done(args.out, ("dataset", "seed")):
            continue
        if given is None:  # a real dataset: the seed draws the halves of the K-Means criteria
            given = real_inputs(name, "kmeans", args.cache)
            true_k = int(len(np.unique(given.labels())))
        X = np.asarray(given.space(given.spaces[0]), dtype=np.float32)
        # the range holds the true K with room above it: 2-20, or 2-30 for K=25
        append(args.out, criteria_row(name, true_k, seed, X, min(max(20, true_k + 5), X.shape[0] - 1)))


# --- the eigengap at other graph sizes ------------------------------------------------
GRAPH_SIZES = (5, 10, 15, 20, 30, 50)


def run_graphs(args) -> None:
    """The eigengap's choice in 2..30 for every k of GRAPH_SIZES, on the rows `choose_k`
    reads for this seed (a seeded 10,000-row slice of a larger set, as the search takes);
    for other slice sizes (--rows), at the default k only."""
    for name in args.datasets:
        given = real_inputs(name, "kmeans", args.cache)
        X = torch.from_numpy(np.ascontiguousarray(given.space(given.spaces[0]), dtype=np.float32))
        true_k = int(len(np.unique(given.labels())))
        for seed in args.seeds:
            for size in args.rows:
                if size >= X.shape[0] and seed != args.seeds[0]:
                    continue  # every row: one graph, whatever the seed
                rows = ck.search_rows(X, seed, size)
                if (name, seed, int(rows.shape[0])) in done(args.out, ("dataset", "seed", "n")):
                    continue
                row = {"dataset": name, "true_k": true_k, "seed": seed, "n": int(rows.shape[0]), "range": [2, 30],
                       "graphs": {}}
                for k in tqdm(GRAPH_SIZES if size == ck.MAX_ROWS else (ck.GRAPH_NEIGHBORS,),
                              desc=f"{name} {rows.shape[0]} rows, seed {seed}", file=sys.stderr):
                    t0 = time.perf_counter()
                    eig, _ = ck.knn_graph_spectrum(rows, 31, n_neighbors=k, seed=seed)
                    best = ck.ranked(ck.eigengap_scores(eig, 2, 30))
                    row["graphs"][str(k)] = {"choice": best[0], "next": best[1:3],
                                             "eigenvalues": [round(float(v), 5) for v in eig],
                                             "seconds": round(time.perf_counter() - t0, 1)}
                append(args.out, row)


# --- the eigengap with other features and other graphs -------------------------------
FEATURES = {"lite0": ["lite0"], "lite2": ["lite2"], "lite0+lite2": ["lite0", "lite2"]}
PREPARATIONS = ("as-is", "centred", "pca64", "pca64-whitened")
GRAPHS = ("either-10", "either-20", "mutual-10", "self-tuning-10")


def prepared(X: np.ndarray, how: str) -> np.ndarray:
    """The rows as the graph reads them (by cosine): L2-normalised ("as-is", what the
    search reads), then centred, then on their 64 principal components, then whitened."""
    X = X / np.linalg.norm(X, axis=1, keepdims=True).clip(1e-12)
    if how == "as-is":
        return X
    X = X - X.mean(0)
    if how == "centred":
        return X
    _, s, vt = np.linalg.svd(X, full_matrices=False)
    P = X @ vt[:64].T
    return P / s[:64] if how == "pca64-whitened" else P


def graph(X: np.ndarray, how: str):
    """The graph of the rows, "KIND-k": i ~ j when either lists the other among its k
    nearest by cosine (the search's graph), when both do (mutual), or the either-graph
    weighted exp(-d^2 / (s_i s_j)), d = 1 - cosine, s_i the distance to i's k-th
    neighbour (self-tuning, Zelnik-Manor & Perona 2004)."""
    from seal_fast.ops.cosine_topk import cosine_topk

    kind, k = how.rsplit("-", 1)
    rows = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
    sim, index = cosine_topk(rows, rows, int(k), exclude_self=True)
    index = index.numpy()
    if kind == "either":
        return ck.either_lists(index)
    if kind == "mutual":
        W = ck.neighbour_lists(index)
        return W.minimum(W.T)
    d = (1.0 - sim.numpy().astype(np.float64)).clip(0.0)
    scale = d[:, -1].clip(1e-12)
    W = ck.neighbour_lists(index, np.exp(-d ** 2 / (scale[:, None] * scale[index])))
    return W.maximum(W.T)


def run_variants(args) -> None:
    """The eigengap's choice in 2..30 for every preparation x graph, on each feature set
    (mixtures: their coordinates), on the rows the search reads."""
    for name, true_k, seed, given in datasets(args.datasets, args.seeds, args.cache):
        feature_sets = {"x": None} if given is not None else FEATURES
        for features, nets in feature_sets.items():
            if (name, seed, features) in done(args.out, ("dataset", "seed", "features")):
                continue
            if given is None:
                real = inputs(name, nets, None, args.cache)
                if real.n <= ck.MAX_ROWS and seed != args.seeds[0]:
                    continue  # the search reads every row: one graph, whatever the seed
                true_k = int(len(np.unique(real.labels())))
                X = prepare_spaces([torch.from_numpy(np.ascontiguousarray(real.space(s), dtype=np.float32))
                                    for s in real.spaces])
                X = ck.search_rows(X, seed).numpy()
            else:
                X = given.space("x")
            append(args.out, variants_row(name, true_k, seed, features, X))


def variants_row(name: str, true_k: int, seed: int, features: str, X: np.ndarray) -> dict:
    """The eigengap's choice in 2..30 (and the next two) for every preparation x graph."""
    kmax = min(30, X.shape[0] - 2)
    row = {"dataset": name, "true_k": true_k, "seed": seed, "n": int(X.shape[0]), "features": features,
           "range": [2, kmax], "variants": {}}
    for prep in tqdm(PREPARATIONS, desc=f"{name} {features} seed {seed}", file=sys.stderr):
        Y = prepared(X, prep)
        for how in GRAPHS:
            eig, _ = ck.laplacian_spectrum(graph(Y, how), kmax + 1, seed=seed)
            best = ck.ranked(ck.eigengap_scores(eig, 2, kmax))
            row["variants"][f"{prep}/{how}"] = {"choice": best[0], "next": best[1:3]}
    return row


# --- TURTLE's own fits: stability across halves ---------------------------------------
def turtle_stability(X: np.ndarray, k: int, seed: int, rows: int, iterations: int) -> float:
    """ARI between the labelings of both halves' rows by TURTLE fitted on either half
    (each half at most `rows` rows; TURTLE's stopping rule, at most `iterations`)."""
    from seal_fast.models.turtle import TURTLE

    a, b = (h[:rows] for h in halves(X.shape[0], seed))
    both = X[np.concatenate([a, b])]
    fa = TURTLE(k, seed=seed, iterations=iterations).fit([X[a]])
    fb = TURTLE(k, seed=seed + 1, iterations=iterations).fit([X[b]])
    return adjusted_rand_score(fa.predict([both]), fb.predict([both]))


def run_turtle(args) -> None:
    """TURTLE's stability across halves in 2..kmax, raw and minus the same on the
    Gaussian null, on Lite0's pooled features (L2-normalised) or a mixture: the criterion
    from the method's own fits, against the eigengap's choice on the same rows."""
    for name, true_k, seed, given in datasets(args.datasets, args.seeds, args.cache):
        if (name, seed) in done(args.out, ("dataset", "seed")) or (true_k or 0) > args.kmax - 4:
            continue  # a mixture needs room above its K in 2..kmax
        if given is None:
            given = real_inputs(name, "turtle", args.cache)
            true_k = int(len(np.unique(given.labels())))
        X = prepare_spaces([torch.from_numpy(np.array(given.space(given.spaces[0]), dtype=np.float32))]).numpy()
        kmax = min(args.kmax, X.shape[0] - 1)
        ks = list(range(2, kmax + 1))
        scores = against_null(lambda Y, k: turtle_stability(Y, k, seed, args.rows, args.iterations),
                              X, gaussian_null(X, seed), ks, desc=f"{name} seed {seed}: TURTLE stability per K")
        eig, _ = ck.knn_graph_spectrum(ck.search_rows(torch.from_numpy(X), seed), kmax + 1, seed=seed)
        append(args.out, {"dataset": name, "true_k": true_k, "seed": seed, "n": int(X.shape[0]), "range": [2, kmax],
                          "rows_per_half": min(args.rows, X.shape[0] // 2), "iterations": args.iterations,
                          "turtle_stability": scores,
                          "eigengap_10nn": {"choice": ck.ranked(ck.eigengap_scores(eig, 2, kmax))[0]}})


# --- the eigengap on other inputs: Lite1, Lite2, patches, g(x) ---------------------------
INPUTS = ("lite0", "lite1", "lite2", "lite2-patch-mean", "g(x)", "lite0+g(x)")


def spatial_rows(patches, seed: int) -> torch.Tensor:
    """g(x): SEAL's and SATC's embedding of each image's patch graph by a frozen GAT
    (their defaults: output as wide as the patches, 8 patch neighbours), drawn from `seed`."""
    from seal_fast.spatial import spatial_features

    return spatial_features(patches, out_dim=0, patch_neighbors=8, backend="auto",
                            generator=torch.Generator().manual_seed(seed), device="cpu")


def eigengap_choice(X: torch.Tensor, kmax: int, seed: int) -> dict:
    """What `n_clusters="auto:2-KMAX"` chooses on the rows of X, and the next two."""
    found = ck.choose_k(X, ck.KRange(2, kmax), seed=seed)
    return {"choice": found.k, "next": ck.ranked(found.scores)[1:3]}


def run_inputs(args) -> None:
    """The search's eigengap (10-NN, 2..30) on each of INPUTS, one row per dataset and
    seed (the seed draws g(x)'s GAT and, above 10,000 rows, the slice)."""
    for name in args.datasets:
        given = inputs(name, ["lite0", "lite1", "lite2"], "lite2", args.cache)  # checks the stores' images agree
        pooled = {net: prepare_spaces([torch.from_numpy(np.array(given.space(NETS[net]), dtype=np.float32))])
                  for net in ("lite0", "lite1", "lite2")}
        patches = given.patches()
        pooled["lite2-patch-mean"] = prepare_spaces([torch.from_numpy(np.asarray(patches, dtype=np.float32).mean(1))])
        true_k = int(len(np.unique(given.labels())))
        for seed in args.seeds:
            if (name, seed) in done(args.out, ("dataset", "seed")):
                continue
            G = spatial_rows(patches, seed)
            rows = {**pooled, "g(x)": G, "lite0+g(x)": prepare_spaces([pooled["lite0"], G])}
            row = {"dataset": name, "true_k": true_k, "seed": seed, "n": int(G.shape[0]), "range": [2, 30], "inputs": {}}
            for key in tqdm(INPUTS, desc=f"{name} seed {seed}", file=sys.stderr):
                row["inputs"][key] = eigengap_choice(rows[key], 30, seed)
            append(args.out, row)


# --- classical indices on K-Means partitions -----------------------------------------
INDICES = ("silhouette", "calinski_harabasz", "davies_bouldin", "gap", "gap_first", "bic_diag32", "bic_full16")
INDEX_NAMES = {"silhouette": "silhouette", "calinski_harabasz": "Calinski-Harabasz", "davies_bouldin": "Davies-Bouldin",
               "gap": "gap, largest", "gap_first": "gap, Tibshirani's rule", "bic_diag32": "BIC diagonal, 32 PCs",
               "bic_full16": "BIC full, 16 PCs"}


def gap_references(Xp: np.ndarray, seed: int, draws: int) -> list[np.ndarray]:
    """Tibshirani's reference data for the gap statistic: uniform draws in the box the
    rows span along their principal axes (Xp is already on principal components)."""
    rng = np.random.default_rng(seed)
    lo, hi = Xp.min(0), Xp.max(0)
    return [rng.uniform(lo, hi, size=Xp.shape).astype(Xp.dtype) for _ in range(draws)]


def indices_row(name: str, true_k: int, seed: int, X: np.ndarray, kmax: int, draws: int = 3) -> dict:
    """Classical indices' choices in 2..kmax on K-Means partitions of X's 64 principal
    components (L2-normalised rows): silhouette (on 3,000 rows), Calinski-Harabasz and
    Davies-Bouldin (the smallest wins); the gap statistic against `draws` uniform
    references (its largest value, and Tibshirani's rule: the first K with
    gap(K) >= gap(K+1) - s(K+1)); the BIC of Gaussian mixtures (diagonal on 32 components,
    full on 16; the smallest wins). Each with every K's value and the seconds."""
    from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score
    from sklearn.mixture import GaussianMixture

    Xn = prepare_spaces([torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))]).numpy()
    Xp = PCA(min(64, Xn.shape[1]), random_state=seed).fit_transform(Xn).astype(np.float32)
    ks = list(range(2, kmax + 1))
    refs = gap_references(Xp, seed, draws)
    values: dict[str, dict[int, float]] = {i: {} for i in INDICES if i != "gap_first"}
    spread: dict[int, float] = {}
    t0 = time.perf_counter()
    for k in tqdm(ks, desc=f"{name} seed {seed}: indices per K", file=sys.stderr):
        km = SkKMeans(k, n_init=3, random_state=seed).fit(Xp)
        values["silhouette"][k] = silhouette_score(Xp, km.labels_, sample_size=min(3000, Xp.shape[0]),
                                                   random_state=seed)
        values["calinski_harabasz"][k] = calinski_harabasz_score(Xp, km.labels_)
        values["davies_bouldin"][k] = -davies_bouldin_score(Xp, km.labels_)  # negated: the largest wins
        ref_logs = np.log([SkKMeans(k, n_init=3, random_state=seed).fit(R).inertia_ for R in refs])
        values["gap"][k] = float(ref_logs.mean() - np.log(km.inertia_))
        spread[k] = float(ref_logs.std() * np.sqrt(1 + 1 / draws))
        for key, dims, cov in (("bic_diag32", 32, "diag"), ("bic_full16", 16, "full")):
            gm = GaussianMixture(k, covariance_type=cov, random_state=seed, max_iter=200).fit(Xp[:, :dims])
            values[key][k] = -gm.bic(Xp[:, :dims])  # negated: the largest wins
    seconds = round(time.perf_counter() - t0, 1)
    row = {"dataset": name, "true_k": true_k, "seed": seed, "n": int(X.shape[0]), "range": [2, kmax],
           "gap_draws": draws, "seconds": seconds, "indices": {}}
    for key, v in values.items():
        best = ck.ranked(v)
        row["indices"][key] = {"choice": best[0], "next": best[1:3], "values": {k: round(x, 5) for k, x in v.items()}}
    first = [k for k in ks[:-1] if values["gap"][k] >= values["gap"][k + 1] - spread[k + 1]]
    row["indices"]["gap_first"] = {"choice": first[0] if first else ks[-1],
                                   "spread": {k: round(s, 5) for k, s in spread.items()}}
    row["eigengap_10nn"] = {"choice": eigengap_choice(torch.from_numpy(Xn), kmax, seed)["choice"]}
    return row


def run_indices(args) -> None:
    """Every classical index's choice per dataset and seed, on the rows the search reads
    (a seeded 10,000-row slice of larger sets)."""
    for name, true_k, seed, given in datasets(args.datasets, args.seeds, args.cache):
        if (name, seed) in done(args.out, ("dataset", "seed")):
            continue
        if given is None:
            given = real_inputs(name, "kmeans", args.cache)
            true_k = int(len(np.unique(given.labels())))
        X = ck.search_rows(torch.from_numpy(np.ascontiguousarray(given.space(given.spaces[0]), dtype=np.float32)),
                           seed).numpy()
        append(args.out, indices_row(name, true_k, seed, X, min(max(20, true_k + 5), X.shape[0] - 1)))


# --- n_clusters="auto" per method -------------------------------------------------------
def fit(given: ArrayInputs, method: str, n_clusters, seed: int) -> tuple[dict, float]:
    run = pipeline.cluster(given, method, n_clusters, seed=seed)
    return run.report, run.report["timings"]["fit_s"]


def run_methods(args) -> None:
    for name, true_k, seed, given in datasets(args.datasets, args.seeds, args.cache):
        for method in args.methods:
            if (name, method, seed) in done(args.out, ("dataset", "method", "seed")):
                continue
            if given is None:
                data = real_inputs(name, method, args.cache)
            elif PATCHES[method]:  # SEAL and SATC need patches: mixtures have none
                continue
            else:
                data = given
            k = true_k or int(len(np.unique(data.labels())))
            auto, auto_s = fit(data, method, "auto", seed)
            fixed, fixed_s = fit(data, method, k, seed)
            search = auto["choose_k"]
            ks = sorted(map(int, search["scores"]))
            append(args.out, {
                "dataset": name, "method": method, "seed": seed, "true_k": k, "n": auto["n"],
                "chosen_k": auto["n_clusters"], "range": [ks[0], ks[-1]],
                "at_chosen": {m: auto["evaluation"][m] for m in ("acc", "nmi", "ari")},
                "at_true": {m: fixed["evaluation"][m] for m in ("acc", "nmi", "ari")},
                "search_s": search["seconds"], "auto_fit_s": round(auto_s, 2), "true_k_fit_s": round(fixed_s, 2),
                "multiple": round(auto_s / fixed_s, 2), "scores": search["scores"]})


# --- rows and tables ------------------------------------------------------------------
def done(path: Path, keys: tuple) -> set:
    if not path.exists():
        return set()
    return {tuple(json.loads(line)[k] for k in keys) for line in path.read_text().splitlines() if line.strip()}


def append(path: Path, row: dict) -> None:
    row = {**row, "machine": machine(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    print(json.dumps({k: v for k, v in row.items() if k not in ("scores",)})[:400], flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def order(name: str, true_k: int) -> tuple:
    """Table order: separable mixtures, overlapping ones (by K), then real data."""
    return (not name.startswith("mixture"), "overlapping" in name, true_k, name)


def by_dataset(rows: list[dict]) -> list[tuple[str, list[dict]]]:
    """The rows grouped by dataset, in table order, each group by seed."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["dataset"], []).append(r)
    return [(name, sorted(rs, key=lambda r: r["seed"]))
            for name, rs in sorted(groups.items(), key=lambda item: order(item[0], item[1][0]["true_k"]))]


def table(rows: list[dict]) -> str:
    crit = [r for r in rows if "stability" in r]
    meth = [r for r in rows if "chosen_k" in r]
    graphs = [r for r in rows if "graphs" in r]
    turtle = [r for r in rows if "turtle_stability" in r]
    variants = [r for r in rows if "variants" in r]
    indices = [r for r in rows if "indices" in r]
    other_inputs = [r for r in rows if "inputs" in r]
    lines = []
    if other_inputs:
        lines += ["| data | true K | seed | " + " | ".join(INPUTS) + " |", "|---|---|---|" + "---|" * len(INPUTS)]
        for r in sorted(other_inputs, key=lambda r: (order(r["dataset"], r["true_k"]), r["seed"])):
            lines.append(f"| {r['dataset']} | {r['true_k']} | {r['seed']} | " + " | ".join(
                f"{r['inputs'][i]['choice']} ({', '.join(map(str, r['inputs'][i]['next']))})" for i in INPUTS) + " |")
        lines.append("")
    if indices:
        lines += ["| data | true K | seeds | " + " | ".join(INDEX_NAMES[i] for i in INDICES) + " | eigengap 10-NN |",
                  "|---|---|---|" + "---|" * (len(INDICES) + 1)]
        for name, rs in by_dataset(indices):
            lines.append(f"| {name} | {rs[0]['true_k']} | {len(rs)} | " + " | ".join(
                ", ".join(str(r["indices"][i]["choice"]) for r in rs) for i in INDICES) + " | " +
                ", ".join(str(r["eigengap_10nn"]["choice"]) for r in rs) + " |")
        lines.append("")
    if variants:
        lines += ["| data | true K | features | preparation | " + " | ".join(GRAPHS) + " |",
                  "|---|---|---|---|" + "---|" * len(GRAPHS)]
        groups: dict[tuple, list[dict]] = {}
        for r in variants:
            groups.setdefault((r["dataset"], r["features"]), []).append(r)
        for (name, features), rs in sorted(groups.items(), key=lambda item: (order(item[0][0], item[1][0]["true_k"]),
                                                                             item[0][1])):
            for prep in PREPARATIONS:
                lines.append(f"| {name} | {rs[0]['true_k']} | {features} | {prep} | " + " | ".join(
                    ", ".join(str(r["variants"][f"{prep}/{how}"]["choice"]) for r in rs) for how in GRAPHS) + " |")
        lines.append("")
    if turtle:
        lines += ["| data | true K | seed | rows per half | TURTLE stability | TURTLE stability vs null | "
                  "eigengap 10-NN | seconds |", "|---|---|---|---|---|---|---|---|"]
        for r in sorted(turtle, key=lambda r: (order(r["dataset"], r["true_k"]), r["seed"])):
            t = r["turtle_stability"]
            lines.append(f"| {r['dataset']} | {r['true_k']} | {r['seed']} | {r['rows_per_half']} | {t['raw_choice']} | "
                         f"{t['vs_null_choice']} | {r['eigengap_10nn']['choice']} | {t['seconds']:.0f} |")
        lines.append("")
    if graphs:
        lines += ["| data | true K | rows (seed) | " + " | ".join(f"eigengap {k}-NN" for k in GRAPH_SIZES) + " |",
                  "|---|---|---|" + "---|" * len(GRAPH_SIZES)]
        for r in graphs:
            cells = (r["graphs"].get(str(k)) for k in GRAPH_SIZES)
            lines.append(f"| {r['dataset']} | {r['true_k']} | {r['n']} ({r['seed']}) | " + " | ".join(
                f"{g['choice']} ({', '.join(map(str, g['next']))})" if g else "–" for g in cells) + " |")
        lines.append("")
    if crit:
        lines += ["| data | true K | seeds | stability | stability vs null | generalisation κ | κ vs null | "
                  "eigengap 10-NN | eigengap 20-NN |", "|---|---|---|---|---|---|---|---|---|"]
        for name, rs in by_dataset(crit):
            def picks(get):
                return ", ".join(str(get(r)) for r in rs)
            lines.append(f"| {name} | {rs[0]['true_k']} | {len(rs)} | {picks(lambda r: r['stability']['raw_choice'])} | "
                         f"{picks(lambda r: r['stability']['vs_null_choice'])} | "
                         f"{picks(lambda r: r['generalisation']['raw_choice'])} | "
                         f"{picks(lambda r: r['generalisation']['vs_null_choice'])} | "
                         f"{picks(lambda r: r['eigengap_10nn']['choice'])} | {picks(lambda r: r['eigengap_20nn']['choice'])} |")
    if meth:
        lines += ["" if lines else None,
                  "| data | method | true K | chosen K (per seed) | ACC at chosen K | ACC at true K | NMI at chosen K | "
                  "NMI at true K | search (s) | fit at true K (s) | search / fit at true K, most |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        groups = {}
        for r in meth:
            groups.setdefault((r["dataset"], r["method"]), []).append(r)

        def stat(rs, get):
            v = np.array([get(r) for r in rs], dtype=float)
            return f"{v.mean():.1f} ± {v.std():.1f}" if len(v) > 1 else f"{v[0]:.1f}"
        for (name, method), rs in sorted(groups.items(), key=lambda item: (order(item[0][0], item[1][0]["true_k"]),
                                                                           list(PATCHES).index(item[0][1]))):
            lines.append(f"| {name} | {method} | {rs[0]['true_k']} | {', '.join(str(r['chosen_k']) for r in rs)} | "
                         f"{stat(rs, lambda r: r['at_chosen']['acc'])} | {stat(rs, lambda r: r['at_true']['acc'])} | "
                         f"{stat(rs, lambda r: r['at_chosen']['nmi'])} | {stat(rs, lambda r: r['at_true']['nmi'])} | "
                         f"{np.mean([r['search_s'] for r in rs]):.1f} | {np.mean([r['true_k_fit_s'] for r in rs]):.1f} | "
                         f"{max(r['search_s'] / r['true_k_fit_s'] for r in rs):.2f} |")
    return "\n".join(line for line in lines if line is not None)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("criteria", "methods", "graphs", "turtle", "variants", "indices", "inputs"):
        s = sub.add_parser(name)
        s.add_argument("--datasets", nargs="+", default=["mixtures", "digits"],
                       help="'mixtures', or datasets of bench/accuracy.py (digits, fashion-mnist-test)")
        s.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
        s.add_argument("--cache", type=Path, default=Path("feats"), help="folder of the cached feature stores")
        s.add_argument("--out", type=Path, required=True, help="JSONL of result rows (appended; rows there are skipped)")
        if name == "turtle":
            s.add_argument("--kmax", type=int, default=16, help="the largest K tried (from 2)")
            s.add_argument("--rows", type=int, default=2500, help="rows per half, at most")
            s.add_argument("--iterations", type=int, default=1000, help="TURTLE's iterations, at most")
        if name == "methods":
            s.add_argument("--methods", nargs="+", default=list(PATCHES), choices=list(PATCHES))
        if name == "graphs":
            s.add_argument("--rows", nargs="+", type=int, default=[ck.MAX_ROWS],
                           help="rows the graph is built on (a seeded slice of larger sets); every k of "
                                f"{GRAPH_SIZES} at {ck.MAX_ROWS}, the default k at other sizes")
    t = sub.add_parser("table")
    t.add_argument("rows", nargs="+", type=Path)
    args = p.parse_args(argv)
    if args.command in ("graphs", "inputs") and "mixtures" in args.datasets:
        p.error(f"{args.command} reads the feature stores of real datasets: drop 'mixtures'")
    if args.command == "table":
        rows = [json.loads(line) for path in args.rows for line in path.read_text().splitlines() if line.strip()]
        print(f"Made by `python bench/choose_k.py`; rows in {', '.join(f'`{r}`' for r in args.rows)}.\n")
        print(table(rows))
        return
    for name in args.datasets:
        if name != "mixtures":
            others = {"inputs": ["lite1", "lite2"], "variants": ["lite2"],
                      "methods": ["lite2"] if any(PATCHES[m] for m in getattr(args, "methods", [])) else []}
            for net in ["lite0"] + others.get(args.command, []):
                store_for(name, net, args.cache)  # made (or found) before any fit
    {"criteria": run_criteria, "methods": run_methods, "graphs": run_graphs, "turtle": run_turtle,
     "variants": run_variants, "indices": run_indices,
     "inputs": run_inputs}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
