"""Self-labeling after the labeling (SCAN's last step, on frozen embeddings): the
rows the labeler is sure of, and whose nearest neighbours carry the same label,
train a fresh task encoder, which then labels every row. Label-free: the rows are
chosen by the labeler's own confidence and by the neighbour graph."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .labeling import LabelingConfig, TaskEncoder, fit_to_partition


@dataclass
class SelfLabelingResult:
    encoder: TaskEncoder
    kept: int            # rows that trained it
    changed: float       # share of all rows whose label it changed


def confident_rows(probs: torch.Tensor, neighbor_index: torch.Tensor, keep: float = 0.5,
                   agree: float = 0.5) -> torch.Tensor:
    """Indices of the rows to train on: within each cluster the `keep` share with the
    highest probability of their label, of which those with at least an `agree`
    share of their neighbours in the same cluster. Every non-empty cluster keeps at
    least its most confident row, so none disappears."""
    confidence, labels = probs.max(1)
    neighbor_labels = labels[neighbor_index]
    agreeing = (neighbor_labels == labels[:, None]).float().mean(1) >= agree
    chosen = []
    for k in torch.unique(labels):
        rows = torch.nonzero(labels == k).flatten()
        order = rows[torch.argsort(confidence[rows], descending=True)]
        top = order[:max(1, int(round(keep * rows.numel())))]
        good = top[agreeing[top]]
        chosen.append(good if good.numel() else order[:1])
    return torch.cat(chosen).sort().values


def self_label(encoder: TaskEncoder, Zs: Sequence[torch.Tensor], neighbor_index: torch.Tensor,
               config: LabelingConfig, seed: int = 0, keep: float = 0.5, agree: float = 0.5) -> SelfLabelingResult:
    """A fresh task encoder fitted (`fit_to_partition`) to `encoder`'s labels on its
    confident rows (`confident_rows`)."""
    probs = encoder.predict_proba(list(Zs))
    labels = probs.argmax(1)
    rows = confident_rows(probs, neighbor_index.to(labels.device), keep, agree)
    generator = torch.Generator(device=Zs[0].device).manual_seed(seed + 7)
    fresh = TaskEncoder(encoder.dims, encoder.n_clusters, generator, Zs[0].device)
    fit_to_partition(fresh, [Z.index_select(0, rows) for Z in Zs], labels.index_select(0, rows), config, generator)
    changed = float((fresh.predict(list(Zs)) != labels).float().mean())
    return SelfLabelingResult(fresh, int(rows.numel()), changed)
