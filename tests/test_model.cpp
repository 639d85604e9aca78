// The whole model: golden logits from the PyTorch reference, finite-difference gradients,
// chunkwise = parallel at model level, files and configs, and learning.
#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <limits>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "kernels/backend.h"
#include "src/common/errors.h"
#include "src/model/model.h"
#include "src/model/safetensors.h"
#include "tests/test_util.h"
#include "trainer/adamw.h"

namespace rb {
namespace {

using test::rel_error;

const std::string kTestDir = RETBYTE_TEST_DIR;

std::string temp_path(const std::string& name) { return testing::TempDir() + "retbyte_" + std::to_string(getpid()) + "_" + name; }

using test::expect_error_containing;

// Golden test: the PyTorch reference (tests/golden/make_golden.py, float64) on fixed weights.
void check_golden(const std::string& file, int chunk) {
  auto be = make_cpu_backend(2);
  const std::string path = kTestDir + "/golden/" + file;
  auto model = Model::load(path, *be);
  model->retention_chunk = chunk;
  SafetensorsReader golden(path);
  const auto input = golden.read_u8("input");
  const auto logits = golden.read_f32("logits");
  const auto loss = golden.read_f32("loss");
  const ModelConfig& c = model->config();
  ASSERT_EQ(input.size(), size_t(c.B) * c.T);
  const double got = model->forward(input.data(), c.B, c.T, Model::Mode::Eval);
  EXPECT_LE(rel_error(model->logits(), logits.data(), logits.size()), 1e-4) << file << " chunk " << chunk;
  EXPECT_NEAR(got, loss[0], 1e-4 * loss[0]) << file;
}

TEST(Golden, TinyRetentionMatchesPyTorch) {
  for (int chunk : {4, 7, 64}) check_golden("tiny_retention.safetensors", chunk);
}
TEST(Golden, TinyAttentionMatchesPyTorch) { check_golden("tiny_attention.safetensors", 64); }

// The indices of a tensor's two largest gradients (by magnitude).
std::vector<size_t> largest_gradients(const TensorEntry& e, const std::vector<float>& analytic) {
  std::vector<size_t> idx(e.count);
  for (size_t i = 0; i < e.count; i++) idx[i] = e.offset + i;
  const size_t n = std::min<size_t>(2, idx.size());
  std::partial_sort(idx.begin(), idx.begin() + long(n), idx.end(),
                    [&](size_t a, size_t b) { return std::fabs(analytic[a]) > std::fabs(analytic[b]); });
  return std::vector<size_t>(idx.begin(), idx.begin() + long(n));
}

// Finite differences of the mean loss with respect to parameters of every tensor, at the tiny
// config (golden weights: non-trivial values, so every path carries gradient).
void check_model_gradients(const std::string& file) {
  auto be = make_cpu_backend(2);
  auto model = Model::load(kTestDir + "/golden/" + file, *be);
  model->retention_chunk = 5;  // ragged chunks inside the model too
  SafetensorsReader golden(kTestDir + "/golden/" + file);
  const auto input = golden.read_u8("input");
  const ModelConfig& c = model->config();
  model->zero_grad();
  model->forward(input.data(), c.B, c.T, Model::Mode::Train);
  model->backward();
  std::vector<float> analytic(model->grads(), model->grads() + model->num_params());
  std::vector<float> params(model->params(), model->params() + model->num_params());
  auto loss = [&] {
    std::copy(params.begin(), params.end(), model->params());
    return model->forward(input.data(), c.B, c.T, Model::Mode::Eval);
  };
  for (const TensorEntry& e : model->table()) {
    std::vector<size_t> pick = largest_gradients(e, analytic);
    pick.push_back(e.offset + (e.count * 7) / 11);  // and one arbitrary element
    test::expect_gradient(e.name.c_str(), params, analytic, loss, 1e-2, 3e-2, 2e-4, pick);
  }
}

TEST(ModelGradients, TinyRetentionFiniteDifferences) { check_model_gradients("tiny_retention.safetensors"); }
TEST(ModelGradients, TinyAttentionFiniteDifferences) { check_model_gradients("tiny_attention.safetensors"); }

TEST(ModelGradients, ChunkwiseEqualsParallelAtModelLevel) {
  auto be = make_cpu_backend(2);
  const std::string path = kTestDir + "/golden/tiny_retention.safetensors";
  auto model = Model::load(path, *be);
  const auto input = SafetensorsReader(path).read_u8("input");
  const ModelConfig& c = model->config();
  std::vector<std::vector<float>> logits, grads;
  for (int chunk : {1 << 20, 3}) {  // 16 patches: the parallel form, then chunks of 3 (ragged; more saved states)
    model->retention_chunk = chunk;
    model->forward(input.data(), c.B, c.T, Model::Mode::Eval);
    logits.emplace_back(model->logits(), model->logits() + size_t(c.B) * c.T * 256);
    model->zero_grad();
    model->forward(input.data(), c.B, c.T, Model::Mode::Train);
    model->backward();
    grads.emplace_back(model->grads(), model->grads() + model->num_params());
  }
  EXPECT_LE(rel_error(logits[1], logits[0]), 1e-5);
  EXPECT_LE(rel_error(grads[1], grads[0]), 1e-5);
}

TEST(ModelFiles, SaveLoadRoundTripKeepsNamesShapesAndValues) {
  auto be = make_cpu_backend(2);
  Model model(named_config("tiny"), *be);
  model.init_random(11);
  const std::string path = temp_path("roundtrip.safetensors");
  model.save(path, {{"note", "test"}});
  SafetensorsReader file(path);
  EXPECT_EQ(file.info("global.layers.1.msr.wv").shape, (std::vector<int64_t>{128, 64}));
  EXPECT_EQ(file.info("local.layers.0.attn.wqkv").shape, (std::vector<int64_t>{192, 64}));
  EXPECT_EQ(file.info("local.embed").shape, (std::vector<int64_t>{257, 64}));
  EXPECT_EQ(file.metadata().at("note"), "test");
  auto loaded = Model::load(path, *be);
  EXPECT_EQ(loaded->config(), model.config());
  EXPECT_TRUE(std::equal(model.params(), model.params() + model.num_params(), loaded->params()));
  EXPECT_EQ(loaded->media_form, MediaForm::Plain);
  // The media form it was trained on travels with it; a form this build does not know is refused.
  model.media_form = MediaForm::Residual;
  model.save(path);
  EXPECT_EQ(Model::load(path, *be)->media_form, MediaForm::Residual);
  model.save(path, {{"media", "wavelet"}});  // extra keys cannot override the model's own
  EXPECT_EQ(Model::load(path, *be)->media_form, MediaForm::Residual);
  std::remove(path.c_str());
}

TEST(ModelFiles, ParameterCountsMatchTheSpec) {
  auto be = make_cpu_backend(1);
  EXPECT_NEAR(double(Model(named_config("tiny"), *be).num_params()), 0.2e6, 0.06e6);
  EXPECT_NEAR(double(Model(named_config("small"), *be).num_params()), 3.6e6, 0.1e6);
}

TEST(ModelFiles, BadFilesGiveOneLineErrorsNamingTheFile) {
  auto be = make_cpu_backend(1);
  const std::string path = temp_path("bad.safetensors");
  auto write = [&](const std::string& bytes) { std::ofstream(path, std::ios::binary) << bytes; };
  write("abc");
  expect_error_containing([&] { Model::load(path, *be); }, path + ": file is 3 bytes");
  write(std::string("\xff\xff\xff\xff\x00\x00\x00\x00{}", 10));
  expect_error_containing([&] { Model::load(path, *be); }, "header length");
  write(std::string("\x02\x00\x00\x00\x00\x00\x00\x00[]", 10));
  expect_error_containing([&] { Model::load(path, *be); }, "not a JSON object");
  // A real model, truncated.
  Model model(named_config("tiny"), *be);
  model.save(path);
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  write(bytes.substr(0, bytes.size() - 100));
  expect_error_containing([&] { Model::load(path, *be); }, "truncated");
  // Weights of another config: shapes do not match.
  {
    SafetensorsReader file(kTestDir + "/golden/tiny_retention.safetensors");
    ModelConfig other = named_config("tiny");
    other.D_L = 32;
    Model m(other, *be);
    expect_error_containing([&] { m.load_tensors(file); }, "tensor 'g2l.weight' has shape [64, 16], expected [32, 16]");
  }
  expect_error_containing([&] { Model::load(temp_path("missing.safetensors"), *be); }, "cannot open");
  // Metadata that lies about the config, and non-finite weights: refused before allocating, naming the file.
  {
    SafetensorsReader file(kTestDir + "/golden/tiny_retention.safetensors");
    std::vector<std::vector<float>> data;
    std::vector<StTensorOut> out;
    for (const auto& [name, info] : file.tensors()) {
      if (info.dtype != "F32") continue;  // the golden file's inputs
      data.push_back(file.read_f32(name));
      out.push_back({name, "F32", info.shape, nullptr});
    }
    for (size_t i = 0; i < out.size(); i++) out[i].data = data[i].data();
    auto rewrite = [&](const std::string& key, int value) {
      nlohmann::json c = nlohmann::json::parse(file.metadata().at("config"));
      c[key] = value;
      write_safetensors(path, out, {{"config", c.dump()}});
    };
    rewrite("L_G", 1000000);
    expect_error_containing([&] { Model::load(path, *be); },
                            path + ": its config has 1000000 + 2 layers, but the file holds only");
    rewrite("T", 1 << 30);
    expect_error_containing([&] { Model::load(path, *be); },
                            "MiB of activations for one window of T = 1073741824 bytes; this machine has");
    rewrite("T", 1024);
    Model::load(path, *be);  // the honest config loads
    for (size_t i = 0; i < out.size(); i++)
      if (out[i].name == "head.weight") data[i][5] = std::numeric_limits<float>::quiet_NaN();
    write_safetensors(path, out, {{"config", file.metadata().at("config")}});
    expect_error_containing([&] { Model::load(path, *be); }, path + ": tensor 'head.weight' holds a non-finite value");
  }
  std::remove(path.c_str());
}

TEST(Config, UnknownKeysAndImpossibleValuesAreRejected) {
  using nlohmann::json;
  expect_error_containing(
      [] {
        parse_model_config(json{{"config", "tiny"}, {"D_X", 3}}, "c.json");
      },
      "c.json: unknown config key \"D_X\"");
  expect_error_containing([] { parse_model_config(json{{"config", "tiny"}, {"H_G", 3}}, "c.json"); }, "not divisible by H_G = 3");
  expect_error_containing([] { parse_model_config(json{{"config", "tiny"}, {"P", 0}}, "c.json"); }, "\"P\" = 0 is out of range");
  expect_error_containing([] { parse_model_config(json{{"config", "tiny"}, {"T", 1023}}, "c.json"); }, "not a multiple of P");
  expect_error_containing([] { parse_model_config(json{{"config", "huge"}}, "c.json"); }, "unknown config name 'huge'");
  expect_error_containing([] { parse_model_config(json{{"P", 4}}, "c.json"); }, "missing key");
  expect_error_containing(
      [] {
        parse_model_config(json{{"config", "tiny"}, {"global", "lstm"}}, "c.json");
      },
      "\"global\" must be");
  expect_error_containing([] { load_model_config(temp_path("nope.json")); }, "cannot open config");
  const ModelConfig c = parse_model_config(json{{"config", "small"}, {"T", 512}, {"global", "attention"}}, "c.json");
  EXPECT_EQ(c.T, 512);
  EXPECT_EQ(c.D_G(), 256);
  EXPECT_EQ(c.global, GlobalKind::Attention);
  EXPECT_EQ(parse_model_config(json::parse(config_to_json(c)), "roundtrip"), c);
}

// Learning: the tiny config memorises a 2 KiB text to below 0.2 bits per byte.
TEST(Learning, TinyOverfitsTwoKilobytesOfText) {
  std::ifstream in(kTestDir + "/fixtures/text2k.txt", std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(in)), {});
  ASSERT_GE(text.size(), 2048u);
  text.resize(2048);
  auto be = make_cpu_backend(2);
  ModelConfig cfg = named_config("tiny");  // B = 2, T = 1024: the whole text in one batch
  Model model(cfg, *be);
  model.init_random(1);
  AdamW opt(*be, model.table(), model.num_params());
  AdamWConfig oc;
  oc.weight_decay = 0.0f;
  const auto* x = reinterpret_cast<const uint8_t*>(text.data());
  const int max_steps = 400;
  double bpb = 99;
  int step = 0;
  for (; step < max_steps && bpb >= 0.2; step++) {
    model.zero_grad();
    const double loss = model.forward(x, cfg.B, cfg.T, Model::Mode::Train);
    model.backward();
    bpb = loss / std::log(2.0);
    const float lr = 3e-3f * std::min(1.0f, (step + 1) / 20.0f);
    opt.step(*be, model.params(), model.grads(), lr, oc);
  }
  const double final_bpb = model.forward(x, cfg.B, cfg.T, Model::Mode::Eval) / std::log(2.0);
  RecordProperty("steps", step);
  EXPECT_LT(final_bpb, 0.2) << "after " << step << " steps";
}

}  // namespace
}  // namespace rb

namespace rb {
namespace {

// The golden tiny retention model with ragged retention chunks of 3 patches, and its input.
struct GoldenTinyRetention {
  std::unique_ptr<Backend> be = make_cpu_backend(2);
  std::string path = kTestDir + "/golden/tiny_retention.safetensors";
  std::unique_ptr<Model> model = Model::load(path, *be);
  std::vector<uint8_t> input = SafetensorsReader(path).read_u8("input");
  GoldenTinyRetention() { model->retention_chunk = 3; }
};

TEST(Streaming, WindowByWindowWithCarriedStateEqualsOneLongWindow) {
  GoldenTinyRetention g;
  auto& model = g.model;
  const auto& input = g.input;
  const ModelConfig& c = model->config();                   // B = 2, T = 64, P = 4
  model->forward(input.data(), 1, c.T, Model::Mode::Eval);  // sequence 0 in one window
  std::vector<float> whole(model->logits(), model->logits() + size_t(c.T) * 256);
  auto stream = model->new_stream(1);
  std::vector<float> pieces;
  for (int w = 0; w < 4; w++) {  // four windows of 16 bytes
    model->forward(input.data() + w * 16, 1, 16, Model::Mode::Eval, stream.get());
    pieces.insert(pieces.end(), model->logits(), model->logits() + 16 * 256);
  }
  EXPECT_EQ(stream->patches(), 16);
  EXPECT_LE(rel_error(pieces, whole), 1e-5);
  stream->reset();
  model->forward(input.data(), 1, 16, Model::Mode::Eval, stream.get());
  EXPECT_LE(rel_error(model->logits(), whole.data(), 16 * 256), 1e-5);
}

// Carried-state training: Train forwards window by window with a stream score the bytes as one
// long window does, rows reset alone start over, and backward (detached state) is the gradient
// of the window's loss with the incoming state held fixed, by finite differences.
TEST(Streaming, TrainingWindowsWithCarriedStateEqualOneLongWindowAndRowsResetAlone) {
  GoldenTinyRetention g;
  auto& model = g.model;
  const auto& input = g.input;
  const ModelConfig& c = model->config();  // B = 2, T = 64, P = 4
  model->forward(input.data(), 2, c.T, Model::Mode::Train);
  const std::vector<float> whole(model->byte_losses(), model->byte_losses() + 2 * c.T);
  auto stream = model->new_stream(2);
  std::vector<uint8_t> window(2 * 16);
  for (int w = 0; w < 4; w++) {  // four windows of 16 bytes of both rows
    for (int b = 0; b < 2; b++) std::copy_n(input.data() + b * c.T + w * 16, 16, window.data() + b * 16);
    model->zero_grad();
    model->forward(window.data(), 2, 16, Model::Mode::Train, stream.get());
    model->backward();
    for (int b = 0; b < 2; b++)
      EXPECT_LE(rel_error(model->byte_losses() + b * 16, whole.data() + b * c.T + w * 16, 16), 1e-5) << "window " << w;
  }
  // Row 1 starts over at position 16 patches: its losses are those of a fresh stream (rotary
  // phases depend only on distances, so to rounding); row 0 goes on.
  stream->reset_row(1);
  for (int b = 0; b < 2; b++) std::copy_n(input.data() + b * c.T, 16, window.data() + b * 16);
  model->forward(window.data(), 2, 16, Model::Mode::Train, stream.get());
  EXPECT_LE(rel_error(model->byte_losses() + 16, whole.data() + c.T, 16), 1e-5);
  EXPECT_GT(rel_error(model->byte_losses(), whole.data(), 16), 1e-3);  // row 0 carries its state

  // Gradient of the second window's mean loss with the state after the first held fixed.
  stream->reset();
  for (int b = 0; b < 2; b++) std::copy_n(input.data() + b * c.T, 16, window.data() + b * 16);
  model->forward(window.data(), 2, 16, Model::Mode::Eval, stream.get());
  const std::vector<float> state = stream->export_states();
  const std::vector<int32_t> last = stream->last_patch();
  const std::vector<uint8_t> fresh = stream->fresh_rows();
  for (int b = 0; b < 2; b++) std::copy_n(input.data() + b * c.T + 16, 16, window.data() + b * 16);
  model->zero_grad();
  model->forward(window.data(), 2, 16, Model::Mode::Train, stream.get());
  model->backward();
  std::vector<float> analytic(model->grads(), model->grads() + model->num_params());
  std::vector<float> params(model->params(), model->params() + model->num_params());
  auto loss = [&] {
    std::copy(params.begin(), params.end(), model->params());
    stream->import_rows(state, 4, last, fresh);
    return model->forward(window.data(), 2, 16, Model::Mode::Eval, stream.get());
  };
  for (const TensorEntry& e : model->table()) {
    test::expect_gradient(e.name.c_str(), params, analytic, loss, 1e-2, 3e-2, 2e-4, largest_gradients(e, analytic));
  }
}

// A row whose stream ended inside its window (row_bytes < T): the padding is input but no target.
// The loss is the mean over the other bytes, the gradient does not depend on what the padding
// holds (bit for bit), and it is the gradient of that mean (finite differences).
TEST(Streaming, PaddingPastARowsBytesIsNeitherScoredNorTrained) {
  GoldenTinyRetention g;
  auto& model = g.model;
  const ModelConfig& c = model->config();  // B = 2, T = 64, P = 4
  const int row_bytes[2] = {c.T, 37};
  std::vector<uint8_t> x = g.input;
  std::fill(x.begin() + c.T + 37, x.end(), uint8_t(0));
  std::vector<uint8_t> y = x;
  for (int t = 37; t < c.T; t++) y[size_t(c.T + t)] = uint8_t(t * 7 + 3);  // other padding
  model->zero_grad();
  const double loss = model->forward(x.data(), 2, c.T, Model::Mode::Train, nullptr, row_bytes);
  double want = 0;
  for (int b = 0; b < 2; b++)
    for (int t = 0; t < row_bytes[b]; t++) want += model->byte_losses()[b * c.T + t];
  EXPECT_DOUBLE_EQ(loss, want / (c.T + 37));
  model->backward();
  const std::vector<float> grads(model->grads(), model->grads() + model->num_params());
  model->zero_grad();
  EXPECT_EQ(model->forward(y.data(), 2, c.T, Model::Mode::Train, nullptr, row_bytes), loss);
  model->backward();
  EXPECT_EQ(std::memcmp(grads.data(), model->grads(), grads.size() * sizeof(float)), 0);
  // Without row_bytes the padding is trained on: another gradient.
  model->zero_grad();
  model->forward(x.data(), 2, c.T, Model::Mode::Train);
  model->backward();
  EXPECT_GT(rel_error(model->grads(), grads.data(), grads.size()), 1e-3);
  // Finite differences of the masked mean, on the largest gradients of each tensor.
  std::vector<float> params(model->params(), model->params() + model->num_params());
  auto masked = [&] {
    std::copy(params.begin(), params.end(), model->params());
    return model->forward(x.data(), 2, c.T, Model::Mode::Eval, nullptr, row_bytes);
  };
  for (const TensorEntry& e : model->table())
    test::expect_gradient(e.name.c_str(), params, grads, masked, 1e-2, 3e-2, 2e-4, largest_gradients(e, grads));
  EXPECT_THROW(model->forward(x.data(), 2, c.T, Model::Mode::Eval, nullptr, std::array<int, 2>{c.T + 1, 0}.data()), Error);
}

TEST(Config, LongestMemorySpacesTheHeadsHorizonsUpToIt) {
  ModelConfig c = named_config("small");  // P = 8, H_G = 4
  const std::vector<float> retnet = retention_gammas(c);
  for (int h = 0; h < c.H_G; h++) EXPECT_EQ(retnet[size_t(h)], retention_gamma(h));
  c.longest_memory = 1 << 20;  // 2^17 patches: horizons 2^5, 2^9, 2^13, 2^17 patches
  const std::vector<float> g = retention_gammas(c);
  for (int h = 0; h < c.H_G; h++) EXPECT_FLOAT_EQ(g[size_t(h)], float(1.0 - std::ldexp(1.0, -(5 + 4 * h)))) << h;
  const std::string json = config_to_json(c);
  EXPECT_NE(json.find("\"longest_memory\":1048576"), std::string::npos);
  EXPECT_EQ(config_to_json(named_config("small")).find("longest_memory"), std::string::npos);  // old files' JSON
  EXPECT_EQ(parse_model_config(nlohmann::json::parse(json), "t"), c);
  c.longest_memory = 100;
  expect_error_containing([&] { validate_config(c, "x.json"); }, "longest_memory = 100 must be 0 or between");
}

}  // namespace
}  // namespace rb

namespace rb {
namespace {

// Batch invariance of the whole model: a sequence's logits do not depend on how many other
// sequences share the forward (matrix products of 1 row or thousands take the same bits).
TEST(BatchInvariance, SequenceLogitsAloneEqualInBatchesOf7And64) {
  auto be = make_cpu_backend(2);
  auto model = Model::load(kTestDir + "/golden/tiny_retention.safetensors", *be);
  const int T = 64, n = 64;
  Rng rng(11);
  std::vector<uint8_t> x(size_t(n) * T);
  for (auto& b : x) b = uint8_t(rng.below(256));
  for (bool recurrent : {false, true}) {
    model->retention_recurrent = recurrent;
    model->forward(x.data() + 3 * T, 1, T, Model::Mode::Eval);  // sequence 3 alone
    const std::vector<float> alone(model->logits(), model->logits() + T * 256);
    for (int B : {7, 64}) {
      model->forward(x.data(), B, T, Model::Mode::Eval);
      const std::vector<float> in_batch(model->logits() + 3 * T * 256, model->logits() + 4 * T * 256);
      EXPECT_TRUE(test::bitwise_equal(alone, in_batch)) << "B = " << B << (recurrent ? " recurrent" : " chunkwise");
    }
  }
}

// A golden hash of `small`'s logits on fixed input: every CPU path must reproduce it, on any
// machine. If a deliberate change to the arithmetic moves it, bump kNumericsVersion
// (kernels/numerics.h) and record the new hash here: .rbz files from the old contract then no
// longer claim to decode.
TEST(Golden, SmallLogitsHashIsTheSameOnEveryPath) {
  constexpr uint64_t kGoldenHash = 0x04ae0375a9ebcd85ull;  // numerics contract v1
  for (CpuPath path : test::runnable_cpu_paths()) {
    SCOPED_TRACE(cpu_path_name(path));
    auto be = make_cpu_backend(2, path);
    Model model(named_config("small"), *be);
    model.init_random(1);
    std::ifstream in(kTestDir + "/fixtures/text2k.txt", std::ios::binary);
    std::vector<uint8_t> x((std::istreambuf_iterator<char>(in)), {});
    x.resize(1024);
    model.forward(x.data(), 2, 512, Model::Mode::Eval);
    uint64_t h = 1469598103934665603ull;
    const auto* bytes = reinterpret_cast<const uint8_t*>(model.logits());
    for (size_t i = 0; i < size_t(1024) * 256 * sizeof(float); i++) h = (h ^ bytes[i]) * 1099511628211ull;
    EXPECT_EQ(h, kGoldenHash) << std::hex << "logits hash 0x" << h;
  }
}

}  // namespace
}  // namespace rb
