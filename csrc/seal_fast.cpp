// Operator schemas of the seal_fast library and the `_C` Python module.
//
// Every op is declared here, in one place, so the whole compiled surface can be
// read at a glance. Kernels live in cpu/<op>.cpp and cuda/<op>.cu and register
// themselves with TORCH_LIBRARY_IMPL; Python wrappers, fake (meta) kernels and
// autograd live in seal_fast/ops/<op>.py.
#include <torch/extension.h>

#include "cuda/linear_fit_plan.h"
#include "cuda/patch_gat_plan.h"

#ifndef SEAL_FAST_TORCH_VERSION
#define SEAL_FAST_TORCH_VERSION "unknown"
#endif

TORCH_LIBRARY(seal_fast, m) {
  // Soft-target cross-entropy per row and the row-wise log-softmax it used.
  // loss[b] = -sum_k target[b,k] * log_softmax(logits)[b,k]
  m.def("soft_cross_entropy(Tensor logits, Tensor target) -> (Tensor loss, Tensor log_probs)");
  m.def(
      "soft_cross_entropy_backward(Tensor grad_loss, Tensor log_probs, Tensor target)"
      " -> (Tensor grad_logits, Tensor grad_target)");

  // `steps` Adam updates of one linear classifier per space on the soft-target
  // cross-entropy (mean over rows), from (W0s, b0s); returns the final weights,
  // biases and logits Zs[k] @ Ws[k].T + bs[k].
  m.def(
      "unrolled_linear_fit(Tensor[] Zs, Tensor targets, Tensor[] W0s, Tensor[] b0s, int steps, float lr,"
      " float beta1, float beta2, float eps) -> (Tensor[] Ws, Tensor[] bs, Tensor[] logits)");
  // Reverse mode through those steps: the gradient with respect to `targets`.
  m.def(
      "unrolled_linear_fit_backward(Tensor[] grad_Ws, Tensor[] grad_bs, Tensor[] grad_logits, Tensor[] Zs,"
      " Tensor targets, Tensor[] W0s, Tensor[] b0s, int steps, float lr, float beta1, float beta2, float eps)"
      " -> Tensor grad_targets");

  // The k most cosine-similar rows of R for every row of Q, best first, ties to the
  // lower index; with exclude_self row i of Q (= row i of R) never lists itself.
  // Values are float32 whatever the input dtype. Memory O(Nq * k).
  m.def("cosine_topk(Tensor Q, Tensor R, int k, bool exclude_self) -> (Tensor values, Tensor indices)");

  // Symmetric InfoNCE between two modalities' assignments A, B (both (B, K)):
  // level 0 contrasts rows (instances), level 1 columns (clusters). Returns the
  // loss and, when with_grad, its gradients (computed in the same pass).
  m.def(
      "cross_modal_infonce(Tensor A, Tensor B, float temperature, int level, bool with_grad)"
      " -> (Tensor loss, Tensor grad_A, Tensor grad_B)");

  // Single-head graph attention on B small graphs of M nodes (SEAL eq. 3): X (B, M, c),
  // W (c, C), attention vectors (C,), neighbour lists nbr (B, M, k) with self loops.
  // Returns the output ((B, C) pooled, else (B, M, C)) and the attention (B, M, k).
  m.def(
      "patch_gat(Tensor X, Tensor W, Tensor att_src, Tensor att_dst, Tensor nbr, float negative_slope, bool pool)"
      " -> (Tensor out, Tensor alpha)");
  m.def(
      "patch_gat_backward(Tensor grad_out, Tensor X, Tensor W, Tensor att_src, Tensor att_dst, Tensor nbr,"
      " Tensor alpha, float negative_slope, bool pool)"
      " -> (Tensor grad_X, Tensor grad_W, Tensor grad_att_src, Tensor grad_att_dst)");
  // Per image: each patch, then its k most cosine-similar other patches (ties: lower index).
  m.def("patch_knn(Tensor P, int k) -> Tensor");
}

namespace seal_fast {
// device-generic exact backward (csrc/unrolled_linear_fit_aten.cpp)
at::Tensor unrolled_linear_fit_backward_aten(at::TensorList grad_Ws, at::TensorList grad_bs,
                                             at::TensorList grad_logits, at::TensorList Zs,
                                             const at::Tensor& targets, at::TensorList W0s, at::TensorList b0s,
                                             int64_t steps, double lr, double beta1, double beta2, double eps);
// device-generic InfoNCE (csrc/cross_modal_infonce_aten.cpp)
std::tuple<at::Tensor, at::Tensor, at::Tensor> cross_modal_infonce_aten(const at::Tensor& A, const at::Tensor& B,
                                                                        double temperature, int64_t level,
                                                                        bool with_grad);
}  // namespace seal_fast

namespace {

pybind11::dict build_info() {
  pybind11::dict info;
  info["torch_version"] = SEAL_FAST_TORCH_VERSION;
#ifdef SEAL_FAST_WITH_CUDA
  info["cuda"] = true;
  info["cuda_version"] = SEAL_FAST_CUDA_VERSION;
  info["cuda_arch_list"] = SEAL_FAST_CUDA_ARCHS;
#else
  info["cuda"] = false;
  info["cuda_version"] = pybind11::none();
  info["cuda_arch_list"] = pybind11::none();
#endif
#ifdef _OPENMP
  info["openmp"] = true;
#else
  info["openmp"] = false;
#endif
  return info;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "seal_fast compiled ops (registered in the torch.ops.seal_fast namespace)";
  m.def("build_info", &build_info, "How this extension was compiled");
  using Tensors = std::vector<at::Tensor>;
  m.def(
      "unrolled_linear_fit_backward_aten",
      [](const Tensors& gW, const Tensors& gb, const Tensors& gl, const Tensors& Zs, const at::Tensor& targets,
         const Tensors& W0s, const Tensors& b0s, int64_t steps, double lr, double beta1, double beta2, double eps) {
        return seal_fast::unrolled_linear_fit_backward_aten(gW, gb, gl, Zs, targets, W0s, b0s, steps, lr, beta1,
                                                            beta2, eps);
      },
      "The CUDA path's exact backward, callable on any device (for tests)");
  m.def("cross_modal_infonce_aten", &seal_fast::cross_modal_infonce_aten,
        "The CUDA path's InfoNCE, callable on any device (for tests)");
  m.def("linear_fit_cuda_scratch_bytes", &seal_fast::linear_fit_plan::scratch_bytes,
        "Bytes of partial-gradient scratch the CUDA unrolled_linear_fit allocates for a batch B, K classes, spaces "
        "of widths dims, on a GPU with sm_count SMs (element: 4 for float32 weights)",
        pybind11::arg("B"), pybind11::arg("K"), pybind11::arg("dims"), pybind11::arg("sm_count"),
        pybind11::arg("element") = 4);
  m.def("patch_gat_cuda_smem_bytes", &seal_fast::patch_gat_plan::smem_bytes,
        "Shared memory one block of the CUDA patch_gat needs for an image of M patches with k neighbours each",
        pybind11::arg("M"), pybind11::arg("k"), pybind11::arg("element"));
}
