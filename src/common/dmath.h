// Deterministic double-precision exp, log, sin and cos: plain IEEE additions and multiplications
// in a fixed order (the build has -ffp-contract=off), so every CPU and build gives the same bits.
// glibc's versions pick FMA or non-FMA code by CPU and are not guaranteed to agree in the last
// bit; these feed weight initialisation, RoPE tables, decay powers, schedules and sampling.
// Accuracy: a few ulp for |x| up to ~1e6 (sin/cos) and over the whole range (exp, log).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

namespace rb::dmath {

static inline double round_half_away(double x) { return x >= 0 ? std::floor(x + 0.5) : -std::floor(-x + 0.5); }

// exp's constants, shared with the vector lanes of exp_many (dmath.cpp), which must equal it bitwise.
namespace exp_constants {
constexpr double kLog2e = 1.44269504088896338700e+00;
constexpr double kLn2Hi = 6.93147180369123816490e-01, kLn2Lo = 1.90821492927058770002e-10;
// Taylor coefficients 1/13! ... 1/1!, 1/0!, highest first: Horner's order.
constexpr double kHorner[] = {1.0 / 6227020800.0,
                              1.0 / 479001600.0,
                              1.0 / 39916800.0,
                              1.0 / 3628800.0,
                              1.0 / 362880.0,
                              1.0 / 40320.0,
                              1.0 / 5040.0,
                              1.0 / 720.0,
                              1.0 / 120.0,
                              1.0 / 24.0,
                              1.0 / 6.0,
                              0.5,
                              1.0,
                              1.0};
}  // namespace exp_constants

static inline double exp(double x) {
  using namespace exp_constants;
  if (x != x) return x;
  if (x > 709.7) return HUGE_VAL;
  if (x < -745.1) return 0.0;
  const double n = round_half_away(x * kLog2e);
  const double r = (x - n * kLn2Hi) - n * kLn2Lo;  // |r| <= ~0.35
  double p = kHorner[0];                           // Taylor to r^13, Horner
  for (int i = 1; i < 14; i++) p = p * r + kHorner[i];
  const int e = int(n);
  if (e < -1000 || e > 1000) return std::ldexp(p, e);  // near the limits: libm's exact scaling
  const uint64_t bits = uint64_t(e + 1023) << 52;      // 2^e: multiplying by it is exact here
  double scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

// exp of n values, each bitwise dmath::exp (src/common/dmath.cpp: written so the compiler runs
// several lanes at once; the sampler takes 256 per byte).
void exp_many(const double* x, double* out, int n);

static inline double log(double x) {
  if (x != x || x < 0) return NAN;
  if (x == 0) return -HUGE_VAL;
  if (std::isinf(x)) return x;
  int e;
  double m = std::frexp(x, &e);  // x = m * 2^e, m in [0.5, 1)
  if (m < 0.70710678118654752440) {
    m *= 2.0;
    e -= 1;
  }
  const double s = (m - 1.0) / (m + 1.0), s2 = s * s;  // log m = 2 atanh s, |s| <= 0.172
  double p = 1.0 / 23.0;
  for (int k = 21; k >= 1; k -= 2) p = p * s2 + 1.0 / k;
  const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
  return (e * ln2_hi + (2.0 * s * p + e * ln2_lo));
}

// sin and cos of x together (Cody-Waite reduction by pi/2 in three parts, then Taylor series).
static inline void sincos(double x, double* s, double* c) {
  const double n = round_half_away(x * 6.36619772367581382433e-01);
  const double p1 = 1.57079632673412561417e+00, p2 = 6.07710050630396597660e-11, p3 = 2.02226624879595063154e-21;
  const double r = ((x - n * p1) - n * p2) - n * p3, r2 = r * r;  // |r| <= ~pi/4
  // sin r = r + r^3 S(r^2), S = -1/3! + r^2/5! - ... + r^14/17!
  const double sin_k[] = {-1.0 / 1307674368000.0, 1.0 / 6227020800.0, -1.0 / 39916800.0, 1.0 / 362880.0,
                          -1.0 / 5040.0,          1.0 / 120.0,        -1.0 / 6.0};
  double sp = 1.0 / 355687428096000.0;
  for (double k : sin_k) sp = sp * r2 + k;
  // cos r = 1 + r^2 C(r^2), C = -1/2! + r^2/4! - ... - r^16/18!
  const double cos_k[] = {1.0 / 20922789888000.0, -1.0 / 87178291200.0, 1.0 / 479001600.0, -1.0 / 3628800.0,
                          1.0 / 40320.0,          -1.0 / 720.0,         1.0 / 24.0,        -0.5};
  double cp = -1.0 / 6402373705728000.0;
  for (double k : cos_k) cp = cp * r2 + k;
  const double sin_r = r + r * r2 * sp, cos_r = 1.0 + r2 * cp;
  const int64_t q = int64_t(n) & 3;
  *s = q == 0 ? sin_r : q == 1 ? cos_r : q == 2 ? -sin_r : -cos_r;
  *c = q == 0 ? cos_r : q == 1 ? -sin_r : q == 2 ? -cos_r : sin_r;
}

static inline double cos(double x) {
  double s, c;
  sincos(x, &s, &c);
  return c;
}
static inline double sin(double x) {
  double s, c;
  sincos(x, &s, &c);
  return s;
}

}  // namespace rb::dmath
