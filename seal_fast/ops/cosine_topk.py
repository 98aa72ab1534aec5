"""Top-k cosine neighbours without the N x N similarity matrix."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .._extension import compiled_available
from ._backend import check_finite_rows, check_one_device, pick


def cosine_topk_reference(Q: torch.Tensor, R: torch.Tensor, k: int, exclude_self: bool = False,
                          block: int = 1024):
    """Oracle: chunked `mm` + stable sort. Ties resolve to the lower index.

    Q (Nq, d), R (Nr, d); with exclude_self (Q's rows are R's first rows), row i
    never lists itself. Returns (values (Nq, k) float32, indices (Nq, k) int64).
    """
    Qn = F.normalize(Q.float(), dim=1)
    Rn = F.normalize(R.float(), dim=1)
    vals, idxs = [], []
    for s in range(0, Qn.shape[0], block):
        sim = Qn[s:s + block] @ Rn.T
        if exclude_self:
            rows = torch.arange(sim.shape[0], device=sim.device)
            sim[rows, rows + s] = float("-inf")
        # a stable sort of descending scores puts the lower index first among ties
        v, i = torch.sort(sim, dim=1, descending=True, stable=True)
        vals.append(v[:, :k])
        idxs.append(i[:, :k])
    return torch.cat(vals), torch.cat(idxs)


def _check(Q, R, k, exclude_self):
    if Q.dim() != 2 or R.dim() != 2 or Q.shape[1] != R.shape[1]:
        raise ValueError(f"Q and R must be (Nq, d) and (Nr, d); got {tuple(Q.shape)} and {tuple(R.shape)}")
    available = R.shape[0] - 1 if exclude_self else R.shape[0]
    if not 1 <= k <= available:
        raise ValueError(f"k={k} must be in [1, {available}] for {R.shape[0]} reference rows"
                         f"{' (self excluded)' if exclude_self else ''}")
    if exclude_self and Q.shape[0] > R.shape[0]:
        raise ValueError("exclude_self needs Q's rows to be R's first rows")
    check_one_device("cosine_topk", Q=Q, R=R)
    # a NaN row has no neighbours by cosine: refuse it rather than return arbitrary ones
    check_finite_rows("cosine_topk", "Q", Q)
    if R is not Q:
        check_finite_rows("cosine_topk", "R", R)


def cosine_topk(Q, R, k: int, exclude_self: bool = False, *, backend: str = "auto"):
    r"""The k most cosine-similar rows of R for every row of Q.

    Args:
        Q: (Nq, d) queries. R: (Nr, d) references (may be Q itself).
        k: neighbours per row.
        exclude_self: Q's rows are R's first rows; row i never lists itself.
        backend: ``"auto"``, ``"compiled"`` or ``"reference"``.

    Returns:
        ``(values, indices)``, both (Nq, k), best first; ties go to the lower
        index. Values are float32 whatever the input dtype: rows are normalised
        in float32 and multiplied in exact float32 (no TF32 on GPUs, whatever
        torch's matmul precision setting), so every backend ranks near-ties
        alike. The compiled kernels never allocate the Nq x Nr matrix (memory
        O(Nq k)). On CPU, passing the same tensor as Q and R (a self-search)
        lets the kernel multiply only the upper triangle of the similarity
        tiles. Not differentiable. Rows holding NaN or inf are refused.

    Example:
        >>> X = torch.randn(1000, 64)
        >>> vals, idx = cosine_topk(X, X, 10, exclude_self=True)
    """
    _check(Q, R, k, exclude_self)
    if pick(backend, Q, R):
        return torch.ops.seal_fast.cosine_topk(Q, R, int(k), bool(exclude_self))
    return cosine_topk_reference(Q, R, k, exclude_self)


if compiled_available():

    @torch.library.register_fake("seal_fast::cosine_topk")
    def _(Q, R, k, exclude_self):
        torch._check(Q.dim() == 2 and R.dim() == 2, lambda: "Q and R must be 2-D")
        return (Q.new_empty(Q.shape[0], k, dtype=torch.float32),
                Q.new_empty(Q.shape[0], k, dtype=torch.long))
