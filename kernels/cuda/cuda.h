// The GPU side of the backend registry: which GPUs this process sees, and the CUDA backend
// (cuBLAS for matrix products, the item kernels of item_ops.h for every other op). A binary built
// without the CUDA toolkit, or run where no GPU or driver is present, still runs on the CPU:
// cuda_devices() is then empty and make_cuda_backend() throws a one-line rb::Error.
#pragma once
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "kernels/backend.h"

namespace rb {

struct GpuInfo {
  int index = 0;
  std::string name;
  size_t memory_bytes = 0;
  int major = 0, minor = 0;  // compute capability
};

bool cuda_built();  // this binary has the CUDA backend
// The GPUs this process can use (empty without the CUDA backend, a driver or a GPU); `why`
// (optional) receives the reason when it is empty.
std::vector<GpuInfo> cuda_devices(std::string* why = nullptr);
// The CUDA backend on GPU `device`. tf32: let cuBLAS use TF32 tensor cores (faster, ~1e-3
// relative error in products); off by default so results stay close to the CPU's.
std::unique_ptr<Backend> make_cuda_backend(int device = 0, bool tf32 = false);

}  // namespace rb
