#include "kernels/backend.h"

#include <algorithm>
#include <cmath>

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

namespace {
float max_abs(const float* x, int n) {  // exact in any order
  float m = 0.0f;
  for (int i = 0; i < n; i++) m = std::max(m, std::fabs(x[i]));
  return m;
}
}  // namespace

size_t i8_panel_bytes(int N, int K) { return size_t(N) * size_t((K + 3) / 4) * 4; }

void pack_i8_panels(const float* W, int N, int K, int8_t* out, float* b_scale, int32_t* b_colsum) {
  const int K4 = (K + 3) / 4;
  for (int j = 0; j < N; j++) {
    const float* w = W + size_t(j) * K;
    const float m = max_abs(w, K);
    b_scale[j] = m > 0.0f ? m / 127.0f : 1.0f;
    const int p0 = j / kI8Panel * kI8Panel, width = std::min(kI8Panel, N - p0), c = j - p0;
    int8_t* panel = out + size_t(p0) * K4 * 4;
    int32_t sum = 0;
    for (int k = 0; k < 4 * K4; k++) {
      const int q = k < K ? int(std::clamp(std::nearbyint(w[k] / b_scale[j]), -127.0f, 127.0f)) : 0;
      panel[(size_t(k / 4) * width + c) * 4 + k % 4] = int8_t(q);
      sum += q;
    }
    b_colsum[j] = sum;
  }
}

void quantize_row_u7(const float* x, int K, uint8_t* q, float* scale) {
  const float m = max_abs(x, K);
  const float s = m > 0.0f ? m / 63.0f : 1.0f;
  for (int k = 0; k < K; k++) {
    const float v = x[k] / s;  // NaN (a NaN x, or Inf over Inf) stands for 0
    q[k] = uint8_t(int(v != v ? 0.0f : std::clamp(std::nearbyint(v), -63.0f, 63.0f)) + kI8ActivationOffset);
  }
  for (int k = K; k < (K + 3) / 4 * 4; k++) q[k] = uint8_t(kI8ActivationOffset);
  *scale = s;
}

void DeviceOps::quantize_rows_u7(const float*, int, int, int, uint8_t*, int, float*) {
  throw Error("this backend has no int8 products (use fp32 or bf16 weights)");
}

void DeviceOps::gemm_i8(int, int, int, const uint8_t*, int, const float*, const int8_t*, const float*, const int32_t*, float,
                        float*, int, const float*, float*) {
  throw Error("this backend has no int8 products (use fp32 or bf16 weights)");
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
