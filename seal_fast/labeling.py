"""Human labeling: TURTLE's bi-level search for the labeling a linear classifier
reproduces best (Gadetsky et al., 2024), used as is by TURTLE and on the
spatially-aware embeddings by SEAL.

Task encoder: one weight-normalised linear map per space; the labeling is the
mean over spaces of softmax(theta_k z_k). Each outer iteration draws a batch
without replacement, fits fresh linear classifiers to the current (detached)
soft labels with M Adam steps (cold start), then updates the task encoder on

    sum_k CE(w_k z_k (detached), labels) - gamma * sum_k H(mean_batch softmax(theta_k z_k))

which is the first-order hypergradient of the official code. Everything stays
on the device, where the official code gathers each batch on the CPU and copies
it over (what that costs is in docs/performance.md).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from .ops.soft_cross_entropy import soft_cross_entropy
from .ops.unrolled_linear_fit import unrolled_linear_fit
from .rows import by_row_blocks


@dataclass
class LabelingConfig:
    """Settings of the bi-level search; defaults are the official TURTLE ones."""

    iterations: int = 6000      # T, outer iterations
    inner_steps: int = 10       # M, Adam steps of the inner classifiers
    gamma: float = 10.0         # entropy weight
    batch_size: int = 10000     # capped at N
    inner_lr: float = 1e-3
    outer_lr: float = 1e-3
    betas: tuple = (0.9, 0.999)
    exact: bool = False         # hypergradient through the inner Adam steps (TURTLE: first-order)
    # label-free stopping: every `stop_window` iterations the labels of a fixed probe
    # subset are compared with the previous window's; the search stops once at most
    # a `stop_tol` share of them changed in each of `stop_patience` windows in a row
    # (stop_tol = 0: run all `iterations`)
    stop_tol: float = 0.02  # the estimators' default (docs/results.md, "Stopping rule")
    stop_window: int = 100
    stop_patience: int = 3
    probe_size: int = 5000
    # a warm start (human_labeling's init_labels): Adam steps of cross-entropy that fit
    # the task encoder to a given partition before the search
    init_steps: int = 200
    init_lr: float = 1e-2


class TaskEncoder(nn.Module):
    """Per-space weight-normalised linear maps: W_k = g_k * v_k / ||v_k|| (row-wise)."""

    def __init__(self, dims: Sequence[int], n_clusters: int, generator: torch.Generator | None = None,
                 device=None):
        super().__init__()
        self.dims = list(dims)
        self.n_clusters = n_clusters
        self.v = nn.ParameterList()
        self.g = nn.ParameterList()
        self.b = nn.ParameterList()
        for d in self.dims:
            # nn.Linear's default init: U(-1/sqrt(d), 1/sqrt(d)) for weight and bias
            bound = 1.0 / math.sqrt(d)
            v = (torch.rand(n_clusters, d, generator=generator, device=device) * 2 - 1) * bound
            b = (torch.rand(n_clusters, generator=generator, device=device) * 2 - 1) * bound
            self.v.append(nn.Parameter(v))
            self.g.append(nn.Parameter(v.norm(dim=1)))
            self.b.append(nn.Parameter(b))

    def weights(self, k: int) -> torch.Tensor:
        v = self.v[k]
        return self.g[k][:, None] * v / v.norm(dim=1, keepdim=True)

    def forward(self, Zs: Sequence[torch.Tensor]):
        """Returns (labels (B, K): mean over spaces, per-space probabilities)."""
        per_space = [torch.softmax(Z @ self.weights(k).T + self.b[k], dim=1) for k, Z in enumerate(Zs)]
        return sum(per_space) / len(per_space), per_space

    @torch.no_grad()
    def predict_proba(self, Zs: Sequence[torch.Tensor]) -> torch.Tensor:
        """The labeling's probabilities (N, K), computed in row blocks."""
        return by_row_blocks(lambda *zs: self(list(zs))[0], *Zs)

    @torch.no_grad()
    def predict(self, Zs: Sequence[torch.Tensor]) -> torch.Tensor:
        """The labels (N,), block by block: never the N x K probabilities at once."""
        return by_row_blocks(lambda *zs: self(list(zs))[0].argmax(1), *Zs)


def init_inner(dims, n_clusters, generator, device, dtype=torch.float32):
    """Fresh inner classifiers, nn.Linear's default init (cold start)."""
    W0s, b0s = [], []
    for d in dims:
        bound = 1.0 / math.sqrt(d)
        W0s.append((torch.rand(n_clusters, d, generator=generator, device=device, dtype=dtype) * 2 - 1) * bound)
        b0s.append((torch.rand(n_clusters, generator=generator, device=device, dtype=dtype) * 2 - 1) * bound)
    return W0s, b0s


def outer_loss(encoder: TaskEncoder, Zb, W0s, b0s, config: LabelingConfig, backend: str = "auto"):
    """One outer objective: fit inner classifiers from (W0s, b0s) to the detached
    soft labels, then score the labels. Returns (loss, pred_error, entropy)."""
    labels, per_space = encoder(Zb)
    # first-order (TURTLE): the classifiers see detached labels and their logits are
    # constants of the outer loss; exact: both stay differentiable in the labels
    _, _, logits = unrolled_linear_fit(Zb, labels, W0s, b0s, config.inner_steps, config.inner_lr,
                                       tuple(config.betas), exact=config.exact, backend=backend)
    if not config.exact:
        logits = [l.detach() for l in logits]
    pred_error = sum(soft_cross_entropy(l, labels, backend=backend)[0].mean() for l in logits)
    entropy = sum(torch.special.entr(p.mean(0)).sum() for p in per_space)
    return pred_error - config.gamma * entropy, pred_error, entropy


@dataclass
class LabelingResult:
    encoder: TaskEncoder
    pred_error: float
    entropy: float
    seconds: float
    seconds_per_iteration: float
    iterations: int                 # run (fewer than asked when the stopping rule fired)
    stopped_early: bool
    # per window: (iterations done, share of probe labels changed since the last window or
    # the start, mean objective)
    trace: list = field(default_factory=list)
    init_seconds: float = 0.0              # the warm start's fit to init_labels (in `seconds` too)
    init_agreement: float | None = None    # share of rows labeled as init_labels after it


class _ProbeLabels:
    """The labels of a fixed random subset of rows, to see when the labeling settles.
    Drawn from a generator of its own, so watching never changes the search."""

    def __init__(self, Zs, size: int, seed: int):
        n = Zs[0].shape[0]
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1))[:min(size, n)].to(Zs[0].device)
        self.Zs = [Z.index_select(0, idx) for Z in Zs]
        self.last = None

    def changed(self, encoder: TaskEncoder) -> float:
        labels = encoder.predict(self.Zs)
        share = 1.0 if self.last is None else float((labels != self.last).float().mean())
        self.last = labels
        return share


class StopRule:
    """The label-free stopping rule, fed one window at a time: stop once at most a
    `tol` share of the probe changed label in `patience` windows in a row (tol 0: never)."""

    def __init__(self, tol: float, patience: int):
        self.tol, self.patience, self.settled = tol, patience, 0

    def update(self, changed: float) -> bool:
        """Record a window's share of changed probe labels; True when the search should stop."""
        self.settled = self.settled + 1 if changed <= self.tol else 0
        return self.tol > 0 and self.settled >= self.patience


def fit_to_partition(encoder: TaskEncoder, Zs: Sequence[torch.Tensor], labels: torch.Tensor, config: LabelingConfig,
                     generator: torch.Generator) -> float:
    """Fit the task encoder's labeling to the partition `labels` (N,): `init_steps` Adam
    steps of cross-entropy on batches, so that the search starts from that partition
    instead of a random one. Returns the share of rows the encoder then labels as given."""
    n = Zs[0].shape[0]
    batch = min(config.batch_size, n)
    optimizer = torch.optim.Adam(encoder.parameters(), lr=config.init_lr)
    for _ in range(config.init_steps):
        idx = torch.randperm(n, generator=generator, device=Zs[0].device)[:batch]
        probs, _ = encoder([Z.index_select(0, idx) for Z in Zs])
        loss = torch.nn.functional.nll_loss(torch.log(probs.clamp_min(1e-12)), labels.index_select(0, idx))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return float((encoder.predict(list(Zs)) == labels).float().mean())


def human_labeling(Zs: Sequence[torch.Tensor], n_clusters: int, config: LabelingConfig = LabelingConfig(),
                   *, seed: int = 0, backend: str = "auto", progress: bool = False, desc: str = "labeling",
                   on_window: Callable[[int, TaskEncoder], None] | None = None,
                   init_labels: torch.Tensor | None = None) -> LabelingResult:
    """Run the bi-level search on device-resident features `Zs` (list of (N, d_k)),
    from a random task encoder or, given `init_labels` (N,), from one fitted to that
    partition (`fit_to_partition`). `on_window(iterations_done, encoder)` is called
    after every `stop_window` iterations."""
    device = Zs[0].device
    n = Zs[0].shape[0]
    batch = min(config.batch_size, n)
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    encoder = TaskEncoder([Z.shape[1] for Z in Zs], n_clusters, generator, device)
    t_init = time.perf_counter()
    init_agreement = None
    if init_labels is not None:
        init_agreement = fit_to_partition(encoder, Zs, init_labels.to(device), config, generator)
    t_init = time.perf_counter() - t_init
    optimizer = torch.optim.Adam(encoder.parameters(), lr=config.outer_lr, betas=tuple(config.betas))
    pred_error = entropy = torch.zeros((), device=device)
    probe = _ProbeLabels(Zs, config.probe_size, seed)
    # the first window is compared with the start: a warm start that the search keeps
    # counts as settled from the first window (a random start changes most labels)
    probe.changed(encoder)
    rule = StopRule(config.stop_tol, config.stop_patience)
    trace, window_loss, done = [], 0.0, 0
    t0 = time.perf_counter()
    bar = tqdm(range(config.iterations), desc=desc, disable=not progress, mininterval=1.0)
    for it in bar:
        if batch < n:
            idx = torch.randperm(n, generator=generator, device=device)[:batch]
            Zb = [Z.index_select(0, idx) for Z in Zs]
        else:
            Zb = list(Zs)
        W0s, b0s = init_inner(encoder.dims, n_clusters, generator, device)
        loss, pred_error, entropy = outer_loss(encoder, Zb, W0s, b0s, config, backend)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        done = it + 1
        window_loss = window_loss + loss.detach()  # a tensor: no device sync per iteration
        if done % config.stop_window == 0:
            changed = probe.changed(encoder)
            trace.append((done, round(changed, 5), round(float(window_loss) / config.stop_window, 5)))
            window_loss = 0.0
            stop = rule.update(changed)
            if on_window is not None:
                on_window(done, encoder)
            if progress:
                bar.set_postfix(pred_error=f"{float(pred_error.detach()):.3f}", entropy=f"{float(entropy.detach()):.3f}",
                                changed=f"{changed:.4f}")
            if stop:
                break
    bar.close()
    seconds = time.perf_counter() - t0
    return LabelingResult(encoder, float(pred_error.detach()), float(entropy.detach()), seconds + t_init,
                          seconds / max(1, done), done, done < config.iterations, trace,
                          init_seconds=t_init, init_agreement=init_agreement)
