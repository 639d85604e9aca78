#include "src/common/output_file.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "src/common/errors.h"

namespace rb {

namespace {
std::string why() { return std::strerror(errno); }
}  // namespace

bool is_special_file(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode);
}

void remove_stale_temporaries(const std::string& path) {
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash + 1);
  const std::string prefix = (slash == std::string::npos ? path : path.substr(slash + 1)) + ".tmp.";
  DIR* d = ::opendir(dir.c_str());
  if (!d) return;
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string rest = name.substr(prefix.size());
    const std::string digits = rest.substr(0, rest.find('.'));  // "<pid>.<unique>"
    if (digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos) continue;
    const pid_t pid = pid_t(std::stol(digits));
    if (pid > 0 && pid != getpid() && ::kill(pid, 0) != 0 && errno == ESRCH)
      ::unlink((slash == std::string::npos ? name : dir + name).c_str());
  }
  ::closedir(d);
}

OutputFile::OutputFile(const std::string& path, Overwrite overwrite)
    : path_(path), replace_(overwrite == Overwrite::Replace), special_(is_special_file(path)) {
  if (special_) {  // write into it; O_TRUNC means nothing to a device or a pipe
    fd_ = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd_ < 0) throw Error(path + ": cannot open for writing (" + why() + ")");
    return;
  }
  remove_stale_temporaries(path);
  // Unique even between threads of one process writing the same output.
  std::string name = path + ".tmp." + std::to_string(getpid()) + ".XXXXXX";
  fd_ = ::mkostemp(name.data(), O_CLOEXEC);
  if (fd_ < 0) throw Error(path + ": cannot create " + name + " (" + why() + ")");
  tmp_ = name;
  (void)::fchmod(fd_, 0644);  // mkostemp makes it 0600
}

OutputFile::~OutputFile() {
  if (!committed_) abandon();
}

void OutputFile::abandon() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  if (!tmp_.empty()) ::unlink(tmp_.c_str());
  tmp_.clear();
}

void OutputFile::write(const void* data, size_t n) {
  if (fd_ < 0) throw Error(path_ + ": write after the file was finished");
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd_, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      const std::string reason = w < 0 ? why() : "nothing written";
      abandon();
      throw Error(path_ + ": write failed (" + reason + ")" + (special_ ? "" : "; nothing was written under this name"));
    }
    p += w, n -= size_t(w);
  }
}

void OutputFile::commit() {
  if (fd_ < 0) throw Error(path_ + ": commit after the file was finished");
  if (special_) {
    const int fd = fd_;
    fd_ = -1;
    committed_ = true;
    if (::close(fd) != 0) throw Error(path_ + ": write failed (" + why() + ")");
    return;
  }
  if (::fsync(fd_) != 0 || ::close(fd_) != 0) {
    const std::string reason = why();
    fd_ = -1;
    abandon();
    throw Error(path_ + ": write failed (" + reason + "); nothing was written under this name");
  }
  fd_ = -1;
  if (replace_) {
    if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
      const std::string reason = why();
      abandon();
      throw Error(path_ + ": cannot rename temporary file into place (" + reason + ")");
    }
  } else {
    // Never replace: a file that appeared after the command's checks (another process writing
    // the same output) is kept and this command fails.
    int r = ::renameat2(AT_FDCWD, tmp_.c_str(), AT_FDCWD, path_.c_str(), RENAME_NOREPLACE);
    if (r != 0 && (errno == EINVAL || errno == ENOSYS || errno == ENOTSUP)) {  // a file system without it
      r = ::link(tmp_.c_str(), path_.c_str());
      if (r == 0) ::unlink(tmp_.c_str());
    }
    if (r != 0) {
      const int err = errno;
      abandon();
      if (err == EEXIST) throw Error(path_ + ": exists (created while this command ran; use -f to overwrite)");
      throw Error(path_ + ": cannot move temporary file into place (" + std::strerror(err) + ")");
    }
  }
  tmp_.clear();
  committed_ = true;
}

void write_file_atomic(const std::string& path, const std::string& bytes, Overwrite overwrite) {
  OutputFile out(path, overwrite);
  out.write(bytes.data(), bytes.size());
  out.commit();
}

}  // namespace rb
