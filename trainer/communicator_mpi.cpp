// The MPI world. Every wait polls MPI_Test and sleeps between polls: OpenMPI's blocking calls spin,
// which on a machine shared by ranks and threads steals a core from the rank still computing.
#include "trainer/communicator.h"

#include <mpi.h>
#include <time.h>

#include <algorithm>
#include <cstdlib>
#include <limits>

namespace rb {

bool mpi_built() { return true; }

namespace {
void check(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  throw Error(std::string("MPI ") + what + " failed: " + std::string(text, size_t(len)));
}

// Spins briefly (short waits stay fast), then sleeps up to 0.5 ms between polls.
void wait_for(MPI_Request& request, const char* what) {
  int done = 0;
  for (int spin = 0; spin < 2000 && !done; spin++) check(MPI_Test(&request, &done, MPI_STATUS_IGNORE), what);
  long nap_ns = 20'000;
  while (!done) {
    timespec ts{0, nap_ns};
    nanosleep(&ts, nullptr);
    nap_ns = std::min(nap_ns * 2, 500'000L);
    check(MPI_Test(&request, &done, MPI_STATUS_IGNORE), what);
  }
}

// MPI counts are ints: long messages go in pieces of at most 1 GiB.
constexpr size_t kPiece = size_t(1) << 30;

class MpiWorld final : public Communicator {
 public:
  MpiWorld() {
    int initialised = 0;
    MPI_Initialized(&initialised);
    if (!initialised) {
      int provided = 0;
      check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "init");
      owns_ = true;
      // Only the main thread calls MPI (the kernel threads never do); FUNNELED is all that is needed.
      if (provided < MPI_THREAD_FUNNELED) throw Error("MPI: this MPI library cannot be used from a multithreaded process");
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    MPI_Comm local;
    check(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local), "split by machine");
    check(MPI_Comm_size(local, &local_size_), "size of this machine's group");
    MPI_Comm_free(&local);
  }
  ~MpiWorld() override {
    if (owns_) MPI_Finalize();
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_size() const override { return local_size_; }
  std::string name() const override { return "MPI, " + std::to_string(size_) + " ranks"; }

  void broadcast(void* data, size_t bytes, int root) override {
    for (size_t at = 0; at < bytes; at += kPiece) {
      MPI_Request r;
      check(MPI_Ibcast(static_cast<char*>(data) + at, int(std::min(kPiece, bytes - at)), MPI_BYTE, root, MPI_COMM_WORLD, &r),
            "broadcast");
      wait_for(r, "broadcast");
    }
    if (rank_ == root) bytes_sent_ += bytes * uint64_t(size_ - 1);
  }
  void gather(const void* in, size_t bytes, void* out, int root) override {
    if (bytes > size_t(std::numeric_limits<int>::max()) / size_t(size_))
      throw Error("MPI gather of " + std::to_string(bytes) + " bytes per rank is too large");
    MPI_Request r;
    check(MPI_Igather(in, int(bytes), MPI_BYTE, out, int(bytes), MPI_BYTE, root, MPI_COMM_WORLD, &r), "gather");
    wait_for(r, "gather");
    if (rank_ != root) bytes_sent_ += bytes;
  }
  void send(const void* data, size_t bytes, int to) override {
    for (size_t at = 0; at < bytes; at += kPiece) {
      MPI_Request r;
      check(
          MPI_Isend(static_cast<const char*>(data) + at, int(std::min(kPiece, bytes - at)), MPI_BYTE, to, 0, MPI_COMM_WORLD, &r),
          "send");
      wait_for(r, "send");
    }
    bytes_sent_ += bytes;
  }
  void receive(void* data, size_t bytes, int from) override {
    for (size_t at = 0; at < bytes; at += kPiece) {
      MPI_Request r;
      check(MPI_Irecv(static_cast<char*>(data) + at, int(std::min(kPiece, bytes - at)), MPI_BYTE, from, 0, MPI_COMM_WORLD, &r),
            "receive");
      wait_for(r, "receive");
    }
  }
  void abort(int exit_code) noexcept override { MPI_Abort(MPI_COMM_WORLD, exit_code); }

 private:
  int rank_ = 0, size_ = 1, local_size_ = 1;
  bool owns_ = false;
};
}  // namespace

std::unique_ptr<Communicator> make_mpi_communicator() { return std::make_unique<MpiWorld>(); }

}  // namespace rb
