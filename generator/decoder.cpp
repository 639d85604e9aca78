#include "generator/decoder.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "src/common/errors.h"
#include "src/model/safetensors.h"

namespace rb {

namespace {
constexpr const char* kStateFormat = "retbyte-decode-state";
constexpr int kStateVersion = 2;  // 2: the file carries a checksum (SafetensorsReader checks it); 1 is still read
}  // namespace

void DecodeState::save(const std::string& path, Overwrite overwrite) const {
  const StreamState& s = state_;
  const std::vector<uint8_t> in_progress(s.patch_.begin(), s.patch_.begin() + s.pos_);  // the one row's
  const ModelConfig& c = s.model_.config();
  Backend& be = s.model_.backend();
  auto host = [&](const Buffer& b, size_t n) {
    std::vector<float> v(n);
    if (n) be.download(v.data(), b.data(), n);
    return v;
  };
  std::vector<std::vector<float>> keep;  // owns the host copies until written
  std::vector<StTensorOut> t;
  if (s.stream_) {
    keep.push_back(s.stream_->export_states());
    t.push_back({"global.state", "F32", {c.L_G, c.H_G, c.dk(), c.dv()}, keep.back().data()});
  } else {
    std::vector<float> k, v;
    for (int l = 0; l < c.L_G; l++) {
      auto kl = host(s.k_cache_[l], size_t(s.cache_len_) * c.D_G()), vl = host(s.v_cache_[l], size_t(s.cache_len_) * c.D_G());
      k.insert(k.end(), kl.begin(), kl.end());
      v.insert(v.end(), vl.begin(), vl.end());
    }
    keep.push_back(std::move(k));
    t.push_back({"global.k_cache", "F32", {c.L_G, s.cache_len_, c.D_G()}, keep.back().data()});
    keep.push_back(std::move(v));
    t.push_back({"global.v_cache", "F32", {c.L_G, s.cache_len_, c.D_G()}, keep.back().data()});
  }
  keep.push_back(host(s.g_cur_, s.g_cur_.size()));
  t.push_back({"global.current", "F32", {c.D_G()}, keep.back().data()});
  std::vector<float> qkv;
  for (const Buffer& b : s.l_qkv_) {
    auto h = host(b, b.size());
    qkv.insert(qkv.end(), h.begin(), h.end());
  }
  keep.push_back(std::move(qkv));
  t.push_back({"local.qkv", "F32", {c.L_L, s.P_, 3 * c.D_L}, keep.back().data()});
  t.push_back({"patch", "U8", {int64_t(in_progress.size())}, in_progress.data()});
  t.push_back({"last_patch", "U8", {s.P_}, s.last_patch_.data()});
  std::ostringstream rng;
  for (int i = 0; i < 4; i++) rng << (i ? " " : "") << rng_.raw_state()[i];
  write_safetensors(path, t,
                    {{"format", kStateFormat},
                     {"version", std::to_string(kStateVersion)},
                     {"model_fingerprint", model_fingerprint(s.model_)},
                     {"int8_products", s.model_.weight_format() == WeightFormat::I8 ? "1" : "0"},
                     {"config", config_to_json(c)},
                     {"patches_done", std::to_string(s.patches_done_)},
                     {"global_ready", s.g_ready_ ? "1" : "0"},
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
    throw Error(path + ": decode state version " + meta("version") + " is not supported (this build reads versions 1 and " +
                std::to_string(kStateVersion) + ")");
  if (meta("version") != "1" && !f.has_checksum()) throw Error(path + ": decode state without its checksum (damaged file?)");
  // int8 products keep the weights (and the fingerprint) but not the bits; states written before
  // this key existed were decoded without them.
  const auto int8 = m.find("int8_products");
  if (int8 != m.end() && int8->second != "0" && int8->second != "1")
    throw Error(path + ": bad \"int8_products\" in __metadata__ (damaged file?)");
  model.set_int8_products(int8 != m.end() && int8->second == "1");
  const std::string fp = model_fingerprint(model);
  if (meta("model_fingerprint") != fp)
    throw Error(path + ": state was made with another model (fingerprint " + meta("model_fingerprint") + ", this model is " + fp +
                ")");
  const ModelConfig& c = model.config();
  auto st = std::make_unique<DecodeState>(model);
  Backend& be = model.backend();
  StreamState& s = st->state_;
  {  // strictly digits, and far from overflowing any position arithmetic
    const std::string v = meta("patches_done");
    if (v.empty() || v.size() > 15 || v.find_first_not_of("0123456789") != std::string::npos)
      throw Error(path + ": bad \"patches_done\" in __metadata__ (damaged file?)");
    s.patches_done_ = std::stoll(v);
  }
  s.g_ready_ = meta("global_ready") == "1";
  if (s.patches_done_ < 0 || (meta("global_ready") != "0" && meta("global_ready") != "1"))
    throw Error(path + ": bad position in __metadata__ (damaged file?)");
  std::istringstream rs(meta("rng"));
  for (int i = 0; i < 4; i++) rs >> st->rng_.raw_state()[i];
  if (!rs) throw Error(path + ": bad \"rng\" in __metadata__");
  if (s.stream_) {
    std::vector<float> states(s.stream_->state_floats());
    f.read_f32("global.state", {c.L_G, c.H_G, c.dk(), c.dv()}, states.data());
    s.stream_->import_states(states, s.patches_done_ + (s.g_ready_ ? 1 : 0));
  } else {
    const auto& info = f.info("global.k_cache");
    if (info.shape.size() != 3) throw Error(path + ": global.k_cache must be 3-d");
    const int64_t n = info.shape[1];
    if (n != s.patches_done_ + (s.g_ready_ ? 1 : 0)) throw Error(path + ": KV cache length does not match the position");
    std::vector<float> k(size_t(c.L_G) * n * c.D_G()), v(k.size());
    f.read_f32("global.k_cache", {c.L_G, n, c.D_G()}, k.data());
    f.read_f32("global.v_cache", {c.L_G, n, c.D_G()}, v.data());
    s.grow_cache(n);
    for (int l = 0; l < c.L_G; l++) {
      if (n == 0) break;
      be.upload(s.k_cache_[l].data(), k.data() + size_t(l) * n * c.D_G(), size_t(n) * c.D_G());
      be.upload(s.v_cache_[l].data(), v.data() + size_t(l) * n * c.D_G(), size_t(n) * c.D_G());
    }
    s.cache_len_ = n;
  }
  std::vector<float> g(size_t(c.D_G()));
  f.read_f32("global.current", {c.D_G()}, g.data());
  be.upload(s.g_cur_.data(), g.data(), g.size());
  std::vector<float> qkv(size_t(c.L_L) * s.P_ * 3 * c.D_L);
  f.read_f32("local.qkv", {c.L_L, s.P_, 3 * c.D_L}, qkv.data());
  for (int l = 0; l < c.L_L; l++)
    be.upload(s.l_qkv_[l].data(), qkv.data() + size_t(l) * s.P_ * 3 * c.D_L, size_t(s.P_) * 3 * c.D_L);
  const std::vector<uint8_t> in_progress = f.read_u8("patch");
  s.last_patch_ = f.read_u8("last_patch");
  if (in_progress.size() >= size_t(s.P_) || s.last_patch_.size() != size_t(s.P_))
    throw Error(path + ": patch bytes do not fit the model's patch size");
  if (!in_progress.empty() && !s.g_ready_)  // a patch in progress always has its global output
    throw Error(path + ": inconsistent decode state (bytes in progress without a global step)");
  std::copy(in_progress.begin(), in_progress.end(), s.patch_.begin());
  s.pos_ = int(in_progress.size());
  return st;
}

}  // namespace rb
