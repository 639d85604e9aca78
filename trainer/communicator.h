// How the ranks of a data-parallel run talk: world size, rank, broadcast, gather and the
// point-to-point messages the fixed-order gradient reduction is made of. One process is the
// world of size 1; `mpirun -np N retbyte train` gives an MPI world (trainer/communicator_mpi.cpp).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "src/common/errors.h"

namespace rb {

// Thrown on every rank when rank 0 refused the job before training (ranks given other data or
// configs). Rank 0's message says why; the other ranks' copies say "refused by rank 0".
class RanksDisagree : public Error {
 public:
  using Error::Error;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual int local_size() const { return 1; }  // ranks on this machine (to share its cores)
  virtual std::string name() const = 0;
  // Every rank gets root's `bytes` bytes.
  virtual void broadcast(void* data, size_t bytes, int root) = 0;
  // Root's `out` gets every rank's `bytes` bytes in rank order (size() * bytes); others' is untouched.
  virtual void gather(const void* in, size_t bytes, void* out, int root) = 0;
  virtual void send(const void* data, size_t bytes, int to) = 0;
  virtual void receive(void* data, size_t bytes, int from) = 0;
  // Takes every rank down at once (a rank failed alone: the others would wait for it forever).
  virtual void abort(int exit_code) noexcept = 0;
  // Bytes this rank sent so far; a broadcast counts (size() - 1) copies at its root.
  uint64_t bytes_sent() const { return bytes_sent_; }

 protected:
  uint64_t bytes_sent_ = 0;
};

std::unique_ptr<Communicator> make_single_process_communicator();

// True when this process was started by mpirun (OpenMPI, or a PMI launcher).
bool launched_by_mpirun();
// Whether this build links MPI (CMake option RETBYTE_MPI).
bool mpi_built();
// The MPI world: calls MPI_Init (MPI_Finalize when destroyed). Throws rb::Error in a build without
// MPI. Waits poll and sleep instead of spinning, so a waiting rank leaves its core to the others.
std::unique_ptr<Communicator> make_mpi_communicator();

}  // namespace rb
