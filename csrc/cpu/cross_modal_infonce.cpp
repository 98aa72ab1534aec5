// CPU kernel of seal_fast::cross_modal_infonce: loss and gradients in one call.
//
// level 0 ("instance", SEAL eqs. 8-9): rows of A and B (B x K) are samples.
//   S = norm(A) norm(B)^T / T;  L = mean_i(lse_j S_ij - S_ii) + mean_j(lse_i S_ij - S_jj)
// level 1 ("cluster", TAC): the 2K columns of A and B are the items.
//   C = norm([A^T; B^T]); S = C C^T / T with the diagonal removed;
//   L = mean_u(lse_{v != u} S_uv - S_u,partner(u))
// The instance level is the ATen composition shared with CUDA (one exp table,
// BLAS GEMMs; see cross_modal_infonce_aten.cpp). The cluster level is computed
// here: its (2K)^2 similarity matrix is formed once and serves the log-sum-exps
// and the gradient.
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <cmath>
#include <vector>

namespace seal_fast {

// The instance level on CPU is the ATen composition (cross_modal_infonce_aten.cpp).
std::tuple<at::Tensor, at::Tensor, at::Tensor> cross_modal_infonce_aten(const at::Tensor& A, const at::Tensor& B,
                                                                        double temperature, int64_t level,
                                                                        bool with_grad);

namespace {

// x_i / |x_i| for the n rows (length m) of X; returns the norms.
template <typename T>
std::vector<T> normalize_rows(const T* X, int64_t n, int64_t m, T* out) {
  std::vector<T> norms(n);
  for (int64_t i = 0; i < n; ++i) {
    T s = 0;
    for (int64_t k = 0; k < m; ++k) s += X[i * m + k] * X[i * m + k];
    norms[i] = std::max(std::sqrt(s), T(1e-12));  // F.normalize's eps
    for (int64_t k = 0; k < m; ++k) out[i * m + k] = X[i * m + k] / norms[i];
  }
  return norms;
}

// gradient through x = a / max(|a|, eps): da = (dx - x <dx, x>) / |a|   (when |a| > eps)
template <typename T>
void normalize_backward(const T* xn, const std::vector<T>& norms, int64_t n, int64_t m, T* g) {
  for (int64_t i = 0; i < n; ++i) {
    if (norms[i] <= T(1e-12)) {  // clamped: x = a / eps is linear in a
      for (int64_t k = 0; k < m; ++k) g[i * m + k] /= norms[i];
      continue;
    }
    T dot = 0;
    for (int64_t k = 0; k < m; ++k) dot += g[i * m + k] * xn[i * m + k];
    for (int64_t k = 0; k < m; ++k) g[i * m + k] = (g[i * m + k] - xn[i * m + k] * dot) / norms[i];
  }
}

template <typename T>
T logsumexp(const T* v, int64_t n, int64_t stride, int64_t skip) {
  T mx = -INFINITY;
  for (int64_t j = 0; j < n; ++j)
    if (j != skip) mx = std::max(mx, v[j * stride]);
  T s = 0;
  for (int64_t j = 0; j < n; ++j)
    if (j != skip) s += std::exp(v[j * stride] - mx);
  return mx + std::log(s);
}

template <typename T>
T cluster_level(const T* A, const T* B, int64_t n, int64_t K, double temperature, bool with_grad, T* gA, T* gB) {
  const int64_t m = 2 * K;
  std::vector<T> C(m * n), Cn(m * n), S(m * m), lse(m);
  for (int64_t i = 0; i < n; ++i)  // C = [A^T; B^T]
    for (int64_t k = 0; k < K; ++k) {
      C[k * n + i] = A[i * K + k];
      C[(K + k) * n + i] = B[i * K + k];
    }
  const auto norms = normalize_rows(C.data(), m, n, Cn.data());
  const T invT = T(1) / static_cast<T>(temperature);
  at::parallel_for(0, m, 1, [&](int64_t b, int64_t e) {
    for (int64_t u = b; u < e; ++u)
      for (int64_t v = 0; v < m; ++v) {
        T s = 0;
        for (int64_t i = 0; i < n; ++i) s += Cn[u * n + i] * Cn[v * n + i];
        S[u * m + v] = s * invT;
      }
  });
  T loss = 0;
  for (int64_t u = 0; u < m; ++u) {
    lse[u] = logsumexp(S.data() + u * m, m, 1, u);
    loss += lse[u] - S[u * m + (u + K) % m];
  }
  loss /= static_cast<T>(m);
  if (!with_grad) return loss;
  // dL/dS_uv = (softmax_{v != u} - delta_{v, partner}) / m; S is symmetric, so dCn = (dS + dS^T) Cn / T
  std::vector<T> dS(m * m, 0), dC(m * n, 0);
  for (int64_t u = 0; u < m; ++u)
    for (int64_t v = 0; v < m; ++v)
      if (v != u) dS[u * m + v] = (std::exp(S[u * m + v] - lse[u]) - (v == (u + K) % m ? T(1) : T(0))) / m;
  at::parallel_for(0, m, 1, [&](int64_t b, int64_t e) {
    for (int64_t u = b; u < e; ++u)
      for (int64_t v = 0; v < m; ++v) {
        const T w = (dS[u * m + v] + dS[v * m + u]) * invT;
        if (w == 0) continue;
        for (int64_t i = 0; i < n; ++i) dC[u * n + i] += w * Cn[v * n + i];
      }
  });
  normalize_backward(Cn.data(), norms, m, n, dC.data());
  for (int64_t i = 0; i < n; ++i)
    for (int64_t k = 0; k < K; ++k) {
      gA[i * K + k] = dC[k * n + i];
      gB[i * K + k] = dC[(K + k) * n + i];
    }
  return loss;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> cross_modal_infonce_cpu(const at::Tensor& A_in, const at::Tensor& B_in,
                                                                       double temperature, int64_t level,
                                                                       bool with_grad) {
  TORCH_CHECK(A_in.dim() == 2 && A_in.sizes() == B_in.sizes(), "cross_modal_infonce: A and B must both be (B, K), got ",
              A_in.sizes(), " and ", B_in.sizes());
  TORCH_CHECK(A_in.scalar_type() == B_in.scalar_type(), "cross_modal_infonce: dtype mismatch");
  TORCH_CHECK(level == 0 || level == 1, "cross_modal_infonce: level must be 0 (instance) or 1 (cluster)");
  TORCH_CHECK(temperature > 0, "cross_modal_infonce: temperature must be positive");
  TORCH_CHECK(A_in.size(0) >= 1 && A_in.size(1) >= 1, "cross_modal_infonce: empty input");
  if (level == 0) return cross_modal_infonce_aten(A_in, B_in, temperature, level, with_grad);
  const auto A = A_in.contiguous(), B = B_in.contiguous();
  const int64_t n = A.size(0), K = A.size(1);
  auto gA = with_grad ? at::empty_like(A) : at::empty({0}, A.options());
  auto gB = with_grad ? at::empty_like(B) : at::empty({0}, B.options());
  at::Tensor loss;
  AT_DISPATCH_FLOATING_TYPES(A.scalar_type(), "cross_modal_infonce_cpu", [&] {
    scalar_t* ga = with_grad ? gA.data_ptr<scalar_t>() : nullptr;
    scalar_t* gb = with_grad ? gB.data_ptr<scalar_t>() : nullptr;
    const scalar_t v =
        cluster_level<scalar_t>(A.data_ptr<scalar_t>(), B.data_ptr<scalar_t>(), n, K, temperature, with_grad, ga, gb);
    loss = at::scalar_tensor(v, A.options());
  });
  return {loss, gA, gB};
}

}  // namespace

TORCH_LIBRARY_IMPL(seal_fast, CPU, m) { m.impl("cross_modal_infonce", &cross_modal_infonce_cpu); }

}  // namespace seal_fast
