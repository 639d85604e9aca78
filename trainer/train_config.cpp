#include "trainer/train_config.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "src/common/dmath.h"
#include "src/common/errors.h"

namespace rb {

float TrainConfig::lr_at(int64_t step, int64_t horizon) const {
  const double lr = adamw.lr, floor = lr * min_lr_ratio;
  if (step < warmup_steps) return float(lr * double(step + 1) / double(warmup_steps));
  if (horizon <= warmup_steps) return float(lr);
  const double t = std::min(1.0, double(step - warmup_steps) / double(horizon - warmup_steps));
  return float(floor + 0.5 * (lr - floor) * (1.0 + dmath::cos(M_PI * t)));
}

namespace {
const char* const kModelKeys[] = {"config", "P", "D_E", "L_G", "H_G", "D_L", "L_L", "H_L", "T", "B", "global", "longest_memory"};
}

TrainConfig parse_train_config(const std::string& name_or_path) {
  TrainConfig c;
  if (is_named_config(name_or_path)) {
    c.model = named_config(name_or_path);
    return c;
  }
  const nlohmann::json j = read_config_file(name_or_path);
  if (!j.is_object()) throw Error(name_or_path + ": config must be a JSON object");
  nlohmann::json model = nlohmann::json::object();
  const std::string& src = name_or_path;
  auto num = [&](const std::string& key, const nlohmann::json& v, double lo, double hi) {
    if (!v.is_number()) throw Error(src + ": \"" + key + "\" must be a number");
    const double x = v.get<double>();
    if (!(x >= lo && x <= hi))
      throw Error(src + ": \"" + key + "\" = " + v.dump() + " is out of range [" + std::to_string(lo) + ", " +
                  std::to_string(hi) + "]");
    return x;
  };
  auto integer = [&](const std::string& key, const nlohmann::json& v, int64_t lo, int64_t hi) {
    if (!v.is_number_integer()) throw Error(src + ": \"" + key + "\" must be an integer");
    return int64_t(num(key, v, double(lo), double(hi)));
  };
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    const auto& v = *it;
    if (std::find(std::begin(kModelKeys), std::end(kModelKeys), k) != std::end(kModelKeys))
      model[k] = v;
    else if (k == "lr")
      c.adamw.lr = float(num(k, v, 0, 1));
    else if (k == "beta1")
      c.adamw.beta1 = float(num(k, v, 0, 0.999999));
    else if (k == "beta2")
      c.adamw.beta2 = float(num(k, v, 0, 0.999999));
    else if (k == "eps") {  // AdamW divides by sqrt(v) + eps: 0 divides by zero on the first step
      c.adamw.eps = float(num(k, v, 0, 1));
      if (!(c.adamw.eps > 0)) throw Error(src + ": \"eps\" = " + v.dump() + " must be greater than 0");
    } else if (k == "weight_decay")
      c.adamw.weight_decay = float(num(k, v, 0, 10));
    else if (k == "min_lr_ratio")
      c.min_lr_ratio = float(num(k, v, 0, 1));
    else if (k == "warmup_steps")
      c.warmup_steps = integer(k, v, 0, int64_t(1) << 40);
    else if (k == "steps")
      c.steps = integer(k, v, 0, int64_t(1) << 40);
    else if (k == "grad_clip")
      c.grad_clip = float(num(k, v, 0, 1e6));
    else if (k == "accum_steps")
      c.accum_steps = int(integer(k, v, 1, 1 << 16));
    else if (k == "seed")
      c.seed = uint64_t(integer(k, v, 0, int64_t(1) << 62));
    else if (k == "val_fraction")
      c.val_fraction = num(k, v, 0, 0.5);
    else if (k == "val_every")
      c.val_every = integer(k, v, 0, int64_t(1) << 40);
    else if (k == "val_bytes")
      c.val_bytes = integer(k, v, 1, int64_t(1) << 40);
    else if (k == "checkpoint_every")
      c.checkpoint_every = integer(k, v, 0, int64_t(1) << 40);
    else if (k == "chunk")
      c.chunk = int(integer(k, v, 1, 1 << 20));
    else if (k == "carry_state") {
      if (!v.is_boolean()) throw Error(src + ": \"carry_state\" must be true or false");
      c.carry_state = v.get<bool>();
    } else if (k == "carry_bytes")
      c.carry_bytes = integer(k, v, 1, int64_t(1) << 40);
    else if (k == "media") {
      if (!v.is_string()) throw Error(src + ": \"media\" must be \"plain\" or \"residual\"");
      c.media = parse_media_form(v.get<std::string>(), src);
    } else
      throw Error(src + ": unknown key \"" + k +
                  "\" (model: P D_E L_G H_G D_L L_L H_L T B global config; "
                  "training: lr beta1 beta2 eps weight_decay min_lr_ratio warmup_steps steps grad_clip "
                  "accum_steps seed val_fraction val_every val_bytes checkpoint_every chunk media carry_state carry_bytes)");
  }
  if (model.empty()) throw Error(src + ": no model: give \"config\": \"tiny\"|\"small\"|\"base\" or all model keys");
  c.model = parse_model_config(model, src);
  return c;
}

std::string train_config_to_json(const TrainConfig& c) {
  nlohmann::ordered_json j = nlohmann::ordered_json::parse(config_to_json(c.model));
  j["lr"] = c.adamw.lr;
  j["beta1"] = c.adamw.beta1;
  j["beta2"] = c.adamw.beta2;
  j["eps"] = c.adamw.eps;
  j["weight_decay"] = c.adamw.weight_decay;
  j["min_lr_ratio"] = c.min_lr_ratio;
  j["warmup_steps"] = c.warmup_steps;
  j["steps"] = c.steps;
  j["grad_clip"] = c.grad_clip;
  j["accum_steps"] = c.accum_steps;
  j["seed"] = c.seed;
  j["val_fraction"] = c.val_fraction;
  j["val_every"] = c.val_every;
  j["val_bytes"] = c.val_bytes;
  j["checkpoint_every"] = c.checkpoint_every;
  j["chunk"] = c.chunk;
  j["media"] = media_form_name(c.media);
  j["carry_state"] = c.carry_state;
  j["carry_bytes"] = c.carry_bytes;
  return j.dump();
}

}  // namespace rb
