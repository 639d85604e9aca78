#include "src/model/config.h"

#include <fstream>
#include <set>
#include <sys/stat.h>
#include <nlohmann/json.hpp>
#include <sstream>

#include "kernels/backend.h"
#include "src/common/dmath.h"
#include "src/common/errors.h"

namespace rb {

namespace {
const char* const kIntKeys[] = {"P", "D_E", "L_G", "H_G", "D_L", "L_L", "H_L", "T", "B"};

int* int_field(ModelConfig& c, const std::string& key) {
  int* fields[] = {&c.P, &c.D_E, &c.L_G, &c.H_G, &c.D_L, &c.L_L, &c.H_L, &c.T, &c.B};
  for (size_t i = 0; i < std::size(kIntKeys); i++)
    if (key == kIntKeys[i]) return fields[i];
  return nullptr;
}
}  // namespace

bool is_named_config(const std::string& name) { return name == "tiny" || name == "small" || name == "base"; }

ModelConfig named_config(const std::string& name) {
  ModelConfig c;
  if (name == "tiny")
    c = {4, 16, 2, 2, 64, 2, 2, 1024, 2};
  else if (name == "small")
    c = {8, 32, 4, 4, 128, 2, 4, 4096, 4};
  else if (name == "base")
    c = {8, 64, 8, 8, 256, 4, 4, 8192, 4};
  else
    throw Error("unknown config name '" + name + "' (expected tiny, small, base or a .json file)");
  return c;
}

const char* media_form_name(MediaForm f) { return f == MediaForm::Residual ? "residual" : "plain"; }

MediaForm parse_media_form(const std::string& name, const std::string& source) {
  if (name == "plain") return MediaForm::Plain;
  if (name == "residual") return MediaForm::Residual;
  throw Error(source + ": \"media\" must be \"plain\" or \"residual\", not \"" + name + "\"");
}

const char* global_kind_name(GlobalKind g) { return g == GlobalKind::Retention ? "retention" : "attention"; }

void validate_config(const ModelConfig& c, const std::string& source) {
  auto fail = [&](const std::string& what) { throw Error(source + ": invalid config: " + what); };
  for (const char* key : kIntKeys) {
    const int v = *int_field(const_cast<ModelConfig&>(c), key);
    if (v <= 0) fail(std::string(key) + " = " + std::to_string(v) + " must be positive");
  }
  if (c.P > 4096) fail("P = " + std::to_string(c.P) + " is larger than 4096");
  if (int64_t(c.P) * c.D_E > 65536) fail("D_G = P*D_E is larger than 65536");
  if (c.D_G() % c.H_G != 0)
    fail("D_G = P*D_E = " + std::to_string(c.D_G()) + " is not divisible by H_G = " + std::to_string(c.H_G));
  if (c.dk() % 2 != 0) fail("key width D_G/H_G = " + std::to_string(c.dk()) + " must be even for rotary positions");
  if (c.H_G > 24) fail("H_G = " + std::to_string(c.H_G) + " > 24 (decay 1-2^(-5-h) would round to 1)");
  if (c.D_L % c.H_L != 0) fail("D_L = " + std::to_string(c.D_L) + " is not divisible by H_L = " + std::to_string(c.H_L));
  if (c.T % c.P != 0) fail("T = " + std::to_string(c.T) + " is not a multiple of P = " + std::to_string(c.P));
  // The longest head must outlive RetNet's shortest (32 patches) and its decay must stay below 1
  // in float (1 - 2^-24 is the largest float under 1).
  if (c.longest_memory != 0 && (c.longest_memory < int64_t(64) * c.P || c.longest_memory > (int64_t(1) << 23) * c.P))
    fail("longest_memory = " + std::to_string(c.longest_memory) + " must be 0 or between 64 P and 2^23 P bytes");
}

std::vector<float> retention_gammas(const ModelConfig& c) {
  std::vector<float> g;
  // Horizon of head h in patches: 2^e, e from 5 to log2(longest_memory / P) in equal steps;
  // decay 1 - 2^-e, computed in double with the project's own exp/log (the same bits everywhere).
  const double ln2 = dmath::log(2.0), last = c.longest_memory ? dmath::log(double(c.longest_memory) / c.P) / ln2 : 0.0;
  for (int h = 0; h < c.H_G; h++) {
    if (c.longest_memory == 0) {
      g.push_back(retention_gamma(h));
      continue;
    }
    const double e = c.H_G == 1 ? last : 5.0 + (last - 5.0) * h / (c.H_G - 1);
    g.push_back(float(1.0 - dmath::exp(-e * ln2)));
  }
  return g;
}

ModelConfig parse_model_config(const nlohmann::json& j, const std::string& source) {
  if (!j.is_object()) throw Error(source + ": config must be a JSON object");
  ModelConfig c;
  bool have_base = false;
  if (j.contains("config")) {
    if (!j["config"].is_string()) throw Error(source + ": \"config\" must be a name (tiny, small, base)");
    const std::string name = j["config"];
    if (!is_named_config(name)) throw Error(source + ": unknown config name '" + name + "' (expected tiny, small or base)");
    c = named_config(name);
    have_base = true;
  }
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& key = it.key();
    if (key == "config") continue;
    if (key == "longest_memory") {
      if (!it->is_number_integer() || it->get<int64_t>() < 0 || it->get<int64_t>() > (int64_t(1) << 40))
        throw Error(source + ": \"longest_memory\" = " + it->dump() + " must be an integer from 0 to 2^40 (bytes)");
      c.longest_memory = it->get<int64_t>();
      continue;
    }
    if (key == "global") {
      if (!it->is_string() || (*it != "retention" && *it != "attention"))
        throw Error(source + ": \"global\" must be \"retention\" or \"attention\"");
      c.global = *it == "retention" ? GlobalKind::Retention : GlobalKind::Attention;
      continue;
    }
    int* f = int_field(c, key);
    if (!f)
      throw Error(source + ": unknown config key \"" + key +
                  "\" (known: P D_E L_G H_G D_L L_L H_L T B global longest_memory config)");
    if (!it->is_number_integer()) throw Error(source + ": \"" + key + "\" must be an integer");
    // Read unsigned JSON numbers as unsigned: 18446744073709551615 is not -1.
    const bool in_range = it->is_number_unsigned() ? it->get<uint64_t>() <= (uint64_t(1) << 30)
                                                   : it->get<int64_t>() > 0 && it->get<int64_t>() <= (int64_t(1) << 30);
    if (!in_range || it->get<int64_t>() <= 0)
      throw Error(source + ": \"" + key + "\" = " + it->dump() + " is out of range (1 to " + std::to_string(1 << 30) + ")");
    *f = int(it->get<int64_t>());
  }
  if (!have_base)
    for (const char* key : kIntKeys)
      if (!j.contains(key)) throw Error(source + ": config is missing key \"" + std::string(key) + "\"");
  validate_config(c, source);
  return c;
}

nlohmann::json read_config_file(const std::string& path) {
  // Only a regular file of sane size: a FIFO would block forever and /dev/zero never ends.
  constexpr uint64_t kMaxConfigBytes = 1 << 20;
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) throw Error(path + ": cannot open config (not tiny/small/base and not a readable file)");
  if (!S_ISREG(st.st_mode)) throw Error(path + ": a config must be a regular file");
  if (uint64_t(st.st_size) > kMaxConfigBytes)
    throw Error(path + ": " + std::to_string(st.st_size) + " bytes is too large for a config");
  std::ifstream in(path);
  if (!in) throw Error(path + ": cannot open config (not tiny/small/base and not a readable file)");
  std::string text(static_cast<size_t>(st.st_size) + 1, '\0');
  in.read(text.data(), long(text.size()));
  text.resize(size_t(in.gcount()));
  if (text.size() > uint64_t(st.st_size)) throw Error(path + ": config changed while being read");
  // A key given twice in one object is an error (JSON parsers silently keep one of them).
  std::vector<std::set<std::string>> keys;  // per open object
  std::string duplicate;
  auto track = [&](int, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    if (event == nlohmann::json::parse_event_t::object_start)
      keys.emplace_back();
    else if (event == nlohmann::json::parse_event_t::object_end && !keys.empty())
      keys.pop_back();
    else if (event == nlohmann::json::parse_event_t::key && !keys.empty() &&
             !keys.back().insert(parsed.get<std::string>()).second && duplicate.empty())
      duplicate = parsed.get<std::string>();
    return true;
  };
  try {
    nlohmann::json j = nlohmann::json::parse(text, track);
    if (!duplicate.empty()) throw Error(path + ": key \"" + duplicate + "\" appears twice");
    return j;
  } catch (const nlohmann::json::exception& e) {  // parse errors, and numbers like 1e400 (out of range)
    throw Error(path + ": not valid JSON (" + std::string(e.what()) + ")");
  }
}

ModelConfig load_model_config(const std::string& name_or_path) {
  if (is_named_config(name_or_path)) return named_config(name_or_path);
  return parse_model_config(read_config_file(name_or_path), name_or_path);
}

std::string config_to_json(const ModelConfig& c) {
  nlohmann::ordered_json j;
  ModelConfig copy = c;
  for (const char* key : kIntKeys) j[key] = *int_field(copy, key);
  j["global"] = global_kind_name(c.global);
  if (c.longest_memory != 0) j["longest_memory"] = c.longest_memory;  // older files' JSON stays as it was
  return j.dump();
}

}  // namespace rb
