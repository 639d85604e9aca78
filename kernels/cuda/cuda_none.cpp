// Builds without a CUDA toolkit: no GPU backend, with errors that say how to get one.
#include "kernels/cuda/cuda.h"
#include "src/common/errors.h"

namespace rb {

bool cuda_built() { return false; }

std::vector<GpuInfo> cuda_devices(std::string* why) {
  if (why) *why = "this retbyte was built without CUDA (install the CUDA toolkit and rebuild)";
  return {};
}

std::unique_ptr<Backend> make_cuda_backend(int, bool) {
  throw Error("--device cuda: this retbyte was built without CUDA (install the CUDA toolkit, nvcc on PATH, and rebuild)");
}

}  // namespace rb
