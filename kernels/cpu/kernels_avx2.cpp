// The AVX2+FMA path (compiled with -mavx2 -mfma; only called when the CPU has both): 8 lanes,
// a 6 x 16 GEMM tile (12 accumulators of the 16 ymm registers).
#include <immintrin.h>

#include <cmath>
#include <cstdlib>
#include <cstring>

#include "kernels/cpu/kernel_table.h"
#include "src/common/dmath.h"
#include "kernels/numerics.h"

namespace rb {
namespace isa_avx2 {
namespace {

using vf = __m256;
constexpr int kL = 8, kMR = 6, kNV = 2, kGV = 8;
inline float s_fma(float a, float b, float c) { return __builtin_fmaf(a, b, c); }
inline vf v_load(const float* p) { return _mm256_loadu_ps(p); }
inline void v_store(float* p, vf x) { _mm256_storeu_ps(p, x); }
inline vf v_set1(float x) { return _mm256_set1_ps(x); }
inline vf v_zero() { return _mm256_setzero_ps(); }
inline vf v_mul(vf a, vf b) { return _mm256_mul_ps(a, b); }
inline vf v_fma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
inline void v_load_bf16_pair(const uint16_t* p, vf& lo, vf& hi) {  // 16 interleaved bf16 -> 2 x 8 floats, exactly
  const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  lo = _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));                                  // even elements: the low halves shifted up
  hi = _mm256_castsi256_ps(_mm256_and_si256(w, _mm256_set1_epi32(int(0xFFFF0000u))));  // odd: the high halves as they are
}
// The contract's tree over 16 lanes: (l, l+8), (l, l+4), (l, l+2), (l, l+1), in registers.
// int8 products (gemm_cols_i8): as on the AVX-512 path, 8 lanes.
using vi = __m256i;
inline vi vi_zero() { return _mm256_setzero_si256(); }
inline vi vi_dot4(vi acc, uint32_t a4, const int8_t* w) {
  const __m256i pairs = _mm256_maddubs_epi16(_mm256_set1_epi32(int(a4)), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w)));
  return _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
}
inline void vi_store(int32_t* p, vi x) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), x); }
// Activation quantization (quantize_u7), as on the AVX-512 path, 8 values at a time.
inline vf v_max_abs(vf x, vf m) { return _mm256_max_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), x), m); }
inline float v_hmax(vf m) {
  const __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
  const __m128 m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
  return _mm_cvtss_f32(_mm_max_ss(m2, _mm_shuffle_ps(m2, m2, 1)));
}
inline vf v_div(vf a, vf b) { return _mm256_div_ps(a, b); }
inline void v_store_u7(uint8_t* q, vf v) {
  v = _mm256_and_ps(_mm256_cmp_ps(v, v, _CMP_ORD_Q), v);
  v = _mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(-63.0f)), _mm256_set1_ps(63.0f));
  const __m256i i = _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)),
                                     _mm256_set1_epi32(kI8ActivationOffset));
  const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
  _mm_storel_epi64(reinterpret_cast<__m128i*>(q), _mm_packus_epi16(w, w));
}
inline float tree16(const float* acc) {
  const __m256 s8 = _mm256_add_ps(_mm256_loadu_ps(acc), _mm256_loadu_ps(acc + 8));
  const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
}

#include "kernels/cpu/kernels_generic.inc"

}  // namespace
}  // namespace isa_avx2

CpuKernels cpu_kernels_avx2() { return isa_avx2::make_table(CpuPath::Avx2); }

}  // namespace rb
