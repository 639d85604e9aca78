// Decoding: teacher-forced logits equal the parallel training forward; state save/restore and
// cloning continue exactly; sampling is deterministic for a seed at any thread count.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <fstream>

#include "generator/decoder.h"
#include "generator/sampler.h"
#include "kernels/backend.h"
#include "src/common/errors.h"
#include "src/model/safetensors.h"
#include "tests/test_util.h"

namespace rb {
namespace {

using test::expect_error_containing;

const std::string kTestDir = RETBYTE_TEST_DIR;

std::vector<uint8_t> text_bytes(size_t n) {
  std::ifstream in(kTestDir + "/fixtures/text2k.txt", std::ios::binary);
  std::string s((std::istreambuf_iterator<char>(in)), {});
  std::vector<uint8_t> out;
  while (out.size() < n) out.insert(out.end(), s.begin(), s.end());
  out.resize(n);
  return out;
}

// Logits of every position of `x` from decoding (ingesting the first `ingest` bytes, then
// teacher-forcing one byte at a time) against one parallel/chunkwise forward over all of x.
void expect_decode_matches_forward(Model& model, const std::vector<uint8_t>& x, size_t ingest) {
  model.retention_chunk = 16;
  model.forward(x.data(), 1, int(x.size()), Model::Mode::Eval);
  const std::vector<float> ref(model.logits(), model.logits() + x.size() * 256);
  Decoder dec(model);
  DecodeState st(model);
  dec.ingest(st, x.data(), ingest);
  std::vector<float> got, want;
  for (size_t t = ingest; t < x.size(); t++) {
    const float* l = dec.next_logits(st);
    got.insert(got.end(), l, l + 256);
    want.insert(want.end(), ref.begin() + long(t * 256), ref.begin() + long((t + 1) * 256));
    dec.accept(st, x[t]);
  }
  EXPECT_LE(test::rel_error(got, want), 1e-4) << "ingested " << ingest << " of " << x.size();
  EXPECT_EQ(st.bytes_consumed(), int64_t(x.size()));
}

TEST(Decoder, TeacherForcedLogitsEqualTheForwardTiny) {
  auto be = make_cpu_backend(2);
  for (const char* file : {"tiny_retention.safetensors", "tiny_attention.safetensors"}) {
    auto model = Model::load(kTestDir + "/golden/" + file, *be);
    const auto x = text_bytes(1000);  // 250 patches: many retention chunks of 16
    expect_decode_matches_forward(*model, x, 0);
    expect_decode_matches_forward(*model, x, 603);  // whole patches + a partial one ingested
  }
}

TEST(Decoder, TeacherForcedLogitsEqualTheForwardSmall) {
  auto be = make_cpu_backend(2);
  Model model(named_config("small"), *be);
  model.init_random(5);
  expect_decode_matches_forward(model, text_bytes(1536), 777);
}

std::string generate(Model& model, DecodeState& st, int n, const SamplingParams& sp) {
  Decoder dec(model);
  std::string out;
  for (int i = 0; i < n; i++) {
    const uint8_t b = sample_byte(dec.next_logits(st), sp, st.rng());
    dec.accept(st, b);
    out += char(b);
  }
  return out;
}

TEST(Decoder, SavedStateContinuesExactlyAndCloneIsIndependent) {
  auto be = make_cpu_backend(2);
  const std::string path = testing::TempDir() + "retbyte_state_" + std::to_string(getpid());
  for (const char* file : {"tiny_retention.safetensors", "tiny_attention.safetensors"}) {
    auto model = Model::load(kTestDir + "/golden/" + file, *be);
    const SamplingParams sp{1.0f, 0, 0.95f};
    const auto prompt = text_bytes(101);
    Decoder dec(*model);
    DecodeState whole(*model);
    whole.rng().reseed(42);
    dec.ingest(whole, prompt.data(), prompt.size());
    const std::string all = generate(*model, whole, 90, sp);

    DecodeState first(*model);
    first.rng().reseed(42);
    dec.ingest(first, prompt.data(), prompt.size());
    const std::string a = generate(*model, first, 37, sp);  // ends mid-patch
    auto copy = first.clone();
    first.save(path);
    auto restored = DecodeState::load(path, *model);
    const std::string b = generate(*model, *restored, 53, sp);
    EXPECT_EQ(a + b, all) << file;
    EXPECT_EQ(generate(*model, *copy, 53, sp), b) << file << ": clone";
  }
  std::remove(path.c_str());
}

// A state decoded with int8 products says so, and a model loaded anew (fp32 products) continues it
// with int8 ones: the bytes of one uninterrupted int8 run. A state without them takes a model off
// int8 again.
TEST(Decoder, SavedStateRecordsInt8ProductsAndContinuesExactly) {
  auto be = make_cpu_backend(2);
  const std::string path = testing::TempDir() + "retbyte_state_i8_" + std::to_string(getpid());
  const std::string model_path = kTestDir + "/golden/tiny_retention.safetensors";
  const SamplingParams sp{1.0f, 0, 0.95f};
  const auto prompt = text_bytes(101);
  auto model = Model::load(model_path, *be);
  model->set_weight_format(WeightFormat::I8);
  DecodeState whole(*model), first(*model);
  whole.rng().reseed(5);
  first.rng().reseed(5);
  Decoder(*model).ingest(whole, prompt.data(), prompt.size());
  Decoder(*model).ingest(first, prompt.data(), prompt.size());
  const std::string all = generate(*model, whole, 90, sp);
  const std::string a = generate(*model, first, 37, sp);
  first.save(path);
  auto fresh = Model::load(model_path, *be);
  ASSERT_EQ(fresh->weight_format(), WeightFormat::F32);
  auto restored = DecodeState::load(path, *fresh);
  EXPECT_EQ(fresh->weight_format(), WeightFormat::I8);
  EXPECT_EQ(a + generate(*fresh, *restored, 53, sp), all);
  DecodeState plain(*model);
  model->set_weight_format(WeightFormat::F32);
  plain.save(path);
  fresh->set_weight_format(WeightFormat::I8);
  DecodeState::load(path, *fresh);
  EXPECT_EQ(fresh->weight_format(), WeightFormat::F32);
  std::remove(path.c_str());
}

TEST(Decoder, SameSeedSameBytesAtAnyThreadCount) {
  std::string outs[2];
  for (int threads : {1, 2}) {
    auto be = make_cpu_backend(threads);
    auto model = Model::load(kTestDir + "/golden/tiny_retention.safetensors", *be);
    DecodeState st(*model);
    st.rng().reseed(7);
    Decoder(*model).ingest(st, text_bytes(64).data(), 64);
    outs[threads - 1] = generate(*model, st, 200, SamplingParams{0.9f, 40, 1.0f});
  }
  EXPECT_EQ(outs[0], outs[1]);
}

TEST(Decoder, StateFromAnotherModelOrDamagedIsRefused) {
  auto be = make_cpu_backend(2);
  auto model = Model::load(kTestDir + "/golden/tiny_retention.safetensors", *be);
  const std::string path = testing::TempDir() + "retbyte_state2_" + std::to_string(getpid());
  DecodeState st(*model);
  st.save(path);
  Model other(model->config(), *be);
  other.init_random(3);
  try {
    DecodeState::load(path, other);
    ADD_FAILURE() << "loaded a state made with another model";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("made with another model"), std::string::npos) << e.what();
  }
  // A position that is not a plain number, or one so large that position arithmetic would
  // overflow (UBSan found INT64_MAX), is refused naming the file.
  {
    SafetensorsReader file(path);
    std::vector<std::vector<float>> f32;
    std::vector<std::vector<uint8_t>> u8;
    std::vector<StTensorOut> out;
    for (const auto& [name, info] : file.tensors()) {
      if (info.dtype == "F32") {
        f32.push_back(file.read_f32(name));
        out.push_back({name, "F32", info.shape, nullptr});
      } else {
        u8.push_back(file.read_u8(name));
        out.push_back({name, "U8", info.shape, nullptr});
      }
    }
    size_t fi = 0, ui = 0;
    for (auto& t : out)
      t.data = t.dtype == "F32" ? static_cast<const void*>(f32[fi++].data()) : static_cast<const void*>(u8[ui++].data());
    for (const char* bad : {"12abc", "9223372036854775807", "-1", ""}) {
      auto meta = file.metadata();
      meta["patches_done"] = bad;
      const std::string damaged = path + ".bad";
      write_safetensors(damaged, out, meta);
      expect_error_containing([&] { DecodeState::load(damaged, *model); }, damaged + ": bad \"patches_done\"");
      std::remove(damaged.c_str());
    }
  }
  const auto size = std::filesystem::file_size(path);
  std::filesystem::resize_file(path, size - 10);
  EXPECT_THROW(DecodeState::load(path, *model), Error);
  std::remove(path.c_str());
}

TEST(Sampler, GreedyTopKAndDistribution) {
  Rng rng(1);
  std::vector<float> logits(256, 0.0f);
  logits[65] = 3.0f;
  logits[66] = 3.0f;
  logits[200] = 2.0f;
  EXPECT_EQ(sample_byte(logits.data(), {0.0f, 0, 1.0f}, rng), 65);  // ties: lowest byte
  EXPECT_EQ(sample_byte(logits.data(), {1.0f, 1, 1.0f}, rng), 65);
  int count[256] = {};
  const int n = 20000;
  for (int i = 0; i < n; i++) count[sample_byte(logits.data(), {1.0f, 3, 1.0f}, rng)]++;
  const double z = 2 * std::exp(3.0) + std::exp(2.0);
  EXPECT_NEAR(count[200] / double(n), std::exp(2.0) / z, 0.02);
  EXPECT_NEAR(count[65] / double(n), std::exp(3.0) / z, 0.02);
  EXPECT_EQ(count[65] + count[66] + count[200], n);  // nothing outside the top 3
}

}  // namespace
}  // namespace rb

namespace rb {
namespace {

// The numerics contract at model level. Three routes to the logits of every byte must agree
// bit for bit: (a) one batched, teacher-forced Model::forward over all of x with the retention
// recurrence run patch by patch; (b) decoding byte by byte from the start; (c) ingesting a
// prompt (whole patches through the global model, batched) and then stepping. And (a) must be
// the same bits on every CPU path and thread count.
std::vector<float> stepped_logits(Model& model, const std::vector<uint8_t>& x, size_t ingest) {
  Decoder dec(model);
  DecodeState st(model);
  dec.ingest(st, x.data(), ingest);
  std::vector<float> out;
  for (size_t t = ingest; t < x.size(); t++) {
    const float* l = dec.next_logits(st);
    out.insert(out.end(), l, l + 256);
    dec.accept(st, x[t]);
  }
  return out;
}

// n bytes on the SIMD paths; the slow portable path runs the first n_portable (logits are
// causal, so every path is compared with the first on that common prefix).
void expect_routes_agree_on_every_path(const std::function<std::unique_ptr<Model>(Backend&)>& make, size_t n, size_t n_portable,
                                       size_t ingest) {
  std::vector<float> first;
  for (CpuPath path : test::runnable_cpu_paths())
    for (int threads : {1, 2}) {
      SCOPED_TRACE(std::string(cpu_path_name(path)) + " x " + std::to_string(threads));
      const auto x = text_bytes(path == CpuPath::Portable ? n_portable : n);
      auto be = make_cpu_backend(threads, path);
      auto model = make(*be);
      model->retention_recurrent = true;
      model->forward(x.data(), 1, int(x.size()), Model::Mode::Eval);
      const std::vector<float> batched(model->logits(), model->logits() + x.size() * 256);
      EXPECT_TRUE(test::bitwise_equal(stepped_logits(*model, x, 0), batched)) << "stepping from the start";
      const std::vector<float> tail(batched.begin() + long(ingest * 256), batched.end());
      EXPECT_TRUE(test::bitwise_equal(stepped_logits(*model, x, ingest), tail)) << "ingest " << ingest << ", then step";
      if (first.empty()) {
        first = batched;
      } else {
        const size_t common = std::min(first.size(), batched.size());
        EXPECT_TRUE(std::equal(first.begin(), first.begin() + long(common), batched.begin(), [](float a, float b) {
          return std::memcmp(&a, &b, sizeof a) == 0;
        })) << "logits differ from the first path";
      }
    }
}

TEST(Decoder, SteppingEqualsBatchedPassAndIngestBitwiseTiny) {
  for (const char* file : {"tiny_retention.safetensors", "tiny_attention.safetensors"}) {
    SCOPED_TRACE(file);
    expect_routes_agree_on_every_path([&](Backend& be) { return Model::load(kTestDir + "/golden/" + file, be); }, 4096, 2048,
                                      1027);
  }
}

TEST(Decoder, SteppingEqualsBatchedPassAndIngestBitwiseSmall) {
  expect_routes_agree_on_every_path(
      [](Backend& be) {
        auto m = std::make_unique<Model>(named_config("small"), be);
        m->init_random(5);
        return m;
      },
      3072, 1024, 517);
}

// Both golden models with their weights in `format`: stepping, the batched pass and ingestion give
// the same bits on every path.
void expect_routes_agree_with_weights(WeightFormat format) {
  for (const char* file : {"tiny_retention.safetensors", "tiny_attention.safetensors"}) {
    SCOPED_TRACE(file);
    expect_routes_agree_on_every_path(
        [&](Backend& be) {
          auto m = Model::load(kTestDir + "/golden/" + file, be);
          m->set_weight_format(format);
          return m;
        },
        4096, 2048, 1027);
  }
}

// bf16 weights: the decoding products read bf16 copies, the batched pass the fp32 rounded values;
// still the same bits everywhere.
TEST(Decoder, SteppingEqualsBatchedPassAndIngestBitwiseWithBf16Weights) { expect_routes_agree_with_weights(WeightFormat::BF16); }

// int8 products: the batched pass and the steps both quantize each product's input rows and sum
// integers, so they agree bitwise on every path as fp32 and bf16 do.
TEST(Decoder, SteppingEqualsBatchedPassAndIngestBitwiseWithInt8Weights) { expect_routes_agree_with_weights(WeightFormat::I8); }

}  // namespace
}  // namespace rb
