#include "src/model/params.h"

#include <cmath>

#include "src/common/rng.h"

namespace rb {

std::vector<TensorEntry> parameter_table(const ModelConfig& c, float* base, Weights* v) {
  std::vector<TensorEntry> t;
  size_t offset = 0;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, Init init, float** view) {
    TensorEntry e{name, shape, offset, 1, init, false};
    for (int64_t d : shape) e.count *= size_t(d);
    e.weight_decay = shape.size() == 2 && (init == Init::Normal || init == Init::NormalResidual) &&
                     name.find("embed") == std::string::npos && name != "local.pos";
    offset += e.count;
    if (view) *view = base ? base + e.offset : nullptr;
    t.push_back(std::move(e));
  };
  Weights dummy;
  Weights& w = v ? *v : dummy;
  const int64_t DE = c.D_E, DG = c.D_G(), DL = c.D_L;
  w.g.assign(c.L_G, {});
  w.l.assign(c.L_L, {});

  add("global.embed", {256, DE}, Init::Normal, &w.g_embed);
  add("global.pad", {DG}, Init::Normal, &w.g_pad);
  for (int i = 0; i < c.L_G; i++) {
    const std::string p = "global.layers." + std::to_string(i) + ".";
    GlobalLayerWeights& L = w.g[i];
    add(p + "ln1.weight", {DG}, Init::Ones, &L.ln1_w);
    add(p + "ln1.bias", {DG}, Init::Zeros, &L.ln1_b);
    if (c.global == GlobalKind::Retention) {
      add(p + "msr.wq", {DG, DG}, Init::Normal, &L.wq);
      add(p + "msr.wk", {DG, DG}, Init::Normal, &L.wk);
      add(p + "msr.wv", {2 * DG, DG}, Init::Normal, &L.wv);
      add(p + "msr.wg", {2 * DG, DG}, Init::Normal, &L.wg);
      add(p + "msr.wo", {DG, 2 * DG}, Init::NormalResidual, &L.wo);
    } else {
      add(p + "attn.wqkv", {3 * DG, DG}, Init::Normal, &L.wqkv);
      add(p + "attn.bqkv", {3 * DG}, Init::Zeros, &L.bqkv);
      add(p + "attn.wo", {DG, DG}, Init::NormalResidual, &L.att_wo);
      add(p + "attn.bo", {DG}, Init::Zeros, &L.att_bo);
    }
    add(p + "ln2.weight", {DG}, Init::Ones, &L.ln2_w);
    add(p + "ln2.bias", {DG}, Init::Zeros, &L.ln2_b);
    add(p + "ffn.w1", {2 * DG, DG}, Init::Normal, &L.w1);
    add(p + "ffn.b1", {2 * DG}, Init::Zeros, &L.b1);
    add(p + "ffn.w2", {DG, 2 * DG}, Init::NormalResidual, &L.w2);
    add(p + "ffn.b2", {DG}, Init::Zeros, &L.b2);
  }
  add("global.ln.weight", {DG}, Init::Ones, &w.g_ln_w);
  add("global.ln.bias", {DG}, Init::Zeros, &w.g_ln_b);
  add("g2l.weight", {DL, DE}, Init::Normal, &w.g2l);
  add("local.embed", {257, DL}, Init::Normal, &w.l_embed);
  add("local.pos", {c.P, DL}, Init::Normal, &w.l_pos);
  for (int i = 0; i < c.L_L; i++) {
    const std::string p = "local.layers." + std::to_string(i) + ".";
    LocalLayerWeights& L = w.l[i];
    add(p + "ln1.weight", {DL}, Init::Ones, &L.ln1_w);
    add(p + "ln1.bias", {DL}, Init::Zeros, &L.ln1_b);
    add(p + "attn.wqkv", {3 * DL, DL}, Init::Normal, &L.wqkv);
    add(p + "attn.bqkv", {3 * DL}, Init::Zeros, &L.bqkv);
    add(p + "attn.wo", {DL, DL}, Init::NormalResidual, &L.wo);
    add(p + "attn.bo", {DL}, Init::Zeros, &L.bo);
    add(p + "ln2.weight", {DL}, Init::Ones, &L.ln2_w);
    add(p + "ln2.bias", {DL}, Init::Zeros, &L.ln2_b);
    add(p + "mlp.w1", {4 * DL, DL}, Init::Normal, &L.w1);
    add(p + "mlp.b1", {4 * DL}, Init::Zeros, &L.b1);
    add(p + "mlp.w2", {DL, 4 * DL}, Init::NormalResidual, &L.w2);
    add(p + "mlp.b2", {DL}, Init::Zeros, &L.b2);
  }
  add("local.ln.weight", {DL}, Init::Ones, &w.l_ln_w);
  add("local.ln.bias", {DL}, Init::Zeros, &w.l_ln_b);
  add("head.weight", {256, DL}, Init::Normal, &w.head);
  return t;
}

size_t parameter_count(const std::vector<TensorEntry>& table) {
  return table.empty() ? 0 : table.back().offset + table.back().count;
}

void init_parameters(const std::vector<TensorEntry>& table, const ModelConfig& c, float* host, uint64_t seed) {
  Rng rng(seed);
  for (const TensorEntry& e : table) {
    float* p = host + e.offset;
    const bool global = e.name.rfind("global.", 0) == 0;
    const double residual_scale = 1.0 / std::sqrt(2.0 * (global ? c.L_G : c.L_L));
    for (size_t i = 0; i < e.count; i++) {
      switch (e.init) {
        case Init::Zeros:
          p[i] = 0.0f;
          break;
        case Init::Ones:
          p[i] = 1.0f;
          break;
        case Init::Normal:
          p[i] = float(0.02 * rng.normal());
          break;
        case Init::NormalResidual:
          p[i] = float(0.02 * residual_scale * rng.normal());
          break;
      }
    }
  }
}

}  // namespace rb
