// The CPU kernels of one instruction set. kernels_generic.inc is compiled three times (portable
// C++, AVX2+FMA, AVX-512) into tables of this type; every table computes the same bits (README,
// numerics contract), so the backend picks one at start-up and results never depend on it.
// All functions are single-threaded; the backend splits work across its thread pool.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_features.h"

namespace rb {

struct CpuKernels {
  CpuPath path;
  int gemm_mr;  // row tile of the packed GEMM (row ranges split at its multiples run fastest)
  int gemm_nr;  // column tile: pack_b writes panels of this many columns
  int gemm_mc;  // rows of A packed at a time
  int gemm_nc;  // columns of B per packed block

  // Rows [i0, i1) of C = alpha op(A) op(B) + beta C (packed GEMM, any M).
  void (*gemm_rows)(bool ta, bool tb, int i0, int i1, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb,
                    float beta, float* C, int ldc);
  // The two halves of gemm_rows, for a multithreaded driver that packs each block of B once:
  // pack_b packs depth [p0, p0+kc) x columns [j0, j0+nc) of op(B) as gemm_nr-wide panels
  // (kc * gemm_nr floats each). Which panels are packed: all when tb or pack_all (many rows
  // reuse them), else only a last panel narrower than gemm_nr (whole panels of B are read in
  // place). gemm_packed_rows applies depth block [p0, p0+kc) to rows [i0, i1), columns
  // [j0, j0+nc).
  void (*pack_b)(float* dst, const float* B, int ldb, bool tb, int p0, int kc, int j0, int nc);
  void (*gemm_packed_rows)(bool ta, bool tb, bool pack_all, int i0, int i1, const float* A, int lda, const float* B, int ldb,
                           int p0, int kc, int j0, int nc, const float* bpack, float alpha, float beta, float* C, int ldc,
                           bool first);
  // Columns [j0, j1) of the same product for all M rows, without packing A (few rows: decoding).
  void (*gemm_cols)(bool ta, bool tb, int M, int j0, int j1, int K, float alpha, const float* A, int lda, const float* B, int ldb,
                    float beta, float* C, int ldc);
  // The same with B [K, N] in bf16 panels (backend.h, pack_bf16_panels; weights rounded to bf16,
  // widened exactly), then + bias[j] when given: the bits of gemm_cols on the widened values, then
  // add_bias_rows.
  void (*gemm_cols_bf16)(int M, int j0, int j1, int N, int K, float alpha, const float* A, int lda, const uint16_t* B_panels,
                         float beta, float* C, int ldc, const float* bias);
  // Columns [j0, j1) of the int8 product (backend.h, gemm_i8): activations quantized by
  // quantize_rows_u7, weights in int8 panels (pack_i8_panels); exact integer sums, then the fixed
  // epilogue gemm_i8 states.
  void (*gemm_cols_i8)(int M, int j0, int j1, int N, int K, const uint8_t* Aq, int lda, const float* a_scale,
                       const int8_t* B_panels, const float* b_scale, const int32_t* b_colsum, float beta, float* C, int ldc,
                       const float* bias);

  // One row of activations to the 7-bit bytes gemm_cols_i8 reads (backend.h, quantize_row_u7).
  void (*quantize_u7)(const float* x, int K, uint8_t* q, float* scale);

  void (*layernorm_rows)(float* out, float* mean, float* rstd, const float* x, const float* w, const float* b, int r0, int r1,
                         int C);
  // dx += for rows [r0, r1) (the weight and bias gradients are column sums, done by the caller).
  void (*layernorm_backward_rows)(float* dx, const float* dout, const float* x, const float* w, const float* mean,
                                  const float* rstd, int r0, int r1, int C);
  // y[r] += bias for rows [r0, r1); acc[c] += x[r][c] for rows [r0, r1) in order (a block of a
  // column sum); LayerNorm's weight/bias gradient rows: pw += dout (x - mean) rstd, pb += dout.
  void (*add_bias_rows)(float* y, const float* bias, int r0, int r1, int cols);
  void (*add_rows)(float* acc, const float* x, int r0, int r1, int C);
  void (*layernorm_param_grad_rows)(float* pw, float* pb, const float* dout, const float* x, const float* mean, const float* rstd,
                                    int r0, int r1, int C);
  void (*adamw_range)(float* p, const float* g, float* m, float* v, const float* decay_mask, size_t begin, size_t end,
                      const AdamWStep& s);
  void (*gelu)(float* out, const float* x, size_t n);
  void (*gelu_backward)(float* dx, const float* x, const float* dout, size_t n);
  void (*rmsnorm_rows)(float* out, float* rstd, const float* x, int ld_x, int r0, int r1, int groups, int width);
  void (*rmsnorm_backward_rows)(float* dx, int ld_x, const float* dout, const float* y, const float* rstd, int r0, int r1,
                                int groups, int width);
  void (*swish_gate_rows)(float* out, const float* g, int ld_g, const float* y, int r0, int r1, int cols);
  void (*swish_gate_backward_rows)(float* dg, float* dy, int ld_g, const float* g, const float* y, const float* dout, int r0,
                                   int r1, int cols);
  // losses[r] (nats); with fused, logits become (softmax - onehot) * dscale.
  void (*crossentropy_rows)(float* losses, float* logits, const int32_t* targets, int r0, int r1, int V, bool fused,
                            float dscale);
  // One query row against n keys/values (row stride ld, width hd) of one head: out [hd],
  // probs [n] receives the softmax. The one attention row every attention path uses.
  void (*attention_row)(float* out, float* probs, const float* q, const float* k, const float* v, int n, int ld, int hd,
                        float scale);
  // dq, dk, dv (+=) of one (sequence, head) of causal attention; see AttentionShape.
  void (*attention_backward_head)(float* dqkv, const float* dout, const float* qkv, const float* probs, int S, int ld, int D,
                                  int h, int hd, float scale, float* scratch);
  // One (sequence, head) of recurrent retention over n positions: S = g S + k^T v, o = q S.
  void (*retention_recurrent_head)(float* o, int ldo, const float* q, const float* k, int ld_qk, const float* v, int ld_v,
                                   float g, int n, int dk, int dv, float* S);
  // Benchmarks: `iters` rounds of 12 independent vector FMA chains (the path's peak FMA rate);
  // returns a value so the work is not optimised away. flops = iters * 12 * lanes * 2.
  float (*fma_probe)(int64_t iters);
  int lanes;
  // Canonical row sum (16 lanes + fixed tree); exposed for tests of the contract.
  float (*sum)(const float* x, int n);
};

CpuKernels cpu_kernels_portable();
CpuKernels cpu_kernels_avx2();
CpuKernels cpu_kernels_avx512();
CpuKernels cpu_kernels(CpuPath p);

}  // namespace rb
