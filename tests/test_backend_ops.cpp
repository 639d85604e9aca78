// Every op on every registered backend (as llama.cpp's test-backend-ops): the CPU paths this
// machine runs, the GPU kernels emulated on the host, and CUDA when a GPU is present. Each is
// held against the portable CPU backend (the executable definition) by normalised mean squared
// error, and each backward against finite differences of its own backend's forward. Buffers go
// through alloc/upload/download only, so the same test drives device memory.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "generator/decoder.h"
#include "kernels/backend.h"
#include "kernels/cuda/cuda.h"
#include "src/model/model.h"
#include "tests/gpu_emulation.h"
#include "tests/test_util.h"
#include "trainer/adamw.h"

namespace rb {
namespace {

using test::random_vec;
using Floats = std::vector<float>;

// Backend buffers made from host vectors, released at the end of a scope.
class On {
 public:
  explicit On(Backend& be) : be_(be) {}
  ~On() {
    for (float* p : floats_) be_.release(p);
    for (int32_t* p : ints_) be_.release_index(p);
  }
  float* put(const Floats& h) {
    float* p = zeros(h.size());
    be_.upload(p, h.data(), h.size());
    return p;
  }
  float* zeros(size_t n) {
    floats_.push_back(be_.alloc(n));
    return floats_.back();
  }
  int32_t* put(const std::vector<int32_t>& h) {
    ints_.push_back(be_.alloc_index(h.size()));
    be_.upload_index(ints_.back(), h.data(), h.size());
    return ints_.back();
  }
  Floats get(const float* p, size_t n) {
    Floats h(n);
    be_.download(h.data(), p, n);
    return h;
  }

 private:
  Backend& be_;
  std::vector<float*> floats_;
  std::vector<int32_t*> ints_;
};

// sum (a - b)^2 / sum b^2
double nmse(const Floats& a, const Floats& b) {
  EXPECT_EQ(a.size(), b.size());
  double num = 0, den = 1e-30;
  for (size_t i = 0; i < std::min(a.size(), b.size()); i++) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return num / den;
}

std::unique_ptr<Backend> make_named_backend(const std::string& name, std::string* skip) {
  if (name == "gpu-emulated") return test::make_gpu_emulation();
  if (name == "cuda") {
    if (cuda_devices(skip).empty()) return nullptr;
    return make_cuda_backend(0);
  }
  const CpuPath path = name == "cpu-avx512" ? CpuPath::Avx512 : name == "cpu-avx2" ? CpuPath::Avx2 : CpuPath::Portable;
  if (!cpu_path_supported(path)) {
    *skip = "this CPU cannot run " + name;
    return nullptr;
  }
  return make_cpu_backend(2, path);
}

class BackendOps : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    std::string why;
    be = make_named_backend(GetParam(), &why);
    if (!be) GTEST_SKIP() << GetParam() << " not run: " << why;
    ref = make_cpu_backend(1, CpuPath::Portable);
  }
  using Outputs = std::vector<Floats>;
  // Runs `op` on the reference and on the backend under test; every output within `tol` NMSE.
  void expect_close(const char* what, const std::function<Outputs(Backend&)>& op, double tol = 1e-9) {
    const Outputs want = op(*ref), got = op(*be);
    ASSERT_EQ(want.size(), got.size());
    for (size_t i = 0; i < want.size(); i++)
      EXPECT_LE(nmse(got[i], want[i]), tol) << what << " output " << i << " on " << GetParam();
  }
  // Sampled coordinates for finite differences (a few dozen keep the suite fast).
  static std::vector<size_t> sample(size_t n, size_t count = 24) {
    std::vector<size_t> idx;
    for (size_t i = 0; i < count && i < n; i++) idx.push_back((i * 7919 + 13) % n);
    return idx;
  }
  std::unique_ptr<Backend> be, ref;
  Rng rng{7};
};

TEST_P(BackendOps, GemmEveryTransposeWithStridesAlphaBeta) {
  const int shapes[][3] = {{1, 1, 1}, {7, 13, 5}, {33, 70, 129}, {1, 300, 64}};
  for (auto [M, N, K] : shapes)
    for (int ta = 0; ta < 2; ta++)
      for (int tb = 0; tb < 2; tb++) {
        const int lda = (ta ? M : K) + 2, ldb = (tb ? K : N) + 3, ldc = N + 1;
        const Floats A = random_vec(size_t(ta ? K : M) * lda, rng), B = random_vec(size_t(tb ? N : K) * ldb, rng),
                     C = random_vec(size_t(M) * ldc, rng);
        expect_close("gemm", [&](Backend& b) -> Outputs {
          On d(b);
          float* c = d.put(C);
          b.gemm(ta, tb, M, N, K, 0.75f, d.put(A), lda, d.put(B), ldb, -0.5f, c, ldc);
          float* c0 = d.put(C);
          b.gemm(ta, tb, M, N, K, 1.0f, d.put(A), lda, d.put(B), ldb, 0.0f, c0, ldc);
          return {d.get(c, C.size()), d.get(c0, C.size())};
        });
      }
}

TEST_P(BackendOps, ElementwiseBiasAndColumnSums) {
  const int rows = 37, cols = 19;
  const Floats x = random_vec(size_t(rows) * cols, rng), y = random_vec(x.size(), rng), bias = random_vec(cols, rng),
               acc = random_vec(cols, rng);
  expect_close("bias, add, gelu, fill, copy", [&](Backend& b) -> Outputs {
    On d(b);
    float *py = d.put(y), *pb = d.put(acc), *g = d.zeros(x.size()), *dg = d.zeros(x.size()), *f = d.zeros(10),
          *c = d.zeros(x.size());
    const float* px = d.put(x);
    b.add_bias(py, d.put(bias), rows, cols);
    b.bias_backward(pb, px, rows, cols);
    b.add_inplace(py, px, x.size());
    b.gelu_forward(g, px, x.size());
    b.gelu_backward(dg, px, d.put(y), x.size());
    b.fill(f, 2.5f, 10);
    b.copy(c, px, x.size());
    return {d.get(py, y.size()), d.get(pb, cols), d.get(g, x.size()), d.get(dg, x.size()), d.get(f, 10), d.get(c, x.size())};
  });
}

// Sums over many rows (the GPU adds them in blocks of rows, then the blocks in order) and an
// embedding table larger than the GPU's index lanes, with repeated and sparse rows.
TEST_P(BackendOps, ColumnSumsOverManyRowsAndLargeTables) {
  const int rows = 700, C = 40, V = 300;
  const Floats x = random_vec(size_t(rows) * C, rng), dout = random_vec(x.size(), rng), w = random_vec(C, rng),
               bb = random_vec(C, rng), acc = random_vec(C, rng), table = random_vec(size_t(V) * C, rng);
  std::vector<int32_t> idx(rows);
  for (auto& i : idx) i = int32_t(rng.next() % 7 == 0 ? V - 1 : rng.next() % V);
  expect_close("bias, layernorm and embedding gradients over 700 rows", [&](Backend& b) -> Outputs {
    On d(b);
    const float *px = d.put(x), *pd = d.put(dout);
    float* pb = d.put(acc);
    b.bias_backward(pb, pd, rows, C);
    float *ln = d.zeros(x.size()), *mean = d.zeros(rows), *rstd = d.zeros(rows);
    b.layernorm_forward(ln, mean, rstd, px, d.put(w), d.put(bb), rows, C);
    float *dx = d.zeros(x.size()), *dw = d.put(w), *db = d.put(bb);
    b.layernorm_backward(dx, dw, db, pd, px, d.put(w), mean, rstd, rows, C);
    float* dt = d.put(table);
    b.embedding_backward(dt, pd, d.put(idx), rows, C);
    return {d.get(pb, C), d.get(dx, x.size()), d.get(dw, C), d.get(db, C), d.get(dt, table.size())};
  });
}

TEST_P(BackendOps, NormsGateRopeAndEmbeddings) {
  const int rows = 29, C = 48, groups = 3, width = 16, ld = 53;
  const Floats x = random_vec(size_t(rows) * ld, rng), w = random_vec(C, rng), bb = random_vec(C, rng),
               dout = random_vec(size_t(rows) * C, rng), dx0 = random_vec(size_t(rows) * C, rng);
  std::vector<int32_t> idx(61);
  for (auto& i : idx) i = int32_t(rng.next() % 11);
  idx[3] = idx[9] = idx[40] = 4;  // repeated rows
  const Floats table = random_vec(size_t(11) * C, rng), emb_grad = random_vec(size_t(idx.size()) * C, rng);
  expect_close("layernorm, rmsnorm, swish gate, rope, embeddings", [&](Backend& b) -> Outputs {
    On d(b);
    const float* px = d.put(x);
    float *ln = d.zeros(size_t(rows) * C), *mean = d.zeros(rows), *rstd = d.zeros(rows);
    Floats dense(size_t(rows) * C);  // layernorm wants dense rows: take the first C of each
    for (int r = 0; r < rows; r++) std::copy_n(x.data() + size_t(r) * ld, C, dense.data() + size_t(r) * C);
    const float* pd = d.put(dense);
    b.layernorm_forward(ln, mean, rstd, pd, d.put(w), d.put(bb), rows, C);
    float *dxl = d.put(dx0), *dw = d.put(w), *db = d.put(bb);
    b.layernorm_backward(dxl, dw, db, d.put(dout), pd, d.put(w), mean, rstd, rows, C);
    float *rms = d.zeros(size_t(rows) * C), *rr = d.zeros(size_t(rows) * groups), *drms = d.put(x);
    b.rmsnorm_forward(rms, rr, px, ld, rows, groups, width);
    b.rmsnorm_backward(drms, ld, d.put(dout), rms, rr, rows, groups, width);
    float *gate = d.zeros(size_t(rows) * C), *dg = d.put(x), *dy = d.zeros(size_t(rows) * C);
    b.swish_gate_forward(gate, px, ld, pd, rows, C);
    b.swish_gate_backward(dg, dy, ld, px, pd, d.put(dout), rows, C);
    float* rot = d.put(x);
    b.rope(rot, ld, rows, 2, 16, 7, 1000, 0.25f, false);
    float* back = d.put(x);
    b.rope(back, ld, rows, 2, 16, 7, 5, 1.0f, false);
    b.rope(back, ld, rows, 2, 16, 7, 5, 1.0f, true);  // the transpose undoes a rotation
    const int32_t* pi = d.put(idx);
    float *e = d.zeros(idx.size() * C), *ea = d.put(emb_grad), *dt = d.put(table);
    b.embedding_forward(e, d.put(table), pi, int(idx.size()), C, false);
    b.embedding_forward(ea, d.put(table), pi, int(idx.size()), C, true);
    b.embedding_backward(dt, d.put(emb_grad), pi, int(idx.size()), C);
    return {d.get(ln, dense.size()),
            d.get(mean, rows),
            d.get(rstd, rows),
            d.get(dxl, dx0.size()),
            d.get(dw, C),
            d.get(db, C),
            d.get(rms, dense.size()),
            d.get(rr, size_t(rows) * groups),
            d.get(drms, x.size()),
            d.get(gate, dense.size()),
            d.get(dg, x.size()),
            d.get(dy, dense.size()),
            d.get(rot, x.size()),
            d.get(back, x.size()),
            d.get(e, idx.size() * C),
            d.get(ea, idx.size() * C),
            d.get(dt, table.size())};
  });
  // The inverse rotation gives back the input (on this backend alone).
  On d(*be);
  float* back = d.put(x);
  be->rope(back, ld, rows, 2, 16, 7, 5, 1.0f, false);
  be->rope(back, ld, rows, 2, 16, 7, 5, 1.0f, true);
  EXPECT_LE(nmse(d.get(back, x.size()), x), 1e-12);
}

TEST_P(BackendOps, CrossEntropyAndAttention) {
  const int rows = 23, V = 256;
  const Floats logits = random_vec(size_t(rows) * V, rng, 3.0);
  std::vector<int32_t> targets(rows);
  for (auto& t : targets) t = int32_t(rng.next() % V);
  const AttentionShape s{3, 8, 2, 8};
  const Floats qkv = random_vec(size_t(s.nseq) * s.S * 3 * s.D(), rng), dout = random_vec(size_t(s.nseq) * s.S * s.D(), rng);
  const Floats kv = random_vec(size_t(13) * 2 * s.D(), rng), q = random_vec(s.D(), rng);
  expect_close("cross-entropy, attention", [&](Backend& b) -> Outputs {
    On d(b);
    float *loss = d.zeros(rows), *loss2 = d.zeros(rows), *dl = d.put(logits);
    b.crossentropy_forward(loss, d.put(logits), d.put(targets), rows, V);
    b.crossentropy_fused_backward(loss2, dl, d.put(targets), rows, V, 0.5f);
    float *out = d.zeros(size_t(s.nseq) * s.S * s.D()), *probs = d.zeros(size_t(s.probs_size())), *dqkv = d.zeros(qkv.size());
    const float* pq = d.put(qkv);
    b.attention_forward(out, probs, pq, s);
    b.attention_backward(dqkv, d.put(dout), pq, probs, s);
    float* dec = d.zeros(s.D());
    const float* pkv = d.put(kv);
    b.attention_decode(dec, d.put(q), pkv, pkv + s.D(), 13, 2 * s.D(), s.H, s.hd);
    return {d.get(loss, rows),
            d.get(loss2, rows),
            d.get(dl, logits.size()),
            d.get(out, size_t(s.nseq) * s.S * s.D()),
            d.get(probs, size_t(s.probs_size())),
            d.get(dqkv, qkv.size()),
            d.get(dec, s.D())};
  });
}

TEST_P(BackendOps, RetentionFormsWithStatesAndSavedChunks) {
  test::RetentionProblem p(2, 21, 2, 8, 6, rng);
  const int chunk = 5;
  const Floats dout = random_vec(p.out_size(), rng), dstate = random_vec(p.s.state_size(), rng);
  expect_close(
      "retention",
      [&](Backend& b) -> Outputs {
        On d(b);
        const float *q = d.put(p.q), *k = d.put(p.k), *v = d.put(p.v), *g = d.put(p.gammas), *s0 = d.put(p.state0);
        float *o = d.zeros(p.out_size()), *st = d.zeros(p.s.state_size()), *saved = d.zeros(p.saved_size(chunk));
        b.retention_chunkwise_forward(o, q, k, v, g, p.s, chunk, s0, st, saved);
        float *dq = d.zeros(p.q.size()), *dk = d.zeros(p.k.size()), *dv = d.zeros(p.v.size()), *ds = d.zeros(p.s.state_size());
        b.retention_chunkwise_backward(dq, dk, dv, d.put(dout), q, k, v, g, p.s, chunk, saved, d.put(dstate), ds);
        float *orec = d.zeros(p.out_size()), *srec = d.put(p.state0);
        b.retention_recurrent_forward(orec, q, k, v, g, p.s, srec);
        // Only the used columns of the padded rows are outputs.
        auto used = [&](Floats x, int ld, int width) {
          Floats u;
          for (size_t i = 0; i < x.size(); i++)
            if (int(i % ld) < width) u.push_back(x[i]);
          return u;
        };
        const int qk_w = p.s.H * p.s.dk, v_w = p.s.H * p.s.dv;
        return {d.get(o, p.out_size()),
                d.get(st, p.s.state_size()),
                d.get(saved, p.saved_size(chunk)),
                used(d.get(dq, p.q.size()), p.s.ld_qk, qk_w),
                used(d.get(dk, p.k.size()), p.s.ld_qk, qk_w),
                used(d.get(dv, p.v.size()), p.s.ld_v, v_w),
                d.get(ds, p.s.state_size()),
                d.get(orec, p.out_size()),
                d.get(srec, p.s.state_size())};
      },
      1e-8);
}

// Training's shapes: chunks of 64 over 150 positions (the last one short), wider heads, an initial
// state and a gradient reaching the final state; forward, state and every gradient.
TEST_P(BackendOps, ChunkwiseRetentionAtTrainingShapes) {
  test::RetentionProblem p(2, 150, 2, 16, 32, rng);
  const int chunk = 64;
  const Floats dout = random_vec(p.out_size(), rng), dstate = random_vec(p.s.state_size(), rng);
  expect_close(
      "retention, chunks of 64",
      [&](Backend& b) -> Outputs {
        On d(b);
        const float *q = d.put(p.q), *k = d.put(p.k), *v = d.put(p.v), *g = d.put(p.gammas);
        float *o = d.zeros(p.out_size()), *st = d.put(p.state0), *saved = d.zeros(p.saved_size(chunk));
        b.retention_chunkwise_forward(o, q, k, v, g, p.s, chunk, st, st, saved);  // state in and out alias
        float* o2 = d.zeros(p.out_size());
        b.retention_chunkwise_forward(o2, q, k, v, g, p.s, chunk, nullptr, nullptr, nullptr);  // zero state, nothing saved
        float *dq = d.zeros(p.q.size()), *dk = d.zeros(p.k.size()), *dv = d.zeros(p.v.size()), *ds = d.zeros(p.s.state_size());
        b.retention_chunkwise_backward(dq, dk, dv, d.put(dout), q, k, v, g, p.s, chunk, saved, d.put(dstate), ds);
        return {d.get(o, p.out_size()),  d.get(st, p.s.state_size()), d.get(saved, p.saved_size(chunk)),
                d.get(o2, p.out_size()), d.get(dq, p.q.size()),       d.get(dk, p.k.size()),
                d.get(dv, p.v.size()),   d.get(ds, p.s.state_size())};
      },
      1e-8);
}

// Decoding attention over long caches (the GPU splits the keys into blocks and merges them),
// with one key far above the rest so the merge's rescaling matters.
TEST_P(BackendOps, AttentionDecodeOverLongCaches) {
  const int H = 3, hd = 8, ld = 2 * H * hd + 5;
  for (int n : {300, 5000, 70001}) {
    Floats kv = random_vec(size_t(n) * ld, rng), q = random_vec(size_t(H) * hd, rng);
    for (int c = 0; c < hd; c++) kv[size_t(n / 3) * ld + c] = 4.0f * q[c];  // head 0's keys: one stands out
    expect_close(("attention_decode n=" + std::to_string(n)).c_str(),
                 [&](Backend& b) -> Outputs {
                   On d(b);
                   const float* pkv = d.put(kv);
                   float* out = d.zeros(size_t(H) * hd);
                   b.attention_decode(out, d.put(q), pkv, pkv + H * hd, n, ld, H, hd);
                   return {d.get(out, size_t(H) * hd)};
                 },
                 n < 10000 ? 1e-10 : 1e-7);  // 70,001 keys: outputs near zero, a float sum's rounding in either order
  }
}

TEST_P(BackendOps, AdamWAndSumOfSquares) {
  const size_t n = 3 * 4096 + 77;
  const Floats p = random_vec(n, rng), g = random_vec(n, rng), m = random_vec(n, rng, 0.1);
  Floats v = random_vec(n, rng, 0.1), mask(n);
  for (auto& x : v) x = x * x;
  for (size_t i = 0; i < n; i++) mask[i] = float(i % 3 == 0);
  const AdamWStep s{1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, 0.3f, 0.2f, 0.5f};
  double ss_ref = 0;
  expect_close("adamw", [&](Backend& b) -> Outputs {
    On d(b);
    float *pp = d.put(p), *pm = d.put(m), *pv = d.put(v);
    b.adamw_step(pp, d.put(g), pm, pv, d.put(mask), n, s);
    const double ss = b.sum_squares(d.put(g), n);
    if (&b == ref.get())
      ss_ref = ss;
    else
      EXPECT_NEAR(ss, ss_ref, 1e-12 * ss_ref);
    return {d.get(pp, n), d.get(pm, n), d.get(pv, n)};
  });
}

// Finite differences of each backward against this backend's own forward: loss = <forward(x), r>.
TEST_P(BackendOps, BackwardsMatchFiniteDifferences) {
  Backend& b = *be;
  const int rows = 5, C = 12;
  Floats x = random_vec(size_t(rows) * C, rng), w = random_vec(C, rng), bias = random_vec(C, rng);
  const Floats r = random_vec(x.size(), rng);
  {  // layernorm: dx, dw, db
    auto loss = [&] {
      On d(b);
      float *out = d.zeros(x.size()), *mean = d.zeros(rows), *rstd = d.zeros(rows);
      b.layernorm_forward(out, mean, rstd, d.put(x), d.put(w), d.put(bias), rows, C);
      return test::dot(d.get(out, x.size()), r);
    };
    On d(b);
    float *out = d.zeros(x.size()), *mean = d.zeros(rows), *rstd = d.zeros(rows);
    const float *px = d.put(x), *pw = d.put(w);
    b.layernorm_forward(out, mean, rstd, px, pw, d.put(bias), rows, C);
    float *dx = d.zeros(x.size()), *dw = d.zeros(C), *db = d.zeros(C);
    b.layernorm_backward(dx, dw, db, d.put(r), px, pw, mean, rstd, rows, C);
    test::expect_gradient("layernorm dx", x, d.get(dx, x.size()), loss, 1e-2, 2e-2, 1e-3, sample(x.size()));
    test::expect_gradient("layernorm dw", w, d.get(dw, C), loss, 1e-2, 2e-2, 1e-3);
    test::expect_gradient("layernorm db", bias, d.get(db, C), loss, 1e-2, 2e-2, 1e-3);
  }
  {  // gelu, rmsnorm, swish gate (gate and value)
    Floats y = random_vec(x.size(), rng);
    auto loss = [&] {
      On d(b);
      const float *px = d.put(x), *py = d.put(y);
      float *g = d.zeros(x.size()), *n = d.zeros(x.size()), *rs = d.zeros(size_t(rows) * 2), *sg = d.zeros(x.size());
      b.gelu_forward(g, px, x.size());
      b.rmsnorm_forward(n, rs, px, C, rows, 2, C / 2);
      b.swish_gate_forward(sg, px, C, py, rows, C);
      return test::dot(d.get(g, x.size()), r) + 0.5 * test::dot(d.get(n, x.size()), r) + 0.25 * test::dot(d.get(sg, x.size()), r);
    };
    On d(b);
    const float *px = d.put(x), *py = d.put(y);
    float *n = d.zeros(x.size()), *rs = d.zeros(size_t(rows) * 2);
    b.rmsnorm_forward(n, rs, px, C, rows, 2, C / 2);
    float *dg = d.zeros(x.size()), *dn = d.zeros(x.size()), *dsg = d.zeros(x.size()), *dy = d.zeros(x.size());
    b.gelu_backward(dg, px, d.put(r), x.size());
    Floats half = r, quarter = r;
    for (auto& v : half) v *= 0.5f;
    for (auto& v : quarter) v *= 0.25f;
    b.rmsnorm_backward(dn, C, d.put(half), n, rs, rows, 2, C / 2);
    b.swish_gate_backward(dsg, dy, C, px, py, d.put(quarter), rows, C);
    Floats total = d.get(dg, x.size());
    const Floats a = d.get(dn, x.size()), c = d.get(dsg, x.size());
    for (size_t i = 0; i < total.size(); i++) total[i] += a[i] + c[i];
    test::expect_gradient("gelu + rmsnorm + swish gate dx", x, total, loss, 1e-2, 2e-2, 1e-3, sample(x.size()));
    test::expect_gradient("swish gate dy", y, d.get(dy, y.size()), loss, 1e-2, 2e-2, 1e-3, sample(y.size()));
  }
  {  // embeddings with repeated indices, cross-entropy's fused gradient
    const std::vector<int32_t> idx = {2, 0, 2, 1, 2};
    Floats table = random_vec(size_t(3) * C, rng);
    const Floats re = random_vec(idx.size() * C, rng);
    auto loss = [&] {
      On d(b);
      float* e = d.zeros(idx.size() * C);
      b.embedding_forward(e, d.put(table), d.put(idx), int(idx.size()), C, false);
      return test::dot(d.get(e, idx.size() * C), re);
    };
    On d(b);
    float* dt = d.zeros(table.size());
    b.embedding_backward(dt, d.put(re), d.put(idx), int(idx.size()), C);
    test::expect_gradient("embedding dtable", table, d.get(dt, table.size()), loss, 1e-2, 2e-2, 1e-3);
    const int V = 16;
    Floats logits = random_vec(size_t(rows) * V, rng);
    const std::vector<int32_t> targets = {3, 0, 15, 7, 7};
    auto ce = [&] {
      On d2(b);
      float* l = d2.zeros(rows);
      b.crossentropy_forward(l, d2.put(logits), d2.put(targets), rows, V);
      double s = 0;
      for (float v : d2.get(l, rows)) s += v;
      return s;
    };
    float *dl = d.put(logits), *l = d.zeros(rows);
    b.crossentropy_fused_backward(l, dl, d.put(targets), rows, V, 1.0f);
    test::expect_gradient("cross-entropy dlogits", logits, d.get(dl, logits.size()), ce, 1e-2, 2e-2, 1e-3, sample(logits.size()));
  }
  {  // attention
    const AttentionShape s{2, 5, 2, 4};
    Floats qkv = random_vec(size_t(s.nseq) * s.S * 3 * s.D(), rng);
    const Floats ra = random_vec(size_t(s.nseq) * s.S * s.D(), rng);
    auto loss = [&] {
      On d(b);
      float *out = d.zeros(ra.size()), *probs = d.zeros(size_t(s.probs_size()));
      b.attention_forward(out, probs, d.put(qkv), s);
      return test::dot(d.get(out, ra.size()), ra);
    };
    On d(b);
    float *out = d.zeros(ra.size()), *probs = d.zeros(size_t(s.probs_size())), *dqkv = d.zeros(qkv.size());
    const float* pq = d.put(qkv);
    b.attention_forward(out, probs, pq, s);
    b.attention_backward(dqkv, d.put(ra), pq, probs, s);
    test::expect_gradient("attention dqkv", qkv, d.get(dqkv, qkv.size()), loss, 1e-2, 2e-2, 1e-3, sample(qkv.size(), 40));
  }
  {  // retention, chunkwise, with an initial state and a gradient reaching the final state
    test::RetentionProblem p(1, 11, 2, 4, 3, rng);
    const int chunk = 4;
    const Floats ro = random_vec(p.out_size(), rng), rs = random_vec(p.s.state_size(), rng);
    auto loss = [&] {
      On d(b);
      float *o = d.zeros(p.out_size()), *st = d.zeros(p.s.state_size());
      b.retention_chunkwise_forward(o, d.put(p.q), d.put(p.k), d.put(p.v), d.put(p.gammas), p.s, chunk, d.put(p.state0), st,
                                    nullptr);
      return test::dot(d.get(o, p.out_size()), ro) + test::dot(d.get(st, p.s.state_size()), rs);
    };
    On d(b);
    const float *q = d.put(p.q), *k = d.put(p.k), *v = d.put(p.v), *g = d.put(p.gammas);
    float *o = d.zeros(p.out_size()), *st = d.zeros(p.s.state_size()), *saved = d.zeros(p.saved_size(chunk));
    b.retention_chunkwise_forward(o, q, k, v, g, p.s, chunk, d.put(p.state0), st, saved);
    float *dq = d.zeros(p.q.size()), *dk = d.zeros(p.k.size()), *dv = d.zeros(p.v.size()), *ds = d.zeros(p.s.state_size());
    b.retention_chunkwise_backward(dq, dk, dv, d.put(ro), q, k, v, g, p.s, chunk, saved, d.put(rs), ds);
    auto used = [&](size_t n, int ld, int width) {
      std::vector<size_t> idx;
      for (size_t i = 0; i < n; i++)
        if (int(i % ld) < width) idx.push_back(i);
      return idx;
    };
    test::expect_gradient("retention dq", p.q, d.get(dq, p.q.size()), loss, 1e-2, 2e-2, 1e-3, used(p.q.size(), p.s.ld_qk, 8));
    test::expect_gradient("retention dk", p.k, d.get(dk, p.k.size()), loss, 1e-2, 2e-2, 1e-3, used(p.k.size(), p.s.ld_qk, 8));
    test::expect_gradient("retention dv", p.v, d.get(dv, p.v.size()), loss, 1e-2, 2e-2, 1e-3, used(p.v.size(), p.s.ld_v, 6));
    test::expect_gradient("retention dstate0", p.state0, d.get(ds, p.s.state_size()), loss, 1e-2, 2e-2, 1e-3);
  }
}

// The whole model on this backend: a training step's loss, gradient and updated weights, and an
// eval forward with a carried stream, close to the CPU's.
TEST_P(BackendOps, ModelTrainingStepsAndStreamsMatchTheCpu) {
  ModelConfig cfg = named_config("tiny");
  cfg.B = 1, cfg.T = 128;
  std::vector<uint8_t> bytes(size_t(cfg.T) * 2);
  for (size_t i = 0; i < bytes.size(); i++)
    bytes[i] = uint8_t("the quick brown fox jumps over the lazy dog. "[i % 45] + (i / 97) % 3);
  auto run = [&](Backend& b) -> Outputs {
    Model m(cfg, b);
    m.init_random(3);
    AdamW opt(b, m.table(), m.num_params());
    Floats losses;
    for (int step = 0; step < 3; step++) {
      m.zero_grad();
      losses.push_back(float(m.forward(bytes.data(), cfg.B, cfg.T, Model::Mode::Train)));
      m.backward();
      opt.step(b, m.params(), m.grads(), 1e-2f, AdamWConfig{});
    }
    auto stream = m.new_stream(1);
    losses.push_back(float(m.forward(bytes.data(), 1, cfg.T, Model::Mode::Eval, stream.get())));
    losses.push_back(float(m.forward(bytes.data() + cfg.T, 1, cfg.T, Model::Mode::Eval, stream.get())));
    Floats params(m.num_params());
    b.download(params.data(), m.params(), params.size());
    return {losses, params, opt.download_m()};
  };
  expect_close("model", run, 1e-8);
}

// Decoding on this backend (prompt ingestion, then teacher-forced bytes through the recorded
// global and local steps) gives the CPU's logits, for both global kinds and a cloned state.
TEST_P(BackendOps, DecodingStepsMatchTheCpu) {
  std::vector<uint8_t> text(300);
  for (size_t i = 0; i < text.size(); i++) text[i] = uint8_t("retention keeps a constant-size state. "[i % 39] ^ (i / 150));
  for (const char* file : {"tiny_retention.safetensors", "tiny_attention.safetensors"}) {
    auto decode = [&](Backend& b) -> Outputs {
      auto model = Model::load(std::string(RETBYTE_TEST_DIR) + "/golden/" + file, b);
      Decoder dec(*model);
      DecodeState st(*model);
      dec.ingest(st, text.data(), 37);  // whole patches through the global model, then a part patch
      Floats logits;
      std::unique_ptr<DecodeState> fork;
      for (size_t t = 37; t < 120; t++) {
        const float* l = dec.next_logits(st);
        logits.insert(logits.end(), l, l + 256);
        dec.accept(st, text[t]);
        if (t == 80) fork = st.clone();
      }
      for (size_t t = 81; t < 100; t++) {  // the clone continues as the original did
        const float* l = dec.next_logits(*fork);
        logits.insert(logits.end(), l, l + 256);
        dec.accept(*fork, text[t]);
      }
      return {logits};
    };
    expect_close(file, decode, 1e-9);
  }
}

std::vector<std::string> registered_backends() { return {"cpu-portable", "cpu-avx2", "cpu-avx512", "gpu-emulated", "cuda"}; }

INSTANTIATE_TEST_SUITE_P(EveryBackend, BackendOps, ::testing::ValuesIn(registered_backends()), [](const auto& info) {
  std::string n = info.param;
  for (char& c : n)
    if (c == '-') c = '_';
  return n;
});

// The CUDA backend records each decoding step as one unit and replays it as a CUDA graph; the
// emulated device counts what it is handed. Nothing may run outside the units once decoding is
// under way, and what a graph cannot hold (a download, an allocation) is refused while recording.
TEST(GpuEmulation, EachDecodingStepIsOneRecordedUnit) {
  test::GpuEmulation be;
  test::HostItemDevice& dev = be.device();
  for (const char* file : {"tiny_retention.safetensors", "tiny_attention.safetensors"}) {
    auto model = Model::load(std::string(RETBYTE_TEST_DIR) + "/golden/" + file, be);
    const int P = model->config().P;
    Decoder dec(*model);
    DecodeState st(*model);
    const uint8_t prompt[8] = {'R', 'B', 'T', 0, 'a', 'b', 'c', 'd'};
    dec.ingest(st, prompt, 8);
    const int64_t units0 = dev.recorded_units, eager0 = dev.eager_ops;
    dev.recorded_keys.clear();
    const int bytes = 5 * P;
    for (int i = 0; i < bytes; i++) dec.accept(st, uint8_t(dec.next_logits(st)[0] > 0 ? 'x' : 'y'));
    dec.next_logits(st);  // the global step of the last patch, then its first byte
    EXPECT_EQ(dev.eager_ops - eager0, 0) << file << ": ops issued outside the recorded steps";
    // One unit per byte, one per patch's global step; a key per local position and one global.
    EXPECT_EQ(dev.recorded_units - units0, bytes + 1 + bytes / P) << file;
    EXPECT_EQ(dev.recorded_keys.size(), size_t(P + 1)) << file;
    EXPECT_GE(double(dev.recorded_ops) / double(dev.recorded_units), 10.0) << file << ": units hold the step's ops";
  }
  // Refused while recording, and nothing of a cancelled unit runs.
  float* buf = be.alloc(4);
  float host[4] = {1, 2, 3, 4};
  be.begin_recorded(7);
  EXPECT_THROW(be.download(host, buf, 4), Error);
  EXPECT_THROW(be.upload(buf, host, 4), Error);
  EXPECT_THROW(be.alloc(4), Error);
  EXPECT_THROW(be.begin_recorded(8), Error);
  be.fill(buf, 5.0f, 4);
  be.release(buf);  // deferred: the recorded fill still writes it
  be.cancel_recorded();
  EXPECT_THROW(be.end_recorded(), Error);
  // A recorded unit runs its ops in order when it ends: fill, then an index upload of 3 values.
  float* out = be.alloc(3);
  int32_t* idx = be.alloc_index(3);
  const int32_t want[3] = {2, 0, 1};
  const float table[3] = {10, 20, 30};
  float* t = be.alloc(3);
  be.upload(t, table, 3);
  run_recorded(be, 9, [&] {
    be.fill(out, -1.0f, 3);
    be.upload_index(idx, want, 3);  // travels inside the kernel's arguments
    be.embedding_forward(out, t, idx, 3, 1, true);
  });
  float got[3];
  be.download(got, out, 3);
  EXPECT_EQ(got[0], 29.0f);
  EXPECT_EQ(got[1], 9.0f);
  EXPECT_EQ(got[2], 19.0f);
  // An index upload longer than one kernel's arguments is split while recording.
  std::vector<int32_t> many(150), back(150);
  for (size_t i = 0; i < many.size(); i++) many[i] = int32_t(i * 3);
  int32_t* big = be.alloc_index(many.size());
  run_recorded(be, 10, [&] { be.upload_index(big, many.data(), many.size()); });
  std::memcpy(back.data(), big, back.size() * sizeof(int32_t));  // emulated device memory is host memory
  EXPECT_EQ(back, many);
  for (float* p : {out, t}) be.release(p);
  be.release_index(idx);
  be.release_index(big);
}

TEST(Cuda, WithoutAGpuTheBackendIsAOneLineError) {
  std::string why;
  if (!cuda_devices(&why).empty()) GTEST_SKIP() << "a GPU is present";
  EXPECT_FALSE(why.empty());
  test::expect_error_containing([] { make_cuda_backend(0); }, "--device cuda");
}

}  // namespace
}  // namespace rb
