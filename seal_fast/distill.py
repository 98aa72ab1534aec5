"""Mutual distillation between modalities (SEAL eqs. 7-12, TAC, SATC eqs. 6-11).

Each modality m (visual, spatial, text) has an encoder (identity for fixed
features, the spatial GAT for patches) and a cluster head
Linear(d, d) -> BatchNorm -> ReLU -> Linear(d, K) -> Softmax. For every pair of
modalities (a, b) and every anchor i of a batch, TAC's cross-modal recipe pairs
the anchor's assignment in one modality with the assignment, in the other
modality, of a random one of the anchor's top-k neighbours *in that other
modality's space*:

    L_dist = NCE(p_a[i], p_b[j_b(i)]) + NCE(p_b[i], p_a[j_a(i)])
    L_con  = -mean_i log <p_a[i], p_b[i]>
    L      = sum_pairs w_pair (L_dist + c L_con) - lambda sum_m H(mean_i p_m[i])

NCE is `cross_modal_infonce` at the instance level (the papers) or the cluster
level (TAC). The trained visual head gives the spatially-aware embedding
phi_hat: its hidden layer (after BN and ReLU), the same size as phi.

The objective has local optima far apart in accuracy (on Fashion-MNIST, one
restart in six lands 10 points below the others), and its own value does not
tell them apart. `distill_with_restarts` trains several restarts and keeps one
by a label-free rule: the consensus one (the partition that agrees best, in
mean NMI, with the other restarts' partitions) or the one whose partition keeps
the most top-k neighbour pairs of the answer modality together.
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .metrics import normalized_mutual_info
from .ops.cosine_topk import cosine_topk
from .ops.infonce import cross_modal_infonce


@dataclass
class DistillConfig:
    epochs: int = 20
    batch_size: int = 512
    lr: float = 1e-3
    betas: tuple = (0.9, 0.99)
    temperature: float = 1.0
    entropy_weight: float = 5.0        # lambda
    consistency_weight: float = 1.0
    n_neighbors: int = 50
    level: str = "instance"            # "instance" (papers) or "cluster" (TAC)
    refresh_neighbors: int = 0         # recompute learned modalities' neighbours every n epochs (0: never)
    min_steps_per_epoch: int = 100     # small datasets: an epoch is at least this many steps (see below)
    patience: int = 0                  # early stopping: epochs without a better training loss (0: off)
    min_delta: float = 1e-4            # an improvement smaller than this does not count

    def to_dict(self) -> dict:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d


class ClusterHead(nn.Module):
    """Linear(d, h) -> BatchNorm -> ReLU -> Linear(h, K) -> Softmax (TAC's head)."""

    def __init__(self, in_dim: int, n_clusters: int, hidden: int | None = None,
                 generator: torch.Generator | None = None):
        super().__init__()
        hidden = hidden or in_dim
        self.fc1 = nn.Linear(in_dim, hidden)
        self.bn = nn.BatchNorm1d(hidden)
        self.fc2 = nn.Linear(hidden, n_clusters)
        with torch.no_grad():  # truncated normal, std 0.02, as TAC
            for lin in (self.fc1, self.fc2):
                lin.weight.copy_(_trunc_normal(lin.weight.shape, 0.02, generator))
                lin.bias.zero_()

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.fc1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.fc2(self.hidden(x)), dim=1)


def _trunc_normal(shape, std, generator):
    t = torch.randn(shape, generator=generator) * std
    while True:  # resample outside +-2 std
        bad = t.abs() > 2 * std
        if not bad.any():
            return t
        t[bad] = torch.randn(int(bad.sum()), generator=generator) * std


@dataclass
class Modality:
    """One view of the data: raw inputs (N, ...) on the device, an encoder to
    features (identity when None) and a cluster head on those features."""

    name: str
    inputs: torch.Tensor
    head: ClusterHead
    encoder: nn.Module | None = None
    encode_block: int = 4096
    neighbors: torch.Tensor | None = None   # (N, k) top-k in this modality's feature space

    def encode(self, idx: torch.Tensor | None = None) -> torch.Tensor:
        x = self.inputs if idx is None else self.inputs.index_select(0, idx)
        return x.float() if self.encoder is None else self.encoder(x)

    @torch.no_grad()
    def encode_all(self) -> torch.Tensor:
        n = self.inputs.shape[0]
        return torch.cat([self.encode(torch.arange(s, min(s + self.encode_block, n), device=self.inputs.device))
                          for s in range(0, n, self.encode_block)])


def consistency_loss(pa: torch.Tensor, pb: torch.Tensor) -> torch.Tensor:
    return -torch.log((pa * pb).sum(1).clamp_min(1e-9)).mean()


def batch_entropy(p: torch.Tensor) -> torch.Tensor:
    m = p.mean(0).clamp_min(1e-9)
    return -(m * m.log()).sum()


@dataclass
class DistillResult:
    losses: list = field(default_factory=list)   # mean loss per epoch
    seconds: float = 0.0
    neighbor_seconds: float = 0.0
    best_epoch: int = -1                         # the epoch whose weights were kept
    stopped_early: bool = False


def neighbors_of(features: torch.Tensor, k: int, backend: str) -> torch.Tensor:
    k = min(k, features.shape[0] - 1)
    return cosine_topk(features, features, k, exclude_self=True, backend=backend)[1]


def mutual_distillation(modalities: list[Modality], pairs: list[tuple[int, int, float]],
                        config: DistillConfig, *, generator: torch.Generator, backend: str = "auto",
                        progress: bool = False, desc: str = "distill",
                        on_epoch: Callable[[int, float], None] | None = None) -> DistillResult:
    """Train every modality's encoder and head jointly; `pairs` lists (a, b, weight)."""
    device = modalities[0].inputs.device
    n = modalities[0].inputs.shape[0]
    params = [p for m in modalities for p in m.head.parameters()]
    params += [p for m in modalities if m.encoder is not None for p in m.encoder.parameters()]
    optimizer = torch.optim.Adam(params, lr=config.lr, betas=tuple(config.betas))
    result = DistillResult()
    t0 = time.perf_counter()

    def refresh(which):
        t = time.perf_counter()
        for m in which:
            m.neighbors = neighbors_of(m.encode_all(), config.n_neighbors, backend)
        result.neighbor_seconds += time.perf_counter() - t

    for m in modalities:
        m.head.train()
        if m.encoder is not None:
            m.encoder.train()
    refresh([m for m in modalities if m.neighbors is None])  # neighbours given by the caller are kept
    batch = min(config.batch_size, n)
    # An epoch is one pass over the data (drop_last, as TAC) or `min_steps_per_epoch`
    # steps, whichever is more: the papers' 20 epochs at N=50k are ~2,000 steps, and
    # a small dataset given 20 passes of a few steps each would stay undertrained.
    per_pass = n // batch
    steps = max(config.min_steps_per_epoch, per_pass)
    bar = tqdm(total=config.epochs * steps, desc=desc, disable=not progress, mininterval=1.0)
    trainable = [m.head for m in modalities] + [m.encoder for m in modalities if m.encoder is not None]
    best_loss, best_state, waited = float("inf"), None, 0
    for epoch in range(config.epochs):
        if epoch > 0 and config.refresh_neighbors and epoch % config.refresh_neighbors == 0:
            refresh([m for m in modalities if m.encoder is not None])
        total = 0.0
        for s in range(steps):
            if s % per_pass == 0:
                perm = torch.randperm(n, generator=generator, device=device)
            j = s % per_pass
            idx = perm[j * batch:(j + 1) * batch]
            p_anchor, p_neigh = [], []
            for m in modalities:
                k = m.neighbors.shape[1]
                pick = torch.randint(k, (idx.shape[0],), generator=generator, device=device)
                nb = m.neighbors[idx, pick]
                both = m.head(m.encode(torch.cat([idx, nb])))
                p_anchor.append(both[:idx.shape[0]])
                p_neigh.append(both[idx.shape[0]:])
            loss = 0.0
            for a, b, w in pairs:
                dist = (cross_modal_infonce(p_anchor[a], p_neigh[b], config.temperature, config.level,
                                            backend=backend)
                        + cross_modal_infonce(p_anchor[b], p_neigh[a], config.temperature, config.level,
                                              backend=backend))
                loss = loss + w * (dist + config.consistency_weight * consistency_loss(p_anchor[a], p_anchor[b]))
            loss = loss - config.entropy_weight * sum(batch_entropy(p) for p in p_anchor)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            bar.update(1)
        result.losses.append(total / steps)
        if on_epoch is not None:
            on_epoch(epoch, result.losses[-1])
        if config.patience:
            # unsupervised early stopping: the training objective itself, never labels
            if result.losses[-1] < best_loss - config.min_delta:
                best_loss, waited, result.best_epoch = result.losses[-1], 0, epoch
                best_state = [copy.deepcopy(t.state_dict()) for t in trainable]
            else:
                waited += 1
                if waited >= config.patience:
                    result.stopped_early = True
                    break
    bar.close()
    if best_state is not None:
        for t, state in zip(trainable, best_state):
            t.load_state_dict(state)
    else:
        result.best_epoch = len(result.losses) - 1
    for m in modalities:
        m.head.eval()
        if m.encoder is not None:
            m.encoder.eval()
    result.seconds = time.perf_counter() - t0
    return result


def restart_seed(seed: int, restart: int) -> int:
    """The seed of restart r (restart 0 uses the caller's seed unchanged)."""
    return seed + 100_003 * restart


@torch.no_grad()
def head_labels(modality: Modality) -> torch.Tensor:
    """argmax of the modality's head over all its rows, in eval mode."""
    modality.head.eval()
    return modality.head(modality.encode_all()).argmax(1)


def consensus_index(partitions: list) -> tuple[int, list[list[float]]]:
    """The partition with the highest mean NMI to the others (ties: the first),
    and the agreement matrix."""
    labels = [p.cpu().numpy() if isinstance(p, torch.Tensor) else p for p in partitions]
    r = len(labels)
    agreement = [[1.0 if i == j else normalized_mutual_info(labels[i], labels[j]) for j in range(r)]
                 for i in range(r)]
    return _best(consensus_scores(agreement)), agreement


def consensus_scores(agreement: list[list[float]]) -> list[float]:
    """Each partition's mean NMI to the others (1.0 for a lone partition)."""
    r = len(agreement)
    return [1.0 if r == 1 else (sum(row) - 1.0) / (r - 1) for row in agreement]


def _best(scores: list[float]) -> int:
    """Index of the highest score; ties go to the earlier one."""
    return max(range(len(scores)), key=lambda i: (scores[i], -i))


def neighbor_agreement(labels: torch.Tensor, neighbors: torch.Tensor) -> float:
    """Share of (row, top-k neighbour) pairs that `labels` puts in the same cluster."""
    return float((labels[neighbors] == labels[:, None]).float().mean())


RESTART_CHOICES = ("consensus", "neighbors")


def choose_restart(partitions: list, neighbors: torch.Tensor, choice: str,
                   agreement: list[list[float]] | None = None) -> tuple[int, list[float]]:
    """Index of the restart to keep and the score of every restart (higher is better).

    consensus: mean NMI to the other restarts' partitions (from `agreement` when the
    caller has it). neighbors: share of the answer modality's top-k neighbour pairs
    kept in one cluster (a partition that cuts the neighbour graph less). Ties go to
    the earlier restart."""
    if choice == "consensus":
        scores = consensus_scores(agreement if agreement is not None else consensus_index(partitions)[1])
    elif choice == "neighbors":
        scores = [neighbor_agreement(p, neighbors) for p in partitions]
    else:
        raise ValueError(f"restart choice must be one of {RESTART_CHOICES}, got {choice!r}")
    return _best(scores), scores


@dataclass
class RestartsResult:
    modalities: list                   # the kept restart's modalities (heads trained)
    result: DistillResult              # its training record
    chosen: int                        # which restart was kept
    labels: torch.Tensor               # its partition: argmax of the `answer` modality's head, all rows
    agreement: list                    # NMI between the restarts' partitions
    seconds: list                      # distillation time of each restart
    runs: list                         # every restart's modalities, in restart order (heads trained)
    scores: list = field(default_factory=list)  # each restart's score under the choice rule


def distill_with_restarts(make_modalities: Callable[[int], list[Modality]], pairs: list[tuple[int, int, float]],
                          config: DistillConfig, *, restarts: int, seed: int, device, backend: str = "auto",
                          answer: int = 0, choice: str = "consensus", progress: bool = False,
                          desc: str = "distill") -> RestartsResult:
    """Run `mutual_distillation` `restarts` times and keep one restart (`choose_restart`).

    make_modalities(r) builds restart r's modalities (fresh heads). Neighbour
    lists of fixed-feature modalities are computed once and shared. The
    partitions compared are those of modality `answer` (the visual head).
    """
    if restarts < 1:
        raise ValueError(f"restarts must be >= 1, got {restarts}")
    if choice not in RESTART_CHOICES:
        raise ValueError(f"restart choice must be one of {RESTART_CHOICES}, got {choice!r}")
    runs, labels = [], []
    for r in range(restarts):
        modalities = make_modalities(r)
        if runs:
            for m, first in zip(modalities, runs[0][0]):
                if m.encoder is None and first.encoder is None:
                    m.neighbors = first.neighbors
        generator = torch.Generator(device=device).manual_seed(restart_seed(seed, r))
        tag = desc if restarts == 1 else f"{desc} restart {r + 1}/{restarts}"
        result = mutual_distillation(modalities, pairs, config, generator=generator, backend=backend,
                                     progress=progress, desc=tag)
        runs.append((modalities, result))
        labels.append(head_labels(modalities[answer]))
    _, agreement = consensus_index(labels)
    # the answer modality has fixed features, so its neighbour lists are the same in every restart
    chosen, scores = choose_restart(labels, runs[0][0][answer].neighbors, choice, agreement)
    modalities, result = runs[chosen]
    return RestartsResult(modalities, result, chosen, labels[chosen],
                          [[round(a, 4) for a in row] for row in agreement], [round(r.seconds, 3) for _, r in runs],
                          [m for m, _ in runs], [round(x, 4) for x in scores])
