// The CUDA backend's code run on the host: ItemBackend (kernels/cuda/item_backend.h) over a
// device that runs each op's items in a plain loop, with host memory and a reference GEMM. What
// it tests is everything the GPU runs except cuBLAS and the launch itself: every kernel's
// indexing, bounds and math, on every CI machine, GPU or not.
#pragma once
#include <cstdlib>
#include <cstring>
#include <functional>
#include <set>
#include <vector>
#include <memory>
#include <string>

#include "tests/reference/reference.h"
#include "kernels/cuda/item_backend.h"
#include "src/common/errors.h"

namespace rb::test {

struct HostItemDevice {
  std::string name() const { return "gpu-emulated"; }
  std::string kernel_path() const { return "gpu kernels on the host"; }
  void synchronize() {}
  template <class Op>
  void run(int64_t n, const Op& op) {
    for (int64_t i = 0; i < n; i++) op(i);
    eager_ops += recording_depth == 0;
  }
  void* alloc_bytes(size_t bytes) {
    void* p = std::calloc(bytes ? bytes : 1, 1);
    if (!p) throw Error("gpu-emulated: out of memory");
    return p;
  }
  void free_bytes(void* p) { std::free(p); }
  void to_device(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }
  void to_host(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }
  void device_copy(void* dst, const void* src, size_t bytes) {
    std::memmove(dst, src, bytes);
    eager_ops += recording_depth == 0;
  }
  void gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb, float beta,
            float* C, int ldc) {
    ref::gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    eager_ops += recording_depth == 0;
  }
  // As the CUDA device replays a graph: the recorded ops in order. Counted, so tests can see that
  // a decoding step is one unit (and how many ops it holds).
  void run_recorded(uint64_t key, const std::vector<std::function<void()>>& ops) {
    recorded_units++;
    recorded_ops += int64_t(ops.size());
    recorded_keys.insert(key);
    recording_depth++;
    for (const auto& op : ops) op();
    recording_depth--;
  }
  int64_t recorded_units = 0, recorded_ops = 0, eager_ops = 0;
  std::set<uint64_t> recorded_keys;

 private:
  int recording_depth = 0;
};

using GpuEmulation = ItemBackend<HostItemDevice>;
inline std::unique_ptr<Backend> make_gpu_emulation() { return std::make_unique<GpuEmulation>(); }

}  // namespace rb::test
