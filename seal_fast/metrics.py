"""Clustering metrics: ACC (Hungarian matching), NMI, ARI, and triplet accuracy.

ACC, NMI and ARI are computed from the contingency table, built with one
`bincount`, so they cost O(N + C*K) after that and handle N in the millions.
The number of clusters may differ from the number of classes: ACC then matches
min(C, K) pairs and counts every sample outside a matched pair as wrong.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from .errors import SealFastError
from .validation import UNLABELLED, check_labels


def contingency(y_true, y_pred) -> np.ndarray:
    """(C, K) counts of samples of class c assigned to cluster k (labels re-indexed densely)."""
    y_true, y_pred = _pair(y_true, y_pred)
    classes, t = np.unique(y_true, return_inverse=True)
    clusters, p = np.unique(y_pred, return_inverse=True)
    C, K = classes.size, clusters.size
    return np.bincount(t * K + p, minlength=C * K).reshape(C, K)


def matched_order(truth: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(contingency table (clusters x classes), its clusters reordered so that the
    cluster the Hungarian matching gives class c comes c-th (unmatched ones last),
    and the cluster ids in that order)."""
    table = contingency(truth, labels).T
    clusters = np.unique(labels)
    rows, cols = linear_sum_assignment(table, maximize=True)
    order = [r for _, r in sorted(zip(cols, rows))]
    order += [r for r in range(table.shape[0]) if r not in order]
    return table[order], np.asarray(order), clusters[order]


def _pair(y_true, y_pred):
    y_true = check_labels(y_true, name="true labels")
    y_pred = check_labels(y_pred, name="predicted labels")
    if y_true.shape != y_pred.shape:
        raise SealFastError(f"{y_pred.shape[0]} predictions for {y_true.shape[0]} true labels")
    return y_true, y_pred


def cluster_accuracy(y_true, y_pred) -> float:
    """Best one-to-one matching of clusters to classes (Hungarian), as a fraction."""
    table = contingency(y_true, y_pred)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / table.sum())


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def normalized_mutual_info(y_true, y_pred) -> float:
    """NMI with the arithmetic-mean normaliser (scikit-learn's default)."""
    table = contingency(y_true, y_pred).astype(np.float64)
    n = table.sum()
    h_true, h_pred = _entropy(table.sum(1)), _entropy(table.sum(0))
    if h_true == 0.0 and h_pred == 0.0:
        return 1.0  # both labelings are a single block: identical partitions
    nz = table > 0
    outer = np.outer(table.sum(1), table.sum(0))
    mi = float((table[nz] / n * (np.log(table[nz] * n) - np.log(outer[nz]))).sum())
    mi = max(mi, 0.0)
    denom = 0.5 * (h_true + h_pred)
    return float(mi / denom) if denom > 0 else 0.0


def adjusted_rand_index(y_true, y_pred) -> float:
    table = contingency(y_true, y_pred).astype(np.float64)
    n = table.sum()

    def comb2(x):
        return x * (x - 1) / 2.0

    sum_cells = comb2(table).sum()
    sum_rows, sum_cols = comb2(table.sum(1)).sum(), comb2(table.sum(0)).sum()
    total = comb2(n)
    expected = sum_rows * sum_cols / total if total > 0 else 0.0
    max_index = 0.5 * (sum_rows + sum_cols)
    if max_index == expected:  # degenerate: both partitions trivial in the same way
        return 1.0
    return float((sum_cells - expected) / (max_index - expected))


def evaluate(y_true, y_pred) -> dict:
    """ACC, NMI and ARI in percent and the number of rows scored: the dict
    `seal-fast evaluate` prints. Rows whose true label is -1 (unlabelled) are left
    out of the scores; "n_unlabelled" says how many there were, when any."""
    y_true = check_labels(y_true, name="true labels", allow_unlabelled=True)
    y_pred = check_labels(y_pred, name="predicted labels")
    if y_true.shape != y_pred.shape:
        raise SealFastError(f"{y_pred.shape[0]} predictions for {y_true.shape[0]} true labels")
    labelled = y_true != UNLABELLED
    if not labelled.any():
        raise SealFastError("true labels: every row is -1 (unlabelled); nothing to score")
    y_true, y_pred = y_true[labelled], y_pred[labelled]
    scores = {
        "acc": round(100.0 * cluster_accuracy(y_true, y_pred), 4),
        "nmi": round(100.0 * normalized_mutual_info(y_true, y_pred), 4),
        "ari": round(100.0 * adjusted_rand_index(y_true, y_pred), 4),
        "n": int(y_true.shape[0]),
    }
    if not labelled.all():
        scores["n_unlabelled"] = int((~labelled).sum())
    return scores


def triplet_accuracy(Z, y, n_triplets: int = 10000, seed: int = 0) -> float:
    """Fraction of random triplets (anchor, positive, negative) in which the anchor
    is closer, in cosine distance, to the positive (same class) than to the
    negative (another class). SEAL paper, appendix D.

    Anchors are drawn uniformly among samples whose class has at least two
    members; the positive uniformly among the anchor's other class members; the
    negative uniformly among samples of other classes.
    """
    Z = np.asarray(Z, dtype=np.float64)
    y = check_labels(y, n=Z.shape[0] if Z.ndim == 2 else None)
    if Z.ndim != 2:
        raise SealFastError(f"embeddings must be (N, d), got {Z.shape}")
    classes, inv, counts = np.unique(y, return_inverse=True, return_counts=True)
    if classes.size < 2:
        raise SealFastError("triplet accuracy needs at least two classes")
    eligible = np.flatnonzero(counts[inv] >= 2)
    if eligible.size == 0:
        raise SealFastError("triplet accuracy needs a class with at least two samples")
    rng = np.random.default_rng(seed)
    order = np.argsort(inv, kind="stable")  # samples grouped by class
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    anchors = rng.choice(eligible, size=n_triplets)
    a_cls = inv[anchors]
    # positive: a random other member of the anchor's class
    pos_rank = rng.integers(0, counts[a_cls] - 1)
    positives = order[starts[a_cls] + pos_rank]
    positives = np.where(positives == anchors, order[starts[a_cls] + counts[a_cls] - 1], positives)
    # negative: a random sample outside the anchor's class
    neg_rank = rng.integers(0, y.shape[0] - counts[a_cls])
    neg_rank = np.where(neg_rank >= starts[a_cls], neg_rank + counts[a_cls], neg_rank)
    negatives = order[neg_rank]
    Zn = Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)
    d_pos = 1.0 - np.einsum("ij,ij->i", Zn[anchors], Zn[positives])
    d_neg = 1.0 - np.einsum("ij,ij->i", Zn[anchors], Zn[negatives])
    return float(np.mean(d_pos < d_neg))
