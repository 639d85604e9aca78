// Causal softmax attention over short packed sequences (the local model's patches, or the
// attention-global baseline), and one query row against a KV cache (decoding). Every path goes
// through the kernel table's attention_row, so a row computed while decoding has the bits of
// the same row in a batched forward.
#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_backend.h"

namespace rb {

namespace {
// Asks for `bytes` at p ahead of use: a sequence's head slices are strided, which the hardware
// prefetchers do not follow, so attention over many short sequences would wait on memory.
void prefetch(const void* p, size_t bytes, bool write) {
  const char* c = static_cast<const char*>(p);
  for (size_t off = 0; off < bytes; off += 64) {
    if (write)
      __builtin_prefetch(c + off, 1, 3);
    else
      __builtin_prefetch(c + off, 0, 3);
  }
}
constexpr int kAhead = 2;  // sequences
}  // namespace

void CpuBackend::attention_forward(float* out, float* probs, const float* qkv, const AttentionShape& sh) {
  const int S = sh.S, H = sh.H, hd = sh.hd, D = sh.D(), ld = 3 * D;
  const float scale = 1.0f / std::sqrt(float(hd));
  // Chunks of whole sequences (all heads): each core streams through contiguous rows.
  const int64_t per_seq = int64_t(S) * S * D;
  pool_.parallel_for(sh.nseq, std::max<int64_t>(1, 262144 / per_seq), [&](int64_t s0, int64_t s1) {
    for (int64_t seq = s0; seq < s1; seq++) {
      const float* base = qkv + size_t(seq) * S * ld;
      if (seq + kAhead < sh.nseq) {
        prefetch(qkv + size_t(seq + kAhead) * S * ld, size_t(S) * ld * sizeof(float), false);
        prefetch(out + size_t(seq + kAhead) * S * D, size_t(S) * D * sizeof(float), true);
      }
      for (int h = 0; h < H; h++) {
        float* P = probs + (size_t(seq) * H + h) * S * S;
        for (int i = 0; i < S; i++) {
          float* pi = P + size_t(i) * S;
          k_.attention_row(out + (size_t(seq) * S + i) * D + h * hd, pi, base + size_t(i) * ld + h * hd, base + D + h * hd,
                           base + 2 * D + h * hd, i + 1, ld, hd, scale);
          for (int j = i + 1; j < S; j++) pi[j] = 0.0f;
        }
      }
    }
  });
}

void CpuBackend::attention_backward(float* dqkv, const float* dout, const float* qkv, const float* probs,
                                    const AttentionShape& sh) {
  const int S = sh.S, H = sh.H, hd = sh.hd, D = sh.D(), ld = 3 * D;
  const float scale = 1.0f / std::sqrt(float(hd));
  const int64_t per_seq = int64_t(S) * S * D * 3;
  pool_.parallel_for(sh.nseq, std::max<int64_t>(1, 262144 / per_seq), [&](int64_t s0, int64_t s1) {
    std::vector<float> dp(S);
    for (int64_t seq = s0; seq < s1; seq++) {
      if (seq + kAhead < sh.nseq) {
        prefetch(qkv + size_t(seq + kAhead) * S * ld, size_t(S) * ld * sizeof(float), false);
        prefetch(dqkv + size_t(seq + kAhead) * S * ld, size_t(S) * ld * sizeof(float), true);
        prefetch(dout + size_t(seq + kAhead) * S * D, size_t(S) * D * sizeof(float), false);
        prefetch(probs + size_t(seq + kAhead) * H * S * S, size_t(H) * S * S * sizeof(float), false);
      }
      for (int h = 0; h < H; h++)
        k_.attention_backward_head(dqkv + size_t(seq) * S * ld, dout + size_t(seq) * S * D, qkv + size_t(seq) * S * ld,
                                   probs + (size_t(seq) * H + h) * S * S, S, ld, D, h, hd, scale, dp.data());
    }
  });
}

void CpuBackend::attention_decode(float* out, const float* q, const float* k, const float* v, int n, int ld, int H, int hd) {
  const float scale = 1.0f / std::sqrt(float(hd));
  const int64_t per_head = int64_t(n) * hd * 2;
  pool_.parallel_for(H, std::max<int64_t>(1, 32768 / per_head), [&](int64_t h0, int64_t h1) {
    thread_local std::vector<float> p;  // grows only: decoding calls this for every byte
    if (p.size() < size_t(n)) p.resize(size_t(n));
    for (int64_t h = h0; h < h1; h++)
      k_.attention_row(out + size_t(h) * hd, p.data(), q + size_t(h) * hd, k + size_t(h) * hd, v + size_t(h) * hd, n, ld, int(hd),
                       scale);
  });
}

}  // namespace rb
