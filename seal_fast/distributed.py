"""Scale-out on torch.distributed: the process group torchrun sets up, and the
neighbour search sharded over it.

Everything else stays single-process: under torchrun each rank runs the same
distillation and labeling (same seed, same data), so the result equals a
single-process run; only the two stages that outgrow one machine first are
split: embedding (each rank embeds its share of the images, see `embed`) and the
cross-modal top-k search, whose cost grows as N^2 d.
"""
from __future__ import annotations

import datetime as _dt
import os

import torch
import torch.distributed as dist

from .errors import SealFastError
from .ops.cosine_topk import cosine_topk


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher that sets the env)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def init(device="auto", timeout_s: float = 1800) -> tuple[int, int, torch.device]:
    """Join the process group torchrun described in the environment (NCCL on CUDA,
    gloo on CPU) and return (rank, world size, this rank's device: the GPU of its
    LOCAL_RANK, or the CPU). Outside torchrun: (0, 1, the device), no group is made."""
    kind = torch.device("cuda" if torch.cuda.is_available() else "cpu") if device in (None, "auto") \
        else torch.device(device)
    cuda = kind.type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SealFastError(f"device {device!r} requested but CUDA is not available")
    if not launched():
        return 0, 1, kind
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", local_rank + 1))
    if cuda and local_world > torch.cuda.device_count():
        # one GPU per rank, checked on every rank alike (so rank 0 says it and none waits for the others):
        # otherwise the extra ranks die in set_device and the rest wait for them
        raise SealFastError(f"torchrun started {local_world} ranks on this machine but it has "
                            f"{torch.cuda.device_count()} CUDA device(s): use --nproc-per-node "
                            f"{torch.cuda.device_count()} or --device cpu")
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", timeout=_dt.timedelta(seconds=timeout_s))
    return dist.get_rank(), dist.get_world_size(), device


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather(obj) -> list:
    """`obj` of every rank, in rank order ([obj] without a process group)."""
    if not active():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def on_rank0_then_share(fn):
    """Run `fn` on rank 0 only, then let every rank continue together: a SealFastError
    raised there is raised on every rank (so none waits forever for the others).
    Returns fn's result on rank 0, None elsewhere; without a process group, just fn()."""
    if not active():
        return fn()
    result, error = None, None
    if dist.get_rank() == 0:
        try:
            result = fn()
        except SealFastError as exc:
            error = str(exc)
    shared = [error]
    dist.broadcast_object_list(shared, src=0)
    if shared[0] is not None:
        raise SealFastError(shared[0])
    return result


def shard(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rows [lo, hi) of rank `rank` when N rows are split into contiguous, near-equal shares."""
    return n * rank // world_size, n * (rank + 1) // world_size


def _merge(values: torch.Tensor, indices: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the k best of the candidates: higher value first, lower index among ties
    (the order of the single-process op). Sorting by index, then stably by value, gives it."""
    order = torch.argsort(indices, dim=1, stable=True)
    values, indices = values.gather(1, order), indices.gather(1, order)
    order = torch.argsort(values, dim=1, descending=True, stable=True)[:, :k]
    return values.gather(1, order), indices.gather(1, order)


def sharded_cosine_topk(X: torch.Tensor, k: int, *, exclude_self: bool = True, backend: str = "auto",
                        group=None) -> tuple[torch.Tensor, torch.Tensor]:
    """`cosine_topk(X, X, k, exclude_self)` over a process group: every rank passes the
    same X (N, d); rank r searches its share of reference rows for all N queries with
    the fused op, and the candidates of all ranks are merged into the global top-k
    (ties: the lower global index, as single-process). Every rank gets the whole
    (values, indices) result. Without a process group it is the plain op.

    The reference rows of one rank are N/world_size, so the N x N/world_size products
    are split across the ranks (and their devices); the merge moves N * k candidates.
    """
    if not active():
        return cosine_topk(X, X, k, exclude_self, backend=backend)
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    n = X.shape[0]
    lo, hi = shard(n, rank, world)
    width = k + 1 if exclude_self else k  # a shard may spend one slot on the row itself
    local_k = min(width, hi - lo)
    if local_k > 0:
        values, local = cosine_topk(X, X[lo:hi], local_k, False, backend=backend)
        indices = local + lo
        if exclude_self:  # a row's own index can only come from the shard that holds it
            own = indices == torch.arange(n, device=X.device)[:, None]
            values = values.masked_fill(own, float("-inf"))
    else:
        values = torch.empty(n, 0, device=X.device)
        indices = torch.empty(n, 0, dtype=torch.long, device=X.device)
    # every rank contributes `width` columns, padded with (-inf, N) placeholders that never win
    pad = width - values.shape[1]
    values = torch.cat([values, values.new_full((n, pad), float("-inf"))], 1)
    indices = torch.cat([indices, indices.new_full((n, pad), n)], 1)
    all_values = [torch.empty_like(values) for _ in range(world)]
    all_indices = [torch.empty_like(indices) for _ in range(world)]
    dist.all_gather(all_values, values.contiguous(), group=group)
    dist.all_gather(all_indices, indices.contiguous(), group=group)
    values, indices = _merge(torch.cat(all_values, 1), torch.cat(all_indices, 1), k)
    return values, indices
