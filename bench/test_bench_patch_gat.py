"""Patch-graph attention forward + backward: fused `patch_gat` vs the PyTorch reference and PyG's GATConv."""
import pytest
import torch

from seal_fast.ops import patch_gat, patch_gat_reference, patch_knn, use_compiled

from conftest import CUDA, run


def _inputs(device, B, M, c, C, k):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(B, M, c, generator=g).to(device).requires_grad_()
    W = (torch.randn(c, C, generator=g) / c ** 0.5).to(device).requires_grad_()
    a_s = torch.randn(C, generator=g).to(device).requires_grad_()
    a_d = torch.randn(C, generator=g).to(device).requires_grad_()
    nbr = patch_knn(X.detach(), k - 1, backend="reference")  # k entries including the self loop
    return X, W, a_s, a_d, nbr


def _fwd_bwd(fn, X, W, a_s, a_d, nbr):
    def step():
        out = fn(X, W, a_s, a_d, nbr)
        out.sum().backward()
        return out
    return step


def _pyg_step(X, W, a_s, a_d, nbr):
    from torch_geometric.nn import GATConv

    B, M, c = X.shape
    k = nbr.shape[2]
    conv = GATConv(c, W.shape[1], heads=1, bias=False, add_self_loops=False).to(X.device)
    offsets = (torch.arange(B, device=X.device) * M).view(B, 1, 1)
    src = (nbr + offsets).reshape(-1)
    dst = (torch.arange(M, device=X.device).view(1, M, 1).expand(B, M, k) + offsets).reshape(-1)
    edge_index = torch.stack([src, dst])
    x = X.detach().reshape(B * M, c).requires_grad_()

    def step():
        out = conv(x, edge_index).view(B, M, -1).mean(1)
        out.sum().backward()
        return out
    return step


def _variant(variant, inputs):
    if variant == "fused":
        if not use_compiled(inputs[0]):
            pytest.skip("compiled ops not built for this device")
        return _fwd_bwd(lambda *a: patch_gat(*a, 0.2, True, backend="compiled"), *inputs)
    if variant == "reference":
        return _fwd_bwd(lambda *a: patch_gat_reference(*a, 0.2, True), *inputs)
    pytest.importorskip("torch_geometric")
    return _pyg_step(*inputs)


@pytest.mark.benchmark(group="patch-gat-fwd-bwd-cpu 512 images x 49 patches, 320->320, k=8")
@pytest.mark.parametrize("variant", ["fused", "reference", "pyg-gatconv"])
def test_patch_gat_cpu(benchmark, variant):
    step = _variant(variant, _inputs("cpu", 512, 49, 320, 320, 8))
    run(benchmark, step, rounds=10, warmup=2)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
@pytest.mark.benchmark(group="patch-gat-fwd-bwd-cuda 2048 images x 49 patches, 2048->512, k=8")
@pytest.mark.parametrize("variant", ["fused", "reference", "pyg-gatconv"])
def test_patch_gat_cuda(benchmark, variant):
    step = _variant(variant, _inputs("cuda", 2048, 49, 2048, 512, 8))
    run(benchmark, step, "cuda", rounds=30, warmup=3)


@pytest.mark.benchmark(group="patch-knn-cpu 1024 images x 81 patches, 352 channels, k=8 (Lite2's grid)")
@pytest.mark.parametrize("variant", ["fused", "reference"])
def test_patch_knn_cpu(benchmark, variant):
    P = torch.randn(1024, 81, 352, generator=torch.Generator().manual_seed(0))
    if variant == "fused" and not use_compiled(P):
        pytest.skip("compiled ops not built for this device")
    backend = "compiled" if variant == "fused" else "reference"
    run(benchmark, lambda: patch_knn(P, 8, backend=backend), rounds=5, warmup=1)
