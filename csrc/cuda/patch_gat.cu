// CUDA kernels of seal_fast::patch_gat, its backward, and patch_knn.
//
// The projection H = X W and the weight gradients go through cuBLAS (at::mm);
// the attention part runs one block per image with that image's scores,
// neighbour lists and attention in shared memory. Every sum is taken in a fixed
// order (no atomics), so results are deterministic.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "cuda_utils.cuh"
#include "patch_gat_plan.h"

namespace seal_fast {
namespace {

constexpr int kThreads = 128;

void check_inputs(const at::Tensor& X, const at::Tensor& W, const at::Tensor& a_src, const at::Tensor& a_dst,
                  const at::Tensor& nbr) {
  TORCH_CHECK(X.is_cuda(), "patch_gat_cuda: expected CUDA tensors");
  for (const auto* t : {&W, &a_src, &a_dst, &nbr})  // a host pointer reaching a kernel would poison the context
    TORCH_CHECK(t->device() == X.device(), "patch_gat: X, W, att_src, att_dst and nbr must be on one device (X on ",
                X.device(), ", another on ", t->device(), ")");
  TORCH_CHECK(X.dim() == 3, "patch_gat: X must be (B, M, c), got ", X.sizes());
  TORCH_CHECK(W.dim() == 2 && W.size(0) == X.size(2), "patch_gat: W must be (c, C)");
  TORCH_CHECK(a_src.dim() == 1 && a_src.size(0) == W.size(1) && a_dst.sizes() == a_src.sizes(),
              "patch_gat: att_src and att_dst must be (C,)");
  TORCH_CHECK(nbr.dim() == 3 && nbr.size(0) == X.size(0) && nbr.size(1) == X.size(1) && nbr.size(2) >= 1 &&
                  nbr.scalar_type() == at::kLong,
              "patch_gat: nbr must be int64 (B, M, k)");
  for (const auto* t : {&W, &a_src, &a_dst})
    TORCH_CHECK(t->scalar_type() == X.scalar_type(), "patch_gat: X, W, att_src and att_dst must share a dtype");
  if (nbr.numel() > 0) {  // one small sync: an out-of-range index would be an illegal access later
    TORCH_CHECK(nbr.min().item<int64_t>() >= 0 && nbr.max().item<int64_t>() < X.size(1),
                "patch_gat: neighbour indices must lie in [0, M)");
  }
}

// Shared-memory layout of one image, sized at launch.
template <typename T>
struct ImageSmem {
  T* s_src;      // M
  T* s_dst;      // M
  T* alpha;      // M*k
  T* beta;       // M    (sum of the alphas pointing at each node)
  T* work;       // M*k  (backward: dalpha, then de)
  T* ds_src;     // M
  T* ds_dst;     // M
  int* nb;       // M*k
  int* in_start; // M+1  (incoming edges per node, CSR)
  int* in_edge;  // M*k
};

template <typename T>
__device__ ImageSmem<T> carve(char* base, int64_t M, int64_t k) {
  ImageSmem<T> s;
  T* p = reinterpret_cast<T*>(base);
  s.s_src = p;
  s.s_dst = s.s_src + M;
  s.alpha = s.s_dst + M;
  s.beta = s.alpha + M * k;
  s.work = s.beta + M;
  s.ds_src = s.work + M * k;
  s.ds_dst = s.ds_src + M;
  int* q = reinterpret_cast<int*>(s.ds_dst + M);
  s.nb = q;
  s.in_start = s.nb + M * k;
  s.in_edge = s.in_start + M + 1;
  return s;
}

template <typename T>
size_t smem_bytes(int64_t M, int64_t k) {
  return patch_gat_plan::smem_bytes(M, k, sizeof(T));
}

// Loads the image's scores and lists, builds the incoming-edge CSR (node -> edges
// that point at it, in edge order), and computes alpha and beta.
template <typename T>
__device__ void image_attention(ImageSmem<T>& s, const T* s_src, const T* s_dst, const int64_t* nbr, T* alpha_out,
                                int64_t M, int64_t k, T slope) {
  for (int64_t t = threadIdx.x; t < M; t += blockDim.x) {
    s.s_src[t] = s_src[t];
    s.s_dst[t] = s_dst[t];
  }
  for (int64_t t = threadIdx.x; t < M * k; t += blockDim.x) s.nb[t] = static_cast<int>(nbr[t]);
  __syncthreads();
  for (int64_t i = threadIdx.x; i < M; i += blockDim.x) {
    T mx = -INFINITY;
    for (int64_t j = 0; j < k; ++j) {
      T z = s.s_dst[i] + s.s_src[s.nb[i * k + j]];
      z = z > T(0) ? z : slope * z;
      s.alpha[i * k + j] = z;
      mx = max(mx, z);
    }
    T sum = 0;
    for (int64_t j = 0; j < k; ++j) {
      const T e = exp(s.alpha[i * k + j] - mx);
      s.alpha[i * k + j] = e;
      sum += e;
    }
    for (int64_t j = 0; j < k; ++j) {
      s.alpha[i * k + j] /= sum;
      if (alpha_out) alpha_out[i * k + j] = s.alpha[i * k + j];
    }
  }
  __syncthreads();
  // incoming edges of node m, in increasing edge order (deterministic sums)
  for (int64_t m = threadIdx.x; m < M; m += blockDim.x) {
    int count = 0;
    T b = 0;
    for (int64_t t = 0; t < M * k; ++t)
      if (s.nb[t] == m) {
        ++count;
        b += s.alpha[t];
      }
    s.in_start[m + 1] = count;
    s.beta[m] = b;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    s.in_start[0] = 0;
    for (int64_t m = 0; m < M; ++m) s.in_start[m + 1] += s.in_start[m];
  }
  __syncthreads();
  for (int64_t m = threadIdx.x; m < M; m += blockDim.x) {
    int pos = s.in_start[m];
    for (int64_t t = 0; t < M * k; ++t)
      if (s.nb[t] == m) s.in_edge[pos++] = static_cast<int>(t);
  }
  __syncthreads();
}

template <typename T>
__global__ void gat_forward_kernel(const T* __restrict__ H, const T* __restrict__ s_src, const T* __restrict__ s_dst,
                                   const int64_t* __restrict__ nbr, T* __restrict__ out, T* __restrict__ alpha,
                                   int64_t M, int64_t C, int64_t k, T slope, bool pool) {
  extern __shared__ __align__(16) char smem_raw[];
  auto s = carve<T>(smem_raw, M, k);
  const int64_t b = blockIdx.x;
  image_attention<T>(s, s_src + b * M, s_dst + b * M, nbr + b * M * k, alpha + b * M * k, M, k, slope);
  const T* Hb = H + b * M * C;
  if (pool) {
    const T invM = M > 0 ? T(1) / static_cast<T>(M) : T(0);  // no nodes pool to 0, as on the CPU
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
      T acc = 0;
      for (int64_t m = 0; m < M; ++m) acc += s.beta[m] * Hb[m * C + c];
      out[b * C + c] = acc * invM;
    }
  } else {
    for (int64_t e = threadIdx.x; e < M * C; e += blockDim.x) {
      const int64_t i = e / C, c = e % C;
      T acc = 0;
      for (int64_t j = 0; j < k; ++j) acc += s.alpha[i * k + j] * Hb[s.nb[i * k + j] * C + c];
      out[(b * M + i) * C + c] = acc;
    }
  }
}

template <typename T>
__global__ void gat_backward_kernel(const T* __restrict__ grad_out, const T* __restrict__ H,
                                    const T* __restrict__ s_src, const T* __restrict__ s_dst,
                                    const int64_t* __restrict__ nbr, const T* __restrict__ a_src,
                                    const T* __restrict__ a_dst, T* __restrict__ dH, T* __restrict__ ds_src_out,
                                    T* __restrict__ ds_dst_out, int64_t M, int64_t C, int64_t k, T slope, bool pool) {
  extern __shared__ __align__(16) char smem_raw[];
  auto s = carve<T>(smem_raw, M, k);
  const int64_t b = blockIdx.x;
  // alpha is recomputed exactly as in the forward (cheap, and it keeps the op's inputs minimal)
  image_attention<T>(s, s_src + b * M, s_dst + b * M, nbr + b * M * k, nullptr, M, k, slope);
  const T* Hb = H + b * M * C;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  const T invM = M > 0 ? T(1) / static_cast<T>(M) : T(0);  // no nodes pool to 0, as on the CPU
  // dalpha_ij = dout_i . h_nbr(ij)   (pooled: dout_i = g / M for every i)
  if (pool) {
    const T* g = grad_out + b * C;
    for (int64_t m = warp; m < M; m += warps) {  // u_m = g . h_m / M, kept in ds_src for the moment
      T acc = 0;
      for (int64_t c = lane; c < C; c += 32) acc += g[c] * Hb[m * C + c];
      acc = cuda::warp_sum(acc);
      if (lane == 0) s.ds_src[m] = acc * invM;
    }
    __syncthreads();
    for (int64_t t = threadIdx.x; t < M * k; t += blockDim.x) s.work[t] = s.ds_src[s.nb[t]];
  } else {
    for (int64_t t = warp; t < M * k; t += warps) {
      const int64_t i = t / k;
      const T* gi = grad_out + (b * M + i) * C;
      const T* hm = Hb + static_cast<int64_t>(s.nb[t]) * C;
      T acc = 0;
      for (int64_t c = lane; c < C; c += 32) acc += gi[c] * hm[c];
      acc = cuda::warp_sum(acc);
      if (lane == 0) s.work[t] = acc;
    }
  }
  __syncthreads();
  // softmax and LeakyReLU backward: work becomes de_ij; ds_dst_i = sum_j de_ij
  for (int64_t i = threadIdx.x; i < M; i += blockDim.x) {
    T dot = 0;
    for (int64_t j = 0; j < k; ++j) dot += s.alpha[i * k + j] * s.work[i * k + j];
    T dsd = 0;
    for (int64_t j = 0; j < k; ++j) {
      const int64_t t = i * k + j;
      const T z = s.s_dst[i] + s.s_src[s.nb[t]];
      const T de = s.alpha[t] * (s.work[t] - dot) * (z > T(0) ? T(1) : slope);
      s.work[t] = de;
      dsd += de;
    }
    s.ds_dst[i] = dsd;
  }
  __syncthreads();
  for (int64_t m = threadIdx.x; m < M; m += blockDim.x) {  // ds_src_m = sum of de over edges into m
    T acc = 0;
    for (int p = s.in_start[m]; p < s.in_start[m + 1]; ++p) acc += s.work[s.in_edge[p]];
    s.ds_src[m] = acc;
    ds_src_out[b * M + m] = acc;
    ds_dst_out[b * M + m] = s.ds_dst[m];
  }
  __syncthreads();
  // dH_m = (message gradients into m) + ds_src_m a_src + ds_dst_m a_dst
  for (int64_t e = threadIdx.x; e < M * C; e += blockDim.x) {
    const int64_t m = e / C, c = e % C;
    T acc;
    if (pool) {
      acc = s.beta[m] * invM * grad_out[b * C + c];
    } else {
      acc = 0;
      for (int p = s.in_start[m]; p < s.in_start[m + 1]; ++p) {
        const int t = s.in_edge[p];
        acc += s.alpha[t] * grad_out[(b * M + t / k) * C + c];
      }
    }
    dH[(b * M + m) * C + c] = acc + s.ds_src[m] * a_src[c] + s.ds_dst[m] * a_dst[c];
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> projections(const at::Tensor& X, const at::Tensor& W,
                                                           const at::Tensor& a_src, const at::Tensor& a_dst) {
  const int64_t B = X.size(0), M = X.size(1), c = X.size(2), C = W.size(1);
  const auto H = at::mm(X.reshape({B * M, c}), W);
  return {H.view({B, M, C}), at::mv(H, a_src).view({B, M}).contiguous(), at::mv(H, a_dst).view({B, M}).contiguous()};
}

// The attention of one image lives in shared memory; an image whose graph does not
// fit (M in the thousands) is refused here with the numbers, and the Python
// wrapper sends such inputs to the ATen reference before they get here.
void set_smem(const void* kernel, size_t bytes, const at::Tensor& X, int64_t M, int64_t k) {
  int optin = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, X.device().index()));
  TORCH_CHECK(bytes <= static_cast<size_t>(optin), "patch_gat_cuda: one image's graph (M=", M, ", k=", k, ", ",
              X.scalar_type(), ") needs ", bytes, " bytes of shared memory, more than the ", optin,
              " this GPU gives a block; use backend='reference'");
  if (bytes > 48 * 1024) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
  }
}

std::tuple<at::Tensor, at::Tensor> patch_gat_cuda(const at::Tensor& X_in, const at::Tensor& W, const at::Tensor& a_src,
                                                  const at::Tensor& a_dst, const at::Tensor& nbr_in,
                                                  double negative_slope, bool pool) {
  check_inputs(X_in, W, a_src, a_dst, nbr_in);
  const c10::cuda::CUDAGuard guard(X_in.device());
  const auto X = X_in.contiguous();
  const auto nbr = nbr_in.contiguous();
  const int64_t B = X.size(0), M = X.size(1), C = W.size(1), k = nbr.size(2);
  auto [H, s_src, s_dst] = projections(X, W, a_src, a_dst);
  auto alpha = at::empty({B, M, k}, X.options());
  auto out = pool ? at::empty({B, C}, X.options()) : at::empty({B, M, C}, X.options());
  if (B == 0) return {out, alpha};
  AT_DISPATCH_FLOATING_TYPES(X.scalar_type(), "patch_gat_cuda", [&] {
    const size_t bytes = smem_bytes<scalar_t>(M, k);
    set_smem(reinterpret_cast<const void*>(&gat_forward_kernel<scalar_t>), bytes, X, M, k);
    gat_forward_kernel<scalar_t><<<B, kThreads, bytes, c10::cuda::getCurrentCUDAStream()>>>(
        H.data_ptr<scalar_t>(), s_src.data_ptr<scalar_t>(), s_dst.data_ptr<scalar_t>(), nbr.data_ptr<int64_t>(),
        out.data_ptr<scalar_t>(), alpha.data_ptr<scalar_t>(), M, C, k, static_cast<scalar_t>(negative_slope), pool);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {out, alpha};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> patch_gat_backward_cuda(
    const at::Tensor& grad_out_in, const at::Tensor& X_in, const at::Tensor& W, const at::Tensor& a_src,
    const at::Tensor& a_dst, const at::Tensor& nbr_in, const at::Tensor& alpha, double negative_slope, bool pool) {
  check_inputs(X_in, W, a_src, a_dst, nbr_in);
  const c10::cuda::CUDAGuard guard(X_in.device());
  const auto X = X_in.contiguous();
  const auto nbr = nbr_in.contiguous();
  const auto grad_out = grad_out_in.contiguous();
  const int64_t B = X.size(0), M = X.size(1), c = X.size(2), C = W.size(1), k = nbr.size(2);
  TORCH_CHECK(pool ? grad_out.sizes() == at::IntArrayRef({B, C}) : grad_out.sizes() == at::IntArrayRef({B, M, C}),
              "patch_gat_backward: grad_out has the wrong shape");
  (void)alpha;  // recomputed in the kernel
  auto [H, s_src, s_dst] = projections(X, W, a_src, a_dst);
  auto dH = at::empty({B, M, C}, X.options());
  auto ds_src = at::empty({B, M}, X.options());
  auto ds_dst = at::empty({B, M}, X.options());
  if (B > 0) {
    AT_DISPATCH_FLOATING_TYPES(X.scalar_type(), "patch_gat_backward_cuda", [&] {
      const size_t bytes = smem_bytes<scalar_t>(M, k);
      set_smem(reinterpret_cast<const void*>(&gat_backward_kernel<scalar_t>), bytes, X, M, k);
      gat_backward_kernel<scalar_t><<<B, kThreads, bytes, c10::cuda::getCurrentCUDAStream()>>>(
          grad_out.data_ptr<scalar_t>(), H.data_ptr<scalar_t>(), s_src.data_ptr<scalar_t>(),
          s_dst.data_ptr<scalar_t>(), nbr.data_ptr<int64_t>(), a_src.contiguous().data_ptr<scalar_t>(),
          a_dst.contiguous().data_ptr<scalar_t>(), dH.data_ptr<scalar_t>(), ds_src.data_ptr<scalar_t>(),
          ds_dst.data_ptr<scalar_t>(), M, C, k, static_cast<scalar_t>(negative_slope), pool);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  const auto dH2 = dH.view({B * M, C});
  const auto H2 = H.reshape({B * M, C});
  return {at::mm(dH2, W.t()).view({B, M, c}), at::mm(X.reshape({B * M, c}).t(), dH2), at::mv(H2.t(), ds_src.view(-1)),
          at::mv(H2.t(), ds_dst.view(-1))};
}

// One block per image, one thread per node: cosine to every other patch of the
// image, kept as a sorted top-k list in registers-backed local memory. The
// cosine is computed exactly as the CPU kernel does (float sums in channel
// order without fused multiply-adds, then dot / (|p_i| |p_j|)), so near-ties
// come out in the same order on both.
constexpr int kMaxKnn = 32;  // the one limit of every backend (seal_fast/ops/patch_knn.py)

__device__ __forceinline__ float dot_no_fma(const float* a, const float* b, int64_t c) {
  float s = 0.f;
  for (int64_t q = 0; q < c; ++q) s = __fadd_rn(s, __fmul_rn(a[q], b[q]));
  return s;
}

__global__ void patch_knn_kernel(const float* __restrict__ P, int64_t M, int64_t c, int64_t k,
                                 int64_t* __restrict__ out) {
  const int64_t b = blockIdx.x;
  const float* Pb = P + b * M * c;
  for (int64_t i = threadIdx.x; i < M; i += blockDim.x) {
    int64_t* o = out + (b * M + i) * (k + 1);
    o[0] = i;
    if (k == 0) continue;  // the self loop alone
    float best_v[kMaxKnn];
    int best_j[kMaxKnn];
    int filled = 0;
    const float norm_i = fmaxf(__fsqrt_rn(dot_no_fma(Pb + i * c, Pb + i * c, c)), 1e-12f);
    for (int64_t j = 0; j < M; ++j) {
      if (j == i) continue;
      const float norm_j = fmaxf(__fsqrt_rn(dot_no_fma(Pb + j * c, Pb + j * c, c)), 1e-12f);
      const float s = __fdiv_rn(dot_no_fma(Pb + i * c, Pb + j * c, c), __fmul_rn(norm_i, norm_j));
      // strictly better than the worst kept (j increases, so ties keep the lower index)
      if (filled == k && !(s > best_v[k - 1])) continue;
      int pos = filled < k ? filled++ : static_cast<int>(k - 1);
      while (pos > 0 && s > best_v[pos - 1]) {
        best_v[pos] = best_v[pos - 1];
        best_j[pos] = best_j[pos - 1];
        --pos;
      }
      best_v[pos] = s;
      best_j[pos] = static_cast<int>(j);
    }
    for (int64_t t = 0; t < k; ++t) o[t + 1] = best_j[t];
  }
}

at::Tensor patch_knn_cuda(const at::Tensor& P_in, int64_t k) {
  TORCH_CHECK(P_in.is_cuda() && P_in.dim() == 3, "patch_knn: P must be (B, M, c) on CUDA");
  const int64_t B = P_in.size(0), M = P_in.size(1), c = P_in.size(2);
  TORCH_CHECK(k >= 0 && k + 1 <= M, "patch_knn: k=", k, " neighbours need at least k+1=", k + 1,
              " patches per image, got M=", M);
  TORCH_CHECK(k <= kMaxKnn, "patch_knn: k=", k, " exceeds the limit of ", kMaxKnn, " neighbours per patch");
  const c10::cuda::CUDAGuard guard(P_in.device());
  const auto P = P_in.to(at::kFloat).contiguous();
  auto out = at::empty({B, M, k + 1}, P.options().dtype(at::kLong));
  if (B > 0) {
    patch_knn_kernel<<<B, 64, 0, c10::cuda::getCurrentCUDAStream()>>>(P.data_ptr<float>(), M, c, k,
                                                                      out.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(seal_fast, CUDA, m) {
  m.impl("patch_gat", &patch_gat_cuda);
  m.impl("patch_gat_backward", &patch_gat_backward_cuda);
  m.impl("patch_knn", &patch_knn_cuda);
}

}  // namespace seal_fast
