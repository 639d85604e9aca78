// bf16 weights for inference: the bf16 product equals the fp32 product of the widened values on
// every CPU path; a model rounded to bf16 saves as BF16 tensors (half the file) and loads back as
// the same model; archives coded with bf16 weights say so and decode from the fp32 file on every
// path; what cannot work (fp32 again, --adapt) is refused.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "codecs/rbz.h"
#include "kernels/cpu/cpu_backend.h"
#include "src/common/errors.h"
#include "src/common/rng.h"
#include "src/model/model.h"
#include "tests/test_util.h"

namespace rb {
namespace {

float widen(uint16_t h) { return bf16_widen(h); }

// The panels interleave each full group of 32 columns: any range of columns, starting or ending
// inside a group or in a panel's ungrouped tail, gives the bits of the whole product's columns.
TEST(Bf16Weights, AnyColumnRangeOfThePanelsGivesTheWholeProductsColumns) {
  Rng rng(12);
  const int M = 2, N = 300, K = 70;  // panels of 128, 128 and 44 columns (one group and 12 more)
  std::vector<float> A = test::random_vec(size_t(M) * K, rng), bias = test::random_vec(size_t(N), rng);
  std::vector<uint16_t> B(size_t(K) * N), panels(B.size());
  for (uint16_t& b : B) b = bf16_round(float(rng.normal()));
  pack_bf16_panels(B.data(), K, N, N, panels.data());
  for (CpuPath path : test::runnable_cpu_paths()) {
    const CpuKernels k = cpu_kernels(path);
    std::vector<float> whole(size_t(M) * N, 0.25f);
    k.gemm_cols_bf16(M, 0, N, N, K, 0.5f, A.data(), K, panels.data(), 1.0f, whole.data(), N, bias.data());
    for (const auto& [j0, j1] : {std::pair{0, 1}, std::pair{5, 77}, std::pair{16, 48}, std::pair{31, 33}, std::pair{100, 270},
                                 std::pair{256, 288}, std::pair{290, 300}, std::pair{127, 129}}) {
      std::vector<float> part(size_t(M) * N, 0.25f);
      k.gemm_cols_bf16(M, j0, j1, N, K, 0.5f, A.data(), K, panels.data(), 1.0f, part.data(), N, bias.data());
      for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
          const float want = j >= j0 && j < j1 ? whole[size_t(i) * N + j] : 0.25f;
          ASSERT_EQ(std::memcmp(&part[size_t(i) * N + j], &want, sizeof want), 0)
              << cpu_path_name(path) << " columns [" << j0 << ", " << j1 << "), row " << i << " column " << j;
        }
    }
  }
}

TEST(Bf16Weights, ProductEqualsTheFp32ProductOfTheWidenedValuesOnEveryPath) {
  Rng rng(11);
  for (const auto& [M, N, K] : {std::tuple{1, 300, 600}, std::tuple{3, 129, 40}, std::tuple{33, 256, 257},
                                std::tuple{1, 384, 128}, std::tuple{2, 1536, 256}, std::tuple{1, 77, 512}}) {
    std::vector<float> A = test::random_vec(size_t(M) * K, rng), widened(size_t(K) * N), C0(size_t(M) * N, 0.5f);
    std::vector<uint16_t> B(size_t(K) * N);
    for (size_t i = 0; i < B.size(); i++) {
      B[i] = bf16_round(float(rng.normal()));
      widened[i] = widen(B[i]);
    }
    std::vector<uint16_t> panels(B.size());
    pack_bf16_panels(B.data(), K, N, N, panels.data());
    const std::vector<float> bias = test::random_vec(size_t(N), rng);
    const float beta = N % 2 ? 1.0f : 0.0f;
    std::vector<float> ref;
    for (CpuPath path : test::runnable_cpu_paths())
      for (int threads : {1, 2}) {
        auto be = make_cpu_backend(threads, path);
        std::vector<float> want = C0, got = C0;
        be->gemm(false, false, M, N, K, 0.75f, A.data(), K, widened.data(), N, beta, want.data(), N);
        be->gemm_bf16(M, N, K, 0.75f, A.data(), K, panels.data(), beta, got.data(), N);
        EXPECT_TRUE(test::bitwise_equal(got, want)) << cpu_path_name(path) << " " << threads << " threads, M " << M;
        if (ref.empty()) ref = got;
        EXPECT_TRUE(test::bitwise_equal(got, ref)) << "differs from the portable path: " << cpu_path_name(path);
        // With a bias: the product, then add_bias, each thread on its own columns.
        std::vector<float> want_b = C0, got_b = C0;
        be->gemm(false, false, M, N, K, 0.75f, A.data(), K, widened.data(), N, beta, want_b.data(), N);
        be->add_bias(want_b.data(), bias.data(), M, N);
        be->gemm_bf16(M, N, K, 0.75f, A.data(), K, panels.data(), beta, got_b.data(), N, bias.data());
        EXPECT_TRUE(test::bitwise_equal(got_b, want_b)) << cpu_path_name(path) << " " << threads << " threads, M " << M;
      }
  }
  EXPECT_EQ(bf16_round(1.0f), 0x3F80);
  EXPECT_EQ(bf16_round(widen(0x3F81)), 0x3F81);      // bf16 values stay
  EXPECT_EQ(bf16_round(1.0f + 1.0f / 256), 0x3F80);  // a tie rounds to even
  EXPECT_EQ(bf16_round(1.0f + 3.0f / 256), 0x3F82);  // the other tie too
}

TEST(Bf16Weights, SavedAsBf16TensorsAndLoadedBackAsTheSameModel) {
  test::TempDir dir("bf16");
  auto be = make_cpu_backend(2);
  Model m(named_config("tiny"), *be);
  m.init_random(3);
  m.save(dir.path + "/f32.safetensors");
  const std::string fp32 = model_fingerprint(m);
  m.set_weight_format(WeightFormat::BF16);
  EXPECT_NE(model_fingerprint(m), fp32) << "rounding must change the weights";
  m.save(dir.path + "/bf16.safetensors");
  const auto f32_size = std::filesystem::file_size(dir.path + "/f32.safetensors");
  const auto bf16_size = std::filesystem::file_size(dir.path + "/bf16.safetensors");
  EXPECT_LT(bf16_size, f32_size * 6 / 10);
  auto back = Model::load(dir.path + "/bf16.safetensors", *be);
  EXPECT_EQ(back->weight_format(), WeightFormat::BF16);
  EXPECT_EQ(model_fingerprint(*back), model_fingerprint(m));
  EXPECT_THROW(m.set_weight_format(WeightFormat::F32), Error);
  m.set_weight_format(WeightFormat::BF16);  // again: nothing changes
  EXPECT_EQ(model_fingerprint(*back), model_fingerprint(m));
}

TEST(Bf16Weights, ArchivesRecordTheFormatAndDecodeFromTheFp32FileOnEveryPath) {
  test::TempDir dir("bf16codec");
  {
    auto be = make_cpu_backend(1);
    Model m(named_config("tiny"), *be);
    m.init_random(9);
    m.save(dir.path + "/model.safetensors");
  }
  std::vector<uint8_t> text;
  for (int i = 0; i < 6000; i++) text.push_back(uint8_t("the quick brown fox jumps over the lazy dog. "[i % 45]));
  CompressOptions o;
  o.model_only = true;
  std::vector<uint8_t> rbz, adapted;
  {
    auto be = make_cpu_backend(2);
    auto m = Model::load(dir.path + "/model.safetensors", *be);
    m->set_weight_format(WeightFormat::BF16);
    rbz = compress_file("t.txt", text, m.get(), o);
    // Adaptation trains in fp32: a bf16 model codes the file on the fp32 kernels with its values as
    // they are (an fp32 archive of the same fingerprint) and is bf16 again afterwards.
    CompressOptions adapt = o;
    adapt.adapt = AdaptSettings{1024, 1, 2, 64, 3e-3f};
    const std::string before = model_fingerprint(*m);
    adapted = compress_file("t.txt", text, m.get(), adapt);
    EXPECT_EQ(m->weight_format(), WeightFormat::BF16);
    EXPECT_EQ(model_fingerprint(*m), before);
    EXPECT_EQ(compress_file("t.txt", text, m.get(), o), rbz) << "the model is the same after adapting";
  }
  EXPECT_TRUE(read_rbz_header("t.rbz", adapted).adapt.has_value());
  EXPECT_FALSE(read_rbz_header("t.rbz", adapted).bf16_weights);
  for (CpuPath path : test::runnable_cpu_paths()) {
    auto be = make_cpu_backend(2, path);
    auto m = Model::load(dir.path + "/model.safetensors", *be);
    m->set_weight_format(WeightFormat::BF16);  // as a bf16 model file loads
    EXPECT_EQ(decompress_file("t.rbz", adapted, m.get()), text) << cpu_path_name(path);
    EXPECT_EQ(m->weight_format(), WeightFormat::BF16);
  }
  EXPECT_TRUE(read_rbz_header("t.rbz", rbz).bf16_weights);
  for (CpuPath path : test::runnable_cpu_paths())
    for (int threads : {1, 2}) {
      auto be = make_cpu_backend(threads, path);
      auto m = Model::load(dir.path + "/model.safetensors", *be);  // fp32: the header makes it bf16
      EXPECT_EQ(decompress_file("t.rbz", rbz, m.get()), text) << cpu_path_name(path) << " " << threads << " threads";
      EXPECT_EQ(m->weight_format(), WeightFormat::BF16);
    }
  // An fp32 archive of the same model is another archive, and says so.
  auto be = make_cpu_backend(2);
  auto m = Model::load(dir.path + "/model.safetensors", *be);
  const auto fp32 = compress_file("t.txt", text, m.get(), o);
  EXPECT_FALSE(read_rbz_header("t.rbz", fp32).bf16_weights);
  EXPECT_NE(fp32, rbz);
}

}  // namespace
}  // namespace rb
