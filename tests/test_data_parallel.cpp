// Data-parallel training without mpirun: ranks as threads of one process talking through
// in-memory mailboxes, so the trainer's rank logic also runs under the sanitizers. (tests/mpi_test.sh
// runs the real thing under mpirun.)
#include <gtest/gtest.h>

#include <condition_variable>
#include <deque>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "tests/test_util.h"
#include "trainer/data_parallel.h"
#include "trainer/trainer.h"

namespace rb {
namespace {

namespace fs = std::filesystem;
using test::expect_error_containing;
using test::TempDir;
const std::string kTestDir = RETBYTE_TEST_DIR;

class ThreadWorld {
 public:
  explicit ThreadWorld(int ranks) : ranks_(ranks), boxes_(size_t(ranks * ranks)) {}
  int size() const { return ranks_; }
  void post(int from, int to, const void* data, size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    const char* p = static_cast<const char*>(data);
    boxes_[size_t(from * ranks_ + to)].emplace_back(p, p + bytes);
    cv_.notify_all();
  }
  void take(int from, int to, void* data, size_t bytes) {
    std::unique_lock<std::mutex> lock(mu_);
    auto& box = boxes_[size_t(from * ranks_ + to)];
    cv_.wait(lock, [&] { return !box.empty(); });
    if (box.front().size() != bytes)
      throw Error("message of " + std::to_string(box.front().size()) + " bytes, expected " + std::to_string(bytes));
    if (bytes) std::memcpy(data, box.front().data(), bytes);
    box.pop_front();
  }

 private:
  int ranks_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::deque<std::vector<char>>> boxes_;
};

class ThreadRank final : public Communicator {
 public:
  ThreadRank(ThreadWorld& world, int rank) : world_(world), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return world_.size(); }
  std::string name() const override { return "threads"; }
  void broadcast(void* data, size_t bytes, int root) override {
    if (rank_ != root) return world_.take(root, rank_, data, bytes);
    for (int r = 0; r < size(); r++)
      if (r != root) send(data, bytes, r);
  }
  void gather(const void* in, size_t bytes, void* out, int root) override {
    if (rank_ != root) return send(in, bytes, root);
    for (int r = 0; r < size(); r++) {
      char* slot = static_cast<char*>(out) + size_t(r) * bytes;
      if (r == root)
        std::memcpy(slot, in, bytes);
      else
        world_.take(r, root, slot, bytes);
    }
  }
  void send(const void* data, size_t bytes, int to) override {
    world_.post(rank_, to, data, bytes);
    bytes_sent_ += bytes;
  }
  void receive(void* data, size_t bytes, int from) override { world_.take(from, rank_, data, bytes); }
  void abort(int) noexcept override { std::abort(); }

 private:
  ThreadWorld& world_;
  int rank_;
};

// Runs fn(rank, communicator) on `ranks` threads; rethrows the first rank's exception.
void on_ranks(int ranks, const std::function<void(int, Communicator&)>& fn) {
  ThreadWorld world(ranks);
  std::vector<std::exception_ptr> errors(static_cast<size_t>(ranks));
  std::vector<std::thread> threads;
  for (int r = 0; r < ranks; r++)
    threads.emplace_back([&, r] {
      ThreadRank comm(world, r);
      try {
        fn(r, comm);
      } catch (...) {
        errors[size_t(r)] = std::current_exception();
      }
    });
  for (auto& t : threads) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

TEST(DataParallel, EachRankGetsAContiguousShareOfTheMicroBatches) {
  for (int ranks = 1; ranks <= 5; ranks++)
    for (int accum = ranks; accum <= 12; accum++) {
      int next = 0;
      for (int r = 0; r < ranks; r++) {
        const MicroRange m = micro_batches_of(r, ranks, accum);
        EXPECT_EQ(m.first, next);
        EXPECT_GE(m.end - m.first, accum / ranks);
        EXPECT_LE(m.end - m.first, accum / ranks + 1);
        next = m.end;
      }
      EXPECT_EQ(next, accum);
    }
}

TEST(DataParallel, TheGradientIsSummedInMicroBatchOrderWhateverTheNumberOfRanks) {
  // More values than one message of the reduction chain, and magnitudes far apart, so that any
  // other order of the additions changes bits.
  const size_t n = (size_t(1) << 18) + 1000;
  const int accum = 6;
  std::vector<std::vector<float>> g(accum, std::vector<float>(n));
  Rng rng(7);
  for (int m = 0; m < accum; m++)
    for (size_t i = 0; i < n; i++) g[size_t(m)][i] = float((rng.uniform() - 0.5) * std::ldexp(1.0, int(rng.next() % 40) - 20));
  std::vector<float> in_order = g[0], pairwise(n);
  for (int m = 1; m < accum; m++)
    for (size_t i = 0; i < n; i++) in_order[i] += g[size_t(m)][i];
  for (size_t i = 0; i < n; i++) pairwise[i] = ((g[0][i] + g[1][i]) + (g[2][i] + g[3][i])) + (g[4][i] + g[5][i]);
  ASSERT_NE(std::memcmp(in_order.data(), pairwise.data(), n * sizeof(float)), 0) << "the data cannot tell orders apart";

  for (int ranks = 1; ranks <= 4; ranks++) {
    std::vector<std::vector<float>> result(static_cast<size_t>(ranks));
    on_ranks(ranks, [&](int rank, Communicator& comm) {
      auto be = make_cpu_backend(1);
      Buffer grads(*be, n);
      OrderedGradientSum sum(*be, n);
      for (int step = 0; step < 2; step++) {  // buffers are reused across steps
        const MicroRange mine = micro_batches_of(rank, ranks, accum);
        for (int m = mine.first; m < mine.end; m++) {
          be->upload(grads.data(), g[size_t(m)].data(), n);
          if (m + 1 < mine.end) sum.keep(grads.data(), rank);
        }
        sum.finish(grads.data(), comm);
      }
      result[size_t(rank)].resize(n);
      be->download(result[size_t(rank)].data(), grads.data(), n);
    });
    for (int r = 0; r < ranks; r++)
      EXPECT_EQ(std::memcmp(result[size_t(r)].data(), in_order.data(), n * sizeof(float)), 0) << ranks << " ranks, rank " << r;
  }
}

std::string fixture_text() {
  std::ifstream in(kTestDir + "/fixtures/text2k.txt", std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

TrainConfig parallel_config() {
  TrainConfig c;
  c.model = named_config("tiny");
  c.model.T = 64;
  c.model.B = 2;
  c.adamw.lr = 3e-3f;
  c.warmup_steps = 2;
  c.steps = 4;
  c.val_every = 2;
  c.val_bytes = 300;
  c.checkpoint_every = 3;
  c.accum_steps = 3;
  c.chunk = 8;
  return c;
}

std::vector<float> weights_of(Trainer& t) {
  std::vector<float> w(t.model().num_params());
  t.model().backend().download(w.data(), t.model().params(), w.size());
  return w;
}

std::string file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

// Every step's logged numbers (loss, validation, learning rate, gradient norm) but the speed.
std::vector<nlohmann::json> metrics_but_speed(const std::string& run) {
  std::ifstream in(run + "/metrics.jsonl");
  std::vector<nlohmann::json> lines;
  for (std::string line; std::getline(in, line);) {
    lines.push_back(nlohmann::json::parse(line));
    lines.back().erase("bytes_per_s");
  }
  return lines;
}

void expect_ranks_train_the_weights_of_one_process(bool carry_state) {
  TempDir d(carry_state ? "dp-carry" : "dp");
  d.write("data/text.txt", fixture_text());
  d.write("data/short.txt", fixture_text().substr(500, 200));  // rows reach its end during the run
  const std::string data = d.path + "/data";
  TrainConfig cfg = parallel_config();
  cfg.carry_state = carry_state;
  auto be = make_cpu_backend(1);
  Trainer one(cfg, {data}, d.path + "/one", *be, false);
  one.run(0, 0, nullptr, nullptr);
  const std::vector<float> want = weights_of(one);
  const std::vector<double> want_losses = one.step_losses();

  for (int ranks : {2, 3}) {
    const std::string out = d.path + "/ranks" + std::to_string(ranks);
    on_ranks(ranks, [&](int rank, Communicator& comm) {
      auto rbe = make_cpu_backend(1);
      Trainer t(cfg, {data}, out, *rbe, false, &comm);
      t.run(0, 0, nullptr, nullptr);
      EXPECT_EQ(weights_of(t), want) << ranks << " ranks, rank " << rank;
      EXPECT_EQ(t.step_losses(), want_losses) << ranks << " ranks, rank " << rank;
    });
    EXPECT_TRUE(file_bytes(out + "/state.safetensors") == file_bytes(d.path + "/one/state.safetensors")) << ranks << " ranks";
    EXPECT_EQ(metrics_but_speed(out), metrics_but_speed(d.path + "/one"));
  }
  // Two ranks train half the steps; one process resumes their checkpoint to the end, and back.
  on_ranks(2, [&](int, Communicator& comm) {
    auto rbe = make_cpu_backend(1);
    Trainer t(cfg, {data}, d.path + "/resumed", *rbe, false, &comm);
    t.run(2, 0, nullptr, nullptr);
  });
  {
    Trainer t(cfg, {data}, d.path + "/resumed", *be, true);
    EXPECT_EQ(t.step(), 2);
    t.run(3, 0, nullptr, nullptr);
  }
  on_ranks(3, [&](int, Communicator& comm) {
    auto rbe = make_cpu_backend(1);
    Trainer t(cfg, {data}, d.path + "/resumed", *rbe, true, &comm);
    EXPECT_EQ(t.step(), 3);
    t.run(0, 0, nullptr, nullptr);
    EXPECT_EQ(weights_of(t), want);
  });
  EXPECT_TRUE(file_bytes(d.path + "/resumed/model.safetensors") == file_bytes(d.path + "/one/model.safetensors"));
}

TEST(DataParallel, RanksTrainBitwiseTheWeightsOfOneProcessAndResumeWithAnotherCount) {
  expect_ranks_train_the_weights_of_one_process(false);
}
// Carried state: ranks own the micro-batches' rows; checkpoints gather them, resumes share them.
TEST(DataParallel, CarriedStateRanksTrainBitwiseTheWeightsOfOneProcessAndResumeWithAnotherCount) {
  expect_ranks_train_the_weights_of_one_process(true);
}

TEST(DataParallel, RanksGivenOtherDataOrTooFewMicroBatchesAreRefusedBeforeTraining) {
  TempDir d("dp_bad");
  const std::string data = d.write("a/text.txt", fixture_text());
  std::string changed = fixture_text();
  changed[100] ^= 1;
  const std::string other = d.write("b/text.txt", changed);  // same name and size, other bytes
  const TrainConfig cfg = parallel_config();
  std::vector<std::string> messages(2);
  EXPECT_THROW(on_ranks(2,
                        [&](int rank, Communicator& comm) {
                          auto be = make_cpu_backend(1);
                          try {
                            Trainer t(cfg, {rank == 0 ? data : other}, d.path + "/run", *be, false, &comm);
                          } catch (const RanksDisagree& e) {
                            messages[size_t(rank)] = e.what();
                            throw;
                          }
                        }),
               RanksDisagree);
  EXPECT_NE(messages[0].find("rank 1 sees other bytes in the same data files than rank 0"), std::string::npos) << messages[0];
  EXPECT_NE(messages[1].find("refused by rank 0"), std::string::npos) << messages[1];
  EXPECT_FALSE(fs::exists(d.path + "/run"));

  TrainConfig other_cfg = cfg;
  other_cfg.adamw.lr *= 2;
  expect_error_containing(
      [&] {
        on_ranks(2, [&](int rank, Communicator& comm) {
          auto be = make_cpu_backend(1);
          Trainer t(rank == 0 ? cfg : other_cfg, {data}, d.path + "/run", *be, false, &comm);
        });
      },
      "rank 1 was given other training settings than rank 0");

  expect_error_containing(
      [&] {
        on_ranks(4, [&](int, Communicator& comm) {
          auto be = make_cpu_backend(1);
          Trainer t(cfg, {data}, d.path + "/run", *be, false, &comm);
        });
      },
      "accum_steps 3 is fewer than the 4 ranks");
  EXPECT_FALSE(fs::exists(d.path + "/run"));
}

}  // namespace
}  // namespace rb
