// CUDA kernels of seal_fast::soft_cross_entropy and its backward: one warp per row.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "cuda_utils.cuh"

namespace seal_fast {
namespace {

using cuda::warp_max;
using cuda::warp_sum;

constexpr int kWarpsPerBlock = 8;

template <typename scalar_t>
__global__ void soft_cross_entropy_kernel(const scalar_t* __restrict__ z, const scalar_t* __restrict__ t,
                                          scalar_t* __restrict__ loss, scalar_t* __restrict__ log_probs,
                                          int64_t B, int64_t K) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= B) return;
  const scalar_t* zr = z + row * K;
  const scalar_t* tr = t + row * K;
  acc_t mx = -INFINITY;
  for (int64_t k = lane; k < K; k += 32) mx = max(mx, static_cast<acc_t>(zr[k]));
  mx = warp_max(mx);
  acc_t sum = 0;
  for (int64_t k = lane; k < K; k += 32) sum += exp(static_cast<acc_t>(zr[k]) - mx);
  sum = warp_sum(sum);
  const acc_t lse = mx + log(sum);
  acc_t acc = 0;
  for (int64_t k = lane; k < K; k += 32) {
    const acc_t lp = static_cast<acc_t>(zr[k]) - lse;
    log_probs[row * K + k] = static_cast<scalar_t>(lp);
    acc -= static_cast<acc_t>(tr[k]) * lp;
  }
  acc = warp_sum(acc);
  if (lane == 0) loss[row] = static_cast<scalar_t>(acc);
}

template <typename scalar_t>
__global__ void soft_cross_entropy_backward_kernel(const scalar_t* __restrict__ g,
                                                   const scalar_t* __restrict__ lp,
                                                   const scalar_t* __restrict__ t,
                                                   scalar_t* __restrict__ gz, scalar_t* __restrict__ gt,
                                                   int64_t B, int64_t K) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= B) return;
  const scalar_t* tr = t + row * K;
  const scalar_t* lpr = lp + row * K;
  acc_t tsum = 0;
  for (int64_t k = lane; k < K; k += 32) tsum += static_cast<acc_t>(tr[k]);
  tsum = warp_sum(tsum);
  const acc_t gb = static_cast<acc_t>(g[row]);
  for (int64_t k = lane; k < K; k += 32) {
    const acc_t l = static_cast<acc_t>(lpr[k]);
    gz[row * K + k] = static_cast<scalar_t>(gb * (tsum * exp(l) - static_cast<acc_t>(tr[k])));
    gt[row * K + k] = static_cast<scalar_t>(-gb * l);
  }
}

void check_pair(const at::Tensor& logits, const at::Tensor& target) {
  TORCH_CHECK(logits.dim() == 2, "soft_cross_entropy: logits must be (B, K), got ", logits.sizes());
  TORCH_CHECK(target.sizes() == logits.sizes(), "soft_cross_entropy: target shape ", target.sizes(),
              " differs from logits shape ", logits.sizes());
  TORCH_CHECK(target.scalar_type() == logits.scalar_type(), "soft_cross_entropy: dtype mismatch");
  TORCH_CHECK(logits.is_cuda() && target.is_cuda(), "soft_cross_entropy_cuda: expected CUDA tensors");
  TORCH_CHECK(logits.size(1) > 0, "soft_cross_entropy: K must be positive");
}

std::tuple<at::Tensor, at::Tensor> soft_cross_entropy_cuda(const at::Tensor& logits_in,
                                                           const at::Tensor& target_in) {
  check_pair(logits_in, target_in);
  const c10::cuda::CUDAGuard guard(logits_in.device());
  const auto logits = logits_in.contiguous();
  const auto target = target_in.contiguous();
  const int64_t B = logits.size(0), K = logits.size(1);
  auto loss = at::empty({B}, logits.options());
  auto log_probs = at::empty_like(logits);
  if (B == 0) return {loss, log_probs};
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "soft_cross_entropy_cuda", [&] {
    soft_cross_entropy_kernel<scalar_t><<<cuda::ceil_div(B, kWarpsPerBlock), kWarpsPerBlock * 32, 0, stream>>>(
        logits.data_ptr<scalar_t>(), target.data_ptr<scalar_t>(), loss.data_ptr<scalar_t>(),
        log_probs.data_ptr<scalar_t>(), B, K);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {loss, log_probs};
}

std::tuple<at::Tensor, at::Tensor> soft_cross_entropy_backward_cuda(const at::Tensor& grad_loss_in,
                                                                    const at::Tensor& log_probs_in,
                                                                    const at::Tensor& target_in) {
  check_pair(log_probs_in, target_in);
  TORCH_CHECK(grad_loss_in.dim() == 1 && grad_loss_in.size(0) == log_probs_in.size(0),
              "soft_cross_entropy_backward: grad_loss must be (B,)");
  const c10::cuda::CUDAGuard guard(log_probs_in.device());
  const auto g = grad_loss_in.contiguous();
  const auto lp = log_probs_in.contiguous();
  const auto target = target_in.contiguous();
  const int64_t B = lp.size(0), K = lp.size(1);
  auto grad_logits = at::empty_like(lp);
  auto grad_target = at::empty_like(lp);
  if (B == 0) return {grad_logits, grad_target};
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, lp.scalar_type(), "soft_cross_entropy_backward_cuda", [&] {
    soft_cross_entropy_backward_kernel<scalar_t>
        <<<cuda::ceil_div(B, kWarpsPerBlock), kWarpsPerBlock * 32, 0, stream>>>(
            g.data_ptr<scalar_t>(), lp.data_ptr<scalar_t>(), target.data_ptr<scalar_t>(),
            grad_logits.data_ptr<scalar_t>(), grad_target.data_ptr<scalar_t>(), B, K);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {grad_logits, grad_target};
}

}  // namespace

TORCH_LIBRARY_IMPL(seal_fast, CUDA, m) {
  m.impl("soft_cross_entropy", &soft_cross_entropy_cuda);
  m.impl("soft_cross_entropy_backward", &soft_cross_entropy_backward_cuda);
}

}  // namespace seal_fast
