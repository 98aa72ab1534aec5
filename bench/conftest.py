"""Benchmarks: fused ops against the pure-PyTorch path, timed by pytest-benchmark.

Each benchmark group holds the variants of one computation measured in the same
run; `python bench/summarize.py BENCH.json` turns a `--benchmark-json` file into
the speed-up table kept under bench/results/.
"""
import pytest
import torch

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def run(benchmark, fn, device="cpu", rounds=5, warmup=1):
    """Time `fn` (synchronising CUDA) with a few rounds after warm-up."""
    def call():
        out = fn()
        sync(device)
        return out

    return benchmark.pedantic(call, rounds=rounds, iterations=1, warmup_rounds=warmup)
