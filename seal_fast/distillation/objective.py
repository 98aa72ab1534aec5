"""The mutual-distillation objective of one batch (SEAL eqs. 7-12, SATC eqs. 6-11).

For every pair of modalities (a, b) with weight w and every anchor i of the
batch, TAC's cross-modal recipe pairs the anchor's assignment in one modality
with the assignment, in the other modality, of a random one of the anchor's
top-k neighbours *in that other modality's space* (j_b(i), j_a(i)):

    L_dist(a, b) = NCE(p_a[i], p_b[j_b(i)]) + NCE(p_b[i], p_a[j_a(i)])
    L_con(a, b)  = -mean_i log <p_a[i], p_b[i]>
    L            = sum_pairs w (L_dist + c L_con) - lambda sum_m H(mean_i p_m[i])

NCE is `cross_modal_infonce` at the instance level (the papers) or the cluster
level (TAC); c is the consistency weight (SATC's lambda1), lambda the entropy
weight (lambda2).
"""
from __future__ import annotations

import torch

from ..ops.cross_modal_infonce import cross_modal_infonce


def consistency_loss(pa: torch.Tensor, pb: torch.Tensor) -> torch.Tensor:
    """L_con: the two modalities assign each sample to the same cluster."""
    return -torch.log((pa * pb).sum(1).clamp_min(1e-9)).mean()


def batch_entropy(p: torch.Tensor) -> torch.Tensor:
    """H(mean_i p[i]): high when the batch spreads over all clusters."""
    m = p.mean(0).clamp_min(1e-9)
    return -(m * m.log()).sum()


def distillation_objective(p_anchor: list[torch.Tensor], p_neighbor: list[torch.Tensor],
                           pairs: list[tuple[int, int, float]], *, temperature: float, level: str,
                           consistency_weight: float, entropy_weight: float, backend: str = "auto") -> torch.Tensor:
    """L of one batch. p_anchor[m] (B, K): modality m's assignments of the anchors;
    p_neighbor[m]: its assignments of one random neighbour of each anchor in m's space."""
    loss = 0.0
    for a, b, w in pairs:
        l_dist = (cross_modal_infonce(p_anchor[a], p_neighbor[b], temperature, level, backend=backend)
                  + cross_modal_infonce(p_anchor[b], p_neighbor[a], temperature, level, backend=backend))
        loss = loss + w * (l_dist + consistency_weight * consistency_loss(p_anchor[a], p_anchor[b]))
    return loss - entropy_weight * sum(batch_entropy(p) for p in p_anchor)
