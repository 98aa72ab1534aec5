"""What the report says, computed from the labels, the features and (optionally) the
model and the truth: each cluster's size, its most typical and least typical members,
its majority class; the matched confusion matrix and per-class recall. Rendering is
html.py's job, naming naming.py's.

Typicality: with a fitted TURTLE / SEAL / SATC model, the labeler's probability of the
row's own cluster; with a K-Means model, the cosine to the row's centre; without a
model, the cosine to the cluster's mean in the L2-normalised, concatenated spaces (the
K-Means convention), which any labeling has.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from ..errors import SealFastError
from ..metrics import evaluate, matched_order
from ..rows import ROW_BLOCK
from ..validation import UNLABELLED, check_finite


@dataclass
class ClusterView:
    cluster: int
    size: int
    typical: list           # row indices, most typical first
    doubtful: list          # row indices, least typical first
    majority: tuple | None = None   # (class name, fraction of the labelled members)
    name: object = None             # a naming.ClusterName, or None when no namer applies


@dataclass
class ReportContent:
    n: int
    n_clusters: int
    clusters: list                                  # ClusterView, in display order
    typicality: str                                 # how "typical" was measured, in words
    run: dict = field(default_factory=dict)         # RESULT.json, when present
    evaluation: dict | None = None
    class_names: list | None = None
    confusion: np.ndarray | None = None             # clusters (confusion_rows) x classes
    confusion_rows: list | None = None              # the cluster of each row of the matrix, matched first
    confusion_matched: set = field(default_factory=set)  # (row, column) of each matched pair
    recall: list | None = None                      # [(class name, recall, size)]
    naming: str = ""                                # how the names were made, or why there are none
    notes: list = field(default_factory=list)       # what the page could not show, and why


def _rows(Z, start, stop) -> torch.Tensor:
    """Rows of an array or memory map as a float32 tensor of their own (a memory map is read-only)."""
    return torch.from_numpy(np.array(Z[start:stop], dtype=np.float32))


def _unit_concat(Zs, start, stop) -> torch.Tensor:
    return torch.cat([F.normalize(_rows(Z, start, stop), dim=1)
                      for Z in Zs], dim=1)


def typicality(Zs, labels: np.ndarray, compact: np.ndarray, n_used: int, model=None) -> tuple[np.ndarray, str]:
    """(a score per row, higher = more typical of its own cluster; what the score is).
    `labels` are the result's cluster ids (the model's own), `compact` the same
    clusters numbered 0..n_used-1 (what the cluster means are indexed by)."""
    n = labels.shape[0]
    score = np.empty(n, dtype=np.float64)
    if model is not None and hasattr(model, "predict_proba"):
        for s in range(0, n, ROW_BLOCK):
            p = model.predict_proba([np.asarray(Z[s:s + ROW_BLOCK]) for Z in Zs])
            score[s:s + ROW_BLOCK] = p[np.arange(p.shape[0]), labels[s:s + ROW_BLOCK]]
        return score, f"the {model.method.upper()} labeler's probability of the cluster"
    if model is not None and hasattr(model, "cluster_centers_"):
        from ..kmeans_algorithm import prepare_spaces

        centers = model.cluster_centers_.float()
        for s in range(0, n, ROW_BLOCK):
            X = prepare_spaces([_rows(Z, s, s + ROW_BLOCK) for Z in Zs])
            lab = torch.as_tensor(labels[s:s + ROW_BLOCK])
            score[s:s + ROW_BLOCK] = F.cosine_similarity(X, centers[lab], dim=1).numpy()
        return score, "cosine to the K-Means centre"
    sums = None
    for s in range(0, n, ROW_BLOCK):
        X = _unit_concat(Zs, s, s + ROW_BLOCK).double()
        part = torch.zeros(n_used, X.shape[1], dtype=torch.float64).index_add_(
            0, torch.as_tensor(compact[s:s + ROW_BLOCK]), X)
        sums = part if sums is None else sums + part
    means = F.normalize(sums, dim=1)
    for s in range(0, n, ROW_BLOCK):
        X = _unit_concat(Zs, s, s + ROW_BLOCK).double()
        score[s:s + ROW_BLOCK] = (X * means[torch.as_tensor(compact[s:s + ROW_BLOCK])]).sum(1).numpy()
    return score, "cosine to the cluster's mean (L2-normalised spaces)"


def members_by_typicality(compact: np.ndarray, score: np.ndarray, n_used: int) -> list[np.ndarray]:
    """For every cluster (numbered 0..n_used-1), its rows from most to least typical (one sort for all N)."""
    order = np.lexsort((-score, compact))  # by cluster, then by descending score
    bounds = np.concatenate([[0], np.cumsum(np.bincount(compact, minlength=n_used))])
    return [order[bounds[c]:bounds[c + 1]] for c in range(n_used)]


def thumbnail_counts(n_clusters: int, budget: int = 6000) -> tuple[int, int]:
    """(typical, doubtful) thumbnails per cluster: 12 and 6 for a few clusters, fewer
    as K grows, so that the page stays a few MB at K = 1000."""
    per = max(3, min(18, budget // max(n_clusters, 1)))
    doubtful = max(1, per // 3)
    return per - doubtful, doubtful


def build_content(labels: np.ndarray, Zs, *, n_clusters: int | None = None, model=None, truth=None,
                  class_names=None, run: dict | None = None) -> ReportContent:
    """Everything but the names and thumbnails (added by the caller). Cluster ids may
    have gaps (a model's unused clusters): only the clusters used are shown."""
    labels = np.array(labels, dtype=np.int64)  # a copy: a memory-mapped result is read-only
    ids, compact = np.unique(labels, return_inverse=True)
    score, how = typicality(Zs, labels, compact, ids.size, model)
    if not np.isfinite(score).all():  # only then scanned: the fit that made the labels scanned them already
        for i, Z in enumerate(Zs):
            check_finite(Z, f"features (space {i})")
        raise SealFastError("the typicality of some rows is not finite (the model's probabilities)")
    ranked = members_by_typicality(compact, score, ids.size)
    n_typ, n_doubt = thumbnail_counts(ids.size)
    views = {}
    for c, rows in zip(ids.tolist(), ranked):
        typical = rows[:n_typ]
        doubtful = rows[max(n_typ, rows.size - n_doubt):][::-1]  # never a row already shown as typical
        views[c] = ClusterView(c, int(rows.size), typical.tolist(), doubtful.tolist())
    content = ReportContent(n=int(labels.shape[0]), n_clusters=int(n_clusters or ids.size), clusters=[],
                            typicality=how, run=run or {})
    order = sorted(views, key=lambda c: -views[c].size)
    if truth is not None:
        truth = np.asarray(truth, dtype=np.int64)
        known = truth != UNLABELLED
        if known.any():
            order = _with_truth(content, views, labels[known], truth[known], class_names)
        else:
            content.notes.append("the truth labels are all -1 (unlabelled): no evaluation")
    content.clusters = [views[c] for c in order]
    return content


def _with_truth(content: ReportContent, views: dict, labels, truth, class_names) -> list[int]:
    """Evaluation, the matched confusion matrix, majority classes and recall; returns
    the clusters in the matrix's order (each matched to class c comes c-th)."""
    content.evaluation = evaluate(truth, labels)
    classes = np.unique(truth)
    names = [class_names[c] if class_names and 0 <= c < len(class_names) else str(c) for c in classes]
    content.class_names = names
    table, _, ordered = matched_order(truth, labels)
    content.confusion, content.confusion_rows = table, [int(c) for c in ordered]
    for row, c in zip(table, ordered):
        if int(c) in views and row.sum():
            views[int(c)].majority = (names[int(row.argmax())], float(row.max() / row.sum()))
    class_sizes = table.sum(0)
    rows, cols = linear_sum_assignment(table, maximize=True)  # the matching ACC counts
    matched = dict(zip(cols.tolist(), rows.tolist()))
    content.confusion_matched = set(zip(rows.tolist(), cols.tolist()))
    content.recall = [(names[j], float(table[matched[j], j] / class_sizes[j]) if j in matched else 0.0,
                       int(class_sizes[j])) for j in range(len(classes))]
    return [int(c) for c in ordered if int(c) in views] + [c for c in views if c not in set(ordered.tolist())]
