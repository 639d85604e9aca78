// The portable path: plain C++ for any CPU (baseline x86-64 here), one float per "vector", FMAs
// through std::fma (libm; correctly rounded on every CPU). It is the executable definition of
// the numerics contract: the AVX2 and AVX-512 tables must equal it bit for bit.
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "kernels/cpu/kernel_table.h"
#include "src/common/dmath.h"
#include "kernels/numerics.h"

namespace rb {
namespace isa_portable {
namespace {

using vf = float;
constexpr int kL = 1, kMR = 4, kNV = 4, kGV = 8;
inline float s_fma(float a, float b, float c) { return std::fma(a, b, c); }
inline vf v_load(const float* p) { return *p; }
inline void v_store(float* p, vf x) { *p = x; }
inline vf v_set1(float x) { return x; }
inline vf v_zero() { return 0.0f; }
inline vf v_mul(vf a, vf b) { return a * b; }
inline vf v_fma(vf a, vf b, vf c) { return std::fma(a, b, c); }
inline void v_load_bf16_pair(const uint16_t* p, vf& lo, vf& hi) {  // two bf16 -> two floats, exactly (the bits shifted up)
  const uint32_t u = uint32_t(p[0]) << 16, v = uint32_t(p[1]) << 16;
  std::memcpy(&lo, &u, sizeof lo);
  std::memcpy(&hi, &v, sizeof hi);
}
// The contract's tree over 16 lanes: (l, l+8), (l, l+4), (l, l+2), (l, l+1).
// int8 products (gemm_cols_i8): one lane, the same integer sum.
using vi = int32_t;
inline vi vi_zero() { return 0; }
inline vi vi_dot4(vi acc, uint32_t a4, const int8_t* w) {
  int32_t s = 0;
  for (int b = 0; b < 4; b++) s += int32_t((a4 >> (8 * b)) & 0xFF) * w[b];
  return acc + s;
}
inline void vi_store(int32_t* p, vi x) { *p = x; }
// Activation quantization (quantize_u7): the definition the vector paths match. A NaN x leaves
// the maximum as it is; a NaN quotient gives 0; rounding to nearest even by adding and removing
// 1.5 * 2^23 (exact for |v| <= 63, no library call).
inline vf v_max_abs(vf x, vf m) { return std::fabs(x) > m ? std::fabs(x) : m; }
inline float v_hmax(vf m) { return m; }
inline vf v_div(vf a, vf b) { return a / b; }
inline void v_store_u7(uint8_t* q, vf v) {
  v = v != v ? 0.0f : v;
  v = v < -63.0f ? -63.0f : (v > 63.0f ? 63.0f : v);
  const float r = (v + 12582912.0f) - 12582912.0f;
  *q = uint8_t(int(r) + kI8ActivationOffset);
}
inline float tree16(const float* acc) {
  float t[16];
  for (int l = 0; l < 16; l++) t[l] = acc[l];
  for (int w = 8; w >= 1; w >>= 1)
    for (int l = 0; l < w; l++) t[l] = t[l] + t[l + w];
  return t[0];
}

#include "kernels/cpu/kernels_generic.inc"

}  // namespace
}  // namespace isa_portable

CpuKernels cpu_kernels_portable() { return isa_portable::make_table(CpuPath::Portable); }

CpuKernels cpu_kernels(CpuPath p) {
  switch (p) {
    case CpuPath::Avx512:
      return cpu_kernels_avx512();
    case CpuPath::Avx2:
      return cpu_kernels_avx2();
    default:
      return cpu_kernels_portable();
  }
}

}  // namespace rb
