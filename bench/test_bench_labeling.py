"""One outer iteration of human labeling (M=10 inner Adam steps + the outer update).

Variants, measured in one run:
  fused       — our loop with the compiled `unrolled_linear_fit` op (default)
  eager       — the same loop on the pure-PyTorch reference (device resident)
  compiled    — the eager reference loop under torch.compile (GPU only: on CPU
                its compile time dominates any run of reasonable length)
  official    — the official TURTLE loop structure: nn.Linear + weight norm,
                torch.optim.Adam for the inner loop, batch gathered on the CPU
                and copied to the device every iteration
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from seal_fast.ops import compiled_available, use_compiled
from seal_fast.labeling import LabelingConfig, TaskEncoder, init_inner, outer_loss

from conftest import CUDA, run

CPU_CASE = dict(n=5000, dims=(1280,), K=10, batch=5000)            # official TURTLE ~0.12 s/iter on 2 cores
GPU_CASE = dict(n=50000, dims=(768, 1536), K=10, batch=10000)      # DESIGN section 8 target size


def _setup(device, n, dims, K, batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    Zs = [torch.randn(n, d, generator=g).to(device) for d in dims]
    gen = torch.Generator(device=device).manual_seed(seed)
    enc = TaskEncoder(dims, K, gen, device)
    opt = torch.optim.Adam(enc.parameters(), lr=1e-3)
    return Zs, gen, enc, opt


def _ours(device, backend, case, exact=False):
    Zs, gen, enc, opt = _setup(device, **case)
    cfg = LabelingConfig(batch_size=case["batch"], exact=exact)
    n = Zs[0].shape[0]

    def step():
        idx = torch.randperm(n, generator=gen, device=device)[:cfg.batch_size]
        Zb = [Z.index_select(0, idx) for Z in Zs]
        W0s, b0s = init_inner(enc.dims, case["K"], gen, device)
        loss, _, _ = outer_loss(enc, Zb, W0s, b0s, cfg, backend)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    return step


def _official(device, case):
    """The official run_turtle.py iteration, expressed with the same modules it uses."""
    g = torch.Generator().manual_seed(0)
    Zs_np = [torch.randn(case["n"], d, generator=g).numpy() for d in case["dims"]]
    K = case["K"]
    task = [nn.utils.parametrizations.weight_norm(nn.Linear(d, K)).to(device) for d in case["dims"]]
    opt = torch.optim.Adam([p for t in task for p in t.parameters()], lr=1e-3, betas=(0.9, 0.999))
    rng = np.random.default_rng(0)

    def step():
        idx = rng.choice(case["n"], size=case["batch"], replace=False)
        Zb = [torch.from_numpy(Z[idx]).to(device) for Z in Zs_np]
        per_space = [F.softmax(t(z), dim=1) for t, z in zip(task, Zb)]
        labels = sum(per_space) / len(per_space)
        inner = [nn.Linear(d, K).to(device) for d in case["dims"]]
        inner_opt = torch.optim.Adam([p for w in inner for p in w.parameters()], lr=1e-3, betas=(0.9, 0.999))
        for _ in range(10):
            inner_opt.zero_grad()
            sum(F.cross_entropy(w(z), labels.detach()) for w, z in zip(inner, Zb)).backward()
            inner_opt.step()
        opt.zero_grad()
        pred = sum(F.cross_entropy(w(z).detach(), labels) for w, z in zip(inner, Zb))
        ent = sum(torch.special.entr(p.mean(0)).sum() for p in per_space)
        (pred - 10 * ent).backward()
        opt.step()

    return step


needs_ops = pytest.mark.skipif(not compiled_available(), reason="compiled ops not built")


@pytest.mark.benchmark(group="labeling-outer-iteration-cpu 1-space N=5000 d=1280 K=10")
@pytest.mark.parametrize("variant", ["fused", "eager", "official", "fused-exact", "eager-exact"])
def test_outer_iteration_cpu(benchmark, variant):
    if variant.startswith("fused") and not use_compiled(torch.empty(0)):
        pytest.skip("compiled ops not built")
    exact = variant.endswith("exact")
    if variant == "official":
        step = _official("cpu", CPU_CASE)
    else:
        step = _ours("cpu", "compiled" if variant.startswith("fused") else "reference", CPU_CASE, exact)
    run(benchmark, step, "cpu", rounds=20, warmup=2)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
@pytest.mark.benchmark(group="labeling-outer-iteration-cuda 2-space N=50000 d=768+1536 K=10 batch=10000")
@pytest.mark.parametrize("variant", ["fused", "eager", "compiled", "official"])
def test_outer_iteration_cuda(benchmark, variant):
    if variant == "fused" and not use_compiled(torch.empty(0, device="cuda")):
        pytest.skip("CUDA kernels not compiled")
    if variant == "official":
        step = _official("cuda", GPU_CASE)
    elif variant == "compiled":
        step = torch.compile(_ours("cuda", "reference", GPU_CASE), mode="max-autotune-no-cudagraphs")
    else:
        step = _ours("cuda", "compiled" if variant == "fused" else "reference", GPU_CASE)
    run(benchmark, step, "cuda", rounds=50, warmup=5)
