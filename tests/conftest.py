import hashlib
import importlib.util
import subprocess
import sys
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


def three_views(n=600, k=4, seed=0, text_noise=0.1):
    """Visual, patch (M=9 patches whose mean carries the class) and text views of one labelling."""
    rng = np.random.default_rng(seed)
    Z, y = blobs(n=n, k=k, d=16, seed=seed)
    means = rng.normal(size=(k, 12)) * 3
    P = (means[y][:, None, :] + rng.normal(size=(n, 9, 12))).astype(np.float32)
    T = (np.eye(k)[y] @ rng.normal(size=(k, 8)) + text_noise * rng.normal(size=(n, 8))).astype(np.float32)
    return Z, P, T, y


@pytest.fixture
def patch_store(tmp_path):
    """A feature store of 120 rows: one space of 3 blobs, patch features, labels."""
    from seal_fast.store import write_store

    Z, y = blobs(n=120, k=3, seed=3)
    P = np.random.default_rng(0).normal(size=(120, 9, 4)).astype(np.float32)
    return write_store(tmp_path / "patch-feats", spaces={"a": Z}, patches=P, labels=y)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def digits_store(tmp_path_factory):
    """The first 600 of sklearn's digits, embedded once the default way (real ImageNet weights:
    visual space EfficientNet-Lite0, patches EfficientNet-Lite2); a subset keeps the suite
    fast on 2 CPU cores. Embedded from an `.npz`, so the store's images can be read back (report)."""
    from seal_fast.data.sources import open_source
    from seal_fast.embed import embed

    digits = open_source("digits")
    folder = tmp_path_factory.mktemp("digits")
    np.savez(folder / "digits600.npz", images=digits.images[:600], labels=digits.labels[:600])
    return embed(folder / "digits600.npz", folder / "features", progress=False)


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


# --- running the command line, and reading what it did ---------------------------------------
def cli(*argv, cwd=None):
    """Run `python -m seal_fast ARGV` and return (exit code, stdout, stderr)."""
    proc = subprocess.run([sys.executable, "-m", "seal_fast", *map(str, argv)], capture_output=True, text=True,
                          timeout=300, cwd=cwd)
    return proc.returncode, proc.stdout, proc.stderr


def one_line_error(rc, err, *fragments):
    assert rc not in (0, None), err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def digest(path):
    """Contents of a file or every file of a folder, to show nothing was touched."""
    paths = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}
