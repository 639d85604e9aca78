// Chunkwise retention (doc/SPEC.md §1) as per-item kernels with parallelism over every position, chunk
// and state element, instead of one thread walking the whole sequence. Per (b, h), with chunk c
// covering positions c0 .. c0 + L_c - 1 (L_c = C but for a shorter last chunk), S_c the state
// entering chunk c and j = t - c0:
//   forward   U_c = sum_s g^(L_c-1-s) k_s^T v_s                     (ChunkKeyValueSums)
//             S_{c+1} = g^(L_c) S_c + U_c, saving every S_c          (ChunkStateScan)
//             A[t][s] = g^(j-s) q_t . k_s for s <= j                 (IntraChunkScores)
//             o_t = sum_s A[t][s] v_s + g^(j+1) q_t S_c              (ChunkOutputs)
//   backward  dA[t][s] = g^(j-s) do_t . v_s                          (IntraChunkScores on do, v)
//             dq_t = sum_s dA[t][s] k_s + g^(j+1) do_t S_c^T         (ChunkQueryGradients)
//             W_c = sum_t g^(j+1) q_t^T do_t; G_c = g^(L_c) G_{c+1} + W_c from G_end = dstate_out,
//             G_0 = dstate_in, and dU_c = G_{c+1}                    (ChunkQueryStateSums, ChunkGradientScan)
//             dk_s = sum_t dA[t][s] q_t + g^(L_c-1-s) G_{c+1} v_s^T   (ChunkKeyGradients)
//             dv_s = sum_t A[t][s] do_t + g^(L_c-1-s) k_s G_{c+1}    (ChunkValueGradients)
// Every item writes only its own element and sums in a fixed order, so results are deterministic.
// Task = b * H + h; chunk-sized tensors are [tasks, nchunks, dk, dv]; scores [tasks, n, C].
#pragma once
#include <cstdint>

#include "kernels/backend.h"
#include "kernels/cuda/item_ops.h"

namespace rb::items {

struct ChunkGeometry {
  RetentionShape s;
  int C;  // chunk length, 1 <= C <= n
  RB_HD int nchunks() const { return (s.n + C - 1) / C; }
  RB_HD int length(int c) const { return s.n - c * C < C ? s.n - c * C : C; }           // L_c
  RB_HD size_t row(int64_t task, int t) const { return size_t(task / s.H) * s.n + t; }  // row of b's position t
  RB_HD int head(int64_t task) const { return int(task % s.H); }
  RB_HD size_t qk(int64_t task, int t) const { return row(task, t) * s.ld_qk + size_t(head(task)) * s.dk; }
  RB_HD size_t v(int64_t task, int t) const { return row(task, t) * s.ld_v + size_t(head(task)) * s.dv; }
  RB_HD size_t o(int64_t task, int t) const { return row(task, t) * size_t(s.H) * s.dv + size_t(head(task)) * s.dv; }
  RB_HD size_t chunk_state(int64_t task, int c) const { return (size_t(task) * nchunks() + c) * s.dk * s.dv; }
};

// U_c[a][j] (item: ((task * nchunks + c) * dk + a) * dv + j).
struct ChunkKeyValueSums {
  float* U;
  const float *k, *v, *gammas;
  ChunkGeometry g;
  RB_HD void operator()(int64_t item) const {
    const int dk = g.s.dk, dv = g.s.dv, nc = g.nchunks();
    const int j = int(item % dv), a = int((item / dv) % dk), c = int((item / (int64_t(dv) * dk)) % nc);
    const int64_t task = item / (int64_t(dv) * dk * nc);
    const int c0 = c * g.C, L = g.length(c);
    const float gamma = gammas[g.head(task)];
    float acc = 0.0f;
    for (int s = 0; s < L; s++) acc += power(gamma, L - 1 - s) * k[g.qk(task, c0 + s) + a] * v[g.v(task, c0 + s) + j];
    U[item] = acc;
  }
};

// Walks the chunks for one state element (item: (task * dk + a) * dv + j): states[c] = S_c, then
// S_{c+1} = g^(L_c) S_c + U_c. state_in may be null (zeros); state_out (may be null, may alias
// state_in: this item alone reads and writes its element) receives the final state.
struct ChunkStateScan {
  float* states;
  const float* U;
  const float *gammas, *state_in;
  float* state_out;
  ChunkGeometry g;
  RB_HD void operator()(int64_t item) const {
    const int64_t per_task = int64_t(g.s.dk) * g.s.dv, task = item / per_task, e = item % per_task;
    const float gamma = gammas[g.head(task)];
    float S = state_in ? state_in[item] : 0.0f;
    for (int c = 0; c < g.nchunks(); c++) {
      states[g.chunk_state(task, c) + e] = S;
      S = power(gamma, g.length(c)) * S + U[g.chunk_state(task, c) + e];
    }
    if (state_out) state_out[item] = S;
  }
};

// scores[task][t][s] = g^(j-s) x_t . y_{c0+s} for s <= j, else 0 (item: (task * n + t) * C + s).
// Forward: x = q, y = k (width dk). Backward: x = do, y = v (width dv).
struct IntraChunkScores {
  float* scores;
  const float *x, *y, *gammas;
  ChunkGeometry g;
  bool values;  // x and y are value-width rows (do and v), not query/key rows
  RB_HD void operator()(int64_t item) const {
    const int C = g.C, n = g.s.n;
    const int s = int(item % C), t = int((item / C) % n);
    const int64_t task = item / (int64_t(C) * n);
    const int c0 = t - t % C, j = t - c0;
    if (s > j) {
      scores[item] = 0.0f;
      return;
    }
    const float* xr = values ? x + g.o(task, t) : x + g.qk(task, t);
    const float* yr = values ? y + g.v(task, c0 + s) : y + g.qk(task, c0 + s);
    const int width = values ? g.s.dv : g.s.dk;
    float d = 0.0f;
    for (int a = 0; a < width; a++) d += xr[a] * yr[a];
    scores[item] = power(gammas[g.head(task)], j - s) * d;
  }
};

// o_t[j] (item: (task * n + t) * dv + jv).
struct ChunkOutputs {
  float* o;
  const float *q, *v, *gammas, *scores, *states;
  ChunkGeometry g;
  RB_HD void operator()(int64_t item) const {
    const int dv = g.s.dv, dk = g.s.dk, n = g.s.n, C = g.C;
    const int jv = int(item % dv), t = int((item / dv) % n);
    const int64_t task = item / (int64_t(dv) * n);
    const int c = t / C, c0 = c * C, j = t - c0;
    const float* A = scores + (size_t(task) * n + t) * C;
    float intra = 0.0f;
    for (int s = 0; s <= j; s++) intra += A[s] * v[g.v(task, c0 + s) + jv];
    const float* qt = q + g.qk(task, t);
    const float* S = states + g.chunk_state(task, c) + jv;
    float inter = 0.0f;
    for (int a = 0; a < dk; a++) inter += qt[a] * S[size_t(a) * dv];
    o[g.o(task, t) + jv] = intra + power(gammas[g.head(task)], j + 1) * inter;
  }
};

// dq_t[a] (item: (task * n + t) * dk + a).
struct ChunkQueryGradients {
  float* dq;
  const float *dout, *k, *gammas, *dscores, *states;
  ChunkGeometry g;
  RB_HD void operator()(int64_t item) const {
    const int dv = g.s.dv, dk = g.s.dk, n = g.s.n, C = g.C;
    const int a = int(item % dk), t = int((item / dk) % n);
    const int64_t task = item / (int64_t(dk) * n);
    const int c = t / C, c0 = c * C, j = t - c0;
    const float* dA = dscores + (size_t(task) * n + t) * C;
    float intra = 0.0f;
    for (int s = 0; s <= j; s++) intra += dA[s] * k[g.qk(task, c0 + s) + a];
    const float* d = dout + g.o(task, t);
    const float* S = states + g.chunk_state(task, c) + size_t(a) * dv;
    float inter = 0.0f;
    for (int jv = 0; jv < dv; jv++) inter += d[jv] * S[jv];
    dq[g.qk(task, t) + a] = intra + power(gammas[g.head(task)], j + 1) * inter;
  }
};

// W_c[a][jv] = sum over the chunk's positions of g^(j+1) q_t[a] do_t[jv] (item as ChunkKeyValueSums).
struct ChunkQueryStateSums {
  float* W;
  const float *q, *dout, *gammas;
  ChunkGeometry g;
  RB_HD void operator()(int64_t item) const {
    const int dk = g.s.dk, dv = g.s.dv, nc = g.nchunks();
    const int jv = int(item % dv), a = int((item / dv) % dk), c = int((item / (int64_t(dv) * dk)) % nc);
    const int64_t task = item / (int64_t(dv) * dk * nc);
    const int c0 = c * g.C, L = g.length(c);
    const float gamma = gammas[g.head(task)];
    float acc = 0.0f;
    for (int j = 0; j < L; j++) acc += power(gamma, j + 1) * q[g.qk(task, c0 + j) + a] * dout[g.o(task, c0 + j) + jv];
    W[item] = acc;
  }
};

// Backwards over the chunks for one state element (item as ChunkStateScan): G = dstate_out (or
// 0); for each chunk from the last, WG[c] becomes G_{c+1} (dU_c) in place of W_c, and G = g^(L_c) G
// + W_c. dstate_in (may be null) = G_0.
struct ChunkGradientScan {
  float* WG;
  const float *gammas, *dstate_out;
  float* dstate_in;
  ChunkGeometry g;
  RB_HD void operator()(int64_t item) const {
    const int64_t per_task = int64_t(g.s.dk) * g.s.dv, task = item / per_task, e = item % per_task;
    const float gamma = gammas[g.head(task)];
    float G = dstate_out ? dstate_out[item] : 0.0f;
    for (int c = g.nchunks() - 1; c >= 0; c--) {
      float& cell = WG[g.chunk_state(task, c) + e];
      const float w = cell;
      cell = G;
      G = power(gamma, g.length(c)) * G + w;
    }
    if (dstate_in) dstate_in[item] = G;
  }
};

// dk_s[a] (item: (task * n + t) * dk + a, t = c0 + s).
struct ChunkKeyGradients {
  float* dk_out;
  const float *q, *v, *gammas, *dscores, *next_grads;  // next_grads: G_{c+1} per chunk
  ChunkGeometry g;
  RB_HD void operator()(int64_t item) const {
    const int dv = g.s.dv, dk = g.s.dk, n = g.s.n, C = g.C;
    const int a = int(item % dk), t = int((item / dk) % n);
    const int64_t task = item / (int64_t(dk) * n);
    const int c = t / C, c0 = c * C, s = t - c0, L = g.length(c);
    float intra = 0.0f;
    for (int j = s; j < L; j++) intra += dscores[(size_t(task) * n + c0 + j) * C + s] * q[g.qk(task, c0 + j) + a];
    const float* G = next_grads + g.chunk_state(task, c) + size_t(a) * dv;
    const float* vs = v + g.v(task, t);
    float carried = 0.0f;
    for (int jv = 0; jv < dv; jv++) carried += G[jv] * vs[jv];
    dk_out[g.qk(task, t) + a] = intra + power(gammas[g.head(task)], L - 1 - s) * carried;
  }
};

// dv_s[jv] (item: (task * n + t) * dv + jv, t = c0 + s).
struct ChunkValueGradients {
  float* dv_out;
  const float *k, *dout, *gammas, *scores, *next_grads;
  ChunkGeometry g;
  RB_HD void operator()(int64_t item) const {
    const int dv = g.s.dv, dk = g.s.dk, n = g.s.n, C = g.C;
    const int jv = int(item % dv), t = int((item / dv) % n);
    const int64_t task = item / (int64_t(dv) * n);
    const int c = t / C, c0 = c * C, s = t - c0, L = g.length(c);
    float intra = 0.0f;
    for (int j = s; j < L; j++) intra += scores[(size_t(task) * n + c0 + j) * C + s] * dout[g.o(task, c0 + j) + jv];
    const float* G = next_grads + g.chunk_state(task, c) + jv;
    const float* ks = k + g.qk(task, t);
    float carried = 0.0f;
    for (int a = 0; a < dk; a++) carried += ks[a] * G[size_t(a) * dv];
    dv_out[g.v(task, t) + jv] = intra + power(gammas[g.head(task)], L - 1 - s) * carried;
  }
};

}  // namespace rb::items
