// The CUDA backend: ItemBackend (item_backend.h) over device memory, every item op one GPU
// thread per item on the default stream, matrix products through cuBLAS. Built when CMake finds
// a CUDA toolkit; the binary still runs where no GPU or driver is present.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <string>

#include "kernels/cuda/cuda.h"
#include "kernels/cuda/item_backend.h"
#include "src/errors.h"

namespace rb {
namespace {

template <class Op>
__global__ void run_items(Op op, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) op(i);
}

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw Error(std::string("cuda: ") + what + ": " + cudaGetErrorString(e));
}

const char* cublas_error(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_NOT_INITIALIZED: return "not initialised";
    case CUBLAS_STATUS_ALLOC_FAILED: return "out of GPU memory";
    case CUBLAS_STATUS_INVALID_VALUE: return "invalid value";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "not supported by this GPU";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "execution failed";
    default: return "error";
  }
}

std::string mib(size_t bytes) { return std::to_string((bytes + (1 << 20) - 1) >> 20) + " MiB"; }

class CudaDevice {
 public:
  CudaDevice(int device, bool tf32) : device_(device) {
    std::string why;
    const std::vector<GpuInfo> gpus = cuda_devices(&why);
    if (gpus.empty()) throw Error("--device cuda: " + why);
    if (device < 0 || device >= int(gpus.size()))
      throw Error("--device cuda:" + std::to_string(device) + ": this machine has " + std::to_string(gpus.size()) + " GPU(s)");
    check(cudaSetDevice(device), "cudaSetDevice");
    if (cublasCreate(&handle_) != CUBLAS_STATUS_SUCCESS) throw Error("cuda: cannot create a cuBLAS handle");
    // TF32 only when asked: the default keeps products in full FP32, close to the CPU's.
    cublasSetMathMode(handle_, tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH);
    name_ = gpus[size_t(device)].name;
    tf32_ = tf32;
  }
  ~CudaDevice() {
    if (handle_) cublasDestroy(handle_);
  }
  CudaDevice(const CudaDevice&) = delete;
  CudaDevice& operator=(const CudaDevice&) = delete;

  std::string name() const { return "cuda"; }
  std::string kernel_path() const { return "cuda:" + std::to_string(device_) + " (" + name_ + (tf32_ ? ", TF32" : "") + ")"; }

  void synchronize() { check(cudaDeviceSynchronize(), "synchronize"); }
  template <class Op>
  void run(int64_t n, const Op& op) {
    if (n <= 0) return;
    constexpr int kThreads = 128;
    const int64_t blocks = std::min<int64_t>((n + kThreads - 1) / kThreads, int64_t(1) << 20);
    run_items<<<unsigned(blocks), kThreads>>>(op, n);
    check(cudaGetLastError(), "kernel launch");
  }
  void* alloc_bytes(size_t bytes) {
    void* p = nullptr;
    if (bytes == 0) bytes = 1;
    if (cudaMalloc(&p, bytes) != cudaSuccess) {
      cudaGetLastError();  // clear the sticky-free error so the process can go on
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      throw Error("cuda: out of GPU memory: asked for " + mib(bytes) + " with " + mib(free_b) + " free of " + mib(total_b) +
                  " on " + name_ + " (use a smaller B or T, or --device cpu)");
    }
    check(cudaMemset(p, 0, bytes), "cudaMemset");
    return p;
  }
  void free_bytes(void* p) { cudaFree(p); }
  void to_device(void* dst, const void* src, size_t bytes) { check(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), "upload"); }
  void to_host(void* dst, const void* src, size_t bytes) { check(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost), "download"); }
  void device_copy(void* dst, const void* src, size_t bytes) {
    check(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice), "device copy");
  }
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands.
  void gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb,
            float beta, float* C, int ldc) {
    if (M <= 0 || N <= 0) return;
    const cublasStatus_t s = cublasSgemm(handle_, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K,
                                         &alpha, B, ldb, A, lda, &beta, C, ldc);
    if (s != CUBLAS_STATUS_SUCCESS) throw Error(std::string("cuda: cublasSgemm: ") + cublas_error(s));
  }

 private:
  int device_;
  cublasHandle_t handle_ = nullptr;
  std::string name_;
  bool tf32_ = false;
};

}  // namespace

bool cuda_built() { return true; }

std::vector<GpuInfo> cuda_devices(std::string* why) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0) {
    cudaGetLastError();
    if (why) *why = e != cudaSuccess ? std::string("no usable GPU (") + cudaGetErrorString(e) + ")" : "no GPU found";
    return {};
  }
  std::vector<GpuInfo> out;
  for (int d = 0; d < n; d++) {
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, d) != cudaSuccess) continue;
    out.push_back({d, p.name, p.totalGlobalMem, p.major, p.minor});
  }
  if (out.empty() && why) *why = "no GPU answered";
  return out;
}

std::unique_ptr<Backend> make_cuda_backend(int device, bool tf32) {
  return std::make_unique<ItemBackend<CudaDevice>>(device, tf32);
}

}  // namespace rb
