#include "src/model/stepper.h"

#include <algorithm>

#include "src/common/errors.h"
#include "src/common/rng.h"

namespace rb {

namespace {
// Keys of the recorded steps (Backend::begin_recorded): the same key, the same ops.
constexpr uint64_t kRetentionStepKey = 1ull << 32, kAttentionStepKey = 2ull << 32, kLocalStepKey = 3ull << 32;
}  // namespace

// ---------------------------------------------------------------- state

StreamState::StreamState(Model& model, int rows) : model_(model), rows_(rows), P_(model.config().P) {
  const ModelConfig& c = model.config();
  if (rows < 1) throw Error("a stream state needs at least one row");
  Backend& be = model.backend();
  if (c.global == GlobalKind::Retention) {
    stream_ = model.new_stream(rows);
  } else {
    if (rows != 1) throw Error("the attention baseline steps one stream at a time");
    for (int l = 0; l < c.L_G; l++) k_cache_.emplace_back(), v_cache_.emplace_back();
  }
  g_cur_ = Buffer(be, size_t(rows) * c.D_G());
  last_patch_.assign(size_t(rows) * P_, 0);
  patch_.assign(size_t(rows) * P_, 0);
  for (int l = 0; l < c.L_L; l++) l_qkv_.emplace_back(be, size_t(rows) * P_ * 3 * c.D_L);
}

StreamState::StreamState(const StreamState& o)
    : model_(o.model_),
      rows_(o.rows_),
      P_(o.P_),
      cache_len_(o.cache_len_),
      cache_cap_(o.cache_cap_),
      g_cur_(o.g_cur_.clone()),
      g_ready_(o.g_ready_),
      patches_done_(o.patches_done_),
      last_patch_(o.last_patch_),
      patch_(o.patch_),
      pos_(o.pos_),
      scored_(o.scored_) {
  if (o.stream_) stream_ = o.stream_->clone();
  for (const Buffer& b : o.k_cache_) k_cache_.push_back(b.size() ? b.clone() : Buffer());
  for (const Buffer& b : o.v_cache_) v_cache_.push_back(b.size() ? b.clone() : Buffer());
  for (const Buffer& b : o.l_qkv_) l_qkv_.push_back(b.clone());
}

void StreamState::grow_cache(int64_t need) {
  if (need <= cache_cap_) return;
  const size_t DG = size_t(model_.config().D_G());
  const int64_t cap = std::max<int64_t>(need, std::max<int64_t>(64, cache_cap_ * 2));
  for (size_t l = 0; l < k_cache_.size(); l++)
    for (auto* cache : {&k_cache_, &v_cache_}) {
      Buffer b(model_.backend(), size_t(cap) * DG);
      if (cache_len_) model_.backend().copy(b.data(), (*cache)[l].data(), size_t(cache_len_) * DG);
      (*cache)[l] = std::move(b);
    }
  cache_cap_ = cap;
}

// ---------------------------------------------------------------- stepper

Stepper::Stepper(Model& model, int max_rows)
    : model_(model), be_(model.backend()), c_(model.config()), max_rows_(std::max(1, max_rows)) {
  scratch_ = model_.new_step_scratch(max_rows_);
  model_.prepare_decoding();
  host_logits_.resize(size_t(max_rows_) * 256);
  prev_.resize(size_t(max_rows_));
  // One stream (generate): activations for ingesting prompts sized once, so memory stays flat
  // whatever the context. Lanes in lockstep (the codec) grow them only as far as they are used.
  if (c_.global == GlobalKind::Retention && max_rows_ == 1) model_.reserve(1, c_.T, false);
}

Stepper::~Stepper() = default;

void Stepper::check(const StreamState& st) const {
  if (&st.model_ != &model_) throw Error("a stream state stepped with another model");
  if (st.rows_ > max_rows_) throw Error("a stream state has more rows than its stepper");
  if (st.scored_) throw Error("a scored stream state can only be scored further");
}

void Stepper::weights_changed() { model_.prepare_decoding(); }

// One global step of the attention baseline at position cache_len_ (= patches_done_).
void Stepper::global_attention_step(StreamState& st, const uint8_t* patch) {
  const int64_t pos = st.cache_len_;
  st.grow_cache(pos + 1);
  layer_ptrs_.clear();  // per-layer k caches, then v caches (the buffers move when the cache grows)
  for (int l = 0; l < c_.L_G; l++) layer_ptrs_.push_back(st.k_cache_[l].data());
  for (int l = 0; l < c_.L_G; l++) layer_ptrs_.push_back(st.v_cache_[l].data());
  run_recorded(be_, kAttentionStepKey, [&] {
    model_.global_attention_step(patch, pos, layer_ptrs_.data(), layer_ptrs_.data() + c_.L_G, *scratch_, st.g_cur_.data());
  });
  st.cache_len_ = pos + 1;
}

void Stepper::ensure_global(StreamState& st) {
  if (st.g_ready_) return;
  const uint8_t* input = st.patches_done_ > 0 ? st.last_patch_.data() : nullptr;
  if (st.stream_) {
    model_.reserve(st.rows_, c_.P, false);  // any growth of the activations happens here, not while recording
    run_recorded(be_, kRetentionStepKey, [&] {
      be_.copy(st.g_cur_.data(), model_.global_step(input, 1, st.stream_.get()), size_t(st.rows_) * c_.D_G());
    });
  } else {
    global_attention_step(st, input);
  }
  st.g_ready_ = true;
}

const float* Stepper::next_logits(StreamState& st) {
  check(st);
  ensure_global(st);
  const int p = st.pos_, rows = st.rows_;
  layer_ptrs_.clear();  // reused: no allocation per byte
  for (Buffer& b : st.l_qkv_) layer_ptrs_.push_back(b.data());
  for (int r = 0; r < rows; r++) prev_[size_t(r)] = p == 0 ? 256 : st.patch_[size_t(r) * c_.P + size_t(p - 1)];
  // One recorded unit per byte position (a CUDA graph per position p): dozens of launches become one.
  run_recorded(be_, kLocalStepKey + uint64_t(p), [&] {
    model_.local_step(st.g_cur_.data() + size_t(p) * c_.D_E, size_t(c_.D_G()), prev_.data(), p, rows, layer_ptrs_.data(),
                      *scratch_);
  });
  be_.download(host_logits_.data(), scratch_->logits.data(), size_t(rows) * 256);
  return host_logits_.data();
}

void Stepper::accept(StreamState& st, const uint8_t* bytes) {
  check(st);
  const int P = c_.P;
  for (int r = 0; r < st.rows_; r++) st.patch_[size_t(r) * P + size_t(st.pos_)] = bytes[r];
  if (++st.pos_ == P) {  // the patch is complete: it is the next global step's input
    st.last_patch_ = st.patch_;
    st.pos_ = 0;
    st.patches_done_++;
    st.g_ready_ = false;
  }
}

void Stepper::ingest(StreamState& st, const uint8_t* bytes, size_t n) {
  check(st);
  const int P = c_.P, rows = st.rows_;
  std::vector<uint8_t> column(static_cast<size_t>(rows)), block;
  size_t i = 0;
  while (i < n) {
    if (st.pos_ != 0 || n - i < size_t(P)) {  // inside a patch: the local model keeps its cache
      next_logits(st);
      for (int r = 0; r < rows; r++) column[size_t(r)] = bytes[size_t(r) * n + i];
      accept(st, column.data());
      i++;
      continue;
    }
    // Whole patches: only their global steps matter (their local outputs are not needed).
    ensure_global(st);
    if (st.stream_) {
      const size_t m = std::min((n - i) / P, size_t(std::max(1, c_.T / max_rows_ / P)));  // bounded activations
      block.resize(size_t(rows) * m * P);
      for (int r = 0; r < rows; r++) std::copy_n(bytes + size_t(r) * n + i, m * P, block.begin() + long(size_t(r) * m * P));
      const float* out = model_.global_step(block.data(), int(m), st.stream_.get());
      for (int r = 0; r < rows; r++) {
        be_.copy(st.g_cur_.data() + size_t(r) * c_.D_G(), out + (size_t(r) * m + m - 1) * c_.D_G(), c_.D_G());
        std::copy_n(bytes + size_t(r) * n + i + (m - 1) * P, P, st.last_patch_.begin() + long(size_t(r) * P));
      }
      st.patches_done_ += int64_t(m);
      i += m * P;
    } else {
      global_attention_step(st, bytes + i);
      std::copy(bytes + i, bytes + i + P, st.last_patch_.begin());
      st.patches_done_++;
      i += P;
    }
  }
}

const float* Stepper::score(StreamState& st, const uint8_t* x, int W) {
  if (&st.model_ != &model_ || st.rows_ > max_rows_) throw Error("score: a stream state of another model or stepper");
  if (!st.stream_) throw Error("score: needs a retention model (the attention baseline has no recurrent form)");
  if (!st.scored_ && (st.patches_done_ != 0 || st.pos_ != 0 || st.g_ready_))
    throw Error("score: the state was stepped; scoring continues only a new or scored state");
  if (W <= 0 || W % c_.P != 0) throw Error("score: the window must be a positive multiple of P");
  st.scored_ = true;
  const bool old = model_.retention_recurrent;
  model_.retention_recurrent = true;  // the decoding form: bitwise what stepping computes
  try {
    model_.forward(x, st.rows_, W, Model::Mode::Eval, st.stream_.get());
  } catch (...) {
    model_.retention_recurrent = old;
    throw;
  }
  model_.retention_recurrent = old;
  host_logits_.resize(std::max(host_logits_.size(), size_t(st.rows_) * W * 256));
  be_.download(host_logits_.data(), model_.logits(), size_t(st.rows_) * W * 256);
  st.patches_done_ += W / c_.P;
  return host_logits_.data();
}

void Stepper::fill_synthetic_context(StreamState& st, int64_t patches, int64_t extra, uint64_t seed) {
  if (st.stream_) throw Error("fill_synthetic_context is for the attention baseline");
  st.grow_cache(patches + extra);
  Rng rng(seed);
  const int64_t block = 4096;  // rows per upload: bounded host scratch
  std::vector<float> rows(size_t(block) * c_.D_G());
  for (int l = 0; l < c_.L_G; l++)
    for (auto* cache : {&st.k_cache_, &st.v_cache_})
      for (int64_t r0 = 0; r0 < patches; r0 += block) {
        const size_t count = size_t(std::min(block, patches - r0)) * c_.D_G();
        for (size_t i = 0; i < count; i++) rows[i] = float(rng.normal());
        be_.upload((*cache)[l].data() + size_t(r0) * c_.D_G(), rows.data(), count);
      }
  st.cache_len_ = patches;
  st.patches_done_ = patches;
  st.g_ready_ = false;
}

}  // namespace rb
