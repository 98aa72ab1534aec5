"""Behaviour the CUDA kernels must share with the CPU ones, checked where a CPU can
see it (argument checks that run before any kernel, the shared limits, the
scratch plan, fake kernels), plus CUDA parity cases that run where a GPU exists."""
import numpy as np
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from seal_fast import ops
from seal_fast.ops.patch_gat import fits_on_chip, shared_memory_bytes
from seal_fast.ops.patch_knn import MAX_NEIGHBORS

from conftest import CUDA, devices, needs_cuda, needs_ops, skip_without_kernels


# --- patch_knn: k = 0 and one limit on every backend -----------------------------------------
@needs_ops
@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("backend", ["compiled", "reference"])
def test_patch_knn_k0_is_the_self_loop(device, backend):
    skip_without_kernels(device)
    P = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(0)).to(device)
    edges = ops.patch_knn(P, 0, backend=backend)
    assert edges.shape == (3, 5, 1)
    assert (edges.cpu()[..., 0] == torch.arange(5)).all()


@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_patch_knn_limit_is_the_same_everywhere(backend):
    P = torch.randn(2, 40, 4)
    assert ops.patch_knn(P, MAX_NEIGHBORS, backend=backend).shape == (2, 40, MAX_NEIGHBORS + 1)
    with pytest.raises(ValueError, match=f"expected an integer in \\[0, {MAX_NEIGHBORS}\\]"):
        ops.patch_knn(P, MAX_NEIGHBORS + 1, backend=backend)
    with pytest.raises(ValueError, match="integer"):
        ops.patch_knn(P, -1, backend=backend)


@needs_ops
def test_cosine_topk_has_no_k_limit():
    """The CUDA kernel once stopped at k = 1024 where the CPU had no limit; now neither has one."""
    X = torch.randn(1500, 8, generator=torch.Generator().manual_seed(1))
    v, i = ops.cosine_topk(X, X, 1400, exclude_self=True, backend="compiled")
    rv, ri = ops.cosine_topk_reference(X, X, 1400, exclude_self=True)
    torch.testing.assert_close(v, rv, rtol=1e-5, atol=1e-5)
    assert (i == ri).float().mean() > 0.999


# --- device mismatches are refused before any kernel sees a pointer ------------------------------
def test_device_mismatch_is_refused_before_dispatch():
    """`meta` stands in for a second device on a machine without a GPU: the wrappers
    must compare devices themselves, since a CUDA kernel given a host pointer would
    fault the context."""
    X, other = torch.randn(10, 4), torch.randn(10, 4, device="meta")
    with pytest.raises(ValueError, match="R is on meta but Q is on cpu"):
        ops.cosine_topk(X, other, 3)
    P = torch.randn(2, 6, 4)
    edges = ops.patch_knn_reference(P, 2)
    W, a = torch.randn(4, 3), torch.randn(3)
    with pytest.raises(ValueError, match="nbr is on meta"):
        ops.patch_gat(P, W, a, a, edges.to("meta"))
    with pytest.raises(ValueError, match="W is on meta"):
        ops.patch_gat(P, W.to("meta"), a, a, edges)
    t = torch.softmax(torch.randn(10, 3), 1)
    with pytest.raises(ValueError, match=r"Zs\[1\] is on meta"):
        ops.unrolled_linear_fit([X, other], t, [torch.zeros(3, 4)] * 2, [torch.zeros(3)] * 2, 2, 1e-3)
    with pytest.raises(ValueError, match="target is on meta"):
        ops.soft_cross_entropy(t, t.to("meta"))
    with pytest.raises(ValueError, match="B is on meta"):
        ops.cross_modal_infonce(t, t.to("meta"), 0.5)


# --- non-finite rows ------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_cosine_topk_refuses_non_finite_rows(backend):
    X = torch.randn(20, 5)
    X[13, 2] = float("nan")
    with pytest.raises(ValueError, match="Q row 13 contains NaN or inf"):
        ops.cosine_topk(X, X, 3, exclude_self=True, backend=backend)
    R = torch.randn(30, 5)
    R[29, 0] = float("inf")
    with pytest.raises(ValueError, match="R row 29 contains NaN or inf"):
        ops.cosine_topk(torch.randn(4, 5), R, 3, backend=backend)


@needs_ops
def test_cosine_topk_kernel_never_returns_a_placeholder():
    """Called directly (no wrapper checks), a NaN row still gets valid indices."""
    X = torch.randn(50, 6, generator=torch.Generator().manual_seed(2))
    X[7] = float("nan")
    _, i = torch.ops.seal_fast.cosine_topk(X, X, 5, True)
    assert int(i.min()) >= 0 and int(i.max()) < 50


# --- the CUDA linear fit's scratch does not grow with the batch ---------------------------------
@needs_ops
def test_linear_fit_cuda_scratch_is_independent_of_the_batch():
    from seal_fast import _extension

    scratch = _extension._C.linear_fit_cuda_scratch_bytes
    dims, K, sms = [768, 1536], 1000, 132  # ImageNet's 2-space setting on an H100
    slot = (K * sum(dims) + 2 * K) * 4      # one partial gradient of every space, float32
    full = scratch(1_281_167, K, dims, sms)
    assert full == scratch(40_000, K, dims, sms) == sms * slot  # a fixed number of slots beyond 132 tiles
    assert scratch(10_000, K, dims, sms) == 79 * slot           # fewer tiles than slots: one slot a tile
    assert scratch(200, K, dims, sms) == 2 * slot
    assert full < 1.3e9
    per_tile = -(-1_281_167 // 128) * slot  # the old plan, one slot per 128-row tile: ~92 GB
    assert per_tile > 70 * full


# --- shared memory of the GAT kernel: a graph too large for a block goes to the reference ----------
def test_patch_gat_large_graphs_do_not_fit_on_chip():
    h100, sm86 = 232_448, 101_376  # bytes a block may opt in to
    assert fits_on_chip(49, 9, torch.float32, sm86) and fits_on_chip(256, 9, torch.float32, h100)
    assert fits_on_chip(1369, 9, torch.float32, h100)      # DINOv2 patch tokens at 518 px: just
    assert not fits_on_chip(1600, 9, torch.float32, h100)  # at 560 px: no
    assert not fits_on_chip(1024, 9, torch.float32, sm86)  # DINOv2 at 448 px on an RTX 30/40
    assert not fits_on_chip(400, 9, torch.float64, sm86)


@needs_ops
def test_patch_gat_shared_memory_formula_is_the_kernels():
    """The Python copy that routes large graphs to the reference must equal what the
    CUDA kernel asks for (csrc/cuda/patch_gat_plan.h, the same function the kernel calls)."""
    from seal_fast import _extension

    for M, k in ((49, 9), (81, 9), (1369, 9), (0, 1), (7, 33)):
        for dtype in (torch.float32, torch.float64):
            element = torch.empty((), dtype=dtype).element_size()
            assert shared_memory_bytes(M, k, dtype) == _extension._C.patch_gat_cuda_smem_bytes(M, k, element)


# --- fake (meta) kernels give the dtypes the real kernels return -----------------------------------
@needs_ops
def test_fake_kernels_match_the_real_dtypes_and_shapes():
    g = torch.Generator().manual_seed(3)
    Zs = [torch.randn(20, 6, generator=g), torch.randn(20, 3, generator=g)]
    t = torch.softmax(torch.randn(20, 4, generator=g), 1)
    W0s, b0s = [torch.zeros(4, 6), torch.zeros(4, 3)], [torch.zeros(4), torch.zeros(4)]
    P = torch.randn(2, 7, 5, generator=g)
    edges = ops.patch_knn_reference(P, 3)
    W, a = torch.randn(5, 4, generator=g), torch.randn(4, generator=g)
    calls = [
        lambda *x: torch.ops.seal_fast.unrolled_linear_fit(*x, 2, 1e-3, 0.9, 0.999, 1e-8), (Zs, t, W0s, b0s),
        lambda *x: torch.ops.seal_fast.cosine_topk(*x, 3, True), (Zs[0], Zs[0]),
        lambda *x: torch.ops.seal_fast.patch_gat(*x, 0.2, True), (P, W, a, a, edges),
        lambda *x: torch.ops.seal_fast.patch_knn(*x, 3), (P,),
        lambda *x: torch.ops.seal_fast.soft_cross_entropy(*x), (t, t),
        lambda *x: torch.ops.seal_fast.cross_modal_infonce(*x, 0.5, 0, True), (t, t),
    ]
    for fn, args in zip(calls[::2], calls[1::2]):
        real = fn(*args)
        with FakeTensorMode() as mode:
            fake = fn(*[[mode.from_tensor(x) for x in a] if isinstance(a, list) else mode.from_tensor(a)
                        for a in args])
        flat_real = [x for o in real for x in (o if isinstance(o, (list, tuple)) else [o])]
        flat_fake = [x for o in fake for x in (o if isinstance(o, (list, tuple)) else [o])]
        assert [(x.dtype, tuple(x.shape)) for x in flat_fake] == [(x.dtype, tuple(x.shape)) for x in flat_real]


def test_linear_fit_weights_must_have_the_targets_dtype():
    t = torch.softmax(torch.randn(10, 3), 1)
    with pytest.raises(ValueError, match="must have the targets' dtype"):
        ops.unrolled_linear_fit([torch.randn(10, 4)], t, [torch.zeros(3, 4, dtype=torch.float64)], [torch.zeros(3)],
                                2, 1e-3)


# --- the one-formula patch kNN: the CPU and CUDA kernels compute the same float sums ---------------
def _near_ties():
    g = torch.Generator().manual_seed(4)
    base = torch.randn(4, 30, 16, generator=g)
    P = base + 1e-6 * torch.randn(4, 30, 16, generator=g)  # many scores within rounding of each other
    P[:, 10:20] = base[:, :10] * 2.0                      # exact ties (a power of two scales exactly)
    return P


@needs_ops
def test_patch_knn_exact_ties_by_scale():
    P = torch.randn(4, 30, 16, generator=torch.Generator().manual_seed(4))
    P[:, 10:20], P[:, 20:] = P[:, :10] * 2.0, P[:, :10] * 4.0  # powers of two scale exactly: three-way ties
    assert torch.equal(ops.patch_knn(P, 12, backend="compiled"), ops.patch_knn_reference(P, 12))


# --- CUDA parity where a GPU exists ---------------------------------------------------------------
@needs_ops
@needs_cuda
def test_cuda_cosine_topk_is_exact_fp32_even_with_tf32_allowed():
    skip_without_kernels("cuda")
    X = torch.randn(3000, 64, generator=torch.Generator().manual_seed(5))
    rv, ri = ops.cosine_topk_reference(X, X, 20, exclude_self=True)  # CPU float32
    before = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = True
        v, i = ops.cosine_topk(X.cuda(), X.cuda(), 20, exclude_self=True, backend="compiled")
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
    torch.testing.assert_close(v.cpu(), rv, rtol=0, atol=1e-5)
    assert (i.cpu() == ri).float().mean() > 0.999


@needs_ops
@needs_cuda
def test_cuda_linear_fit_many_spaces_and_large_batches():
    """More spaces than one launch holds (SEAL labels on phi + 3 restarts per space),
    and a batch of many tiles, against the CPU kernel."""
    skip_without_kernels("cuda")
    g = torch.Generator().manual_seed(6)
    B, K, dims = 40_000, 12, [32, 16, 8, 24, 40, 12]
    Zs = [torch.randn(B, d, generator=g) for d in dims]
    t = torch.softmax(torch.randn(B, K, generator=g), 1)
    W0s = [0.1 * torch.randn(K, d, generator=g) for d in dims]
    b0s = [torch.zeros(K) for _ in dims]
    cpu = ops.unrolled_linear_fit(Zs, t, W0s, b0s, 5, 1e-2, backend="compiled")
    torch.cuda.reset_peak_memory_stats()
    gpu = ops.unrolled_linear_fit([z.cuda() for z in Zs], t.cuda(), [w.cuda() for w in W0s],
                                  [b.cuda() for b in b0s], 5, 1e-2, backend="compiled")
    for a, b in zip(cpu[0] + cpu[1], gpu[0] + gpu[1]):
        torch.testing.assert_close(b.cpu(), a, rtol=1e-4, atol=1e-5)
    from seal_fast import _extension

    sms = torch.cuda.get_device_properties(0).multi_processor_count
    plan = _extension._C.linear_fit_cuda_scratch_bytes(B, K, dims, sms)
    inputs = sum(z.numel() for z in Zs) * 4 + 2 * B * K * 4 * len(dims)
    assert torch.cuda.max_memory_allocated() < inputs * 2 + plan + (64 << 20)


@needs_ops
@needs_cuda
def test_cuda_patch_gat_large_graph_falls_back():
    skip_without_kernels("cuda")
    limit = torch.cuda.get_device_properties(0).shared_memory_per_block_optin
    M = next(m for m in range(64, 8192, 64) if not fits_on_chip(m, 9, torch.float32, limit))
    g = torch.Generator().manual_seed(7)
    P = torch.randn(2, M, 8, generator=g)
    edges = ops.patch_knn_reference(P, 8)
    W, a, b = torch.randn(8, 4, generator=g), torch.randn(4, generator=g), torch.randn(4, generator=g)
    out = ops.patch_gat(P.cuda(), W.cuda(), a.cuda(), b.cuda(), edges.cuda())  # auto: the reference path
    torch.testing.assert_close(out.cpu(), ops.patch_gat_reference(P, W, a, b, edges), rtol=1e-4, atol=1e-5)
    with pytest.raises(RuntimeError, match="shared memory"):
        ops.patch_gat(P.cuda(), W.cuda(), a.cuda(), b.cuda(), edges.cuda(), backend="compiled")


@needs_ops
@needs_cuda
def test_cuda_patch_knn_orders_near_ties_as_the_cpu_kernel():
    skip_without_kernels("cuda")
    P = _near_ties()
    assert torch.equal(ops.patch_knn(P.cuda(), 12, backend="compiled").cpu(), ops.patch_knn(P, 12, backend="compiled"))


@needs_ops
@needs_cuda
def test_cuda_device_mismatch_raises_cleanly_and_the_context_survives():
    skip_without_kernels("cuda")
    P = torch.randn(2, 6, 4, device="cuda")
    edges = ops.patch_knn_reference(P.cpu(), 2)  # on the host
    W, a = torch.randn(4, 3, device="cuda"), torch.randn(3, device="cuda")
    with pytest.raises(RuntimeError, match="one device"):
        torch.ops.seal_fast.patch_gat(P, W, a, a, edges, 0.2, True)  # past the wrapper: the kernel's own check
    assert float(torch.ones(3, device="cuda").sum()) == 3.0


def test_self_test_passes_on_this_machine():
    from seal_fast import self_test

    rows = self_test()
    assert rows and all(r["ok"] is not False for r in rows), [r for r in rows if r["ok"] is False]
    assert {r["op"] for r in rows if r["device"] == "cpu"} >= {"cosine_topk", "patch_knn", "unrolled_linear_fit"} \
        or rows[0]["ok"] is None
    assert np.isfinite([r["max_error"] for r in rows if r["ok"]]).all()
