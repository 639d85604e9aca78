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
  for (int i = 1; i < threads; i++) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true);
  generation_.fetch_add(1);
  generation_.notify_all();
  for (std::thread& t : workers_) t.join();
}

int64_t ThreadPool::claim(bool from_front) {
  uint64_t w = job_.load(std::memory_order_acquire);
  for (;;) {
    const int64_t chunks = field(w, 1), front = field(w, 2), back = field(w, 3);
    if (front + back >= chunks) return -1;
    if (job_.compare_exchange_weak(w, w + (from_front ? uint64_t(1) << 16 : 1), std::memory_order_acq_rel,
                                   std::memory_order_acquire))
      return from_front ? front : chunks - 1 - back;
  }
}

void ThreadPool::run_chunk(int64_t c) const {
  const int64_t last = std::min(pieces_, (c + 1) * per_claim_);
  for (int64_t i = c * per_claim_; i < last; i++) {
    const int64_t b = i * grain_;
    (*fn_)(b, std::min(n_, b + grain_));
  }
}

void ThreadPool::worker_loop() {
  tls_in_job = true;  // a kernel called from a job never fans out again
  const auto open = [](uint64_t w) { return field(w, 2) + field(w, 3) < field(w, 1); };
  for (;;) {
    for (int spins = 0; !open(job_.load(std::memory_order_acquire));) {
      if (stop_.load(std::memory_order_relaxed)) return;
      if (++spins < kSpinBeforeSleep) {
        RB_PAUSE();
        continue;
      }
      // Sleep until the caller posts a job. Either it sees sleepers_ and bumps the generation, or
      // this thread sees its job (all three are sequentially consistent).
      const uint32_t g = generation_.load();
      sleepers_.fetch_add(1);
      if (!open(job_.load()) && !stop_.load()) generation_.wait(g);
      sleepers_.fetch_sub(1);
      spins = 0;
    }
    for (int64_t c; (c = claim(false)) >= 0;) {
      run_chunk(c);
      worker_done_.fetch_add(1, std::memory_order_release);
    }
  }
}

void ThreadPool::parallel_for(int64_t n, int64_t grain, RangeFn fn, JobSize size) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  if (workers_.empty() || n <= grain || tls_in_job) {
    fn(0, n);
    return;
  }
  if (window_jobs_ == 0) window_start_ = std::chrono::steady_clock::now();
  const int mode = duel_.mode();
  const bool by_mode = mode == ModeDuel::kAlone || (mode == ModeDuel::kLargeJobs && size == JobSize::Small);
  if (serial_jobs_left_ > 0 || by_mode) {  // the workers kept us waiting lately, or do not pay here: alone
    window_forced_ |= !by_mode;
    serial_jobs_left_ -= serial_jobs_left_ > 0;
    fn(0, n);
    if (++window_jobs_ == kWindowJobs) end_window();
    return;
  }
  fn_ = &fn;
  n_ = n;
  grain_ = grain;
  pieces_ = (n + grain - 1) / grain;
  per_claim_ = (pieces_ + kMaxChunks - 1) / kMaxChunks;  // 1 unless the pieces overflow the job word
  const int64_t chunks = (pieces_ + per_claim_ - 1) / per_claim_;
  job_.store(word(++seq_, uint64_t(chunks), 1, 0));  // open, chunk 0 already the caller's
  if (sleepers_.load() > 0) {                        // a futex call only when someone sleeps
    generation_.fetch_add(1);
    generation_.notify_all();
  }
  tls_in_job = true;
  // One job in kTimedEvery is timed (a clock read costs ~25 ns; decoding runs ~10 jobs a byte).
  using Clock = std::chrono::steady_clock;
  const bool timed = window_posted_ % kTimedEvery == 0;
  const Clock::time_point t_start = timed ? Clock::now() : Clock::time_point{};
  int64_t ran = 0;
  for (int64_t c = 0; c >= 0; c = claim(true), ran++) run_chunk(c);
  const Clock::time_point t_ran = timed ? Clock::now() : Clock::time_point{};
  tls_in_job = false;
  // Every chunk is claimed; wait for those the workers took (a successful claim keeps the job's
  // description valid until its chunk is counted here).
  worker_done_expected_ += uint64_t(chunks - ran);
  for (int spins = 0; worker_done_.load(std::memory_order_acquire) != worker_done_expected_; spins++) {
    if (spins < kSpinBeforeSleep)
      RB_PAUSE();
    else
      std::this_thread::yield();  // the worker holding a chunk was descheduled
  }
  // Whether the workers pay: a wait of several chunks' time means a worker lost its core mid-job,
  // and a worker that claims nothing is not getting a core at all (another program runs there;
  // the three threads then also slow the caller). When either happens often in a window of jobs,
  // the next jobs run on the calling thread alone (idle workers go to sleep), then the workers are
  // tried again. Results never depend on it: any split gives the same bits.
  if (timed) {
    const auto per_chunk = (t_ran - t_start) / std::max<int64_t>(1, ran);
    window_late_ += Clock::now() - t_ran > 4 * per_chunk + std::chrono::microseconds(kLateMicros);
    window_timed_++;
  }
  window_posted_++;
  window_helped_ += ran < chunks;
  if (++window_jobs_ == kWindowJobs) end_window();
}

void ThreadPool::end_window() {
  const double ns =
      double(std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - window_start_).count());
  // The late-worker rule, over the jobs the workers were given.
  if (window_posted_ > 0 && (window_late_ * 4 > window_timed_ || window_helped_ * 4 < window_posted_))
    serial_jobs_left_ = kSerialJobs;
  const bool forced = window_forced_, startup = startup_window_;
  window_jobs_ = window_posted_ = window_timed_ = window_late_ = window_helped_ = 0;
  window_forced_ = startup_window_ = false;
  duel_.end_window(ns, !forced && !startup);
}

void ModeDuel::end_window(double ns, bool counted) {
  const bool probed = probing_;
  probing_ = false;
  if (ns > kMaxWindowNs) {  // not a window of short jobs: start again
    mode_ = kEveryJob;
    for (double& t : ns_) t = 0;
    probe_every_ = kProbeEvery;
    return;
  }
  if (counted) {
    double& last = ns_[mode_];
    last = last > 0 && !probed ? 0.5 * (last + ns) : ns;
  }
  int fastest = -1;
  for (int m = 0; m < kModes; m++) {
    if (ns_[m] == 0) {
      if (ns_[kEveryJob] > 0) mode_ = m;  // not tried yet (every job first)
      if (ns_[kEveryJob] > 0 || m == kEveryJob) return;
    }
    if (fastest < 0 || ns_[m] < ns_[fastest]) fastest = m;
  }
  if (probed) probe_every_ = fastest == mode_ ? kProbeEvery : std::min(2 * probe_every_, kProbeEveryMost);
  if (++windows_since_probe_ >= probe_every_) {
    windows_since_probe_ = 0;
    do last_probe_ = (last_probe_ + 1) % kModes;  // the next mode that is not the fastest
    while (last_probe_ == fastest);
    mode_ = last_probe_;
    probing_ = true;
  } else {
    mode_ = fastest;
  }
}

}  // namespace rb
