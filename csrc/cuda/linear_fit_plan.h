// How the CUDA unrolled_linear_fit splits a batch: plain host C++, shared by the
// kernel file and the `_C` module so that a CPU-only test can check the scratch
// size without a GPU.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

namespace seal_fast {
namespace linear_fit_plan {

constexpr int64_t kRows = 128;         // rows per tile
// partial-gradient slots (blocks) per SM: one keeps every SM busy with a block of 8 warps
// and bounds the scratch (K=1000, d=768+1536 on 132 SMs: 1.2 GB) however large B is
constexpr int64_t kSlotsPerSM = 1;

inline int64_t tiles(int64_t B) { return std::max<int64_t>(1, (B + kRows - 1) / kRows); }

// Blocks per space; each owns one slot of K*d + K partial sums and visits tiles
// blockIdx, blockIdx + slots, ... A fixed count, so memory does not grow with B.
inline int64_t slots(int64_t B, int64_t sm_count) {
  return std::max<int64_t>(1, std::min(tiles(B), kSlotsPerSM * std::max<int64_t>(1, sm_count)));
}

// Bytes of partial-gradient scratch for a fit of batch B, K classes and spaces of
// widths `dims` (float32 or float64 weights: `element` bytes).
inline int64_t scratch_bytes(int64_t B, int64_t K, const std::vector<int64_t>& dims, int64_t sm_count,
                             int64_t element) {
  int64_t total = 0;
  for (const int64_t d : dims) total += slots(B, sm_count) * (K * d + K) * element;
  return total;
}

}  // namespace linear_fit_plan
}  // namespace seal_fast
