"""Mutual distillation: the fused InfoNCE against the reference, one op and one whole epoch."""
import pytest
import torch

from seal_fast.distillation import ClusterHead, DistillConfig, Modality, mutual_distillation, neighbor_index
from seal_fast.ops import cross_modal_infonce, use_compiled

from conftest import CUDA, run


def _probs(device, n=512, K=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.softmax(torch.randn(n, K, generator=g), 1).to(device).requires_grad_()
    B = torch.softmax(torch.randn(n, K, generator=g), 1).to(device).requires_grad_()
    return A, B


@pytest.mark.benchmark(group="infonce-fwd-bwd-cpu batch=512 K=10")
@pytest.mark.parametrize("level", ["instance", "cluster"])
@pytest.mark.parametrize("backend", ["compiled", "reference"])
def test_infonce_cpu(benchmark, level, backend):
    A, B = _probs("cpu")
    if backend == "compiled" and not use_compiled(A):
        pytest.skip("compiled ops not built")

    def step():
        loss = cross_modal_infonce(A, B, 0.5, level, backend=backend)
        loss.backward()
        return loss
    run(benchmark, step, rounds=50, warmup=5)


def _epoch(device, n, backend, d=512, ds=512):
    """One true epoch (n / 512 steps) of visual-spatial distillation; the top-50
    neighbours are computed once beforehand (the top-k op has its own benchmark)."""
    g = torch.Generator().manual_seed(0)
    Z = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1).to(device)
    G = torch.nn.functional.normalize(torch.randn(n, ds, generator=g), dim=1).to(device)
    mods = [Modality("visual", Z, ClusterHead(d, 10, generator=g).to(device)),
            Modality("spatial", G, ClusterHead(ds, 10, generator=g).to(device))]
    for m in mods:
        m.neighbor_index = neighbor_index(m.features, 50, backend)
    cfg = DistillConfig(epochs=1, batch_size=512, min_steps_per_epoch=1)
    gen = torch.Generator(device=device).manual_seed(0)
    return lambda: mutual_distillation(mods, [(0, 1, 1.0)], cfg, generator=gen, backend=backend)


def _heads_only_epoch(n, d=512, ds=512, batch=512):
    """The same epoch with the losses replaced by a fixed linear function of the heads'
    outputs: batch sampling, the two heads' forward and backward on anchors and
    neighbours, Adam. What is left of a step when the InfoNCE, consistency and
    entropy terms cost nothing, so reference / heads-only bounds the epoch's speed-up."""
    g = torch.Generator().manual_seed(0)
    Z = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1)
    G = torch.nn.functional.normalize(torch.randn(n, ds, generator=g), dim=1)
    heads = [ClusterHead(d, 10, generator=g), ClusterHead(ds, 10, generator=g)]
    neighbors = [torch.randint(n, (n, 50), generator=g) for _ in heads]
    weight = torch.randn(2 * batch, 10, generator=g)
    optimizer = torch.optim.Adam([p for h in heads for p in h.parameters()], lr=1e-3, betas=(0.9, 0.99))

    def epoch():
        perm = torch.randperm(n, generator=g)
        for j in range(n // batch):
            idx = perm[j * batch:(j + 1) * batch]
            loss = 0.0
            for X, head, nb in zip((Z, G), heads, neighbors):
                pick = nb[idx, torch.randint(50, (batch,), generator=g)]
                loss = loss + (head(X[torch.cat([idx, pick])]) * weight).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return epoch


@pytest.mark.benchmark(group="distillation-epoch-cpu N=10000 batch=512 d=512")
@pytest.mark.parametrize("backend", ["compiled", "reference", "heads-only"])
def test_distill_epoch_cpu(benchmark, backend):
    if backend == "compiled" and not use_compiled(torch.empty(0)):
        pytest.skip("compiled ops not built")
    epoch = _heads_only_epoch(10000) if backend == "heads-only" else _epoch("cpu", 10000, backend)
    run(benchmark, epoch, rounds=7)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
@pytest.mark.benchmark(group="distillation-epoch-cuda N=50000 batch=512 d=512")
@pytest.mark.parametrize("backend", ["compiled", "reference"])
def test_distill_epoch_cuda(benchmark, backend):
    if backend == "compiled" and not use_compiled(torch.empty(0, device="cuda")):
        pytest.skip("CUDA kernels not compiled")
    run(benchmark, _epoch("cuda", 50000, backend), "cuda", rounds=5, warmup=1)
