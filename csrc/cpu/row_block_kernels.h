// Row-block products shared by the CPU kernels of the labeling ops.
//
// Both products work on a block of rows of Z (kept hot in L2 between them) and a
// small K x d matrix:
//   rows_times_mt:   out (R x K) = Z_blk (R x d) . M^T       (logits-like)
//   accumulate_gt_z: acc (K x d) += G (R x K)^T . Z_blk      (gradient-like)
// On x86-64 CPUs with AVX2 and FMA (checked at run time) register-blocked
// intrinsics kernels are used for float; everything else goes through portable
// loops that the compiler vectorises.
#pragma once
#include <cstdint>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SEAL_FAST_X86 1
#include <immintrin.h>
#endif

namespace seal_fast {
namespace cpu {

// ---- portable versions ------------------------------------------------------
template <typename T>
void rows_times_mt_generic(const T* __restrict__ Z, int64_t R, int64_t d, const T* __restrict__ M, int64_t K,
                           T* __restrict__ out) {
  for (int64_t r = 0; r < R; ++r) {
    const T* z = Z + r * d;
    for (int64_t k = 0; k < K; ++k) {
      const T* m = M + k * d;
      T a = 0;
#pragma omp simd reduction(+ : a)
      for (int64_t j = 0; j < d; ++j) a += z[j] * m[j];
      out[r * K + k] = a;
    }
  }
}

template <typename T>
void accumulate_gt_z_generic(const T* __restrict__ G, const T* __restrict__ Z, int64_t R, int64_t d, int64_t K,
                             T* __restrict__ acc) {
  for (int64_t k = 0; k < K; ++k) {
    T* a = acc + k * d;
    for (int64_t r = 0; r < R; ++r) {
      const T g = G[r * K + k];
      const T* z = Z + r * d;
#pragma omp simd
      for (int64_t j = 0; j < d; ++j) a[j] += g * z[j];
    }
  }
}

#ifdef SEAL_FAST_X86
// ---- AVX2 + FMA versions (float) -------------------------------------------
__attribute__((target("avx2,fma"))) inline float hsum256(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}

// 4 rows x 2 columns of M per inner loop: 8 accumulators, 6 loads per 8 FMAs.
__attribute__((target("avx2,fma"))) inline void rows_times_mt_avx2(const float* __restrict__ Z, int64_t R,
                                                                   int64_t d, const float* __restrict__ M,
                                                                   int64_t K, float* __restrict__ out) {
  const int64_t d8 = d & ~int64_t(7);
  int64_t r = 0;
  for (; r + 4 <= R; r += 4) {
    const float* z0 = Z + r * d;
    const float* z1 = z0 + d;
    const float* z2 = z1 + d;
    const float* z3 = z2 + d;
    int64_t k = 0;
    for (; k + 2 <= K; k += 2) {
      const float* m0 = M + k * d;
      const float* m1 = m0 + d;
      __m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00,
             a31 = a00;
      for (int64_t j = 0; j < d8; j += 8) {
        const __m256 w0 = _mm256_loadu_ps(m0 + j), w1 = _mm256_loadu_ps(m1 + j);
        __m256 x = _mm256_loadu_ps(z0 + j);
        a00 = _mm256_fmadd_ps(x, w0, a00);
        a01 = _mm256_fmadd_ps(x, w1, a01);
        x = _mm256_loadu_ps(z1 + j);
        a10 = _mm256_fmadd_ps(x, w0, a10);
        a11 = _mm256_fmadd_ps(x, w1, a11);
        x = _mm256_loadu_ps(z2 + j);
        a20 = _mm256_fmadd_ps(x, w0, a20);
        a21 = _mm256_fmadd_ps(x, w1, a21);
        x = _mm256_loadu_ps(z3 + j);
        a30 = _mm256_fmadd_ps(x, w0, a30);
        a31 = _mm256_fmadd_ps(x, w1, a31);
      }
      float s[8] = {hsum256(a00), hsum256(a01), hsum256(a10), hsum256(a11),
                    hsum256(a20), hsum256(a21), hsum256(a30), hsum256(a31)};
      for (int64_t j = d8; j < d; ++j) {
        s[0] += z0[j] * m0[j];
        s[1] += z0[j] * m1[j];
        s[2] += z1[j] * m0[j];
        s[3] += z1[j] * m1[j];
        s[4] += z2[j] * m0[j];
        s[5] += z2[j] * m1[j];
        s[6] += z3[j] * m0[j];
        s[7] += z3[j] * m1[j];
      }
      for (int i = 0; i < 4; ++i) {
        out[(r + i) * K + k] = s[2 * i];
        out[(r + i) * K + k + 1] = s[2 * i + 1];
      }
    }
    if (k < K) {  // odd K: the last column, one row at a time
      for (int i = 0; i < 4; ++i) rows_times_mt_generic(z0 + i * d, 1, d, M + k * d, 1, out + (r + i) * K + k);
    }
  }
  if (r < R) rows_times_mt_generic(Z + r * d, R - r, d, M, K, out + r * K);
}

// 16 columns of d x KK rows of acc per inner loop (KK = 6: 12 accumulators,
// 8 loads per 12 FMAs); the Z block streams from L2 once per KK rows of acc.
template <int KK>
__attribute__((target("avx2,fma"))) inline void accumulate_rows_avx2(const float* __restrict__ G,
                                                                     const float* __restrict__ Z, int64_t R,
                                                                     int64_t d, int64_t K, int64_t k0,
                                                                     float* __restrict__ acc) {
  const int64_t d16 = d & ~int64_t(15);
  for (int64_t j = 0; j < d16; j += 16) {
    __m256 c[KK][2];
    for (int i = 0; i < KK; ++i) {
      c[i][0] = _mm256_loadu_ps(acc + (k0 + i) * d + j);
      c[i][1] = _mm256_loadu_ps(acc + (k0 + i) * d + j + 8);
    }
    for (int64_t r = 0; r < R; ++r) {
      const float* z = Z + r * d + j;
      const __m256 x0 = _mm256_loadu_ps(z), x1 = _mm256_loadu_ps(z + 8);
      const float* g = G + r * K + k0;
      for (int i = 0; i < KK; ++i) {
        const __m256 gi = _mm256_broadcast_ss(g + i);
        c[i][0] = _mm256_fmadd_ps(gi, x0, c[i][0]);
        c[i][1] = _mm256_fmadd_ps(gi, x1, c[i][1]);
      }
    }
    for (int i = 0; i < KK; ++i) {
      _mm256_storeu_ps(acc + (k0 + i) * d + j, c[i][0]);
      _mm256_storeu_ps(acc + (k0 + i) * d + j + 8, c[i][1]);
    }
  }
  for (int64_t j = d16; j < d; ++j)
    for (int64_t r = 0; r < R; ++r)
      for (int i = 0; i < KK; ++i) acc[(k0 + i) * d + j] += G[r * K + k0 + i] * Z[r * d + j];
}

__attribute__((target("avx2,fma"))) inline void accumulate_gt_z_avx2(const float* G, const float* Z, int64_t R,
                                                                     int64_t d, int64_t K, float* acc) {
  int64_t k0 = 0;
  for (; k0 + 6 <= K; k0 += 6) accumulate_rows_avx2<6>(G, Z, R, d, K, k0, acc);
  if (K - k0 >= 4) {
    accumulate_rows_avx2<4>(G, Z, R, d, K, k0, acc);
    k0 += 4;
  }
  if (K - k0 >= 2) {
    accumulate_rows_avx2<2>(G, Z, R, d, K, k0, acc);
    k0 += 2;
  }
  if (K - k0 == 1) accumulate_rows_avx2<1>(G, Z, R, d, K, k0, acc);
}

inline bool have_avx2_fma() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
}
#endif  // SEAL_FAST_X86

// ---- dispatch ---------------------------------------------------------------
inline void rows_times_mt(const float* Z, int64_t R, int64_t d, const float* M, int64_t K, float* out) {
#ifdef SEAL_FAST_X86
  if (have_avx2_fma()) return rows_times_mt_avx2(Z, R, d, M, K, out);
#endif
  rows_times_mt_generic(Z, R, d, M, K, out);
}
inline void rows_times_mt(const double* Z, int64_t R, int64_t d, const double* M, int64_t K, double* out) {
  rows_times_mt_generic(Z, R, d, M, K, out);
}
inline void accumulate_gt_z(const float* G, const float* Z, int64_t R, int64_t d, int64_t K, float* acc) {
#ifdef SEAL_FAST_X86
  if (have_avx2_fma()) return accumulate_gt_z_avx2(G, Z, R, d, K, acc);
#endif
  accumulate_gt_z_generic(G, Z, R, d, K, acc);
}
inline void accumulate_gt_z(const double* G, const double* Z, int64_t R, int64_t d, int64_t K, double* acc) {
  accumulate_gt_z_generic(G, Z, R, d, K, acc);
}

}  // namespace cpu
}  // namespace seal_fast
