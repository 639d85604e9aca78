// One-position steps for decoding (the Stepper, src/model/stepper.h): the local model at one
// position of many rows' patches and the attention baseline's global step, built from the same
// layer functions as the batched forward (attention_half, residual_mlp, linear).
#include "src/model/model.h"

#include "src/common/errors.h"

namespace rb {

StepScratch::~StepScratch() {
  if (idx) be->release_index(idx);
}

std::unique_ptr<StepScratch> Model::new_step_scratch(int rows) {
  auto s = std::make_unique<StepScratch>();
  const int DL = cfg_.D_L, DG = cfg_.D_G(), P = cfg_.P;
  const size_t R = size_t(std::max(1, rows));
  s->be = &be_;
  s->rows = int(R);
  s->pieces = Buffer(be_, R * cfg_.D_E);
  s->h = Buffer(be_, R * DL);
  s->ln = Buffer(be_, R * std::max(DL, DG));
  s->qkv = Buffer(be_, R * 3 * DL);
  s->att = Buffer(be_, R * DL);
  s->big = Buffer(be_, R * 4 * DL);
  s->logits = Buffer(be_, R * 256);
  s->mean = Buffer(be_, R);
  s->rstd = Buffer(be_, R);
  s->g_x = Buffer(be_, DG);
  s->g_ln = Buffer(be_, DG);
  s->g_qkv = Buffer(be_, size_t(3) * DG);
  s->g_att = Buffer(be_, DG);
  s->g_big = Buffer(be_, size_t(2) * DG);
  s->idx = be_.alloc_index(std::max(R * 2, size_t(std::max(2, P))));  // bytes and positions, or a patch
  return s;
}

void Model::local_step(const float* g_pieces, size_t g_stride, const int32_t* prev_bytes, int p, int rows,
                       float* const* qkv_cache, StepScratch& s) {
  if (rows < 1 || rows > s.rows || p < 0 || p >= cfg_.P) throw Error("local_step: rows or position out of range");
  const int DL = cfg_.D_L, H = cfg_.H_L, DE = cfg_.D_E;
  const size_t row_cache = size_t(cfg_.P) * 3 * DL;  // one row's q|k|v cache per layer
  float* h = s.h.data();
  // h = g2l(piece p of the global output) + E_L[previous byte, or pad] + pos[p], as in forward().
  const float* pieces = g_pieces;
  if (rows > 1 && g_stride != size_t(DE)) {  // gather the rows' pieces into one matrix
    for (int r = 0; r < rows; r++) be_.copy(s.pieces.data() + size_t(r) * DE, g_pieces + r * g_stride, DE);
    pieces = s.pieces.data();
  }
  linear(h, pieces, w_.g2l, nullptr, rows, DE, DL);
  step_idx_.resize(size_t(rows) * 2);
  for (int r = 0; r < rows; r++) step_idx_[size_t(r)] = prev_bytes[r], step_idx_[size_t(rows + r)] = p;
  be_.upload_index(s.idx, step_idx_.data(), size_t(rows) * 2);
  be_.embedding_forward(h, w_.l_embed, s.idx, rows, DL, true);
  be_.embedding_forward(h, w_.l_pos, s.idx + rows, rows, DL, true);
  for (int l = 0; l < cfg_.L_L; l++) {
    const LocalLayerWeights& L = w_.l[l];
    float* cache = qkv_cache[l];
    // One row writes its q|k|v straight into its cache; several go through a matrix first.
    float* qkv = rows == 1 ? cache + size_t(p) * 3 * DL : s.qkv.data();
    const AttentionHalf half{h,       h,       s.ln.data(), s.mean.data(), s.rstd.data(), qkv, s.att.data(),
                             L.ln1_w, L.ln1_b, L.wqkv,      L.bqkv,        L.wo,          L.bo};
    attention_half(half, rows, DL, [&](float* qkv_rows, float* att) {
      for (int r = 0; r < rows; r++) {
        float* rc = cache + r * row_cache;
        if (rows > 1) be_.copy(rc + size_t(p) * 3 * DL, qkv_rows + size_t(r) * 3 * DL, 3 * DL);
        // Position p attends to positions 0..p of its patch: the cached rows are its keys and values.
        be_.attention_decode(att + size_t(r) * DL, rc + size_t(p) * 3 * DL, rc + DL, rc + 2 * DL, p + 1, 3 * DL, H,
                             cfg_.hd_local());
      }
    });
    residual_mlp(h, h, s.ln.data(), s.mean.data(), s.rstd.data(), s.big.data(), s.big.data(), L.ln2_w, L.ln2_b, L.w1, L.b1, L.w2,
                 L.b2, rows, DL, 4 * DL);
  }
  be_.layernorm_forward(s.ln.data(), s.mean.data(), s.rstd.data(), h, w_.l_ln_w, w_.l_ln_b, rows, DL);
  linear(s.logits.data(), s.ln.data(), w_.head, nullptr, rows, DL, 256);
}

void Model::global_attention_step(const uint8_t* patch, int64_t pos, float* const* k_cache, float* const* v_cache, StepScratch& s,
                                  float* out) {
  const int DG = cfg_.D_G(), H = cfg_.H_G, hd = cfg_.dk(), P = cfg_.P;
  float* x = s.g_x.data();
  if (patch) {  // the P byte embeddings side by side are the D_G-wide patch embedding
    const std::vector<int32_t> idx(patch, patch + P);
    be_.upload_index(s.idx, idx.data(), size_t(P));
    be_.embedding_forward(x, w_.g_embed, s.idx, P, cfg_.D_E);
  } else {
    be_.copy(x, w_.g_pad, DG);
  }
  for (int l = 0; l < cfg_.L_G; l++) {
    const GlobalLayerWeights& L = w_.g[l];
    const AttentionHalf half{x,       x,       s.g_ln.data(), s.mean.data(), s.rstd.data(), s.g_qkv.data(), s.g_att.data(),
                             L.ln1_w, L.ln1_b, L.wqkv,        L.bqkv,        L.att_wo,      L.att_bo};
    attention_half(half, 1, DG, [&](float* qkv, float* att) {
      be_.rope(qkv, 3 * DG, 1, H, hd, 1, pos, 1.0f, false);
      be_.rope(qkv + DG, 3 * DG, 1, H, hd, 1, pos, 1.0f, false);
      be_.copy(k_cache[l] + size_t(pos) * DG, qkv + DG, DG);
      be_.copy(v_cache[l] + size_t(pos) * DG, qkv + 2 * DG, DG);
      be_.attention_decode(att, qkv, k_cache[l], v_cache[l], int(pos + 1), DG, H, hd);
    });
    residual_mlp(x, x, s.g_ln.data(), s.mean.data(), s.rstd.data(), s.g_big.data(), s.g_big.data(), L.ln2_w, L.ln2_b, L.w1, L.b1,
                 L.w2, L.b2, 1, DG, 2 * DG);
  }
  be_.layernorm_forward(out, s.mean.data(), s.rstd.data(), x, w_.g_ln_w, w_.g_ln_b, 1, DG);
}

}  // namespace rb
