"""Fused ops. Each has a compiled kernel (CPU, CUDA) and a pure-PyTorch reference.

`backend="auto"` (the default of every wrapper) uses the compiled kernel when it
is loaded for the tensors' device and the reference otherwise;
`backend="reference"` forces the reference, `backend="compiled"` fails loudly
when no kernel is available.
"""
from .soft_cross_entropy import soft_cross_entropy, soft_cross_entropy_reference

__all__ = ["soft_cross_entropy", "soft_cross_entropy_reference"]
