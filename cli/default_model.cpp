// Which model a command uses when -m is not given: $RETBYTE_MODEL, then the model installed
// beside the binary (cmake --install puts it in PREFIX/share/retbyte), then the repository's.
#include <cstdlib>
#include <filesystem>
#include <string>

#include "cli/cli.h"
#include "src/common/errors.h"

namespace rb::cli {

namespace fs = std::filesystem;

const char* const kModelHelp =
    "  -m MODEL: without it, $RETBYTE_MODEL, else retbyte-default.safetensors installed in PREFIX/share/retbyte\n"
    "     beside the binary (cmake --install), else the one in the source tree's models/ folder\n";

namespace {
const char* const kModelName = "retbyte-default.safetensors";

std::string executable_dir() {
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string() : exe.parent_path().string();
}

// The installed model's path, then the source tree's.
std::vector<std::string> default_model_candidates() {
  std::vector<std::string> places;
  const std::string dir = executable_dir();
  if (!dir.empty()) places.push_back(dir + "/../share/retbyte/" + kModelName);
#ifdef RETBYTE_REPO_MODELS
  places.push_back(std::string(RETBYTE_REPO_MODELS) + "/" + kModelName);
#endif
  return places;
}
}  // namespace

std::string model_or_default(const std::string& given) {
  if (!given.empty()) return given;
  if (const char* env = std::getenv("RETBYTE_MODEL"); env && *env) {
    if (!fs::exists(env)) throw Error(std::string(env) + ": no such model file (from $RETBYTE_MODEL)");
    return env;
  }
  std::string looked;
  for (const std::string& p : default_model_candidates()) {
    std::error_code ec;
    if (fs::is_regular_file(p, ec)) return fs::weakly_canonical(p, ec).string();
    looked += (looked.empty() ? "" : ", ") + p;
  }
  throw Error("no model given and no default model found (-m MODEL, $RETBYTE_MODEL, or " + looked + ")");
}

std::string earlier_default_model(const std::string& default_path, const std::string& fingerprint) {
  // The fingerprint comes from an archive: only 16 hex digits may become part of a path.
  if (fingerprint.size() != 16 || fingerprint.find_first_not_of("0123456789abcdef") != std::string::npos) return "";
  const fs::path p = fs::path(default_path).parent_path() / ("retbyte-" + fingerprint + ".safetensors");
  std::error_code ec;
  return fs::is_regular_file(p, ec) ? p.string() : std::string();
}

}  // namespace rb::cli
