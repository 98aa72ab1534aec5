"""Embedding throughput: a backbone's forward pass eager vs torch.compile'd (what
`seal-fast embed --compile` and `bench/accuracy.py --compile` switch on), on one batch
of the size `embed` uses, pooled features and patches both asked for."""
import pytest
import torch

from seal_fast.backbones import get_backbone

from conftest import CUDA, run


def _forward(name, device, compiled):
    model = get_backbone(name).to(device).to(memory_format=torch.channels_last)
    size = model.preprocessing.size
    x = torch.randn(32 if device == "cpu" else 256, 3, size, size, device=device,
                    generator=torch.Generator(device).manual_seed(0)).contiguous(memory_format=torch.channels_last)
    fn = torch.compile(model.forward) if compiled else model.forward

    @torch.inference_mode()
    def step():
        with torch.autocast(device, dtype=torch.float16, enabled=device == "cuda"):
            return fn(x, pooled=True, patches=True)
    return step


@pytest.mark.parametrize("variant", ["eager", "compiled"])
@pytest.mark.parametrize("name", ["efficientnet-lite0", "efficientnet-lite2"])
def test_embed_cpu(benchmark, name, variant):
    benchmark.group = f"embed-cpu {name} batch=32"
    run(benchmark, _forward(name, "cpu", variant == "compiled"), rounds=3, warmup=1)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("variant", ["eager", "compiled"])
@pytest.mark.parametrize("name", ["efficientnet-lite0", "efficientnet-lite2"])
def test_embed_cuda(benchmark, name, variant):
    benchmark.group = f"embed-cuda {name} batch=256 fp16"
    run(benchmark, _forward(name, "cuda", variant == "compiled"), "cuda", rounds=10, warmup=2)
