// CPU kernel of seal_fast::cosine_topk: the k most cosine-similar rows of R for
// every row of Q, without the Nq x Nr similarity matrix.
//
// Rows are L2-normalised once; then the similarity matrix is produced one
// kTile x kTile tile at a time by the BLAS GEMM (multi-threaded, the fastest
// product the machine has) and every query row folds its tile row into a
// size-k min-heap of its best candidates; memory stays O(Nq k + kTile^2).
//
// Self-search (Q and R the same tensor, the case of every neighbour search in
// the distillation) exploits symmetry: only tiles on or above the diagonal are
// multiplied and an off-diagonal tile also feeds, transposed, the heaps of its
// column block, which halves the GEMM work.
//
// The heap order is total on (value, index) with the lower index winning ties,
// so the result does not depend on the order in which tiles arrive.
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>
#include <vector>

namespace seal_fast {
namespace {

constexpr int64_t kTile = 2048;  // 16 MiB float tile: smaller tiles ran the BLAS GEMM 1.5x slower here

at::Tensor normalized_rows(const at::Tensor& X) {
  auto x = X.to(at::kFloat).contiguous();
  return x / x.norm(2, 1, true).clamp_min(1e-12);
}

struct Entry {
  float v;
  int64_t i;
};
// a is a worse neighbour than b: smaller score, or the same score and a larger index.
inline bool worse(const Entry& a, const Entry& b) { return a.v < b.v || (a.v == b.v && a.i > b.i); }
// std heap functions keep the "largest" element at the root; with this order the
// root is the worst entry kept, the one to evict first.
inline bool heap_cmp(const Entry& a, const Entry& b) { return worse(b, a); }

// The candidates of one query row in one tile row: scores s[0..cols) of the
// reference rows col0.. ; `skip` is the row's own index when self is excluded.
inline void fold_row(Entry* h, int64_t& filled, int64_t k, const float* s, int64_t cols, int64_t col0,
                     int64_t skip) {
  int64_t c = 0;
  for (; c < cols && filled < k; ++c) {
    if (col0 + c == skip) continue;
    h[filled++] = Entry{s[c], col0 + c};
    std::push_heap(h, h + filled, heap_cmp);
  }
  if (filled < k) return;
  float threshold = h[0].v;
  for (; c < cols; ++c) {
    if (s[c] < threshold) continue;  // the common case once the heap is warm
    const Entry e{s[c], col0 + c};
    if (e.i == skip || !worse(h[0], e)) continue;
    std::pop_heap(h, h + k, heap_cmp);
    h[k - 1] = e;
    std::push_heap(h, h + k, heap_cmp);
    threshold = h[0].v;
  }
}

// Fold a rows x cols score tile into the heaps of rows row0.. (columns col0..).
void fold_tile(const float* tile, int64_t rows, int64_t cols, int64_t row0, int64_t col0, int64_t k,
               bool exclude_self, std::vector<Entry>& heaps, std::vector<int64_t>& filled) {
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t a = begin; a < end; ++a) {
      const int64_t row = row0 + a;
      fold_row(heaps.data() + row * k, filled[row], k, tile + a * cols, cols, col0, exclude_self ? row : -1);
    }
  });
}

std::tuple<at::Tensor, at::Tensor> cosine_topk_cpu(const at::Tensor& Q_in, const at::Tensor& R_in, int64_t k,
                                                   bool exclude_self) {
  TORCH_CHECK(Q_in.dim() == 2 && R_in.dim() == 2, "cosine_topk: Q and R must be 2-D");
  TORCH_CHECK(Q_in.size(1) == R_in.size(1), "cosine_topk: Q and R must have the same number of columns");
  TORCH_CHECK(Q_in.is_floating_point() && R_in.is_floating_point(), "cosine_topk: floating-point inputs expected");
  const int64_t nq = Q_in.size(0), nr = R_in.size(0);
  const int64_t available = exclude_self ? nr - 1 : nr;
  TORCH_CHECK(k >= 1 && k <= available, "cosine_topk: k=", k, " must be in [1, ", available, "]");
  TORCH_CHECK(!exclude_self || nq <= nr, "cosine_topk: exclude_self needs Q's rows to be R's first rows");
  // the same memory read the same way (the same tensor, or a view identical to it)
  const bool symmetric = Q_in.data_ptr() == R_in.data_ptr() && Q_in.sizes() == R_in.sizes() &&
                         Q_in.strides() == R_in.strides() && Q_in.dtype() == R_in.dtype();
  const auto Q = normalized_rows(Q_in);
  const auto R = symmetric ? Q : normalized_rows(R_in);

  std::vector<Entry> heaps(nq * k);
  std::vector<int64_t> filled(nq, 0);
  auto buffer = at::empty({kTile * kTile}, Q.options());
  auto transposed = symmetric ? at::empty({kTile * kTile}, Q.options()) : at::Tensor();
  for (int64_t q0 = 0; q0 < nq; q0 += kTile) {
    const int64_t rows = std::min(kTile, nq - q0);
    const auto Qb = Q.narrow(0, q0, rows);
    for (int64_t r0 = symmetric ? q0 : 0; r0 < nr; r0 += kTile) {
      const int64_t cols = std::min(kTile, nr - r0);
      auto tile = buffer.narrow(0, 0, rows * cols).view({rows, cols});
      at::mm_out(tile, Qb, R.narrow(0, r0, cols).t());
      fold_tile(tile.data_ptr<float>(), rows, cols, q0, r0, k, exclude_self, heaps, filled);
      if (symmetric && r0 != q0) {  // the same scores, seen from the rows of block r0
        auto tile_t = transposed.narrow(0, 0, rows * cols).view({cols, rows});
        tile_t.copy_(tile.t());
        fold_tile(tile_t.data_ptr<float>(), cols, rows, r0, q0, k, exclude_self, heaps, filled);
      }
    }
  }

  auto values = at::empty({nq, k}, Q.options());
  auto indices = at::empty({nq, k}, Q.options().dtype(at::kLong));
  float* out_v = values.data_ptr<float>();
  int64_t* out_i = indices.data_ptr<int64_t>();
  at::parallel_for(0, nq, 64, [&](int64_t begin, int64_t end) {
    for (int64_t a = begin; a < end; ++a) {
      Entry* h = heaps.data() + a * k;
      std::sort(h, h + k, [](const Entry& x, const Entry& y) { return worse(y, x); });  // best first
      for (int64_t c = 0; c < k; ++c) {
        out_v[a * k + c] = h[c].v;
        out_i[a * k + c] = h[c].i;
      }
    }
  });
  return {values, indices};
}

}  // namespace

TORCH_LIBRARY_IMPL(seal_fast, CPU, m) { m.impl("cosine_topk", &cosine_topk_cpu); }

}  // namespace seal_fast
