// Datasets, evaluation and the training loop: exact resume, validation split, bad input.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "datasets/media.h"
#include "datasets/media_residuals.h"
#include "datasets/dataset.h"
#include "kernels/backend.h"
#include "src/common/errors.h"
#include "src/model/evaluate.h"
#include "src/model/safetensors.h"
#include "tests/test_util.h"
#include "trainer/carried_rows.h"
#include "trainer/trainer.h"

namespace rb {
namespace {

namespace fs = std::filesystem;
const std::string kTestDir = RETBYTE_TEST_DIR;

using test::TempDir;

std::string fixture_text() {
  std::ifstream in(kTestDir + "/fixtures/text2k.txt", std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

using test::expect_error_containing;

TEST(Dataset, StreamsStartWithTheHeaderPatchAndPackOnPatchBoundaries) {
  TempDir d("ds");
  d.write("a.txt", "hello");
  d.write("sub/b.txt", "xyz");
  ByteDataset ds({d.path}, 4, 0.0);
  ASSERT_EQ(ds.num_files(), 2u);
  EXPECT_EQ(ds.split_kind(), "none");
  // Packed: [RBT\0 hell o\0\0\0] [RBT\0 xyz\0] = 20 bytes; a window wraps around.
  EXPECT_EQ(ds.train_bytes(), 20u);
  std::vector<uint8_t> w(24);
  ds.read_window(0, 24, w.data());
  const uint8_t expect[24] = {'R', 'B', 'T', 0, 'h', 'e', 'l', 'l', 'o', 0,   0,   0,
                              'R', 'B', 'T', 0, 'x', 'y', 'z', 0,   'R', 'B', 'T', 0};
  EXPECT_EQ(0, std::memcmp(w.data(), expect, 24));
  ds.read_window(4, 8, w.data());  // patch 4 = "xyz\0", then wrap to the start
  EXPECT_EQ(0, std::memcmp(w.data(), "xyz\0RBT\0", 8));
}

TEST(Dataset, ValidationSplitIsByFileOrByTailAndDeterministic) {
  TempDir d("split");
  for (int i = 0; i < 40; i++) {
    std::string name = "f";  // built step by step: GCC 12 warns falsely (-Wrestrict) on "f" + to_string
    name += std::to_string(i);
    name += ".txt";
    d.write(name, std::string(100, char('a' + i % 26)));
  }
  ByteDataset a({d.path}, 4, 0.1), b({d.path}, 4, 0.1);
  EXPECT_EQ(a.split_kind(), "by file");
  EXPECT_EQ(a.val_file_bytes(), 400u);
  ASSERT_EQ(a.val_streams().size(), b.val_streams().size());
  for (size_t i = 0; i < a.val_streams().size(); i++) EXPECT_EQ(a.val_streams()[i].file, b.val_streams()[i].file);
  const std::string one = d.write("single/one.txt", std::string(1000, 'q'));
  ByteDataset c({one}, 4, 0.1);
  EXPECT_EQ(c.split_kind(), "by tail of each file");
  ASSERT_EQ(c.val_streams().size(), 1u);
  EXPECT_EQ(c.val_streams()[0].begin, 900u);
  EXPECT_EQ(c.header(c.val_streams()[0]).size(), 4u);
  EXPECT_EQ(c.span_data(c.val_streams()[0])[0], 'q');
}

TEST(Dataset, BadPathsGiveOneLineErrors) {
  TempDir d("bad");
  expect_error_containing([&] { ByteDataset({d.path + "/missing"}, 4, 0.1); }, d.path + "/missing: no such file or folder");
  fs::create_directories(d.path + "/empty");
  expect_error_containing([&] { ByteDataset({d.path + "/empty"}, 4, 0.1); }, d.path + "/empty: folder has no files");
  const std::string zero = d.write("zero.txt", "");
  expect_error_containing([&] { ByteDataset({zero}, 4, 0.1); }, "all files are empty");
  expect_error_containing([&] { ByteDataset({"/dev/null"}, 4, 0.1); }, "/dev/null: not a file or folder");
  if (geteuid() != 0) {  // root can read anything
    const std::string locked = d.write("locked.txt", "secret");
    fs::permissions(locked, fs::perms::none);
    expect_error_containing([&] { ByteDataset({locked}, 4, 0.1); }, locked + ": cannot read");
  }
}

TEST(TrainConfig, NamedOrJsonWithStrictKeys) {
  TempDir d("cfg");
  const TrainConfig c = parse_train_config(d.write("c.json", R"({"config": "tiny", "T": 256, "lr": 0.01, "accum_steps": 2})"));
  EXPECT_EQ(c.model.T, 256);
  EXPECT_FLOAT_EQ(c.adamw.lr, 0.01f);
  EXPECT_EQ(c.accum_steps, 2);
  expect_error_containing([&] { parse_train_config(d.write("x.json", "{not json")); }, "x.json: not valid JSON");
  expect_error_containing([&] { parse_train_config(d.write("k.json", R"({"config": "tiny", "learning_rate": 1})")); },
                          "k.json: unknown key \"learning_rate\"");
  expect_error_containing([&] { parse_train_config(d.write("v.json", R"({"config": "tiny", "lr": -1})")); },
                          "\"lr\" = -1 is out of range");
  EXPECT_EQ(c.media, MediaForm::Plain);
  EXPECT_EQ(parse_train_config(d.write("m.json", R"({"config": "tiny", "media": "residual"})")).media, MediaForm::Residual);
  expect_error_containing([&] { parse_train_config(d.write("mb.json", R"({"config": "tiny", "media": "deltas"})")); },
                          "mb.json: \"media\" must be \"plain\" or \"residual\", not \"deltas\"");
  // The schedule: warm-up to lr, then cosine down to min_lr_ratio * lr.
  TrainConfig s;
  s.adamw.lr = 1.0f;
  s.warmup_steps = 10;
  s.min_lr_ratio = 0.1f;
  EXPECT_FLOAT_EQ(s.lr_at(0, 110), 0.1f);
  EXPECT_FLOAT_EQ(s.lr_at(9, 110), 1.0f);
  EXPECT_NEAR(s.lr_at(60, 110), 0.55f, 1e-6);
  EXPECT_NEAR(s.lr_at(110, 110), 0.1f, 1e-6);
}

TrainConfig small_run_config() {
  TrainConfig c;
  c.model = named_config("tiny");
  c.model.T = 128;
  c.adamw.lr = 3e-3f;
  c.warmup_steps = 3;
  c.steps = 10;
  c.val_every = 4;
  c.val_bytes = 300;
  c.checkpoint_every = 0;
  c.accum_steps = 2;
  c.chunk = 8;
  return c;
}

TEST(Trainer, ARunFolderIsLockedAndStaleTemporariesAreRemoved) {
  TempDir d("lock");
  const std::string data = d.write("data/text.txt", fixture_text());
  const TrainConfig cfg = small_run_config();
  auto be = make_cpu_backend(1);
  {
    Trainer first(cfg, {data}, d.path + "/run", *be, false);
    expect_error_containing([&] { Trainer second(cfg, {data}, d.path + "/run", *be, false); },
                            d.path + "/run: another retbyte train is using this run folder");
    expect_error_containing([&] { Trainer second(cfg, {data}, d.path + "/run", *be, true); }, "another retbyte train");
    // A temporary left by a process that died mid-write goes at the next checkpoint; a live one stays.
    pid_t dead = 4194000;
    while (kill(dead, 0) == 0 || errno != ESRCH) dead--;
    const std::string stale = d.write("run/model.safetensors.tmp." + std::to_string(dead), "half a model");
    const std::string live = d.write("run/model.safetensors.tmp." + std::to_string(getppid()), "someone else's");
    first.run(1, 0, nullptr, nullptr);
    first.save_checkpoint();
    EXPECT_FALSE(fs::exists(stale));
    EXPECT_TRUE(fs::exists(live));
  }
  Trainer again(cfg, {data}, d.path + "/run", *be, true);  // the lock went with the first run
  EXPECT_EQ(again.step(), 1);
  expect_error_containing([&] { Trainer missing(cfg, {data}, d.path + "/nope", *be, true); },
                          d.path + "/nope: no such run folder to resume");
  EXPECT_FALSE(fs::exists(d.path + "/nope"));
}

TEST(Trainer, ADataFileTruncatedDuringARunChangesNothing) {
  // Files are read whole at the start: truncating one later (which raised SIGBUS through a memory
  // map) leaves the run on the bytes it read.
  TempDir d("truncate");
  const std::string data = d.write("data/text.txt", fixture_text());
  const TrainConfig cfg = small_run_config();
  auto be = make_cpu_backend(1);
  Trainer t(cfg, {data}, d.path + "/run", *be, false);
  fs::resize_file(data, 0);
  EXPECT_EQ(t.run(4, 0, nullptr, nullptr), Trainer::Stop::Finished);
  EXPECT_EQ(t.step(), 4);
  EXPECT_GT(t.validate(1 << 20), 0.0);
  // A FIFO is refused at once, not waited on.
  const std::string fifo = d.path + "/fifo";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  expect_error_containing([&] { FileStream f(fifo, 4); }, fifo + ": not a regular file");
}

TEST(Trainer, ATimeBudgetDecaysTheLearningRateByItsEnd) {
  TempDir d("minutes");
  const std::string data = d.write("data/text.txt", fixture_text());
  TrainConfig cfg = small_run_config();
  cfg.steps = 0;
  cfg.val_every = 0;
  cfg.model.T = 32;  // steps short enough that even the portable path (scalar) takes dozens in the budget
  cfg.model.B = 1;
  cfg.accum_steps = 1;
  auto be = make_cpu_backend(1);
  Trainer t(cfg, {data}, d.path + "/run", *be, false);
  std::vector<StepReport> reports;
  EXPECT_EQ(t.run(0, 0.03, nullptr, [&](const StepReport& r) { reports.push_back(r); }), Trainer::Stop::TimeUp);
  ASSERT_GE(reports.size(), size_t(10)) << "too few steps in 1.8 s to judge the schedule";
  for (size_t i = 4; i < reports.size(); i++) EXPECT_GE(reports[i].horizon, reports[i].step) << "step " << reports[i].step;
  EXPECT_LT(reports.back().lr, 0.5f * cfg.adamw.lr) << "the cosine did not reach its end within the budget";
}

// With independent windows, and with carried state (rows walking the streams, their states and
// cursors in the checkpoint; the short second file ends some rows' streams during the run).
void expect_resumed_run_equals_the_uninterrupted_one(bool carry_state) {
  TempDir d(carry_state ? "resume-carry" : "resume");
  const std::string data = d.write("data/text.txt", fixture_text());
  d.write("data/short.txt", fixture_text().substr(700, 300));
  TrainConfig cfg = small_run_config();
  cfg.carry_state = carry_state;
  auto be = make_cpu_backend(2);
  const int K = 5;

  Trainer straight(cfg, {d.path + "/data"}, d.path + "/a", *be, false);
  straight.run(2 * K, 0, nullptr, nullptr);
  std::vector<float> straight_params(straight.model().params(), straight.model().params() + straight.model().num_params());
  {
    Trainer first(cfg, {d.path + "/data"}, d.path + "/b", *be, false);
    first.run(K, 0, nullptr, nullptr);
    ASSERT_EQ(first.step(), K);
  }
  Trainer resumed(cfg, {d.path + "/data"}, d.path + "/b", *be, true);
  ASSERT_EQ(resumed.step(), K);
  resumed.run(2 * K, 0, nullptr, nullptr);

  // Same loss at every step: the straight run's second half equals the resumed run's steps...
  ASSERT_EQ(straight.step_losses().size(), size_t(2 * K));
  ASSERT_EQ(resumed.step_losses().size(), size_t(K));
  for (int i = 0; i < K; i++) EXPECT_EQ(resumed.step_losses()[i], straight.step_losses()[K + i]) << "step " << K + i + 1;
  // ...and both metrics files hold the same losses for all 2K steps.
  auto losses_of = [](const std::string& path) {
    std::vector<double> v;
    std::ifstream in(path);
    for (std::string line; std::getline(in, line);) v.push_back(nlohmann::json::parse(line)["loss"].get<double>());
    return v;
  };
  EXPECT_EQ(losses_of(d.path + "/a/metrics.jsonl"), losses_of(d.path + "/b/metrics.jsonl"));
  EXPECT_EQ(losses_of(d.path + "/a/metrics.jsonl").size(), size_t(2 * K));
  // Bit-identical final weights, in memory and on disk.
  EXPECT_EQ(0, std::memcmp(straight_params.data(), resumed.model().params(), straight_params.size() * sizeof(float)));
  SafetensorsReader a(d.path + "/a/model.safetensors"), b(d.path + "/b/model.safetensors");
  EXPECT_EQ(a.read_f32("head.weight"), b.read_f32("head.weight"));
  EXPECT_LT(straight.step_losses().back(), straight.step_losses().front());  // it did learn
  if (carry_state) {
    SafetensorsReader state(d.path + "/b/state.safetensors");
    EXPECT_TRUE(state.metadata().count("carry"));
  }
}

TEST(Trainer, StoppedAndResumedRunEqualsTheUninterruptedOne) { expect_resumed_run_equals_the_uninterrupted_one(false); }
TEST(Trainer, StoppedAndResumedCarriedStateRunEqualsTheUninterruptedOne) {
  expect_resumed_run_equals_the_uninterrupted_one(true);
}

// Fine-tuning: a fresh run with an init model starts from exactly its weights, learns the new
// data, records where it started, and resumes bit-exactly like any other run.
TEST(Trainer, InitStartsFromAModelsWeightsAndResumesExactly) {
  TempDir d("init");
  const std::string base_data = d.write("base.txt", fixture_text());
  d.write("tune/a.txt", std::string(1500, 'a') + "the tune data: " + fixture_text().substr(0, 500));
  const std::string tune = d.path + "/tune";
  TrainConfig cfg = small_run_config();
  auto be = make_cpu_backend(2);
  Trainer(cfg, {base_data}, d.path + "/base", *be, false).run(3, 0, nullptr, nullptr);
  const std::string init = d.path + "/base/model.safetensors";
  const auto base = Model::load(init, *be);
  const std::vector<float> base_params(base->params(), base->params() + base->num_params());

  const int K = 4;
  Trainer straight(cfg, {tune}, d.path + "/a", *be, false, nullptr, init);
  ASSERT_EQ(straight.model().num_params(), base_params.size());
  EXPECT_EQ(0, std::memcmp(straight.model().params(), base_params.data(), base_params.size() * sizeof(float)));
  straight.run(2 * K, 0, nullptr, nullptr);
  EXPECT_LT(straight.step_losses().back(), straight.step_losses().front());
  {
    Trainer first(cfg, {tune}, d.path + "/b", *be, false, nullptr, init);
    first.run(K, 0, nullptr, nullptr);
  }
  Trainer resumed(cfg, {tune}, d.path + "/b", *be, true);  // the state holds the weights: no --init needed
  resumed.run(2 * K, 0, nullptr, nullptr);
  for (int i = 0; i < K; i++) EXPECT_EQ(resumed.step_losses()[i], straight.step_losses()[K + i]) << "step " << K + i + 1;
  EXPECT_EQ(0, std::memcmp(straight.model().params(), resumed.model().params(), base_params.size() * sizeof(float)));
  SafetensorsReader state(d.path + "/b/state.safetensors");
  ASSERT_TRUE(state.metadata().count("init"));
  EXPECT_EQ(state.metadata().at("init"), model_fingerprint(*base));
  SafetensorsReader tuned(d.path + "/b/model.safetensors");
  EXPECT_NE(tuned.metadata().at("training").find(model_fingerprint(*base)), std::string::npos);

  // Another shape or media form, or a missing file, is refused with a clear error.
  TrainConfig other = cfg;
  other.model.D_L = 32;
  expect_error_containing([&] { Trainer(other, {tune}, d.path + "/c", *be, false, nullptr, init); }, "--init model has config");
  TrainConfig residual = cfg;
  residual.media = MediaForm::Residual;
  expect_error_containing([&] { Trainer(residual, {tune}, d.path + "/e", *be, false, nullptr, init); }, "media in plain form");
  expect_error_containing([&] { Trainer(cfg, {tune}, d.path + "/f", *be, false, nullptr, d.path + "/none.safetensors"); },
                          "none.safetensors");

  // Decays are constants, not weights: a run may give the model longer memory. It starts from the
  // same weights, says what changed, and its model keeps the new decays.
  EXPECT_TRUE(straight.init_note().empty());
  TrainConfig longer = cfg;
  longer.model.longest_memory = 1 << 16;
  Trainer relearn(longer, {tune}, d.path + "/g", *be, false, nullptr, init);
  EXPECT_EQ(0, std::memcmp(relearn.model().params(), base_params.data(), base_params.size() * sizeof(float)));
  EXPECT_NE(relearn.init_note().find("from the RetNet decays to longest_memory 65536"), std::string::npos) << relearn.init_note();
  relearn.run(1, 0, nullptr, nullptr);
  EXPECT_EQ(Model::load(d.path + "/g/model.safetensors", *be)->config().longest_memory, 1 << 16);
}

// Each row walks its stream window after window from a random start, until the stream ends or
// its budget is spent; then it starts elsewhere. Windows past a stream's end are zeros, which
// row_bytes leaves out of training.
TEST(CarriedRows, EachRowWalksOneStreamWindowAfterWindow) {
  TempDir d("rows");
  std::string a(1000, 'a'), b(200, 'b');
  for (size_t i = 0; i < a.size(); i++) a[i] = char('a' + i % 26);
  d.write("data/a.txt", a);
  d.write("data/b.txt", b);
  ByteDataset data({d.path + "/data"}, 4, 0.0);
  ModelConfig mc = named_config("tiny");  // P = 4
  mc.T = 64;
  mc.B = 3;
  auto be = make_cpu_backend(1);
  Model model(mc, *be);
  CarriedRows rows(data, model, 2, 64 * 4);  // rows walk 1 to 7 windows
  Rng rng(7);
  std::vector<uint8_t> batch(size_t(2) * 3 * 64), want(64);
  std::vector<CarriedRows::Window> before;
  int continued = 0, started = 0, ended_by_stream = 0, padded = 0;
  for (int step = 0; step < 40; step++) {
    rows.next_windows(rng, batch.data());
    const std::vector<CarriedRows::Window> now = rows.last_windows();
    ASSERT_EQ(now.size(), 6u);
    for (size_t w = 0; w < 6; w++) {
      const CarriedRows::Window& x = now[w];
      ASSERT_GE(x.stream, 0);
      const uint64_t len = data.train_stream_bytes(size_t(x.stream));
      ASSERT_LT(x.offset, len);
      ASSERT_EQ(x.offset % 4, 0u);
      // The window is the stream's bytes there: header patch, file bytes, zeros after the end.
      const std::vector<uint8_t> h = data.header(StreamSpan{int(x.stream), 0, 0});
      const std::string& body = x.stream == 0 ? a : b;
      for (uint64_t i = 0; i < 64; i++) {
        const uint64_t at = x.offset + i;
        want[i] = at < h.size() ? h[at] : at - h.size() < body.size() ? uint8_t(body[at - h.size()]) : 0;
      }
      EXPECT_TRUE(std::equal(want.begin(), want.end(), batch.begin() + long(w * 64))) << "step " << step << " row " << w;
      // The zeros after the end are padding, not data: row_bytes stops before them.
      EXPECT_EQ(rows.row_bytes(int(w / 3))[w % 3], int(std::min<uint64_t>(64, len - x.offset))) << "step " << step;
      padded += len - x.offset < 64;
      if (!before.empty() && before[w].stream == x.stream && before[w].offset + 64 == x.offset)
        continued++;
      else if (!before.empty()) {
        started++;
        if (before[w].offset + 64 >= data.train_stream_bytes(size_t(before[w].stream))) ended_by_stream++;
      }
    }
    before = now;
  }
  EXPECT_GT(continued, 40);
  EXPECT_GT(started, 10);
  EXPECT_GT(ended_by_stream, 0);
  EXPECT_GT(padded, 0);
}

// The numerics contract: every reduction has one fixed order (GEMM sums over K per element in
// fixed blocks, row sums in 16 lanes and a fixed tree, column sums by fixed row blocks, one
// retention head per task), so training gives the same bits on every CPU path and thread count.
TEST(Trainer, WeightsAreBitIdenticalOnEveryPathAndThreadCount) {
  TempDir d("threads");
  const std::string data = d.write("t.txt", fixture_text());
  std::vector<float> first;
  std::vector<double> first_losses;
  for (CpuPath path : test::runnable_cpu_paths())
    for (int threads : {1, 2}) {
      SCOPED_TRACE(std::string(cpu_path_name(path)) + " x " + std::to_string(threads));
      auto be = make_cpu_backend(threads, path);
      const std::string out = d.path + "/run-" + cpu_path_name(path) + std::to_string(threads);
      Trainer t(small_run_config(), {data}, out, *be, false);
      t.run(3, 0, nullptr, nullptr);
      std::vector<float> w(t.model().params(), t.model().params() + t.model().num_params());
      if (first.empty()) {
        first = w;
        first_losses = t.step_losses();
      } else {
        EXPECT_TRUE(test::bitwise_equal(first, w));
        EXPECT_EQ(first_losses, t.step_losses());
      }
    }
}

TEST(Trainer, ResumeRefusesAnotherConfigAndFreshRunRefusesToOverwrite) {
  TempDir d("refuse");
  const std::string data = d.write("t.txt", fixture_text());
  TrainConfig cfg = small_run_config();
  cfg.steps = 2;
  auto be = make_cpu_backend(2);
  Trainer(cfg, {data}, d.path + "/run", *be, false).run(2, 0, nullptr, nullptr);
  expect_error_containing([&] { Trainer(cfg, {data}, d.path + "/run", *be, false); }, "use --resume");
  TrainConfig other = cfg;
  other.model.D_L = 32;
  expect_error_containing([&] { Trainer(other, {data}, d.path + "/run", *be, true); },
                          "state.safetensors: state is for model config");
  expect_error_containing([&] { Trainer(cfg, {data}, d.path + "/none", *be, true); }, "no such run folder to resume");
  TrainConfig faster = cfg;
  faster.adamw.lr *= 2;
  faster.accum_steps = 1;
  expect_error_containing([&] { Trainer(faster, {data}, d.path + "/run", *be, true); },
                          "other training settings (accum_steps lr)");
  const std::string other_data = d.write("other.txt", fixture_text() + "more");
  expect_error_containing([&] { Trainer(cfg, {other_data}, d.path + "/run", *be, true); }, "trained on other data");
  TrainConfig longer = cfg;  // the horizon may change on resume
  longer.steps = 4;
  EXPECT_EQ(Trainer(longer, {data}, d.path + "/run", *be, true).horizon(), 4);
  // A folder holding only a model file is not overwritten by a fresh run either.
  d.write("weights/model.safetensors", "x");
  expect_error_containing([&] { Trainer(cfg, {data}, d.path + "/weights", *be, false); },
                          "already holds a training run (model.safetensors)");
}

TEST(Trainer, StopFlagCheckpointsAndReturnsInterrupted) {
  TempDir d("stop");
  const std::string data = d.write("t.txt", fixture_text());
  auto be = make_cpu_backend(2);
  {
    Trainer t(small_run_config(), {data}, d.path + "/run", *be, false);
    std::atomic<bool> stop{false};
    const auto why = t.run(10, 0, &stop, [&](const StepReport& r) {
      if (r.step == 3) stop = true;
    });
    EXPECT_EQ(why, Trainer::Stop::Interrupted);
    EXPECT_EQ(t.step(), 3);
  }
  Trainer resumed(small_run_config(), {data}, d.path + "/run", *be, true);
  EXPECT_EQ(resumed.step(), 3);
}

TEST(Trainer, NonFiniteStepsAreSkippedThenTheRunStopsWithTheCheckpointIntact) {
  TempDir d("diverge");
  const std::string data = d.write("t.txt", fixture_text());
  auto be = make_cpu_backend(2);
  Trainer t(small_run_config(), {data}, d.path + "/run", *be, false);
  t.run(2, 0, nullptr, nullptr);  // checkpoint at step 2
  const TensorEntry* head = nullptr;
  for (const auto& e : t.model().table())
    if (e.name == "head.weight") head = &e;
  ASSERT_NE(head, nullptr);
  std::fill_n(t.model().params() + head->offset, head->count, NAN);
  int skipped = 0;
  expect_error_containing([&] { t.run(10, 0, nullptr, [&](const StepReport& r) { skipped += r.skipped; }); },
                          "training diverged: 5 non-finite losses or gradients in a row at step 2");
  EXPECT_EQ(skipped, 4);  // reported and skipped; the fifth in a row stops the run
  EXPECT_EQ(t.step(), 2);
  SafetensorsReader saved(d.path + "/run/model.safetensors");
  for (float v : saved.read_f32("head.weight")) ASSERT_TRUE(std::isfinite(v));
  EXPECT_EQ(saved.metadata().at("train_step"), "2");
}

// --raw scoring of the golden input equals the cross-entropy of PyTorch's golden logits, so
// any implementation of the spec gets the same bpb on the same weights.
TEST(Eval, RawStreamScoreEqualsGoldenLogitsCrossEntropy) {
  auto be = make_cpu_backend(2);
  const std::string path = kTestDir + "/golden/tiny_retention.safetensors";
  auto model = Model::load(path, *be);
  SafetensorsReader golden(path);
  const auto input = golden.read_u8("input");
  const auto logits = golden.read_f32("logits");
  const int T = model->config().T;
  std::vector<uint8_t> row0(input.begin(), input.begin() + T);
  double nats = 0;
  for (int t = 0; t < T; t++) {
    const float* l = logits.data() + size_t(t) * 256;
    double mx = l[0], s = 0;
    for (int c = 1; c < 256; c++) mx = std::max(mx, double(l[c]));
    for (int c = 0; c < 256; c++) s += std::exp(l[c] - mx);
    nats += std::log(s) + mx - l[row0[t]];
  }
  for (int window : {16, 64}) {
    const EvalResult r = evaluate_stream(*model, {}, row0.data(), row0.size(), window);
    EXPECT_EQ(r.bytes, uint64_t(T));
    EXPECT_NEAR(r.nats / T, nats / T, 1e-4 * nats / T) << "window " << window;
  }
  // With a header the first patch is context only; splitting the body across windows changes nothing.
  const EvalResult h16 = evaluate_stream(*model, make_header(Modality::Text, 4), row0.data(), row0.size(), 16);
  const EvalResult h64 = evaluate_stream(*model, make_header(Modality::Text, 4), row0.data(), row0.size(), 64);
  EXPECT_EQ(h16.bytes, uint64_t(T));
  EXPECT_NEAR(h16.nats, h64.nats, 1e-5 * h64.nats);
}

}  // namespace
}  // namespace rb

namespace rb {
namespace {

// A folder mixing images and text trains on both, and validation reports each modality.
TEST(Trainer, MixedFolderValidatesEachModality) {
  TempDir d("mixed");
  Image img{64, 32, 3, std::vector<uint8_t>(64 * 32 * 3)};
  for (size_t i = 0; i < img.pixels.size(); i++) img.pixels[i] = uint8_t((i * 7) ^ (i >> 5));
  write_png(d.path + "/picture.png", img);
  d.write("notes.txt", fixture_text().substr(0, 600));
  TrainConfig cfg = small_run_config();
  cfg.val_fraction = 0.05;  // no file fits the budget: the tail of each file is held out
  auto be = make_cpu_backend(2);
  Trainer t(cfg, {d.path}, d.path + "/run", *be, false);
  EXPECT_EQ(t.data().split_kind(), "by tail of each file");
  t.run(2, 0, nullptr, nullptr);
  t.validate(int64_t(1) << 40);
  const auto& by = t.last_val_bpb_by_modality();
  ASSERT_EQ(by.size(), 2u);
  EXPECT_TRUE(by.count("image") && by.count("text"));
  for (const auto& [kind, bpb] : by) EXPECT_TRUE(std::isfinite(bpb) && bpb > 0) << kind;
}

// "media": "residual": the run trains on the residual form of its images, the model file says so
// (eval, compress and generate follow it), and a resume with the other form is refused.
TEST(Trainer, ResidualMediaFormReachesTheDataTheModelFileAndResume) {
  TempDir d("residual");
  Image img{64, 32, 3, std::vector<uint8_t>(64 * 32 * 3)};
  for (size_t i = 0; i < img.pixels.size(); i++) img.pixels[i] = uint8_t((i * 7) ^ (i >> 5));
  fs::create_directories(d.path + "/data");
  write_png(d.path + "/data/picture.png", img);
  TrainConfig cfg = small_run_config();
  cfg.media = MediaForm::Residual;
  cfg.steps = 2;
  auto be = make_cpu_backend(2);
  {
    Trainer t(cfg, {d.path + "/data"}, d.path + "/run", *be, false);
    const StreamSpan& s = t.data().val_streams().at(0);
    EXPECT_EQ(t.data().header(s)[2], 'i');
    const std::vector<uint8_t> residuals = image_residuals(img);
    EXPECT_TRUE(std::equal(t.data().span_data(s), t.data().span_data(s) + (s.end - s.begin), residuals.begin() + long(s.begin)));
    t.run(2, 0, nullptr, nullptr);
    t.save_checkpoint();
  }
  EXPECT_EQ(Model::load(d.path + "/run/model.safetensors", *be)->media_form, MediaForm::Residual);
  TrainConfig plain = cfg;
  plain.media = MediaForm::Plain;
  expect_error_containing([&] { Trainer(plain, {d.path + "/data"}, d.path + "/run", *be, true); },
                          "other training settings (media)");
}

}  // namespace
}  // namespace rb
