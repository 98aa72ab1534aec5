"""A self-check users can run after installing: every compiled op, forward and
backward, against its pure-PyTorch reference on small random inputs, on each
visible device (`seal-fast info --check`, or `seal_fast.self_test()`).

Until a GPU run has been recorded for a release, this is how a CUDA user learns
whether the kernels agree with the references on their machine before trusting
a result. It takes a few seconds.
"""
from __future__ import annotations

import time
from typing import Callable

import torch

from . import ops
from ._extension import use_compiled

# float32 agreement expected of a fused kernel and its reference on these sizes:
# |compiled - reference| <= TOLERANCE * max(1, |reference|) elementwise over each output
TOLERANCE = 1e-4


def _as_list(out) -> list[torch.Tensor]:
    return list(out) if isinstance(out, (list, tuple)) else [out]


def _max_error(got: list[torch.Tensor], want: list[torch.Tensor]) -> float:
    """Largest difference over matching tensors, relative to max(1, the reference's magnitude)."""
    errors = [float(((x.detach().double() - y.detach().double()).abs() / y.detach().double().abs().clamp_min(1)).max())
              for x, y in zip(got, want) if x.numel()]
    return max(errors, default=0.0)


def _with_grads(fn: Callable, inputs: list[torch.Tensor]):
    """Outputs of fn(*inputs) and the gradients of a fixed random projection of them."""
    inputs = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs]
    out = fn(*inputs)
    flat = [o for o in _as_list(out) if o.is_floating_point()]
    g = torch.Generator().manual_seed(1)
    total = sum((o * torch.randn(o.shape, generator=g).to(o.device, o.dtype)).sum() for o in flat)
    wanted = [t for t in inputs if t.requires_grad]
    grads = torch.autograd.grad(total, wanted, allow_unused=True)
    return out, [torch.zeros_like(t) if gr is None else gr for t, gr in zip(wanted, grads)]


def _scored(X: torch.Tensor, values: torch.Tensor, indices: torch.Tensor) -> list[torch.Tensor]:
    """A top-k answer as (its scores, the float64 cosines of the neighbours it names).
    GEMMs reduce in another order on another device, so near-ties (1e-7 apart) may
    swap indices legitimately; a wrong neighbour still shows as a wrong cosine."""
    Xn = torch.nn.functional.normalize(X.double(), dim=1)
    return [values, (Xn[:, None, :] * Xn[indices]).sum(-1)]


def _cases(device: torch.device):
    """(op name, inputs, compiled fn, reference fn, differentiable) for every op."""
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=g).to(device)

    logits, target = rand(33, 7), torch.softmax(rand(33, 7), 1)
    yield ("soft_cross_entropy", [logits, target],
           lambda z, t: ops.soft_cross_entropy(z, t, backend="compiled"),
           ops.soft_cross_entropy_reference, True)

    Zs, t = [rand(70, 12), rand(70, 5)], torch.softmax(rand(70, 4), 1)
    W0s, b0s = [0.1 * rand(4, 12), 0.1 * rand(4, 5)], [0.1 * rand(4), 0.1 * rand(4)]
    yield ("unrolled_linear_fit", [t],
           lambda tt: ops.unrolled_linear_fit(Zs, tt, W0s, b0s, 5, 0.05, exact=True, backend="compiled")[2],
           lambda tt: ops.unrolled_linear_fit(Zs, tt, W0s, b0s, 5, 0.05, exact=True, backend="reference")[2], True)

    X = rand(150, 16)
    yield ("cosine_topk", [X],
           lambda x: _scored(x, *ops.cosine_topk(x, x, 9, exclude_self=True, backend="compiled")),
           lambda x: _scored(x, *ops.cosine_topk_reference(x, x, 9, exclude_self=True)), False)

    A, B = torch.softmax(rand(64, 6), 1), torch.softmax(rand(64, 6), 1)
    for level in ("instance", "cluster"):
        yield (f"cross_modal_infonce[{level}]", [A, B],
               lambda a, b, lv=level: ops.cross_modal_infonce(a, b, 0.5, lv, backend="compiled"),
               lambda a, b, lv=level: ops.cross_modal_infonce_reference(a, b, 0.5, lv), True)

    P = rand(5, 12, 10)
    edges = ops.patch_knn_reference(P, 4)
    W, a_src, a_dst = rand(10, 7) / 3, rand(7), rand(7)
    for pool in (True, False):
        yield (f"patch_gat[pool={pool}]", [P, W, a_src, a_dst],
               lambda x, w, s, d, pl=pool: ops.patch_gat(x, w, s, d, edges, 0.2, pl, backend="compiled"),
               lambda x, w, s, d, pl=pool: ops.patch_gat_reference(x, w, s, d, edges, 0.2, pl), True)
    yield ("patch_knn", [P], lambda p: ops.patch_knn(p, 4, backend="compiled"),
           lambda p: ops.patch_knn_reference(p, 4), False)


def self_test(devices=None) -> list[dict]:
    """Run every compiled op against its reference on each device (default: CPU and
    every visible GPU). Returns one row per op and device: the largest absolute
    difference of the outputs and of the gradients, and whether both are within
    `TOLERANCE` (indices must match exactly). Devices without compiled kernels
    are reported as skipped."""
    if devices is None:
        devices = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    rows = []
    for name in devices:
        device = torch.device(name)
        if not use_compiled(torch.empty(0, device=device)):
            rows.append({"op": "(all)", "device": str(device), "status": "skipped: no compiled kernels",
                         "ok": None})
            continue
        for op, inputs, compiled, reference, differentiable in _cases(device):
            t0 = time.perf_counter()
            try:
                if differentiable:
                    got, got_grads = _with_grads(compiled, inputs)
                    want, want_grads = _with_grads(reference, inputs)
                    grad_error = _max_error(got_grads, want_grads)
                else:
                    got, want, grad_error = compiled(*inputs), reference(*inputs), 0.0
                got, want = _as_list(got), _as_list(want)
                exact = all(a.equal(b) for a, b in zip(got, want) if not a.is_floating_point())
                error = _max_error([a for a in got if a.is_floating_point()], [b for b in want if b.is_floating_point()])
                ok = error <= TOLERANCE and grad_error <= TOLERANCE and exact
                status = "pass" if ok else "FAIL"
            except Exception as exc:  # a kernel that raises is a failure to report, not to hide
                ok, error, grad_error, status = False, float("nan"), float("nan"), f"FAIL: {exc}".splitlines()[0]
            rows.append({"op": op, "device": str(device), "max_error": error, "max_grad_error": grad_error,
                         "seconds": round(time.perf_counter() - t0, 4), "status": status, "ok": ok})
    return rows


def format_rows(rows: list[dict]) -> str:
    """The rows as a fixed-width table."""
    lines = [f"{'op':<30}{'device':<10}{'max error':>12}{'grad error':>12}  status"]
    for r in rows:
        if r["ok"] is None:
            lines.append(f"{r['op']:<30}{r['device']:<10}{'':>12}{'':>12}  {r['status']}")
        else:
            lines.append(f"{r['op']:<30}{r['device']:<10}{r['max_error']:>12.2e}{r['max_grad_error']:>12.2e}  "
                         f"{r['status']}")
    return "\n".join(lines)


def check_report(devices=None) -> tuple[str, bool]:
    """`seal-fast info --check`: the table of `self_test` with a last line, and whether every op agreed."""
    rows = self_test(devices)
    failed = [r for r in rows if r["ok"] is False]
    last = (f"{len(failed)} of {sum(r['ok'] is not None for r in rows)} op checks failed" if failed
            else "every compiled op agrees with its reference")
    return format_rows(rows) + "\n" + last, not failed
