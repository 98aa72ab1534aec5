// CPU kernel of seal_fast::cosine_topk: the k most cosine-similar rows of R for
// every row of Q, without the Nq x Nr similarity matrix.
//
// Rows are L2-normalised once; then every block of query rows meets the
// reference rows block by block (the similarity tile is a row-block product
// that stays in cache) and each query row keeps a size-k min-heap of its best
// candidates. References are visited in increasing index order and a candidate
// only enters on a strictly larger score, so ties go to the lower index.
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "row_block_kernels.h"

namespace seal_fast {
namespace {

constexpr int64_t kQueryBlock = 32;
constexpr int64_t kRefBlock = 128;  // 128 x d floats of R stay in L2 while a query block passes

at::Tensor normalized_rows(const at::Tensor& X) {
  auto x = X.to(at::kFloat).contiguous();
  return x / x.norm(2, 1, true).clamp_min(1e-12);
}

// Min-heap on (value, -index): the root is the entry to evict first (smallest
// value; among equal values the larger index).
struct Entry {
  float v;
  int64_t i;
};
inline bool worse(const Entry& a, const Entry& b) { return a.v < b.v || (a.v == b.v && a.i > b.i); }
inline bool heap_cmp(const Entry& a, const Entry& b) { return worse(b, a); }  // std heap: max-heap of "worse-ness"

std::tuple<at::Tensor, at::Tensor> cosine_topk_cpu(const at::Tensor& Q_in, const at::Tensor& R_in, int64_t k,
                                                   bool exclude_self) {
  TORCH_CHECK(Q_in.dim() == 2 && R_in.dim() == 2, "cosine_topk: Q and R must be 2-D");
  TORCH_CHECK(Q_in.size(1) == R_in.size(1), "cosine_topk: Q and R must have the same number of columns");
  TORCH_CHECK(Q_in.is_floating_point() && R_in.is_floating_point(), "cosine_topk: floating-point inputs expected");
  const int64_t nq = Q_in.size(0), nr = R_in.size(0), d = Q_in.size(1);
  const int64_t available = exclude_self ? nr - 1 : nr;
  TORCH_CHECK(k >= 1 && k <= available, "cosine_topk: k=", k, " must be in [1, ", available, "]");
  TORCH_CHECK(!exclude_self || nq <= nr, "cosine_topk: exclude_self needs Q's rows to be R's first rows");
  const auto Q = normalized_rows(Q_in);
  const auto R = normalized_rows(R_in);
  auto values = at::empty({nq, k}, Q.options());
  auto indices = at::empty({nq, k}, Q.options().dtype(at::kLong));
  const float* q = Q.data_ptr<float>();
  const float* r = R.data_ptr<float>();
  float* out_v = values.data_ptr<float>();
  int64_t* out_i = indices.data_ptr<int64_t>();
  const int64_t nblocks = (nq + kQueryBlock - 1) / kQueryBlock;
  at::parallel_for(0, nblocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> sims(kQueryBlock * kRefBlock);
    std::vector<Entry> heaps(kQueryBlock * k);
    for (int64_t blk = begin; blk < end; ++blk) {
      const int64_t q0 = blk * kQueryBlock;
      const int64_t rows = std::min(kQueryBlock, nq - q0);
      std::vector<int64_t> filled(rows, 0);
      for (int64_t r0 = 0; r0 < nr; r0 += kRefBlock) {
        const int64_t cols = std::min(kRefBlock, nr - r0);
        cpu::rows_times_mt(q + q0 * d, rows, d, r + r0 * d, cols, sims.data());
        for (int64_t a = 0; a < rows; ++a) {
          Entry* h = heaps.data() + a * k;
          const float* s = sims.data() + a * cols;
          for (int64_t c = 0; c < cols; ++c) {
            const int64_t j = r0 + c;
            if (exclude_self && j == q0 + a) continue;
            const Entry e{s[c], j};
            if (filled[a] < k) {
              h[filled[a]++] = e;
              std::push_heap(h, h + filled[a], heap_cmp);
            } else if (worse(h[0], e)) {
              std::pop_heap(h, h + k, heap_cmp);
              h[k - 1] = e;
              std::push_heap(h, h + k, heap_cmp);
            }
          }
        }
      }
      for (int64_t a = 0; a < rows; ++a) {
        Entry* h = heaps.data() + a * k;
        std::sort(h, h + k, [](const Entry& x, const Entry& y) { return worse(y, x); });  // best first
        for (int64_t c = 0; c < k; ++c) {
          out_v[(q0 + a) * k + c] = h[c].v;
          out_i[(q0 + a) * k + c] = h[c].i;
        }
      }
    }
  });
  return {values, indices};
}

}  // namespace

TORCH_LIBRARY_IMPL(seal_fast, CPU, m) { m.impl("cosine_topk", &cosine_topk_cpu); }

}  // namespace seal_fast
