// The AVX-512 path (compiled with -mavx512f/bw/dq/vl; only called when the CPU has them): 16
// lanes, a 12 x 32 GEMM tile (24 accumulators of the 32 zmm registers).
#include <immintrin.h>

#include <cmath>
#include <cstdlib>
#include <cstring>

#include "kernels/cpu/kernel_table.h"
#include "src/common/dmath.h"
#include "kernels/numerics.h"

namespace rb {
namespace isa_avx512 {
namespace {

using vf = __m512;
constexpr int kL = 16, kMR = 12, kNV = 2, kGV = 8;
inline float s_fma(float a, float b, float c) { return __builtin_fmaf(a, b, c); }
inline vf v_load(const float* p) { return _mm512_loadu_ps(p); }
inline void v_store(float* p, vf x) { _mm512_storeu_ps(p, x); }
inline vf v_set1(float x) { return _mm512_set1_ps(x); }
inline vf v_zero() { return _mm512_setzero_ps(); }
inline vf v_mul(vf a, vf b) { return _mm512_mul_ps(a, b); }
inline vf v_fma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
inline void v_load_bf16_pair(const uint16_t* p, vf& lo, vf& hi) {  // 32 interleaved bf16 -> 2 x 16 floats, exactly
  const __m512i w = _mm512_loadu_si512(p);
  lo = _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));                                  // even elements: the low halves shifted up
  hi = _mm512_castsi512_ps(_mm512_and_si512(w, _mm512_set1_epi32(int(0xFFFF0000u))));  // odd: the high halves as they are
}
// int8 products (gemm_cols_i8): acc lane i += the 4 products of a4's bytes (7-bit, unsigned) with
// w's bytes 4i..4i+3 (signed), summed in 16 bits by pairs (|sum| <= 2 x 127 x 127: never saturates)
// and in 32 bits by pairs of pairs: exact, so any order gives the same integers.
using vi = __m512i;
inline vi vi_zero() { return _mm512_setzero_si512(); }
inline vi vi_dot4(vi acc, uint32_t a4, const int8_t* w) {
  const __m512i pairs = _mm512_maddubs_epi16(_mm512_set1_epi32(int(a4)), _mm512_loadu_si512(w));
  return _mm512_add_epi32(acc, _mm512_madd_epi16(pairs, _mm512_set1_epi16(1)));
}
inline void vi_store(int32_t* p, vi x) { _mm512_storeu_si512(p, x); }
// Activation quantization (quantize_u7): max |x| keeping m where x is NaN (maxps returns its
// second operand then), the largest lane, exact division, and 16 values to 7-bit bytes: NaN to 0,
// clamped to [-63, 63], rounded to nearest even, + 64.
inline vf v_max_abs(vf x, vf m) { return _mm512_max_ps(_mm512_abs_ps(x), m); }
inline float v_hmax(vf m) { return _mm512_reduce_max_ps(m); }
inline vf v_div(vf a, vf b) { return _mm512_div_ps(a, b); }
inline void v_store_u7(uint8_t* q, vf v) {
  v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, v, _CMP_ORD_Q), v);
  v = _mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(-63.0f)), _mm512_set1_ps(63.0f));
  const __m512i i = _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)),
                                     _mm512_set1_epi32(kI8ActivationOffset));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(q), _mm512_cvtepi32_epi8(i));
}
// The contract's tree over 16 lanes: (l, l+8), (l, l+4), (l, l+2), (l, l+1), in registers.
inline float tree16(const float* acc) {
  const __m512 v = _mm512_loadu_ps(acc);
  const __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
  const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
}

#include "kernels/cpu/kernels_generic.inc"

}  // namespace
}  // namespace isa_avx512

CpuKernels cpu_kernels_avx512() { return isa_avx512::make_table(CpuPath::Avx512); }

}  // namespace rb
