// CPU kernel of seal_fast::cross_modal_infonce: loss and gradients in one call.
//
// level 0 ("instance", SEAL eqs. 8-9): rows of A and B (B x K) are samples.
//   S = norm(A) norm(B)^T / T;  L = mean_i(lse_j S_ij - S_ii) + mean_j(lse_i S_ij - S_jj)
// level 1 ("cluster", TAC): the 2K columns of A and B are the items.
//   C = norm([A^T; B^T]); S = C C^T / T with the diagonal removed;
//   L = mean_u(lse_{v != u} S_uv - S_u,partner(u))
// Both are written as "items X (n x m) and Y (n x m) contrasted row by row":
// instance contrasts X = A, Y = B across rows; cluster contrasts the 2K rows of
// C with each other. The similarity matrix is small (batch^2 or (2K)^2), so it
// is formed once, used for both log-sum-exps and for the gradient.
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <cmath>
#include <vector>

namespace seal_fast {
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

// Rows of A and B are unit vectors after normalisation, so every S_ij = cos / T
// lies in [-1/T, 1/T]. Shifting by the bound 1/T instead of each row's and each
// column's own maximum lets one table E = exp(S - 1/T) serve the row and the
// column log-sum-exps and both softmaxes of the gradient: n^2 exps instead of
// 4 n^2, all read row by row. The shift is safe from underflow while 2/T stays
// far above float's range limit; below T = 1/30 the per-row/column maxima are used.
constexpr double kSharedShiftMaxInvT = 30.0;

template <typename T>
T instance_level(const T* A, const T* B, int64_t n, int64_t K, double temperature, bool with_grad, T* gA, T* gB) {
  std::vector<T> An(n * K), Bn(n * K), S(n * n), lse_row(n), lse_col(n);
  const auto na = normalize_rows(A, n, K, An.data());
  const auto nb = normalize_rows(B, n, K, Bn.data());
  const T invT = T(1) / static_cast<T>(temperature);
  at::parallel_for(0, n, 16, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      for (int64_t j = 0; j < n; ++j) {
        T s = 0;
        for (int64_t k = 0; k < K; ++k) s += An[i * K + k] * Bn[j * K + k];
        S[i * n + j] = s * invT;
      }
  });
  std::vector<T> s_diag(n);
  for (int64_t i = 0; i < n; ++i) s_diag[i] = S[i * n + i];
  const bool shared_shift = 1.0 / temperature <= kSharedShiftMaxInvT;
  std::vector<T> row_sum, col_sum;
  if (shared_shift) {
    const T shift = invT;
    row_sum.assign(n, 0);
    col_sum.assign(n, 0);
    at::parallel_for(0, n, 16, [&](int64_t b, int64_t e) {  // S becomes E, rows summed
      for (int64_t i = b; i < e; ++i) {
        T sum = 0;
        for (int64_t j = 0; j < n; ++j) sum += (S[i * n + j] = std::exp(S[i * n + j] - shift));
        row_sum[i] = sum;
      }
    });
    at::parallel_for(0, n, 64, [&](int64_t b, int64_t e) {  // columns: each task owns a range of j
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = b; j < e; ++j) col_sum[j] += S[i * n + j];
    });
    for (int64_t i = 0; i < n; ++i) {
      lse_row[i] = std::log(row_sum[i]) + shift;
      lse_col[i] = std::log(col_sum[i]) + shift;
    }
  } else {
    at::parallel_for(0, n, 16, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        lse_row[i] = logsumexp(S.data() + i * n, n, 1, -1);
        lse_col[i] = logsumexp(S.data() + i, n, n, -1);
      }
    });
  }
  T loss = 0;
  for (int64_t i = 0; i < n; ++i) loss += lse_row[i] + lse_col[i] - 2 * s_diag[i];
  loss /= static_cast<T>(n);
  if (!with_grad) return loss;
  // dL/dS_ij = (softmax_row + softmax_col - 2 delta_ij) / n, in place
  const T inv_n = T(1) / static_cast<T>(n);
  at::parallel_for(0, n, 16, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      for (int64_t j = 0; j < n; ++j) {
        T p;
        if (shared_shift) {
          p = S[i * n + j] / row_sum[i] + S[i * n + j] / col_sum[j];
        } else {
          const T s = S[i * n + j];
          p = std::exp(s - lse_row[i]) + std::exp(s - lse_col[j]);
        }
        S[i * n + j] = (p - (i == j ? T(2) : T(0))) * inv_n;
      }
  });
  // gA = G Bn / T (rows of G); gB = G^T An / T, accumulated with each task owning a range of rows of gB
  at::parallel_for(0, n, 16, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      for (int64_t k = 0; k < K; ++k) gA[i * K + k] = 0;
      for (int64_t j = 0; j < n; ++j) {
        const T g = S[i * n + j] * invT;
        for (int64_t k = 0; k < K; ++k) gA[i * K + k] += g * Bn[j * K + k];
      }
    }
  });
  at::parallel_for(0, n, 16, [&](int64_t b, int64_t e) {
    for (int64_t j = b; j < e; ++j)
      for (int64_t k = 0; k < K; ++k) gB[j * K + k] = 0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = b; j < e; ++j) {
        const T g = S[i * n + j] * invT;
        for (int64_t k = 0; k < K; ++k) gB[j * K + k] += g * An[i * K + k];
      }
  });
  normalize_backward(An.data(), na, n, K, gA);
  normalize_backward(Bn.data(), nb, n, K, gB);
  return loss;
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
  const auto A = A_in.contiguous(), B = B_in.contiguous();
  const int64_t n = A.size(0), K = A.size(1);
  auto gA = with_grad ? at::empty_like(A) : at::empty({0}, A.options());
  auto gB = with_grad ? at::empty_like(B) : at::empty({0}, B.options());
  at::Tensor loss;
  AT_DISPATCH_FLOATING_TYPES(A.scalar_type(), "cross_modal_infonce_cpu", [&] {
    scalar_t* ga = with_grad ? gA.data_ptr<scalar_t>() : nullptr;
    scalar_t* gb = with_grad ? gB.data_ptr<scalar_t>() : nullptr;
    const scalar_t v = level == 0
        ? instance_level<scalar_t>(A.data_ptr<scalar_t>(), B.data_ptr<scalar_t>(), n, K, temperature, with_grad, ga, gb)
        : cluster_level<scalar_t>(A.data_ptr<scalar_t>(), B.data_ptr<scalar_t>(), n, K, temperature, with_grad, ga, gb);
    loss = at::scalar_tensor(v, A.options());
  });
  return {loss, gA, gB};
}

}  // namespace

TORCH_LIBRARY_IMPL(seal_fast, CPU, m) { m.impl("cross_modal_infonce", &cross_modal_infonce_cpu); }

}  // namespace seal_fast
