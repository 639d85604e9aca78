// The CPU backend's worker threads. The calling thread takes part in every job and chunks are
// claimed dynamically, the caller's from the front, the workers' from the back: with two threads
// each core gets the same part of a job every time it runs at an even pace (its part of a weight
// matrix stays in its cache), and a worker the OS has descheduled or slowed (another program busy
// on its core) never holds the caller up: the caller just claims more of the chunks. Idle workers spin briefly
// (jobs come back-to-back while decoding) and then sleep on a futex, so they do not steal a
// shared machine's cores the way spinning OpenMP threads do. A job is posted with one store and
// claimed with compare-and-swaps on one word; the caller never waits for a worker to leave (only
// for the chunks it took), so a hand-off costs about one round trip between the cores (~110 ns
// measured on the Zen 5 VM, against ~300 ns for the earlier open/inside/claims/done handshake).
//
// Which pays is also timed: whole windows of short jobs with the workers against windows on the
// caller alone (end_window), the faster running and the other probed now and then.
//
// Results never depend on which thread ran which chunk: the kernels make each output's
// arithmetic independent of the partition (README, numerics contract).
#pragma once
#include <atomic>
#include <chrono>
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

// Which way of running short jobs pays, judged by the wall time of whole windows of jobs (the pool's
// end_window; decoding: everything between the jobs included): every job with the workers, only
// large ones, or the caller alone. Every mode is tried once; then the fastest runs and the others
// are probed in turn, one window in `probe_every()`: 16, doubling while probes lose, up to 256, and
// back to 16 when a probe wins. The mode running is smoothed (one noisy window does not decide); a
// probe's window replaces what its mode measured windows ago, when the machine may have been otherwise.
// Pure bookkeeping, no clock: the pool feeds it window times, and tests feed it made-up ones.
class ModeDuel {
 public:
  enum Mode { kEveryJob = 0, kLargeJobs = 1, kAlone = 2, kModes = 3 };
  static constexpr int kProbeEvery = 16, kProbeEveryMost = 256;
  // Windows longer than this are not short jobs (large products: the workers pay whatever the
  // machine does, and a probe alone would cost much): such a window starts the duel again.
  static constexpr double kMaxWindowNs = 20e6;

  // The window that ran mode() took `ns`; `counted` is false for windows that must not count (one
  // the late-worker rule ran alone, the pool's first). Chooses the next window's mode.
  void end_window(double ns, bool counted);
  int mode() const { return mode_; }
  bool probing() const { return probing_; }
  int probe_every() const { return probe_every_; }

 private:
  double ns_[kModes] = {0, 0, 0};  // each mode's recent windows' wall time (0: not tried yet)
  int mode_ = kEveryJob;
  int windows_since_probe_ = 0, last_probe_ = 0;
  int probe_every_ = kProbeEvery;
  bool probing_ = false;
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
  //
  // `size` says whether the job is small (a product under ~256k multiply-adds, one retention step):
  // where a hand-off between the cores costs as much as such a job (cores far apart: ~0.5 us a round
  // trip measured on one VM, ~0.1 us on another), the pool learns to run small jobs on the caller
  // and split only large ones.
  enum class JobSize { Small, Large };
  void parallel_for(int64_t n, int64_t grain, RangeFn fn, JobSize size = JobSize::Large);
  // The late-worker rule holds now: jobs run on the caller alone for a while, whatever pays.
  bool workers_left_out() const { return serial_jobs_left_ > 0; }

 private:
  // The job word: [sequence:16][chunks:16][claimed from the front:16][claimed from the back:16].
  // A job is open while front + back < chunks; claims are compare-and-swaps on the whole word, so a
  // worker that looked at an earlier job can never claim in a later one by mistake (its swap fails)
  // and a successful claim proves the job is still open, its description (fn_, n_, grain_) stable.
  static constexpr int kShift[4] = {48, 32, 16, 0};
  static uint64_t word(uint64_t seq, uint64_t chunks, uint64_t front, uint64_t back) {
    return (seq & 0xFFFF) << 48 | chunks << 32 | front << 16 | back;
  }
  static int64_t field(uint64_t w, int i) { return int64_t((w >> kShift[i]) & 0xFFFF); }
  static constexpr int64_t kMaxChunks = 0xFFFF;

  void worker_loop();
  // Claims the next chunk (from the front or back) of the job in `job_`; -1 when none is left.
  int64_t claim(bool from_front);
  void run_chunk(int64_t c) const;

  std::vector<std::thread> workers_;
  // The current job, written by the caller only while no chunk of the previous one can be running.
  const RangeFn* fn_ = nullptr;
  int64_t n_ = 0, grain_ = 1, pieces_ = 0, per_claim_ = 1;  // pieces of at most grain_; pieces per chunk
  uint64_t seq_ = 0;                                        // caller-only: the sequence of the last job
  alignas(64) std::atomic<uint64_t> job_{0};
  // Chunks the workers finished, over the pool's life (its own cache line: the workers count here
  // while the caller claims in job_).
  alignas(64) std::atomic<uint64_t> worker_done_{0};
  uint64_t worker_done_expected_ = 0;                // caller-only
  alignas(64) std::atomic<uint32_t> generation_{0};  // bumped to wake sleeping workers
  std::atomic<int> sleepers_{0};
  std::atomic<bool> stop_{false};
  // Caller-only state: this window's jobs, those given to the workers, those timed, those that
  // waited for a descheduled worker and those a worker helped with; jobs to run on the caller
  // alone before trying the workers again.
  int window_jobs_ = 0, window_posted_ = 0, window_timed_ = 0, window_late_ = 0, window_helped_ = 0, serial_jobs_left_ = 0;
  bool window_forced_ = false;  // a job of this window ran alone by the late-worker rule
  void end_window();
  std::chrono::steady_clock::time_point window_start_{};
  ModeDuel duel_;
  bool startup_window_ = true;  // the pool's first window (start-up costs) is not timed
};

}  // namespace rb
