// The shared memory one block of the CUDA patch_gat needs for one image's graph:
// plain host C++, shared by the kernel file and the `_C` module so that a CPU-only
// test checks the Python side's copy (ops/patch_gat.py: shared_memory_bytes) against it.
#pragma once
#include <cstddef>
#include <cstdint>

namespace seal_fast {
namespace patch_gat_plan {

// element-sized: H-side scores and weights (s_src, s_dst, beta, ds_src, ds_dst: 5 M; alpha and
// work: 2 M k); int-sized: neighbour lists (M k), the incoming-edge CSR (M + 1 and M k)
inline size_t smem_bytes(int64_t M, int64_t k, size_t element) {
  return element * static_cast<size_t>(5 * M + 2 * M * k) + sizeof(int) * static_cast<size_t>(2 * M * k + M + 1);
}

}  // namespace patch_gat_plan
}  // namespace seal_fast
