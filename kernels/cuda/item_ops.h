// The GPU backend's kernels as per-item functions: each op is a struct whose operator()(i) does
// item i's whole share of the work (an element, a row, a column, or one head's column of a
// retention state), touching memory no other item writes. The CUDA backend runs item i on one
// GPU thread; the host emulation (tests/gpu_emulation.h) runs the very same functions in a loop,
// so every kernel's indexing and math runs in CI on machines without a GPU.
//
// Simple over clever: no shared memory or warp cooperation, but enough items to fill a GPU where
// it matters (column sums in blocks of rows, embedding gradients over index lanes, chunkwise
// retention over positions and state elements in retention_items.h). The matrix products, where
// the time goes, are cuBLAS's.
#pragma once
#include <math.h>

#include <cstddef>
#include <cstdint>

#include "kernels/backend.h"

#ifdef __CUDACC__
#define RB_HD __host__ __device__
#else
#define RB_HD
#endif

namespace rb::items {

RB_HD inline float gelu(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }
RB_HD inline float gelu_grad(float x) {
  const float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
  const float pdf = expf(-0.5f * x * x) * 0.39894228040143268f;
  return cdf + x * pdf;
}
RB_HD inline float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
// g^e by repeated squaring in double (exact enough and the same on host and device).
RB_HD inline float power(float g, int e) {
  double r = 1.0, b = g;
  for (; e > 0; e >>= 1, b *= b)
    if (e & 1) r *= b;
  return float(r);
}

struct Fill {
  float* dst;
  float value;
  RB_HD void operator()(int64_t i) const { dst[i] = value; }
};

// Up to kInlineIndices index values carried in the kernel's arguments (item i writes dst[i]).
constexpr int kInlineIndices = 64;
struct SetIndices {
  int32_t* dst;
  int32_t values[kInlineIndices];
  RB_HD void operator()(int64_t i) const { dst[i] = values[i]; }
};

struct AddInplace {  // y += x
  float* y;
  const float* x;
  RB_HD void operator()(int64_t i) const { y[i] += x[i]; }
};

struct AddBias {  // item: one element of y [rows, cols]
  float* y;
  const float* bias;
  int cols;
  RB_HD void operator()(int64_t i) const { y[i] += bias[i % cols]; }
};

// Column sums in two passes, for parallelism without atomics (so still deterministic): partial
// sums over fixed blocks of kRowBlock rows, then the blocks added in order.
constexpr int kRowBlock = 256;
inline int row_blocks(int rows) { return (rows + kRowBlock - 1) / kRowBlock; }

struct ColumnBlockSums {  // item: block * cols + c; partial[item] = sum of its block's rows
  float* partial;
  const float* dy;
  int rows, cols;
  RB_HD void operator()(int64_t i) const {
    const int64_t c = i % cols, r0 = (i / cols) * kRowBlock;
    const int64_t r1 = r0 + kRowBlock < rows ? r0 + kRowBlock : rows;
    float s = 0.0f;
    for (int64_t r = r0; r < r1; r++) s += dy[size_t(r) * cols + c];
    partial[i] = s;
  }
};

struct AddBlockSums {  // item: column c; out[c] += the blocks' partial sums, in block order
  float* out;
  const float* partial;
  int blocks, cols;
  RB_HD void operator()(int64_t c) const {
    float s = 0.0f;
    for (int b = 0; b < blocks; b++) s += partial[size_t(b) * cols + c];
    out[c] += s;
  }
};

struct LayerNormForward {  // item: row r
  float *out, *mean, *rstd;
  const float *x, *w, *b;
  int C;
  RB_HD void operator()(int64_t r) const {
    const float* xr = x + size_t(r) * C;
    float m = 0.0f, v = 0.0f;
    for (int c = 0; c < C; c++) m += xr[c];
    m /= C;
    for (int c = 0; c < C; c++) v += (xr[c] - m) * (xr[c] - m);
    const float rs = 1.0f / sqrtf(v / C + 1e-5f);
    float* o = out + size_t(r) * C;
    for (int c = 0; c < C; c++) o[c] = (xr[c] - m) * rs * w[c] + b[c];
    mean[r] = m;
    rstd[r] = rs;
  }
};

struct LayerNormBackwardInput {  // item: row r; dx +=
  float* dx;
  const float *dout, *x, *w, *mean, *rstd;
  int C;
  RB_HD void operator()(int64_t r) const {
    const float* xr = x + size_t(r) * C;
    const float* d = dout + size_t(r) * C;
    const float m = mean[r], rs = rstd[r];
    float sum_dn = 0.0f, sum_dn_n = 0.0f;
    for (int c = 0; c < C; c++) {
      sum_dn += d[c] * w[c];
      sum_dn_n += d[c] * w[c] * ((xr[c] - m) * rs);
    }
    sum_dn /= C;
    sum_dn_n /= C;
    float* dxr = dx + size_t(r) * C;
    for (int c = 0; c < C; c++) dxr[c] += (d[c] * w[c] - sum_dn - (xr[c] - m) * rs * sum_dn_n) * rs;
  }
};

// dw and db of a LayerNorm as per-block partial sums: partial [2, blocks, C] (dw's, then db's),
// added in block order by AddBlockSums.
struct LayerNormParamBlockSums {  // item: block * C + c
  float* partial;
  const float *dout, *x, *mean, *rstd;
  int rows, C, blocks;
  RB_HD void operator()(int64_t i) const {
    const int64_t c = i % C, r0 = (i / C) * kRowBlock;
    const int64_t r1 = r0 + kRowBlock < rows ? r0 + kRowBlock : rows;
    float gw = 0.0f, gb = 0.0f;
    for (int64_t r = r0; r < r1; r++) {
      const float d = dout[size_t(r) * C + c];
      gw += d * (x[size_t(r) * C + c] - mean[r]) * rstd[r];
      gb += d;
    }
    partial[i] = gw;
    partial[size_t(blocks) * C + i] = gb;
  }
};

struct Gelu {
  float* out;
  const float* x;
  RB_HD void operator()(int64_t i) const { out[i] = gelu(x[i]); }
};

struct GeluBackward {
  float* dx;
  const float *x, *dout;
  RB_HD void operator()(int64_t i) const { dx[i] = dout[i] * gelu_grad(x[i]); }
};

struct RmsNormForward {  // item: group r * groups + g
  float *out, *rstd;
  const float* x;
  int ld_x, groups, width;
  RB_HD void operator()(int64_t i) const {
    const int64_t r = i / groups, g = i % groups;
    const float* xr = x + size_t(r) * ld_x + size_t(g) * width;
    float ss = 0.0f;
    for (int c = 0; c < width; c++) ss += xr[c] * xr[c];
    const float rs = 1.0f / sqrtf(ss / width + 1e-6f);
    float* o = out + size_t(i) * width;
    for (int c = 0; c < width; c++) o[c] = xr[c] * rs;
    rstd[i] = rs;
  }
};

struct RmsNormBackward {  // item: group r * groups + g; dx =
  float* dx;
  int ld_x;
  const float *dout, *y, *rstd;
  int groups, width;
  RB_HD void operator()(int64_t i) const {
    const int64_t r = i / groups, g = i % groups;
    const float* d = dout + size_t(i) * width;
    const float* yr = y + size_t(i) * width;
    float dot = 0.0f;
    for (int c = 0; c < width; c++) dot += d[c] * yr[c];
    dot /= width;
    float* dxr = dx + size_t(r) * ld_x + size_t(g) * width;
    for (int c = 0; c < width; c++) dxr[c] = rstd[i] * (d[c] - yr[c] * dot);
  }
};

struct SwishGate {  // item: element r * cols + c
  float* out;
  const float* g;
  int ld_g;
  const float* y;
  int cols;
  RB_HD void operator()(int64_t i) const {
    const float gv = g[size_t(i / cols) * ld_g + i % cols];
    out[i] = gv * sigmoid(gv) * y[i];
  }
};

struct SwishGateBackward {  // item: element r * cols + c; dg =, dy =
  float *dg, *dy;
  int ld_g;
  const float *g, *y, *dout;
  int cols;
  RB_HD void operator()(int64_t i) const {
    const size_t gi = size_t(i / cols) * ld_g + i % cols;
    const float s = sigmoid(g[gi]), silu = g[gi] * s;
    dy[i] = dout[i] * silu;
    dg[gi] = dout[i] * y[i] * (s + silu * (1.0f - s));
  }
};

struct Rope {  // item: pair (r * heads + h) * (hd / 2) + i
  float* x;
  int ld, heads, hd, seq_len;
  int64_t pos0;
  float scale;
  bool inverse;
  RB_HD void operator()(int64_t item) const {
    const int half = hd / 2;
    const int64_t i = item % half, h = (item / half) % heads, r = item / (int64_t(half) * heads);
    const double theta = exp(-(2.0 * double(i) / hd) * 9.2103403719761836);  // ln 10000
    const double angle = double(pos0 + r % seq_len) * theta;
    const float c = float(cos(angle)), s = float(inverse ? -sin(angle) : sin(angle));
    float* p = x + size_t(r) * ld + size_t(h) * hd + 2 * i;
    const float a = p[0], b = p[1];
    p[0] = (a * c - b * s) * scale;
    p[1] = (a * s + b * c) * scale;
  }
};

struct EmbeddingForward {  // item: element i * dim + c
  float* out;
  const float* table;
  const int32_t* idx;
  int dim;
  bool accumulate;
  RB_HD void operator()(int64_t e) const {
    const float t = table[size_t(idx[e / dim]) * dim + e % dim];
    out[e] = accumulate ? out[e] + t : t;
  }
};

// Embedding backward without atomics: item (lane, c) owns column c of the table rows whose index
// is lane mod kEmbeddingLanes, and walks every index in order (deterministic, and 32 times the
// parallelism of one item per column).
constexpr int kEmbeddingLanes = 32;
struct EmbeddingBackward {  // item: lane * dim + c
  float* dtable;
  const float* dout;
  const int32_t* idx;
  int count, dim;
  RB_HD void operator()(int64_t item) const {
    const int64_t c = item % dim, lane = item / dim;
    for (int i = 0; i < count; i++) {
      const int32_t row = idx[i];
      if (row % kEmbeddingLanes == lane) dtable[size_t(row) * dim + c] += dout[size_t(i) * dim + c];
    }
  }
};

struct CrossEntropy {  // item: row r; fused turns logits into dlogits = (softmax - onehot) dscale
  float* losses;
  float* logits;
  const int32_t* targets;
  int V;
  bool fused;
  float dscale;
  RB_HD void operator()(int64_t r) const {
    float* l = logits + size_t(r) * V;
    const int t = targets[r];
    const float target_logit = l[t];
    float mx = l[0];
    for (int c = 1; c < V; c++) mx = l[c] > mx ? l[c] : mx;
    float s = 0.0f;
    for (int c = 0; c < V; c++) s += expf(l[c] - mx);
    losses[r] = logf(s) + mx - target_logit;
    if (!fused) return;
    const float inv = dscale / s;
    for (int c = 0; c < V; c++) l[c] = expf(l[c] - mx) * inv;
    l[t] -= dscale;
  }
};

// Causal softmax attention: packed qkv rows [nseq*S, 3D]; probs [nseq, H, S, S].
struct AttentionForward {  // item: query (seq * H + h) * S + i
  float *out, *probs;
  const float* qkv;
  int S, H, hd;
  RB_HD void operator()(int64_t item) const {
    const int D = H * hd, ld = 3 * D;
    const int64_t i = item % S, h = (item / S) % H, seq = item / (int64_t(S) * H);
    const float scale = 1.0f / sqrtf(float(hd));
    const float* base = qkv + size_t(seq) * S * ld;
    const float* q = base + size_t(i) * ld + h * hd;
    float* p = probs + ((size_t(seq) * H + h) * S + i) * S;
    float mx = -INFINITY, sum = 0.0f;
    for (int j = 0; j <= i; j++) {
      const float* k = base + size_t(j) * ld + D + h * hd;
      float d = 0.0f;
      for (int c = 0; c < hd; c++) d += q[c] * k[c];
      p[j] = d * scale;
      mx = p[j] > mx ? p[j] : mx;
    }
    for (int j = 0; j <= i; j++) sum += (p[j] = expf(p[j] - mx));
    for (int j = 0; j < S; j++) p[j] = j <= i ? p[j] / sum : 0.0f;
    float* o = out + (size_t(seq) * S + i) * D + h * hd;
    for (int c = 0; c < hd; c++) {
      float acc = 0.0f;
      for (int j = 0; j <= i; j++) acc += p[j] * base[size_t(j) * ld + 2 * D + h * hd + c];
      o[c] = acc;
    }
  }
};

// Backward in three passes: delta_i = sum_j p_ij dp_ij (dp_ij = dout_i . v_j), then dq per query
// row, then dk and dv per key row (ds_ij = p_ij (dp_ij - delta_i)).
struct AttentionDelta {  // item: query (seq * H + h) * S + i
  float* delta;
  const float *dout, *qkv, *probs;
  int S, H, hd;
  RB_HD void operator()(int64_t item) const {
    const int D = H * hd, ld = 3 * D;
    const int64_t i = item % S, h = (item / S) % H, seq = item / (int64_t(S) * H);
    const float* d = dout + (size_t(seq) * S + i) * D + h * hd;
    const float* p = probs + ((size_t(seq) * H + h) * S + i) * S;
    float acc = 0.0f;
    for (int j = 0; j <= i; j++) {
      const float* v = qkv + (size_t(seq) * S + j) * ld + 2 * D + h * hd;
      float dp = 0.0f;
      for (int c = 0; c < hd; c++) dp += d[c] * v[c];
      acc += p[j] * dp;
    }
    delta[item] = acc;
  }
};

struct AttentionBackwardQuery {  // item: query (seq * H + h) * S + i; writes dq_i
  float* dqkv;
  const float *dout, *qkv, *probs, *delta;
  int S, H, hd;
  RB_HD void operator()(int64_t item) const {
    const int D = H * hd, ld = 3 * D;
    const int64_t i = item % S, h = (item / S) % H, seq = item / (int64_t(S) * H);
    const float scale = 1.0f / sqrtf(float(hd));
    const float* d = dout + (size_t(seq) * S + i) * D + h * hd;
    const float* p = probs + ((size_t(seq) * H + h) * S + i) * S;
    float* dq = dqkv + (size_t(seq) * S + i) * ld + h * hd;
    for (int c = 0; c < hd; c++) dq[c] = 0.0f;
    for (int j = 0; j <= i; j++) {
      const float* row = qkv + (size_t(seq) * S + j) * ld;
      float dp = 0.0f;
      for (int c = 0; c < hd; c++) dp += d[c] * row[2 * D + h * hd + c];
      const float ds = p[j] * (dp - delta[item]) * scale;
      for (int c = 0; c < hd; c++) dq[c] += ds * row[D + h * hd + c];
    }
  }
};

struct AttentionBackwardKeyValue {  // item: key (seq * H + h) * S + j; writes dk_j and dv_j
  float* dqkv;
  const float *dout, *qkv, *probs, *delta;
  int S, H, hd;
  RB_HD void operator()(int64_t item) const {
    const int D = H * hd, ld = 3 * D;
    const int64_t j = item % S, h = (item / S) % H, seq = item / (int64_t(S) * H);
    const float scale = 1.0f / sqrtf(float(hd));
    const float* v = qkv + (size_t(seq) * S + j) * ld + 2 * D + h * hd;
    float* dk = dqkv + (size_t(seq) * S + j) * ld + D + h * hd;
    float* dv = dk + D;
    for (int c = 0; c < hd; c++) dk[c] = dv[c] = 0.0f;
    for (int i = int(j); i < S; i++) {
      const int64_t qi = (seq * H + h) * S + i;
      const float* d = dout + (size_t(seq) * S + i) * D + h * hd;
      const float* q = qkv + (size_t(seq) * S + i) * ld + h * hd;
      const float pij = probs[size_t(qi) * S + j];
      float dp = 0.0f;
      for (int c = 0; c < hd; c++) dp += d[c] * v[c];
      const float ds = pij * (dp - delta[qi]) * scale;
      for (int c = 0; c < hd; c++) {
        dk[c] += ds * q[c];
        dv[c] += pij * d[c];
      }
    }
  }
};

// One query of head h against cached keys j0 .. j1-1 (rows of stride ld): the scores' maximum m,
// l = sum exp(score - m) and acc[c] = sum exp(score - m) v[c] (softmax scale 1/sqrt(hd)).
RB_HD inline void attention_decode_range(float* m_out, float* l_out, float* acc, const float* q, const float* k, const float* v,
                                         int64_t h, int j0, int j1, int ld, int hd) {
  const float scale = 1.0f / sqrtf(float(hd));
  const float* qh = q + h * hd;
  float mx = -INFINITY;
  for (int j = j0; j < j1; j++) {
    float d = 0.0f;
    for (int c = 0; c < hd; c++) d += qh[c] * k[size_t(j) * ld + h * hd + c];
    mx = d * scale > mx ? d * scale : mx;
  }
  float sum = 0.0f;
  for (int c = 0; c < hd; c++) acc[c] = 0.0f;
  for (int j = j0; j < j1; j++) {
    float d = 0.0f;
    for (int c = 0; c < hd; c++) d += qh[c] * k[size_t(j) * ld + h * hd + c];
    const float e = expf(d * scale - mx);
    sum += e;
    for (int c = 0; c < hd; c++) acc[c] += e * v[size_t(j) * ld + h * hd + c];
  }
  *m_out = mx;
  *l_out = sum;
}

struct AttentionDecode {  // item: head h; one query against n cached rows (short caches)
  float* out;
  const float *q, *k, *v;
  int n, ld, hd;
  RB_HD void operator()(int64_t h) const {
    float* o = out + h * hd;
    float m, l;
    attention_decode_range(&m, &l, o, q, k, v, h, 0, n, ld, hd);
    for (int c = 0; c < hd; c++) o[c] /= l;
  }
};

// Long caches in two passes (split over the keys, as flash-decoding does, merged in block order so
// the result is deterministic): partial [H, blocks, hd + 2] holds each block's m, l and acc.
constexpr int kDecodeMinBlock = 256, kDecodeMaxBlocks = 256;
struct AttentionDecodeBlocks {  // item: h * blocks + b
  float* partial;
  const float *q, *k, *v;
  int n, ld, hd, blocks, block;
  RB_HD void operator()(int64_t item) const {
    const int64_t h = item / blocks, b = item % blocks;
    const int j0 = int(b * block), j1 = j0 + block < n ? j0 + block : n;
    float* p = partial + size_t(item) * (hd + 2);
    attention_decode_range(p, p + 1, p + 2, q, k, v, h, j0, j1, ld, hd);
  }
};

struct AttentionDecodeMerge {  // item: h * hd + c
  float* out;
  const float* partial;
  int hd, blocks;
  RB_HD void operator()(int64_t item) const {
    const int64_t h = item / hd, c = item % hd;
    const float* p = partial + size_t(h) * blocks * (hd + 2);
    float mx = -INFINITY;
    for (int b = 0; b < blocks; b++) mx = p[size_t(b) * (hd + 2)] > mx ? p[size_t(b) * (hd + 2)] : mx;
    float l = 0.0f, acc = 0.0f;
    for (int b = 0; b < blocks; b++) {
      const float* pb = p + size_t(b) * (hd + 2);
      const float w = expf(pb[0] - mx);
      l += pb[1] * w;
      acc += pb[2 + c] * w;
    }
    out[item] = acc / l;
  }
};

// Recurrent retention (decoding): S_t = gamma S_{t-1} + k_t^T v_t, o_t = q_t S_t. An item owns
// column j of one head's state (`state` [B, H, dk, dv], updated in place) and alone writes o[., j].
// The chunkwise form for training and evaluation is in retention_items.h.
struct RetentionRecurrentStep {  // item: (b * H + h) * dv + j
  float* o;
  const float *q, *k, *v, *gammas;
  RetentionShape s;
  float* state;
  RB_HD void operator()(int64_t item) const {
    const int dk = s.dk, dv = s.dv, ldo = s.H * dv;
    const int64_t j = item % dv, task = item / dv, h = task % s.H, b = task / s.H;
    const float g = gammas[h];
    float* S = state + size_t(task) * dk * dv + j;  // S[a * dv]: row a of this column
    for (int t = 0; t < s.n; t++) {
      const size_t row = size_t(b) * s.n + t;
      const float vt = v[row * s.ld_v + h * dv + j];
      const float* kt = k + row * s.ld_qk + h * dk;
      const float* qt = q + row * s.ld_qk + h * dk;
      float acc = 0.0f;
      for (int a = 0; a < dk; a++) {
        S[size_t(a) * dv] = g * S[size_t(a) * dv] + kt[a] * vt;
        acc += qt[a] * S[size_t(a) * dv];
      }
      o[row * ldo + h * dv + j] = acc;
    }
  }
};

struct AdamW {
  float *p, *m, *v;
  const float *g, *mask;
  AdamWStep s;
  RB_HD void operator()(int64_t i) const {
    const float gi = g[i] * s.grad_scale;
    m[i] = s.beta1 * m[i] + (1.0f - s.beta1) * gi;
    v[i] = s.beta2 * v[i] + (1.0f - s.beta2) * gi * gi;
    const float update = (m[i] / s.bc1) / (sqrtf(v[i] / s.bc2) + s.eps);
    p[i] -= s.lr * (update + s.weight_decay * mask[i] * p[i]);
  }
};

// The CPU's blocks of 4096 summed in double; the caller adds the blocks in order (same bits).
constexpr int64_t kSumSquaresBlock = 4096;
struct SumSquaresBlocks {  // item: block
  double* partial;
  const float* x;
  int64_t n;
  RB_HD void operator()(int64_t blk) const {
    double s = 0.0;
    const int64_t end = (blk + 1) * kSumSquaresBlock < n ? (blk + 1) * kSumSquaresBlock : n;
    for (int64_t i = blk * kSumSquaresBlock; i < end; i++) s += double(x[i]) * x[i];
    partial[blk] = s;
  }
};

}  // namespace rb::items
