// Single-precision GEMM with an AVX-512 micro-kernel (Goto/BLIS blocking). OpenBLAS runs its AVX2
// Haswell kernels on this CPU, whose full-width AVX-512 units do twice the FMAs per cycle.
//
// C[M,N] = alpha * op(A) op(B) + beta * C, row-major. B is packed in KC x NR panels (shared by the
// threads), A in MR x KC panels (per thread); the MR x NR tile of C lives in 24 zmm registers.
// Threads split the rows of C, and every element's sum over K runs in the same order whatever
// the thread count, so results do not depend on it.
#include "kernels/cpu/gemm_avx512.h"

#ifdef __AVX512F__
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace rb {

namespace {

constexpr int MR = 12, NR = 32;             // register tile: 12 rows x 2 zmm
constexpr int KC = 256, MC_MAX = 192, NC = 1536;


// Packs rows [i0, i0+mc) x depth [p0, p0+kc) of op(A) into MR-row panels: panel r holds, for each
// k, MR consecutive floats (rows past mc are zero).
void pack_a(float* dst, const float* A, int lda, bool ta, int i0, int mc, int p0, int kc) {
  for (int r = 0; r < mc; r += MR) {
    const int rows = std::min(MR, mc - r);
    float* d = dst + size_t(r) * kc;
    if (!ta) {  // rows of A are contiguous in k: read each once, write with stride MR
      for (int i = 0; i < rows; i++) {
        const float* src = A + size_t(i0 + r + i) * lda + p0;
        for (int k = 0; k < kc; k++) d[k * MR + i] = src[k];
      }
      for (int i = rows; i < MR; i++)
        for (int k = 0; k < kc; k++) d[k * MR + i] = 0.0f;
    } else {
      for (int k = 0; k < kc; k++) {
        const float* src = A + size_t(p0 + k) * lda + i0 + r;
        for (int i = 0; i < rows; i++) d[k * MR + i] = src[i];
        for (int i = rows; i < MR; i++) d[k * MR + i] = 0.0f;
      }
    }
  }
}

// Packs depth [p0, p0+kc) x columns [j0, j0+nc) of op(B) into NR-column panels (zero-padded).
void pack_b_panel(float* d, const float* B, int ldb, bool tb, int p0, int kc, int j, int cols) {
  if (!tb) {
    for (int k = 0; k < kc; k++) {
      const float* src = B + size_t(p0 + k) * ldb + j;
      float* dk = d + size_t(k) * NR;
      if (cols == NR) {
        std::memcpy(dk, src, NR * sizeof(float));
      } else {
        for (int c = 0; c < cols; c++) dk[c] = src[c];
        for (int c = cols; c < NR; c++) dk[c] = 0.0f;
      }
    }
  } else {  // op(B) = B^T: rows of B are contiguous in k; the panel (kc x NR) stays in L1
    for (int c = 0; c < cols; c++) {
      const float* src = B + size_t(j + c) * ldb + p0;
      for (int k = 0; k < kc; k++) d[size_t(k) * NR + c] = src[k];
    }
    for (int c = cols; c < NR; c++)
      for (int k = 0; k < kc; k++) d[size_t(k) * NR + c] = 0.0f;
  }
}

// C tile (rows x cols of it are real) = alpha * Ap Bp + (first ? beta * C : C).
void micro_kernel(int kc, const float* Ap, const float* Bp, float* C, int ldc, int rows, int cols,
                  float alpha, float beta, bool first) {
  __m512 acc[MR][2];
  for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (int k = 0; k < kc; k++) {
    const __m512 b0 = _mm512_loadu_ps(Bp + size_t(k) * NR);
    const __m512 b1 = _mm512_loadu_ps(Bp + size_t(k) * NR + 16);
    const float* a = Ap + size_t(k) * MR;
#pragma GCC unroll 12
    for (int i = 0; i < MR; i++) {
      const __m512 ai = _mm512_set1_ps(a[i]);
      acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
    }
  }
  const __mmask16 m0 = cols >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << cols) - 1);
  const __mmask16 m1 = cols >= 32 ? __mmask16(0xFFFF) : cols <= 16 ? __mmask16(0) : __mmask16((1u << (cols - 16)) - 1);
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(first ? beta : 1.0f);
  const bool read_c = !(first && beta == 0.0f);  // BLAS: beta = 0 never reads C
  for (int i = 0; i < rows; i++) {
    float* c = C + size_t(i) * ldc;
    __m512 r0 = _mm512_mul_ps(va, acc[i][0]), r1 = _mm512_mul_ps(va, acc[i][1]);
    if (read_c) {
      r0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, c), r0);
      r1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, c + 16), r1);
    }
    _mm512_mask_storeu_ps(c, m0, r0);
    _mm512_mask_storeu_ps(c + 16, m1, r1);
  }
}

}  // namespace

bool sgemm_avx512_available() { return true; }

void sgemm_avx512(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda,
                  const float* B, int ldb, float beta, float* C, int ldc, int threads) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {  // C = beta * C
    for (int i = 0; i < M; i++)
      for (int j = 0; j < N; j++) C[size_t(i) * ldc + j] = beta == 0.0f ? 0.0f : beta * C[size_t(i) * ldc + j];
    return;
  }
  // Rows per thread block: enough blocks for every thread, a multiple of MR, at most MC_MAX.
  const int per_thread = (M + threads - 1) / threads;
  const int MC = std::max(MR, std::min(MC_MAX, (per_thread + MR - 1) / MR * MR));
  const int nt = std::max(1, std::min(threads, (M + MC - 1) / MC));
  // Packing buffers live per calling thread and only grow: small products (the retention's
  // per-head blocks, called from inside a parallel region) allocate nothing after the first call.
  thread_local std::vector<float> bpack, apack;
  const size_t kc_max = size_t(std::min(K, KC));
  const size_t bneed = kc_max * ((std::min(N, NC) + NR - 1) / NR * NR), aneed = size_t(nt) * MC * kc_max;
  if (bpack.size() < bneed) bpack.resize(bneed);
  if (apack.size() < aneed) apack.resize(aneed);
  // Plain pointers: inside the parallel region the name `bpack` would mean each thread's own.
  float* const bbuf = bpack.data();
  float* const abuf = apack.data();
  for (int jc = 0; jc < N; jc += NC) {
    const int nc = std::min(NC, N - jc);
    const int npanels = (nc + NR - 1) / NR;
    for (int pc = 0; pc < K; pc += KC) {
      const int kc = std::min(KC, K - pc);
      const bool first = pc == 0;
#pragma omp parallel num_threads(nt) if (nt > 1)
      {
#pragma omp for schedule(static)
        for (int p = 0; p < npanels; p++)
          pack_b_panel(bbuf + size_t(p) * kc * NR, B, ldb, tb, pc, kc, jc + p * NR, std::min(NR, nc - p * NR));
        float* ap = abuf + size_t(omp_get_thread_num()) * MC * kc_max;
#pragma omp for schedule(static)
        for (int ic = 0; ic < M; ic += MC) {
          const int mc = std::min(MC, M - ic);
          pack_a(ap, A, lda, ta, ic, mc, pc, kc);
          for (int p = 0; p < npanels; p++) {
            const int cols = std::min(NR, nc - p * NR);
            const float* bp = bbuf + size_t(p) * kc * NR;
            for (int ir = 0; ir < mc; ir += MR)
              micro_kernel(kc, ap + size_t(ir) * kc, bp, C + size_t(ic + ir) * ldc + jc + p * NR, ldc,
                           std::min(MR, mc - ir), cols, alpha, beta, first);
          }
        }
      }
    }
  }
}

}  // namespace rb

#else  // no AVX-512: the caller uses OpenBLAS

namespace rb {
bool sgemm_avx512_available() { return false; }
void sgemm_avx512(bool, bool, int, int, int, float, const float*, int, const float*, int, float,
                  float*, int, int) {}
}  // namespace rb

#endif
