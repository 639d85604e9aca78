// The three retention forms agree: parallel (reference, double), recurrent (reference and fast)
// and chunkwise (fast, chunk sizes 1, 7, 64, and >= n, which is the parallel form), on outputs,
// final states and gradients, with a non-zero initial state and ragged last chunks.
#include <gtest/gtest.h>

#include "kernels/backend.h"
#include "tests/reference/reference.h"
#include "tests/test_util.h"

namespace rb {
namespace {

using test::random_vec;
using test::rel_error;

using Problem = test::RetentionProblem;

constexpr double kFormTol = 1e-5;  // the bound on relative error between forms

TEST(Retention, GammaIsOneMinusTwoToMinusFiveMinusH) {
  EXPECT_FLOAT_EQ(retention_gamma(0), 1.0f - 1.0f / 32);
  EXPECT_FLOAT_EQ(retention_gamma(3), 1.0f - 1.0f / 256);
}

TEST(Retention, AllFormsAgreeOnOutputAndFinalState) {
  auto be = make_cpu_backend(2);
  Rng rng(3);
  for (int n : {1, 37, 100, 130}) {
    Problem p(2, n, 3, 8, 16, rng);
    std::vector<float> o_par(p.out_size()), s_par(p.s.state_size());
    ref::retention_parallel(o_par.data(), p.q.data(), p.k.data(), p.v.data(), p.gammas.data(), p.s, p.state0.data(),
                            s_par.data());

    std::vector<float> o_rec(p.out_size()), s_rec(p.s.state_size());
    ref::retention_recurrent(o_rec.data(), p.q.data(), p.k.data(), p.v.data(), p.gammas.data(), p.s, p.state0.data(),
                             s_rec.data());
    EXPECT_LE(rel_error(o_rec, o_par), kFormTol) << "reference recurrent n=" << n;
    EXPECT_LE(rel_error(s_rec, s_par), kFormTol) << "reference recurrent state n=" << n;

    std::vector<float> o_frec(p.out_size()), s_frec = p.state0;
    be->retention_recurrent_forward(o_frec.data(), p.q.data(), p.k.data(), p.v.data(), p.gammas.data(), p.s, s_frec.data());
    EXPECT_LE(rel_error(o_frec, o_par), kFormTol) << "fast recurrent n=" << n;
    EXPECT_LE(rel_error(s_frec, s_par), kFormTol) << "fast recurrent state n=" << n;

    for (int chunk : {1, 7, 64, 1 << 20}) {
      std::vector<float> o(p.out_size()), st(p.s.state_size());
      be->retention_chunkwise_forward(o.data(), p.q.data(), p.k.data(), p.v.data(), p.gammas.data(), p.s, chunk, p.state0.data(),
                                      st.data(), nullptr);
      EXPECT_LE(rel_error(o, o_par), kFormTol) << "chunkwise n=" << n << " chunk=" << chunk;
      EXPECT_LE(rel_error(st, s_par), kFormTol) << "chunkwise state n=" << n << " chunk=" << chunk;
    }
  }
}

TEST(Retention, ZeroInitialStateIsTheDefault) {
  auto be = make_cpu_backend(2);
  Rng rng(4);
  Problem p(1, 20, 2, 4, 8, rng);
  std::vector<float> zeros(p.s.state_size(), 0.0f), a(p.out_size()), b(p.out_size());
  be->retention_chunkwise_forward(a.data(), p.q.data(), p.k.data(), p.v.data(), p.gammas.data(), p.s, 7, nullptr, nullptr,
                                  nullptr);
  be->retention_chunkwise_forward(b.data(), p.q.data(), p.k.data(), p.v.data(), p.gammas.data(), p.s, 7, zeros.data(), nullptr,
                                  nullptr);
  EXPECT_EQ(a, b);
}

TEST(Retention, SplittingASequenceAndCarryingTheStateChangesNothing) {
  auto be = make_cpu_backend(2);
  Rng rng(5);
  Problem p(1, 50, 2, 8, 8, rng);
  std::vector<float> whole(p.out_size()), s_whole(p.s.state_size());
  be->retention_chunkwise_forward(whole.data(), p.q.data(), p.k.data(), p.v.data(), p.gammas.data(), p.s, 16, p.state0.data(),
                                  s_whole.data(), nullptr);
  // First 30 positions, then the remaining 20 starting from the returned state.
  RetentionShape a = p.s, b = p.s;
  a.n = 30;
  b.n = 20;
  std::vector<float> parts(p.out_size()), mid(p.s.state_size()), end(p.s.state_size());
  be->retention_chunkwise_forward(parts.data(), p.q.data(), p.k.data(), p.v.data(), p.gammas.data(), a, 16, p.state0.data(),
                                  mid.data(), nullptr);
  const size_t off_qk = size_t(30) * p.s.ld_qk, off_v = size_t(30) * p.s.ld_v, off_o = size_t(30) * p.s.H * p.s.dv;
  be->retention_recurrent_forward(parts.data() + off_o, p.q.data() + off_qk, p.k.data() + off_qk, p.v.data() + off_v,
                                  p.gammas.data(), b, (end = mid).data());
  EXPECT_LE(rel_error(parts, whole), kFormTol);
  EXPECT_LE(rel_error(end, s_whole), kFormTol);
}

TEST(Retention, ChunkwiseBackwardEqualsParallelBackward) {
  auto be = make_cpu_backend(2);
  Rng rng(6);
  for (int n : {1, 37, 130}) {
    Problem p(2, n, 2, 8, 16, rng);
    auto dout = random_vec(p.out_size(), rng);
    auto dstate_out = random_vec(p.s.state_size(), rng);
    std::vector<float> dq_ref(p.q.size(), 0.0f), dk_ref(p.k.size(), 0.0f), dv_ref(p.v.size(), 0.0f), ds_ref(p.s.state_size());
    ref::retention_parallel_backward(dq_ref.data(), dk_ref.data(), dv_ref.data(), ds_ref.data(), dout.data(), dstate_out.data(),
                                     p.q.data(), p.k.data(), p.v.data(), p.gammas.data(), p.s, p.state0.data());
    for (int chunk : {1, 7, 64, 1 << 20}) {
      const int C = std::min(chunk, n), nchunks = (n + C - 1) / C;
      std::vector<float> o(p.out_size()), saved(size_t(p.s.B) * p.s.H * nchunks * p.s.dk * p.s.dv);
      be->retention_chunkwise_forward(o.data(), p.q.data(), p.k.data(), p.v.data(), p.gammas.data(), p.s, chunk, p.state0.data(),
                                      nullptr, saved.data());
      std::vector<float> dq(p.q.size(), 0.0f), dk(p.k.size(), 0.0f), dv(p.v.size(), 0.0f), ds(p.s.state_size());
      be->retention_chunkwise_backward(dq.data(), dk.data(), dv.data(), dout.data(), p.q.data(), p.k.data(), p.v.data(),
                                       p.gammas.data(), p.s, chunk, saved.data(), dstate_out.data(), ds.data());
      EXPECT_LE(rel_error(dq, dq_ref), kFormTol) << "dq n=" << n << " chunk=" << chunk;
      EXPECT_LE(rel_error(dk, dk_ref), kFormTol) << "dk n=" << n << " chunk=" << chunk;
      EXPECT_LE(rel_error(dv, dv_ref), kFormTol) << "dv n=" << n << " chunk=" << chunk;
      EXPECT_LE(rel_error(ds, ds_ref), kFormTol) << "dstate n=" << n << " chunk=" << chunk;
    }
  }
}

// Finite differences through the fast chunkwise form: loss = <o, r> + <final state, r_s>.
TEST(Retention, ChunkwiseBackwardMatchesFiniteDifferences) {
  auto be = make_cpu_backend(2);
  Rng rng(8);
  Problem p(1, 23, 2, 4, 6, rng);
  const int chunk = 5, nchunks = 5;
  auto r = random_vec(p.out_size(), rng), rs = random_vec(p.s.state_size(), rng);
  std::vector<float> o(p.out_size()), st(p.s.state_size()), saved(size_t(p.s.H) * nchunks * p.s.dk * p.s.dv);
  auto loss = [&] {
    be->retention_chunkwise_forward(o.data(), p.q.data(), p.k.data(), p.v.data(), p.gammas.data(), p.s, chunk, p.state0.data(),
                                    st.data(), saved.data());
    return test::dot(o, r) + test::dot(st, rs);
  };
  loss();
  std::vector<float> dq(p.q.size(), 0.0f), dk(p.k.size(), 0.0f), dv(p.v.size(), 0.0f), ds(p.s.state_size());
  be->retention_chunkwise_backward(dq.data(), dk.data(), dv.data(), r.data(), p.q.data(), p.k.data(), p.v.data(), p.gammas.data(),
                                   p.s, chunk, saved.data(), rs.data(), ds.data());
  auto used = [&](const std::vector<float>& x, int ld, int width) {  // skip row padding
    std::vector<size_t> idx;
    for (size_t i = 0; i < x.size(); i++)
      if (int(i % ld) < width) idx.push_back(i);
    return idx;
  };
  test::expect_gradient("retention dq", p.q, dq, loss, 1e-2, 1e-2, 1e-3, used(p.q, p.s.ld_qk, p.s.H * p.s.dk));
  test::expect_gradient("retention dk", p.k, dk, loss, 1e-2, 1e-2, 1e-3, used(p.k, p.s.ld_qk, p.s.H * p.s.dk));
  test::expect_gradient("retention dv", p.v, dv, loss, 1e-2, 1e-2, 1e-3, used(p.v, p.s.ld_v, p.s.H * p.s.dv));
  test::expect_gradient("retention dstate0", p.state0, ds, loss, 1e-2, 1e-2, 1e-3);
}

}  // namespace
}  // namespace rb
