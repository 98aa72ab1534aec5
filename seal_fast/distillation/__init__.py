"""Mutual distillation between modalities (SEAL eqs. 7-12, TAC, SATC eqs. 6-11).

- `heads`: the cluster heads, and phi_hat (the visual head's hidden layer).
- `modalities`: the views the heads read (visual, spatial g(x), text) and their neighbour lists.
- `objective`: the loss of one batch, term by term as in the papers.
- `train`: the training loop (`mutual_distillation`).
- `restarts`: several runs and the label-free choice of one (`distill_with_restarts`).
"""
from .heads import ClusterHead, head_from_state, spatially_aware_embedding
from .modalities import Modality, fresh_heads, head_labels, visual_and_spatial
from .objective import batch_entropy, consistency_loss, distillation_objective
from .restarts import (AGREEMENT_ROWS, RESTART_CHOICES, RestartsResult, agreement_rows, choose_restart, consensus_index, distill_with_restarts,
                       neighbor_agreement, restart_seed)
from .train import DistillConfig, DistillResult, mutual_distillation, neighbor_index

__all__ = ["ClusterHead", "Modality", "fresh_heads", "head_from_state", "head_labels", "spatially_aware_embedding",
           "visual_and_spatial", "batch_entropy",
           "consistency_loss", "distillation_objective", "AGREEMENT_ROWS", "agreement_rows", "RESTART_CHOICES", "RestartsResult", "choose_restart",
           "consensus_index", "distill_with_restarts", "neighbor_agreement", "restart_seed", "DistillConfig",
           "DistillResult", "mutual_distillation", "neighbor_index"]
