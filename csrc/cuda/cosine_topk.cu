// CUDA implementation of seal_fast::cosine_topk.
//
// Rows are L2-normalised in float32 (whatever the input dtype, as the CPU kernel
// and the reference do), and the similarity GEMM runs tile by tile through
// cuBLAS in exact FP32: TF32 is switched off for these products whatever the
// global setting, so scores and the order of near-ties match the CPU. At most
// one kQueryChunk x kRefChunk tile of scores exists at a time. After each tile a
// merge kernel (one warp per query row) folds the tile into the row's running
// top-k list, kept sorted in global memory. Candidates are visited in
// increasing index order and enter only on a strictly better score, so ties go
// to the lower index, as on the CPU. Any candidate beats an unfilled slot, so no
// placeholder index is ever returned (a NaN score counts as the worst score).
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdint>
#include <limits>

#include "cuda_utils.cuh"

namespace seal_fast {
namespace {

constexpr int64_t kQueryChunk = 4096;
constexpr int64_t kRefChunk = 8192;
constexpr int kMergeWarps = 4;
constexpr int64_t kEmpty = std::numeric_limits<int64_t>::max();  // index of an unfilled slot

// (v, i) ranks above (w, j): a real candidate always beats an unfilled slot; then
// the higher score wins (NaN counts as -inf), and on equal scores the lower index.
__device__ __forceinline__ bool better(float v, int64_t i, float w, int64_t j) {
  if (j == kEmpty) return i != kEmpty;
  if (i == kEmpty) return false;
  v = isnan(v) ? -INFINITY : v;
  w = isnan(w) ? -INFINITY : w;
  return v > w || (v == w && i < j);
}

// One warp per query row: merge the row's cols candidates into its sorted list.
__global__ void merge_topk_kernel(const float* __restrict__ S, int64_t rows, int64_t cols, int64_t q0, int64_t r0,
                                  int64_t k, bool exclude_self, float* __restrict__ values,
                                  int64_t* __restrict__ indices) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kMergeWarps + warp;
  if (row >= rows) return;
  const int64_t q = q0 + row;
  float* vals = values + q * k;
  int64_t* idxs = indices + q * k;
  const float* s = S + row * cols;
  for (int64_t c0 = 0; c0 < cols; c0 += 32) {
    const int64_t c = c0 + lane;
    const int64_t j = r0 + c;
    const float v = c < cols ? s[c] : -INFINITY;
    const bool valid = c < cols && !(exclude_self && j == q);
    // threshold = the current worst entry; a candidate must beat it
    bool pass = valid && better(v, j, vals[k - 1], idxs[k - 1]);
    unsigned mask = __ballot_sync(cuda::kFullMask, pass);
    while (mask) {
      const int src = __ffs(mask) - 1;  // lowest remaining lane = lowest index
      mask &= mask - 1;
      const float cv = __shfl_sync(cuda::kFullMask, v, src);
      const int64_t cj = __shfl_sync(cuda::kFullMask, j, src);
      __syncwarp();
      if (!better(cv, cj, vals[k - 1], idxs[k - 1])) continue;  // the list moved on since the ballot
      // position = number of entries better than the candidate (the list is sorted)
      int64_t pos = 0;
      for (int64_t t = lane; t < k; t += 32) pos += better(vals[t], idxs[t], cv, cj) ? 1 : 0;
      pos = cuda::warp_sum(pos);
      // shift [pos, k-2] one slot down, highest chunk first so nothing is overwritten before it is read
      for (int64_t top = k - 2; top >= pos; top -= 32) {
        const int64_t t = top - lane;
        float tv = 0.f;
        int64_t ti = 0;
        const bool mine = t >= pos;
        if (mine) {
          tv = vals[t];
          ti = idxs[t];
        }
        __syncwarp();
        if (mine) {
          vals[t + 1] = tv;
          idxs[t + 1] = ti;
        }
        __syncwarp();
      }
      if (lane == 0) {
        vals[pos] = cv;
        idxs[pos] = cj;
      }
      __syncwarp();
    }
  }
}

// float32 rows of unit length, as the CPU kernel makes them (half inputs are not
// rounded back: the products below are exact float32 products of these rows)
at::Tensor normalized(const at::Tensor& X) {
  const auto x = X.to(at::kFloat).contiguous();
  return (x / x.norm(2, 1, true).clamp_min(1e-12)).contiguous();
}

std::tuple<at::Tensor, at::Tensor> cosine_topk_cuda(const at::Tensor& Q_in, const at::Tensor& R_in, int64_t k,
                                                    bool exclude_self) {
  TORCH_CHECK(Q_in.is_cuda() && R_in.device() == Q_in.device(), "cosine_topk_cuda: Q and R must be on one CUDA device");
  TORCH_CHECK(Q_in.dim() == 2 && R_in.dim() == 2 && Q_in.size(1) == R_in.size(1),
              "cosine_topk: Q and R must be (Nq, d) and (Nr, d)");
  TORCH_CHECK(Q_in.scalar_type() == R_in.scalar_type(), "cosine_topk: Q and R must share a dtype");
  const int64_t nq = Q_in.size(0), nr = R_in.size(0);
  const int64_t available = exclude_self ? nr - 1 : nr;
  TORCH_CHECK(k >= 1 && k <= available, "cosine_topk: k=", k, " must be in [1, ", available, "]");
  const c10::cuda::CUDAGuard guard(Q_in.device());
  // a self-search (R the same memory read the same way as Q, as in every neighbour
  // search of the pipeline) normalises once: at N = 1.28M, d = 1536 a second copy is 7.9 GB
  const bool same = Q_in.data_ptr() == R_in.data_ptr() && Q_in.sizes() == R_in.sizes() &&
                    Q_in.strides() == R_in.strides();
  const auto Q = normalized(Q_in);
  const auto R = same ? Q : normalized(R_in);
  const at::NoTF32Guard exact_fp32;  // these GEMMs ignore torch.backends.cuda.matmul.allow_tf32
  auto values = at::full({nq, k}, -std::numeric_limits<float>::infinity(), Q.options());
  auto indices = at::full({nq, k}, kEmpty, Q.options().dtype(at::kLong));
  auto S = at::empty({std::min(kQueryChunk, nq), std::min(kRefChunk, nr)}, Q.options().dtype(at::kFloat));
  const auto stream = c10::cuda::getCurrentCUDAStream();
  for (int64_t q0 = 0; q0 < nq; q0 += kQueryChunk) {
    const int64_t rows = std::min(kQueryChunk, nq - q0);
    const auto Qc = Q.narrow(0, q0, rows);
    for (int64_t r0 = 0; r0 < nr; r0 += kRefChunk) {
      const int64_t cols = std::min(kRefChunk, nr - r0);
      auto out = S.view({-1}).narrow(0, 0, rows * cols).view({rows, cols});  // contiguous scratch
      at::mm_out(out, Qc, R.narrow(0, r0, cols).t());
      merge_topk_kernel<<<cuda::ceil_div(rows, kMergeWarps), kMergeWarps * 32, 0, stream>>>(
          out.data_ptr<float>(), rows, cols, q0, r0, k, exclude_self, values.data_ptr<float>(),
          indices.data_ptr<int64_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  }
  return {values, indices};
}

}  // namespace

TORCH_LIBRARY_IMPL(seal_fast, CUDA, m) { m.impl("cosine_topk", &cosine_topk_cuda); }

}  // namespace seal_fast
