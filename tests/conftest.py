import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

CUDA = torch.cuda.is_available()
devices = ["cpu"] + (["cuda"] if CUDA else [])
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")


def blobs(n=600, k=4, d=16, sep=6.0, seed=0, spaces=1):
    """Separable Gaussian mixtures; with spaces=2 the same labels seen through two
    different random linear views (as two backbones would)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    means = rng.normal(size=(k, d)) * sep / np.sqrt(d) * 2
    base = means[y] + rng.normal(size=(n, d))
    Zs = []
    for s in range(spaces):
        A = rng.normal(size=(d, d + 8 * s)) / np.sqrt(d)
        Zs.append((base @ A + 0.1 * rng.normal(size=(n, d + 8 * s))).astype(np.float32))
    return (Zs[0] if spaces == 1 else Zs), y


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def digits_store(tmp_path_factory):
    """The first 600 of sklearn's digits, embedded once the default way (real ImageNet weights:
    visual space EfficientNet-Lite0, patches EfficientNet-Lite2); a subset keeps the suite
    fast on 2 CPU cores."""
    from seal_fast.data.sources import ArraySource, open_source
    from seal_fast.embed import embed

    digits = open_source("digits")
    subset = ArraySource(np.stack([digits.read(i) for i in range(600)]), digits.labels[:600])
    return embed(subset, tmp_path_factory.mktemp("digits") / "features", progress=False)


def skip_without_kernels(device):
    """Skip a CUDA case when the extension was built without its CUDA kernels."""
    from seal_fast._extension import cuda_compiled

    if device == "cuda" and not cuda_compiled():
        pytest.skip("CUDA kernels not compiled")


def _ops_built():
    from seal_fast._extension import compiled_available

    return compiled_available()


needs_ops = pytest.mark.skipif(not _ops_built(), reason="compiled ops not built")


def load_bench(name: str):
    """A script of bench/ as a module (bench/ is not a package: its scripts are run by path)."""
    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
