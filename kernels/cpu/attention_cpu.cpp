// Causal softmax attention over short packed sequences (the local model's patches, or the
// attention-global baseline), and one query row against a KV cache (decoding). Every path goes
// through the kernel table's attention_row, so a row computed while decoding has the bits of
// the same row in a batched forward.
#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_backend.h"

namespace rb {

void CpuBackend::attention_forward(float* out, float* probs, const float* qkv,
                                   const AttentionShape& sh) {
  const int S = sh.S, H = sh.H, hd = sh.hd, D = sh.D(), ld = 3 * D;
  const float scale = 1.0f / std::sqrt(float(hd));
  const int64_t per_task = int64_t(S) * S * hd;
  pool_.parallel_for(int64_t(sh.nseq) * H, std::max<int64_t>(1, 16384 / per_task), [&](int64_t t0, int64_t t1) {
    for (int64_t task = t0; task < t1; task++) {
      const int seq = int(task / H), h = int(task % H);
      const float* base = qkv + size_t(seq) * S * ld;
      float* P = probs + (size_t(seq) * H + h) * S * S;
      for (int i = 0; i < S; i++) {
        float* pi = P + size_t(i) * S;
        k_.attention_row(out + (size_t(seq) * S + i) * D + h * hd, pi, base + size_t(i) * ld + h * hd,
                         base + D + h * hd, base + 2 * D + h * hd, i + 1, ld, hd, scale);
        for (int j = i + 1; j < S; j++) pi[j] = 0.0f;
      }
    }
  });
}

void CpuBackend::attention_backward(float* dqkv, const float* dout, const float* qkv,
                                    const float* probs, const AttentionShape& sh) {
  const int S = sh.S, H = sh.H, hd = sh.hd, D = sh.D(), ld = 3 * D;
  const float scale = 1.0f / std::sqrt(float(hd));
  const int64_t per_task = int64_t(S) * S * hd * 3;
  pool_.parallel_for(int64_t(sh.nseq) * H, std::max<int64_t>(1, 16384 / per_task), [&](int64_t t0, int64_t t1) {
    std::vector<float> dp(S);
    for (int64_t task = t0; task < t1; task++) {
      const int seq = int(task / H), h = int(task % H);
      k_.attention_backward_head(dqkv + size_t(seq) * S * ld, dout + size_t(seq) * S * D, qkv + size_t(seq) * S * ld,
                                 probs + (size_t(seq) * H + h) * S * S, S, ld, D, h, hd, scale, dp.data());
    }
  });
}

void CpuBackend::attention_decode(float* out, const float* q, const float* k, const float* v, int n,
                                  int ld, int H, int hd) {
  const float scale = 1.0f / std::sqrt(float(hd));
  const int64_t per_head = int64_t(n) * hd * 2;
  pool_.parallel_for(H, std::max<int64_t>(1, 32768 / per_head), [&](int64_t h0, int64_t h1) {
    std::vector<float> p(static_cast<size_t>(n));
    for (int64_t h = h0; h < h1; h++)
      k_.attention_row(out + size_t(h) * hd, p.data(), q + size_t(h) * hd, k + size_t(h) * hd, v + size_t(h) * hd, n, ld,
                       int(hd), scale);
  });
}

}  // namespace rb
