// The numerics contract (doc/SPEC.md §7): every Backend op gives bitwise the same outputs on every CPU path
// (portable, AVX2, AVX-512) and thread count (1, 2), and a row's result does not depend on the rows
// computed beside it (batch invariance). Shapes are odd on purpose: K > kGemmKC and not a multiple of
// anything, rows that are not multiples of a tile, padded strides.
#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "src/common/dmath.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/kernel_table.h"
#include "kernels/numerics.h"
#include "tests/test_util.h"

namespace rb {
namespace {

using test::random_vec;
using Vec = std::vector<float>;

// One named output of an op; a run returns all of them.
struct Out {
  std::string name;
  Vec v;
};
using Outs = std::vector<Out>;

struct Config {
  std::string label;
  std::unique_ptr<Backend> be;
};

// Every (path, threads) this CPU can run; the first (portable, 1 thread) is the reference.
std::vector<Config> all_backends() {
  std::vector<Config> cs;
  for (CpuPath p : test::runnable_cpu_paths())
    for (int t : {1, 2}) cs.push_back({std::string(cpu_path_name(p)) + "/" + std::to_string(t) + "t", make_cpu_backend(t, p)});
  return cs;
}

// Bitwise equality, reporting how many elements differ and the first one (hex floats).
void expect_bitwise(const Vec& want, const Vec& got, const std::string& what) {
  ASSERT_EQ(want.size(), got.size()) << what;
  if (test::bitwise_equal(want, got)) return;
  size_t first = 0, count = 0;
  for (size_t i = 0; i < want.size(); i++)
    if (std::memcmp(&want[i], &got[i], sizeof(float)) != 0 && count++ == 0) first = i;
  ADD_FAILURE() << what << ": " << count << " of " << want.size() << " elements differ, first at [" << first
                << "]: " << std::hexfloat << want[first] << " vs " << got[first] << std::defaultfloat;
}

// Runs `run` on every backend and expects each output bitwise equal to the first backend's.
template <class Run>
void expect_same_everywhere(const std::string& what, Run&& run) {
  Outs ref;
  std::string ref_label;
  for (auto& c : all_backends()) {
    SCOPED_TRACE(what + " on " + c.label);
    Outs outs = run(*c.be);
    if (ref_label.empty()) {
      ref = std::move(outs), ref_label = c.label;
      continue;
    }
    ASSERT_EQ(outs.size(), ref.size());
    for (size_t i = 0; i < outs.size(); i++)
      expect_bitwise(ref[i].v, outs[i].v, what + ": " + outs[i].name + " on " + c.label + " vs " + ref_label);
  }
}

Vec rows_of(const Vec& x, int r0, int nrows, int ld) {
  return Vec(x.begin() + size_t(r0) * ld, x.begin() + size_t(r0 + nrows) * ld);
}

Vec transpose(const Vec& x, int rows, int cols) {
  Vec t(x.size());
  for (int r = 0; r < rows; r++)
    for (int c = 0; c < cols; c++) t[size_t(c) * rows + r] = x[size_t(r) * cols + c];
  return t;
}

// ------------------------------------------------------------------ GEMM

TEST(NumericsGemm, EveryPathAndThreadCountGivesTheSameBits) {
  // (2, 257, 300) is big enough for the multi-threaded few-row path (columns split across threads).
  const int shapes[][3] = {{1, 37, 300}, {2, 257, 300}, {3, 70, 600}, {7, 33, 257}, {64, 100, 513}, {130, 47, 29}};
  Rng rng(101);
  int index = 0;
  for (auto [M, N, K] : shapes) {
    const int pad = index++ % 2 ? 3 : 0;  // every other shape has padded leading dimensions
    for (int ta = 0; ta < 2; ta++)
      for (int tb = 0; tb < 2; tb++) {
        const int lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + 2 * pad, ldc = N + pad;
        const Vec A = random_vec(size_t(ta ? K : M) * lda, rng), B = random_vec(size_t(tb ? N : K) * ldb, rng);
        const Vec C0 = random_vec(size_t(M) * ldc, rng);
        for (float alpha : {1.0f, 0.5f})
          for (float beta : {0.0f, 1.0f}) {
            const std::string what = "gemm " + std::to_string(M) + "x" + std::to_string(N) + "x" + std::to_string(K) +
                                     " ta=" + std::to_string(ta) + " tb=" + std::to_string(tb) + " pad=" + std::to_string(pad) +
                                     " alpha=" + std::to_string(alpha) + " beta=" + std::to_string(beta);
            expect_same_everywhere(what, [&](Backend& be) {
              Vec C = C0;
              be.gemm(ta, tb, M, N, K, alpha, A.data(), lda, B.data(), ldb, beta, C.data(), ldc);
              return Outs{{"C", C}};
            });
          }
      }
  }
}

// A row computed alone (M=1: the column-split path) or in a block of 7 has the bits it has among 64.
// And B given transposed (trans_b) gives the bits of the explicitly transposed matrix.
TEST(NumericsGemm, RowsDoNotDependOnTheBatchOrOnHowBIsStored) {
  const int M = 64, N = 300, K = 600;
  Rng rng(102);
  const Vec A = random_vec(size_t(M) * K, rng), At = transpose(A, M, K);
  const Vec B = random_vec(size_t(K) * N, rng), Bt = transpose(B, K, N);
  expect_same_everywhere("gemm batch invariance", [&](Backend& be) {
    Outs outs;
    for (int ta = 0; ta < 2; ta++)
      for (int tb = 0; tb < 2; tb++) {
        const float* a = ta ? At.data() : A.data();
        const float* b = tb ? Bt.data() : B.data();
        const int lda = ta ? M : K, ldb = tb ? K : N;
        auto row_ptr = [&](int r) { return ta ? a + r : a + size_t(r) * K; };  // row r of op(A)
        const std::string tag = " ta=" + std::to_string(ta) + " tb=" + std::to_string(tb);
        Vec all(size_t(M) * N);
        be.gemm(ta, tb, M, N, K, 1.0f, a, lda, b, ldb, 0.0f, all.data(), N);
        for (int r : {0, 5, 33, 63}) {
          Vec one(N), block(size_t(7) * N);
          be.gemm(ta, tb, 1, N, K, 1.0f, row_ptr(r), lda, b, ldb, 0.0f, one.data(), N);
          expect_bitwise(rows_of(all, r, 1, N), one, "row " + std::to_string(r) + " alone vs in M=64" + tag);
          const int r0 = std::clamp(r - 3, 0, M - 7);
          be.gemm(ta, tb, 7, N, K, 1.0f, row_ptr(r0), lda, b, ldb, 0.0f, block.data(), N);
          expect_bitwise(rows_of(all, r, 1, N), rows_of(block, r - r0, 1, N),
                         "row " + std::to_string(r) + " in a block of 7 vs in M=64" + tag);
        }
        outs.push_back({"C" + tag, all});
      }
    // op(B) stored transposed (tb=1) must give the bits of B stored as is (tb=0).
    expect_bitwise(outs[0].v, outs[1].v, "trans_b=1 vs explicit transpose, ta=0");
    expect_bitwise(outs[2].v, outs[3].v, "trans_b=1 vs explicit transpose, ta=1");
    return outs;
  });
}

// ------------------------------------------------------------------ element-wise and row ops

TEST(NumericsOps, LayerNormForwardAndBackward) {
  Rng rng(201);
  for (int C : {257, 128})
    for (int rows : {5, 70}) {
      Vec x = random_vec(size_t(rows) * C, rng, 2.0);
      for (auto& v : x) v += 3.0f;
      const Vec w = random_vec(C, rng), b = random_vec(C, rng), dout = random_vec(x.size(), rng);
      const Vec dx0 = random_vec(x.size(), rng), dw0 = random_vec(C, rng), db0 = random_vec(C, rng);
      expect_same_everywhere("layernorm C=" + std::to_string(C) + " rows=" + std::to_string(rows), [&](Backend& be) {
        Vec out(x.size()), mean(rows), rstd(rows), dx = dx0, dw = dw0, db = db0;
        be.layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), rows, C);
        be.layernorm_backward(dx.data(), dw.data(), db.data(), dout.data(), x.data(), w.data(), mean.data(), rstd.data(), rows,
                              C);
        return Outs{{"out", out}, {"mean", mean}, {"rstd", rstd}, {"dx", dx}, {"dw", dw}, {"db", db}};
      });
    }
}

TEST(NumericsOps, GeluForwardAndBackward) {
  Rng rng(202);
  for (size_t count : {size_t(1000), size_t(17), size_t(20000)}) {  // 20000: split across threads
    Vec x = random_vec(count, rng, 3.0);
    const float special[] = {12.0f, -12.0f, 0.0f, -0.0f, 5.5f, -5.5f, 1e-20f, -30.0f, 30.0f};
    for (size_t i = 0; i < std::size(special) && i < count; i++) x[i * count / std::size(special)] = special[i];
    const Vec dout = random_vec(count, rng);
    expect_same_everywhere("gelu count=" + std::to_string(count), [&](Backend& be) {
      Vec out(count), dx(count);
      be.gelu_forward(out.data(), x.data(), count);
      be.gelu_backward(dx.data(), x.data(), dout.data(), count);
      return Outs{{"out", out}, {"dx", dx}};
    });
  }
}

TEST(NumericsOps, RmsNormForwardAndBackward) {
  Rng rng(203);
  const int groups = 3, width = 40, ld = 127;
  for (int rows : {5, 200}) {
    const Vec x = random_vec(size_t(rows) * ld, rng), dout = random_vec(size_t(rows) * groups * width, rng);
    expect_same_everywhere("rmsnorm rows=" + std::to_string(rows), [&](Backend& be) {
      Vec out(dout.size()), rstd(size_t(rows) * groups), dx(x.size(), 0.0f);
      be.rmsnorm_forward(out.data(), rstd.data(), x.data(), ld, rows, groups, width);
      be.rmsnorm_backward(dx.data(), ld, dout.data(), out.data(), rstd.data(), rows, groups, width);
      return Outs{{"out", out}, {"rstd", rstd}, {"dx", dx}};
    });
  }
}

TEST(NumericsOps, SwishGateForwardAndBackward) {
  Rng rng(204);
  const int cols = 67, ld = 70;
  for (int rows : {3, 300}) {
    const Vec g = random_vec(size_t(rows) * ld, rng, 3.0), y = random_vec(size_t(rows) * cols, rng);
    const Vec dout = random_vec(y.size(), rng);
    expect_same_everywhere("swish_gate rows=" + std::to_string(rows), [&](Backend& be) {
      Vec out(y.size()), dg(g.size(), 0.0f), dy(y.size());
      be.swish_gate_forward(out.data(), g.data(), ld, y.data(), rows, cols);
      be.swish_gate_backward(dg.data(), dy.data(), ld, g.data(), y.data(), dout.data(), rows, cols);
      return Outs{{"out", out}, {"dg", dg}, {"dy", dy}};
    });
  }
}

TEST(NumericsOps, CrossEntropyAndFusedBackward) {
  Rng rng(205);
  const int V = 256;
  for (int rows : {9, 90}) {
    const Vec logits = random_vec(size_t(rows) * V, rng, 4.0);
    std::vector<int32_t> t(rows);
    for (auto& v : t) v = int32_t(rng.below(V));
    expect_same_everywhere("crossentropy rows=" + std::to_string(rows), [&](Backend& be) {
      Vec losses(rows), fused_losses(rows), l = logits, d = logits;
      be.crossentropy_forward(losses.data(), l.data(), t.data(), rows, V);
      be.crossentropy_fused_backward(fused_losses.data(), d.data(), t.data(), rows, V, 0.3f);
      return Outs{{"losses", losses}, {"fused losses", fused_losses}, {"dlogits", d}};
    });
  }
}

TEST(NumericsOps, RopeForwardAndInverse) {
  Rng rng(206);
  const int heads = 3, hd = 16, ld = 53, seq = 13;
  for (int rows : {40, 400}) {
    const Vec x = random_vec(size_t(rows) * ld, rng);
    expect_same_everywhere("rope rows=" + std::to_string(rows), [&](Backend& be) {
      Vec fwd = x, inv = x;
      be.rope(fwd.data(), ld, rows, heads, hd, seq, 12345, 0.125f, false);
      be.rope(inv.data(), ld, rows, heads, hd, seq, 12345, 0.125f, true);
      return Outs{{"forward", fwd}, {"inverse", inv}};
    });
  }
}

TEST(NumericsOps, EmbeddingForwardAndBackwardWithRepeatedIndices) {
  Rng rng(207);
  const int count = 1000, dim = 37, table_rows = 5;
  std::vector<int32_t> idx(count);
  for (auto& v : idx) v = int32_t(rng.below(table_rows));
  const Vec table = random_vec(size_t(table_rows) * dim, rng), dout = random_vec(size_t(count) * dim, rng);
  const Vec out0 = random_vec(size_t(count) * dim, rng), dtable0 = random_vec(table.size(), rng);
  expect_same_everywhere("embedding", [&](Backend& be) {
    Vec out(out0.size()), acc = out0, dtable = dtable0;
    be.embedding_forward(out.data(), table.data(), idx.data(), count, dim, false);
    be.embedding_forward(acc.data(), table.data(), idx.data(), count, dim, true);
    be.embedding_backward(dtable.data(), dout.data(), idx.data(), count, dim);
    return Outs{{"out", out}, {"accumulated out", acc}, {"dtable", dtable}};
  });
}

TEST(NumericsOps, BiasForwardBackwardAndAddInplace) {
  Rng rng(208);
  const int rows = 200, cols = 33;
  const Vec y0 = random_vec(size_t(rows) * cols, rng), bias = random_vec(cols, rng);
  const Vec dy = random_vec(y0.size(), rng), db0 = random_vec(cols, rng);
  expect_same_everywhere("bias", [&](Backend& be) {
    Vec y = y0, db = db0, sum = y0;
    be.add_bias(y.data(), bias.data(), rows, cols);
    be.bias_backward(db.data(), dy.data(), rows, cols);
    be.add_inplace(sum.data(), dy.data(), sum.size());
    return Outs{{"y + bias", y}, {"dbias", db}, {"y + dy", sum}};
  });
}

// ------------------------------------------------------------------ attention

TEST(NumericsAttention, ForwardBackwardAndDecode) {
  Rng rng(301);
  for (AttentionShape s : {AttentionShape{5, 8, 4, 32}, AttentionShape{3, 13, 2, 24}}) {
    const size_t rows = size_t(s.nseq) * s.S;
    const Vec qkv = random_vec(rows * 3 * s.D(), rng), dout = random_vec(rows * s.D(), rng);
    expect_same_everywhere("attention S=" + std::to_string(s.S) + " hd=" + std::to_string(s.hd), [&](Backend& be) {
      Vec out(rows * s.D()), probs(s.probs_size()), dqkv(qkv.size(), 7.0f);
      be.attention_forward(out.data(), probs.data(), qkv.data(), s);
      be.attention_backward(dqkv.data(), dout.data(), qkv.data(), probs.data(), s);
      return Outs{{"out", out}, {"probs", probs}, {"dqkv", dqkv}};
    });
  }
  const int n = 37, H = 4, hd = 32, ld = 3 * H * hd;
  const Vec q = random_vec(size_t(H) * hd, rng), cache = random_vec(size_t(n) * ld, rng);
  expect_same_everywhere("attention_decode n=37", [&](Backend& be) {
    Vec out(size_t(H) * hd);
    be.attention_decode(out.data(), q.data(), cache.data() + H * hd, cache.data() + 2 * H * hd, n, ld, H, hd);
    return Outs{{"out", out}};
  });
}

// Decoding query row i against the cached rows 0..i gives the bits of row i of the batched forward.
TEST(NumericsAttention, DecodeRowEqualsBatchedRow) {
  Rng rng(302);
  for (AttentionShape s : {AttentionShape{2, 37, 4, 32}, AttentionShape{3, 13, 2, 24}}) {
    const int D = s.D(), ld = 3 * D;
    const Vec qkv = random_vec(size_t(s.nseq) * s.S * ld, rng);
    expect_same_everywhere("attention decode vs forward S=" + std::to_string(s.S), [&](Backend& be) {
      Vec out(size_t(s.nseq) * s.S * D), probs(s.probs_size()), row(D);
      be.attention_forward(out.data(), probs.data(), qkv.data(), s);
      for (int seq = 0; seq < s.nseq; seq++)
        for (int i = 0; i < s.S; i++) {
          const float* base = qkv.data() + size_t(seq) * s.S * ld;
          be.attention_decode(row.data(), base + size_t(i) * ld, base + D, base + 2 * D, i + 1, ld, s.H, s.hd);
          expect_bitwise(rows_of(out, seq * s.S + i, 1, D), row, "sequence " + std::to_string(seq) + " row " + std::to_string(i));
        }
      return Outs{{"out", out}};
    });
  }
}

// ------------------------------------------------------------------ retention

using test::RetentionProblem;

TEST(NumericsRetention, ChunkwiseForwardAndBackward) {
  Rng rng(401);
  const RetentionProblem p(2, 100, 3, 16, 32, rng);
  const Vec dout = random_vec(p.out_size(), rng), dstate_out = random_vec(p.s.state_size(), rng);
  for (int chunk : {1, 7, 64}) {
    expect_same_everywhere("retention chunk=" + std::to_string(chunk), [&](Backend& be) {
      Vec o(p.out_size()), state(p.s.state_size()), saved(p.saved_size(chunk));
      be.retention_chunkwise_forward(o.data(), p.q.data(), p.k.data(), p.v.data(), p.gammas.data(), p.s, chunk, p.state0.data(),
                                     state.data(), saved.data());
      Vec dq(p.q.size(), 0.0f), dk(p.k.size(), 0.0f), dv(p.v.size(), 0.0f), dstate_in(p.s.state_size());
      be.retention_chunkwise_backward(dq.data(), dk.data(), dv.data(), dout.data(), p.q.data(), p.k.data(), p.v.data(),
                                      p.gammas.data(), p.s, chunk, saved.data(), dstate_out.data(), dstate_in.data());
      return Outs{{"o", o},   {"state_out", state}, {"saved_states", saved}, {"dq", dq},
                  {"dk", dk}, {"dv", dv},           {"dstate_in", dstate_in}};
    });
  }
}

// Recurrent retention over n positions in one call, and one position per call with the state carried.
TEST(NumericsRetention, RecurrentOneCallEqualsOnePositionAtATime) {
  Rng rng(402);
  const RetentionProblem p(2, 30, 3, 16, 32, rng);
  const RetentionShape& s = p.s;
  const int ldo = s.H * s.dv;
  expect_same_everywhere("retention recurrent", [&](Backend& be) {
    Vec o(p.out_size()), state = p.state0;
    be.retention_recurrent_forward(o.data(), p.q.data(), p.k.data(), p.v.data(), p.gammas.data(), s, state.data());
    // Step t: gather row b*n + t of every sequence b into a batch of B one-position sequences.
    RetentionShape one = s;
    one.n = 1;
    Vec o_steps(o.size()), state_steps = p.state0;
    Vec qt(size_t(s.B) * s.ld_qk), kt(qt.size()), vt(size_t(s.B) * s.ld_v), ot(size_t(s.B) * ldo);
    for (int t = 0; t < s.n; t++) {
      for (int b = 0; b < s.B; b++) {
        const size_t r = size_t(b) * s.n + t;
        std::copy_n(p.q.begin() + r * s.ld_qk, s.ld_qk, qt.begin() + size_t(b) * s.ld_qk);
        std::copy_n(p.k.begin() + r * s.ld_qk, s.ld_qk, kt.begin() + size_t(b) * s.ld_qk);
        std::copy_n(p.v.begin() + r * s.ld_v, s.ld_v, vt.begin() + size_t(b) * s.ld_v);
      }
      be.retention_recurrent_forward(ot.data(), qt.data(), kt.data(), vt.data(), p.gammas.data(), one, state_steps.data());
      for (int b = 0; b < s.B; b++) std::copy_n(ot.begin() + size_t(b) * ldo, ldo, o_steps.begin() + (size_t(b) * s.n + t) * ldo);
    }
    expect_bitwise(o, o_steps, "output: one call vs one position per call");
    expect_bitwise(state, state_steps, "final state: one call vs one position per call");
    return Outs{{"o", o}, {"state", state}};
  });
}

// ------------------------------------------------------------------ canonical reduction order

// The documented order: lane l sums x[i] for i % 16 == l in increasing i, then the tree 8, 4, 2, 1.
float canonical_sum(const float* x, int n) {
  float acc[kSumLanes] = {};
  for (int i = 0; i < n; i++) acc[i % kSumLanes] = acc[i % kSumLanes] + x[i];
  for (int w = kSumLanes / 2; w >= 1; w /= 2)
    for (int l = 0; l < w; l++) acc[l] = acc[l] + acc[l + w];
  return acc[0];
}

TEST(NumericsSum, KernelTableSumFollowsTheDocumentedOrder) {
  Rng rng(501);
  // Magnitudes from 2^-20 to 2^20, so a different order of additions gives different bits.
  Vec x(1000);
  for (auto& v : x) v = float(rng.normal() * std::ldexp(1.0, int(rng.below(41)) - 20));
  float sequential = 0.0f;
  for (float v : x) sequential += v;
  ASSERT_NE(sequential, canonical_sum(x.data(), 1000)) << "the input does not tell summation orders apart";
  for (CpuPath path : test::runnable_cpu_paths()) {
    const CpuKernels k = cpu_kernels(path);
    for (int n : {0, 1, 15, 16, 17, 100, 1000}) {
      SCOPED_TRACE(std::string(cpu_path_name(path)) + " n=" + std::to_string(n));
      expect_bitwise({canonical_sum(x.data(), n)}, {k.sum(x.data(), n)}, "sum");
    }
  }
}

}  // namespace
}  // namespace rb

namespace rb {
namespace {

// The host-side math every CPU must agree on (src/common/dmath.h) is also accurate: within a few
// ulp of libm over the ranges the model uses (RoPE angles up to ~1e5 rad, exp/log for sampling,
// initialisation and schedules).
TEST(NumericsHostMath, DmathIsWithinAFewUlpOfLibm) {
  double worst_sin = 0, worst_cos = 0, worst_exp = 0, worst_log = 0;
  for (int i = 0; i < 20000; i++) {
    const double x = (i - 10000) * 13.37 + i * 1e-3;  // |x| up to ~1.3e5
    worst_sin = std::max(worst_sin, std::fabs(dmath::sin(x) - std::sin(x)));
    worst_cos = std::max(worst_cos, std::fabs(dmath::cos(x) - std::cos(x)));
    const double y = (i - 10000) * 0.07;  // exp over [-700, 700]
    worst_exp = std::max(worst_exp, std::fabs(dmath::exp(y) - std::exp(y)) / std::exp(y));
    const double z = std::ldexp(1.0 + i / 20000.0, i % 2000 - 1000);
    worst_log = std::max(worst_log, std::fabs(dmath::log(z) - std::log(z)) / std::max(1.0, std::fabs(std::log(z))));
  }
  EXPECT_LE(worst_sin, 1e-11);  // the reduction's error grows with |x|: 1e5 rad keeps ~1e-11
  EXPECT_LE(worst_cos, 1e-11);
  EXPECT_LE(worst_exp, 4 * DBL_EPSILON);
  EXPECT_LE(worst_log, 4 * DBL_EPSILON);
  EXPECT_EQ(dmath::exp(0.0), 1.0);
  EXPECT_EQ(dmath::log(1.0), 0.0);
  EXPECT_TRUE(std::isnan(dmath::log(-1.0)));
  EXPECT_EQ(dmath::exp(-1000.0), 0.0);
}

// exp_many (the sampler's) is bitwise exp, value by value: across the range, at the halfway points
// where the rounding of x / ln 2 decides, near the limits where exp() takes its other branches,
// and for NaN and infinities, at every block length.
TEST(NumericsHostMath, ExpManyIsBitwiseExp) {
  std::vector<double> xs = {0.0,   -0.0,   1.0,    -1.0, 690.0, -690.0,   690.5,     -690.5, 700.0,  -700.0,  709.7,
                            709.8, -745.0, -745.2, -1e9, 1e9,   HUGE_VAL, -HUGE_VAL, NAN,    1e-300, -1e-300, 5e-324};
  for (int k = -1000; k <= 1000; k++) {
    const double half = (k + 0.5) * 0.69314718055994530942;  // x / ln 2 lands near k + 1/2
    xs.push_back(half);
    xs.push_back(std::nextafter(half, 0.0));
    xs.push_back(std::nextafter(half, 1e9));
  }
  uint64_t state = 12345;
  for (int i = 0; i < 20000; i++) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    xs.push_back((double(state >> 11) / 9007199254740992.0 - 0.7) * 1500.0);  // [-1050, 750]
  }
  for (int n : {1, 7, 8, 9, 256, int(xs.size())}) {
    std::vector<double> out(size_t(n), -1.0);
    dmath::exp_many(xs.data(), out.data(), n);
    for (int i = 0; i < n; i++) {
      const double want = dmath::exp(xs[size_t(i)]);
      if (std::isnan(want)) {
        EXPECT_TRUE(std::isnan(out[size_t(i)])) << "x = " << xs[size_t(i)];
      } else {
        EXPECT_EQ(std::memcmp(&out[size_t(i)], &want, sizeof want), 0)
            << "x = " << xs[size_t(i)] << ": " << out[size_t(i)] << " vs " << want;
      }
    }
  }
}

}  // namespace
}  // namespace rb
