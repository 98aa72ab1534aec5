// CPU kernels of seal_fast::soft_cross_entropy and its backward.
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <cmath>

namespace seal_fast {
namespace {

void check_pair(const at::Tensor& logits, const at::Tensor& target) {
  TORCH_CHECK(logits.dim() == 2, "soft_cross_entropy: logits must be (B, K), got ", logits.sizes());
  TORCH_CHECK(target.sizes() == logits.sizes(), "soft_cross_entropy: target shape ", target.sizes(),
              " differs from logits shape ", logits.sizes());
  TORCH_CHECK(target.scalar_type() == logits.scalar_type(), "soft_cross_entropy: dtype mismatch");
  TORCH_CHECK(logits.size(1) > 0, "soft_cross_entropy: K must be positive");
}

std::tuple<at::Tensor, at::Tensor> soft_cross_entropy_cpu(const at::Tensor& logits_in,
                                                          const at::Tensor& target_in) {
  check_pair(logits_in, target_in);
  TORCH_CHECK(logits_in.device().is_cpu(), "soft_cross_entropy_cpu: expected CPU tensors");
  const auto logits = logits_in.contiguous();
  const auto target = target_in.contiguous();
  const int64_t B = logits.size(0), K = logits.size(1);
  auto loss = at::empty({B}, logits.options());
  auto log_probs = at::empty_like(logits);
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "soft_cross_entropy_cpu", [&] {
    const scalar_t* z = logits.data_ptr<scalar_t>();
    const scalar_t* t = target.data_ptr<scalar_t>();
    scalar_t* lp = log_probs.data_ptr<scalar_t>();
    scalar_t* out = loss.data_ptr<scalar_t>();
    at::parallel_for(0, B, 64, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const scalar_t* zb = z + b * K;
        const scalar_t* tb = t + b * K;
        scalar_t* lpb = lp + b * K;
        scalar_t mx = zb[0];
        for (int64_t k = 1; k < K; ++k) mx = zb[k] > mx ? zb[k] : mx;
        scalar_t sum = 0;
        for (int64_t k = 0; k < K; ++k) sum += std::exp(zb[k] - mx);
        const scalar_t lse = mx + std::log(sum);
        scalar_t acc = 0;
        for (int64_t k = 0; k < K; ++k) {
          lpb[k] = zb[k] - lse;
          acc -= tb[k] * lpb[k];
        }
        out[b] = acc;
      }
    });
  });
  return {loss, log_probs};
}

// d loss_b / d z_bk = (sum_j t_bj) p_bk - t_bk ;  d loss_b / d t_bk = -log p_bk
std::tuple<at::Tensor, at::Tensor> soft_cross_entropy_backward_cpu(const at::Tensor& grad_loss_in,
                                                                   const at::Tensor& log_probs_in,
                                                                   const at::Tensor& target_in) {
  check_pair(log_probs_in, target_in);
  TORCH_CHECK(grad_loss_in.dim() == 1 && grad_loss_in.size(0) == log_probs_in.size(0),
              "soft_cross_entropy_backward: grad_loss must be (B,)");
  const auto g = grad_loss_in.contiguous();
  const auto lp = log_probs_in.contiguous();
  const auto target = target_in.contiguous();
  const int64_t B = lp.size(0), K = lp.size(1);
  auto grad_logits = at::empty_like(lp);
  auto grad_target = at::empty_like(lp);
  AT_DISPATCH_FLOATING_TYPES(lp.scalar_type(), "soft_cross_entropy_backward_cpu", [&] {
    const scalar_t* gp = g.data_ptr<scalar_t>();
    const scalar_t* lpp = lp.data_ptr<scalar_t>();
    const scalar_t* t = target.data_ptr<scalar_t>();
    scalar_t* gz = grad_logits.data_ptr<scalar_t>();
    scalar_t* gt = grad_target.data_ptr<scalar_t>();
    at::parallel_for(0, B, 64, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const scalar_t* lpb = lpp + b * K;
        const scalar_t* tb = t + b * K;
        scalar_t tsum = 0;
        for (int64_t k = 0; k < K; ++k) tsum += tb[k];
        const scalar_t gb = gp[b];
        for (int64_t k = 0; k < K; ++k) {
          gz[b * K + k] = gb * (tsum * std::exp(lpb[k]) - tb[k]);
          gt[b * K + k] = -gb * lpb[k];
        }
      }
    });
  });
  return {grad_logits, grad_target};
}

}  // namespace

TORCH_LIBRARY_IMPL(seal_fast, CPU, m) {
  m.impl("soft_cross_entropy", &soft_cross_entropy_cpu);
  m.impl("soft_cross_entropy_backward", &soft_cross_entropy_backward_cpu);
}

}  // namespace seal_fast
