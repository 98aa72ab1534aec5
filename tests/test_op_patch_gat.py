import pytest
import torch

from seal_fast import ops
from seal_fast._extension import compiled_available
from seal_fast.ops import patch_gat, patch_gat_reference, patch_knn_reference
from seal_fast.ops.patch_gat import fits_on_chip, shared_memory_bytes
from seal_fast.spatial import SpatialEncoder

from conftest import devices, needs_cuda, needs_ops, skip_without_kernels


def sample(device, dtype, B=6, M=12, c=10, C=7, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(B, M, c, generator=g, dtype=torch.float64)
    W = torch.randn(c, C, generator=g, dtype=torch.float64) / c ** 0.5
    a_src = torch.randn(C, generator=g, dtype=torch.float64)
    a_dst = torch.randn(C, generator=g, dtype=torch.float64)
    nbr = patch_knn_reference(X, k).to(device)
    return [t.to(device, dtype) for t in (X, W, a_src, a_dst)], nbr


@needs_ops
@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("pool", [True, False])
@pytest.mark.parametrize("B,M,c,C,k", [(6, 12, 10, 7, 4), (3, 49, 40, 33, 8), (1, 2, 3, 1, 1)])
def test_matches_reference(device, dtype, pool, B, M, c, C, k):
    skip_without_kernels(device)
    (X, W, a_s, a_d), nbr = sample(device, dtype, B, M, c, C, k, seed=B + M)
    args = [t.clone().requires_grad_() for t in (X, W, a_s, a_d)]
    out = patch_gat(*args, nbr, 0.2, pool, backend="compiled")
    grads = torch.autograd.grad((out * torch.linspace(-1, 1, out.numel(), device=device,
                                                      dtype=dtype).view_as(out)).sum(), args)
    ref_args = [t.clone().requires_grad_() for t in (X, W, a_s, a_d)]
    ref = patch_gat_reference(*ref_args, nbr, 0.2, pool)
    ref_grads = torch.autograd.grad((ref * torch.linspace(-1, 1, ref.numel(), device=device,
                                                          dtype=dtype).view_as(ref)).sum(), ref_args)
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out, ref, **tol)
    # float32 weight gradients sum B*M*k products in another order than the reference's
    # GEMM (which also changes with the thread count): 1e-5 absolute is below that noise
    grad_tol = dict(rtol=1e-4, atol=5e-5) if dtype == torch.float32 else tol
    for gg, rr in zip(grads, ref_grads):
        torch.testing.assert_close(gg, rr, **grad_tol)


@needs_ops
@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("pool", [True, False])
def test_gradcheck(device, pool):
    skip_without_kernels(device)
    (X, W, a_s, a_d), nbr = sample(device, torch.float64, 2, 6, 4, 3, 2, seed=5)
    args = [t.requires_grad_() for t in (X, W, a_s, a_d)]
    assert torch.autograd.gradcheck(lambda *t: patch_gat(*t, nbr, 0.2, pool, backend="compiled"), args)


@pytest.mark.parametrize("pool", [True, False])
def test_matches_torch_geometric_gatconv(pool):
    """Same graph and weights through PyG's GATConv (heads=1, no bias, self loops in the lists)."""
    pyg = pytest.importorskip("torch_geometric.nn")
    (X, W, a_s, a_d), nbr = sample("cpu", torch.float64, 4, 16, 8, 5, 3, seed=7)
    B, M, c = X.shape
    k = nbr.shape[2]
    conv = pyg.GATConv(c, W.shape[1], heads=1, bias=False, add_self_loops=False, negative_slope=0.2).double()
    with torch.no_grad():
        conv.lin.weight.copy_(W.T)
        conv.att_src.copy_(a_s.view(1, 1, -1))
        conv.att_dst.copy_(a_d.view(1, 1, -1))
    offsets = (torch.arange(B) * M).view(B, 1, 1)
    src = (nbr + offsets).reshape(-1)
    dst = (torch.arange(M).view(1, M, 1).expand(B, M, k) + offsets).reshape(-1)
    x = X.reshape(B * M, c).clone().requires_grad_()
    ref = conv(x, torch.stack([src, dst])).view(B, M, -1)
    ref = ref.mean(1) if pool else ref
    Xg = X.clone().requires_grad_()
    for backend in ["reference"] + (["compiled"] if compiled_available() else []):
        out = patch_gat(Xg, W, a_s, a_d, nbr, 0.2, pool, backend=backend)
        torch.testing.assert_close(out, ref)
        gx, = torch.autograd.grad(out.sum(), Xg)
        rx, = torch.autograd.grad(ref.sum(), x, retain_graph=True)
        torch.testing.assert_close(gx.reshape(B * M, c), rx)


@needs_ops
def test_opcheck():
    (X, W, a_s, a_d), nbr = sample("cpu", torch.float32, seed=9)
    args = [t.requires_grad_() for t in (X, W, a_s, a_d)]
    torch.library.opcheck(torch.ops.seal_fast.patch_gat.default, (*args, nbr, 0.2, True))


def test_bad_inputs():
    (X, W, a_s, a_d), nbr = sample("cpu", torch.float32)
    with pytest.raises(ValueError, match="W must be"):
        patch_gat(X, W.T, a_s, a_d, nbr)
    with pytest.raises(ValueError, match="int64"):
        patch_gat(X, W, a_s, a_d, nbr.int())


def test_spatial_encoder_needs_enough_patches():
    from seal_fast.errors import SealFastError

    enc = SpatialEncoder(10, 4, patch_neighbors=8)
    with pytest.raises(SealFastError, match="k\\+1=9"):
        enc(torch.randn(2, 5, 10))
    with pytest.raises(SealFastError, match=r"\(B, M, 10\)"):
        enc(torch.randn(2, 5, 11))


@needs_ops
@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("backend", ["compiled", "reference"])
def test_an_image_without_patches_pools_to_zeros(device, backend):
    """M = 0: the mean over no nodes is 0 on every backend (it was NaN on CUDA only)."""
    skip_without_kernels(device)
    X = torch.randn(3, 0, 4, device=device)
    nbr = torch.zeros(3, 0, 2, dtype=torch.int64, device=device)
    W, a = torch.randn(4, 5, device=device), torch.randn(5, device=device)
    out = patch_gat(X, W, a, a, nbr, pool=True, backend=backend)
    assert out.shape == (3, 5) and bool((out == 0).all())


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
