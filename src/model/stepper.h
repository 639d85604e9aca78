// The one stepping engine: B byte streams (rows) advanced together, each with its own state, by
// one byte at a time (next_logits, accept), by known bytes (ingest: whole patches through the
// global model only), or by a teacher-forced window of known bytes (score). `generate` steps one
// row; the codec's decoder steps up to 32 lanes in lockstep and its encoder scores them. Every
// path runs the recurrent retention form and the same kernels, so by the numerics contract the
// logits of a byte are bitwise the same however it was reached and however many rows ran with it.
//
// A StreamState is per-user state, apart from the weights (one Model serves any number of them):
// per row the retention state (or, for the attention baseline and one row, a KV cache), the global
// output of the patch in progress, the bytes of that patch and its local q|k|v cache.
//
// Position bookkeeping: after `patches_done` complete patches, the global step of position
// patches_done (input: the last complete patch, or the pad vector at 0) gives the global output of
// the patch in progress; rows all stand at the same position.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/backend.h"
#include "src/model/model.h"

namespace rb {

class StreamState {
 public:
  StreamState(Model& model, int rows);
  StreamState(const StreamState& other);  // an independent copy (device buffers cloned)
  StreamState& operator=(const StreamState&) = delete;

  int rows() const { return rows_; }
  int64_t bytes_consumed() const { return patches_done_ * P_ + pos_; }
  int64_t patches_done() const { return patches_done_; }
  int position_in_patch() const { return pos_; }

 private:
  friend class Stepper;
  friend class DecodeState;       // generator/decoder.h: saving and loading one row
  void grow_cache(int64_t need);  // attention: room for `need` cached positions

  Model& model_;
  int rows_ = 1, P_ = 0;
  std::unique_ptr<GlobalStream> stream_;   // retention: states + position
  std::vector<Buffer> k_cache_, v_cache_;  // attention (one row): per layer [capacity, D_G]
  int64_t cache_len_ = 0, cache_cap_ = 0;
  Buffer g_cur_;  // [rows, D_G] global output for the patch in progress
  bool g_ready_ = false;
  int64_t patches_done_ = 0;
  std::vector<uint8_t> last_patch_;  // [rows, P] bytes of the last complete patch
  std::vector<uint8_t> patch_;       // [rows, pos] bytes of the patch in progress, row-major by position
  int pos_ = 0;
  std::vector<Buffer> l_qkv_;  // per local layer [rows, P, 3 D_L]
  bool scored_ = false;        // advanced by score(): only score() may continue it
};

class Stepper {
 public:
  // Up to max_rows rows per state; one row for the attention baseline.
  Stepper(Model& model, int max_rows = 1);
  ~Stepper();
  Stepper(const Stepper&) = delete;
  Stepper& operator=(const Stepper&) = delete;

  // Logits [rows, 256] (host memory, valid until the next call) for each row's next byte.
  const float* next_logits(StreamState& st);
  // Consumes one byte per row (bytes[r] for row r).
  void accept(StreamState& st, const uint8_t* bytes);
  // Consumes n known bytes per row (row r's at bytes + r * n): whole patches through the global
  // model only, the rest through next_logits/accept.
  void ingest(StreamState& st, const uint8_t* bytes, size_t n);
  // Teacher forcing: the logits [rows * W, 256] (host memory) of W known bytes per row (row r's at
  // x + r * W, W a multiple of P) in one batched pass, bitwise what stepping through them gives.
  // The state must be new or advanced by score() only.
  const float* score(StreamState& st, const uint8_t* x, int W);
  // The weights changed (online adaptation): refresh what decoding derives from them.
  void weights_changed();

  // Benchmarks only: fills a one-row attention state's KV cache with `patches` positions of random
  // keys/values (ingesting a million-byte context through the quadratic baseline is too slow),
  // with room for `extra` more so decoding does not regrow it.
  void fill_synthetic_context(StreamState& st, int64_t patches, int64_t extra, uint64_t seed);

 private:
  void ensure_global(StreamState& st);
  void global_attention_step(StreamState& st, const uint8_t* patch);
  void check(const StreamState& st) const;

  Model& model_;
  Backend& be_;
  const ModelConfig& c_;
  int max_rows_;
  std::unique_ptr<StepScratch> scratch_;
  std::vector<float> host_logits_;
  std::vector<float*> layer_ptrs_;  // per-layer cache pointers handed to the model's step
  std::vector<int32_t> prev_;       // per row: the previous byte (256 = pad)
};

}  // namespace rb
