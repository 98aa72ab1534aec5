// CPU kernels of seal_fast::unrolled_linear_fit (the inner loop of human labeling)
// and of its exact backward (reverse mode through the Adam steps).
//
// Per Adam step every block of rows of Z is read once from memory: the logits of
// the block are formed, turned into the cross-entropy gradient in place, and the
// block (still in L2) is used right away for the weight gradient. Each thread
// accumulates into its own gradient buffer; the buffers are summed in thread
// order, so a run is deterministic for a given number of threads.
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "row_block_kernels.h"

namespace seal_fast {
namespace {

constexpr int64_t kRowBlock = 64;  // 64 rows x 1280 floats = 320 KB: stays in a 512 KB L2

struct Adam {
  double lr, beta1, beta2, eps;
};

struct Problem {
  std::vector<at::Tensor> Zs;  // (B, d_k) contiguous
  at::Tensor targets;          // (B, K) contiguous
  std::vector<at::Tensor> W0s, b0s;
  int64_t B, K;
};

Problem check_inputs(at::TensorList Zs, const at::Tensor& targets, at::TensorList W0s, at::TensorList b0s,
                     int64_t steps) {
  TORCH_CHECK(!Zs.empty(), "unrolled_linear_fit: at least one space is needed");
  TORCH_CHECK(Zs.size() == W0s.size() && Zs.size() == b0s.size(),
              "unrolled_linear_fit: Zs, W0s and b0s must have one entry per space");
  TORCH_CHECK(targets.dim() == 2, "unrolled_linear_fit: targets must be (B, K), got ", targets.sizes());
  TORCH_CHECK(steps >= 0, "unrolled_linear_fit: steps must be >= 0");
  Problem p;
  p.B = targets.size(0);
  p.K = targets.size(1);
  TORCH_CHECK(p.K > 0, "unrolled_linear_fit: K must be positive");
  p.targets = targets.contiguous();
  for (size_t s = 0; s < Zs.size(); ++s) {
    const auto& Z = Zs[s];
    TORCH_CHECK(Z.dim() == 2 && Z.size(0) == p.B, "unrolled_linear_fit: Zs[", s, "] must be (B=", p.B,
                ", d), got ", Z.sizes());
    TORCH_CHECK(W0s[s].dim() == 2 && W0s[s].size(0) == p.K && W0s[s].size(1) == Z.size(1),
                "unrolled_linear_fit: W0s[", s, "] must be (K, d) = (", p.K, ", ", Z.size(1), "), got ",
                W0s[s].sizes());
    TORCH_CHECK(b0s[s].dim() == 1 && b0s[s].size(0) == p.K, "unrolled_linear_fit: b0s[", s, "] must be (K,)");
    for (const auto* t : {&Z, &W0s[s], &b0s[s]}) {
      TORCH_CHECK(t->scalar_type() == targets.scalar_type(), "unrolled_linear_fit: all tensors must share a dtype");
      TORCH_CHECK(t->device() == targets.device(), "unrolled_linear_fit: all tensors must be on one device");
    }
    p.Zs.push_back(Z.contiguous());
    p.W0s.push_back(W0s[s].contiguous());
    p.b0s.push_back(b0s[s].contiguous());
  }
  return p;
}

// softmax of one row of logits, in place
template <typename T>
inline void softmax_row(T* l, int64_t K) {
  T mx = l[0];
  for (int64_t k = 1; k < K; ++k) mx = std::max(mx, l[k]);
  T sum = 0;
  for (int64_t k = 0; k < K; ++k) {
    l[k] = std::exp(l[k] - mx);
    sum += l[k];
  }
  const T inv = T(1) / sum;
  for (int64_t k = 0; k < K; ++k) l[k] *= inv;
}

// Per-thread buffers of a sweep, allocated once per call of the op.
template <typename T>
struct Scratch {
  Scratch(int64_t K, int64_t d)
      : threads(at::get_num_threads()), W(threads * K * d), b(threads * K), L(threads * kRowBlock * K) {}
  int64_t threads;
  std::vector<T> W, b, L;
};

// One sweep over the rows of Z. For each block: L = Z_blk W^T + b, then
// `per_block(r0, R, L)` may turn L into a gradient G and return true to have
// G^T Z_blk accumulated into the calling thread's partial sums (scratch.W/.b).
template <typename T, typename F>
void sweep(const T* Z, int64_t B, int64_t d, int64_t K, const T* W, const T* b, Scratch<T>& scratch,
           const F& per_block) {
  const int64_t nblocks = (B + kRowBlock - 1) / kRowBlock;
  std::fill(scratch.W.begin(), scratch.W.end(), T(0));
  std::fill(scratch.b.begin(), scratch.b.end(), T(0));
  at::parallel_for(0, nblocks, 1, [&](int64_t begin, int64_t end) {
    const int64_t tid = std::min<int64_t>(at::get_thread_num(), scratch.threads - 1);
    T* L = scratch.L.data() + tid * kRowBlock * K;
    T* gW = scratch.W.data() + tid * K * d;
    T* gb = scratch.b.data() + tid * K;
    for (int64_t blk = begin; blk < end; ++blk) {
      const int64_t r0 = blk * kRowBlock;
      const int64_t R = std::min(kRowBlock, B - r0);
      cpu::rows_times_mt(Z + r0 * d, R, d, W, K, L);
      for (int64_t r = 0; r < R; ++r)
        for (int64_t k = 0; k < K; ++k) L[r * K + k] += b[k];
      if (per_block(r0, R, L)) {
        cpu::accumulate_gt_z(L, Z + r0 * d, R, d, K, gW);
        for (int64_t r = 0; r < R; ++r)
          for (int64_t k = 0; k < K; ++k) gb[k] += L[r * K + k];
      }
    }
  });
}

// Sum the per-thread partials (in thread order: deterministic) into out.
template <typename T>
void reduce_partials(const std::vector<T>& partial, int64_t n, T* out) {
  const int64_t parts = static_cast<int64_t>(partial.size()) / n;
  std::fill(out, out + n, T(0));
  for (int64_t t = 0; t < parts; ++t)
    for (int64_t i = 0; i < n; ++i) out[i] += partial[t * n + i];
}

template <typename T>
void adam_step(T* p, const T* g, T* m, T* v, int64_t n, int64_t t, const Adam& a) {
  const T b1 = a.beta1, b2 = a.beta2;
  const T step = a.lr / (1.0 - std::pow(a.beta1, t));
  const T sqrt_bias2 = std::sqrt(1.0 - std::pow(a.beta2, t));
  const T eps = a.eps;
  for (int64_t i = 0; i < n; ++i) {
    m[i] = b1 * m[i] + (1 - b1) * g[i];
    v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
    p[i] -= step * m[i] / (std::sqrt(v[i]) / sqrt_bias2 + eps);
  }
}

// State of one space's fit; with `history` the forward keeps what the reverse
// pass needs: W_{t-1}, b_{t-1}, g_t, m_t, v_t for every step (each K x d, small).
template <typename T>
struct SpaceFit {
  std::vector<T> W, b, mW, vW, mb, vb, gW, gb;
  std::vector<std::vector<T>> hist_W, hist_b, hist_gW, hist_gb, hist_mW, hist_vW, hist_mb, hist_vb;
};

template <typename T>
SpaceFit<T> fit_space(const T* Z, int64_t B, int64_t d, int64_t K, const T* targets, const T* tsum,
                      const T* W0, const T* b0, int64_t steps, const Adam& adam, bool history) {
  SpaceFit<T> f;
  f.W.assign(W0, W0 + K * d);
  f.b.assign(b0, b0 + K);
  f.mW.assign(K * d, 0);
  f.vW.assign(K * d, 0);
  f.mb.assign(K, 0);
  f.vb.assign(K, 0);
  f.gW.assign(K * d, 0);
  f.gb.assign(K, 0);
  Scratch<T> scratch(K, d);
  const T inv_B = T(1) / static_cast<T>(std::max<int64_t>(B, 1));
  for (int64_t t = 1; t <= steps; ++t) {
    if (history) {
      f.hist_W.push_back(f.W);
      f.hist_b.push_back(f.b);
    }
    sweep<T>(Z, B, d, K, f.W.data(), f.b.data(), scratch, [&](int64_t r0, int64_t R, T* L) {
      for (int64_t r = 0; r < R; ++r) {  // L -> d mean-CE / d logits
        T* l = L + r * K;
        const T* tr = targets + (r0 + r) * K;
        softmax_row(l, K);
        for (int64_t k = 0; k < K; ++k) l[k] = (l[k] * tsum[r0 + r] - tr[k]) * inv_B;
      }
      return true;
    });
    reduce_partials(scratch.W, K * d, f.gW.data());
    reduce_partials(scratch.b, K, f.gb.data());
    adam_step(f.W.data(), f.gW.data(), f.mW.data(), f.vW.data(), K * d, t, adam);
    adam_step(f.b.data(), f.gb.data(), f.mb.data(), f.vb.data(), K, t, adam);
    if (history) {
      f.hist_gW.push_back(f.gW);
      f.hist_gb.push_back(f.gb);
      f.hist_mW.push_back(f.mW);
      f.hist_vW.push_back(f.vW);
      f.hist_mb.push_back(f.mb);
      f.hist_vb.push_back(f.vb);
    }
  }
  return f;
}

template <typename T>
void final_logits(const T* Z, int64_t B, int64_t d, int64_t K, const T* W, const T* b, T* out) {
  const int64_t nblocks = (B + kRowBlock - 1) / kRowBlock;
  at::parallel_for(0, nblocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t blk = begin; blk < end; ++blk) {
      const int64_t r0 = blk * kRowBlock;
      const int64_t R = std::min(kRowBlock, B - r0);
      cpu::rows_times_mt(Z + r0 * d, R, d, W, K, out + r0 * K);
      for (int64_t r = 0; r < R; ++r)
        for (int64_t k = 0; k < K; ++k) out[(r0 + r) * K + k] += b[k];
    }
  });
}

template <typename T>
std::vector<T> row_sums(const T* targets, int64_t B, int64_t K) {
  std::vector<T> s(B, 0);
  for (int64_t r = 0; r < B; ++r)
    for (int64_t k = 0; k < K; ++k) s[r] += targets[r * K + k];
  return s;
}

std::tuple<std::vector<at::Tensor>, std::vector<at::Tensor>, std::vector<at::Tensor>> unrolled_linear_fit_cpu(
    at::TensorList Zs, const at::Tensor& targets, at::TensorList W0s, at::TensorList b0s, int64_t steps,
    double lr, double beta1, double beta2, double eps) {
  Problem p = check_inputs(Zs, targets, W0s, b0s, steps);
  TORCH_CHECK(targets.device().is_cpu(), "unrolled_linear_fit_cpu: expected CPU tensors");
  const Adam adam{lr, beta1, beta2, eps};
  std::vector<at::Tensor> Ws, bs, logits;
  AT_DISPATCH_FLOATING_TYPES(targets.scalar_type(), "unrolled_linear_fit_cpu", [&] {
    const scalar_t* T = p.targets.data_ptr<scalar_t>();
    const auto tsum = row_sums(T, p.B, p.K);
    for (size_t s = 0; s < p.Zs.size(); ++s) {
      const int64_t d = p.Zs[s].size(1);
      const scalar_t* Z = p.Zs[s].data_ptr<scalar_t>();
      auto f = fit_space<scalar_t>(Z, p.B, d, p.K, T, tsum.data(), p.W0s[s].data_ptr<scalar_t>(),
                                   p.b0s[s].data_ptr<scalar_t>(), steps, adam, false);
      auto W = at::empty({p.K, d}, p.targets.options());
      auto b = at::empty({p.K}, p.targets.options());
      std::copy(f.W.begin(), f.W.end(), W.data_ptr<scalar_t>());
      std::copy(f.b.begin(), f.b.end(), b.data_ptr<scalar_t>());
      auto L = at::empty({p.B, p.K}, p.targets.options());
      final_logits<scalar_t>(Z, p.B, d, p.K, f.W.data(), f.b.data(), L.data_ptr<scalar_t>());
      Ws.push_back(W);
      bs.push_back(b);
      logits.push_back(L);
    }
  });
  return {Ws, bs, logits};
}

// Reverse mode through the unrolled fit: d(outer)/d(targets) given the
// gradients of the outer loss with respect to the outputs (W_M, b_M, logits_M).
template <typename T>
void backward_space(const T* Z, int64_t B, int64_t d, int64_t K, const T* targets, const T* tsum, const T* W0,
                    const T* b0, int64_t steps, const Adam& adam, const T* grad_W, const T* grad_b,
                    const T* grad_logits, T* grad_targets) {
  auto f = fit_space<T>(Z, B, d, K, targets, tsum, W0, b0, steps, adam, true);
  Scratch<T> scratch(K, d);
  std::vector<T> tmp_W(K * d), tmp_b(K);
  // adjoints of W_M, b_M: direct ones plus those through logits_M = Z W_M^T + b_M
  std::vector<T> Wbar(grad_W, grad_W + K * d), bbar(grad_b, grad_b + K);
  sweep<T>(Z, B, d, K, f.W.data(), f.b.data(), scratch, [&](int64_t r0, int64_t R, T* L) {
    std::copy(grad_logits + r0 * K, grad_logits + (r0 + R) * K, L);
    return true;
  });
  reduce_partials(scratch.W, K * d, tmp_W.data());
  reduce_partials(scratch.b, K, tmp_b.data());
  for (int64_t i = 0; i < K * d; ++i) Wbar[i] += tmp_W[i];
  for (int64_t k = 0; k < K; ++k) bbar[k] += tmp_b[k];

  std::vector<T> mbarW(K * d, 0), vbarW(K * d, 0), mbarb(K, 0), vbarb(K, 0), gbarW(K * d), gbarb(K);
  const T inv_B = T(1) / static_cast<T>(std::max<int64_t>(B, 1));
  auto adam_adjoint = [&](int64_t t, const std::vector<T>& pbar, const std::vector<T>& m, const std::vector<T>& v,
                          const std::vector<T>& g, std::vector<T>& mbar, std::vector<T>& vbar,
                          std::vector<T>& gbar) {
    const T b1 = adam.beta1, b2 = adam.beta2;
    const T step = adam.lr / (1.0 - std::pow(adam.beta1, t));
    const T sqrt_bias2 = std::sqrt(1.0 - std::pow(adam.beta2, t));
    for (size_t i = 0; i < pbar.size(); ++i) {
      const T sv = std::sqrt(v[i]);
      const T denom = sv / sqrt_bias2 + static_cast<T>(adam.eps);
      // p_t = p_{t-1} - step * m_t / denom(v_t)
      const T mb = mbar[i] - pbar[i] * step / denom;
      const T vb = vbar[i] + (sv > 0 ? pbar[i] * step * m[i] / (denom * denom) / (2 * sv * sqrt_bias2) : T(0));
      gbar[i] = (1 - b1) * mb + 2 * (1 - b2) * g[i] * vb;
      mbar[i] = b1 * mb;
      vbar[i] = b2 * vb;
    }
  };
  std::vector<T> Gbar(B * K);
  for (int64_t t = steps; t >= 1; --t) {
    const auto& Wprev = f.hist_W[t - 1];
    const auto& bprev = f.hist_b[t - 1];
    adam_adjoint(t, Wbar, f.hist_mW[t - 1], f.hist_vW[t - 1], f.hist_gW[t - 1], mbarW, vbarW, gbarW);
    adam_adjoint(t, bbar, f.hist_mb[t - 1], f.hist_vb[t - 1], f.hist_gb[t - 1], mbarb, vbarb, gbarb);
    // adjoint of G_t: g_t = G_t^T Z  =>  Gbar = Z gbarW^T + gbarb
    final_logits<T>(Z, B, d, K, gbarW.data(), gbarb.data(), Gbar.data());
    // G_t = (softmax(Z W_{t-1}^T + b_{t-1}) * tsum - targets) / B
    sweep<T>(Z, B, d, K, Wprev.data(), bprev.data(), scratch, [&](int64_t r0, int64_t R, T* L) {
      for (int64_t r = 0; r < R; ++r) {
        T* l = L + r * K;  // becomes the adjoint of the logits
        const T* gb_r = Gbar.data() + (r0 + r) * K;
        T* tb = grad_targets + (r0 + r) * K;
        softmax_row(l, K);
        T dot_gs = 0;
        for (int64_t k = 0; k < K; ++k) dot_gs += gb_r[k] * l[k];
        for (int64_t k = 0; k < K; ++k) tb[k] += (dot_gs - gb_r[k]) * inv_B;
        // sbar = Gbar * tsum / B ; lbar = s * (sbar - <sbar, s>)
        const T scale = tsum[r0 + r] * inv_B;
        for (int64_t k = 0; k < K; ++k) l[k] = l[k] * scale * (gb_r[k] - dot_gs);
      }
      return true;
    });
    reduce_partials(scratch.W, K * d, tmp_W.data());
    reduce_partials(scratch.b, K, tmp_b.data());
    for (int64_t i = 0; i < K * d; ++i) Wbar[i] += tmp_W[i];
    for (int64_t k = 0; k < K; ++k) bbar[k] += tmp_b[k];
  }
}

at::Tensor unrolled_linear_fit_backward_cpu(at::TensorList grad_Ws, at::TensorList grad_bs,
                                            at::TensorList grad_logits, at::TensorList Zs,
                                            const at::Tensor& targets, at::TensorList W0s, at::TensorList b0s,
                                            int64_t steps, double lr, double beta1, double beta2, double eps) {
  Problem p = check_inputs(Zs, targets, W0s, b0s, steps);
  TORCH_CHECK(targets.device().is_cpu(), "unrolled_linear_fit_backward_cpu: expected CPU tensors");
  TORCH_CHECK(grad_Ws.size() == p.Zs.size() && grad_bs.size() == p.Zs.size() && grad_logits.size() == p.Zs.size(),
              "unrolled_linear_fit_backward: one gradient per space and output is needed");
  const Adam adam{lr, beta1, beta2, eps};
  auto grad_targets = at::zeros_like(p.targets);
  AT_DISPATCH_FLOATING_TYPES(targets.scalar_type(), "unrolled_linear_fit_backward_cpu", [&] {
    const scalar_t* T = p.targets.data_ptr<scalar_t>();
    const auto tsum = row_sums(T, p.B, p.K);
    for (size_t s = 0; s < p.Zs.size(); ++s) {
      const int64_t d = p.Zs[s].size(1);
      const auto gW = grad_Ws[s].to(p.targets.scalar_type()).contiguous();
      const auto gb = grad_bs[s].to(p.targets.scalar_type()).contiguous();
      const auto gl = grad_logits[s].to(p.targets.scalar_type()).contiguous();
      TORCH_CHECK(gW.sizes() == p.W0s[s].sizes() && gb.sizes() == p.b0s[s].sizes() &&
                      gl.sizes() == p.targets.sizes(),
                  "unrolled_linear_fit_backward: gradient shapes do not match the outputs");
      backward_space<scalar_t>(p.Zs[s].data_ptr<scalar_t>(), p.B, d, p.K, T, tsum.data(),
                               p.W0s[s].data_ptr<scalar_t>(), p.b0s[s].data_ptr<scalar_t>(), steps, adam,
                               gW.data_ptr<scalar_t>(), gb.data_ptr<scalar_t>(), gl.data_ptr<scalar_t>(),
                               grad_targets.data_ptr<scalar_t>());
    }
  });
  return grad_targets;
}

}  // namespace

TORCH_LIBRARY_IMPL(seal_fast, CPU, m) {
  m.impl("unrolled_linear_fit", &unrolled_linear_fit_cpu);
  m.impl("unrolled_linear_fit_backward", &unrolled_linear_fit_backward_cpu);
}

}  // namespace seal_fast
