// Retention on the CPU. The chunkwise form runs one (sequence, head) pair per pool task and
// does every product with the single-threaded GEMM on c x c / c x d blocks; with chunk >= n it
// is exactly the parallel form O = (Q K^T ⊙ D) V (+ the initial-state term).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/cpu_backend.h"

namespace rb {

namespace {

// powers[i] = gamma^i for i = 0..count-1: repeated products in double (the same bits everywhere).
std::vector<float> decay_powers(float gamma, int count) {
  std::vector<float> p(count);
  double x = 1.0;
  for (int i = 0; i < count; i++, x *= double(gamma)) p[i] = float(x);
  return p;
}

// A[j][m] *= gamma^(j-m) for m <= j, 0 above the diagonal (A is c x c, row stride ld).
void apply_decay_mask(float* A, int ld, int c, const float* pw) {
  for (int j = 0; j < c; j++) {
    float* a = A + size_t(j) * ld;
    for (int m = 0; m <= j; m++) a[m] *= pw[j - m];
    for (int m = j + 1; m < c; m++) a[m] = 0.0f;
  }
}

// dst[j][:] (row stride ld_dst) += scale_j * src[j][:] (dense, width w).
void add_rows_scaled(float* dst, int ld_dst, const float* src, int c, int w, const float* scales) {
  for (int j = 0; j < c; j++) {
    float* d = dst + size_t(j) * ld_dst;
    const float* s = src + size_t(j) * w;
    const float sc = scales[j];
    for (int i = 0; i < w; i++) d[i] += sc * s[i];
  }
}

// dst[j][:] = scale_j * src[j][:] (src row stride ld_src, dst dense width w).
void scale_rows(float* dst, const float* src, int ld_src, int c, int w, const float* scales) {
  for (int j = 0; j < c; j++) {
    const float* s = src + size_t(j) * ld_src;
    float* d = dst + size_t(j) * w;
    const float sc = scales[j];
    for (int i = 0; i < w; i++) d[i] = sc * s[i];
  }
}

}  // namespace

void CpuBackend::retention_chunkwise_forward(float* o, const float* q, const float* k, const float* v, const float* gammas,
                                             const RetentionShape& s, int chunk, const float* state_in, float* state_out,
                                             float* saved_states) {
  const int n = s.n, dk = s.dk, dv = s.dv, H = s.H, ldo = H * dv;
  const int C = std::max(1, std::min(chunk, n));
  const int nchunks = (n + C - 1) / C;
  const size_t ssz = size_t(dk) * dv;
  pool_.parallel_for(int64_t(s.B) * H, 1, [&](int64_t t0, int64_t t1) {
    for (int task = int(t0); task < int(t1); task++) {
      const int b = task / H, h = task % H;
      const std::vector<float> pw = decay_powers(gammas[h], C + 2);
      std::vector<float> A(size_t(C) * C), Qs(size_t(C) * dk), Ks(size_t(C) * dk), rev(C);
      std::vector<float> S(ssz, 0.0f);
      bool state_nonzero = state_in != nullptr;
      if (state_in) std::memcpy(S.data(), state_in + task * ssz, ssz * sizeof(float));
      for (int ci = 0; ci < nchunks; ci++) {
        const int c0 = ci * C, c = std::min(C, n - c0);
        const size_t row = size_t(b) * n + c0;
        const float* Qc = q + row * s.ld_qk + size_t(h) * dk;
        const float* Kc = k + row * s.ld_qk + size_t(h) * dk;
        const float* Vc = v + row * s.ld_v + size_t(h) * dv;
        float* Oc = o + row * ldo + size_t(h) * dv;
        if (saved_states) std::memcpy(saved_states + (size_t(task) * nchunks + ci) * ssz, S.data(), ssz * sizeof(float));
        gemm_serial(false, true, c, c, dk, 1.0f, Qc, s.ld_qk, Kc, s.ld_qk, 0.0f, A.data(), C);
        apply_decay_mask(A.data(), C, c, pw.data());
        gemm_serial(false, false, c, dv, c, 1.0f, A.data(), C, Vc, s.ld_v, 0.0f, Oc, ldo);
        if (state_nonzero) {  // o_j += gamma^(j+1) q_j S_prev
          scale_rows(Qs.data(), Qc, s.ld_qk, c, dk, pw.data() + 1);
          gemm_serial(false, false, c, dv, dk, 1.0f, Qs.data(), dk, S.data(), dv, 1.0f, Oc, ldo);
        }
        // S = gamma^c S + sum_j gamma^(c-1-j) k_j^T v_j
        for (int j = 0; j < c; j++) rev[j] = pw[c - 1 - j];
        scale_rows(Ks.data(), Kc, s.ld_qk, c, dk, rev.data());
        gemm_serial(true, false, dk, dv, c, 1.0f, Ks.data(), dk, Vc, s.ld_v, state_nonzero ? pw[c] : 0.0f, S.data(), dv);
        state_nonzero = true;
      }
      if (state_out) std::memcpy(state_out + task * ssz, S.data(), ssz * sizeof(float));
    }
  });
}

void CpuBackend::retention_chunkwise_backward(float* dq, float* dk_out, float* dv_out, const float* dout, const float* q,
                                              const float* k, const float* v, const float* gammas, const RetentionShape& s,
                                              int chunk, const float* saved_states, const float* dstate_out, float* dstate_in) {
  const int n = s.n, dk = s.dk, dv = s.dv, H = s.H, ldo = H * dv;
  const int C = std::max(1, std::min(chunk, n));
  const int nchunks = (n + C - 1) / C;
  const size_t ssz = size_t(dk) * dv;
  pool_.parallel_for(int64_t(s.B) * H, 1, [&](int64_t t0, int64_t t1) {
    for (int task = int(t0); task < int(t1); task++) {
      const int b = task / H, h = task % H;
      const std::vector<float> pw = decay_powers(gammas[h], C + 2);
      std::vector<float> A(size_t(C) * C), dA(size_t(C) * C), Qs(size_t(C) * dk);
      std::vector<float> tmp_k(size_t(C) * dk), tmp_v(size_t(C) * dv), rev(C);
      std::vector<float> dS(ssz, 0.0f);
      bool dS_nonzero = dstate_out != nullptr;
      if (dstate_out) std::memcpy(dS.data(), dstate_out + task * ssz, ssz * sizeof(float));
      for (int ci = nchunks - 1; ci >= 0; ci--) {
        const int c0 = ci * C, c = std::min(C, n - c0);
        const size_t row = size_t(b) * n + c0;
        const float* Qc = q + row * s.ld_qk + size_t(h) * dk;
        const float* Kc = k + row * s.ld_qk + size_t(h) * dk;
        const float* Vc = v + row * s.ld_v + size_t(h) * dv;
        const float* dOc = dout + row * ldo + size_t(h) * dv;
        float* dQc = dq + row * s.ld_qk + size_t(h) * dk;
        float* dKc = dk_out + row * s.ld_qk + size_t(h) * dk;
        float* dVc = dv_out + row * s.ld_v + size_t(h) * dv;
        const float* S_prev = saved_states + (size_t(task) * nchunks + ci) * ssz;
        for (int j = 0; j < c; j++) rev[j] = pw[c - 1 - j];

        gemm_serial(false, true, c, c, dk, 1.0f, Qc, s.ld_qk, Kc, s.ld_qk, 0.0f, A.data(), C);
        apply_decay_mask(A.data(), C, c, pw.data());
        gemm_serial(false, true, c, c, dv, 1.0f, dOc, ldo, Vc, s.ld_v, 0.0f, dA.data(), C);
        apply_decay_mask(dA.data(), C, c, pw.data());

        // dQ = dA K + diag(gamma^(j+1)) dO S_prev^T
        gemm_serial(false, false, c, dk, c, 1.0f, dA.data(), C, Kc, s.ld_qk, 0.0f, dQc, s.ld_qk);
        gemm_serial(false, true, c, dk, dv, 1.0f, dOc, ldo, S_prev, dv, 0.0f, tmp_k.data(), dk);
        add_rows_scaled(dQc, s.ld_qk, tmp_k.data(), c, dk, pw.data() + 1);
        // dK = dA^T Q + diag(gamma^(c-1-j)) V dS^T ; dV = A^T dO + diag(gamma^(c-1-j)) K dS
        gemm_serial(true, false, c, dk, c, 1.0f, dA.data(), C, Qc, s.ld_qk, 0.0f, dKc, s.ld_qk);
        gemm_serial(true, false, c, dv, c, 1.0f, A.data(), C, dOc, ldo, 0.0f, dVc, s.ld_v);
        if (dS_nonzero) {
          gemm_serial(false, true, c, dk, dv, 1.0f, Vc, s.ld_v, dS.data(), dv, 0.0f, tmp_k.data(), dk);
          add_rows_scaled(dKc, s.ld_qk, tmp_k.data(), c, dk, rev.data());
          gemm_serial(false, false, c, dv, dk, 1.0f, Kc, s.ld_qk, dS.data(), dv, 0.0f, tmp_v.data(), dv);
          add_rows_scaled(dVc, s.ld_v, tmp_v.data(), c, dv, rev.data());
        }
        // dS_prev = gamma^c dS + (diag(gamma^(j+1)) Q)^T dO
        scale_rows(Qs.data(), Qc, s.ld_qk, c, dk, pw.data() + 1);
        gemm_serial(true, false, dk, dv, c, 1.0f, Qs.data(), dk, dOc, ldo, dS_nonzero ? pw[c] : 0.0f, dS.data(), dv);
        dS_nonzero = true;
      }
      if (dstate_in) std::memcpy(dstate_in + task * ssz, dS.data(), ssz * sizeof(float));
    }
  });
}

void CpuBackend::retention_recurrent_forward(float* o, const float* q, const float* k, const float* v, const float* gammas,
                                             const RetentionShape& s, float* state) {
  const int n = s.n, dk = s.dk, dv = s.dv, H = s.H, ldo = H * dv;
  const size_t ssz = size_t(dk) * dv;
  const int64_t per_task = int64_t(n) * ssz * 2;
  // At least ~64K floats of work per chunk, but never fewer chunks than threads: a decoding step
  // (n = 1) splits its heads evenly, so each core keeps updating the same heads' states.
  const int64_t tasks = int64_t(s.B) * H;
  const int64_t grain = std::max<int64_t>(1, std::min<int64_t>(65536 / per_task, (tasks + threads() - 1) / threads()));
  // A decoding step of one stream is a small job (ThreadPool::JobSize): ~64k floats of state.
  const bool small = per_task * tasks < (int64_t(1) << 18);
  pool_.parallel_for(
      tasks, grain,
      [&](int64_t t0, int64_t t1) {
        for (int64_t task = t0; task < t1; task++) {
          const int b = int(task / H), h = int(task % H);
          const size_t row = size_t(b) * n;
          k_.retention_recurrent_head(o + row * ldo + size_t(h) * dv, ldo, q + row * s.ld_qk + size_t(h) * dk,
                                      k + row * s.ld_qk + size_t(h) * dk, s.ld_qk, v + row * s.ld_v + size_t(h) * dv, s.ld_v,
                                      gammas[h], n, dk, dv, state + size_t(task) * ssz);
        }
      },
      small ? ThreadPool::JobSize::Small : ThreadPool::JobSize::Large);
}

}  // namespace rb
