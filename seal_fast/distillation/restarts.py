"""Several distillation runs and a label-free choice of one.

The objective has local optima far apart in accuracy, and its own value does
not tell them apart. `distill_with_restarts` trains several restarts (fresh
heads; the features and neighbour lists are shared) and keeps one: the
consensus one (the partition that agrees best, in mean NMI, with the other
restarts' partitions) or the one whose partition keeps the most top-k neighbour
pairs of the answer modality together.

The consensus compares the partitions on at most AGREEMENT_ROWS evenly spaced
rows (more when K is large): a partition of all N rows costs a full forward pass
of the head (at N = 60,000 and d = 1280 about 5 s on one core), and NMI between
partitions of 10 clusters is settled to about 0.005 by 10,000 rows. Only the kept
restart is then labelled on every row.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..metrics import normalized_mutual_info
from .modalities import Modality, fresh_heads, head_labels
from .train import DistillConfig, DistillResult, mutual_distillation, neighbor_index

RESTART_CHOICES = ("consensus", "neighbors")
AGREEMENT_ROWS = 10_000


def restart_seed(seed: int, restart: int) -> int:
    """The seed of restart r (restart 0 uses the caller's seed unchanged)."""
    return seed + 100_003 * restart


def agreement_rows(n: int, n_clusters: int, limit: int = AGREEMENT_ROWS) -> torch.Tensor | None:
    """The rows on which the restarts' partitions are compared: every row (None)
    when N is at most `limit` or 100 per cluster, else that many evenly spaced."""
    size = max(limit, 100 * n_clusters)
    return None if n <= size else torch.arange(size) * n // size


def consensus_index(partitions: list) -> tuple[int, list[list[float]]]:
    """The partition with the highest mean NMI to the others (ties: the first),
    and the agreement matrix."""
    labels = [p.cpu().numpy() if isinstance(p, torch.Tensor) else p for p in partitions]
    r = len(labels)
    agreement = [[1.0 if i == j else normalized_mutual_info(labels[i], labels[j]) for j in range(r)]
                 for i in range(r)]
    return _best(_consensus_scores(agreement)), agreement


def _consensus_scores(agreement: list[list[float]]) -> list[float]:
    """Each partition's mean NMI to the others (1.0 for a lone partition)."""
    r = len(agreement)
    return [1.0 if r == 1 else (sum(row) - 1.0) / (r - 1) for row in agreement]


def _best(scores: list[float]) -> int:
    """Index of the highest score; ties go to the earlier one."""
    return max(range(len(scores)), key=lambda i: (scores[i], -i))


def neighbor_agreement(labels: torch.Tensor, neighbor_index: torch.Tensor) -> float:
    """Share of (row, top-k neighbour) pairs that `labels` puts in the same cluster."""
    return float((labels[neighbor_index] == labels[:, None]).float().mean())


def choose_restart(partitions: list, neighbor_index: torch.Tensor, choice: str,
                   agreement: list[list[float]] | None = None) -> tuple[int, list[float]]:
    """Index of the restart to keep and the score of every restart (higher is better).

    consensus: mean NMI to the other restarts' partitions (from `agreement` when the
    caller has it). neighbors: share of the answer modality's top-k neighbour pairs
    kept in one cluster (a partition that cuts the neighbour graph less). Ties go to
    the earlier restart."""
    if choice == "consensus":
        scores = _consensus_scores(agreement if agreement is not None else consensus_index(partitions)[1])
    elif choice == "neighbors":
        scores = [neighbor_agreement(p, neighbor_index) for p in partitions]
    else:
        raise ValueError(f"restart choice must be one of {RESTART_CHOICES}, got {choice!r}")
    return _best(scores), scores


@dataclass
class RestartsResult:
    runs: list                         # every restart's modalities, in restart order (heads trained)
    results: list                      # every restart's DistillResult
    partitions: list                   # every restart's partition (argmax of the answer head) of `rows`
    chosen: int                        # which restart was kept
    labels: torch.Tensor               # the kept restart's partition of every row
    rows: torch.Tensor | None          # the rows the partitions cover (None: all)
    scores: list                       # each restart's score under the choice rule
    agreement: list                    # NMI between the restarts' partitions
    neighbor_seconds: float = 0.0      # the one neighbour search all restarts share

    @property
    def modalities(self) -> list[Modality]:
        return self.runs[self.chosen]

    @property
    def result(self) -> DistillResult:
        return self.results[self.chosen]

    @property
    def seconds(self) -> list[float]:
        return [round(r.seconds, 3) for r in self.results]


def distill_with_restarts(first: list[Modality], pairs: list[tuple[int, int, float]], config: DistillConfig, *,
                          n_clusters: int, restarts: int, seed: int, device, backend: str = "auto",
                          answer: int = 0, choice: str = "consensus", progress: bool = False,
                          desc: str = "distill", agreement_limit: int = AGREEMENT_ROWS) -> RestartsResult:
    """Run `mutual_distillation` `restarts` times and keep one restart (`choose_restart`).

    Restart 0 trains the heads of `first`; restart r > 0 trains fresh heads drawn
    from the seed `restart_seed(seed, r)` on the same features and neighbour lists.
    The partitions compared are those of modality `answer` (the visual head), on
    `agreement_rows` for the consensus and on every row for the neighbour choice
    (which looks up the neighbours' labels).
    """
    if restarts < 1:
        raise ValueError(f"restarts must be >= 1, got {restarts}")
    if choice not in RESTART_CHOICES:
        raise ValueError(f"restart choice must be one of {RESTART_CHOICES}, got {choice!r}")
    # the neighbour lists, computed once here and shared by every restart's modalities
    t0 = time.perf_counter()
    for m in first:
        if m.neighbor_index is None:
            m.neighbor_index = neighbor_index(m.features, config.n_neighbors, backend)
    neighbor_seconds = time.perf_counter() - t0
    runs, results, partitions = [], [], []
    n = first[answer].features.shape[0]
    rows = agreement_rows(n, n_clusters, agreement_limit) if choice == "consensus" else None
    for r in range(restarts):
        modalities = first if r == 0 else fresh_heads(
            first, n_clusters, torch.Generator().manual_seed(restart_seed(seed, r)), device)
        generator = torch.Generator(device=device).manual_seed(restart_seed(seed, r))
        tag = desc if restarts == 1 else f"{desc} restart {r + 1}/{restarts}"
        results.append(mutual_distillation(modalities, pairs, config, generator=generator, backend=backend,
                                           progress=progress, desc=tag))
        runs.append(modalities)
        partitions.append(head_labels(modalities[answer], rows))
    _, agreement = consensus_index(partitions)
    chosen, scores = choose_restart(partitions, runs[0][answer].neighbor_index, choice, agreement)
    labels = partitions[chosen] if rows is None else head_labels(runs[chosen][answer])
    return RestartsResult(runs, results, partitions, chosen, labels, rows, [round(x, 4) for x in scores],
                          [[round(a, 4) for a in row] for row in agreement], neighbor_seconds)
