// No silent loss and no clobbering: outputs never replace a file that appeared meanwhile unless
// asked to, devices and FIFOs are written into and never replaced, headers cannot make us
// allocate what the file cannot hold, and damaged configs and decode states are refused.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <zlib.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include "datasets/media.h"
#include "codecs/rbz.h"
#include "generator/decoder.h"
#include "kernels/cpu/cpu_backend.h"
#include "src/model/config.h"
#include "src/common/errors.h"
#include "src/model/model.h"
#include "src/common/output_file.h"
#include "src/model/safetensors.h"
#include "tests/test_util.h"
#include "trainer/train_config.h"

namespace rb {
namespace {

namespace fs = std::filesystem;

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

bool no_temporaries(const std::string& dir) {
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().find(".tmp.") != std::string::npos) return false;
  return true;
}

TEST(OutputFile, AFileThatAppearsWhileWritingIsNeverReplacedWithoutForce) {
  test::TempDir dir("race");
  const std::string out = dir.path + "/out.bin";
  OutputFile first(out, Overwrite::Refuse);
  first.write("mine", 4);
  dir.write("out.bin", "another process's output");  // created after our checks, before our rename
  const std::string err = error_of([&] { first.commit(); });
  EXPECT_NE(err.find(out + ": exists"), std::string::npos) << err;
  EXPECT_EQ(read_all(out), "another process's output");
  EXPECT_TRUE(no_temporaries(dir.path));
  // With -f the newer output replaces it.
  OutputFile forced(out, Overwrite::Replace);
  forced.write("forced", 6);
  forced.commit();
  EXPECT_EQ(read_all(out), "forced");
  EXPECT_TRUE(no_temporaries(dir.path));
}

TEST(OutputFile, TwoWritersRacingForOneNameLeaveOneWinnerAndOneExistsError) {
  test::TempDir dir("race2");
  for (int round = 0; round < 20; round++) {
    const std::string out = dir.path + "/r" + std::to_string(round);
    std::string errors[2];
    auto writer = [&](int id) {
      errors[id] = error_of([&] {
        OutputFile f(out, Overwrite::Refuse);
        const std::string body(1000, char('a' + id));
        f.write(body.data(), body.size());
        f.commit();
      });
    };
    std::thread a(writer, 0), b(writer, 1);
    a.join(), b.join();
    const int failed = int(!errors[0].empty()) + int(!errors[1].empty());
    ASSERT_EQ(failed, 1) << "round " << round << ": " << errors[0] << " / " << errors[1];
    const std::string& err = errors[0].empty() ? errors[1] : errors[0];
    EXPECT_NE(err.find("exists"), std::string::npos) << err;
    const std::string kept = read_all(out);
    EXPECT_EQ(kept, std::string(1000, errors[0].empty() ? 'a' : 'b'));
  }
  EXPECT_TRUE(no_temporaries(dir.path));
}

TEST(OutputFile, DevicesAndFifosAreWrittenIntoNeverReplaced) {
  for (Overwrite mode : {Overwrite::Refuse, Overwrite::Replace}) {
    write_file_atomic("/dev/null", "bytes for the bin", mode);
    struct stat st;
    ASSERT_EQ(::stat("/dev/null", &st), 0);
    EXPECT_TRUE(S_ISCHR(st.st_mode)) << "/dev/null is no longer a character device";
  }
  EXPECT_TRUE(is_special_file("/dev/null"));
  test::TempDir dir("fifo");
  const std::string fifo = dir.path + "/pipe";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  std::string got;
  std::thread reader([&] { got = read_all(fifo); });
  write_file_atomic(fifo, "through the pipe", Overwrite::Replace);
  reader.join();
  EXPECT_EQ(got, "through the pipe");
  struct stat st;
  ASSERT_EQ(::stat(fifo.c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode)) << "the FIFO was replaced by a regular file";
  EXPECT_TRUE(no_temporaries(dir.path));
}

TEST(OutputFile, AnAbandonedOutputLeavesNothingBehind) {
  test::TempDir dir("abandon");
  {
    OutputFile f(dir.path + "/never", Overwrite::Refuse);
    f.write("half", 4);
  }  // an exception between write and commit: destroyed uncommitted
  EXPECT_FALSE(fs::exists(dir.path + "/never"));
  EXPECT_TRUE(no_temporaries(dir.path));
}

TEST(DeclaredSizes, AnImageHeaderLargerThanItsFileCanHoldIsRefusedBeforeDecoding) {
  // A valid 1x1 PNG whose IHDR is patched to 16000x16000 (and its CRC fixed): 768 MB of RGB
  // pixels promised by a file of a few dozen bytes.
  test::TempDir dir("huge");
  const std::string small = dir.path + "/small.png";
  write_png(small, Image{1, 1, 3, {1, 2, 3}});
  std::string png = read_all(small);
  for (int i = 0; i < 2; i++)
    for (int b = 0; b < 4; b++) png[size_t(16 + 4 * i + b)] = char(uint8_t(16000u >> (8 * (3 - b))));
  const uint32_t crc = uint32_t(crc32(0, reinterpret_cast<const Bytef*>(png.data() + 12), 17));
  for (int b = 0; b < 4; b++) png[size_t(29 + b)] = char(uint8_t(crc >> (8 * (3 - b))));
  const std::string huge = dir.write("huge.png", png);
  const auto t0 = std::chrono::steady_clock::now();
  const std::string err = error_of([&] { read_image(huge); });
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_NE(err.find(huge + ": header declares a 16000x16000 image, more than its"), std::string::npos) << err;
  EXPECT_LT(secs, 5.0) << "refused only after decoding";
  // compress codes such a file as its bytes, promptly.
  auto be = make_cpu_backend(1);
  Model model(named_config("tiny"), *be);
  model.init_random(1);
  const std::vector<uint8_t> bytes(png.begin(), png.end());
  CompressStats st;
  const auto rbz = compress_file(huge, bytes, &model, CompressOptions{}, &st);
  EXPECT_EQ(st.mode, RbzMode::Raw);
  EXPECT_EQ(decompress_file(huge + ".rbz", rbz, &model), bytes);
}

TEST(DeclaredSizes, AFlacPromisingBillionsOfFramesAllocatesOnlyWhatItHolds) {
  test::TempDir dir("flac");
  Audio a{8000, 1, std::vector<int16_t>(500)};
  for (size_t i = 0; i < a.samples.size(); i++) a.samples[i] = int16_t(i * 37);
  std::vector<uint8_t> flac = encode_flac(a, "x.flac");
  // STREAMINFO's 36-bit total sample count: the low nibble of byte 21 and bytes 22-25.
  ASSERT_GE(flac.size(), 26u);
  flac[21] = uint8_t((flac[21] & 0xF0) | 0x8);
  for (int i = 22; i < 26; i++) flac[size_t(i)] = 0;  // 2^35 frames: 64 GiB of samples
  const std::string path = dir.write("lie.flac", std::string(flac.begin(), flac.end()));
  const std::string err = error_of([&] { read_audio(path); });
  EXPECT_NE(err.find(path), std::string::npos) << err;
  EXPECT_NE(err.find("frames"), std::string::npos) << err;
}

TEST(Configs, DuplicateKeysHugeNumbersAndZeroEpsAreRefused) {
  test::TempDir dir("configs");
  const std::string dup = dir.write("dup.json", R"({"config": "tiny", "T": 128, "T": 256})");
  EXPECT_NE(error_of([&] { load_model_config(dup); }).find(dup + ": key \"T\" appears twice"), std::string::npos);
  EXPECT_NE(error_of([&] { parse_train_config(dup); }).find("appears twice"), std::string::npos);
  const std::string nested = dir.write("nested.json", R"({"config": "tiny", "lr": 0.001, "lr": 0.002})");
  EXPECT_NE(error_of([&] { parse_train_config(nested); }).find("key \"lr\" appears twice"), std::string::npos);
  const std::string big = dir.write("big.json", R"({"config": "tiny", "D_E": 18446744073709551615})");
  const std::string e = error_of([&] { load_model_config(big); });
  EXPECT_NE(e.find("\"D_E\" = 18446744073709551615 is out of range"), std::string::npos) << e;
  EXPECT_EQ(e.find("-1"), std::string::npos) << e;
  const std::string eps = dir.write("eps.json", R"({"config": "tiny", "eps": 0})");
  EXPECT_NE(error_of([&] { parse_train_config(eps); }).find("\"eps\" = 0 must be greater than 0"), std::string::npos);
  const std::string fine = dir.write("fine.json", R"({"config": "tiny", "eps": 1e-8, "T": 256})");
  EXPECT_EQ(parse_train_config(fine).model.T, 256);
}

TEST(DecodeStates, AFlippedByteAnywhereIsRefused) {
  auto be = make_cpu_backend(1);
  Model model(named_config("tiny"), *be);
  model.init_random(2);
  DecodeState st(model);
  Decoder dec(model);
  const std::string prompt = "some bytes to put into the state";
  dec.ingest(st, reinterpret_cast<const uint8_t*>(prompt.data()), prompt.size());
  test::TempDir dir("state");
  const std::string path = dir.path + "/s";
  st.save(path);
  const std::string good = read_all(path);
  DecodeState::load(path, model);  // loads as written
  // Every 97th byte flipped in turn: header, metadata and state data alike.
  int refused = 0, tried = 0;
  for (size_t at = 8; at < good.size(); at += 97) {
    std::string bad = good;
    bad[at] = char(bad[at] ^ 0x10);
    const std::string p = dir.write("bad", bad);
    tried++;
    if (!error_of([&] { DecodeState::load(p, model); }).empty()) refused++;
  }
  EXPECT_EQ(refused, tried) << "a damaged decode state was used without complaint";
  // The metadata's digits too: a different sampler position that still parses.
  std::string rng = good;
  const size_t r = rng.find("\"rng\":\"");
  ASSERT_NE(r, std::string::npos);
  rng[r + 7] = rng[r + 7] == '1' ? '2' : '1';
  const std::string p = dir.write("rng", rng);
  EXPECT_NE(error_of([&] { DecodeState::load(p, model); }).find("checksum mismatch"), std::string::npos);
}

}  // namespace
}  // namespace rb
