// Model configuration (doc/SPEC.md §1): the named configs, JSON parsing with strict key checks, and
// validation with messages that name the source.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace rb {

enum class GlobalKind { Retention, Attention };

// How images and audio are laid out in a model's streams (README "Data as bytes"): the pixels or
// samples themselves (doc/SPEC.md §2), or their prediction residuals (datasets/media_residuals.h). Not a
// model key: a training config's "media" key, recorded in the model file's __metadata__.
enum class MediaForm : uint8_t { Plain = 0, Residual = 1 };
const char* media_form_name(MediaForm f);  // "plain", "residual"
// "plain" or "residual"; throws rb::Error("<source>: ...") for anything else.
MediaForm parse_media_form(const std::string& name, const std::string& source);

struct ModelConfig {
  int P = 0, D_E = 0, L_G = 0, H_G = 0, D_L = 0, L_L = 0, H_L = 0, T = 0, B = 0;
  GlobalKind global = GlobalKind::Retention;
  // Retention decays: 0 = the RetNet paper's 1 - 2^(-5-h); otherwise the bytes the longest-lived
  // head remembers (its decay is 1 - P/longest_memory), the heads' horizons spaced geometrically
  // from RetNet's shortest (32 patches) up to it.
  int64_t longest_memory = 0;

  int D_G() const { return P * D_E; }
  int K() const { return T / P; }         // patches per training window
  int dk() const { return D_G() / H_G; }  // retention key width (and attention head width)
  int dv() const { return 2 * D_G() / H_G; }
  int hd_local() const { return D_L / H_L; }
  bool operator==(const ModelConfig&) const = default;
};

// "tiny", "small" or "base"; throws rb::Error for another name.
ModelConfig named_config(const std::string& name);
bool is_named_config(const std::string& name);

// Parses a model config object: either all keys, or "config": NAME plus overrides. Unknown keys,
// wrong types and impossible values throw rb::Error naming `source`.
ModelConfig parse_model_config(const nlohmann::json& j, const std::string& source);
// The JSON object of a config file; errors name the file.
nlohmann::json read_config_file(const std::string& path);
// A named config or the path of a JSON file.
ModelConfig load_model_config(const std::string& name_or_path);
// Throws rb::Error("<source>: ...") if the config cannot describe a model.
void validate_config(const ModelConfig& c, const std::string& source);

std::string config_to_json(const ModelConfig& c);  // compact JSON with every key (longest_memory when set)
// The retention decay of each global head, as the model uses it (doc/SPEC.md §1; longest_memory).
std::vector<float> retention_gammas(const ModelConfig& c);
const char* global_kind_name(GlobalKind g);

}  // namespace rb
