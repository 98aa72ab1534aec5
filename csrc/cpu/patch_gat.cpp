// CPU kernels of seal_fast::patch_gat (single-head graph attention over many
// small per-image patch graphs, optional mean pooling), its backward, and the
// companion patch_knn (cosine k-nearest patches within each image).
//
// The projection H = X W (and, backwards, X^T dH and dH W^T) goes to the GEMM
// library through at::mm; everything after it runs image by image
// (at::parallel_for), with each image's M x k attention kept in cache. Pooling
// is folded in: mean_i sum_j alpha_ij h_nbr(i,j) = sum_m beta_m h_m with
// beta_m = (1/M) sum of the alphas that point at node m, so a pooled layer never
// forms the (B, M, C) output. A pooled forward never forms H either: the scores
// are X (W a) and the output is (sum_m beta_m x_m) W, one small GEMM per batch,
// which is M times less work than the projection (81x for a 9 x 9 patch grid).
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace seal_fast {
namespace {

void check_gat_inputs(const at::Tensor& X, const at::Tensor& W, const at::Tensor& a_src, const at::Tensor& a_dst,
                      const at::Tensor& nbr) {
  TORCH_CHECK(X.dim() == 3, "patch_gat: X must be (B, M, c), got ", X.sizes());
  TORCH_CHECK(W.dim() == 2 && W.size(0) == X.size(2), "patch_gat: W must be (c, C) with c = ", X.size(2), ", got ",
              W.sizes());
  TORCH_CHECK(a_src.dim() == 1 && a_src.size(0) == W.size(1) && a_dst.sizes() == a_src.sizes(),
              "patch_gat: att_src and att_dst must be (C,)");
  TORCH_CHECK(nbr.dim() == 3 && nbr.size(0) == X.size(0) && nbr.size(1) == X.size(1),
              "patch_gat: nbr must be (B, M, k), got ", nbr.sizes());
  TORCH_CHECK(nbr.scalar_type() == at::kLong, "patch_gat: nbr must be int64");
  TORCH_CHECK(nbr.size(2) >= 1, "patch_gat: every node needs at least one neighbour (its self loop)");
  for (const auto* t : {&W, &a_src, &a_dst})
    TORCH_CHECK(t->scalar_type() == X.scalar_type(), "patch_gat: X, W, att_src and att_dst must share a dtype");
  if (nbr.numel() > 0) {
    TORCH_CHECK(nbr.min().item<int64_t>() >= 0 && nbr.max().item<int64_t>() < X.size(1),
                "patch_gat: neighbour indices must lie in [0, M)");
  }
}

// Attention of one image: alpha (M x k) from the scores; returns nothing, fills alpha.
template <typename T>
void attention(const T* s_src, const T* s_dst, const int64_t* nb, int64_t M, int64_t k, T slope, T* alpha) {
  for (int64_t i = 0; i < M; ++i) {
    T* a = alpha + i * k;
    T mx = -INFINITY;
    for (int64_t j = 0; j < k; ++j) {
      T z = s_dst[i] + s_src[nb[i * k + j]];
      z = z > 0 ? z : slope * z;
      a[j] = z;
      mx = std::max(mx, z);
    }
    T sum = 0;
    for (int64_t j = 0; j < k; ++j) {
      a[j] = std::exp(a[j] - mx);
      sum += a[j];
    }
    for (int64_t j = 0; j < k; ++j) a[j] /= sum;
  }
}

// The pooled forward without H: a_dst . (x_i W) = x_i . (W a_dst), and
// mean_i sum_j alpha_ij x_j W = (sum_m beta_m x_m) W.
std::tuple<at::Tensor, at::Tensor> patch_gat_pooled_cpu(const at::Tensor& X, const at::Tensor& W,
                                                        const at::Tensor& a_src, const at::Tensor& a_dst,
                                                        const at::Tensor& nbr, double negative_slope) {
  const int64_t B = X.size(0), M = X.size(1), c = X.size(2), k = nbr.size(2);
  const auto scores = at::mm(X.view({B * M, c}), at::stack({at::mv(W, a_src), at::mv(W, a_dst)}, 1));  // (B M, 2)
  const auto s_src = scores.select(1, 0).contiguous();
  const auto s_dst = scores.select(1, 1).contiguous();
  auto alpha = at::empty({B, M, k}, X.options());
  auto pooled = at::zeros({B, c}, X.options());  // sum_m beta_m x_m per image
  AT_DISPATCH_FLOATING_TYPES(X.scalar_type(), "patch_gat_pooled_cpu", [&] {
    const scalar_t* x = X.data_ptr<scalar_t>();
    const scalar_t* ss = s_src.data_ptr<scalar_t>();
    const scalar_t* sd = s_dst.data_ptr<scalar_t>();
    const int64_t* nb = nbr.data_ptr<int64_t>();
    scalar_t* al = alpha.data_ptr<scalar_t>();
    scalar_t* p = pooled.data_ptr<scalar_t>();
    const scalar_t slope = static_cast<scalar_t>(negative_slope);
    at::parallel_for(0, B, 8, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> beta(M);
      for (int64_t b = begin; b < end; ++b) {
        const int64_t* nbb = nb + b * M * k;
        scalar_t* ab = al + b * M * k;
        attention(ss + b * M, sd + b * M, nbb, M, k, slope, ab);
        std::fill(beta.begin(), beta.end(), scalar_t(0));
        for (int64_t t = 0; t < M * k; ++t) beta[nbb[t]] += ab[t];
        scalar_t* pb = p + b * c;
        for (int64_t m = 0; m < M; ++m) {
          const scalar_t w = beta[m] / static_cast<scalar_t>(M);
          const scalar_t* xm = x + (b * M + m) * c;
          for (int64_t q = 0; q < c; ++q) pb[q] += w * xm[q];
        }
      }
    });
  });
  return {at::mm(pooled, W), alpha};
}

std::tuple<at::Tensor, at::Tensor> patch_gat_cpu(const at::Tensor& X_in, const at::Tensor& W, const at::Tensor& a_src,
                                                 const at::Tensor& a_dst, const at::Tensor& nbr_in,
                                                 double negative_slope, bool pool) {
  check_gat_inputs(X_in, W, a_src, a_dst, nbr_in);
  const auto X = X_in.contiguous();
  const auto nbr = nbr_in.contiguous();
  if (pool) return patch_gat_pooled_cpu(X, W, a_src, a_dst, nbr, negative_slope);
  const int64_t B = X.size(0), M = X.size(1), c = X.size(2), C = W.size(1), k = nbr.size(2);
  const auto H = at::mm(X.view({B * M, c}), W).view({B, M, C});  // the projection, by the GEMM library
  const auto s_src = at::mv(H.view({B * M, C}), a_src).view({B, M});
  const auto s_dst = at::mv(H.view({B * M, C}), a_dst).view({B, M});
  auto alpha = at::empty({B, M, k}, X.options());
  auto out = at::empty({B, M, C}, X.options());
  AT_DISPATCH_FLOATING_TYPES(X.scalar_type(), "patch_gat_cpu", [&] {
    const scalar_t* h = H.data_ptr<scalar_t>();
    const scalar_t* ss = s_src.data_ptr<scalar_t>();
    const scalar_t* sd = s_dst.data_ptr<scalar_t>();
    const int64_t* nb = nbr.data_ptr<int64_t>();
    scalar_t* al = alpha.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    const scalar_t slope = static_cast<scalar_t>(negative_slope);
    at::parallel_for(0, B, 8, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const scalar_t* hb = h + b * M * C;
        const int64_t* nbb = nb + b * M * k;
        scalar_t* ab = al + b * M * k;
        attention(ss + b * M, sd + b * M, nbb, M, k, slope, ab);
        for (int64_t i = 0; i < M; ++i) {
          scalar_t* oi = o + (b * M + i) * C;
          std::fill(oi, oi + C, scalar_t(0));
          for (int64_t j = 0; j < k; ++j) {
            const scalar_t w = ab[i * k + j];
            const scalar_t* hm = hb + nbb[i * k + j] * C;
            for (int64_t q = 0; q < C; ++q) oi[q] += w * hm[q];
          }
        }
      }
    });
  });
  return {out, alpha};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> patch_gat_backward_cpu(
    const at::Tensor& grad_out_in, const at::Tensor& X_in, const at::Tensor& W, const at::Tensor& a_src,
    const at::Tensor& a_dst, const at::Tensor& nbr_in, const at::Tensor& alpha_in, double negative_slope, bool pool) {
  check_gat_inputs(X_in, W, a_src, a_dst, nbr_in);
  const auto X = X_in.contiguous();
  const auto nbr = nbr_in.contiguous();
  const auto alpha = alpha_in.contiguous();
  const auto grad_out = grad_out_in.contiguous();
  const int64_t B = X.size(0), M = X.size(1), c = X.size(2), C = W.size(1), k = nbr.size(2);
  TORCH_CHECK(pool ? grad_out.sizes() == at::IntArrayRef({B, C}) : grad_out.sizes() == at::IntArrayRef({B, M, C}),
              "patch_gat_backward: grad_out has the wrong shape");
  const auto H = at::mm(X.view({B * M, c}), W).view({B, M, C});  // recomputed rather than stored
  const auto s_src = at::mv(H.view({B * M, C}), a_src).view({B, M});
  const auto s_dst = at::mv(H.view({B * M, C}), a_dst).view({B, M});
  auto dH = at::empty({B, M, C}, X.options());
  auto ds_src = at::empty({B, M}, X.options());
  auto ds_dst = at::empty({B, M}, X.options());
  AT_DISPATCH_FLOATING_TYPES(X.scalar_type(), "patch_gat_backward_cpu", [&] {
    const scalar_t* h = H.data_ptr<scalar_t>();
    const scalar_t* ss = s_src.data_ptr<scalar_t>();
    const scalar_t* sd = s_dst.data_ptr<scalar_t>();
    const int64_t* nb = nbr.data_ptr<int64_t>();
    const scalar_t* al = alpha.data_ptr<scalar_t>();
    const scalar_t* go = grad_out.data_ptr<scalar_t>();
    const scalar_t* as = a_src.contiguous().data_ptr<scalar_t>();
    const scalar_t* ad = a_dst.contiguous().data_ptr<scalar_t>();
    scalar_t* dh = dH.data_ptr<scalar_t>();
    scalar_t* dss = ds_src.data_ptr<scalar_t>();
    scalar_t* dsd = ds_dst.data_ptr<scalar_t>();
    const scalar_t slope = static_cast<scalar_t>(negative_slope);
    const scalar_t invM = scalar_t(1) / static_cast<scalar_t>(M);
    at::parallel_for(0, B, 8, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> u(pool ? M : 0), dalpha(M * k), beta(M);
      for (int64_t b = begin; b < end; ++b) {
        const scalar_t* hb = h + b * M * C;
        const int64_t* nbb = nb + b * M * k;
        const scalar_t* ab = al + b * M * k;
        scalar_t* dhb = dh + b * M * C;
        // message path: dH_m gets the attention-weighted output gradients; dalpha_ij = dout_i . h_nbr
        std::fill(dhb, dhb + M * C, scalar_t(0));
        if (pool) {
          const scalar_t* g = go + b * C;
          std::fill(beta.begin(), beta.end(), scalar_t(0));
          for (int64_t t = 0; t < M * k; ++t) beta[nbb[t]] += ab[t];
          for (int64_t m = 0; m < M; ++m) {
            const scalar_t* hm = hb + m * C;
            scalar_t dot = 0;
            for (int64_t q = 0; q < C; ++q) dot += g[q] * hm[q];
            u[m] = dot * invM;
            const scalar_t w = beta[m] * invM;
            for (int64_t q = 0; q < C; ++q) dhb[m * C + q] = w * g[q];
          }
          for (int64_t t = 0; t < M * k; ++t) dalpha[t] = u[nbb[t]];
        } else {
          for (int64_t i = 0; i < M; ++i) {
            const scalar_t* gi = go + (b * M + i) * C;
            for (int64_t j = 0; j < k; ++j) {
              const int64_t m = nbb[i * k + j];
              const scalar_t* hm = hb + m * C;
              const scalar_t w = ab[i * k + j];
              scalar_t dot = 0;
              for (int64_t q = 0; q < C; ++q) {
                dot += gi[q] * hm[q];
                dhb[m * C + q] += w * gi[q];
              }
              dalpha[i * k + j] = dot;
            }
          }
        }
        // softmax and LeakyReLU backward, then the two score vectors
        scalar_t* dssb = dss + b * M;
        scalar_t* dsdb = dsd + b * M;
        std::fill(dssb, dssb + M, scalar_t(0));
        std::fill(dsdb, dsdb + M, scalar_t(0));
        for (int64_t i = 0; i < M; ++i) {
          scalar_t dot = 0;
          for (int64_t j = 0; j < k; ++j) dot += ab[i * k + j] * dalpha[i * k + j];
          for (int64_t j = 0; j < k; ++j) {
            const int64_t m = nbb[i * k + j];
            const scalar_t z = sd[b * M + i] + ss[b * M + m];
            const scalar_t de = ab[i * k + j] * (dalpha[i * k + j] - dot) * (z > 0 ? scalar_t(1) : slope);
            dsdb[i] += de;
            dssb[m] += de;
          }
        }
        // scores s = H a: their gradient flows back into H
        for (int64_t m = 0; m < M; ++m)
          for (int64_t q = 0; q < C; ++q) dhb[m * C + q] += dssb[m] * as[q] + dsdb[m] * ad[q];
      }
    });
  });
  const auto dH2 = dH.view({B * M, C});
  const auto H2 = H.view({B * M, C});
  auto grad_X = at::mm(dH2, W.t()).view({B, M, c});
  auto grad_W = at::mm(X.view({B * M, c}).t(), dH2);
  auto grad_as = at::mv(H2.t(), ds_src.view({B * M}));
  auto grad_ad = at::mv(H2.t(), ds_dst.view({B * M}));
  return {grad_X, grad_W, grad_as, grad_ad};
}

// nbr[b, i] = [i, then the k other patches of image b most cosine-similar to patch i]
// The cosines come from one batched GEMM (the reference's formula, op for op); only the
// selection of each node's k best runs here, a partial sort per node.
at::Tensor patch_knn_cpu(const at::Tensor& P_in, int64_t k) {
  TORCH_CHECK(P_in.dim() == 3, "patch_knn: P must be (B, M, c), got ", P_in.sizes());
  const int64_t B = P_in.size(0), M = P_in.size(1);
  TORCH_CHECK(k >= 0 && k + 1 <= M, "patch_knn: k=", k, " neighbours need at least k+1=", k + 1,
              " patches per image, got M=", M);
  const auto P = P_in.to(at::kFloat).contiguous();
  const auto norm = P.norm(2, {2}).clamp_min(1e-12);
  const auto sim_t = (at::bmm(P, P.transpose(1, 2)) / (norm.unsqueeze(2) * norm.unsqueeze(1))).contiguous();
  auto out = at::empty({B, M, k + 1}, P_in.options().dtype(at::kLong));
  const float* sim = sim_t.data_ptr<float>();
  int64_t* o = out.data_ptr<int64_t>();
  at::parallel_for(0, B, 4, [&](int64_t begin, int64_t end) {
    std::vector<int64_t> order(M);
    for (int64_t b = begin; b < end; ++b) {
      for (int64_t i = 0; i < M; ++i) {
        const float* si = sim + (b * M + i) * M;
        std::iota(order.begin(), order.end(), 0);
        std::swap(order[i], order[M - 1]);  // drop the node itself
        // (cosine descending, index ascending) is a strict order: the k best are unique
        std::partial_sort(order.begin(), order.begin() + k, order.end() - 1, [&](int64_t x, int64_t y) {
          return si[x] > si[y] || (si[x] == si[y] && x < y);
        });
        int64_t* oi = o + (b * M + i) * (k + 1);
        oi[0] = i;
        for (int64_t j = 0; j < k; ++j) oi[j + 1] = order[j];
      }
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(seal_fast, CPU, m) {
  m.impl("patch_gat", &patch_gat_cpu);
  m.impl("patch_gat_backward", &patch_gat_backward_cpu);
  m.impl("patch_knn", &patch_knn_cpu);
}

}  // namespace seal_fast
