// Causal softmax attention over short packed sequences (the local model's patches, or the
// attention-global baseline). One (sequence, head) pair per task.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/vecmath.h"

namespace rb {

void CpuBackend::attention_forward(float* out, float* probs, const float* qkv,
                                   const AttentionShape& sh) {
  const int S = sh.S, H = sh.H, hd = sh.hd, D = sh.D(), ld = 3 * D;
  const float scale = 1.0f / std::sqrt(float(hd));
#pragma omp parallel for num_threads(threads_) schedule(static)
  for (int task = 0; task < sh.nseq * H; task++) {
    const int seq = task / H, h = task % H;
    const float* base = qkv + size_t(seq) * S * ld;
    float* P = probs + (size_t(seq) * H + h) * S * S;
    for (int i = 0; i < S; i++) {
      const float* qi = base + size_t(i) * ld + h * hd;
      float* pi = P + size_t(i) * S;
      float mx = -INFINITY;
      for (int j = 0; j <= i; j++) {
        const float* kj = base + size_t(j) * ld + D + h * hd;
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int c = 0; c < hd; c++) dot += qi[c] * kj[c];
        pi[j] = dot * scale;
        mx = std::max(mx, pi[j]);
      }
      float sum = 0.0f;
      for (int j = 0; j <= i; j++) {
        pi[j] = vec::expf_fast(pi[j] - mx);
        sum += pi[j];
      }
      const float inv = 1.0f / sum;
      for (int j = 0; j <= i; j++) pi[j] *= inv;
      for (int j = i + 1; j < S; j++) pi[j] = 0.0f;
      float* oi = out + (size_t(seq) * S + i) * D + h * hd;
      std::fill(oi, oi + hd, 0.0f);
      for (int j = 0; j <= i; j++) {
        const float* vj = base + size_t(j) * ld + 2 * D + h * hd;
        const float p = pi[j];
#pragma omp simd
        for (int c = 0; c < hd; c++) oi[c] += p * vj[c];
      }
    }
  }
}

void CpuBackend::attention_backward(float* dqkv, const float* dout, const float* qkv,
                                    const float* probs, const AttentionShape& sh) {
  const int S = sh.S, H = sh.H, hd = sh.hd, D = sh.D(), ld = 3 * D;
  const float scale = 1.0f / std::sqrt(float(hd));
#pragma omp parallel for num_threads(threads_) schedule(static)
  for (int task = 0; task < sh.nseq * H; task++) {
    const int seq = task / H, h = task % H;
    const float* base = qkv + size_t(seq) * S * ld;
    float* dbase = dqkv + size_t(seq) * S * ld;
    const float* P = probs + (size_t(seq) * H + h) * S * S;
    for (int i = 0; i < S; i++)
      for (int part = 0; part < 3; part++)
        std::fill_n(dbase + size_t(i) * ld + part * D + h * hd, hd, 0.0f);
    std::vector<float> dp(S);
    for (int i = 0; i < S; i++) {
      const float* doi = dout + (size_t(seq) * S + i) * D + h * hd;
      const float* pi = P + size_t(i) * S;
      float dot_pdp = 0.0f;
      for (int j = 0; j <= i; j++) {
        const float* vj = base + size_t(j) * ld + 2 * D + h * hd;
        float* dvj = dbase + size_t(j) * ld + 2 * D + h * hd;
        float d = 0.0f;
#pragma omp simd reduction(+ : d)
        for (int c = 0; c < hd; c++) {
          d += doi[c] * vj[c];
          dvj[c] += pi[j] * doi[c];
        }
        dp[j] = d;
        dot_pdp += pi[j] * d;
      }
      const float* qi = base + size_t(i) * ld + h * hd;
      float* dqi = dbase + size_t(i) * ld + h * hd;
      for (int j = 0; j <= i; j++) {
        const float ds = pi[j] * (dp[j] - dot_pdp) * scale;
        const float* kj = base + size_t(j) * ld + D + h * hd;
        float* dkj = dbase + size_t(j) * ld + D + h * hd;
#pragma omp simd
        for (int c = 0; c < hd; c++) {
          dqi[c] += ds * kj[c];
          dkj[c] += ds * qi[c];
        }
      }
    }
  }
}

void CpuBackend::attention_decode(float* out, const float* q, const float* k, const float* v, int n,
                                  int ld, int H, int hd) {
  const float scale = 1.0f / std::sqrt(float(hd));
#pragma omp parallel for num_threads(threads_) schedule(static) if (size_t(n) * H * hd > 32768)
  for (int h = 0; h < H; h++) {
    std::vector<float> p(static_cast<size_t>(n));
    const float* qh = q + size_t(h) * hd;
    float mx = -INFINITY;
    for (int j = 0; j < n; j++) {
      const float* kj = k + size_t(j) * ld + size_t(h) * hd;
      float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
      for (int c = 0; c < hd; c++) dot += qh[c] * kj[c];
      p[j] = dot * scale;
      mx = std::max(mx, p[j]);
    }
    float sum = 0.0f;
    for (int j = 0; j < n; j++) sum += (p[j] = vec::expf_fast(p[j] - mx));
    float* oh = out + size_t(h) * hd;
    std::fill(oh, oh + hd, 0.0f);
    for (int j = 0; j < n; j++) {
      const float* vj = v + size_t(j) * ld + size_t(h) * hd;
      const float w = p[j] / sum;
#pragma omp simd
      for (int c = 0; c < hd; c++) oh[c] += w * vj[c];
    }
  }
}

}  // namespace rb
