// Exact backward of unrolled_linear_fit written with ATen ops, so it runs on any
// device. It is the CUDA implementation (the CPU has its own fused kernel) and is
// exposed to Python as `_C.unrolled_linear_fit_backward_aten` so its maths can be
// tested on machines without a GPU.
#include <torch/extension.h>

#include <cmath>
#include <vector>

namespace seal_fast {

at::Tensor unrolled_linear_fit_backward_aten(at::TensorList grad_Ws, at::TensorList grad_bs,
                                             at::TensorList grad_logits, at::TensorList Zs,
                                             const at::Tensor& targets, at::TensorList W0s, at::TensorList b0s,
                                             int64_t steps, double lr, double beta1, double beta2, double eps) {
  TORCH_CHECK(!Zs.empty() && Zs.size() == W0s.size() && Zs.size() == b0s.size() && Zs.size() == grad_Ws.size() &&
                  Zs.size() == grad_bs.size() && Zs.size() == grad_logits.size(),
              "unrolled_linear_fit_backward: one entry per space is needed in every list");
  TORCH_CHECK(targets.dim() == 2, "unrolled_linear_fit_backward: targets must be (B, K)");
  const int64_t B = targets.size(0);
  const double inv_B = 1.0 / static_cast<double>(std::max<int64_t>(B, 1));
  const auto tsum = targets.sum(1, true);
  auto grad_targets = at::zeros_like(targets);
  for (size_t s = 0; s < Zs.size(); ++s) {
    const auto Z = Zs[s].to(targets.scalar_type());
    // replay the forward, keeping what the reverse pass needs
    std::vector<at::Tensor> W_prev, b_prev, gW_h, gb_h, mW_h, vW_h, mb_h, vb_h;
    auto W = W0s[s].to(targets.scalar_type()).clone();
    auto b = b0s[s].to(targets.scalar_type()).clone();
    auto mW = at::zeros_like(W), vW = at::zeros_like(W), mb = at::zeros_like(b), vb = at::zeros_like(b);
    for (int64_t t = 1; t <= steps; ++t) {
      W_prev.push_back(W);
      b_prev.push_back(b);
      const auto G = (at::softmax(at::addmm(b, Z, W.t()), 1) * tsum - targets) * inv_B;
      const auto gW = at::mm(G.t(), Z), gb = G.sum(0);
      const double step = lr / (1.0 - std::pow(beta1, static_cast<double>(t)));
      const double sqrt_bias2 = std::sqrt(1.0 - std::pow(beta2, static_cast<double>(t)));
      mW = beta1 * mW + (1 - beta1) * gW;
      vW = beta2 * vW + (1 - beta2) * gW * gW;
      mb = beta1 * mb + (1 - beta1) * gb;
      vb = beta2 * vb + (1 - beta2) * gb * gb;
      W = W - step * mW / (vW.sqrt() / sqrt_bias2 + eps);
      b = b - step * mb / (vb.sqrt() / sqrt_bias2 + eps);
      gW_h.push_back(gW);
      gb_h.push_back(gb);
      mW_h.push_back(mW);
      vW_h.push_back(vW);
      mb_h.push_back(mb);
      vb_h.push_back(vb);
    }
    const auto gl = grad_logits[s].to(targets.scalar_type());
    auto Wbar = grad_Ws[s].to(targets.scalar_type()) + at::mm(gl.t(), Z);
    auto bbar = grad_bs[s].to(targets.scalar_type()) + gl.sum(0);
    auto mbarW = at::zeros_like(Wbar), vbarW = at::zeros_like(Wbar);
    auto mbarb = at::zeros_like(bbar), vbarb = at::zeros_like(bbar);
    for (int64_t t = steps; t >= 1; --t) {
      const double step = lr / (1.0 - std::pow(beta1, static_cast<double>(t)));
      const double sqrt_bias2 = std::sqrt(1.0 - std::pow(beta2, static_cast<double>(t)));
      // p_t = p_{t-1} - step * m_t / (sqrt(v_t)/sqrt_bias2 + eps): adjoints of m_t, v_t, then of g_t
      auto adjoint = [&](const at::Tensor& pbar, const at::Tensor& m, const at::Tensor& v, const at::Tensor& g,
                         at::Tensor& mbar, at::Tensor& vbar) {
        const auto sv = v.sqrt();
        const auto denom = sv / sqrt_bias2 + eps;
        const auto mtot = mbar - pbar * step / denom;
        const auto vtot = vbar + at::where(sv > 0, pbar * step * m / (denom * denom) / (2 * sv * sqrt_bias2),
                                           at::zeros_like(v));
        mbar = beta1 * mtot;
        vbar = beta2 * vtot;
        return (1 - beta1) * mtot + 2 * (1 - beta2) * g * vtot;
      };
      const auto gbarW = adjoint(Wbar, mW_h[t - 1], vW_h[t - 1], gW_h[t - 1], mbarW, vbarW);
      const auto gbarb = adjoint(bbar, mb_h[t - 1], vb_h[t - 1], gb_h[t - 1], mbarb, vbarb);
      // g_t = G_t^T Z, G_t = (softmax(Z W_{t-1}^T + b_{t-1}) * tsum - targets) / B
      const auto Gbar = at::addmm(gbarb, Z, gbarW.t());
      const auto S = at::softmax(at::addmm(b_prev[t - 1], Z, W_prev[t - 1].t()), 1);
      const auto dot = (Gbar * S).sum(1, true);
      grad_targets = grad_targets + (dot - Gbar) * inv_B;
      const auto lbar = S * (tsum * inv_B) * (Gbar - dot);
      Wbar = Wbar + at::mm(lbar.t(), Z);
      bbar = bbar + lbar.sum(0);
    }
  }
  return grad_targets;
}

#ifdef SEAL_FAST_WITH_CUDA
TORCH_LIBRARY_IMPL(seal_fast, CUDA, m) { m.impl("unrolled_linear_fit_backward", &unrolled_linear_fit_backward_aten); }
#endif

}  // namespace seal_fast
