#include "kernels/backend.h"

namespace rb {

void Backend::linear_forward(float* y, const float* x, const float* W, const float* bias, int rows,
                             int in, int out) {
  gemm(false, true, rows, out, in, 1.0f, x, in, W, in, 0.0f, y, out);
  if (bias) add_bias(y, bias, rows, out);
}

void Backend::linear_backward(float* dx, float* dW, float* dbias, const float* dy, const float* x,
                              const float* W, int rows, int in, int out, bool accumulate_dx) {
  if (dx) gemm(false, false, rows, in, out, 1.0f, dy, out, W, in, accumulate_dx ? 1.0f : 0.0f, dx, in);
  if (dW) gemm(true, false, out, in, rows, 1.0f, dy, out, x, in, 1.0f, dW, in);
  if (dbias) bias_backward(dbias, dy, rows, out);
}

void Backend::residual_mlp_forward(float* out, const float* in, float* ln, float* mean, float* rstd,
                                   float* h, float* ha, const float* ln_w, const float* ln_b,
                                   const float* w1, const float* b1, const float* w2,
                                   const float* b2, int rows, int C, int hidden) {
  layernorm_forward(ln, mean, rstd, in, ln_w, ln_b, rows, C);
  linear_forward(h, ln, w1, b1, rows, C, hidden);
  gelu_forward(ha, h, size_t(rows) * hidden);
  if (out != in) copy(out, in, size_t(rows) * C);
  gemm(false, true, rows, C, hidden, 1.0f, ha, hidden, w2, hidden, 1.0f, out, C);
  add_bias(out, b2, rows, C);
}

}  // namespace rb
