"""Top-50 cosine neighbours: fused `cosine_topk` vs torch's chunked mm + topk."""
import pytest
import torch
import torch.nn.functional as F

from seal_fast.ops import cosine_topk, use_compiled

from conftest import CUDA, run


def torch_chunked_topk(X, k, chunk=4096):
    """What the peers do: normalise, then mm + topk chunk by chunk (self excluded)."""
    Xn = F.normalize(X.float(), dim=1)
    vals, idxs = [], []
    for s in range(0, Xn.shape[0], chunk):
        sim = Xn[s:s + chunk] @ Xn.T
        rows = torch.arange(sim.shape[0], device=sim.device)
        sim[rows, rows + s] = float("-inf")
        v, i = sim.topk(k, dim=1)
        vals.append(v)
        idxs.append(i)
    return torch.cat(vals), torch.cat(idxs)


@pytest.mark.benchmark(group="cosine-top50-cpu N=10000 d=768")
@pytest.mark.parametrize("variant", ["fused", "fused-cross", "torch-chunked", "gemm-only"])
def test_topk_cpu(benchmark, variant):
    """fused: a self-search (Q is R, the distillation's case; the kernel multiplies only
    the upper triangle of tiles). fused-cross: R is a copy, so the full product is paid,
    as for two different modalities. gemm-only: the chunked products alone, no top-k:
    the floor of any exact fp32 cross search on this machine (half of it for a
    self-search), so torch-chunked / gemm-only bounds the cross search's speed-up."""
    X = torch.randn(10000, 768, generator=torch.Generator().manual_seed(0))
    if variant == "gemm-only":
        Xn = F.normalize(X, dim=1)

        def products():
            for s in range(0, Xn.shape[0], 4096):
                Xn[s:s + 4096] @ Xn.T
        run(benchmark, products, rounds=7)
    elif variant.startswith("fused"):
        if not use_compiled(X):
            pytest.skip("compiled ops not built")
        R = X.clone() if variant == "fused-cross" else X
        run(benchmark, lambda: cosine_topk(X, R, 50, True, backend="compiled"), rounds=7)
    else:
        run(benchmark, lambda: torch_chunked_topk(X, 50), rounds=7)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
@pytest.mark.benchmark(group="cosine-top50-cuda N=50000 d=768")
@pytest.mark.parametrize("variant", ["fused-fp32", "fused-bf16", "torch-chunked"])
def test_topk_cuda(benchmark, variant):
    X = torch.randn(50000, 768, device="cuda")
    if variant.startswith("fused"):
        if not use_compiled(X):
            pytest.skip("CUDA kernels not compiled")
        Xv = X.bfloat16() if variant.endswith("bf16") else X
        run(benchmark, lambda: cosine_topk(Xv, Xv, 50, True, backend="compiled"), "cuda", rounds=10, warmup=2)
    else:
        run(benchmark, lambda: torch_chunked_topk(X, 50), "cuda", rounds=10, warmup=2)
