"""Fused ops, one module each. Each has a compiled kernel (CPU, CUDA) and a pure-PyTorch reference.

`backend="auto"` (the default of every wrapper) uses the compiled kernel when it
is loaded for the tensors' device and the reference otherwise;
`backend="reference"` forces the reference, `backend="compiled"` fails loudly
when no kernel is available (`compiled_available()`, `cuda_compiled()` and
`use_compiled(tensor)` say which will run). Importing this package registers every op's fake
(meta) kernel and autograd formula with torch.
"""
from .._extension import compiled_available, cuda_compiled, use_compiled
from ._backend import BACKENDS
from .cosine_topk import cosine_topk, cosine_topk_reference
from .cross_modal_infonce import LEVELS, cross_modal_infonce, cross_modal_infonce_reference
from .patch_gat import patch_gat, patch_gat_reference
from .patch_knn import patch_knn, patch_knn_reference
from .soft_cross_entropy import soft_cross_entropy, soft_cross_entropy_reference
from .unrolled_linear_fit import unrolled_linear_fit, unrolled_linear_fit_reference

__all__ = ["BACKENDS", "LEVELS", "compiled_available", "cuda_compiled", "use_compiled", "cosine_topk",
           "cosine_topk_reference", "cross_modal_infonce", "cross_modal_infonce_reference", "patch_gat",
           "patch_gat_reference", "patch_knn", "patch_knn_reference", "soft_cross_entropy",
           "soft_cross_entropy_reference", "unrolled_linear_fit", "unrolled_linear_fit_reference"]
