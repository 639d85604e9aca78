// CPU backend: the project's own kernels for one instruction set (kernel_table.h), chosen at
// start-up, on the project's own thread pool. Every path and every thread count computes the
// same bits (README, numerics contract).
#pragma once
#include <memory>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/kernel_table.h"
#include "kernels/cpu/thread_pool.h"

namespace rb {

class CpuBackend final : public Backend {
 public:
  CpuBackend(int threads, CpuPath path);
  std::string name() const override { return "cpu"; }
  std::string kernel_path() const override { return cpu_path_name(k_.path); }
  int threads() const override { return pool_.size(); }
  void host_parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn) override {
    pool_.parallel_for(n, 1, [&](int64_t b, int64_t e) { fn(b, e); });
  }
  CpuPath path() const { return k_.path; }

  float* alloc(size_t count) override;
  void release(float* p) override;
  void upload(float* dst, const float* host, size_t count) override;
  void download(float* host, const float* src, size_t count) override;
  void fill(float* dst, float value, size_t count) override;
  void copy(float* dst, const float* src, size_t count) override;
  int32_t* alloc_index(size_t count) override;
  void release_index(int32_t* p) override;
  void upload_index(int32_t* dst, const int32_t* host, size_t count) override;

  bool has_gemm_bf16() const override { return true; }
  void gemm_bf16(int M, int N, int K, float alpha, const float* A, int lda, const uint16_t* B_panels, float beta, float* C,
                 int ldc, const float* bias = nullptr, float* gelu_out = nullptr) override;
  bool has_gemm_i8() const override { return true; }
  void quantize_rows_u7(const float* x, int rows, int K, int ldx, uint8_t* q, int ldq, float* scale) override;
  void gemm_i8(int M, int N, int K, const uint8_t* Aq, int lda, const float* a_scale, const int8_t* B_panels,
               const float* b_scale, const int32_t* b_colsum, float beta, float* C, int ldc, const float* bias = nullptr,
               float* gelu_out = nullptr) override;
  void gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb,
            float beta, float* C, int ldc) override;
  void add_bias(float* y, const float* bias, int rows, int cols) override;
  void bias_backward(float* dbias, const float* dy, int rows, int cols) override;
  void add_inplace(float* y, const float* x, size_t count) override;
  void layernorm_forward(float* out, float* mean, float* rstd, const float* x, const float* w, const float* b, int rows,
                         int C) override;
  void layernorm_backward(float* dx, float* dw, float* db, const float* dout, const float* x, const float* w, const float* mean,
                          const float* rstd, int rows, int C) override;
  void gelu_forward(float* out, const float* x, size_t count) override;
  void gelu_backward(float* dx, const float* x, const float* dout, size_t count) override;
  void rmsnorm_forward(float* out, float* rstd, const float* x, int ld_x, int rows, int groups, int width) override;
  void rmsnorm_backward(float* dx, int ld_x, const float* dout, const float* y, const float* rstd, int rows, int groups,
                        int width) override;
  void swish_gate_forward(float* out, const float* g, int ld_g, const float* y, int rows, int cols) override;
  void swish_gate_backward(float* dg, float* dy, int ld_g, const float* g, const float* y, const float* dout, int rows,
                           int cols) override;
  void rope(float* x, int ld, int rows, int heads, int hd, int seq_len, int64_t pos0, float scale, bool inverse) override;
  void embedding_forward(float* out, const float* table, const int32_t* idx, int count, int dim, bool accumulate) override;
  void embedding_backward(float* dtable, const float* dout, const int32_t* idx, int count, int dim) override;
  void crossentropy_forward(float* losses, const float* logits, const int32_t* targets, int rows, int V) override;
  void crossentropy_fused_backward(float* losses, float* logits_to_dlogits, const int32_t* targets, int rows, int V,
                                   float dscale) override;
  void attention_forward(float* out, float* probs, const float* qkv, const AttentionShape& s) override;
  void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* probs, const AttentionShape& s) override;
  void attention_decode(float* out, const float* q, const float* k, const float* v, int n, int ld, int H, int hd) override;
  void retention_chunkwise_forward(float* o, const float* q, const float* k, const float* v, const float* gammas,
                                   const RetentionShape& s, int chunk, const float* state_in, float* state_out,
                                   float* saved_states) override;
  void retention_chunkwise_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                                    const float* v, const float* gammas, const RetentionShape& s, int chunk,
                                    const float* saved_states, const float* dstate_out, float* dstate_in) override;
  void retention_recurrent_forward(float* o, const float* q, const float* k, const float* v, const float* gammas,
                                   const RetentionShape& s, float* state) override;
  void adamw_step(float* p, const float* g, float* m, float* v, const float* decay_mask, size_t n, const AdamWStep& s) override;
  double sum_squares(const float* x, size_t n) override;

  // Single-threaded product (for work already split across the pool, e.g. one retention head).
  void gemm_serial(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb,
                   float beta, float* C, int ldc) const;
  const CpuKernels& kernels() const { return k_; }
  ThreadPool& pool() { return pool_; }

 private:
  template <class Columns>
  void panel_columns(int M, int N, int K, float* C, int ldc, float* gelu_out, const Columns& product);
  // Rows [0, rows) in chunks of about `work_per_chunk / per_row` rows across the pool.
  void for_rows(int64_t rows, int64_t per_row, RangeFn fn);
  CpuKernels k_;
  ThreadPool pool_;
  std::vector<float> bpack_;           // the shared packed block of op(B) (gemm on the pool)
  std::vector<float> reduce_scratch_;  // column sums' per-block partials
  // The last RoPE angle table: decoding rotates q and k of every layer at one position, training
  // every window at positions 0..T-1, so the table repeats call after call.
  struct RopeTable {
    int64_t pos0 = -1;
    int npos = 0, hd = 0;
    bool inverse = false;
    std::vector<float> cs, sn;  // [npos, hd/2]
  } rope_table_;
};

// Number of CPUs this process may run on.
int available_cpus();
// The CPU backend on a given path (an rb::Error if this CPU cannot run it).
std::unique_ptr<Backend> make_cpu_backend(int threads, CpuPath path);

}  // namespace rb
