#include "kernels/backend.h"

#include "src/common/errors.h"

namespace rb {

void pack_bf16_panels(const uint16_t* B, int K, int N, int ldb, uint16_t* out) {
  for (int p0 = 0; p0 < N; p0 += kBf16Panel) {
    const int w = N - p0 < kBf16Panel ? N - p0 : kBf16Panel;
    for (int k = 0; k < K; k++)
      for (int j = 0; j < w; j++) {  // the full groups of 32 interleaved, the rest in order
        const int r = j % 32, slot = j >= w / 32 * 32 ? j : j - r + (r < 16 ? 2 * r : 2 * (r - 16) + 1);
        out[size_t(k) * w + slot] = B[size_t(k) * ldb + p0 + j];
      }
    out += size_t(K) * w;
  }
}

void DeviceOps::gemm_bf16(int, int, int, float, const float*, int, const uint16_t*, float, float*, int, const float*, float*) {
  throw Error("this backend has no bf16 weight products (use fp32 weights)");
}

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
