// A model's weights in and out: random initialisation, safetensors files, the fingerprint, and the
// memory checks made before anything is allocated.
#include "src/model/model.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "src/common/errors.h"
#include "src/model/safetensors.h"

namespace rb {

const char* weight_format_name(WeightFormat f) {
  return f == WeightFormat::BF16 ? "bf16" : f == WeightFormat::I8 ? "int8" : "fp32";
}

WeightFormat parse_weight_format(const std::string& s, const std::string& what) {
  if (s == "fp32" || s == "f32") return WeightFormat::F32;
  if (s == "bf16") return WeightFormat::BF16;
  if (s == "int8") return WeightFormat::I8;
  throw Error(what + ": weights '" + s + "' is not fp32, bf16 or int8");
}

void Model::init_random(uint64_t seed) {
  std::vector<float> host(num_params_);
  init_parameters(table_, cfg_, host.data(), seed);
  transposed_.clear();
  be_.upload(params_, host.data(), num_params_);
}

void Model::load_tensors(const SafetensorsReader& file) {
  std::vector<float> host(num_params_);
  for (const TensorEntry& e : table_) {
    file.read_f32(e.name, e.shape, host.data() + e.offset);
    // NaN or Inf weights would make every probability NaN (eval printing nan, generate writing
    // 0xff bytes): refuse them here, naming the tensor.
    const float* w = host.data() + e.offset;
    for (size_t i = 0; i < e.count; i++)
      if (!std::isfinite(w[i]))
        throw Error(file.path() + ": tensor '" + e.name + "' holds a non-finite value (" + std::to_string(w[i]) + " at index " +
                    std::to_string(i) + ")");
  }
  transposed_.clear();
  be_.upload(params_, host.data(), num_params_);
}

void Model::save(const std::string& path, const std::map<std::string, std::string>& extra) const {
  std::vector<float> host(num_params_);
  be_.download(host.data(), params_, num_params_);
  std::vector<StTensorOut> out;
  // BF16 weights are stored as BF16 tensors: half the file, the same values.
  std::vector<uint16_t> half;
  if (format_ == WeightFormat::BF16 || (format_ == WeightFormat::I8 && values_ == WeightFormat::BF16)) {
    half.resize(num_params_);
    for (size_t i = 0; i < num_params_; i++) half[i] = bf16_round(host[i]);
  }
  for (const TensorEntry& e : table_)
    out.push_back(
        {e.name, half.empty() ? "F32" : "BF16", e.shape,
         half.empty() ? static_cast<const void*>(host.data() + e.offset) : static_cast<const void*>(half.data() + e.offset)});
  std::map<std::string, std::string> meta = extra;
  meta["config"] = config_to_json(cfg_);
  meta["media"] = media_form_name(media_form);
  write_safetensors(path, out, meta);
}

std::unique_ptr<Model> Model::load(const std::string& path, Backend& backend) {
  SafetensorsReader file(path);
  auto it = file.metadata().find("config");
  if (it == file.metadata().end()) throw Error(path + ": no \"config\" in __metadata__ (not a retbyte model file?)");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(it->second);
  } catch (const nlohmann::json::parse_error&) {
    throw Error(path + ": __metadata__ config is not valid JSON");
  }
  const ModelConfig cfg = parse_model_config(j, path);
  // The config must match the file before anything is allocated: a 1 MB file whose metadata claims
  // a million layers is refused here, not after allocating gigabytes.
  if (uint64_t(cfg.L_G) + uint64_t(cfg.L_L) > file.tensors().size())
    throw Error(path + ": its config has " + std::to_string(cfg.L_G) + " + " + std::to_string(cfg.L_L) +
                " layers, but the file holds only " + std::to_string(file.tensors().size()) + " tensors");
  for (const TensorEntry& e : parameter_table(cfg)) {
    if (!file.has(e.name)) throw Error(path + ": missing tensor '" + e.name + "' that its config needs");
    if (file.info(e.name).shape != e.shape)
      throw Error(path + ": tensor '" + e.name + "' does not have the shape its config needs");
  }
  check_activation_memory(cfg, 1, cfg.T, path);  // eval and the codec run windows of T
  auto model = std::make_unique<Model>(cfg, backend);
  model->load_tensors(file);
  // A file of BF16 tensors holds a bf16 model: its weights are bf16 values already.
  if (file.is_bf16(parameter_table(cfg).front().name)) model->format_ = WeightFormat::BF16;
  const auto media = file.metadata().find("media");  // absent in files from before the residual form
  if (media != file.metadata().end()) model->media_form = parse_media_form(media->second, path);
  return model;
}

std::string model_fingerprint(const Model& model) {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&](const uint8_t* p, size_t n) {
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
  };
  const std::string cfg = config_to_json(model.config());
  mix(reinterpret_cast<const uint8_t*>(cfg.data()), cfg.size());
  std::vector<float> host(model.num_params());
  const_cast<Model&>(model).backend().download(host.data(), const_cast<Model&>(model).params(), host.size());
  mix(reinterpret_cast<const uint8_t*>(host.data()), host.size() * sizeof(float));
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)h);
  return buf;
}

double activation_bytes(const ModelConfig& c, int B, int T) {
  // Mirrors Model::ensure_acts (retention chunk 64; the attention baseline's K x K scores).
  const double K = double(T) / c.P, N = double(B) * K, M = double(B) * T, DG = c.D_G(), DL = c.D_L;
  double f = N * DG * (c.L_G * 18.0 + 2) + N * c.L_G * (c.H_G + 4);
  f += c.global == GlobalKind::Retention ? c.L_G * double(B) * c.H_G * std::ceil(K / 64) * c.dk() * c.dv()
                                         : c.L_G * double(B) * c.H_G * K * K;
  f += M * DL * (c.L_L * 16.0 + 2) + M * c.L_L * (double(c.H_L) * c.P + 4) + M * 258;
  return 4.0 * f + 12.0 * M;  // floats, and three int32 indices per byte
}

void check_activation_memory(const ModelConfig& c, int B, int T, const std::string& what) {
  const double need = activation_bytes(c, B, T), have = physical_memory_bytes();
  if (have > 0 && need > have)
    throw Error(what + ": its config needs about " + std::to_string(int64_t(need / double(1 << 20))) +
                " MiB of activations for " +
                (B == 1 ? "one window of T = " + std::to_string(T)
                        : "a batch of B = " + std::to_string(B) + " x T = " + std::to_string(T)) +
                " bytes; this machine has " + std::to_string(int64_t(have / double(1 << 20))) + " MiB");
}

double physical_memory_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? double(pages) * double(page) : 0.0;
}

}  // namespace rb
