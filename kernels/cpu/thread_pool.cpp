#include "kernels/cpu/thread_pool.h"

#include <algorithm>
#include <chrono>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define RB_PAUSE() _mm_pause()
#else
#define RB_PAUSE() ((void)0)
#endif

namespace rb {

namespace {
// A worker polls this many times (~20-40 us) before sleeping; decode jobs arrive every few us.
constexpr int kSpinBeforeSleep = 2000;
// Workers are judged over windows of kWindowJobs jobs (bad: a quarter of the timed jobs late, or
// under a quarter helped); a bad window sends the next kSerialJobs jobs
// (a few hundred bytes of decoding, ~10-50 ms) to the caller alone.
constexpr int kWindowJobs = 256, kSerialJobs = 4096;
constexpr int kLateMicros = 50;  // a wait beyond 4 of the caller's chunks and this is late
constexpr int kTimedEvery = 8;   // jobs judged for lateness: one in kTimedEvery
thread_local bool tls_in_job = false;
}  // namespace

ThreadPool::ThreadPool(int threads) {
  for (int i = 1; i < threads; i++) workers_.emplace_back([this] { worker_loop(0); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true);
  generation_.fetch_add(1);
  generation_.notify_all();
  for (std::thread& t : workers_) t.join();
}

int64_t ThreadPool::run_chunks(bool from_front) {
  for (int64_t ran = 0;; ran++) {
    const uint64_t before = claims_.fetch_add(from_front ? 1 : uint64_t(1) << 32, std::memory_order_relaxed);
    const int64_t front = int64_t(before & 0xFFFFFFFFu), back = int64_t(before >> 32);
    if (front + back >= nchunks_) return ran;
    const int64_t c = from_front ? front : nchunks_ - 1 - back;
    const int64_t b = c * grain_, e = b + grain_ < n_ ? b + grain_ : n_;
    (*fn_)(b, e);
    chunks_done_.fetch_add(1, std::memory_order_release);
  }
}

void ThreadPool::worker_loop(uint32_t seen) {
  tls_in_job = true;  // a kernel called from a job never fans out again
  for (;;) {
    int spins = 0;
    uint32_t g;
    while ((g = generation_.load(std::memory_order_acquire)) == seen && !stop_.load()) {
      if (++spins < kSpinBeforeSleep) {
        RB_PAUSE();
      } else {
        sleepers_.fetch_add(1);
        generation_.wait(seen);
        sleepers_.fetch_sub(1);
        spins = 0;
      }
    }
    seen = g;
    if (stop_.load()) return;
    inside_.fetch_add(1);
    if (open_.load()) run_chunks(false);
    inside_.fetch_sub(1);
  }
}

void ThreadPool::parallel_for(int64_t n, int64_t grain, RangeFn fn) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  if (workers_.empty() || n <= grain || tls_in_job) {
    fn(0, n);
    return;
  }
  if (serial_jobs_left_ > 0) {  // the workers kept us waiting lately (their cores are busy): go alone
    serial_jobs_left_--;
    fn(0, n);
    return;
  }
  fn_ = &fn;
  n_ = n;
  grain_ = grain;
  nchunks_ = (n + grain - 1) / grain;
  chunks_done_.store(0, std::memory_order_relaxed);
  claims_.store(0, std::memory_order_relaxed);
  open_.store(true);
  generation_.fetch_add(1);
  if (sleepers_.load() > 0) generation_.notify_all();  // a futex call only when someone sleeps
  tls_in_job = true;
  // One job in kTimedEvery is timed (a clock read costs ~25 ns; decoding runs ~10 jobs a byte).
  using Clock = std::chrono::steady_clock;
  const bool timed = window_jobs_ % kTimedEvery == 0;
  const Clock::time_point t_start = timed ? Clock::now() : Clock::time_point{};
  const int64_t ran = run_chunks(true);
  const Clock::time_point t_ran = timed ? Clock::now() : Clock::time_point{};
  tls_in_job = false;
  // Chunks a worker claimed may still be running; wait for them, then for every worker to leave.
  for (int spins = 0; chunks_done_.load(std::memory_order_acquire) < nchunks_; spins++) {
    if (spins < kSpinBeforeSleep)
      RB_PAUSE();
    else
      std::this_thread::yield();  // the worker holding a chunk was descheduled
  }
  open_.store(false);
  while (inside_.load() != 0) std::this_thread::yield();
  // Whether the workers pay: a wait of several chunks' time means a worker lost its core mid-job,
  // and a worker that claims nothing is not getting a core at all (another program runs there;
  // the three threads then also slow the caller). When either happens often in a window of jobs,
  // the next jobs run on the calling thread alone (idle workers go to sleep), then the workers are
  // tried again. Results never depend on it: any split gives the same bits.
  if (timed) {
    const auto per_chunk = (t_ran - t_start) / std::max<int64_t>(1, ran);
    window_late_ += Clock::now() - t_ran > 4 * per_chunk + std::chrono::microseconds(kLateMicros);
  }
  window_jobs_++;
  window_helped_ += ran < nchunks_;
  if (window_jobs_ == kWindowJobs) {
    if (window_late_ * 4 > kWindowJobs / kTimedEvery || window_helped_ * 4 < kWindowJobs) serial_jobs_left_ = kSerialJobs;
    window_jobs_ = window_late_ = window_helped_ = 0;
  }
}

}  // namespace rb
