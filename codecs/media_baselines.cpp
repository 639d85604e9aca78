#include "codecs/media_baselines.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>

extern char** environ;

namespace rb {

namespace {

// Runs argv (looked up in PATH, no shell) with its output discarded; true when it exits 0.
bool run_tool(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  pid_t pid;
  const int rc = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return false;
  int status = 0;
  if (waitpid(pid, &status, 0) < 0) return false;
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

struct TempFiles {
  std::string dir;
  TempFiles() {
    dir = (std::filesystem::temp_directory_path() / ("retbyte-baseline-" + std::to_string(getpid()))).string();
    std::filesystem::create_directories(dir);
  }
  ~TempFiles() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  std::string path(const std::string& name) const { return dir + "/" + name; }
};

void add_if(std::vector<std::pair<std::string, size_t>>& out, const std::string& name, bool ok, const std::string& file) {
  std::error_code ec;
  if (ok && std::filesystem::exists(file, ec)) out.emplace_back(name, size_t(std::filesystem::file_size(file, ec)));
}

}  // namespace

std::vector<std::pair<std::string, size_t>> image_baselines(const Image& image) {
  std::vector<std::pair<std::string, size_t>> out;
  TempFiles t;
  const std::string in = t.path("in.png");
  write_png(in, image);
  add_if(out, "png (optipng -o5)", run_tool({"optipng", "-quiet", "-o5", "-out", t.path("opt.png"), in}), t.path("opt.png"));
  add_if(out, "webp-lossless (cwebp -z 9)", run_tool({"cwebp", "-quiet", "-lossless", "-z", "9", in, "-o", t.path("out.webp")}),
         t.path("out.webp"));
  add_if(out, "jpeg-xl (cjxl -d 0 -e 9)", run_tool({"cjxl", "--quiet", in, t.path("out.jxl"), "-d", "0", "-e", "9"}),
         t.path("out.jxl"));
  return out;
}

std::vector<std::pair<std::string, size_t>> audio_baselines(const Audio& audio) {
  std::vector<std::pair<std::string, size_t>> out;
  TempFiles t;
  const std::string in = t.path("in.wav");
  write_wav(in, audio);
  add_if(out, "flac -8", run_tool({"flac", "-8", "-s", "-f", "-o", t.path("out.flac"), in}), t.path("out.flac"));
  return out;
}

}  // namespace rb
