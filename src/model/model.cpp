#include "src/model/model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstdio>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include "src/common/errors.h"
#include "src/model/safetensors.h"

namespace rb {

// Every activation the backward pass needs, sized for one (B, T). N = B*K global rows,
// M = B*T local rows. Layer-indexed vectors hold one buffer per layer.
struct Model::Acts {
  int B = 0, T = 0, N = 0, M = 0;  // the current call's shape
  int cap_B = 0, cap_T = 0;        // what the buffers were sized for
  int sized_chunk = 0;             // retention chunk the saved-state buffers were sized for
  bool has_local = false;          // local-model buffers exist (not needed by global_step)
  Backend* be = nullptr;
  std::vector<float*> owned;
  std::vector<int32_t*> owned_idx;

  int32_t *bytes = nullptr, *local_idx = nullptr, *pos_idx = nullptr, *prev_patch = nullptr;
  // The last forward's first patch position (rotary phase) and, per row, whether its first global
  // input was the previous window's last patch (else the pad vector): backward needs both.
  int64_t pos0 = 0;
  std::vector<uint8_t> continued;
  bool training = false;
  // global
  std::vector<float*> g_res;  // L_G+1 residual streams [N, DG]
  std::vector<float*> g_mid, g_ln1, g_ln1_mean, g_ln1_rstd, g_ln2, g_ln2_mean, g_ln2_rstd;
  std::vector<float*> g_proj;       // retention: q|k|v|g [N, 6DG]; attention: q|k|v [N, 3DG]
  std::vector<float*> g_mix;        // retention output o [N, 2DG]; attention output [N, DG]
  std::vector<float*> g_rstd;       // retention RMSNorm rstd [N, H]
  std::vector<float*> g_y;          // retention normalised output [N, 2DG]
  std::vector<float*> g_gated;      // silu(g) * y [N, 2DG]
  std::vector<float*> g_aux;        // retention chunk states / attention probabilities
  std::vector<float*> g_f1, g_f1a;  // FFN pre/post GELU [N, 2DG]
  float *g_out = nullptr, *g_lnf_mean = nullptr, *g_lnf_rstd = nullptr;
  // local
  std::vector<float*> l_res;  // L_L+1 residual streams [M, DL]
  std::vector<float*> l_mid, l_ln1, l_ln1_mean, l_ln1_rstd, l_ln2, l_ln2_mean, l_ln2_rstd;
  std::vector<float*> l_qkv, l_probs, l_att, l_h1, l_h1a;
  float *l_lnf = nullptr, *l_lnf_mean = nullptr, *l_lnf_rstd = nullptr;
  float *logits = nullptr, *losses = nullptr;
  // backward scratch
  float *dg_res = nullptr, *dg_a = nullptr, *dg_proj = nullptr, *dg_b = nullptr, *dg_c = nullptr;
  float *dl_res = nullptr, *dl_a = nullptr, *dl_qkv = nullptr, *dl_big = nullptr;

  float* make(size_t n) {
    owned.push_back(be->alloc(n));
    return owned.back();
  }
  std::vector<float*> make_layers(int layers, size_t n) {
    std::vector<float*> v;
    for (int i = 0; i < layers; i++) v.push_back(make(n));
    return v;
  }
  ~Acts() {
    for (float* p : owned) be->release(p);
    for (int32_t* p : owned_idx) be->release_index(p);
  }
};

GlobalStream::GlobalStream(Backend& be, const ModelConfig& c, int B) : be_(be), B_(B), P_(c.P) {
  state_size_ = size_t(B) * c.H_G * c.dk() * c.dv();
  for (int l = 0; l < c.L_G; l++) states_.push_back(be_.alloc(state_size_));
  last_patch_.assign(size_t(B) * c.P, 0);
  fresh_.assign(size_t(B), 1);
}
GlobalStream::~GlobalStream() {
  for (float* s : states_) be_.release(s);
}
std::unique_ptr<GlobalStream> GlobalStream::clone() const {
  auto c = std::unique_ptr<GlobalStream>(new GlobalStream(be_, B_, P_, state_size_, states_.size()));
  for (size_t l = 0; l < states_.size(); l++) be_.copy(c->states_[l], states_[l], state_size_);
  c->patches_ = patches_;
  c->last_patch_ = last_patch_;
  c->fresh_ = fresh_;
  return c;
}

GlobalStream::GlobalStream(Backend& be, int B, int P, size_t state_size, size_t layers)
    : be_(be), B_(B), state_size_(state_size), P_(P) {
  for (size_t l = 0; l < layers; l++) states_.push_back(be_.alloc(state_size_));
  last_patch_.assign(size_t(B) * P, 0);
  fresh_.assign(size_t(B), 1);
}

std::vector<float> GlobalStream::export_states() const {
  std::vector<float> out(state_floats());
  for (size_t l = 0; l < states_.size(); l++) be_.download(out.data() + l * state_size_, states_[l], state_size_);
  return out;
}

void GlobalStream::import_states(const std::vector<float>& states, int64_t patches) {
  if (states.size() != state_floats()) throw Error("retention state has the wrong size for this model");
  for (size_t l = 0; l < states_.size(); l++) be_.upload(states_[l], states.data() + l * state_size_, state_size_);
  patches_ = patches;
  std::fill(fresh_.begin(), fresh_.end(), patches == 0 ? 1 : 0);
}

void GlobalStream::import_rows(const std::vector<float>& states, int64_t patches, const std::vector<int32_t>& last_patch,
                               const std::vector<uint8_t>& fresh) {
  if (last_patch.size() != last_patch_.size() || fresh.size() != fresh_.size())
    throw Error("retention stream rows have the wrong size for this model");
  import_states(states, patches);
  last_patch_ = last_patch;
  fresh_ = fresh;
}

void GlobalStream::reset_row(int b) {
  if (b < 0 || b >= B_) throw Error("reset_row: row " + std::to_string(b) + " is not in the stream");
  const size_t per_row = state_size_ / size_t(B_);
  for (float* s : states_) be_.fill(s + size_t(b) * per_row, 0.0f, per_row);
  std::fill_n(last_patch_.begin() + long(size_t(b) * P_), P_, 0);
  fresh_[size_t(b)] = 1;
}

void GlobalStream::reset() {
  patches_ = 0;
  for (float* s : states_) be_.fill(s, 0.0f, state_size_);
  std::fill(last_patch_.begin(), last_patch_.end(), 0);
  std::fill(fresh_.begin(), fresh_.end(), 1);
}

Model::Model(const ModelConfig& cfg, Backend& backend) : cfg_(cfg), be_(backend) {
  validate_config(cfg_, "model config");
  table_ = parameter_table(cfg_);
  num_params_ = parameter_count(table_);
  params_ = be_.alloc(num_params_);
  parameter_table(cfg_, params_, &w_);
  gammas_host_ = retention_gammas(cfg_);
  gammas_ = be_.alloc(cfg_.H_G);
  be_.upload(gammas_, gammas_host_.data(), cfg_.H_G);
}

Model::~Model() {
  a_.reset();
  be_.release(params_);
  if (grads_) be_.release(grads_);
  be_.release(gammas_);
}

void Model::ensure_grads() {
  if (grads_) return;  // allocated on first use: inference never pays for them
  grads_ = be_.alloc(num_params_);
  parameter_table(cfg_, grads_, &gw_);
}

float* Model::grads() {
  ensure_grads();
  return grads_;
}

void Model::zero_grad() {
  ensure_grads();
  be_.fill(grads_, 0.0f, num_params_);
}

const float* Model::logits() const { return a_ ? a_->logits : nullptr; }
const float* Model::byte_losses() const { return a_ ? a_->losses : nullptr; }

void Model::reserve(int B, int T, bool local) { ensure_acts(B, T, local); }

void Model::ensure_acts(int B, int T, bool local) {
  const int P = cfg_.P;
  // Every buffer size grows with B and T; the chunk states grow as the chunk shrinks.
  if (a_ && B <= a_->cap_B && T <= a_->cap_T && retention_chunk >= a_->sized_chunk && (a_->has_local || !local)) {
    a_->B = B, a_->T = T, a_->N = B * (T / P), a_->M = B * T;
    return;
  }
  a_.reset();
  auto a = std::make_unique<Acts>();
  a->be = &be_;
  const int K = T / P, DG = cfg_.D_G(), DL = cfg_.D_L, LG = cfg_.L_G, LL = cfg_.L_L;
  const size_t N = size_t(B) * K, M = size_t(B) * T;
  const bool ret = cfg_.global == GlobalKind::Retention;
  a->B = B, a->T = T, a->N = int(N), a->M = int(M);
  a->cap_B = B, a->cap_T = T;
  a->sized_chunk = retention_chunk;
  a->has_local = local;
  for (int32_t** p : {&a->bytes, &a->local_idx, &a->pos_idx}) {
    *p = be_.alloc_index(M);
    a->owned_idx.push_back(*p);
  }
  a->prev_patch = be_.alloc_index(size_t(B) * P);
  a->owned_idx.push_back(a->prev_patch);
  {  // local position of every row: depends only on the row, so any smaller shape reuses it
    std::vector<int32_t> pos(M);
    for (size_t i = 0; i < M; i++) pos[i] = int32_t(i % P);
    be_.upload_index(a->pos_idx, pos.data(), M);
  }
  a->g_res = a->make_layers(LG + 1, N * DG);
  a->g_mid = a->make_layers(LG, N * DG);
  a->g_ln1 = a->make_layers(LG, N * DG);
  a->g_ln2 = a->make_layers(LG, N * DG);
  for (auto* v : {&a->g_ln1_mean, &a->g_ln1_rstd, &a->g_ln2_mean, &a->g_ln2_rstd}) *v = a->make_layers(LG, N);
  a->g_proj = a->make_layers(LG, N * DG * (ret ? 6 : 3));
  a->g_mix = a->make_layers(LG, N * DG * (ret ? 2 : 1));
  if (ret) {
    const int C = std::max(1, std::min(retention_chunk, K));
    const size_t nchunks = (K + C - 1) / C;
    a->g_rstd = a->make_layers(LG, N * cfg_.H_G);
    a->g_y = a->make_layers(LG, N * 2 * DG);
    a->g_gated = a->make_layers(LG, N * 2 * DG);
    a->g_aux = a->make_layers(LG, size_t(B) * cfg_.H_G * nchunks * cfg_.dk() * cfg_.dv());
  } else {
    a->g_aux = a->make_layers(LG, size_t(B) * cfg_.H_G * K * K);
  }
  a->g_f1 = a->make_layers(LG, N * 2 * DG);
  a->g_f1a = a->make_layers(LG, N * 2 * DG);
  a->g_out = a->make(N * DG);
  a->g_lnf_mean = a->make(N);
  a->g_lnf_rstd = a->make(N);
  if (!local) {
    a_ = std::move(a);
    train_ready_ = false;
    return;
  }
  a->l_res = a->make_layers(LL + 1, M * DL);
  a->l_mid = a->make_layers(LL, M * DL);
  a->l_ln1 = a->make_layers(LL, M * DL);
  a->l_ln2 = a->make_layers(LL, M * DL);
  for (auto* v : {&a->l_ln1_mean, &a->l_ln1_rstd, &a->l_ln2_mean, &a->l_ln2_rstd}) *v = a->make_layers(LL, M);
  a->l_qkv = a->make_layers(LL, M * 3 * DL);
  a->l_probs = a->make_layers(LL, M * cfg_.H_L * P);
  a->l_att = a->make_layers(LL, M * DL);
  a->l_h1 = a->make_layers(LL, M * 4 * DL);
  a->l_h1a = a->make_layers(LL, M * 4 * DL);
  a->l_lnf = a->make(M * DL);
  a->l_lnf_mean = a->make(M);
  a->l_lnf_rstd = a->make(M);
  a->logits = a->make(M * 256);
  a->losses = a->make(M);
  a_ = std::move(a);
  train_ready_ = false;
}

void Model::linear(float* y, const float* x, const float* W, const float* bias, int rows, int in, int out, float beta,
                   float* gelu_out) {
  // Up to a few dozen rows (decoding, lockstep segments) a product reads W^T in place: packing W
  // for so few rows costs more than it saves (measured: codec decoding 31-35k vs 19-26k bytes/s).
  constexpr int kFewRows = 64;
  if (format_ == WeightFormat::I8 && be_.has_gemm_i8()) {  // every product, batched or stepped: the same bits
    const int ldq = (in + 3) / 4 * 4;
    if (int8_x_.size() * 4 < size_t(rows) * ldq) int8_x_ = Buffer(be_, (size_t(rows) * ldq + 3) / 4);
    if (int8_x_scale_.size() < size_t(rows)) int8_x_scale_ = Buffer(be_, size_t(rows));
    uint8_t* xq = reinterpret_cast<uint8_t*>(int8_x_.data());
    be_.quantize_rows_u7(x, rows, in, in, xq, ldq, int8_x_scale_.data());
    const Int8Copy w = int8_copy(W, out, in);
    be_.gemm_i8(rows, out, in, xq, ldq, int8_x_scale_.data(), w.panels, w.scale, w.colsum, beta, y, out, bias, gelu_out);
    return;
  }
  if (rows < kFewRows) {
    const float* t = transposed(W, out, in);
    if (bf16_copies())  // the bias (and gelu) applied by each thread to its own columns
      return be_.gemm_bf16(rows, out, in, 1.0f, x, in, reinterpret_cast<const uint16_t*>(t), beta, y, out, bias, gelu_out);
    be_.gemm(false, false, rows, out, in, 1.0f, x, in, t, out, beta, y, out);
  } else {
    be_.gemm(false, true, rows, out, in, 1.0f, x, in, W, in, beta, y, out);
  }
  if (bias) be_.add_bias(y, bias, rows, out);
  if (gelu_out) be_.gelu_forward(gelu_out, y, size_t(rows) * out);
}

const float* Model::transposed(const float* W, int out, int in) {
  auto it = transposed_.find(W);
  if (it == transposed_.end()) {
    std::vector<float> w(size_t(out) * in), t(w.size());
    be_.download(w.data(), W, w.size());
    for (int o = 0; o < out; o++)
      for (int i = 0; i < in; i++) t[size_t(i) * out + o] = w[size_t(o) * in + i];
    if (bf16_copies()) {  // the upper halves (the weights are already bf16 values), in column panels
      std::vector<uint16_t> h(t.size());
      for (size_t i = 0; i < t.size(); i++) h[i] = bf16_round(t[i]);  // exact: t[i] is a bf16 value
      std::vector<float> packed((t.size() + 1) / 2, 0.0f);
      pack_bf16_panels(h.data(), in, out, out, reinterpret_cast<uint16_t*>(packed.data()));
      t = std::move(packed);
    }
    Buffer buf(be_, t.size());
    be_.upload(buf.data(), t.data(), t.size());
    it = transposed_.emplace(W, std::move(buf)).first;
  }
  return it->second.data();
}

Model::Int8Copy Model::int8_copy(const float* W, int out, int in) {
  // One buffer: the panels, then (64-byte aligned) the out scales, then the out column sums.
  const size_t scales_at = (i8_panel_bytes(out, in) + 63) / 64 * 16;  // in floats
  auto it = transposed_.find(W);
  if (it == transposed_.end()) {
    std::vector<float> w(size_t(out) * in);
    be_.download(w.data(), W, w.size());
    std::vector<float> packed(scales_at + 2 * size_t(out), 0.0f);
    pack_i8_panels(w.data(), out, in, reinterpret_cast<int8_t*>(packed.data()), packed.data() + scales_at,
                   reinterpret_cast<int32_t*>(packed.data() + scales_at + out));
    Buffer buf(be_, packed.size());
    be_.upload(buf.data(), packed.data(), packed.size());
    it = transposed_.emplace(W, std::move(buf)).first;
  }
  const float* copy = it->second.data();
  return {reinterpret_cast<const int8_t*>(copy), copy + scales_at, reinterpret_cast<const int32_t*>(copy + scales_at + out)};
}

void Model::decoding_copy(const float* W, int out, int in) {
  if (format_ == WeightFormat::I8 && be_.has_gemm_i8())
    int8_copy(W, out, in);
  else
    transposed(W, out, in);
}

uint16_t bf16_round(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7F800000u) == 0x7F800000u) return uint16_t(u >> 16);  // Inf or NaN: as they are
  u += 0x7FFFu + ((u >> 16) & 1u);                                 // to nearest, ties to even
  return uint16_t(u >> 16);
}

float bf16_widen(uint16_t h) {
  const uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

void Model::set_weight_format(WeightFormat f) {
  if (f == format_) return;
  if (f == WeightFormat::I8 && !be_.has_gemm_i8())
    throw Error("int8 weights: this backend (" + be_.name() + ") has no int8 products");
  transposed_.clear();          // copies of another format (the maps share W's address as the key)
  if (f == WeightFormat::I8) {  // the weights stay: only the products change
    values_ = format_;
    format_ = f;
    return;
  }
  if (format_ == WeightFormat::I8) format_ = values_;  // back to what the weights hold
  if (f == format_) return;
  if (f == WeightFormat::F32) throw Error("weights already rounded to bf16 cannot become fp32 again (load the model file anew)");
  std::vector<float> host(num_params_);
  be_.download(host.data(), params_, host.size());
  for (float& x : host) x = bf16_widen(bf16_round(x));
  be_.upload(params_, host.data(), host.size());
  transposed_.clear();
  format_ = f;
}

void Model::widen_to_fp32() {
  if (format_ == WeightFormat::F32) return;
  transposed_.clear();  // the bf16 panels
  format_ = WeightFormat::F32;
}

void Model::prepare_decoding() {
  const int DG = cfg_.D_G(), DL = cfg_.D_L;
  for (const GlobalLayerWeights& L : w_.g) {
    if (cfg_.global == GlobalKind::Retention) {
      decoding_copy(L.wq, 6 * DG, DG);
      decoding_copy(L.wo, DG, 2 * DG);
    } else {
      decoding_copy(L.wqkv, 3 * DG, DG);
      decoding_copy(L.att_wo, DG, DG);
    }
    decoding_copy(L.w1, 2 * DG, DG);
    decoding_copy(L.w2, DG, 2 * DG);
  }
  for (const LocalLayerWeights& L : w_.l) {
    decoding_copy(L.wqkv, 3 * DL, DL);
    decoding_copy(L.wo, DL, DL);
    decoding_copy(L.w1, 4 * DL, DL);
    decoding_copy(L.w2, DL, 4 * DL);
  }
  decoding_copy(w_.g2l, DL, cfg_.D_E);
  decoding_copy(w_.head, 256, DL);
}

void Model::residual_mlp(float* out, const float* in, float* ln, float* mean, float* rstd, float* h, float* ha, const float* ln_w,
                         const float* ln_b, const float* w1, const float* b1, const float* w2, const float* b2, int rows, int C,
                         int hidden) {
  be_.layernorm_forward(ln, mean, rstd, in, ln_w, ln_b, rows, C);
  linear(h, ln, w1, b1, rows, C, hidden, 0.0f, ha);
  if (out != in) be_.copy(out, in, size_t(rows) * C);
  linear(out, ha, w2, b2, rows, hidden, C, 1.0f);
}

// The attention half of a pre-norm block, the one implementation for batched forwards and for
// one-position steps (which differ only in how they attend): mid = in + (attend(LN1(in) Wqkv + bqkv)
// Wo + bo). `attend(qkv, att)` turns the [rows, 3C] projections into [rows, C] outputs; mid may
// be in (steps update in place).
void Model::attention_half(const AttentionHalf& b, int rows, int C, const std::function<void(float*, float*)>& attend) {
  be_.layernorm_forward(b.ln, b.mean, b.rstd, b.in, b.ln_w, b.ln_b, rows, C);
  linear(b.qkv, b.ln, b.wqkv, b.bqkv, rows, C, 3 * C);
  attend(b.qkv, b.att);
  if (b.mid != b.in) be_.copy(b.mid, b.in, size_t(rows) * C);
  linear(b.mid, b.att, b.wo, b.bo, rows, C, C, 1.0f);
}

void Model::forward_global_retention(int l, GlobalStream* stream, bool recurrent) {
  Acts& a = *a_;
  const GlobalLayerWeights& L = w_.g[l];
  const int N = a.N, DG = cfg_.D_G(), H = cfg_.H_G, K = a.T / cfg_.P, ld = 6 * DG;
  float* proj = a.g_proj[l];
  be_.layernorm_forward(a.g_ln1[l], a.g_ln1_mean[l], a.g_ln1_rstd[l], a.g_res[l], L.ln1_w, L.ln1_b, N, DG);
  linear(proj, a.g_ln1[l], L.wq, nullptr, N, DG, ld);  // wq|wk|wv|wg fused
  const int64_t pos0 = stream ? stream->patches_ : 0;
  float* state = stream ? stream->states_[l] : nullptr;
  be_.rope(proj, ld, N, H, cfg_.dk(), K, pos0, 1.0f, false);
  be_.rope(proj + DG, ld, N, H, cfg_.dk(), K, pos0, 1.0f / std::sqrt(float(cfg_.dk())), false);
  RetentionShape rs{a.B, K, H, cfg_.dk(), cfg_.dv(), ld, ld};
  // Decoding and ingestion (global_step) and recurrent Eval forwards: patch by patch.
  if (recurrent)
    be_.retention_recurrent_forward(a.g_mix[l], proj, proj + DG, proj + 2 * DG, gammas_, rs, state);
  else
    be_.retention_chunkwise_forward(a.g_mix[l], proj, proj + DG, proj + 2 * DG, gammas_, rs, retention_chunk, state, state,
                                    stream && !a.training ? nullptr : a.g_aux[l]);
  be_.rmsnorm_forward(a.g_y[l], a.g_rstd[l], a.g_mix[l], 2 * DG, N, H, cfg_.dv());
  be_.swish_gate_forward(a.g_gated[l], proj + 4 * DG, ld, a.g_y[l], N, 2 * DG);
  be_.copy(a.g_mid[l], a.g_res[l], size_t(N) * DG);
  linear(a.g_mid[l], a.g_gated[l], L.wo, nullptr, N, 2 * DG, DG, 1.0f);
}

void Model::forward_global_attention(int l) {
  Acts& a = *a_;
  const GlobalLayerWeights& L = w_.g[l];
  const int N = a.N, DG = cfg_.D_G(), H = cfg_.H_G, K = a.T / cfg_.P, ld = 3 * DG;
  const AttentionHalf half{a.g_res[l], a.g_mid[l], a.g_ln1[l], a.g_ln1_mean[l], a.g_ln1_rstd[l], a.g_proj[l], a.g_mix[l],
                           L.ln1_w,    L.ln1_b,    L.wqkv,     L.bqkv,          L.att_wo,        L.att_bo};
  attention_half(half, N, DG, [&](float* qkv, float* att) {
    be_.rope(qkv, ld, N, H, cfg_.dk(), K, 0, 1.0f, false);
    be_.rope(qkv + DG, ld, N, H, cfg_.dk(), K, 0, 1.0f, false);
    be_.attention_forward(att, a.g_aux[l], qkv, AttentionShape{a.B, K, H, cfg_.dk()});
  });
}

void Model::forward_local(int l) {
  Acts& a = *a_;
  const LocalLayerWeights& L = w_.l[l];
  const int M = a.M, DL = cfg_.D_L;
  const AttentionHalf half{a.l_res[l], a.l_mid[l], a.l_ln1[l], a.l_ln1_mean[l], a.l_ln1_rstd[l],
                           a.l_qkv[l], a.l_att[l], L.ln1_w,    L.ln1_b,         L.wqkv,
                           L.bqkv,     L.wo,       L.bo};
  attention_half(half, M, DL, [&](float* qkv, float* att) {
    be_.attention_forward(att, a.l_probs[l], qkv, AttentionShape{a.N, cfg_.P, cfg_.H_L, cfg_.hd_local()});
  });
  residual_mlp(a.l_res[l + 1], a.l_mid[l], a.l_ln2[l], a.l_ln2_mean[l], a.l_ln2_rstd[l], a.l_h1[l], a.l_h1a[l], L.ln2_w, L.ln2_b,
               L.w1, L.b1, L.w2, L.b2, M, DL, 4 * DL);
}

void Model::run_global(GlobalStream* stream, bool recurrent) {
  Acts& a = *a_;
  const int N = a.N, DG = cfg_.D_G(), K = a.T / cfg_.P;
  for (int l = 0; l < cfg_.L_G; l++) {
    if (cfg_.global == GlobalKind::Retention)
      forward_global_retention(l, stream, recurrent);
    else
      forward_global_attention(l);
    const GlobalLayerWeights& L = w_.g[l];
    residual_mlp(a.g_res[l + 1], a.g_mid[l], a.g_ln2[l], a.g_ln2_mean[l], a.g_ln2_rstd[l], a.g_f1[l], a.g_f1a[l], L.ln2_w,
                 L.ln2_b, L.w1, L.b1, L.w2, L.b2, N, DG, 2 * DG);
  }
  be_.layernorm_forward(a.g_out, a.g_lnf_mean, a.g_lnf_rstd, a.g_res[cfg_.L_G], w_.g_ln_w, w_.g_ln_b, N, DG);
  if (stream) {
    stream->patches_ += K;
    std::fill(stream->fresh_.begin(), stream->fresh_.end(), 0);
  }
}

const float* Model::global_step(const uint8_t* patches, int npatches, GlobalStream* stream) {
  if (!stream || npatches <= 0 || cfg_.global != GlobalKind::Retention || (!patches && npatches != 1))
    throw Error("global_step: needs a retention model, a stream and at least one patch");
  const int P = cfg_.P, B = stream->B_, DG = cfg_.D_G();
  ensure_acts(B, npatches * P, false);
  train_ready_ = false;  // the activations no longer belong to a training forward
  Acts& a = *a_;
  a.training = false;
  if (!patches) {  // the stream's first position: the pad vector
    for (int b = 0; b < B; b++) be_.copy(a.g_res[0] + size_t(b) * DG, w_.g_pad, DG);
  } else {
    const size_t n = size_t(B) * npatches * P;
    step_idx_.assign(patches, patches + n);
    be_.upload_index(a.bytes, step_idx_.data(), n);
    be_.embedding_forward(a.g_res[0], w_.g_embed, a.bytes, int(n), cfg_.D_E);
  }
  run_global(stream, true);
  if (patches)
    for (int b = 0; b < B; b++)
      for (int p = 0; p < P; p++) stream->last_patch_[size_t(b) * P + p] = patches[(size_t(b) * npatches + npatches - 1) * P + p];
  return a.g_out;
}

double Model::forward(const uint8_t* x, int B, int T, Mode mode, GlobalStream* stream, const int* row_bytes) {
  if (B <= 0 || T <= 0 || T % cfg_.P != 0)
    throw Error("forward: T = " + std::to_string(T) + " must be a positive multiple of P = " + std::to_string(cfg_.P));
  if (stream && (cfg_.global != GlobalKind::Retention || stream->B_ != B))
    throw Error("forward: a stream needs the retention global and B = its batch");
  // The recurrent form carries its state in a stream; a call without one gets a fresh one.
  std::unique_ptr<GlobalStream> own_stream;
  if (!stream && retention_recurrent && mode == Mode::Eval && cfg_.global == GlobalKind::Retention) {
    own_stream = new_stream(B);
    stream = own_stream.get();
  }
  ensure_acts(B, T);
  Acts& a = *a_;
  const int P = cfg_.P, K = T / P, DE = cfg_.D_E, DG = cfg_.D_G(), DL = cfg_.D_L;
  const int M = a.M;

  // Indices: the bytes (targets and global embedding rows) and the local input byte (pad row 256
  // at the first position of each patch); the local positions were set when allocating.
  std::vector<int32_t> host(M), local(M);
  for (int i = 0; i < M; i++) {
    host[i] = x[i];
    local[i] = i % P == 0 ? 256 : x[i - 1];
  }
  be_.upload_index(a.bytes, host.data(), M);
  be_.upload_index(a.local_idx, local.data(), M);

  // Patch embedder: global input row (b, k) = embeddings of patch k-1; row (b, 0) = pad, or the
  // previous window's last patch when continuing a stream.
  a.pos0 = stream ? stream->patches_ : 0;
  a.training = mode == Mode::Train;
  a.continued.assign(size_t(B), 0);
  for (int b = 0; b < B; b++) a.continued[size_t(b)] = stream && !stream->fresh_[size_t(b)];
  if (std::find(a.continued.begin(), a.continued.end(), 1) != a.continued.end())
    be_.upload_index(a.prev_patch, stream->last_patch_.data(), size_t(B) * P);
  for (int b = 0; b < B; b++) {
    float* rows = a.g_res[0] + size_t(b) * K * DG;
    if (a.continued[size_t(b)])
      be_.embedding_forward(rows, w_.g_embed, a.prev_patch + size_t(b) * P, P, DE);
    else
      be_.copy(rows, w_.g_pad, DG);
    if (K > 1) be_.embedding_forward(rows + DG, w_.g_embed, a.bytes + size_t(b) * T, (K - 1) * P, DE);
  }
  if (stream) {
    for (int b = 0; b < B; b++)
      for (int p = 0; p < P; p++) stream->last_patch_[size_t(b) * P + p] = x[size_t(b) * T + T - P + p];
    // patches_ advances after the global layers have used the old position.
  }
  run_global(stream, stream && retention_recurrent && mode == Mode::Eval);

  // Global to local: each D_G row is P pieces of D_E, i.e. g_out viewed as [M, D_E].
  linear(a.l_res[0], a.g_out, w_.g2l, nullptr, M, DE, DL);
  be_.embedding_forward(a.l_res[0], w_.l_embed, a.local_idx, M, DL, true);
  be_.embedding_forward(a.l_res[0], w_.l_pos, a.pos_idx, M, DL, true);
  for (int l = 0; l < cfg_.L_L; l++) forward_local(l);
  be_.layernorm_forward(a.l_lnf, a.l_lnf_mean, a.l_lnf_rstd, a.l_res[cfg_.L_L], w_.l_ln_w, w_.l_ln_b, M, DL);
  linear(a.logits, a.l_lnf, w_.head, nullptr, M, DL, 256);
  // Targets past a row's row_bytes are padding: no loss and no gradient (the mean is over the rest).
  int targets = M;
  if (row_bytes) {
    targets = 0;
    for (int b = 0; b < B; b++) {
      if (row_bytes[b] < 0 || row_bytes[b] > T)
        throw Error("forward: row_bytes[" + std::to_string(b) + "] = " + std::to_string(row_bytes[b]) + " is outside 0.." +
                    std::to_string(T));
      targets += row_bytes[b];
    }
  }
  if (mode == Mode::Train) {
    be_.crossentropy_fused_backward(a.losses, a.logits, a.bytes, M, 256, 1.0f / float(std::max(targets, 1)));
    for (int b = 0; row_bytes && b < B; b++)
      if (row_bytes[b] < T)
        be_.fill(a.logits + (size_t(b) * T + size_t(row_bytes[b])) * 256, 0.0f, size_t(T - row_bytes[b]) * 256);
  } else {
    be_.crossentropy_forward(a.losses, a.logits, a.bytes, M, 256);
  }
  train_ready_ = mode == Mode::Train;

  std::vector<float> losses(M);
  be_.download(losses.data(), a.losses, M);
  double sum = 0.0;
  for (int b = 0; b < B; b++)
    for (int t = 0; t < (row_bytes ? row_bytes[b] : T); t++) sum += losses[size_t(b) * T + size_t(t)];
  return targets ? sum / targets : 0.0;
}

void Model::backward_local(int l) {
  Acts& a = *a_;
  const LocalLayerWeights& L = w_.l[l];
  LocalLayerWeights& G = gw_.l[l];
  const int M = a.M, DL = cfg_.D_L;
  // MLP: dl_res holds d(residual after layer l).
  be_.linear_backward(a.dl_big, G.w2, G.b2, a.dl_res, a.l_h1a[l], L.w2, M, 4 * DL, DL);
  be_.gelu_backward(a.dl_big, a.l_h1[l], a.dl_big, size_t(M) * 4 * DL);
  be_.linear_backward(a.dl_a, G.w1, G.b1, a.dl_big, a.l_ln2[l], L.w1, M, DL, 4 * DL);
  be_.layernorm_backward(a.dl_res, G.ln2_w, G.ln2_b, a.dl_a, a.l_mid[l], L.ln2_w, a.l_ln2_mean[l], a.l_ln2_rstd[l], M, DL);
  // Attention.
  be_.linear_backward(a.dl_a, G.wo, G.bo, a.dl_res, a.l_att[l], L.wo, M, DL, DL);
  be_.attention_backward(a.dl_qkv, a.dl_a, a.l_qkv[l], a.l_probs[l], AttentionShape{a.N, cfg_.P, cfg_.H_L, cfg_.hd_local()});
  be_.linear_backward(a.dl_a, G.wqkv, G.bqkv, a.dl_qkv, a.l_ln1[l], L.wqkv, M, DL, 3 * DL);
  be_.layernorm_backward(a.dl_res, G.ln1_w, G.ln1_b, a.dl_a, a.l_res[l], L.ln1_w, a.l_ln1_mean[l], a.l_ln1_rstd[l], M, DL);
}

void Model::backward_global_retention(int l) {
  Acts& a = *a_;
  const GlobalLayerWeights& L = w_.g[l];
  GlobalLayerWeights& G = gw_.g[l];
  const int N = a.N, DG = cfg_.D_G(), H = cfg_.H_G, K = a.T / cfg_.P, ld = 6 * DG;
  const float* proj = a.g_proj[l];
  float* dproj = a.dg_proj;
  // out = gated Wo^T: dgated -> dg_b [N, 2DG]
  be_.linear_backward(a.dg_b, G.wo, nullptr, a.dg_res, a.g_gated[l], L.wo, N, 2 * DG, DG);
  // gate: d(g) into the g columns of dproj, dy -> dg_c
  be_.swish_gate_backward(dproj + 4 * DG, a.dg_c, ld, proj + 4 * DG, a.g_y[l], a.dg_b, N, 2 * DG);
  // RMSNorm: do -> dg_b
  be_.rmsnorm_backward(a.dg_b, 2 * DG, a.dg_c, a.g_y[l], a.g_rstd[l], N, H, cfg_.dv());
  RetentionShape rs{a.B, K, H, cfg_.dk(), cfg_.dv(), ld, ld};
  be_.retention_chunkwise_backward(dproj, dproj + DG, dproj + 2 * DG, a.dg_b, proj, proj + DG, proj + 2 * DG, gammas_, rs,
                                   retention_chunk, a.g_aux[l], nullptr, nullptr);
  be_.rope(dproj, ld, N, H, cfg_.dk(), K, a.pos0, 1.0f, true);
  be_.rope(dproj + DG, ld, N, H, cfg_.dk(), K, a.pos0, 1.0f / std::sqrt(float(cfg_.dk())), true);
  be_.linear_backward(a.dg_a, G.wq, nullptr, dproj, a.g_ln1[l], L.wq, N, DG, ld);
  be_.layernorm_backward(a.dg_res, G.ln1_w, G.ln1_b, a.dg_a, a.g_res[l], L.ln1_w, a.g_ln1_mean[l], a.g_ln1_rstd[l], N, DG);
}

void Model::backward_global_attention(int l) {
  Acts& a = *a_;
  const GlobalLayerWeights& L = w_.g[l];
  GlobalLayerWeights& G = gw_.g[l];
  const int N = a.N, DG = cfg_.D_G(), H = cfg_.H_G, K = a.T / cfg_.P, ld = 3 * DG;
  be_.linear_backward(a.dg_b, G.att_wo, G.att_bo, a.dg_res, a.g_mix[l], L.att_wo, N, DG, DG);
  be_.attention_backward(a.dg_proj, a.dg_b, a.g_proj[l], a.g_aux[l], AttentionShape{a.B, K, H, cfg_.dk()});
  be_.rope(a.dg_proj, ld, N, H, cfg_.dk(), K, 0, 1.0f, true);
  be_.rope(a.dg_proj + DG, ld, N, H, cfg_.dk(), K, 0, 1.0f, true);
  be_.linear_backward(a.dg_a, G.wqkv, G.bqkv, a.dg_proj, a.g_ln1[l], L.wqkv, N, DG, ld);
  be_.layernorm_backward(a.dg_res, G.ln1_w, G.ln1_b, a.dg_a, a.g_res[l], L.ln1_w, a.g_ln1_mean[l], a.g_ln1_rstd[l], N, DG);
}

void Model::backward() {
  if (!a_ || !train_ready_) throw Error("backward() needs a forward in Train mode first");
  train_ready_ = false;
  Acts& a = *a_;
  const int P = cfg_.P, T = a.T, K = T / P, DE = cfg_.D_E, DG = cfg_.D_G(), DL = cfg_.D_L;
  const int N = a.N, M = a.M;
  if (!a.dg_res) {
    const bool ret = cfg_.global == GlobalKind::Retention;
    const size_t capN = size_t(a.cap_B) * (a.cap_T / P), capM = size_t(a.cap_B) * a.cap_T;
    a.dg_res = a.make(capN * DG);
    a.dg_a = a.make(capN * DG);
    a.dg_proj = a.make(capN * DG * (ret ? 6 : 3));
    a.dg_b = a.make(capN * 2 * DG);
    a.dg_c = a.make(capN * 2 * DG);
    a.dl_res = a.make(capM * DL);
    a.dl_a = a.make(capM * DL);
    a.dl_qkv = a.make(capM * 3 * DL);
    a.dl_big = a.make(capM * 4 * DL);
  }
  ensure_grads();
  // Head and final local LayerNorm (logits now hold dlogits).
  be_.linear_backward(a.dl_a, gw_.head, nullptr, a.logits, a.l_lnf, w_.head, M, DL, 256);
  be_.fill(a.dl_res, 0.0f, size_t(M) * DL);
  be_.layernorm_backward(a.dl_res, gw_.l_ln_w, gw_.l_ln_b, a.dl_a, a.l_res[cfg_.L_L], w_.l_ln_w, a.l_lnf_mean, a.l_lnf_rstd, M,
                         DL);
  for (int l = cfg_.L_L - 1; l >= 0; l--) backward_local(l);
  // Local input: embeddings, positions, and the global-to-local projection into d g_out ([M, DE]).
  be_.embedding_backward(gw_.l_embed, a.dl_res, a.local_idx, M, DL);
  be_.embedding_backward(gw_.l_pos, a.dl_res, a.pos_idx, M, DL);
  be_.linear_backward(a.dg_a, gw_.g2l, nullptr, a.dl_res, a.g_out, w_.g2l, M, DE, DL);
  be_.fill(a.dg_res, 0.0f, size_t(N) * DG);
  be_.layernorm_backward(a.dg_res, gw_.g_ln_w, gw_.g_ln_b, a.dg_a, a.g_res[cfg_.L_G], w_.g_ln_w, a.g_lnf_mean, a.g_lnf_rstd, N,
                         DG);
  for (int l = cfg_.L_G - 1; l >= 0; l--) {
    const GlobalLayerWeights& L = w_.g[l];
    GlobalLayerWeights& G = gw_.g[l];
    be_.linear_backward(a.dg_b, G.w2, G.b2, a.dg_res, a.g_f1a[l], L.w2, N, 2 * DG, DG);
    be_.gelu_backward(a.dg_b, a.g_f1[l], a.dg_b, size_t(N) * 2 * DG);
    be_.linear_backward(a.dg_a, G.w1, G.b1, a.dg_b, a.g_ln2[l], L.w1, N, DG, 2 * DG);
    be_.layernorm_backward(a.dg_res, G.ln2_w, G.ln2_b, a.dg_a, a.g_mid[l], L.ln2_w, a.g_ln2_mean[l], a.g_ln2_rstd[l], N, DG);
    if (cfg_.global == GlobalKind::Retention)
      backward_global_retention(l);
    else
      backward_global_attention(l);
  }
  // Patch embedder.
  for (int b = 0; b < a.B; b++) {
    const float* rows = a.dg_res + size_t(b) * K * DG;
    if (a.continued[size_t(b)])  // the previous window's last patch: its bytes' embeddings
      be_.embedding_backward(gw_.g_embed, rows, a.prev_patch + size_t(b) * P, P, DE);
    else
      be_.add_inplace(gw_.g_pad, rows, DG);
    if (K > 1) be_.embedding_backward(gw_.g_embed, rows + DG, a.bytes + size_t(b) * T, (K - 1) * P, DE);
  }
}

double Model::forward_flops(int B, int T) const {
  const double K = T / cfg_.P, N = double(B) * K, M = double(B) * T;
  const double DG = cfg_.D_G(), DL = cfg_.D_L, DE = cfg_.D_E;
  double f = 0;
  if (cfg_.global == GlobalKind::Retention) {
    const double C = std::min<double>(retention_chunk, K), dk = cfg_.dk(), dv = cfg_.dv();
    const double per_layer_proj = N * (DG * 6 * DG + 2 * DG * DG);
    // per position: intra-chunk scores + values (C/2 on average... counted as full blocks),
    // cross-chunk query-state product, state update.
    const double ret = B * cfg_.H_G * K * (C * dk + C * dv + 2 * dk * dv);
    f += cfg_.L_G * (per_layer_proj + ret);
  } else {
    f += cfg_.L_G * (N * (3 * DG * DG + DG * DG) + B * cfg_.H_G * K * K * cfg_.dk());
  }
  f += cfg_.L_G * N * 4 * DG * DG;                                    // FFN
  f += M * DE * DL;                                                   // g2l
  f += cfg_.L_L * M * (4 * DL * DL + 8 * DL * DL + 2 * cfg_.P * DL);  // local blocks
  f += M * DL * 256;                                                  // head
  return 2.0 * f;
}

}  // namespace rb
