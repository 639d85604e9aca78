// The CPU backend's worker threads. The calling thread takes part in every job and chunks are
// claimed dynamically, so a worker the OS has descheduled (another program busy on its core)
// never holds the caller up: the caller just does that work itself. Idle workers spin briefly
// (jobs come back-to-back while decoding) and then sleep on a futex, so they do not steal a
// shared machine's cores the way spinning OpenMP threads do.
//
// Results never depend on which thread ran which chunk: the kernels make each output's
// arithmetic independent of the partition (README, numerics contract).
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

namespace rb {

class ThreadPool {
 public:
  explicit ThreadPool(int threads);  // threads - 1 workers are started
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return int(workers_.size()) + 1; }
  // Calls fn(begin, end) on disjoint chunks covering [0, n), each at most `grain` long, across
  // the pool; returns when all are done. Runs serially when n <= grain, when the pool has one
  // thread, or when called from inside another job.
  void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

 private:
  void worker_loop(uint32_t seen);  // seen: the generation when the pool was made
  void run_chunks();

  std::vector<std::thread> workers_;
  // The current job (written only while no worker is inside it).
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t n_ = 0, grain_ = 1, nchunks_ = 0;
  std::atomic<int64_t> next_chunk_{0}, chunks_done_{0};
  std::atomic<bool> open_{false};
  std::atomic<int> inside_{0};
  std::atomic<int> sleepers_{0};  // workers currently looking at the job
  std::atomic<uint32_t> generation_{0};
  std::atomic<bool> stop_{false};
};

}  // namespace rb
