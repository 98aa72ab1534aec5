"""Build of the compiled ops (`seal_fast._C`).

CPU kernels are always built. CUDA kernels are built when torch has CUDA and a
CUDA device is visible, or when FORCE_CUDA=1 (CI does this so that a CUDA
compile error fails the build even on a machine without a GPU). FORCE_ONLY_CPU=1
skips them. A CUDA toolkit alone never switches CUDA on: many CPU machines have
nvcc installed.

Build against the torch that will run the ops:
    pip install --no-build-isolation .
"""
import glob
import importlib.util
import os
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _default_cuda_home():
    # torch guesses CUDA_HOME from `which nvcc`; when nvcc is a symlink in
    # /usr/local/bin that guess is /usr/local and the link step misses libcudart.
    if "CUDA_HOME" not in os.environ and "CUDA_PATH" not in os.environ:
        if os.path.exists("/usr/local/cuda/bin/nvcc"):
            os.environ["CUDA_HOME"] = "/usr/local/cuda"


_default_cuda_home()

import torch  # noqa: E402
from torch.utils.cpp_extension import (  # noqa: E402
    CUDA_HOME,
    BuildExtension,
    CppExtension,
    CUDAExtension,
)


def _decide_cuda():
    if os.environ.get("FORCE_ONLY_CPU", "0") == "1":
        return False, "FORCE_ONLY_CPU=1"
    if os.environ.get("FORCE_CUDA", "0") == "1":
        if CUDA_HOME is None:
            sys.exit("FORCE_CUDA=1 but no CUDA toolkit was found (set CUDA_HOME)")
        return True, "FORCE_CUDA=1"
    if torch.version.cuda is None:
        return False, "torch was built without CUDA"
    if CUDA_HOME is None:
        return False, "no CUDA toolkit found (set CUDA_HOME)"
    if not torch.cuda.is_available():
        return False, "no CUDA device visible (set FORCE_CUDA=1 to build anyway)"
    return True, "CUDA device and toolkit found"


def _pip_cuda_include_dirs():
    """Headers shipped by the nvidia-* wheels that come with CUDA builds of torch.

    torch's CUDA headers include cublas_v2.h / cusparse.h, which a minimal toolkit
    may lack; the pip wheels carry them.
    """
    spec = importlib.util.find_spec("nvidia")
    if spec is None or not spec.submodule_search_locations:
        return []
    dirs = []
    for base in spec.submodule_search_locations:
        dirs += sorted(glob.glob(os.path.join(base, "cu*", "include")))
        # older wheels: one package per library (nvidia/cublas/include, ...)
        dirs += [os.path.join(base, lib, "include") for lib in ("cuda_runtime", "cublas", "cusparse")]
    return [d for d in dict.fromkeys(dirs) if os.path.isdir(d)]


def make_extension():
    with_cuda, reason = _decide_cuda()
    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
    sources += sorted(glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    define_macros = [("SEAL_FAST_TORCH_VERSION", f'"{torch.__version__}"')]
    cxx_flags = ["-O3", "-fopenmp"] if sys.platform != "darwin" else ["-O3"]
    extra_link = ["-fopenmp"] if sys.platform != "darwin" else []
    kwargs = dict(
        name="seal_fast._C",
        include_dirs=[os.path.join(ROOT, "csrc")],
        extra_link_args=extra_link,
    )
    if with_cuda:
        sources += sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
        arch = os.environ.get("TORCH_CUDA_ARCH_LIST", "default (torch's choice)")
        define_macros += [
            ("SEAL_FAST_WITH_CUDA", None),
            ("SEAL_FAST_CUDA_VERSION", f'"{torch.version.cuda}"'),
            ("SEAL_FAST_CUDA_ARCHS", f'"{arch}"'),
        ]
        kwargs["include_dirs"] += _pip_cuda_include_dirs()
        ext = CUDAExtension(
            sources=sources,
            define_macros=define_macros,
            extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "-lineinfo"]},
            **kwargs,
        )
    else:
        ext = CppExtension(
            sources=sources,
            define_macros=define_macros,
            extra_compile_args={"cxx": cxx_flags},
            **kwargs,
        )
    print(f"seal_fast build: CUDA kernels {'ON' if with_cuda else 'OFF'} ({reason}); "
          f"torch {torch.__version__}, CUDA_HOME={CUDA_HOME}", flush=True)
    return ext


setup(
    ext_modules=[make_extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
