// Helpers shared by the tests: random tensors, error measures and finite differences.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <unistd.h>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "src/common/errors.h"
#include "src/common/rng.h"

namespace rb::test {

constexpr double kEps = FLT_EPSILON;  // tolerances below are stated in multiples of it

// A fresh folder under the test temp dir, removed at the end of the test.
struct TempDir {
  std::string path;
  explicit TempDir(const std::string& name) {
    path = testing::TempDir() + "retbyte_" + std::to_string(getpid()) + "_" + name;
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string write(const std::string& name, const std::string& bytes) const {
    const std::string p = path + "/" + name;
    std::filesystem::create_directories(std::filesystem::path(p).parent_path());
    std::ofstream(p, std::ios::binary) << bytes;
    return p;
  }
};

// Every CPU path this machine can run, portable first (the definition the others must equal).
// A path the CPU lacks is reported once on stdout, never silently dropped. (Not as "[  SKIPPED ]":
// ctest's gtest discovery would then mark the whole test skipped, hiding its result.)
inline std::vector<CpuPath> runnable_cpu_paths() {
  std::vector<CpuPath> paths;
  for (CpuPath p : {CpuPath::Portable, CpuPath::Avx2, CpuPath::Avx512}) {
    if (cpu_path_supported(p)) {
      paths.push_back(p);
    } else {
      static bool told[3] = {false, false, false};
      if (!told[int(p)]) std::printf("[   NOTE   ] CPU path %s not run: this CPU lacks its instructions\n", cpu_path_name(p));
      told[int(p)] = true;
    }
  }
  return paths;
}

inline bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

inline std::vector<float> random_vec(size_t n, Rng& rng, double scale = 1.0) {
  std::vector<float> v(n);
  for (auto& x : v) x = float(scale * rng.normal());
  return v;
}

// Random retention inputs with padded row strides (so strides matter) and a non-zero state.
struct RetentionProblem {
  RetentionShape s;
  std::vector<float> q, k, v, gammas, state0;
  RetentionProblem(int B, int n, int H, int dk, int dv, Rng& rng) {
    s = RetentionShape{B, n, H, dk, dv, H * dk + 3, H * dv + 5};
    q = random_vec(size_t(B) * n * s.ld_qk, rng, 0.5);
    k = random_vec(size_t(B) * n * s.ld_qk, rng, 0.5);
    v = random_vec(size_t(B) * n * s.ld_v, rng);
    for (int h = 0; h < H; h++) gammas.push_back(retention_gamma(h));
    state0 = random_vec(s.state_size(), rng);
  }
  size_t out_size() const { return size_t(s.B) * s.n * s.H * s.dv; }
  size_t saved_size(int chunk) const {  // the chunkwise form's saved states
    const int C = std::max(1, std::min(chunk, s.n));
    return size_t(s.B) * s.H * ((s.n + C - 1) / C) * s.dk * s.dv;
  }
};

// max |a - b| / max |b|: the error relative to the reference's magnitude.
inline double rel_error(const float* a, const float* b, size_t n) {
  double err = 0, mag = 1e-30;
  for (size_t i = 0; i < n; i++) {
    err = std::max(err, std::fabs(double(a[i]) - b[i]));
    mag = std::max(mag, std::fabs(double(b[i])));
  }
  return err / mag;
}
inline double rel_error(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  return rel_error(a.data(), b.data(), std::min(a.size(), b.size()));
}

inline double dot(const std::vector<float>& a, const std::vector<float>& w) {
  double s = 0;
  for (size_t i = 0; i < a.size(); i++) s += double(a[i]) * w[i];
  return s;
}

// Central finite differences of the scalar loss() with respect to every element of x (or the
// `indices` subset), compared with `analytic`. Passes when |fd - an| <= tol * max(|fd|, |an|)
// + abs_floor for every checked element.
inline void expect_gradient(const char* what, std::vector<float>& x, const std::vector<float>& analytic,
                            const std::function<double()>& loss, double h, double tol, double abs_floor,
                            std::vector<size_t> indices = {}) {
  if (indices.empty())
    for (size_t i = 0; i < x.size(); i++) indices.push_back(i);
  int failures = 0;
  for (size_t i : indices) {
    const float saved = x[i];
    x[i] = saved + float(h);
    const double lp = loss();
    x[i] = saved - float(h);
    const double lm = loss();
    x[i] = saved;
    const double fd = (lp - lm) / (double(saved + float(h)) - double(saved - float(h)));
    const double an = analytic[i];
    if (std::fabs(fd - an) > tol * std::max(std::fabs(fd), std::fabs(an)) + abs_floor && failures++ < 5)
      ADD_FAILURE() << what << "[" << i << "]: finite difference " << fd << " vs analytic " << an;
  }
  EXPECT_EQ(failures, 0) << what;
}

// fn() must throw rb::Error whose one-line message contains `needle`.
inline void expect_error_containing(const std::function<void()>& fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "expected an rb::Error containing '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << "message: " << e.what();
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << "error must be one line";
  }
}

}  // namespace rb::test
