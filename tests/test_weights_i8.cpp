// int8 products for inference (backend.h, gemm_i8): 8-bit weights times 7-bit activations summed
// exactly in integers, then one fixed fp32 epilogue. The same bits on every CPU path, thread count
// and column range; the integers are those of a plain loop over the quantized values; the result
// is close to the fp32 product of the unquantized values.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "codecs/rbz.h"
#include "kernels/cpu/cpu_backend.h"
#include "src/common/errors.h"
#include "src/common/rng.h"
#include "src/model/model.h"
#include "tests/test_util.h"

namespace rb {
namespace {

struct I8Weights {
  std::vector<int8_t> panels;
  std::vector<float> scale;
  std::vector<int32_t> colsum;
};

I8Weights pack(const std::vector<float>& W, int N, int K) {  // W [N, K]
  I8Weights w{std::vector<int8_t>(i8_panel_bytes(N, K)), std::vector<float>(size_t(N)), std::vector<int32_t>(size_t(N))};
  pack_i8_panels(W.data(), N, K, w.panels.data(), w.scale.data(), w.colsum.data());
  return w;
}

// Column j's int8 value at k, read back from the panels.
int i8_at(const I8Weights& w, int N, int K, int j, int k) {
  const int K4 = (K + 3) / 4, p0 = j / kI8Panel * kI8Panel, width = std::min(kI8Panel, N - p0);
  return w.panels[size_t(p0) * K4 * 4 + (size_t(k / 4) * width + (j - p0)) * 4 + k % 4];
}

TEST(I8Weights, QuantizedRowsAndPanelsKeepTheirRangesAndRoundTrip) {
  Rng rng(21);
  const int K = 70, ldq = 72;
  std::vector<float> x = test::random_vec(size_t(K), rng);
  x[13] = -4.0f;  // the largest magnitude: exactly -63 steps
  std::vector<uint8_t> q(ldq, 0);
  float s = 0;
  quantize_row_u7(x.data(), K, q.data(), &s);
  EXPECT_EQ(s, 4.0f / 63.0f);
  EXPECT_EQ(q[13], kI8ActivationOffset - 63);
  for (int k = 0; k < K; k++) {
    ASSERT_GE(q[k], 1);
    ASSERT_LE(q[k], 127);
    EXPECT_LE(std::fabs((int(q[k]) - kI8ActivationOffset) * s - x[k]), 0.5f * s * 1.0001f) << k;
  }
  EXPECT_EQ(q[70], kI8ActivationOffset);  // padding to a multiple of 4 holds zero
  EXPECT_EQ(q[71], kI8ActivationOffset);
  std::vector<float> zeros(8, 0.0f);
  quantize_row_u7(zeros.data(), 8, q.data(), &s);
  EXPECT_EQ(s, 1.0f);
  for (int k = 0; k < 8; k++) EXPECT_EQ(q[k], kI8ActivationOffset);

  const int N = 300;  // panels of 128, 128 and 44 columns
  std::vector<float> W = test::random_vec(size_t(N) * K, rng);
  const I8Weights w = pack(W, N, K);
  for (int j = 0; j < N; j++) {
    int32_t sum = 0, biggest = 0;
    for (int k = 0; k < K; k++) {
      const int v = i8_at(w, N, K, j, k);
      sum += v;
      biggest = std::max(biggest, std::abs(v));
      ASSERT_LE(std::fabs(v * w.scale[j] - W[size_t(j) * K + k]), 0.5f * w.scale[j] * 1.0001f) << j << " " << k;
    }
    EXPECT_EQ(biggest, 127) << j;  // each column's scale is its own largest magnitude
    EXPECT_EQ(sum, w.colsum[j]) << j;
    for (int k = K; k < 72; k++) EXPECT_EQ(i8_at(w, N, K, j, k), 0);
  }
}

// Each path's vectorised quantization gives the definition's bytes and scales, whatever the row
// length (full vectors and tails), on rows with exact ties (x / s = k + 0.5 rounds to even),
// values just past the clamp, signed zeros, NaN and infinities, across 1 and 2 threads.
TEST(I8Weights, EveryPathQuantizesRowsLikeTheDefinition) {
  Rng rng(23);
  std::vector<std::vector<float>> rows;
  for (int K : {1, 3, 4, 7, 8, 15, 16, 17, 31, 32, 33, 70, 128, 512, 515}) rows.push_back(test::random_vec(size_t(K), rng));
  std::vector<float> ties(64);
  for (int k = 0; k < 64; k++) ties[size_t(k)] = (float(k) - 31.5f) * (k % 2 ? 1.0f : -1.0f);  // all halves
  ties[0] = 63.0f, ties[5] = 62.5f;  // s = 1: every value an exact tie or an integer
  rows.push_back(ties);
  std::vector<float> odd = test::random_vec(40, rng);
  odd[3] = std::nanf(""), odd[17] = -0.0f, odd[39] = std::nanf("");
  rows.push_back(odd);
  std::vector<float> inf = test::random_vec(21, rng);
  inf[2] = INFINITY, inf[20] = -INFINITY;
  rows.push_back(inf);
  rows.push_back(std::vector<float>(19, 0.0f));
  rows.push_back(std::vector<float>(5, std::nanf("")));
  for (const std::vector<float>& x : rows) {
    const int K = int(x.size()), ldq = (K + 3) / 4 * 4, R = 3;
    std::vector<float> block;  // the row three times, strided, for the batched form
    for (int r = 0; r < R; r++) block.insert(block.end(), x.begin(), x.end());
    std::vector<uint8_t> want(static_cast<size_t>(ldq), 0);
    float want_scale = 0;
    quantize_row_u7(x.data(), K, want.data(), &want_scale);
    for (int k = 0; k < K; k++) ASSERT_TRUE(want[size_t(k)] >= 1 && want[size_t(k)] <= 127) << "K " << K << " k " << k;
    for (CpuPath path : test::runnable_cpu_paths())
      for (int threads : {1, 2}) {
        auto be = make_cpu_backend(threads, path);
        std::vector<uint8_t> got(size_t(R) * ldq, 0xEE);
        std::vector<float> scale(static_cast<size_t>(R), -1.0f);
        be->quantize_rows_u7(block.data(), R, K, K, got.data(), ldq, scale.data());
        for (int r = 0; r < R; r++) {
          EXPECT_EQ(std::memcmp(&scale[size_t(r)], &want_scale, sizeof want_scale), 0) << cpu_path_name(path) << " K " << K;
          EXPECT_EQ(std::memcmp(got.data() + size_t(r) * ldq, want.data(), size_t(ldq)), 0)
              << cpu_path_name(path) << " " << threads << " threads, K " << K << " row " << r;
        }
      }
  }
  // The definition itself rounds ties to even (s = 1: pure rounding checks).
  std::vector<float> t = {63.0f, 62.5f, -0.5f, 0.5f, 1.5f, -2.5f, -62.5f};
  std::vector<uint8_t> q(8);
  float s = 0;
  quantize_row_u7(t.data(), int(t.size()), q.data(), &s);
  EXPECT_EQ(s, 1.0f);
  const int expect[] = {63, 62, 0, 0, 2, -2, -62};
  for (size_t k = 0; k < t.size(); k++) EXPECT_EQ(int(q[k]) - kI8ActivationOffset, expect[k]) << k;
}

TEST(I8Weights, ProductIsTheExactIntegerSumThenTheEpilogueOnEveryPathThreadCountAndColumnRange) {
  Rng rng(22);
  for (const auto& [M, N, K] : {std::tuple{1, 300, 70}, std::tuple{3, 129, 40}, std::tuple{1, 1536, 256}, std::tuple{2, 256, 512},
                                std::tuple{5, 77, 9}, std::tuple{7, 300, 64}}) {
    const int ldq = (K + 3) / 4 * 4;
    std::vector<float> A = test::random_vec(size_t(M) * K, rng), W = test::random_vec(size_t(N) * K, rng);
    const std::vector<float> bias = test::random_vec(size_t(N), rng), C0 = test::random_vec(size_t(M) * N, rng);
    const I8Weights w = pack(W, N, K);
    std::vector<uint8_t> Aq(size_t(M) * ldq);
    std::vector<float> a_scale(static_cast<size_t>(M));
    for (int i = 0; i < M; i++) quantize_row_u7(A.data() + size_t(i) * K, K, Aq.data() + size_t(i) * ldq, &a_scale[size_t(i)]);
    for (float beta : {0.0f, 1.0f}) {
      // The contract, written out: integers, then one rounding a step.
      std::vector<float> want = C0;
      double err = 0, scale = 0;
      for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
          int64_t s = 0;
          double exact = 0;
          for (int k = 0; k < K; k++) {
            s += int64_t(Aq[size_t(i) * ldq + k]) * i8_at(w, N, K, j, k);
            exact += double(A[size_t(i) * K + k]) * W[size_t(j) * K + k];
          }
          float y = float(int32_t(s) - kI8ActivationOffset * w.colsum[j]) * a_scale[i];
          y = y * w.scale[j];
          if (beta != 0.0f) y = y + beta * want[size_t(i) * N + j];
          y = y + bias[j];
          want[size_t(i) * N + j] = y;
          exact += bias[j] + (beta != 0.0f ? double(C0[size_t(i) * N + j]) : 0.0);
          err = std::max(err, std::fabs(exact - y));
          scale = std::max(scale, std::fabs(exact));
        }
      EXPECT_LT(err, 0.03 * scale) << "M " << M << " N " << N << " K " << K << ": far from the fp32 product";
      for (CpuPath path : test::runnable_cpu_paths()) {
        for (int threads : {1, 2}) {
          auto be = make_cpu_backend(threads, path);
          std::vector<float> got = C0;
          be->gemm_i8(M, N, K, Aq.data(), ldq, a_scale.data(), w.panels.data(), w.scale.data(), w.colsum.data(), beta, got.data(),
                      N, bias.data());
          EXPECT_TRUE(test::bitwise_equal(got, want))
              << cpu_path_name(path) << " " << threads << " threads, M " << M << " N " << N << " K " << K << " beta " << beta;
          // With gelu: the same C, and gelu_forward's values of it.
          std::vector<float> got_g = C0, gelu(size_t(M) * N), want_gelu(size_t(M) * N);
          be->gemm_i8(M, N, K, Aq.data(), ldq, a_scale.data(), w.panels.data(), w.scale.data(), w.colsum.data(), beta,
                      got_g.data(), N, bias.data(), gelu.data());
          be->gelu_forward(want_gelu.data(), want.data(), want.size());
          EXPECT_TRUE(test::bitwise_equal(got_g, want) && test::bitwise_equal(gelu, want_gelu)) << cpu_path_name(path);
        }
        // Any column range gives the whole product's columns.
        const CpuKernels k = cpu_kernels(path);
        for (const auto& [j0, j1] :
             {std::pair{0, 1}, std::pair{5, 77}, std::pair{16, 48}, std::pair{127, 129}, std::pair{N - 3, N}}) {
          if (j1 > N || j0 >= j1) continue;
          std::vector<float> part = C0;
          k.gemm_cols_i8(M, j0, j1, N, K, Aq.data(), ldq, a_scale.data(), w.panels.data(), w.scale.data(), w.colsum.data(), beta,
                         part.data(), N, bias.data());
          for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
              const float expect = j >= j0 && j < j1 ? want[size_t(i) * N + j] : C0[size_t(i) * N + j];
              ASSERT_EQ(std::memcmp(&part[size_t(i) * N + j], &expect, sizeof expect), 0)
                  << cpu_path_name(path) << " columns [" << j0 << ", " << j1 << "), row " << i << " column " << j;
            }
        }
      }
    }
  }
}

// The largest sums the 16-bit pairs can hold: every activation 127 and every weight +-127.
TEST(I8Weights, ExtremeValuesNeverSaturateOnAnyPath) {
  const int M = 1, N = 64, K = 256, ldq = K;
  std::vector<float> W(size_t(N) * K);
  for (int j = 0; j < N; j++)
    for (int k = 0; k < K; k++) W[size_t(j) * K + k] = (j % 2 ? -1.0f : 1.0f) * (k % 3 ? 1.0f : -1.0f);
  const I8Weights w = pack(W, N, K);
  std::vector<float> A(static_cast<size_t>(K));
  for (int k = 0; k < K; k++) A[size_t(k)] = k % 3 ? 2.0f : -2.0f;  // q = +-63: stored 127 and 1
  std::vector<uint8_t> Aq(static_cast<size_t>(ldq));
  float a_scale = 0;
  quantize_row_u7(A.data(), K, Aq.data(), &a_scale);
  for (CpuPath path : test::runnable_cpu_paths()) {
    auto be = make_cpu_backend(1, path);
    std::vector<float> got(size_t(N), 0.0f);
    be->gemm_i8(M, N, K, Aq.data(), ldq, &a_scale, w.panels.data(), w.scale.data(), w.colsum.data(), 0.0f, got.data(), N);
    for (int j = 0; j < N; j++)
      EXPECT_EQ(got[size_t(j)], (j % 2 ? -1.0f : 1.0f) * 2.0f * K) << cpu_path_name(path) << " column " << j;
  }
}

// A model computing with int8 products keeps its weights (and fingerprint), returns to the format
// it came from, scores close to its fp32 self, and is refused with adaptation (which trains fp32).
TEST(I8Weights, ModelKeepsItsWeightsScoresCloseAndIsRefusedWithAdaptation) {
  auto be = make_cpu_backend(1);
  auto model = Model::load(std::string(RETBYTE_TEST_DIR) + "/golden/tiny_retention.safetensors", *be);
  const std::string fingerprint = model_fingerprint(*model);
  const std::string text =
      "The int8 products round each weight column and each input row; the sums are exact integers. "
      "The int8 products round each weight column and each input row; the sums are exact integers. ";
  const std::vector<uint8_t> x(text.begin(), text.begin() + 128);
  const double fp32 = model->forward(x.data(), 1, 128, Model::Mode::Eval);
  model->set_weight_format(WeightFormat::I8);
  EXPECT_EQ(model->weight_format(), WeightFormat::I8);
  EXPECT_EQ(model_fingerprint(*model), fingerprint);
  const double int8 = model->forward(x.data(), 1, 128, Model::Mode::Eval);
  EXPECT_NE(int8, fp32);  // the products did change
  EXPECT_LT(std::fabs(int8 - fp32), 0.02 * fp32) << "int8 loss " << int8 << " against fp32 " << fp32;
  const std::vector<uint8_t> file(text.begin(), text.end());
  CompressOptions adapt;
  adapt.adapt = AdaptSettings{1024, 1, 2, 64, 3e-3f};
  try {
    compress_file("note.txt", file, model.get(), adapt);
    ADD_FAILURE() << "adapting with int8 products should be refused";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("note.txt: --adapt cannot be used with int8"), std::string::npos) << e.what();
  }
  model->set_weight_format(WeightFormat::F32);  // back to the fp32 products of the same weights
  EXPECT_EQ(model->forward(x.data(), 1, 128, Model::Mode::Eval), fp32);
  model->set_weight_format(WeightFormat::I8);
  EXPECT_EQ(model->forward(x.data(), 1, 128, Model::Mode::Eval), int8);
}

// An archive coded with int8 products says so (bit 5), over fp32 or bf16 values (bit 3), and
// decodes on every path and thread count whatever format the decoder's model was in; archives of
// other products decode beside it, each with its own.
TEST(I8Weights, ArchivesRecordInt8ProductsAndDecodeOnEveryPathFromAnyFormat) {
  auto load = [](std::unique_ptr<Backend> be) {
    auto m = Model::load(std::string(RETBYTE_TEST_DIR) + "/golden/tiny_retention.safetensors", *be);
    return std::make_pair(std::move(be), std::move(m));
  };
  std::vector<uint8_t> text;
  for (int i = 0; i < 5000; i++) text.push_back(uint8_t("int8 sums are exact integers; the epilogue rounds once. "[i % 56]));
  CompressOptions o;
  o.model_only = true;
  std::vector<uint8_t> fp32, int8, bf16_int8;
  {
    auto [be, m] = load(make_cpu_backend(2));
    fp32 = compress_file("t.txt", text, m.get(), o);
    m->set_weight_format(WeightFormat::I8);
    int8 = compress_file("t.txt", text, m.get(), o);
    m->set_weight_format(WeightFormat::BF16);  // leaves int8, rounds the values
    m->set_weight_format(WeightFormat::I8);
    bf16_int8 = compress_file("t.txt", text, m.get(), o);
    EXPECT_EQ(m->weight_values(), WeightFormat::BF16);
  }
  const RbzHeaderInfo h32 = read_rbz_header("a.rbz", fp32), h8 = read_rbz_header("b.rbz", int8),
                      hb8 = read_rbz_header("c.rbz", bf16_int8);
  EXPECT_FALSE(h32.int8_products);
  EXPECT_TRUE(h8.int8_products);
  EXPECT_FALSE(h8.bf16_weights);
  EXPECT_EQ(h8.model_fingerprint, h32.model_fingerprint);  // the same weights, other products
  EXPECT_TRUE(hb8.int8_products);
  EXPECT_TRUE(hb8.bf16_weights);
  EXPECT_NE(int8, fp32);
  EXPECT_NE(int8, bf16_int8);
  for (CpuPath path : test::runnable_cpu_paths())
    for (int threads : {1, 2}) {
      const std::string where = std::string(cpu_path_name(path)) + " " + std::to_string(threads) + " threads";
      auto [be, m] = load(make_cpu_backend(threads, path));
      EXPECT_EQ(decompress_file("b.rbz", int8, m.get()), text) << where;
      EXPECT_EQ(m->weight_format(), WeightFormat::I8) << where;
      EXPECT_EQ(decompress_file("a.rbz", fp32, m.get()), text) << where << ": an fp32 archive leaves int8";
      EXPECT_EQ(m->weight_format(), WeightFormat::F32) << where;
      EXPECT_EQ(decompress_file("c.rbz", bf16_int8, m.get()), text) << where;
      EXPECT_EQ(m->weight_values(), WeightFormat::BF16) << where;
    }
  auto [be, m] = load(make_cpu_backend(2));
  const std::vector<std::vector<uint8_t>> both = decompress_files({"b.rbz", "a.rbz", "b2.rbz"}, {&int8, &fp32, &int8}, m.get());
  ASSERT_EQ(both.size(), 3u);
  for (const auto& out : both) EXPECT_EQ(out, text);
}

}  // namespace
}  // namespace rb
