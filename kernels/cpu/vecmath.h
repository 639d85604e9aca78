// Branch-free float math that GCC vectorises inside `#pragma omp simd` loops (glibc 2.36 has no
// vector erf, and its vector expf needs -ffast-math, which would also break NaN checks).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

namespace rb::vec {

// exp(x), Cephes polynomial on [-ln2/2, ln2/2]; relative error ~2 float ulp; clamps to
// [exp(-87.3), exp(88.7)] so it never produces inf/denormals; NaN in gives NaN out.
inline float expf_fast(float x) {
  const float hi = 88.7f, lo = -87.3f;
  float xc = x > hi ? hi : x;
  xc = xc < lo ? lo : xc;
  // Round to nearest by adding and removing 1.5 * 2^23 (floorf is a libm call that blocks
  // vectorisation without -ffast-math).
  const float shifter = 12582912.0f;
  const float n = (xc * 1.44269504088896341f + shifter) - shifter;
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500E-4f;
  p = p * r + 1.3981999507E-3f;
  p = p * r + 8.3334519073E-3f;
  p = p * r + 4.1665795894E-2f;
  p = p * r + 1.6666665459E-1f;
  p = p * r + 5.0000001201E-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (int32_t(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  const float y = p * scale;
  return x != x ? x : y;
}

// erf(x), Abramowitz & Stegun 7.1.26: absolute error <= 1.5e-7 (about one float ulp of 1).
inline float erf_fast(float x) {
  const float ax = std::fabs(x);
  const float t = 1.0f / (1.0f + 0.3275911f * ax);
  float p = 1.061405429f;
  p = p * t - 1.453152027f;
  p = p * t + 1.421413741f;
  p = p * t - 0.284496736f;
  p = p * t + 0.254829592f;
  const float y = 1.0f - p * t * expf_fast(-ax * ax);
  return std::copysign(y, x);
}

inline float sigmoid_fast(float x) { return 1.0f / (1.0f + expf_fast(-x)); }

// GELU(x) = x * Phi(x); d/dx = Phi(x) + x * phi(x).
inline float gelu_fast(float x) { return 0.5f * x * (1.0f + erf_fast(x * 0.70710678118654752f)); }
inline float gelu_grad_fast(float x) {
  const float cdf = 0.5f * (1.0f + erf_fast(x * 0.70710678118654752f));
  const float pdf = 0.39894228040143268f * expf_fast(-0.5f * x * x);
  return cdf + x * pdf;
}

}  // namespace rb::vec
