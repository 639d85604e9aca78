// Reading inputs and checking outputs the same way in every command (zstd's rules for files).
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "cli/cli.h"
#include "src/common/errors.h"

namespace rb::cli {

bool same_file(const std::string& a, const std::string& b) {
  struct stat sa, sb;
  return ::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

std::vector<uint8_t> read_stdin_bytes(uint64_t limit) {
  if (isatty(STDIN_FILENO)) throw Error("stdin is a terminal: pipe data in, or name a file");
  std::vector<uint8_t> bytes;
  uint8_t buf[1 << 16];
  for (;;) {
    const ssize_t r = ::read(STDIN_FILENO, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) throw Error(std::string("stdin: read failed (") + std::strerror(errno) + ")");
    if (r == 0) return bytes;
    if (bytes.size() + size_t(r) > limit)
      throw Error("stdin: more than the " + std::to_string(limit >> 20) +
                  " MiB that may be held in memory (half of this machine's)");
    bytes.insert(bytes.end(), buf, buf + r);
  }
}

void check_output_conflicts(const std::vector<std::string>& outputs, const std::vector<std::string>& inputs) {
  for (size_t i = 0; i < outputs.size(); i++) {
    const std::string& out = outputs[i];
    if (out.empty() || out == "-") continue;
    for (const std::string& in : inputs)
      if (!in.empty() && (out == in || same_file(out, in)))
        throw Error(out + ": is an input of this command; refusing to overwrite it");
    for (size_t j = 0; j < i; j++)
      if (outputs[j] == out || same_file(outputs[j], out))
        throw Error(out + ": two outputs of this command would be the same file");
  }
}

void check_output_free(const std::string& out, bool force, const std::string& force_flag) {
  struct stat st;
  if (out.empty() || out == "-" || ::stat(out.c_str(), &st) != 0) return;
  if (S_ISDIR(st.st_mode)) throw Error(out + ": is a folder; name a file to write");
  // A character device or FIFO (/dev/null, a pipe) is written into, never replaced: no -f needed.
  const bool stream = S_ISCHR(st.st_mode) || S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode);
  if (!force && !stream) throw Error(out + ": exists (use " + force_flag + " to overwrite)");
}

void check_outputs(const std::vector<std::string>& outputs, const std::vector<std::string>& inputs, bool force,
                   const std::string& force_flag) {
  check_output_conflicts(outputs, inputs);
  for (const std::string& out : outputs) check_output_free(out, force, force_flag);
}

}  // namespace rb::cli
