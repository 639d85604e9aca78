// The CPU backend's thread pool: every index of a job runs exactly once at any thread count and
// chunk size, the caller claims from the front and workers from the back, jobs started inside a
// job run inline, and workers that keep the caller waiting are left out for a while.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "kernels/cpu/thread_pool.h"

namespace rb {
namespace {

TEST(ThreadPool, EveryIndexRunsExactlyOnceAtAnyThreadCountAndGrain) {
  for (int threads : {1, 2, 3, 4}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.size(), threads);
    for (int64_t n : {1, 2, 7, 64, 1000})
      for (int64_t grain : {1, 3, 64}) {
        std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
        for (int rep = 0; rep < 300; rep++)  // more than one of the pool's judging windows
          pool.parallel_for(n, grain, [&](int64_t b, int64_t e) {
            for (int64_t i = b; i < e; i++) hits[size_t(i)]++;
          });
        for (int64_t i = 0; i < n; i++) ASSERT_EQ(hits[size_t(i)].load(), 300) << threads << " threads, n " << n;
      }
  }
}

// A job word counts at most 65535 chunks: longer jobs hand out several pieces per claim, each
// call still at most `grain` long and every index still run once.
TEST(ThreadPool, JobsWithMoreChunksThanTheJobWordCountsRunEveryIndexOnceInPiecesOfAtMostGrain) {
  for (int threads : {2, 3}) {
    ThreadPool pool(threads);
    const int64_t n = 200003;
    for (int64_t grain : {1, 2}) {
      std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
      std::atomic<int64_t> longest{0};
      pool.parallel_for(n, grain, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; i++) hits[size_t(i)]++;
        for (int64_t l = longest.load(); e - b > l && !longest.compare_exchange_weak(l, e - b);) {}
      });
      EXPECT_EQ(longest.load(), grain);
      for (int64_t i = 0; i < n; i++) ASSERT_EQ(hits[size_t(i)].load(), 1) << threads << " threads, index " << i;
    }
  }
}

// Idle workers go to sleep; the next job wakes them and they take part again.
TEST(ThreadPool, SleepingWorkersWakeForTheNextJob) {
  ThreadPool pool(2);
  const std::thread::id caller = std::this_thread::get_id();
  std::atomic<int> on_worker{0};
  for (int round = 0; round < 5 && on_worker.load() == 0; round++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // long past the workers' spinning
    pool.parallel_for(16, 1, [&](int64_t, int64_t) {
      if (std::this_thread::get_id() != caller) on_worker++;
      const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(500);
      while (std::chrono::steady_clock::now() < until) {}
    });
  }
  EXPECT_GT(on_worker.load(), 0) << "a sleeping worker never woke for a job of 8 ms";
}

TEST(ThreadPool, TheCallerClaimsFromTheFrontWorkersFromTheBackAndNestedJobsRunInline) {
  ThreadPool pool(2);
  const std::thread::id caller = std::this_thread::get_id();
  for (int rep = 0; rep < 200; rep++) {
    std::vector<int> on_caller(16, -1);
    pool.parallel_for(16, 1, [&](int64_t b, int64_t e) {
      const std::thread::id here = std::this_thread::get_id();
      for (int64_t c = b; c < e; c++) on_caller[size_t(c)] = here == caller;
      pool.parallel_for(8, 1, [&](int64_t, int64_t) { EXPECT_EQ(std::this_thread::get_id(), here); });
    });
    // The caller's chunks are a prefix, the worker's the rest.
    for (size_t c = 1; c < on_caller.size(); c++) {
      ASSERT_NE(on_caller[c], -1);
      EXPECT_LE(on_caller[c], on_caller[c - 1]) << "chunk " << c << " ran on the caller after one that did not";
    }
  }
}

// A worker that keeps the caller waiting (as when another program takes its core) is left out:
// after a window of such jobs the following jobs run on the calling thread alone.
TEST(ThreadPool, WorkersThatKeepTheCallerWaitingAreLeftOutForAWhile) {
  ThreadPool pool(2);
  const std::thread::id caller = std::this_thread::get_id();
  std::atomic<int> on_worker{0};
  auto job = [&](bool stall) {
    pool.parallel_for(2, 1, [&](int64_t, int64_t) {
      if (std::this_thread::get_id() == caller) return;
      on_worker++;
      if (stall) std::this_thread::sleep_for(std::chrono::microseconds(300));
    });
  };
  for (int i = 0; i < 300; i++) job(true);  // a whole window of late (or absent) workers
  on_worker = 0;
  for (int i = 0; i < 200; i++) job(false);
  EXPECT_EQ(on_worker.load(), 0) << "jobs right after a bad window should run on the caller alone";
}

}  // namespace
}  // namespace rb
