// A Backend whose every op (but the matrix product) is a run of items from item_ops.h on some
// Device: the CUDA backend (cuda_backend.cu) and the host emulation the tests use
// (tests/gpu_emulation.h) are this one class over two devices, so what CI checks on the host is
// the code a GPU runs.
//
// A Device provides:
//   template <class Op> void run(int64_t items, const Op& op);   // op(i) for every i, any order
//   void* alloc_bytes(size_t) / void free_bytes(void*);          // zeroed; throws rb::Error
//   void to_device(void*, const void*, size_t) / to_host(...) / device_copy(...)
//   void gemm(...) with the Backend::gemm signature; std::string name(), kernel_path(); synchronize()
//   void run_recorded(uint64_t key, const std::vector<std::function<void()>>& ops);
//       runs ops in order, as one unit if it can (CUDA: a graph per key, updated and launched)
//
// Between begin_recorded() and end_recorded() the ops are collected as closures instead of being
// issued, and handed to the device as one unit; an allocation, a download or an upload meanwhile
// is refused with an rb::Error (a graph cannot hold it), except the small index uploads, which
// become a kernel carrying the values; releases wait until the unit has run.
#pragma once
#include <algorithm>
#include <cstring>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cuda/item_ops.h"
#include "kernels/cuda/retention_items.h"
#include "src/common/errors.h"

namespace rb {

template <class Device>
class ItemBackend final : public Backend {
 public:
  template <class... A>
  explicit ItemBackend(A&&... device_args)
      : dev_(std::forward<A>(device_args)...),
        decode_partial_(static_cast<float*>(dev_.alloc_bytes(kDecodePartialFloats * sizeof(float)))) {}
  ~ItemBackend() override {
    free_pending();
    if (scratch_) dev_.free_bytes(scratch_);
    dev_.free_bytes(decode_partial_);
  }
  Device& device() { return dev_; }
  std::string name() const override { return dev_.name(); }
  std::string kernel_path() const override { return dev_.kernel_path(); }
  int threads() const override { return 1; }
  void synchronize() override {
    refuse_while_recording("a synchronisation");
    dev_.synchronize();
  }

  void begin_recorded(uint64_t key) override {
    if (recording_) throw Error(dev_.name() + ": begin_recorded while already recording");
    recording_ = true;
    record_key_ = key;
    recorded_.clear();
  }
  void end_recorded() override {
    if (!recording_) throw Error(dev_.name() + ": end_recorded without begin_recorded");
    recording_ = false;
    std::vector<std::function<void()>> ops;
    ops.swap(recorded_);
    try {
      dev_.run_recorded(record_key_, ops);
    } catch (...) {
      free_pending();
      throw;
    }
    free_pending();
  }
  void cancel_recorded() override {
    recording_ = false;
    recorded_.clear();
    free_pending();
  }

  float* alloc(size_t count) override {
    refuse_while_recording("an allocation");
    return static_cast<float*>(dev_.alloc_bytes(count * sizeof(float)));
  }
  void release(float* p) override { free_after_recording(p); }
  void upload(float* dst, const float* host, size_t count) override {
    refuse_while_recording("an upload");
    dev_.to_device(dst, host, count * sizeof(float));
  }
  void download(float* host, const float* src, size_t count) override {
    refuse_while_recording("a download");
    dev_.to_host(host, src, count * sizeof(float));
  }
  void fill(float* dst, float value, size_t count) override { run(int64_t(count), items::Fill{dst, value}); }
  void copy(float* dst, const float* src, size_t count) override {
    issue([this, dst, src, count] { dev_.device_copy(dst, src, count * sizeof(float)); });
  }
  int32_t* alloc_index(size_t count) override {
    refuse_while_recording("an allocation");
    return static_cast<int32_t*>(dev_.alloc_bytes(count * sizeof(int32_t)));
  }
  void release_index(int32_t* p) override { free_after_recording(p); }
  // A few indices (a decoding step's byte and position, a patch) travel inside a kernel's
  // arguments: no copy from pageable host memory, so the step can be recorded.
  void upload_index(int32_t* dst, const int32_t* host, size_t count) override {
    if (count > size_t(items::kInlineIndices) && !recording_) {
      dev_.to_device(dst, host, count * sizeof(int32_t));
      return;
    }
    for (size_t i0 = 0; i0 < count; i0 += items::kInlineIndices) {
      items::SetIndices op{dst + i0, {}};
      const size_t n = std::min(count - i0, size_t(items::kInlineIndices));
      std::copy(host + i0, host + i0 + n, op.values);
      run(int64_t(n), op);
    }
  }

  void gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb, float beta,
            float* C, int ldc) override {
    issue([this, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc] {
      dev_.gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    });
  }
  void add_bias(float* y, const float* bias, int rows, int cols) override {
    run(int64_t(rows) * cols, items::AddBias{y, bias, cols});
  }
  void bias_backward(float* dbias, const float* dy, int rows, int cols) override {
    const int blocks = items::row_blocks(rows);
    float* partial = scratch(size_t(blocks) * cols);
    run(int64_t(blocks) * cols, items::ColumnBlockSums{partial, dy, rows, cols});
    run(cols, items::AddBlockSums{dbias, partial, blocks, cols});
  }
  void add_inplace(float* y, const float* x, size_t count) override { run(int64_t(count), items::AddInplace{y, x}); }
  void layernorm_forward(float* out, float* mean, float* rstd, const float* x, const float* w, const float* b, int rows,
                         int C) override {
    run(rows, items::LayerNormForward{out, mean, rstd, x, w, b, C});
  }
  void layernorm_backward(float* dx, float* dw, float* db, const float* dout, const float* x, const float* w, const float* mean,
                          const float* rstd, int rows, int C) override {
    run(rows, items::LayerNormBackwardInput{dx, dout, x, w, mean, rstd, C});
    const int blocks = items::row_blocks(rows);
    float* partial = scratch(size_t(2) * blocks * C);
    run(int64_t(blocks) * C, items::LayerNormParamBlockSums{partial, dout, x, mean, rstd, rows, C, blocks});
    run(C, items::AddBlockSums{dw, partial, blocks, C});
    run(C, items::AddBlockSums{db, partial + size_t(blocks) * C, blocks, C});
  }
  void gelu_forward(float* out, const float* x, size_t count) override { run(int64_t(count), items::Gelu{out, x}); }
  void gelu_backward(float* dx, const float* x, const float* dout, size_t count) override {
    run(int64_t(count), items::GeluBackward{dx, x, dout});
  }
  void rmsnorm_forward(float* out, float* rstd, const float* x, int ld_x, int rows, int groups, int width) override {
    run(int64_t(rows) * groups, items::RmsNormForward{out, rstd, x, ld_x, groups, width});
  }
  void rmsnorm_backward(float* dx, int ld_x, const float* dout, const float* y, const float* rstd, int rows, int groups,
                        int width) override {
    run(int64_t(rows) * groups, items::RmsNormBackward{dx, ld_x, dout, y, rstd, groups, width});
  }
  void swish_gate_forward(float* out, const float* g, int ld_g, const float* y, int rows, int cols) override {
    run(int64_t(rows) * cols, items::SwishGate{out, g, ld_g, y, cols});
  }
  void swish_gate_backward(float* dg, float* dy, int ld_g, const float* g, const float* y, const float* dout, int rows,
                           int cols) override {
    run(int64_t(rows) * cols, items::SwishGateBackward{dg, dy, ld_g, g, y, dout, cols});
  }
  void rope(float* x, int ld, int rows, int heads, int hd, int seq_len, int64_t pos0, float scale, bool inverse) override {
    run(int64_t(rows) * heads * (hd / 2), items::Rope{x, ld, heads, hd, seq_len, pos0, scale, inverse});
  }
  void embedding_forward(float* out, const float* table, const int32_t* idx, int count, int dim, bool accumulate) override {
    run(int64_t(count) * dim, items::EmbeddingForward{out, table, idx, dim, accumulate});
  }
  void embedding_backward(float* dtable, const float* dout, const int32_t* idx, int count, int dim) override {
    run(int64_t(items::kEmbeddingLanes) * dim, items::EmbeddingBackward{dtable, dout, idx, count, dim});
  }
  void crossentropy_forward(float* losses, const float* logits, const int32_t* targets, int rows, int V) override {
    run(rows, items::CrossEntropy{losses, const_cast<float*>(logits), targets, V, false, 0.0f});
  }
  void crossentropy_fused_backward(float* losses, float* logits, const int32_t* targets, int rows, int V, float dscale) override {
    run(rows, items::CrossEntropy{losses, logits, targets, V, true, dscale});
  }
  void attention_forward(float* out, float* probs, const float* qkv, const AttentionShape& s) override {
    run(int64_t(s.nseq) * s.H * s.S, items::AttentionForward{out, probs, qkv, s.S, s.H, s.hd});
  }
  void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* probs,
                          const AttentionShape& s) override {
    const int64_t rows = int64_t(s.nseq) * s.H * s.S;
    float* delta = scratch(size_t(rows));
    run(rows, items::AttentionDelta{delta, dout, qkv, probs, s.S, s.H, s.hd});
    run(rows, items::AttentionBackwardQuery{dqkv, dout, qkv, probs, delta, s.S, s.H, s.hd});
    run(rows, items::AttentionBackwardKeyValue{dqkv, dout, qkv, probs, delta, s.S, s.H, s.hd});
  }
  void attention_decode(float* out, const float* q, const float* k, const float* v, int n, int ld, int H, int hd) override {
    // Caches of a few blocks: one item per head. Longer: blocks of keys in parallel, then a merge,
    // through a buffer made up front (a recorded step may not allocate).
    const int blocks = std::min(items::kDecodeMaxBlocks, (n + items::kDecodeMinBlock - 1) / items::kDecodeMinBlock);
    const size_t partial = size_t(H) * blocks * (hd + 2);
    if (blocks <= 1 || partial > kDecodePartialFloats) {
      run(H, items::AttentionDecode{out, q, k, v, n, ld, hd});
      return;
    }
    const int block = (n + blocks - 1) / blocks;
    run(int64_t(H) * blocks, items::AttentionDecodeBlocks{decode_partial_, q, k, v, n, ld, hd, blocks, block});
    run(int64_t(H) * hd, items::AttentionDecodeMerge{out, decode_partial_, hd, blocks});
  }
  // Chunkwise retention in parallel over positions, chunks and state elements
  // (kernels/cuda/retention_items.h); scratch holds U (or W and G), the states when none are
  // saved, and the intra-chunk scores.
  void retention_chunkwise_forward(float* o, const float* q, const float* k, const float* v, const float* gammas,
                                   const RetentionShape& s, int chunk, const float* state_in, float* state_out,
                                   float* saved_states) override {
    const int64_t state_items = s.state_size();
    if (s.n <= 0) {
      if (state_out && state_in != state_out)
        state_in ? copy(state_out, state_in, size_t(state_items)) : fill(state_out, 0.0f, size_t(state_items));
      return;
    }
    const items::ChunkGeometry g{s, std::max(1, std::min(chunk, s.n))};
    const int64_t tasks = int64_t(s.B) * s.H, chunk_items = state_items * g.nchunks(), score_items = tasks * s.n * g.C;
    float* work = scratch(size_t(chunk_items) * (saved_states ? 1 : 2) + size_t(score_items));
    float* U = work;
    float* scores = work + chunk_items;
    float* states = saved_states ? saved_states : scores + score_items;
    run(chunk_items, items::ChunkKeyValueSums{U, k, v, gammas, g});
    run(state_items, items::ChunkStateScan{states, U, gammas, state_in, state_out, g});
    run(score_items, items::IntraChunkScores{scores, q, k, gammas, g, false});
    run(tasks * s.n * s.dv, items::ChunkOutputs{o, q, v, gammas, scores, states, g});
  }
  void retention_chunkwise_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                                    const float* v, const float* gammas, const RetentionShape& s, int chunk,
                                    const float* saved_states, const float* dstate_out, float* dstate_in) override {
    const int64_t state_items = s.state_size();
    if (s.n <= 0) {
      if (dstate_in) dstate_out ? copy(dstate_in, dstate_out, size_t(state_items)) : fill(dstate_in, 0.0f, size_t(state_items));
      return;
    }
    const items::ChunkGeometry g{s, std::max(1, std::min(chunk, s.n))};
    const int64_t tasks = int64_t(s.B) * s.H, chunk_items = state_items * g.nchunks(), score_items = tasks * s.n * g.C;
    float* work = scratch(size_t(chunk_items) + 2 * size_t(score_items));
    float* WG = work;
    float* scores = work + chunk_items;
    float* dscores = scores + score_items;
    run(score_items, items::IntraChunkScores{scores, q, k, gammas, g, false});
    run(score_items, items::IntraChunkScores{dscores, dout, v, gammas, g, true});
    run(tasks * s.n * s.dk, items::ChunkQueryGradients{dq, dout, k, gammas, dscores, saved_states, g});
    run(chunk_items, items::ChunkQueryStateSums{WG, q, dout, gammas, g});
    run(state_items, items::ChunkGradientScan{WG, gammas, dstate_out, dstate_in, g});
    run(tasks * s.n * s.dk, items::ChunkKeyGradients{dk, q, v, gammas, dscores, WG, g});
    run(tasks * s.n * s.dv, items::ChunkValueGradients{dv, k, dout, gammas, scores, WG, g});
  }
  void retention_recurrent_forward(float* o, const float* q, const float* k, const float* v, const float* gammas,
                                   const RetentionShape& s, float* state) override {
    run(int64_t(s.B) * s.H * s.dv, items::RetentionRecurrentStep{o, q, k, v, gammas, s, state});
  }
  void adamw_step(float* p, const float* g, float* m, float* v, const float* decay_mask, size_t n, const AdamWStep& s) override {
    run(int64_t(n), items::AdamW{p, m, v, g, decay_mask, s});
  }
  double sum_squares(const float* x, size_t n) override {
    const int64_t blocks = (int64_t(n) + items::kSumSquaresBlock - 1) / items::kSumSquaresBlock;
    refuse_while_recording("a reduction read by the host");
    double* partial = reinterpret_cast<double*>(scratch(size_t(blocks) * 2));
    run(blocks, items::SumSquaresBlocks{partial, x, int64_t(n)});
    std::vector<double> host(static_cast<size_t>(blocks));
    dev_.to_host(host.data(), partial, host.size() * sizeof(double));
    double total = 0.0;
    for (double s : host) total += s;
    return total;
  }

 private:
  // Runs a device call now, or adds it to the unit being recorded.
  template <class F>
  void issue(F&& call) {
    if (recording_)
      recorded_.emplace_back(std::forward<F>(call));
    else
      call();
  }
  // op(i) for every i < n.
  template <class Op>
  void run(int64_t n, const Op& op) {
    issue([this, n, op] { dev_.run(n, op); });
  }
  // A buffer released while recording may still be read by the recorded ops: free it after them.
  // (Never throws: releases run in destructors.)
  void free_after_recording(void* p) {
    if (recording_)
      pending_free_.push_back(p);
    else
      dev_.free_bytes(p);
  }
  void free_pending() {
    for (void* p : pending_free_) dev_.free_bytes(p);
    pending_free_.clear();
  }
  void refuse_while_recording(const char* what) const {
    if (recording_) throw Error(dev_.name() + ": " + what + " inside a recorded decoding step (not allowed in a graph)");
  }
  // Grow-only workspace for one op at a time (ops run in order on one stream).
  float* scratch(size_t count) {
    if (count > scratch_count_) {
      refuse_while_recording("a workspace allocation");
      if (scratch_) dev_.free_bytes(scratch_);
      scratch_ = nullptr;
      scratch_count_ = 0;
      scratch_ = static_cast<float*>(dev_.alloc_bytes(count * sizeof(float)));
      scratch_count_ = count;
    }
    return scratch_;
  }
  Device dev_;
  // Long-cache attention decoding's per-block partials (1 MiB: heads x (hd + 2) up to 1,024).
  static constexpr size_t kDecodePartialFloats = size_t(1) << 18;
  float* decode_partial_ = nullptr;
  float* scratch_ = nullptr;
  size_t scratch_count_ = 0;
  bool recording_ = false;
  uint64_t record_key_ = 0;
  std::vector<std::function<void()>> recorded_;
  std::vector<void*> pending_free_;
};

}  // namespace rb
