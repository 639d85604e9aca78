// The CPU backend's worker threads. The calling thread takes part in every job and chunks are
// claimed dynamically, the caller's from the front, the workers' from the back: with two threads
// each core gets the same part of a job every time it runs at an even pace (its part of a weight
// matrix stays in its cache), and a worker the OS has descheduled or slowed (another program busy
// on its core) never holds the caller up: the caller just claims more of the chunks. Idle workers spin briefly
// (jobs come back-to-back while decoding) and then sleep on a futex, so they do not steal a
// shared machine's cores the way spinning OpenMP threads do.
//
// Results never depend on which thread ran which chunk: the kernels make each output's
// arithmetic independent of the partition (README, numerics contract).
#pragma once
#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

namespace rb {

// A non-owning reference to a callable taking (begin, end): what a job runs. Unlike std::function
// it never allocates (decoding starts ~10 jobs a byte); the callable must outlive the call, as it
// does for parallel_for, which returns only when the job is done.
class RangeFn {
 public:
  template <class F>
  RangeFn(const F& f) : obj_(&f), call_([](const void* o, int64_t b, int64_t e) { (*static_cast<const F*>(o))(b, e); }) {}
  void operator()(int64_t b, int64_t e) const { call_(obj_, b, e); }

 private:
  const void* obj_;
  void (*call_)(const void*, int64_t, int64_t);
};

class ThreadPool {
 public:
  explicit ThreadPool(int threads);  // threads - 1 workers are started
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return int(workers_.size()) + 1; }
  // Calls fn(begin, end) on disjoint chunks covering [0, n), each at most `grain` long, across
  // the pool; returns when all are done. Calls fn(0, n) on the calling thread instead when
  // n <= grain, when the pool has one thread, when called from inside another job, or while the
  // workers are left out (they kept the caller waiting lately: their cores are busy elsewhere).
  void parallel_for(int64_t n, int64_t grain, RangeFn fn);

 private:
  void worker_loop(uint32_t seen);      // seen: the generation when the pool was made
  int64_t run_chunks(bool from_front);  // returns the number of chunks it ran

  std::vector<std::thread> workers_;
  // The current job (written only while no worker is inside it).
  const RangeFn* fn_ = nullptr;
  int64_t n_ = 0, grain_ = 1, nchunks_ = 0;
  // Chunks claimed so far: from the front (the caller) in the low 32 bits, from the back (the
  // workers) in the high 32; one word, so a claim sees both counts at once.
  std::atomic<uint64_t> claims_{0};
  std::atomic<int64_t> chunks_done_{0};
  std::atomic<bool> open_{false};
  std::atomic<int> inside_{0};
  std::atomic<int> sleepers_{0};  // workers currently looking at the job
  std::atomic<uint32_t> generation_{0};
  std::atomic<bool> stop_{false};
  // Caller-only state: this window's jobs, those that waited for a descheduled worker and those a
  // worker helped with; jobs to run on the caller alone before trying the workers again.
  int window_jobs_ = 0, window_late_ = 0, window_helped_ = 0, serial_jobs_left_ = 0;
};

}  // namespace rb
