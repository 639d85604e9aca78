#include "src/common/dmath.h"

namespace rb::dmath {

// Each value gets the same operations as exp() in the same order, written without
// branches so the compiler can run several lanes at once (the sampler takes 256 per byte). floor
// is (v + 2^52) - 2^52, corrected down by one where that rounded up (exact for 0 <= v < 2^52), and
// 2^e is built by adding 2^52 + 1023 and shifting the integer bits into the exponent field. Values
// outside [-690, 690] (near the limits, and NaN) go through exp() itself.
namespace {
// The lane: exp(x) for -690 <= x <= 690 (x is clamped there; callers redo the rest with exp()).
inline double exp_lane(double v) {
  const double xj = v > 690.0 ? 690.0 : v < -690.0 ? -690.0 : v;  // NaN becomes -690
  using namespace exp_constants;
  const double y = xj * kLog2e;
  const double a = (y >= 0 ? y : -y) + 0.5;
  double fl = (a + 4503599627370496.0) - 4503599627370496.0;
  fl = fl > a ? fl - 1.0 : fl;
  const double nn = y >= 0 ? fl : -fl;
  const double r = (xj - nn * kLn2Hi) - nn * kLn2Lo;
  double p = kHorner[0];
  for (int i = 1; i < 14; i++) p = p * r + kHorner[i];
  const double biased = nn + (4503599627370496.0 + 1023.0);  // e + 1023 in the low mantissa bits
  uint64_t bits;
  std::memcpy(&bits, &biased, sizeof bits);
  bits <<= 52;
  double scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}
}  // namespace

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
void exp_many(const double* x, double* out, int n) {
  constexpr int kChunk = 64;
  int b = 0;
  for (; b + kChunk <= n; b += kChunk) {
    double res[kChunk];
    for (int j = 0; j < kChunk; j++) res[j] = exp_lane(x[b + j]);
    int outside = 0;
    for (int j = 0; j < kChunk; j++) outside += x[b + j] >= -690.0 && x[b + j] <= 690.0 ? 0 : 1;
    if (outside)
      for (int j = 0; j < kChunk; j++)
        if (!(x[b + j] >= -690.0 && x[b + j] <= 690.0)) res[j] = exp(x[b + j]);
    std::memcpy(out + b, res, sizeof res);
  }
  for (; b < n; b++) out[b] = exp(x[b]);
}

}  // namespace rb::dmath
