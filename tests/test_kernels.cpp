// Every CPU kernel against its scalar reference (forward) and finite differences (backward).
#include <gtest/gtest.h>

#include "kernels/backend.h"
#include "tests/reference/reference.h"
#include "tests/test_util.h"

namespace rb {
namespace {

using test::kEps;
using test::random_vec;
using test::rel_error;

class Kernels : public ::testing::Test {
 protected:
  std::unique_ptr<Backend> be = make_cpu_backend(2);
  Rng rng{42};
};

TEST_F(Kernels, GemmMatchesReferenceAllTransposes) {
  const int shapes[][3] = {{1, 1, 1}, {7, 13, 5}, {64, 96, 128}, {33, 257, 70}};
  for (auto [M, N, K] : shapes)
    for (int ta = 0; ta < 2; ta++)
      for (int tb = 0; tb < 2; tb++) {
        auto A = random_vec(size_t(M) * K, rng), B = random_vec(size_t(K) * N, rng);
        auto C = random_vec(size_t(M) * N, rng), Cref = C;
        const int lda = ta ? M : K, ldb = tb ? K : N;
        be->gemm(ta, tb, M, N, K, 0.5f, A.data(), lda, B.data(), ldb, 1.0f, C.data(), N);
        ref::gemm(ta, tb, M, N, K, 0.5f, A.data(), lda, B.data(), ldb, 1.0f, Cref.data(), N);
        EXPECT_LE(rel_error(C, Cref), 2 * K * kEps) << M << "x" << N << "x" << K << " ta=" << ta << " tb=" << tb;
      }
}

// Shapes that cross every blocking boundary of the AVX-512 kernel (MR 12, NR 32, KC 256, MC 192,
// NC 1536), padded leading dimensions, alpha/beta, and beta = 0 over NaN (BLAS: C is not read).
TEST_F(Kernels, GemmBlockedShapesStridesAndBetaZero) {
  const int shapes[][3] = {{13, 33, 257}, {200, 1600, 40}, {385, 64, 520}, {2, 3000, 3}, {25, 31, 1}};
  for (auto [M, N, K] : shapes)
    for (int ta = 0; ta < 2; ta++)
      for (int tb = 0; tb < 2; tb++) {
        const int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 5, ldc = N + 7;
        auto A = random_vec(size_t(ta ? K : M) * lda, rng), B = random_vec(size_t(tb ? N : K) * ldb, rng);
        auto C = random_vec(size_t(M) * ldc, rng), Cref = C;
        be->gemm(ta, tb, M, N, K, -0.75f, A.data(), lda, B.data(), ldb, 0.5f, C.data(), ldc);
        ref::gemm(ta, tb, M, N, K, -0.75f, A.data(), lda, B.data(), ldb, 0.5f, Cref.data(), ldc);
        EXPECT_LE(rel_error(C, Cref), 2 * K * kEps) << M << "x" << N << "x" << K << " ta=" << ta << " tb=" << tb;
        std::vector<float> nan_c(size_t(M) * ldc, NAN), zero_ref(size_t(M) * ldc, NAN);
        be->gemm(ta, tb, M, N, K, 1.0f, A.data(), lda, B.data(), ldb, 0.0f, nan_c.data(), ldc);
        ref::gemm(ta, tb, M, N, K, 1.0f, A.data(), lda, B.data(), ldb, 0.0f, zero_ref.data(), ldc);
        for (int i = 0; i < M; i++)
          for (int j = 0; j < ldc; j++) {
            const float got = nan_c[size_t(i) * ldc + j];
            if (j < N)
              ASSERT_FALSE(std::isnan(got)) << "beta = 0 must not read C";
            else
              ASSERT_TRUE(std::isnan(got)) << "wrote outside the N columns at " << i << "," << j;
          }
        EXPECT_LE(rel_error(nan_c, zero_ref), 2 * K * kEps);
      }
}

TEST_F(Kernels, GemmDoesNotDependOnTheThreadCount) {
  const int M = 1000, N = 300, K = 600;
  auto A = random_vec(size_t(M) * K, rng), B = random_vec(size_t(N) * K, rng);
  std::vector<float> c1(size_t(M) * N), c2(c1.size());
  make_cpu_backend(1)->gemm(false, true, M, N, K, 1.0f, A.data(), K, B.data(), K, 0.0f, c1.data(), N);
  make_cpu_backend(2)->gemm(false, true, M, N, K, 1.0f, A.data(), K, B.data(), K, 0.0f, c2.data(), N);
  EXPECT_EQ(c1, c2);
}

TEST_F(Kernels, LinearBackwardMatchesFiniteDifferences) {
  const int rows = 6, in = 9, out = 5;
  auto x = random_vec(size_t(rows) * in, rng), W = random_vec(size_t(out) * in, rng), b = random_vec(out, rng);
  auto r = random_vec(size_t(rows) * out, rng);
  std::vector<float> y(r.size()), dx(x.size(), 0.0f), dW(W.size(), 0.5f), db(out, 0.25f);
  be->linear_backward(dx.data(), dW.data(), db.data(), r.data(), x.data(), W.data(), rows, in, out);
  for (auto& v : dW) v -= 0.5f;  // parameter gradients accumulate: remove the starting value
  for (auto& v : db) v -= 0.25f;
  auto loss = [&] {
    be->linear_forward(y.data(), x.data(), W.data(), b.data(), rows, in, out);
    return test::dot(y, r);
  };
  test::expect_gradient("linear dx", x, dx, loss, 1e-2, 1e-3, 1e-4);
  test::expect_gradient("linear dW", W, dW, loss, 1e-2, 1e-3, 1e-4);
  test::expect_gradient("linear db", b, db, loss, 1e-2, 1e-3, 1e-4);
}

TEST_F(Kernels, LayerNormForwardAndBackward) {
  for (int C : {5, 64, 130}) {
    const int rows = 67;
    auto x = random_vec(size_t(rows) * C, rng, 2.0), w = random_vec(C, rng), b = random_vec(C, rng);
    for (auto& v : x) v += 3.0f;  // a non-zero mean exercises the centring
    std::vector<float> out(x.size()), ref_out(x.size()), mean(rows), rstd(rows);
    be->layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), rows, C);
    ref::layernorm(ref_out.data(), x.data(), w.data(), b.data(), rows, C);
    EXPECT_LE(rel_error(out, ref_out), 16 * kEps) << "C=" << C;

    auto r = random_vec(out.size(), rng);
    std::vector<float> dx(x.size(), 0.0f), dw(C, 0.0f), db(C, 0.0f);
    be->layernorm_backward(dx.data(), dw.data(), db.data(), r.data(), x.data(), w.data(), mean.data(), rstd.data(), rows, C);
    auto loss = [&] {
      be->layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), rows, C);
      return test::dot(out, r);
    };
    test::expect_gradient("layernorm dx", x, dx, loss, 1e-2, 1e-2, 1e-3, {0, 1, 7, size_t(C) + 3, x.size() - 1});
    test::expect_gradient("layernorm dw", w, dw, loss, 1e-2, 1e-2, 1e-3);
    test::expect_gradient("layernorm db", b, db, loss, 1e-2, 1e-2, 1e-3);
  }
}

TEST_F(Kernels, GeluMatchesErfFormAndItsDerivative) {
  std::vector<float> x;
  for (float v = -9.0f; v <= 9.0f; v += 0.01f) x.push_back(v);
  for (float v : {0.0f, 1e-20f, -1e-20f, 30.0f, -30.0f}) x.push_back(v);
  std::vector<float> out(x.size());
  be->gelu_forward(out.data(), x.data(), x.size());
  for (size_t i = 0; i < x.size(); i++)
    ASSERT_NEAR(out[i], ref::gelu(x[i]), 4 * kEps * std::max(1.0f, std::fabs(x[i]))) << "x=" << x[i];
  auto xs = random_vec(300, rng, 2.0), r = random_vec(300, rng);
  std::vector<float> dx(xs.size()), o(xs.size());
  be->gelu_backward(dx.data(), xs.data(), r.data(), xs.size());
  auto loss = [&] {
    be->gelu_forward(o.data(), xs.data(), xs.size());
    return test::dot(o, r);
  };
  test::expect_gradient("gelu", xs, dx, loss, 1e-2, 1e-2, 1e-3);
}

TEST_F(Kernels, RmsNormPerHead) {
  const int rows = 9, groups = 3, width = 10, ld = 45;  // ld > groups*width: strided input
  auto x = random_vec(size_t(rows) * ld, rng);
  std::vector<float> out(size_t(rows) * groups * width), ref_out(out.size()), rstd(rows * groups);
  be->rmsnorm_forward(out.data(), rstd.data(), x.data(), ld, rows, groups, width);
  ref::rmsnorm(ref_out.data(), x.data(), ld, rows, groups, width);
  EXPECT_LE(rel_error(out, ref_out), 8 * kEps);
  auto r = random_vec(out.size(), rng);
  std::vector<float> dx(x.size(), 0.0f);
  be->rmsnorm_backward(dx.data(), ld, r.data(), out.data(), rstd.data(), rows, groups, width);
  auto loss = [&] {
    be->rmsnorm_forward(out.data(), rstd.data(), x.data(), ld, rows, groups, width);
    return test::dot(out, r);
  };
  std::vector<size_t> idx;
  for (int row = 0; row < rows; row++)
    for (int c = 0; c < groups * width; c++) idx.push_back(size_t(row) * ld + c);
  test::expect_gradient("rmsnorm", x, dx, loss, 1e-2, 1e-2, 1e-3, idx);
}

TEST_F(Kernels, SwishGate) {
  const int rows = 11, cols = 17, ld = 20;
  auto g = random_vec(size_t(rows) * ld, rng, 2.0), y = random_vec(size_t(rows) * cols, rng);
  std::vector<float> out(y.size()), ref_out(y.size());
  be->swish_gate_forward(out.data(), g.data(), ld, y.data(), rows, cols);
  ref::swish_gate(ref_out.data(), g.data(), ld, y.data(), rows, cols);
  EXPECT_LE(rel_error(out, ref_out), 8 * kEps);
  auto r = random_vec(out.size(), rng);
  std::vector<float> dg(g.size(), 0.0f), dy(y.size());
  be->swish_gate_backward(dg.data(), dy.data(), ld, g.data(), y.data(), r.data(), rows, cols);
  auto loss = [&] {
    be->swish_gate_forward(out.data(), g.data(), ld, y.data(), rows, cols);
    return test::dot(out, r);
  };
  std::vector<size_t> idx;
  for (int row = 0; row < rows; row++)
    for (int c = 0; c < cols; c++) idx.push_back(size_t(row) * ld + c);
  test::expect_gradient("swish dg", g, dg, loss, 1e-2, 1e-2, 1e-3, idx);
  test::expect_gradient("swish dy", y, dy, loss, 1e-2, 1e-2, 1e-3);
}

TEST_F(Kernels, RopeMatchesReferenceAndInverseIsTranspose) {
  const int rows = 40, heads = 3, hd = 8, ld = 30, seq = 13;
  const int64_t pos0 = 1000;
  auto x = random_vec(size_t(rows) * ld, rng), ref_x = x;
  be->rope(x.data(), ld, rows, heads, hd, seq, pos0, 0.5f, false);
  ref::rope(ref_x.data(), ld, rows, heads, hd, seq, pos0, 0.5f);
  EXPECT_LE(rel_error(x, ref_x), 64 * kEps);  // angles up to ~1e3 rad: cos/sin rounding
  // Backward: <R x, r> = <x, R^T r> for every x, r.
  auto a = random_vec(x.size(), rng), r = random_vec(x.size(), rng), Ra = a, RTr = r;
  be->rope(Ra.data(), ld, rows, heads, hd, seq, pos0, 0.5f, false);
  be->rope(RTr.data(), ld, rows, heads, hd, seq, pos0, 0.5f, true);
  EXPECT_NEAR(test::dot(Ra, r), test::dot(a, RTr), 1e-4 * std::sqrt(double(x.size())));
}

TEST_F(Kernels, CrossEntropyAndFusedGradient) {
  const int rows = 13, V = 256;
  auto logits = random_vec(size_t(rows) * V, rng, 3.0);
  std::vector<int32_t> t(rows);
  for (auto& v : t) v = int32_t(rng.below(V));
  std::vector<float> loss(rows), ref_loss(rows);
  be->crossentropy_forward(loss.data(), logits.data(), t.data(), rows, V);
  ref::crossentropy(ref_loss.data(), logits.data(), t.data(), rows, V);
  EXPECT_LE(rel_error(loss, ref_loss), 16 * kEps);
  auto d = logits;
  std::vector<float> fused_loss(rows);
  be->crossentropy_fused_backward(fused_loss.data(), d.data(), t.data(), rows, V, 0.25f);
  EXPECT_LE(rel_error(fused_loss, ref_loss), 16 * kEps);
  auto total = [&] {
    be->crossentropy_forward(loss.data(), logits.data(), t.data(), rows, V);
    double s = 0;
    for (float v : loss) s += v;
    return 0.25 * s;
  };
  test::expect_gradient("cross-entropy", logits, d, total, 1e-2, 1e-2, 1e-4,
                        {0, 5, size_t(t[0]), size_t(V + t[1]), logits.size() - 1});
}

TEST_F(Kernels, AttentionForwardAndBackward) {
  for (int S : {1, 8, 37}) {
    AttentionShape s{3, S, 2, 8};
    auto qkv = random_vec(size_t(s.nseq) * S * 3 * s.D(), rng);
    std::vector<float> out(size_t(s.nseq) * S * s.D()), ref_out(out.size()), probs(s.probs_size());
    be->attention_forward(out.data(), probs.data(), qkv.data(), s);
    ref::attention(ref_out.data(), qkv.data(), s);
    EXPECT_LE(rel_error(out, ref_out), 16 * kEps) << "S=" << S;
    auto r = random_vec(out.size(), rng);
    std::vector<float> dqkv(qkv.size(), 7.0f);  // garbage: backward must overwrite all of it
    be->attention_backward(dqkv.data(), r.data(), qkv.data(), probs.data(), s);
    auto loss = [&] {
      be->attention_forward(out.data(), probs.data(), qkv.data(), s);
      return test::dot(out, r);
    };
    std::vector<size_t> idx;
    for (size_t i = 0; i < qkv.size(); i += 7) idx.push_back(i);
    test::expect_gradient("attention", qkv, dqkv, loss, 1e-2, 1e-2, 1e-3, idx);
  }
}

TEST_F(Kernels, EmbeddingBackwardHandlesRepeatedIndices) {
  const int count = 300, dim = 37, rows = 5;
  std::vector<int32_t> idx(count);
  for (auto& v : idx) v = int32_t(rng.below(rows));
  auto dout = random_vec(size_t(count) * dim, rng), table = random_vec(size_t(rows) * dim, rng);
  std::vector<float> dtable(size_t(rows) * dim, 1.0f), expect(dtable);
  be->embedding_backward(dtable.data(), dout.data(), idx.data(), count, dim);
  for (int i = 0; i < count; i++)
    for (int c = 0; c < dim; c++) expect[size_t(idx[i]) * dim + c] += dout[size_t(i) * dim + c];
  EXPECT_LE(rel_error(dtable, expect), 4 * kEps * count);
  std::vector<float> out(size_t(count) * dim, 1.0f);
  be->embedding_forward(out.data(), table.data(), idx.data(), count, dim, true);
  for (int i = 0; i < count; i++) ASSERT_EQ(out[size_t(i) * dim + 3], 1.0f + table[size_t(idx[i]) * dim + 3]);
}

TEST_F(Kernels, BiasGradientIsColumnSumAndThreadIndependent) {
  const int rows = 1000, cols = 19;
  auto dy = random_vec(size_t(rows) * cols, rng);
  std::vector<float> db(cols, 0.5f), db1(cols, 0.5f);
  be->bias_backward(db.data(), dy.data(), rows, cols);
  make_cpu_backend(1)->bias_backward(db1.data(), dy.data(), rows, cols);
  for (int c = 0; c < cols; c++) {
    double s = 0.5;
    for (int r = 0; r < rows; r++) s += dy[size_t(r) * cols + c];
    EXPECT_NEAR(db[c], s, 1e-4);
    EXPECT_EQ(db[c], db1[c]) << "column " << c << " differs between 2 threads and 1";
  }
}

}  // namespace
}  // namespace rb
