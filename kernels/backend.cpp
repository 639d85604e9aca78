#include "kernels/backend.h"

namespace rb {

void DeviceOps::linear_forward(float* y, const float* x, const float* W, const float* bias, int rows, int in, int out) {
  gemm(false, true, rows, out, in, 1.0f, x, in, W, in, 0.0f, y, out);
  if (bias) add_bias(y, bias, rows, out);
}

void DeviceOps::linear_backward(float* dx, float* dW, float* dbias, const float* dy, const float* x, const float* W, int rows,
                                int in, int out, bool accumulate_dx) {
  if (dx) gemm(false, false, rows, in, out, 1.0f, dy, out, W, in, accumulate_dx ? 1.0f : 0.0f, dx, in);
  if (dW) gemm(true, false, out, in, rows, 1.0f, dy, out, x, in, 1.0f, dW, in);
  if (dbias) bias_backward(dbias, dy, rows, out);
}

}  // namespace rb
