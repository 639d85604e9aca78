// The CUDA backend: ItemBackend (item_backend.h) over device memory, every item op one GPU
// thread per item on one stream of its own, matrix products through cuBLAS on the same stream.
// Recorded units (a decoding step) become CUDA graphs: captured from the stream, kept per key,
// updated in place with the next step's arguments (cudaGraphExecUpdate) and launched as one.
// Built when CMake finds a CUDA toolkit; the binary still runs where no GPU or driver is present.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "kernels/cuda/cuda.h"
#include "kernels/cuda/item_backend.h"
#include "src/common/errors.h"

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
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return "not initialised";
    case CUBLAS_STATUS_ALLOC_FAILED:
      return "out of GPU memory";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "invalid value";
    case CUBLAS_STATUS_ARCH_MISMATCH:
      return "not supported by this GPU";
    case CUBLAS_STATUS_EXECUTION_FAILED:
      return "execution failed";
    default:
      return "error";
  }
}

void cublas_check(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) throw Error(std::string("cuda: ") + what + ": " + cublas_error(s));
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
    name_ = gpus[size_t(device)].name;
    check(cudaSetDevice(device), "cudaSetDevice");
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
    if (cublasCreate(&handle_) != CUBLAS_STATUS_SUCCESS) throw Error("cuda: cannot create a cuBLAS handle");
    cublas_check(cublasSetStream(handle_, stream_), "cublasSetStream");
    // A workspace of our own, so cuBLAS never allocates inside a graph capture (32 MiB: Hopper's
    // recommendation).
    workspace_bytes_ = size_t(32) << 20;
    workspace_ = alloc_bytes(workspace_bytes_);
    cublas_check(cublasSetWorkspace(handle_, workspace_, workspace_bytes_), "cublasSetWorkspace");  // after SetStream
    // TF32 only when asked: the default keeps products in full FP32, close to the CPU's.
    cublas_check(cublasSetMathMode(handle_, tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
    tf32_ = tf32;
    const char* env = std::getenv("RETBYTE_CUDA_GRAPHS");
    graphs_ = !(env && std::string(env) == "0");
  }
  ~CudaDevice() {
    for (auto& [key, exec] : graphs_by_key_) cudaGraphExecDestroy(exec);
    if (handle_) cublasDestroy(handle_);
    if (workspace_) cudaFree(workspace_);
    if (stream_) cudaStreamDestroy(stream_);
  }
  CudaDevice(const CudaDevice&) = delete;
  CudaDevice& operator=(const CudaDevice&) = delete;

  std::string name() const { return "cuda"; }
  std::string kernel_path() const {
    return "cuda:" + std::to_string(device_) + " (" + name_ + (tf32_ ? ", TF32" : "") + (graphs_ ? ", graphs" : "") + ")";
  }

  void synchronize() { check(cudaStreamSynchronize(stream_), "synchronize"); }
  template <class Op>
  void run(int64_t n, const Op& op) {
    if (n <= 0) return;
    constexpr int kThreads = 128;
    const int64_t blocks = std::min<int64_t>((n + kThreads - 1) / kThreads, int64_t(1) << 20);
    run_items<<<unsigned(blocks), kThreads, 0, stream_>>>(op, n);
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
    // Zeroed in stream order: every later op on the stream sees the zeros.
    check(cudaMemsetAsync(p, 0, bytes, stream_), "cudaMemset");
    return p;
  }
  void free_bytes(void* p) {  // waits for the device, so no op still reads p
    cudaFree(p);
    cudaGetLastError();  // a failure here must not be blamed on the next launch
  }
  // From pageable host memory the copy has read `src` when the call returns.
  void to_device(void* dst, const void* src, size_t bytes) {
    check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_), "upload");
  }
  void to_host(void* dst, const void* src, size_t bytes) {
    check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_), "download");
    check(cudaStreamSynchronize(stream_), "download");
  }
  void device_copy(void* dst, const void* src, size_t bytes) {
    if (bytes) check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_), "device copy");
  }
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands.
  void gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb, float beta,
            float* C, int ldc) {
    if (M <= 0 || N <= 0) return;
    const cublasStatus_t s = cublasSgemm(handle_, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha,
                                         B, ldb, A, lda, &beta, C, ldc);
    if (s != CUBLAS_STATUS_SUCCESS) throw Error(std::string("cuda: cublasSgemm: ") + cublas_error(s));
  }

  // A recorded unit as one graph launch. The first time a key is seen its capture is instantiated;
  // later captures of the same key (same kernels, new arguments: the position, the byte, another
  // state's buffers) update that executable graph in place, which costs far less than
  // instantiating it. If the graph cannot be made, graphs go off for this backend (with one line
  // on stderr) and the ops run one by one, as they do with RETBYTE_CUDA_GRAPHS=0.
  // A key's first unit runs eagerly (its kernels load then, not during a capture); later ones are
  // captured.
  void run_recorded(uint64_t key, const std::vector<std::function<void()>>& ops) {
    if (graphs_ && !seen_keys_.insert(key).second && launch_as_graph(key, ops)) return;
    for (const auto& op : ops) op();
  }

 private:
  bool launch_as_graph(uint64_t key, const std::vector<std::function<void()>>& ops) {
    if (cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal) != cudaSuccess)
      return graphs_off("cudaStreamBeginCapture: " + last_error());
    std::string failed;
    try {
      for (const auto& op : ops) op();
    } catch (const Error& e) {
      failed = e.what();
    } catch (...) {  // end the capture before anything else reaches the stream
      cudaGraph_t partial = nullptr;
      cudaStreamEndCapture(stream_, &partial);
      if (partial) cudaGraphDestroy(partial);
      cudaGetLastError();
      throw;
    }
    cudaGraph_t graph = nullptr;
    const cudaError_t end = cudaStreamEndCapture(stream_, &graph);
    if (!failed.empty() || end != cudaSuccess || !graph) {
      if (failed.empty()) failed = std::string("cudaStreamEndCapture: ") + cudaGetErrorString(end);
      if (graph) cudaGraphDestroy(graph);
      cudaGetLastError();
      return graphs_off(failed);
    }
    auto it = graphs_by_key_.find(key);
    if (it != graphs_by_key_.end()) {
      cudaGraphExecUpdateResultInfo info{};
      if (cudaGraphExecUpdate(it->second, graph, &info) != cudaSuccess) {  // another topology: make it anew
        cudaGetLastError();
        cudaGraphExecDestroy(it->second);
        graphs_by_key_.erase(it);
        it = graphs_by_key_.end();
      }
    }
    if (it == graphs_by_key_.end()) {
      cudaGraphExec_t exec = nullptr;
      if (cudaGraphInstantiate(&exec, graph, 0) != cudaSuccess) {
        const std::string why = "cudaGraphInstantiate: " + last_error();
        cudaGraphDestroy(graph);
        return graphs_off(why);
      }
      it = graphs_by_key_.emplace(key, exec).first;
    }
    cudaGraphDestroy(graph);
    cudaGetLastError();  // nothing unchecked above may be blamed on a later launch
    check(cudaGraphLaunch(it->second, stream_), "cudaGraphLaunch");
    return true;
  }
  static std::string last_error() { return cudaGetErrorString(cudaGetLastError()); }
  bool graphs_off(const std::string& why) {
    std::fprintf(stderr, "retbyte: cuda: CUDA graphs off (%s); kernels are launched one by one\n", why.c_str());
    graphs_ = false;
    return false;
  }

  int device_;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t handle_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  std::string name_;
  bool tf32_ = false;
  bool graphs_ = true;
  std::unordered_map<uint64_t, cudaGraphExec_t> graphs_by_key_;
  std::unordered_set<uint64_t> seen_keys_;
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
