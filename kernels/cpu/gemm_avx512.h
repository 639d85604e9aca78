// AVX-512 sgemm for the CPU backend (see gemm_avx512.cpp). BLAS semantics, row-major.
#pragma once

namespace rb {

bool sgemm_avx512_available();  // compiled for a CPU with AVX-512F
void sgemm_avx512(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A,
                  int lda, const float* B, int ldb, float beta, float* C, int ldc, int threads);

}  // namespace rb
