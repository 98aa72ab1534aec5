"""The mutual-distillation training loop: Adam on the heads of every modality.

An epoch is one pass over the data in batches (drop_last, as TAC) or
`min_steps_per_epoch` steps, whichever is more: the papers' 20 epochs at
N = 50,000 are ~2,000 steps, and a small dataset given 20 passes of a few steps
each would stay undertrained. Early stopping, when on, watches the training
objective itself (never labels) and keeps the weights of the best epoch.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from tqdm.auto import tqdm

from ..distributed import sharded_cosine_topk
from .modalities import Modality
from .objective import distillation_objective


@dataclass
class DistillConfig:
    epochs: int = 20
    batch_size: int = 512
    lr: float = 1e-3
    betas: tuple = (0.9, 0.99)
    temperature: float = 1.0
    entropy_weight: float = 5.0        # lambda (SATC: lambda2)
    consistency_weight: float = 1.0    # SATC: lambda1
    n_neighbors: int = 50
    level: str = "instance"            # "instance" (papers) or "cluster" (TAC)
    min_steps_per_epoch: int = 100
    patience: int = 0                  # early stopping: epochs without a better training loss (0: off)
    min_delta: float = 1e-4            # an improvement smaller than this does not count


@dataclass
class DistillResult:
    losses: list = field(default_factory=list)   # mean loss per epoch
    seconds: float = 0.0
    neighbor_seconds: float = 0.0
    best_epoch: int = -1                         # the epoch whose weights were kept
    stopped_early: bool = False


def neighbor_index(features: torch.Tensor, n_neighbors: int, backend: str = "auto") -> torch.Tensor:
    """(N, k) indices of every row's top-k cosine neighbours, itself excluded; under
    torchrun the search is split over the ranks (the same answer)."""
    k = min(n_neighbors, features.shape[0] - 1)
    return sharded_cosine_topk(features, k, exclude_self=True, backend=backend)[1]


def _batches(n: int, config: DistillConfig, generator: torch.Generator, device) -> Iterator[torch.Tensor]:
    """The row indices of one epoch's batches: passes over a fresh permutation each."""
    batch = min(config.batch_size, n)
    per_pass = n // batch
    for s in range(max(config.min_steps_per_epoch, per_pass)):
        if s % per_pass == 0:
            perm = torch.randperm(n, generator=generator, device=device)
        j = s % per_pass
        yield perm[j * batch:(j + 1) * batch]


def steps_per_epoch(n: int, config: DistillConfig) -> int:
    return max(config.min_steps_per_epoch, n // min(config.batch_size, n))


def _assignments(modalities: list[Modality], idx: torch.Tensor, generator: torch.Generator):
    """Per modality: the heads' assignments of the anchors and of one random
    top-k neighbour of each anchor in that modality's space."""
    p_anchor, p_neighbor = [], []
    for m in modalities:
        pick = torch.randint(m.neighbor_index.shape[1], (idx.shape[0],), generator=generator, device=idx.device)
        rows = torch.cat([idx, m.neighbor_index[idx, pick]])
        both = m.head(m.features.index_select(0, rows))
        p_anchor.append(both[:idx.shape[0]])
        p_neighbor.append(both[idx.shape[0]:])
    return p_anchor, p_neighbor


class _BestEpoch:
    """Unsupervised early stopping on the training loss; remembers the best weights."""

    def __init__(self, config: DistillConfig, heads: list):
        self.patience, self.min_delta, self.heads = config.patience, config.min_delta, heads
        self.best_loss, self.best_state, self.waited, self.best_epoch = float("inf"), None, 0, -1

    def stop_after(self, epoch: int, loss: float) -> bool:
        if not self.patience:
            return False
        if loss < self.best_loss - self.min_delta:
            self.best_loss, self.waited, self.best_epoch = loss, 0, epoch
            self.best_state = [copy.deepcopy(h.state_dict()) for h in self.heads]
            return False
        self.waited += 1
        return self.waited >= self.patience

    def restore(self) -> None:
        if self.best_state is not None:
            for h, state in zip(self.heads, self.best_state):
                h.load_state_dict(state)


def mutual_distillation(modalities: list[Modality], pairs: list[tuple[int, int, float]], config: DistillConfig, *,
                        generator: torch.Generator, backend: str = "auto", progress: bool = False,
                        desc: str = "distill", on_epoch: Callable[[int, float], None] | None = None) -> DistillResult:
    """Train every modality's head on the objective of `pairs` ((a, b, weight) each)."""
    device = modalities[0].features.device
    n = modalities[0].features.shape[0]
    heads = [m.head for m in modalities]
    optimizer = torch.optim.Adam([p for h in heads for p in h.parameters()], lr=config.lr,
                                 betas=tuple(config.betas))
    result = DistillResult()
    t0 = time.perf_counter()
    for m in modalities:  # neighbour lists given by the caller (shared between restarts) are kept
        if m.neighbor_index is None:
            m.neighbor_index = neighbor_index(m.features, config.n_neighbors, backend)
    result.neighbor_seconds = time.perf_counter() - t0
    for h in heads:
        h.train()
    stopping = _BestEpoch(config, heads)
    steps = steps_per_epoch(n, config)
    bar = tqdm(total=config.epochs * steps, desc=desc, disable=not progress, mininterval=1.0)
    for epoch in range(config.epochs):
        total = 0.0
        for idx in _batches(n, config, generator, device):
            p_anchor, p_neighbor = _assignments(modalities, idx, generator)
            loss = distillation_objective(p_anchor, p_neighbor, pairs, temperature=config.temperature,
                                          level=config.level, consistency_weight=config.consistency_weight,
                                          entropy_weight=config.entropy_weight, backend=backend)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            bar.update(1)
        result.losses.append(total / steps)
        if on_epoch is not None:
            on_epoch(epoch, result.losses[-1])
        if stopping.stop_after(epoch, result.losses[-1]):
            result.stopped_early = True
            break
    bar.close()
    stopping.restore()
    result.best_epoch = stopping.best_epoch if stopping.best_state is not None else len(result.losses) - 1
    for h in heads:
        h.eval()
    result.seconds = time.perf_counter() - t0
    return result
