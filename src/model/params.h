// The parameter table: the single place that lists every tensor of the model (doc/SPEC.md §4 name, shape,
// initialisation, weight decay). The flat buffer is laid out in table order, so the tensors of a
// fused product sit next to each other (msr.wq|wk|wv|wg form one [6*D_G, D_G] matrix).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "src/model/config.h"

namespace rb {

struct GlobalLayerWeights {
  float *ln1_w, *ln1_b, *ln2_w, *ln2_b;
  float *wq, *wk, *wv, *wg, *wo;         // retention (wq..wg contiguous)
  float *wqkv, *bqkv, *att_wo, *att_bo;  // attention baseline
  float *w1, *b1, *w2, *b2;
};
struct LocalLayerWeights {
  float *ln1_w, *ln1_b, *wqkv, *bqkv, *wo, *bo, *ln2_w, *ln2_b, *w1, *b1, *w2, *b2;
};
// Typed views into a flat buffer (the parameters, or their gradients: same layout).
struct Weights {
  float *g_embed, *g_pad;
  std::vector<GlobalLayerWeights> g;
  float *g_ln_w, *g_ln_b, *g2l, *l_embed, *l_pos;
  std::vector<LocalLayerWeights> l;
  float *l_ln_w, *l_ln_b, *head;
};

enum class Init { Zeros, Ones, Normal, NormalResidual };

struct TensorEntry {
  std::string name;
  std::vector<int64_t> shape;
  size_t offset = 0, count = 0;
  Init init = Init::Normal;
  bool weight_decay = false;  // matrices only; never norms, biases or embeddings
};

// Lays out every tensor for `c`. If `views` is given, points its members into `base`.
std::vector<TensorEntry> parameter_table(const ModelConfig& c, float* base = nullptr, Weights* views = nullptr);
size_t parameter_count(const std::vector<TensorEntry>& table);

// Initialisation (GPT-2 style, see README): Normal(0, 0.02) for matrices and embeddings, the
// residual output projections scaled by 1/sqrt(2 * layers), LayerNorm weight 1 and biases 0.
void init_parameters(const std::vector<TensorEntry>& table, const ModelConfig& c, float* host, uint64_t seed);

}  // namespace rb
