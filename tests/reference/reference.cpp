#include "tests/reference/reference.h"

#include <algorithm>
#include <cmath>

namespace rb::ref {

void gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb, float beta,
          float* C, int ldc) {
  for (int i = 0; i < M; i++)
    for (int j = 0; j < N; j++) {
      double acc = 0.0;
      for (int p = 0; p < K; p++) {
        const double a = ta ? A[size_t(p) * lda + i] : A[size_t(i) * lda + p];
        const double b = tb ? B[size_t(j) * ldb + p] : B[size_t(p) * ldb + j];
        acc += a * b;
      }
      float& c = C[size_t(i) * ldc + j];
      c = float(alpha * acc + (beta == 0.0f ? 0.0 : double(beta) * c));
    }
}

void layernorm(float* out, const float* x, const float* w, const float* b, int rows, int C) {
  for (int r = 0; r < rows; r++) {
    const float* xr = x + size_t(r) * C;
    double m = 0, v = 0;
    for (int c = 0; c < C; c++) m += xr[c];
    m /= C;
    for (int c = 0; c < C; c++) v += (xr[c] - m) * (xr[c] - m);
    v /= C;
    for (int c = 0; c < C; c++) out[size_t(r) * C + c] = float((xr[c] - m) / std::sqrt(v + 1e-5) * w[c] + b[c]);
  }
}

float gelu(float x) { return float(0.5 * x * (1.0 + std::erf(double(x) / std::sqrt(2.0)))); }

void rmsnorm(float* out, const float* x, int ld_x, int rows, int groups, int width) {
  for (int r = 0; r < rows; r++)
    for (int g = 0; g < groups; g++) {
      const float* xr = x + size_t(r) * ld_x + size_t(g) * width;
      double ss = 0;
      for (int c = 0; c < width; c++) ss += double(xr[c]) * xr[c];
      const double rs = 1.0 / std::sqrt(ss / width + 1e-6);
      for (int c = 0; c < width; c++) out[(size_t(r) * groups + g) * width + c] = float(xr[c] * rs);
    }
}

void swish_gate(float* out, const float* g, int ld_g, const float* y, int rows, int cols) {
  for (int r = 0; r < rows; r++)
    for (int c = 0; c < cols; c++) {
      const double gv = g[size_t(r) * ld_g + c];
      out[size_t(r) * cols + c] = float(gv / (1.0 + std::exp(-gv)) * y[size_t(r) * cols + c]);
    }
}

void rope(float* x, int ld, int rows, int heads, int hd, int seq_len, int64_t pos0, float scale) {
  for (int r = 0; r < rows; r++)
    for (int h = 0; h < heads; h++)
      for (int i = 0; i < hd / 2; i++) {
        const double angle = double(pos0 + r % seq_len) * std::pow(10000.0, -2.0 * i / hd);
        float* p = x + size_t(r) * ld + size_t(h) * hd + 2 * i;
        const double a = p[0], b = p[1];
        p[0] = float((a * std::cos(angle) - b * std::sin(angle)) * scale);
        p[1] = float((a * std::sin(angle) + b * std::cos(angle)) * scale);
      }
}

void crossentropy(float* losses, const float* logits, const int32_t* targets, int rows, int V) {
  for (int r = 0; r < rows; r++) {
    const float* l = logits + size_t(r) * V;
    const double mx = *std::max_element(l, l + V);
    double s = 0;
    for (int c = 0; c < V; c++) s += std::exp(l[c] - mx);
    losses[r] = float(std::log(s) + mx - l[targets[r]]);
  }
}

void attention(float* out, const float* qkv, const AttentionShape& sh) {
  const int S = sh.S, D = sh.D(), hd = sh.hd, ld = 3 * D;
  std::vector<double> p(S);
  for (int seq = 0; seq < sh.nseq; seq++)
    for (int h = 0; h < sh.H; h++)
      for (int i = 0; i < S; i++) {
        const float* qi = qkv + (size_t(seq) * S + i) * ld + h * hd;
        double mx = -1e300, sum = 0;
        for (int j = 0; j <= i; j++) {
          const float* kj = qkv + (size_t(seq) * S + j) * ld + D + h * hd;
          double d = 0;
          for (int c = 0; c < hd; c++) d += double(qi[c]) * kj[c];
          p[j] = d / std::sqrt(double(hd));
          mx = std::max(mx, p[j]);
        }
        for (int j = 0; j <= i; j++) sum += (p[j] = std::exp(p[j] - mx));
        for (int c = 0; c < hd; c++) {
          double acc = 0;
          for (int j = 0; j <= i; j++) acc += p[j] / sum * qkv[(size_t(seq) * S + j) * ld + 2 * D + h * hd + c];
          out[(size_t(seq) * S + i) * D + h * hd + c] = float(acc);
        }
      }
}

namespace {
// Views of one (b, h) pair as double matrices: Q, K [n, dk], V [n, dv].
struct HeadData {
  std::vector<double> Q, K, V;
};
HeadData gather_head(const float* q, const float* k, const float* v, const RetentionShape& s, int b, int h) {
  HeadData d{std::vector<double>(size_t(s.n) * s.dk), std::vector<double>(size_t(s.n) * s.dk),
             std::vector<double>(size_t(s.n) * s.dv)};
  for (int t = 0; t < s.n; t++) {
    const size_t row = size_t(b) * s.n + t;
    for (int a = 0; a < s.dk; a++) {
      d.Q[size_t(t) * s.dk + a] = q[row * s.ld_qk + size_t(h) * s.dk + a];
      d.K[size_t(t) * s.dk + a] = k[row * s.ld_qk + size_t(h) * s.dk + a];
    }
    for (int c = 0; c < s.dv; c++) d.V[size_t(t) * s.dv + c] = v[row * s.ld_v + size_t(h) * s.dv + c];
  }
  return d;
}
}  // namespace

void retention_parallel(float* o, const float* q, const float* k, const float* v, const float* gammas, const RetentionShape& s,
                        const float* state_in, float* state_out) {
  const int n = s.n, dk = s.dk, dv = s.dv;
  const size_t ssz = size_t(dk) * dv;
  for (int b = 0; b < s.B; b++)
    for (int h = 0; h < s.H; h++) {
      const HeadData d = gather_head(q, k, v, s, b, h);
      const double g = gammas[h];
      const float* S0 = state_in ? state_in + (size_t(b) * s.H + h) * ssz : nullptr;
      for (int t = 0; t < n; t++)
        for (int c = 0; c < dv; c++) {
          double acc = 0;
          for (int m = 0; m <= t; m++) {
            double qk = 0;
            for (int a = 0; a < dk; a++) qk += d.Q[size_t(t) * dk + a] * d.K[size_t(m) * dk + a];
            acc += qk * std::pow(g, t - m) * d.V[size_t(m) * dv + c];
          }
          if (S0)
            for (int a = 0; a < dk; a++) acc += std::pow(g, t + 1) * d.Q[size_t(t) * dk + a] * S0[size_t(a) * dv + c];
          o[(size_t(b) * n + t) * s.H * dv + size_t(h) * dv + c] = float(acc);
        }
      if (state_out)
        for (int a = 0; a < dk; a++)
          for (int c = 0; c < dv; c++) {
            double acc = S0 ? std::pow(g, n) * S0[size_t(a) * dv + c] : 0.0;
            for (int m = 0; m < n; m++) acc += std::pow(g, n - 1 - m) * d.K[size_t(m) * dk + a] * d.V[size_t(m) * dv + c];
            state_out[(size_t(b) * s.H + h) * ssz + size_t(a) * dv + c] = float(acc);
          }
    }
}

void retention_recurrent(float* o, const float* q, const float* k, const float* v, const float* gammas, const RetentionShape& s,
                         const float* state_in, float* state_out) {
  const int n = s.n, dk = s.dk, dv = s.dv;
  const size_t ssz = size_t(dk) * dv;
  for (int b = 0; b < s.B; b++)
    for (int h = 0; h < s.H; h++) {
      const HeadData d = gather_head(q, k, v, s, b, h);
      const double g = gammas[h];
      std::vector<double> S(ssz, 0.0);
      if (state_in)
        for (size_t i = 0; i < ssz; i++) S[i] = state_in[(size_t(b) * s.H + h) * ssz + i];
      for (int t = 0; t < n; t++) {
        for (int a = 0; a < dk; a++)
          for (int c = 0; c < dv; c++)
            S[size_t(a) * dv + c] = g * S[size_t(a) * dv + c] + d.K[size_t(t) * dk + a] * d.V[size_t(t) * dv + c];
        for (int c = 0; c < dv; c++) {
          double acc = 0;
          for (int a = 0; a < dk; a++) acc += d.Q[size_t(t) * dk + a] * S[size_t(a) * dv + c];
          o[(size_t(b) * n + t) * s.H * dv + size_t(h) * dv + c] = float(acc);
        }
      }
      if (state_out)
        for (size_t i = 0; i < ssz; i++) state_out[(size_t(b) * s.H + h) * ssz + i] = float(S[i]);
    }
}

void retention_parallel_backward(float* dq, float* dk_out, float* dv_out, float* dstate_in, const float* dout,
                                 const float* dstate_out, const float* q, const float* k, const float* v, const float* gammas,
                                 const RetentionShape& s, const float* state_in) {
  const int n = s.n, dk = s.dk, dv = s.dv, ldo = s.H * s.dv;
  const size_t ssz = size_t(dk) * dv;
  for (int b = 0; b < s.B; b++)
    for (int h = 0; h < s.H; h++) {
      const HeadData d = gather_head(q, k, v, s, b, h);
      const double g = gammas[h];
      const size_t sidx = (size_t(b) * s.H + h) * ssz;
      auto dO = [&](int t, int c) { return double(dout[(size_t(b) * n + t) * ldo + size_t(h) * dv + c]); };
      auto S0 = [&](int a, int c) { return state_in ? double(state_in[sidx + size_t(a) * dv + c]) : 0.0; };
      auto dSn = [&](int a, int c) { return dstate_out ? double(dstate_out[sidx + size_t(a) * dv + c]) : 0.0; };
      // M[t][m] = (dO_t . V_m) gamma^(t-m) for m <= t  (gradient of the scores)
      std::vector<double> M(size_t(n) * n, 0.0), A(size_t(n) * n, 0.0);
      for (int t = 0; t < n; t++)
        for (int m = 0; m <= t; m++) {
          double dov = 0, qk = 0;
          for (int c = 0; c < dv; c++) dov += dO(t, c) * d.V[size_t(m) * dv + c];
          for (int a = 0; a < dk; a++) qk += d.Q[size_t(t) * dk + a] * d.K[size_t(m) * dk + a];
          M[size_t(t) * n + m] = dov * std::pow(g, t - m);
          A[size_t(t) * n + m] = qk * std::pow(g, t - m);
        }
      for (int t = 0; t < n; t++) {
        const size_t row = size_t(b) * n + t;
        for (int a = 0; a < dk; a++) {
          double gq = 0, gk = 0;
          for (int m = 0; m <= t; m++) gq += M[size_t(t) * n + m] * d.K[size_t(m) * dk + a];
          for (int u = t; u < n; u++) gk += M[size_t(u) * n + t] * d.Q[size_t(u) * dk + a];
          for (int c = 0; c < dv; c++) {
            gq += std::pow(g, t + 1) * dO(t, c) * S0(a, c);
            gk += std::pow(g, n - 1 - t) * d.V[size_t(t) * dv + c] * dSn(a, c);
          }
          dq[row * s.ld_qk + size_t(h) * dk + a] = float(gq);
          dk_out[row * s.ld_qk + size_t(h) * dk + a] = float(gk);
        }
        for (int c = 0; c < dv; c++) {
          double gv = 0;
          for (int u = t; u < n; u++) gv += A[size_t(u) * n + t] * dO(u, c);
          for (int a = 0; a < dk; a++) gv += std::pow(g, n - 1 - t) * d.K[size_t(t) * dk + a] * dSn(a, c);
          dv_out[row * s.ld_v + size_t(h) * dv + c] = float(gv);
        }
      }
      if (dstate_in)
        for (int a = 0; a < dk; a++)
          for (int c = 0; c < dv; c++) {
            double acc = std::pow(g, n) * dSn(a, c);
            for (int t = 0; t < n; t++) acc += std::pow(g, t + 1) * d.Q[size_t(t) * dk + a] * dO(t, c);
            dstate_in[sidx + size_t(a) * dv + c] = float(acc);
          }
    }
}

}  // namespace rb::ref
