// A build without MPI (CMake found none, or -DRETBYTE_MPI=OFF).
#include "trainer/communicator.h"

namespace rb {

bool mpi_built() { return false; }

std::unique_ptr<Communicator> make_mpi_communicator() {
  throw Error("this retbyte was built without MPI (install libopenmpi-dev and rebuild) but was started by mpirun");
}

}  // namespace rb
