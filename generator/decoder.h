// Streaming decoding with a constant-size state (retention) or a KV cache (attention baseline).
//
// A DecodeState is owned by the caller: sized and zero-initialised for one model, cloneable, and
// saved/restored as a versioned file that records the model's fingerprint. The Decoder turns it
// forward: next_logits() gives the distribution of the next byte, accept(b) consumes a byte
// (sampled, or teacher-forced), ingest() consumes many known bytes fast (whole patches through the
// global model only, its projections batched over patches, the retention recurrence patch by
// patch). The layers are the Model's own (local_step, global_step, global_attention_step), and
// the kernels are batch invariant, so stepping, ingesting and Model::forward with
// retention_recurrent give bitwise the same logits.
//
// Position bookkeeping: after `patches_done` complete patches, the global step of position
// patches_done (input: the last complete patch, or the pad vector at 0) gives g_cur, the global
// output for the patch in progress; the local model runs with a per-patch q|k|v cache.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "src/model.h"
#include "src/output_file.h"
#include "src/rng.h"

namespace rb {

class DecodeState {
 public:
  explicit DecodeState(Model& model);
  std::unique_ptr<DecodeState> clone() const;
  // Atomic write; load checks magic, version, sizes and that `model` is the one it was made with.
  void save(const std::string& path, Overwrite overwrite = Overwrite::Replace) const;
  static std::unique_ptr<DecodeState> load(const std::string& path, Model& model);

  int64_t bytes_consumed() const { return patches_done_ * P_ + pos_; }
  Rng& rng() { return rng_; }

 private:
  friend class Decoder;
  DecodeState(const DecodeState& other);
  void grow_cache(int64_t need);  // attention: room for `need` cached positions
  Model& model_;
  int P_ = 0;
  // global
  std::unique_ptr<GlobalStream> stream_;  // retention: states + position
  std::vector<Buffer> k_cache_, v_cache_;  // attention: per layer [capacity, D_G]
  int64_t cache_len_ = 0, cache_cap_ = 0;
  Buffer g_cur_;                           // [D_G] global output for the patch in progress
  bool g_ready_ = false;
  int64_t patches_done_ = 0;
  std::vector<uint8_t> last_patch_;        // bytes of the last complete patch
  // local
  std::vector<uint8_t> patch_;             // bytes of the patch in progress
  int pos_ = 0;                            // = patch_.size()
  std::vector<Buffer> l_qkv_;              // per layer [P, 3*D_L] cache of the patch in progress
  Rng rng_;
};

class Decoder {
 public:
  explicit Decoder(Model& model);
  ~Decoder();
  Decoder(const Decoder&) = delete;
  Decoder& operator=(const Decoder&) = delete;
  // Logits [256] (host memory, valid until the next call) for the next byte.
  const float* next_logits(DecodeState& st);
  void accept(DecodeState& st, uint8_t byte);
  // Consumes known bytes (a prompt): whole patches through the global model only.
  void ingest(DecodeState& st, const uint8_t* bytes, size_t n);
  // Benchmarks only: fills an attention state's KV cache with `patches` positions of random
  // keys/values (ingesting a million-byte context through the quadratic baseline is too slow),
  // with room for `extra` more so decoding does not regrow it.
  void fill_synthetic_context(DecodeState& st, int64_t patches, int64_t extra, uint64_t seed);

 private:
  void ensure_global(DecodeState& st);
  void global_attention_step(DecodeState& st, const uint8_t* patch);

  Model& model_;
  Backend& be_;
  const ModelConfig& c_;
  std::unique_ptr<StepScratch> scratch_;
  std::vector<float> host_logits_;
  std::vector<float*> layer_ptrs_;  // per-layer cache pointers handed to the model's step
};


}  // namespace rb
