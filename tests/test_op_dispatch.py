"""What every op's dispatch shares (ops/_backend.py and the schema): devices compared
before any kernel sees a pointer, and fake (meta) kernels that give the real ones'
dtypes and shapes. Each op's own limits and CUDA cases are in its test_op_*.py."""
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from seal_fast import ops

from conftest import needs_cuda, needs_ops, skip_without_kernels


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


