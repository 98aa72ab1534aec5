// CUDA kernels of seal_fast::unrolled_linear_fit: up to kMaxSpaces spaces in one
// launch per phase (more spaces: one group of launches per kMaxSpaces).
//
// Each Adam step is two launches:
//   rows_kernel  — a fixed number of blocks per space (the slots of the plan in
//                  linear_fit_plan.h); block s visits the tiles of kRows rows
//                  s, s + slots, s + 2 slots, ... in that order: per tile,
//                  logits = Z W^T + b, G = (softmax(logits) * sum(t) - t) / B,
//                  then the tile's gradient G^T Z_tile (read again from L2) added
//                  to the block's own slot: no atomics.
//   adam_kernel  — sums the slots in slot order (deterministic on a given GPU)
//                  and applies the Adam update to [W | b] and its moments.
// The scratch is slots x (K*d + K) per space whatever B is, so a batch of a
// million rows costs no more memory than one of ten thousand.
// Z may be float16/bfloat16 (read as such, accumulated in float); W, b, the
// targets and the moments are float32 (or float64).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "cuda_utils.cuh"
#include "linear_fit_plan.h"

namespace seal_fast {
namespace {

constexpr int kMaxSpaces = 4;
constexpr int kRows = linear_fit_plan::kRows;  // rows per tile
constexpr int kThreads = 256;  // 8 warps
constexpr int kWarps = kThreads / 32;
constexpr int kKTile = 16;     // logits (or gradient rows) kept in registers at once

template <typename z_t, typename p_t>
struct Spaces {
  const z_t* Z[kMaxSpaces];
  const p_t* P[kMaxSpaces];  // [W (K x d) | b (K)]
  p_t* partial[kMaxSpaces];  // slots x (K*d + K)
  p_t* out[kMaxSpaces];      // (B x K): G during steps, logits at the end
  int64_t d[kMaxSpaces];
};

// want_grad: turn logits into the CE gradient and accumulate the tile's partial
// gradient; otherwise write the logits and stop.
template <typename z_t, typename p_t>
__global__ void __launch_bounds__(kThreads) rows_kernel(Spaces<z_t, p_t> s, const p_t* __restrict__ targets,
                                                        const p_t* __restrict__ tsum, int64_t B, int64_t K,
                                                        int64_t tiles, bool want_grad) {
  using acc_t = at::opmath_type<p_t>;
  const int space = blockIdx.y;
  const int64_t d = s.d[space];
  const z_t* __restrict__ Z = s.Z[space];
  const p_t* __restrict__ W = s.P[space];
  const p_t* __restrict__ bias = s.P[space] + K * d;
  p_t* __restrict__ out = s.out[space];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const acc_t inv_B = acc_t(1) / static_cast<acc_t>(B);
  __shared__ acc_t g_tile[kRows][kKTile];
  p_t* __restrict__ part = s.partial[space] + static_cast<int64_t>(blockIdx.x) * (K * d + K);
  bool first_tile = true;  // the slot is overwritten by its first tile, then added to

  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const int64_t r0 = tile * kRows;
    const int64_t rows = min(static_cast<int64_t>(kRows), B - r0);
    // 1) logits of every row of the tile, one warp per row
    for (int64_t r = warp; r < rows; r += kWarps) {
      const z_t* z = Z + (r0 + r) * d;
      p_t* o = out + (r0 + r) * K;
      for (int64_t k0 = 0; k0 < K; k0 += kKTile) {
        acc_t acc[kKTile];
#pragma unroll
        for (int kk = 0; kk < kKTile; ++kk) acc[kk] = 0;
        for (int64_t j = lane; j < d; j += 32) {
          const acc_t zj = static_cast<acc_t>(z[j]);
#pragma unroll
          for (int kk = 0; kk < kKTile; ++kk)
            if (k0 + kk < K) acc[kk] += zj * static_cast<acc_t>(W[(k0 + kk) * d + j]);
        }
#pragma unroll
        for (int kk = 0; kk < kKTile; ++kk) {
          const acc_t v = cuda::warp_sum(acc[kk]);
          if (lane == 0 && k0 + kk < K) o[k0 + kk] = static_cast<p_t>(v + static_cast<acc_t>(bias[k0 + kk]));
        }
      }
      if (!want_grad) continue;
      __syncwarp();
      // softmax over K (lane-strided), then G = (p * sum(t) - t) / B in place
      acc_t mx = -INFINITY;
      for (int64_t k = lane; k < K; k += 32) mx = max(mx, static_cast<acc_t>(o[k]));
      mx = cuda::warp_max(mx);
      acc_t sum = 0;
      for (int64_t k = lane; k < K; k += 32) sum += exp(static_cast<acc_t>(o[k]) - mx);
      sum = cuda::warp_sum(sum);
      const acc_t ts = static_cast<acc_t>(tsum[r0 + r]);
      const p_t* t = targets + (r0 + r) * K;
      for (int64_t k = lane; k < K; k += 32) {
        const acc_t p = exp(static_cast<acc_t>(o[k]) - mx) / sum;
        o[k] = static_cast<p_t>((p * ts - static_cast<acc_t>(t[k])) * inv_B);
      }
    }
    if (!want_grad) continue;
    __syncthreads();  // the tile's G rows are complete (global memory, visible block-wide after the barrier)

    // 2) the tile's gradient into the slot: part[k*d + j] (+)= sum_r G[r,k] Z[r,j]
    for (int64_t k0 = 0; k0 < K; k0 += kKTile) {
      for (int i = threadIdx.x; i < kRows * kKTile; i += kThreads) {
        const int r = i / kKTile, kk = i % kKTile;
        g_tile[r][kk] = (r < rows && k0 + kk < K) ? static_cast<acc_t>(out[(r0 + r) * K + k0 + kk]) : acc_t(0);
      }
      __syncthreads();
      for (int64_t j = threadIdx.x; j < d; j += kThreads) {
        acc_t acc[kKTile];
#pragma unroll
        for (int kk = 0; kk < kKTile; ++kk) acc[kk] = 0;
        for (int64_t r = 0; r < rows; ++r) {
          const acc_t zj = static_cast<acc_t>(Z[(r0 + r) * d + j]);
#pragma unroll
          for (int kk = 0; kk < kKTile; ++kk) acc[kk] += g_tile[r][kk] * zj;
        }
#pragma unroll
        for (int kk = 0; kk < kKTile; ++kk) {
          if (k0 + kk >= K) continue;
          p_t& slot = part[(k0 + kk) * d + j];
          slot = first_tile ? static_cast<p_t>(acc[kk]) : static_cast<p_t>(static_cast<acc_t>(slot) + acc[kk]);
        }
      }
      // bias gradient: column sums of G
      for (int kk = threadIdx.x; kk < kKTile; kk += kThreads) {
        if (k0 + kk >= K) continue;
        acc_t acc = 0;
        for (int64_t r = 0; r < rows; ++r) acc += g_tile[r][kk];
        p_t& slot = part[K * d + k0 + kk];
        slot = first_tile ? static_cast<p_t>(acc) : static_cast<p_t>(static_cast<acc_t>(slot) + acc);
      }
      __syncthreads();
    }
    first_tile = false;
  }
  // a block with no tile (more slots than tiles) leaves a zero slot for the sum
  if (want_grad && first_tile) {
    for (int64_t i = threadIdx.x; i < K * d + K; i += kThreads) part[i] = p_t(0);
  }
}

template <typename p_t>
struct AdamState {
  p_t* P[kMaxSpaces];
  p_t* m[kMaxSpaces];
  p_t* v[kMaxSpaces];
  const p_t* partial[kMaxSpaces];
  int64_t n[kMaxSpaces];  // K*d + K
};

template <typename p_t>
__global__ void adam_kernel(AdamState<p_t> a, int64_t slots, double step_size, double sqrt_bias2, double beta1,
                            double beta2, double eps) {
  using acc_t = at::opmath_type<p_t>;
  const int space = blockIdx.y;
  const int64_t n = a.n[space];
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    acc_t g = 0;
    for (int64_t t = 0; t < slots; ++t) g += static_cast<acc_t>(a.partial[space][t * n + i]);
    const acc_t m = static_cast<acc_t>(beta1) * static_cast<acc_t>(a.m[space][i]) + (1 - static_cast<acc_t>(beta1)) * g;
    const acc_t v =
        static_cast<acc_t>(beta2) * static_cast<acc_t>(a.v[space][i]) + (1 - static_cast<acc_t>(beta2)) * g * g;
    a.m[space][i] = static_cast<p_t>(m);
    a.v[space][i] = static_cast<p_t>(v);
    const acc_t denom = sqrt(v) / static_cast<acc_t>(sqrt_bias2) + static_cast<acc_t>(eps);
    a.P[space][i] = static_cast<p_t>(static_cast<acc_t>(a.P[space][i]) - static_cast<acc_t>(step_size) * m / denom);
  }
}

// Runs the fit of spaces [first, first + count) (count <= kMaxSpaces) in one group of launches.
template <typename z_t, typename p_t>
void fit_group(std::vector<at::Tensor>& Z, std::vector<at::Tensor>& P, std::vector<at::Tensor>& m,
               std::vector<at::Tensor>& v, std::vector<at::Tensor>& partial, std::vector<at::Tensor>& out,
               size_t first, int count, const at::Tensor& targets, const at::Tensor& tsum, int64_t tiles,
               int64_t slots, int64_t steps, double lr, double beta1, double beta2, double eps) {
  const int64_t B = targets.size(0), K = targets.size(1);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  Spaces<z_t, p_t> sp{};
  AdamState<p_t> st{};
  int64_t max_n = 0;
  for (int g = 0; g < count; ++g) {
    const size_t s = first + g;
    sp.Z[g] = Z[s].data_ptr<z_t>();
    sp.P[g] = P[s].data_ptr<p_t>();
    sp.partial[g] = partial[s].data_ptr<p_t>();
    sp.out[g] = out[s].data_ptr<p_t>();
    sp.d[g] = Z[s].size(1);
    st.P[g] = P[s].data_ptr<p_t>();
    st.m[g] = m[s].data_ptr<p_t>();
    st.v[g] = v[s].data_ptr<p_t>();
    st.partial[g] = partial[s].data_ptr<p_t>();
    st.n[g] = P[s].numel();
    max_n = std::max(max_n, st.n[g]);
  }
  const dim3 rows_grid(static_cast<unsigned>(slots), count);
  const dim3 adam_grid(static_cast<unsigned>(std::min<int64_t>(cuda::ceil_div(max_n, 256), 1024)), count);
  for (int64_t t = 1; t <= steps && B > 0; ++t) {
    rows_kernel<z_t, p_t><<<rows_grid, kThreads, 0, stream>>>(sp, targets.data_ptr<p_t>(), tsum.data_ptr<p_t>(), B,
                                                               K, tiles, true);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const double step_size = lr / (1.0 - std::pow(beta1, static_cast<double>(t)));
    const double sqrt_bias2 = std::sqrt(1.0 - std::pow(beta2, static_cast<double>(t)));
    adam_kernel<p_t><<<adam_grid, 256, 0, stream>>>(st, slots, step_size, sqrt_bias2, beta1, beta2, eps);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  if (B > 0) {
    rows_kernel<z_t, p_t><<<rows_grid, kThreads, 0, stream>>>(sp, targets.data_ptr<p_t>(), tsum.data_ptr<p_t>(), B,
                                                               K, tiles, false);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

std::tuple<std::vector<at::Tensor>, std::vector<at::Tensor>, std::vector<at::Tensor>> unrolled_linear_fit_cuda(
    at::TensorList Zs, const at::Tensor& targets_in, at::TensorList W0s, at::TensorList b0s, int64_t steps,
    double lr, double beta1, double beta2, double eps) {
  TORCH_CHECK(!Zs.empty(), "unrolled_linear_fit: at least one space");
  TORCH_CHECK(Zs.size() == W0s.size() && Zs.size() == b0s.size(),
              "unrolled_linear_fit: Zs, W0s and b0s must have one entry per space");
  TORCH_CHECK(targets_in.is_cuda() && targets_in.dim() == 2, "unrolled_linear_fit_cuda: targets must be (B, K) on CUDA");
  TORCH_CHECK(targets_in.scalar_type() == at::kFloat || targets_in.scalar_type() == at::kDouble,
              "unrolled_linear_fit_cuda: targets/weights must be float32 or float64");
  TORCH_CHECK(steps >= 0, "unrolled_linear_fit: steps must be >= 0");
  const auto device = targets_in.device();
  for (size_t s = 0; s < Zs.size(); ++s) {  // a host pointer reaching a kernel would poison the context
    TORCH_CHECK(Zs[s].device() == device && W0s[s].device() == device && b0s[s].device() == device,
                "unrolled_linear_fit: Zs[", s, "], W0s[", s, "] and b0s[", s, "] must be on the targets' device ",
                device);
    TORCH_CHECK(W0s[s].scalar_type() == targets_in.scalar_type() && b0s[s].scalar_type() == targets_in.scalar_type(),
                "unrolled_linear_fit: W0s[", s, "] and b0s[", s, "] must have the targets' dtype");
  }
  const c10::cuda::CUDAGuard guard(device);
  const auto targets = targets_in.contiguous();
  const int64_t B = targets.size(0), K = targets.size(1);
  TORCH_CHECK(K > 0, "unrolled_linear_fit: K must be positive");
  const auto z_type = Zs[0].scalar_type();
  const int64_t tiles = linear_fit_plan::tiles(B);
  const int64_t slots = linear_fit_plan::slots(B, at::cuda::getCurrentDeviceProperties()->multiProcessorCount);
  std::vector<at::Tensor> Z, P, m, v, partial, out;
  for (size_t s = 0; s < Zs.size(); ++s) {
    TORCH_CHECK(Zs[s].dim() == 2 && Zs[s].size(0) == B, "unrolled_linear_fit: Zs[", s, "] must be (B=", B, ", d)");
    TORCH_CHECK(Zs[s].scalar_type() == z_type, "unrolled_linear_fit: all Zs must share a dtype");
    TORCH_CHECK(z_type == targets.scalar_type() ||
                    (targets.scalar_type() == at::kFloat && (z_type == at::kHalf || z_type == at::kBFloat16)),
                "unrolled_linear_fit_cuda: Zs must have the targets' dtype, or be float16/bfloat16 with float32 targets");
    const int64_t d = Zs[s].size(1);
    TORCH_CHECK(W0s[s].sizes() == at::IntArrayRef({K, d}) && b0s[s].sizes() == at::IntArrayRef({K}),
                "unrolled_linear_fit: W0s[", s, "]/b0s[", s, "] must be (K, d)/(K,)");
    Z.push_back(Zs[s].contiguous());
    P.push_back(at::cat({W0s[s].reshape(-1), b0s[s].reshape(-1)}).contiguous());
    m.push_back(at::zeros_like(P.back()));
    v.push_back(at::zeros_like(P.back()));
    partial.push_back(at::empty({slots, K * d + K}, targets.options()));
    out.push_back(at::empty({B, K}, targets.options()));
  }
  const auto tsum = targets.sum(1);
  AT_DISPATCH_FLOATING_TYPES(targets.scalar_type(), "unrolled_linear_fit_cuda", [&] {
    using p_t = scalar_t;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z_type, "unrolled_linear_fit_cuda_z", [&] {
      using z_t = scalar_t;
      for (size_t first = 0; first < Z.size(); first += kMaxSpaces) {  // each space's updates are independent
        const int count = static_cast<int>(std::min<size_t>(kMaxSpaces, Z.size() - first));
        fit_group<z_t, p_t>(Z, P, m, v, partial, out, first, count, targets, tsum, tiles, slots, steps, lr, beta1,
                            beta2, eps);
      }
    });
  });
  std::vector<at::Tensor> Ws, bs;
  for (size_t s = 0; s < Z.size(); ++s) {
    const int64_t d = Z[s].size(1);
    Ws.push_back(P[s].narrow(0, 0, K * d).view({K, d}).clone());
    bs.push_back(P[s].narrow(0, K * d, K).clone());
  }
  return {Ws, bs, out};
}

}  // namespace

TORCH_LIBRARY_IMPL(seal_fast, CUDA, m) { m.impl("unrolled_linear_fit", &unrolled_linear_fit_cuda); }

}  // namespace seal_fast
