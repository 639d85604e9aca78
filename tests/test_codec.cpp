// Lossless compression: the rANS coder, the probability tables, and .rbz round trips that must be
// bit-exact across CPU paths and thread counts, cost within 0.5% of the model's cross-entropy,
// and refuse damaged input with an error naming the file.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "codecs/byte_frequencies.h"
#include "datasets/media.h"
#include "codecs/rans.h"
#include "codecs/rbz.h"
#include "codecs/segment_coder.h"
#include "src/common/errors.h"
#include "tests/test_util.h"
#include "trainer/trainer.h"

namespace rb {
namespace {

namespace fs = std::filesystem;
using test::expect_error_containing;

std::string temp_path(const std::string& name) {
  return testing::TempDir() + "retbyte_codec_" + std::to_string(getpid()) + "_" + name;
}

std::vector<uint8_t> slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), {});
}

std::vector<uint8_t> repetitive_text(size_t n) {
  const std::string s =
      "In the beginning the model knew nothing; then it read the same lines again and again, "
      "and the lines became easy to predict. ";
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; i++) v[i] = uint8_t(s[i % s.size()]);
  return v;
}

std::vector<uint8_t> random_bytes(size_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = uint8_t(rng.below(256));
  return v;
}

TEST(Rans, RoundTripsSkewedTablesAtNearlyTheirEntropy) {
  Rng rng(3);
  // A few fixed tables, from nearly uniform to one symbol holding almost everything.
  std::vector<std::vector<uint32_t>> tables;
  for (double sharp : {0.0, 2.0, 8.0, 20.0}) {
    float logits[256];
    for (int i = 0; i < 256; i++) logits[i] = float(sharp * rng.normal());
    std::vector<uint32_t> cum(257);
    logits_to_cumulative(logits, cum.data());
    tables.push_back(cum);
  }
  const size_t n = 20000;
  std::vector<int> table_of(n), symbol(n);
  double bits = 0;
  for (size_t i = 0; i < n; i++) {
    table_of[i] = int(rng.below(4));
    const auto& cum = tables[size_t(table_of[i])];
    symbol[i] = symbol_at(cum.data(), uint32_t(rng.below(kFreqTotal)));  // drawn from the table itself
    bits -= std::log2(double(cum[size_t(symbol[i]) + 1] - cum[size_t(symbol[i])]) / kFreqTotal);
  }
  RansEncoder enc;
  for (size_t i = n; i-- > 0;) {
    const auto& cum = tables[size_t(table_of[i])];
    enc.put(cum[size_t(symbol[i])], cum[size_t(symbol[i]) + 1] - cum[size_t(symbol[i])]);
  }
  const std::vector<uint8_t> coded = enc.finish();
  EXPECT_LE(double(coded.size()), bits / 8 * 1.001 + 16) << "entropy " << bits / 8 << " bytes";
  RansDecoder dec(coded.data(), coded.size());
  for (size_t i = 0; i < n; i++) {
    const auto& cum = tables[size_t(table_of[i])];
    const int s = symbol_at(cum.data(), dec.slot());
    ASSERT_EQ(s, symbol[i]) << "symbol " << i;
    ASSERT_TRUE(dec.advance(cum[size_t(s)], cum[size_t(s) + 1] - cum[size_t(s)]));
  }
  EXPECT_TRUE(dec.finished_cleanly());
}

// logits_to_cumulative as it was first written: one scalar pass per step, with branches. The
// library's form runs in vector lanes (and splits the maximum into interleaved runs); every
// archive ever written depends on the two giving the same table.
void one_pass_cumulative(const float* logits, uint32_t cum[257]) {
  auto exp_nonpositive = [](float x) {
    float t = x * 1.44269504f;
    if (!(t >= -126.0f)) t = -126.0f;
    int n = int(t);
    if (float(n) > t) n -= 1;
    const float f = t - float(n);
    float p = 1.5316e-4f;
    for (float c : {1.3333558e-3f, 9.6181291e-3f, 5.5504109e-2f, 2.4022651e-1f, 6.9314718e-1f, 1.0f}) p = p * f + c;
    const uint32_t bits = uint32_t(n + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, sizeof scale);
    return p * scale;
  };
  float mx = logits[0];
  for (int i = 1; i < 256; i++) mx = logits[i] > mx ? logits[i] : mx;
  float e[256];
  double sum = 0.0;
  for (int i = 0; i < 256; i++) sum += double(e[i] = exp_nonpositive(logits[i] - mx));
  if (!(sum >= 1.0 && sum <= 256.0)) {
    for (int i = 0; i <= 256; i++) cum[i] = uint32_t(i) << (kFreqBits - 8);
    return;
  }
  const double scale = double(kFreqTotal - 256) / sum;
  uint32_t freq[256], total = 0;
  int best = 0;
  for (int i = 0; i < 256; i++) {
    freq[i] = 1 + uint32_t(double(e[i]) * scale);
    total += freq[i];
    if (e[i] > e[best]) best = i;
  }
  freq[best] = uint32_t(int64_t(freq[best]) + int64_t(kFreqTotal) - int64_t(total));
  cum[0] = 0;
  for (int i = 0; i < 256; i++) cum[i + 1] = cum[i] + freq[i];
}

TEST(ByteFrequencies, TheVectorFormGivesTheOnePassTable) {
  Rng rng(11);
  const float inf = INFINITY, nan = NAN;
  for (int trial = 0; trial < 3000; trial++) {
    std::vector<float> logits(256);
    const double sharp = trial % 4 == 0 ? 0.0 : trial % 4 == 1 ? 3.0 : trial % 4 == 2 ? 30.0 : 300.0;
    for (float& v : logits) v = float(sharp * rng.normal());
    // Ties for the maximum (the first must win), signed zeros, and non-finite values anywhere.
    const int kind = trial % 9;
    if (kind == 1) logits[rng.below(256)] = logits[rng.below(256)] = 1e3f;
    if (kind == 2) logits.assign(256, -0.0f), logits[rng.below(256)] = 0.0f;
    if (kind == 3) logits[rng.below(256)] = nan;
    if (kind == 4) logits[0] = nan;
    if (kind == 5) logits[rng.below(256)] = inf;
    if (kind == 6) logits[rng.below(256)] = -inf;
    if (kind == 7) logits.assign(256, 5.0f);
    if (kind == 8) logits[17] = logits[200] = 88.0f, logits[5] = 87.99999f;
    uint32_t got[257], want[257];
    logits_to_cumulative(logits.data(), got);
    one_pass_cumulative(logits.data(), want);
    ASSERT_EQ(0, std::memcmp(got, want, sizeof got)) << "trial " << trial;
  }
}

TEST(ByteFrequencies, EverySymbolKeepsAShareWhateverTheLogits) {
  const float inf = INFINITY, nan = NAN;
  std::vector<std::vector<float>> cases = {std::vector<float>(256, 0.0f), std::vector<float>(256, -1e30f)};
  cases.push_back(std::vector<float>(256, 0.0f));
  cases.back()[7] = 1e4f;  // one certain symbol
  cases.push_back(std::vector<float>(256, -inf));
  cases.back()[9] = 0.0f;
  cases.push_back(std::vector<float>(256, nan));  // damaged weights: still a valid table
  cases.push_back(std::vector<float>(256, 0.0f));
  cases.back()[3] = inf;
  for (const auto& logits : cases) {
    uint32_t cum[257];
    logits_to_cumulative(logits.data(), cum);
    EXPECT_EQ(cum[0], 0u);
    EXPECT_EQ(cum[256], kFreqTotal);
    for (int i = 0; i < 256; i++) EXPECT_GE(cum[i + 1], cum[i] + 1) << "symbol " << i;
    for (uint32_t slot : {0u, 1u, kFreqTotal / 2, kFreqTotal - 1}) {
      const int s = symbol_at(cum, slot);
      EXPECT_LE(cum[s], slot);
      EXPECT_LT(slot, cum[s + 1]);
    }
  }
}

// A tiny model trained briefly on repetitive text, so its predictions are confident (the coder's
// overhead shows most where the model is sure).
class Codec : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(temp_path("model"));
    fs::create_directories(*dir_);
    const std::string data = *dir_ + "/text.txt";
    {
      const auto t = repetitive_text(20000);
      std::ofstream(data, std::ios::binary).write(reinterpret_cast<const char*>(t.data()), long(t.size()));
    }
    TrainConfig c;
    c.model = named_config("tiny");
    c.model.T = 128;
    c.adamw.lr = 3e-3f;
    c.warmup_steps = 3;
    c.val_every = 0;
    c.checkpoint_every = 0;
    auto be = make_cpu_backend(2);
    Trainer trainer(c, {data}, *dir_ + "/run", *be, false);
    trainer.run(60, 0, nullptr, nullptr);
    trainer.save_checkpoint();
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete dir_;
  }
  static std::string model_path() { return *dir_ + "/run/model.safetensors"; }
  static std::string* dir_;
};
std::string* Codec::dir_ = nullptr;

struct Loaded {
  std::unique_ptr<Backend> be;
  std::unique_ptr<Model> model;
  Loaded(const std::string& path, int threads, CpuPath cpu = best_cpu_path())
      : be(make_cpu_backend(threads, cpu)), model(Model::load(path, *be)) {}
};

// Encodes `in` on every CPU path and thread count (the same archive each time) and decodes that
// archive on every one (the same file each time); returns the archive.
std::vector<uint8_t> expect_the_same_archive_and_file_on_every_path(const std::vector<uint8_t>& in, const CompressOptions& o,
                                                                    const std::string& model) {
  std::vector<uint8_t> reference;
  for (CpuPath enc_path : test::runnable_cpu_paths())
    for (int enc_threads : {1, 2}) {
      Loaded enc(model, enc_threads, enc_path);
      const auto rbz = compress_file("in.txt", in, enc.model.get(), o);
      if (reference.empty()) reference = rbz;
      EXPECT_EQ(rbz, reference) << "encoded on " << cpu_path_name(enc_path) << " with " << enc_threads << " threads";
    }
  for (CpuPath dec_path : test::runnable_cpu_paths())
    for (int dec_threads : {1, 2}) {
      Loaded dec(model, dec_threads, dec_path);
      EXPECT_EQ(decompress_file("in.txt.rbz", reference, dec.model.get()), in)
          << "decoded on " << cpu_path_name(dec_path) << " with " << dec_threads << " threads";
    }
  return reference;
}

TEST_F(Codec, RoundTripsEverySizeAroundPatchSegmentAndGroupBoundaries) {
  Loaded m(model_path(), 2);
  const int P = m.model->config().P;
  for (size_t n : {size_t(0), size_t(1), size_t(P - 1), size_t(P), size_t(P + 1), size_t(63), size_t(64), size_t(65),
                   size_t(64 * 7 + 3), size_t(3000)}) {
    for (int kind = 0; kind < 2; kind++) {
      const std::vector<uint8_t> in = kind ? random_bytes(n, n) : repetitive_text(n);
      for (bool model_only : {true, false}) {
        CompressOptions o;
        o.segment_bytes = 64;  // many segments, several lockstep groups, a ragged last one
        o.lockstep = 3;
        o.model_only = model_only;
        CompressStats st;
        const auto rbz = compress_file("in.bin", in, m.model.get(), o, &st);
        if (model_only && n > 0) {
          EXPECT_EQ(st.model_blocks, (n + 63) / 64) << n;
        }
        const auto out = decompress_file("in.bin.rbz", rbz, m.model.get(), nullptr, 3);
        ASSERT_EQ(out, in) << "size " << n << (kind ? " random" : " text") << (model_only ? " model-coded" : "");
        // Any lockstep width decodes it.
        if (model_only && n > 0) {
          EXPECT_EQ(decompress_file("in.bin.rbz", rbz, m.model.get(), nullptr, 1), in);
        }
      }
    }
  }
}

TEST_F(Codec, EncodesAndDecodesBitExactlyOnEveryPathAndThreadCount) {
  const std::vector<uint8_t> in = repetitive_text(2500);
  CompressOptions o;
  o.segment_bytes = 500;
  o.lockstep = 4;
  o.model_only = true;
  expect_the_same_archive_and_file_on_every_path(in, o, model_path());
}

// The default codes a file as one context (one model block; the header says so); --lanes N cuts
// N lanes of at least 64 KiB and --fast fills the lockstep batch. The default round-trips on every
// CPU path and thread count, and a lane that knows the file's beginning codes its end better.
TEST_F(Codec, EachFileIsOneContextByDefaultAndLanesOrFastCutIt) {
  const std::vector<uint8_t> in = repetitive_text(3000);
  CompressOptions o;
  o.model_only = true;
  o.lockstep = 4;
  const std::vector<uint8_t> reference = expect_the_same_archive_and_file_on_every_path(in, o, model_path());
  EXPECT_TRUE(read_rbz_header("in.txt.rbz", reference).one_context);
  // Cutting (encoding only: decoding lanes is what the other tests do).
  const std::vector<uint8_t> big = repetitive_text(140000);
  Loaded m(model_path(), 2);
  CompressStats st;
  auto rbz = compress_file("big.txt", big, m.model.get(), o, &st);
  EXPECT_EQ(st.blocks, 1u);
  o.lanes = 2;  // 70,000 bytes each
  rbz = compress_file("big.txt", big, m.model.get(), o, &st);
  EXPECT_EQ(st.blocks, 2u);
  EXPECT_FALSE(read_rbz_header("big.txt.rbz", rbz).one_context);
  o.lanes = 10;  // lanes of at least 64 KiB: 3
  compress_file("big.txt", big, m.model.get(), o, &st);
  EXPECT_EQ(st.blocks, 3u);
  o.lanes = 0;  // --fast: n / lockstep = 35,000 -> 64 KiB lanes
  compress_file("big.txt", big, m.model.get(), o, &st);
  EXPECT_EQ(st.blocks, 3u);
  EXPECT_EQ(segment_bytes_for(big.size(), 0, 4), choose_segment_bytes(big.size(), 4));
  EXPECT_EQ(segment_bytes_for(uint64_t(40) << 20, 1, 32), size_t(16) << 20);  // past 16 MiB: lanes of 16 MiB
  EXPECT_EQ(segment_bytes_for(1000, 1, 32), 1000u);
}

// Several files side by side (compress_files, decompress_files: each file one context, the rows
// of one batch): every archive is byte for byte the one compress_file writes for its file alone,
// on every CPU path and thread count, and decoding side by side restores every file, archives that
// cannot join a batch (several lanes, stored blocks, another context length) included; a damaged
// archive among them is an error naming it, or, with its failure collected, costs only itself.
TEST_F(Codec, FilesSideBySideGiveEachFilesOwnArchiveOnEveryPath) {
  const std::string png = temp_path("side.png");
  Image img{11, 7, 3, std::vector<uint8_t>(11 * 7 * 3)};
  for (size_t i = 0; i < img.pixels.size(); i++) img.pixels[i] = uint8_t(i * 5 % 253);
  write_png(png, img);
  std::vector<uint8_t> long_text = repetitive_text(3000), digits(1777);
  for (size_t i = 0; i < digits.size(); i++) digits[i] = uint8_t('0' + i * i % 10);
  const std::vector<std::vector<uint8_t>> files = {long_text, random_bytes(1000, 5), {}, repetitive_text(5), slurp(png),
                                                   digits,    repetitive_text(900)};
  const std::vector<std::string> paths = {"a.txt", "b.bin", "c.empty", "d.txt", png, "f.txt", "g.txt"};
  std::vector<const std::vector<uint8_t>*> views;
  for (const auto& f : files) views.push_back(&f);
  CompressOptions o;
  o.lockstep = 2;                 // several groups, a ragged last one
  o.whole_file_fallback = false;  // the image stays in image mode
  std::vector<std::vector<uint8_t>> alone;
  {
    Loaded m(model_path(), 2);
    for (size_t i = 0; i < files.size(); i++) alone.push_back(compress_file(paths[i], files[i], m.model.get(), o));
  }
  EXPECT_TRUE(read_rbz_header("a.txt.rbz", alone[0]).one_context);
  EXPECT_TRUE(read_rbz_header("f.txt.rbz", alone[5]).one_context);
  EXPECT_TRUE(read_rbz_header(png + ".rbz", alone[4]).mode == RbzMode::Image);
  // f.txt again in two lanes: it decodes on its own between the others.
  CompressOptions two_lanes = o;
  two_lanes.segment_bytes = 896;
  two_lanes.model_only = true;
  std::vector<std::vector<uint8_t>> archives = alone;
  std::vector<std::string> archive_paths;
  for (const std::string& p : paths) archive_paths.push_back(p + ".rbz");
  {
    Loaded m(model_path(), 2);
    archives.push_back(compress_file("f2.txt", digits, m.model.get(), two_lanes));
    archive_paths.push_back("f2.txt.rbz");
    archives.push_back(alone[6]);
    archive_paths.push_back("g2.txt.rbz");
  }
  EXPECT_FALSE(read_rbz_header("f2.txt.rbz", archives[7]).one_context);
  std::vector<const std::vector<uint8_t>*> archive_views;
  for (const auto& a : archives) archive_views.push_back(&a);
  for (CpuPath path : test::runnable_cpu_paths())
    for (int threads : {1, 2}) {
      SCOPED_TRACE(std::string(cpu_path_name(path)) + ", " + std::to_string(threads) + " threads");
      Loaded m(model_path(), threads, path);
      std::vector<CompressStats> stats;
      const auto together = compress_files(paths, views, m.model.get(), o, &stats);
      ASSERT_EQ(together.size(), files.size());
      ASSERT_EQ(stats.size(), files.size());
      for (size_t i = 0; i < files.size(); i++) EXPECT_EQ(together[i], alone[i]) << paths[i];
      EXPECT_EQ(stats[4].mode, RbzMode::Image);
      EXPECT_EQ(stats[0].model_blocks, 1u);
      const auto restored = decompress_files(archive_paths, archive_views, m.model.get(), nullptr, 3);
      ASSERT_EQ(restored.size(), archives.size());
      for (size_t i = 0; i < archives.size(); i++) {
        const std::vector<uint8_t>& want = i == 7 ? digits : i == 8 ? files[6] : i == 4 ? restored[4] : files[i];
        EXPECT_EQ(restored[i], want) << archive_paths[i];
      }
      EXPECT_EQ(restored[4], decompress_file(png + ".rbz", alone[4], m.model.get()));
    }
  // A damaged lane in the middle of a batch: the error names its archive.
  std::vector<uint8_t> damaged = alone[5];
  damaged[damaged.size() - 3] ^= 0x40;
  archive_views[5] = &damaged;
  Loaded m(model_path(), 2);
  expect_error_containing([&] { decompress_files(archive_paths, archive_views, m.model.get(), nullptr, 3); }, "f.txt.rbz");
  // Collecting failures instead: the damaged archive's error is its own, every other file is restored.
  std::vector<std::exception_ptr> failures;
  const auto restored = decompress_files(archive_paths, archive_views, m.model.get(), nullptr, 3, &failures);
  ASSERT_EQ(failures.size(), archives.size());
  for (size_t i = 0; i < archives.size(); i++) {
    if (i == 5) {
      ASSERT_TRUE(failures[i]);
      expect_error_containing([&] { std::rethrow_exception(failures[i]); }, "f.txt.rbz");
      EXPECT_TRUE(restored[i].empty());
      continue;
    }
    EXPECT_FALSE(failures[i]) << archive_paths[i];
    const std::vector<uint8_t>& want = i == 7 ? digits : i == 8 ? files[6] : files[i];
    if (i != 4) {
      EXPECT_EQ(restored[i], want) << archive_paths[i];
    }
  }
  EXPECT_EQ(restored[4], decompress_file(png + ".rbz", alone[4], m.model.get()));
  fs::remove(png);
}

// Lanes side by side with one damaged payload: with lane_errors the damaged lane alone fails and
// the others decode to their bytes in the same batch; without, the batch throws.
TEST_F(Codec, ADamagedLaneStopsOnlyItselfWhenLaneErrorsAreCollected) {
  Loaded m(model_path(), 2);
  const int P = m.model->config().P;
  const std::vector<std::vector<uint8_t>> segs = {repetitive_text(700), random_bytes(900, 3), repetitive_text(500)};
  std::vector<std::vector<uint8_t>> ctx(3);
  for (int i = 0; i < 3; i++) ctx[size_t(i)].assign(size_t(P), uint8_t('a' + i));
  std::vector<ByteSpan> contexts, segments;
  for (int i = 0; i < 3; i++) contexts.push_back({ctx[size_t(i)].data(), ctx[size_t(i)].size()});
  for (const auto& sg : segs) segments.push_back({sg.data(), sg.size()});
  std::vector<std::vector<uint8_t>> payloads = encode_lanes(*m.model, contexts, segments);
  ASSERT_EQ(payloads.size(), 3u);
  for (int damage = 0; damage < 2; damage++) {
    std::vector<uint8_t> bad = payloads[1];
    if (damage == 0)
      bad.resize(bad.size() / 2);  // cut: refused before it decodes
    else
      bad[bad.size() / 2] ^= 0x21;  // decodes to other bytes, found at its end or its checksum
    std::vector<ByteSpan> pl = {
        {payloads[0].data(), payloads[0].size()}, {bad.data(), bad.size()}, {payloads[2].data(), payloads[2].size()}};
    std::vector<std::vector<uint8_t>> outs(3);
    std::vector<MutableByteSpan> out_spans;
    for (int i = 0; i < 3; i++) {
      outs[size_t(i)].assign(segs[size_t(i)].size(), 0);
      out_spans.push_back({outs[size_t(i)].data(), outs[size_t(i)].size()});
    }
    std::vector<std::string> lane_errors(3);
    SegmentCoderOptions o;
    o.lane_errors = &lane_errors;
    decode_lanes(*m.model, contexts, pl, out_spans, o);
    EXPECT_TRUE(lane_errors[0].empty() && lane_errors[2].empty()) << lane_errors[0] << lane_errors[2];
    EXPECT_EQ(outs[0], segs[0]);
    EXPECT_EQ(outs[2], segs[2]);
    if (damage == 0) {
      EXPECT_NE(lane_errors[1].find("model-coded block"), std::string::npos) << lane_errors[1];
    } else {
      EXPECT_TRUE(!lane_errors[1].empty() || outs[1] != segs[1]);  // a flipped bit may still end cleanly
    }
    if (damage == 0) EXPECT_THROW(decode_lanes(*m.model, contexts, pl, out_spans, {}), Error);
  }
}

// Every mixer version: 3 (bitwise, a file's lanes sharing statistics: the default), 2 (bitwise,
// each lane on its own; what one lane is written as) and 1 (byte-wise), each recorded in the
// header and decoded on every CPU path and thread count; all code repetitive text in well under a
// bit per byte, shared statistics best; an unknown version is refused.
TEST_F(Codec, EveryMixerVersionIsRecordedAndDecodesOnEveryPath) {
  std::vector<uint8_t> in = repetitive_text(4000);
  CompressOptions o;
  o.model_only = true;
  o.lockstep = 2;          // shared lanes step in one group whatever the lockstep
  o.segment_bytes = 1500;  // lanes: three mixers side by side
  std::vector<size_t> sizes;
  for (uint8_t version : {uint8_t(1), uint8_t(2), uint8_t(3)}) {
    o.mixer_version = version;
    const std::vector<uint8_t> rbz = expect_the_same_archive_and_file_on_every_path(in, o, model_path());
    const RbzHeaderInfo info = read_rbz_header("in.txt.rbz", rbz);
    EXPECT_TRUE(info.mixed);
    EXPECT_EQ(info.mixer_version, version);
    sizes.push_back(rbz.size());
  }
  for (size_t size : sizes) EXPECT_LT(double(size), 0.5 * double(in.size()) / 8);
  EXPECT_LT(sizes[2], sizes[1]) << "the later lanes code with what the first learned";
  Loaded m(model_path(), 1);
  o.segment_bytes = 0;  // one lane: version 3 codes it as version 2 does, and says so
  const auto one = compress_file("in.txt", in, m.model.get(), o);
  EXPECT_EQ(read_rbz_header("in.txt.rbz", one).mixer_version, 2);
  o.mixer_version = 2;
  EXPECT_EQ(compress_file("in.txt", in, m.model.get(), o), one);
  o.mixer_version = 4;
  expect_error_containing([&] { compress_file("in.txt", in, m.model.get(), o); }, "context mixer version 4");
}

// Online adaptation: encoder and decoder take the same training steps between rounds, so a file
// adapted on one CPU path and thread count decodes on every other; a lane stored with zstd or raw
// still feeds the adaptation (the decoder knows its bytes up front); the caller's weights come back.
TEST_F(Codec, AdaptedFilesDecodeBitExactlyOnEveryPathAndThreadCount) {
  std::vector<uint8_t> in = repetitive_text(1536);
  for (size_t i = 0; i < 1500; i++) in.push_back(uint8_t("the model adapts to new words "[i % 30]));
  CompressOptions o;
  o.segment_bytes = 1536;  // two lanes, known text and new text; a round after 1024 positions
  o.lockstep = 4;
  o.model_only = true;
  o.adapt = AdaptSettings{1024, 1, 2, 64, 3e-3f};
  std::vector<uint8_t> reference;
  CompressStats st;
  for (CpuPath enc_path : test::runnable_cpu_paths())
    for (int enc_threads : {1, 2}) {
      Loaded enc(model_path(), enc_threads, enc_path);
      const std::string before = model_fingerprint(*enc.model);
      const auto rbz = compress_file("in.bin", in, enc.model.get(), o, &st);
      EXPECT_EQ(model_fingerprint(*enc.model), before) << "the pretrained weights are restored";
      if (reference.empty()) reference = rbz;
      EXPECT_EQ(rbz, reference) << "encoded on " << cpu_path_name(enc_path) << " with " << enc_threads << " threads";
    }
  EXPECT_TRUE(st.adapted);
  EXPECT_GT(st.adapt_bytes_trained, 0u);
  ASSERT_TRUE(read_rbz_header("in.bin.rbz", reference).adapt.has_value());
  EXPECT_EQ(*read_rbz_header("in.bin.rbz", reference).adapt, *o.adapt);
  for (CpuPath dec_path : test::runnable_cpu_paths())
    for (int dec_threads : {1, 2}) {
      Loaded dec(model_path(), dec_threads, dec_path);
      EXPECT_EQ(decompress_file("in.bin.rbz", reference, dec.model.get()), in)
          << "decoded on " << cpu_path_name(dec_path) << " with " << dec_threads << " threads";
    }
  // Adaptation changed the model's predictions: without it the same lanes cost other bits (seen
  // without mixing, whose 12-bit probabilities can hide the test model's small changes).
  Loaded plain(model_path(), 2);
  CompressOptions no_adapt = o, unmixed = o;
  no_adapt.adapt.reset();
  no_adapt.mix = unmixed.mix = false;
  CompressStats st0, st1;
  const auto rbz0 = compress_file("in.bin", in, plain.model.get(), no_adapt, &st0);
  compress_file("in.bin", in, plain.model.get(), unmixed, &st1);
  EXPECT_NE(st0.model_bits, st1.model_bits);
  EXPECT_FALSE(read_rbz_header("in.bin.rbz", rbz0).adapt.has_value());
}

TEST(Adaptation, SettingsThatAskForTooMuchWorkOrMemoryAreRefused) {
  EXPECT_NO_THROW(check_adapt_settings(AdaptSettings{}, 8, "x.rbz"));
  expect_error_containing(
      [] {
        check_adapt_settings(AdaptSettings{16384, 64, 64, 8192, 1e-4f}, 8, "x.rbz");
      },
      "x.rbz: adaptation of 33554432 training bytes per round");
  expect_error_containing([] { check_adapt_settings(AdaptSettings{1000, 1, 1, 64, 1e-4f}, 8, "x.rbz"); }, "a multiple of 1024");
  expect_error_containing([] { check_adapt_settings(AdaptSettings{3072, 1, 1, 66, 1e-4f}, 8, "x.rbz"); }, "a multiple of P = 8");
  expect_error_containing([] { check_adapt_settings(AdaptSettings{1024, 1, 1, 64, -1.0f}, 8, "x.rbz"); }, "learning rate");
  expect_error_containing(
      [] {
        check_adapt_settings(AdaptSettings{1024, 1, 1, 64, std::nanf("")}, 8, "x.rbz");
      },
      "learning rate");
}

TEST_F(Codec, AStoredLaneStillFeedsTheAdaptation) {
  // The decoder knows a zstd or raw lane's bytes before it decodes the model-coded ones, and
  // trains on their prefixes exactly as the encoder did.
  std::vector<uint8_t> in = repetitive_text(6144);
  const std::vector<uint8_t> noise = random_bytes(2048, 4);
  std::copy(noise.begin(), noise.end(), in.begin() + 2048);
  CompressOptions o;
  o.segment_bytes = 2048;
  o.lockstep = 4;
  o.whole_file_fallback = false;
  o.mixer_version = 2;  // lanes on their own statistics may be stored (shared ones are all model-coded)
  o.adapt = AdaptSettings{1024, 2, 2, 128, 1e-4f};
  Loaded m(model_path(), 2);
  CompressStats st;
  const auto rbz = compress_file("in.bin", in, m.model.get(), o, &st);
  EXPECT_EQ(st.raw_blocks, 1u);
  EXPECT_EQ(st.model_blocks, 2u);
  ASSERT_TRUE(st.adapted);
  EXPECT_EQ(decompress_file("in.bin.rbz", rbz, m.model.get()), in);
}

TEST_F(Codec, CodedSizeIsWithinHalfAPercentOfTheModelsCrossEntropy) {
  Loaded m(model_path(), 2);
  Model& model = *m.model;
  const int P = model.config().P;
  const std::vector<uint8_t> in = repetitive_text(40000);
  // The model's cross-entropy on the same stream (text header, then the bytes), recurrent form.
  std::vector<uint8_t> stream = make_header(Modality::Text, P);
  const size_t C = stream.size();
  stream.insert(stream.end(), in.begin(), in.end());
  const int T = int((stream.size() + P - 1) / P * P);
  stream.resize(size_t(T), 0);
  model.retention_recurrent = true;
  model.forward(stream.data(), 1, T, Model::Mode::Eval);
  model.retention_recurrent = false;
  std::vector<float> losses(static_cast<size_t>(T));
  model.backend().download(losses.data(), model.byte_losses(), losses.size());
  double bits = 0;
  for (size_t i = C; i < C + in.size(); i++) bits += losses[i] / std::log(2.0);
  CompressOptions o;
  o.segment_bytes = in.size();  // one segment: the same stream as above
  o.model_only = true;
  o.mix = false;  // the model's own tables (the mixer's match model codes this text in a few bytes)
  CompressStats st;
  const auto rbz = compress_file("in.txt", in, &model, o, &st);
  ASSERT_EQ(st.model_blocks, 1u);
  const double payload = double(st.model_payload_bytes);
  std::printf("cross-entropy %.1f bytes (%.3f bits per byte), coded %.0f bytes\n", bits / 8, bits / double(in.size()), payload);
  EXPECT_LE(payload, bits / 8 * 1.005 + 64);
  EXPECT_GE(payload, bits / 8 * 0.99);  // no coder beats the entropy: a check on the measurement
  EXPECT_EQ(decompress_file("in.txt.rbz", rbz, &model), in);
}

// Context mixing (codecs/context_mixer.h) is on by default and recorded in the header; a file
// coded with or without it decodes, and on text that repeats itself the match model wins by far.
TEST_F(Codec, MixingIsRecordedAndShrinksRepeats) {
  Loaded m(model_path(), 2);
  std::vector<uint8_t> in = random_bytes(3000, 9);
  const std::vector<uint8_t> copy = in;
  in.insert(in.end(), copy.begin(), copy.end());
  CompressOptions o;
  o.model_only = true;
  o.segment_bytes = in.size();
  CompressStats mixed_st, plain_st;
  const auto mixed = compress_file("in.bin", in, m.model.get(), o, &mixed_st);
  o.mix = false;
  const auto plain = compress_file("in.bin", in, m.model.get(), o, &plain_st);
  EXPECT_TRUE(mixed_st.mixed);
  EXPECT_FALSE(plain_st.mixed);
  EXPECT_TRUE(read_rbz_header("in.bin.rbz", mixed).mixed);
  EXPECT_FALSE(read_rbz_header("in.bin.rbz", plain).mixed);
  // The second copy costs almost nothing with the match model; without it, as much as the first.
  EXPECT_LT(double(mixed.size()), 0.6 * double(plain.size()));
  EXPECT_EQ(decompress_file("in.bin.rbz", mixed, m.model.get()), in);
  EXPECT_EQ(decompress_file("in.bin.rbz", plain, m.model.get()), in);
}

// Both media forms: the pixels or samples themselves, and their residuals (the model then codes
// residuals, and the decoder turns them back before it checks the checksum).
TEST_F(Codec, MediaModesRestorePixelsFlacSamplesAndWavBytes) {
  Loaded m(model_path(), 2);
  Loaded portable(model_path(), 1, CpuPath::Portable);
  for (MediaForm form : {MediaForm::Plain, MediaForm::Residual}) {
    SCOPED_TRACE(media_form_name(form));
    m.model->media_form = portable.model->media_form = form;
    CompressOptions o;
    o.model_only = true;
    // A PNG: decompresses to a PNG with the same pixels.
    Image img{13, 5, 3, std::vector<uint8_t>(13 * 5 * 3)};
    for (size_t i = 0; i < img.pixels.size(); i++) img.pixels[i] = uint8_t(i * 7 % 251);
    const std::string png = temp_path("i.png"), back = temp_path("back.png");
    write_png(png, img);
    CompressStats st;
    const auto rbz = compress_file(png, slurp(png), m.model.get(), o, &st);
    EXPECT_EQ(st.mode, RbzMode::Image);
    EXPECT_EQ(st.content_bytes, img.pixels.size());
    const auto restored = decompress_file(png + ".rbz", rbz, m.model.get());
    EXPECT_EQ(decompress_file(png + ".rbz", rbz, portable.model.get()), restored) << "decoded on the portable path, 1 thread";
    std::ofstream(back, std::ios::binary).write(reinterpret_cast<const char*>(restored.data()), long(restored.size()));
    const Image again = read_image(back);
    EXPECT_EQ(again.width, img.width);
    EXPECT_EQ(again.height, img.height);
    EXPECT_EQ(again.channels, img.channels);
    EXPECT_EQ(again.pixels, img.pixels);
    // A WAV with a chunk before the samples and bytes after them: the identical file comes back.
    Audio a{8000, 2, std::vector<int16_t>(2 * 300)};
    for (size_t i = 0; i < a.samples.size(); i++) a.samples[i] = int16_t(std::lround(9000 * std::sin(0.03 * double(i))));
    a.samples[0] = -32768;
    const std::string wav = temp_path("a.wav");
    write_wav(wav, a);
    std::vector<uint8_t> file = slurp(wav);
    const std::vector<uint8_t> list = {'L', 'I', 'S', 'T', 4, 0, 0, 0, 'I', 'N', 'F', 'O'};
    file.insert(file.begin() + 36, list.begin(), list.end());  // after "fmt ", before "data"
    const uint32_t riff = uint32_t(file.size() - 8 + 5);
    for (int i = 0; i < 4; i++) file[size_t(4 + i)] = uint8_t(riff >> (8 * i));
    for (uint8_t b : {1, 2, 3, 4, 5}) file.push_back(b);  // trailing bytes some tools leave
    const auto wrbz = compress_file(wav, file, m.model.get(), o, &st);
    EXPECT_EQ(st.mode, RbzMode::Audio);
    EXPECT_EQ(st.content_bytes, a.samples.size() * 2);
    EXPECT_EQ(decompress_file(wav + ".rbz", wrbz, m.model.get()), file);
    EXPECT_EQ(decompress_file(wav + ".rbz", wrbz, portable.model.get()), file) << "decoded on the portable path, 1 thread";
    // Segments start on whole frames (4 bytes here) and patches, whatever length is asked for.
    o.segment_bytes = 250;
    EXPECT_EQ(decompress_file(wav + ".rbz", compress_file(wav, file, m.model.get(), o, &st), m.model.get()), file);
    EXPECT_EQ(st.blocks, 5u);  // 1200 sample bytes in segments of 252
    o.segment_bytes = 0;
    // A FLAC: decompresses to a FLAC with the same samples.
    const std::string flac = temp_path("a.flac"), flac_back = temp_path("back.flac");
    {
      const auto bytes = encode_flac(a, flac);
      std::ofstream(flac, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), long(bytes.size()));
    }
    o.segment_bytes = 0;
    const auto frbz = compress_file(flac, slurp(flac), m.model.get(), o, &st);
    EXPECT_EQ(st.mode, RbzMode::Audio);
    EXPECT_EQ(st.content_bytes, a.samples.size() * 2);
    const auto fback = decompress_file(flac + ".rbz", frbz, m.model.get());
    ASSERT_GE(fback.size(), 4u);
    EXPECT_EQ(std::string(fback.begin(), fback.begin() + 4), "fLaC");
    std::ofstream(flac_back, std::ios::binary).write(reinterpret_cast<const char*>(fback.data()), long(fback.size()));
    const Audio again_audio = read_audio(flac_back);
    EXPECT_EQ(again_audio.sample_rate, a.sample_rate);
    EXPECT_EQ(again_audio.channels, a.channels);
    EXPECT_EQ(again_audio.samples, a.samples);
    std::remove(flac.c_str());
    std::remove(flac_back.c_str());
    // --raw: the file's bytes.
    o.force_raw = true;
    EXPECT_EQ(decompress_file(wav + ".rbz", compress_file(wav, file, m.model.get(), o, &st), m.model.get()), file);
    EXPECT_EQ(st.mode, RbzMode::Raw);
    std::remove(png.c_str());
    std::remove(back.c_str());
    std::remove(wav.c_str());
  }
}

TEST_F(Codec, NothingGrowsByMoreThanASmallHeaderOverZstdOrTheFile) {
  Loaded m(model_path(), 2);
  for (size_t n : {size_t(0), size_t(100), size_t(20000)}) {
    const auto in = random_bytes(n, 9 + n);
    const auto rbz = compress_file("r.bin", in, m.model.get(), CompressOptions());
    EXPECT_LE(rbz.size(), n + 80) << n;  // incompressible: stored, behind the header
    EXPECT_EQ(decompress_file("r.bin.rbz", rbz, m.model.get()), in);
    EXPECT_EQ(decompress_file("r.bin.rbz", rbz, nullptr), in);  // stored blocks need no model
  }
}

TEST_F(Codec, DamagedOrForeignInputIsAnErrorNamingTheFile) {
  Loaded m(model_path(), 2);
  CompressOptions o;
  o.model_only = true;
  o.segment_bytes = 100;
  const auto in = repetitive_text(300);
  const auto rbz = compress_file("x.txt", in, m.model.get(), o);
  // Every single flipped byte is caught (header checksum, block table, coder end state, content checksum).
  for (size_t i = 0; i < rbz.size(); i++) {
    auto bad = rbz;
    bad[i] ^= 0x20;
    bool threw = false;
    try {
      const auto out = decompress_file("x.rbz", bad, m.model.get());
      ADD_FAILURE() << "flipping byte " << i << " went unnoticed" << (out == in ? " (and decoded correctly)" : "");
    } catch (const Error& e) {
      threw = std::string(e.what()).find("x.rbz") != std::string::npos;
    }
    EXPECT_TRUE(threw) << "byte " << i;
  }
  for (size_t cut : {size_t(0), size_t(3), size_t(40), rbz.size() / 2, rbz.size() - 1}) {
    const std::vector<uint8_t> truncated(rbz.begin(), rbz.begin() + long(cut));
    expect_error_containing([&] { decompress_file("t.rbz", truncated, m.model.get()); }, "t.rbz: ");
  }
  expect_error_containing([&] { decompress_file("n.rbz", repetitive_text(100), m.model.get()); }, "n.rbz: not a .rbz file");
  // Another model: the error names both fingerprints.
  auto be = make_cpu_backend(1);
  Model other(m.model->config(), *be);
  other.init_random(77);
  const std::string want = model_fingerprint(*m.model), got = model_fingerprint(other);
  expect_error_containing([&] { decompress_file("w.rbz", rbz, &other); },
                          "w.rbz: compressed with model " + want + ", but the given model is " + got);
  expect_error_containing([&] { decompress_file("w.rbz", rbz, nullptr); }, "needs the model it was compressed with");
}

}  // namespace
}  // namespace rb

namespace rb {
namespace {

// Archives written by an earlier build (tests/fixtures/rbz, made 2026-12-03 with the build before
// the layers and the Stepper, from tests/golden/tiny_retention.safetensors): every kind still
// decodes, on every CPU path, to what was compressed.
TEST(CodecFixtures, ArchivesWrittenByAnEarlierBuildStillDecode) {
  const std::string dir = std::string(RETBYTE_TEST_DIR) + "/fixtures/rbz/";
  auto read = [](const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), {});
  };
  const auto text = read(dir + "text.txt"), wav = read(dir + "tone.wav");
  ASSERT_FALSE(text.empty());
  const Image png = read_image(dir + "gradient.png");
  for (CpuPath path : test::runnable_cpu_paths()) {
    SCOPED_TRACE(cpu_path_name(path));
    auto be = make_cpu_backend(path == CpuPath::Portable ? 1 : 2, path);
    auto model = Model::load(std::string(RETBYTE_TEST_DIR) + "/golden/tiny_retention.safetensors", *be);
    for (const char* name : {"text-mixed.rbz", "text-unmixed.rbz", "text-stored.rbz", "text-adapted.rbz", "text-one-context.rbz",
                             "text-shared-lanes.rbz"})
      EXPECT_EQ(decompress_file(name, read(dir + name), model.get()), text) << name;
    EXPECT_EQ(decompress_file("tone.wav.rbz", read(dir + "tone.wav.rbz"), model.get()), wav);
    const auto restored = decompress_file("gradient.png.rbz", read(dir + "gradient.png.rbz"), model.get());
    const std::string back = testing::TempDir() + "retbyte_fixture_" + std::to_string(getpid()) + ".png";
    std::ofstream(back, std::ios::binary).write(reinterpret_cast<const char*>(restored.data()), long(restored.size()));
    const Image again = read_image(back);
    std::remove(back.c_str());
    EXPECT_EQ(again.width, png.width);
    EXPECT_EQ(again.height, png.height);
    EXPECT_EQ(again.pixels, png.pixels);
  }
}

}  // namespace
}  // namespace rb
