// Plain scalar reference implementations, accumulated in double. They define what each fast
// kernel must compute; tests hold every backend against them. Never used on a hot path.
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/backend.h"

namespace rb::ref {

void gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb, float beta,
          float* C, int ldc);
void layernorm(float* out, const float* x, const float* w, const float* b, int rows, int C);
float gelu(float x);
void rmsnorm(float* out, const float* x, int ld_x, int rows, int groups, int width);
void swish_gate(float* out, const float* g, int ld_g, const float* y, int rows, int cols);
void rope(float* x, int ld, int rows, int heads, int hd, int seq_len, int64_t pos0, float scale);
void crossentropy(float* losses, const float* logits, const int32_t* targets, int rows, int V);
void attention(float* out, const float* qkv, const AttentionShape& s);

// Retention, parallel form: O = (Q K^T ⊙ D) V + diag(gamma^(t+1)) Q S0 per head; state_out =
// gamma^n S0 + sum_m gamma^(n-1-m) k_m^T v_m. state_in may be null (zeros).
void retention_parallel(float* o, const float* q, const float* k, const float* v, const float* gammas, const RetentionShape& s,
                        const float* state_in, float* state_out);
// Recurrent form: S_t = gamma S_{t-1} + k_t^T v_t, o_t = q_t S_t.
void retention_recurrent(float* o, const float* q, const float* k, const float* v, const float* gammas, const RetentionShape& s,
                         const float* state_in, float* state_out);
// Backward of the parallel form, written directly from its matrices (dq, dk, dv written).
void retention_parallel_backward(float* dq, float* dk, float* dv, float* dstate_in, const float* dout, const float* dstate_out,
                                 const float* q, const float* k, const float* v, const float* gammas, const RetentionShape& s,
                                 const float* state_in);

}  // namespace rb::ref
