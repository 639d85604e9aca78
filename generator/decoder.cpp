#include "generator/decoder.h"

#include <cmath>
#include <cstdio>
#include <sstream>

#include "src/errors.h"
#include "src/safetensors.h"

namespace rb {

namespace {
constexpr const char* kStateFormat = "retbyte-decode-state";
constexpr int kStateVersion = 2;  // 2: the file carries a checksum (SafetensorsReader checks it); 1 is still read
// Keys of the recorded decoding steps (Backend::begin_recorded): the same key, the same ops.
constexpr uint64_t kRetentionStepKey = 1ull << 32, kAttentionStepKey = 2ull << 32, kLocalStepKey = 3ull << 32;
}  // namespace

// ---------------------------------------------------------------- state

DecodeState::DecodeState(Model& model) : model_(model), P_(model.config().P) {
  const ModelConfig& c = model.config();
  Backend& be = model.backend();
  if (c.global == GlobalKind::Retention) stream_ = model.new_stream(1);
  else
    for (int l = 0; l < c.L_G; l++) k_cache_.emplace_back(), v_cache_.emplace_back();
  g_cur_ = Buffer(be, size_t(c.D_G()));
  last_patch_.assign(size_t(P_), 0);
  for (int l = 0; l < c.L_L; l++) l_qkv_.emplace_back(be, size_t(P_) * 3 * c.D_L);
}

DecodeState::DecodeState(const DecodeState& o)
    : model_(o.model_), P_(o.P_), cache_len_(o.cache_len_), cache_cap_(o.cache_cap_),
      g_cur_(o.g_cur_.clone()), g_ready_(o.g_ready_), patches_done_(o.patches_done_),
      last_patch_(o.last_patch_), patch_(o.patch_), pos_(o.pos_), rng_(o.rng_) {
  if (o.stream_) stream_ = o.stream_->clone();
  for (const Buffer& b : o.k_cache_) k_cache_.push_back(b.size() ? b.clone() : Buffer());
  for (const Buffer& b : o.v_cache_) v_cache_.push_back(b.size() ? b.clone() : Buffer());
  for (const Buffer& b : o.l_qkv_) l_qkv_.push_back(b.clone());
}

void DecodeState::grow_cache(int64_t need) {
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

std::unique_ptr<DecodeState> DecodeState::clone() const {
  return std::unique_ptr<DecodeState>(new DecodeState(*this));
}

void DecodeState::save(const std::string& path, Overwrite overwrite) const {
  const ModelConfig& c = model_.config();
  Backend& be = model_.backend();
  auto host = [&](const Buffer& b, size_t n) {
    std::vector<float> v(n);
    if (n) be.download(v.data(), b.data(), n);
    return v;
  };
  std::vector<std::vector<float>> keep;  // owns the host copies until written
  std::vector<StTensorOut> t;
  if (stream_) {
    keep.push_back(stream_->export_states());
    t.push_back({"global.state", "F32", {c.L_G, c.H_G, c.dk(), c.dv()}, keep.back().data()});
  } else {
    std::vector<float> k, v;
    for (int l = 0; l < c.L_G; l++) {
      auto kl = host(k_cache_[l], size_t(cache_len_) * c.D_G()), vl = host(v_cache_[l], size_t(cache_len_) * c.D_G());
      k.insert(k.end(), kl.begin(), kl.end());
      v.insert(v.end(), vl.begin(), vl.end());
    }
    keep.push_back(std::move(k));
    t.push_back({"global.k_cache", "F32", {c.L_G, cache_len_, c.D_G()}, keep.back().data()});
    keep.push_back(std::move(v));
    t.push_back({"global.v_cache", "F32", {c.L_G, cache_len_, c.D_G()}, keep.back().data()});
  }
  keep.push_back(host(g_cur_, g_cur_.size()));
  t.push_back({"global.current", "F32", {c.D_G()}, keep.back().data()});
  std::vector<float> qkv;
  for (const Buffer& b : l_qkv_) {
    auto h = host(b, b.size());
    qkv.insert(qkv.end(), h.begin(), h.end());
  }
  keep.push_back(std::move(qkv));
  t.push_back({"local.qkv", "F32", {c.L_L, P_, 3 * c.D_L}, keep.back().data()});
  t.push_back({"patch", "U8", {int64_t(patch_.size())}, patch_.data()});
  t.push_back({"last_patch", "U8", {P_}, last_patch_.data()});
  std::ostringstream rng;
  for (int i = 0; i < 4; i++) rng << (i ? " " : "") << rng_.raw_state()[i];
  write_safetensors(path, t,
                    {{"format", kStateFormat},
                     {"version", std::to_string(kStateVersion)},
                     {"model_fingerprint", model_fingerprint(model_)},
                     {"config", config_to_json(c)},
                     {"patches_done", std::to_string(patches_done_)},
                     {"global_ready", g_ready_ ? "1" : "0"},
                     {"rng", rng.str()}},
                    overwrite);
}

std::unique_ptr<DecodeState> DecodeState::load(const std::string& path, Model& model) {
  SafetensorsReader f(path);
  const auto& m = f.metadata();
  auto meta = [&](const char* key) {
    auto it = m.find(key);
    if (it == m.end()) throw Error(path + ": missing \"" + key + "\" in __metadata__ (not a retbyte decode state?)");
    return it->second;
  };
  if (meta("format") != kStateFormat) throw Error(path + ": not a retbyte decode state (format \"" + meta("format") + "\")");
  if (meta("version") != std::to_string(kStateVersion) && meta("version") != "1")
    throw Error(path + ": decode state version " + meta("version") + " is not supported (this build reads versions 1 and " + std::to_string(kStateVersion) + ")");
  if (meta("version") != "1" && !f.has_checksum()) throw Error(path + ": decode state without its checksum (damaged file?)");
  const std::string fp = model_fingerprint(model);
  if (meta("model_fingerprint") != fp)
    throw Error(path + ": state was made with another model (fingerprint " + meta("model_fingerprint") + ", this model is " + fp + ")");
  const ModelConfig& c = model.config();
  auto st = std::make_unique<DecodeState>(model);
  Backend& be = model.backend();
  {  // strictly digits, and far from overflowing any position arithmetic
    const std::string v = meta("patches_done");
    if (v.empty() || v.size() > 15 || v.find_first_not_of("0123456789") != std::string::npos)
      throw Error(path + ": bad \"patches_done\" in __metadata__ (damaged file?)");
    st->patches_done_ = std::stoll(v);
  }
  st->g_ready_ = meta("global_ready") == "1";
  if (st->patches_done_ < 0 || (meta("global_ready") != "0" && meta("global_ready") != "1"))
    throw Error(path + ": bad position in __metadata__ (damaged file?)");
  std::istringstream rs(meta("rng"));
  for (int i = 0; i < 4; i++) rs >> st->rng_.raw_state()[i];
  if (!rs) throw Error(path + ": bad \"rng\" in __metadata__");
  if (st->stream_) {
    std::vector<float> s(st->stream_->state_floats());
    f.read_f32("global.state", {c.L_G, c.H_G, c.dk(), c.dv()}, s.data());
    st->stream_->import_states(s, st->patches_done_ + (st->g_ready_ ? 1 : 0));
  } else {
    const auto& info = f.info("global.k_cache");
    if (info.shape.size() != 3) throw Error(path + ": global.k_cache must be 3-d");
    const int64_t n = info.shape[1];
    if (n != st->patches_done_ + (st->g_ready_ ? 1 : 0)) throw Error(path + ": KV cache length does not match the position");
    std::vector<float> k(size_t(c.L_G) * n * c.D_G()), v(k.size());
    f.read_f32("global.k_cache", {c.L_G, n, c.D_G()}, k.data());
    f.read_f32("global.v_cache", {c.L_G, n, c.D_G()}, v.data());
    st->grow_cache(n);
    for (int l = 0; l < c.L_G; l++) {
      if (n == 0) break;
      be.upload(st->k_cache_[l].data(), k.data() + size_t(l) * n * c.D_G(), size_t(n) * c.D_G());
      be.upload(st->v_cache_[l].data(), v.data() + size_t(l) * n * c.D_G(), size_t(n) * c.D_G());
    }
    st->cache_len_ = n;
  }
  std::vector<float> g(size_t(c.D_G()));
  f.read_f32("global.current", {c.D_G()}, g.data());
  be.upload(st->g_cur_.data(), g.data(), g.size());
  std::vector<float> qkv(size_t(c.L_L) * st->P_ * 3 * c.D_L);
  f.read_f32("local.qkv", {c.L_L, st->P_, 3 * c.D_L}, qkv.data());
  for (int l = 0; l < c.L_L; l++) be.upload(st->l_qkv_[l].data(), qkv.data() + size_t(l) * st->P_ * 3 * c.D_L, size_t(st->P_) * 3 * c.D_L);
  st->patch_ = f.read_u8("patch");
  st->last_patch_ = f.read_u8("last_patch");
  if (st->patch_.size() >= size_t(st->P_) || st->last_patch_.size() != size_t(st->P_))
    throw Error(path + ": patch bytes do not fit the model's patch size");
  if (!st->patch_.empty() && !st->g_ready_)  // a patch in progress always has its global output
    throw Error(path + ": inconsistent decode state (bytes in progress without a global step)");
  st->pos_ = int(st->patch_.size());
  return st;
}

// ---------------------------------------------------------------- decoder

Decoder::Decoder(Model& model) : model_(model), be_(model.backend()), c_(model.config()) {
  scratch_ = model_.new_step_scratch();
  model_.prepare_decoding();
  host_logits_.resize(256);
  if (c_.global == GlobalKind::Retention) model_.reserve(1, c_.T, false);  // one size for every context
}

Decoder::~Decoder() = default;

// One global step of the attention baseline at position cache_len_ (= patches_done_).
void Decoder::global_attention_step(DecodeState& st, const uint8_t* patch) {
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

void Decoder::ensure_global(DecodeState& st) {
  if (st.g_ready_) return;
  const uint8_t* input = st.patches_done_ > 0 ? st.last_patch_.data() : nullptr;
  if (st.stream_) {
    model_.reserve(1, c_.P, false);  // any growth of the activations happens here, not while recording
    run_recorded(be_, kRetentionStepKey,
                 [&] { be_.copy(st.g_cur_.data(), model_.global_step(input, 1, st.stream_.get()), c_.D_G()); });
  } else {
    global_attention_step(st, input);
  }
  st.g_ready_ = true;
}

const float* Decoder::next_logits(DecodeState& st) {
  ensure_global(st);
  const int p = st.pos_;
  layer_ptrs_.clear();  // reused: no allocation per byte
  for (Buffer& b : st.l_qkv_) layer_ptrs_.push_back(b.data());
  const int32_t prev = p == 0 ? 256 : st.patch_[p - 1];
  // One recorded unit per byte (a CUDA graph per position p): dozens of launches become one.
  run_recorded(be_, kLocalStepKey + uint64_t(p), [&] {
    model_.local_step(st.g_cur_.data() + size_t(p) * c_.D_E, c_.D_E, &prev, p, 1, layer_ptrs_.data(), *scratch_);
  });
  be_.download(host_logits_.data(), scratch_->logits.data(), 256);
  return host_logits_.data();
}

void Decoder::accept(DecodeState& st, uint8_t byte) {
  st.patch_.push_back(byte);
  st.pos_++;
  if (st.pos_ == c_.P) {  // the patch is complete: it is the next global step's input
    st.last_patch_ = st.patch_;
    st.patch_.clear();
    st.pos_ = 0;
    st.patches_done_++;
    st.g_ready_ = false;
  }
}

void Decoder::ingest(DecodeState& st, const uint8_t* bytes, size_t n) {
  const int P = c_.P;
  size_t i = 0;
  while (i < n) {
    if (st.pos_ != 0 || n - i < size_t(P)) {  // inside a patch: the local model keeps its cache
      next_logits(st);
      accept(st, bytes[i++]);
      continue;
    }
    // Whole patches: only their global steps matter (their local outputs are not needed).
    ensure_global(st);
    const size_t whole = (n - i) / P;
    if (st.stream_) {
      const size_t m = std::min(whole, size_t(c_.T / P));  // bounded activations
      const float* out = model_.global_step(bytes + i, int(m), st.stream_.get());
      be_.copy(st.g_cur_.data(), out + (m - 1) * c_.D_G(), c_.D_G());
      std::copy(bytes + i + (m - 1) * P, bytes + i + m * P, st.last_patch_.begin());
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

void Decoder::fill_synthetic_context(DecodeState& st, int64_t patches, int64_t extra, uint64_t seed) {
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
