// Output files written so that no data is lost: a regular file is written under a temporary name
// in the same folder ("<path>.tmp.<pid>.<unique>"), synced, and only then given its name. Without
// Overwrite::Replace the last step never replaces a file, even one that another process created
// after our checks (renameat2 with RENAME_NOREPLACE, else link(2)): it fails with "exists".
// An existing device, FIFO or socket (-o /dev/null, a named pipe) is written into, never unlinked
// or replaced by a regular file, as zstd and xz do.
#pragma once
#include <cstddef>
#include <string>

namespace rb {

enum class Overwrite { Refuse, Replace };

// True when `path` exists and is neither a regular file nor a folder (a device, FIFO or socket).
bool is_special_file(const std::string& path);

class OutputFile {
 public:
  OutputFile(const std::string& path, Overwrite overwrite);  // throws rb::Error naming the path
  ~OutputFile();                                             // an uncommitted temporary is removed
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;
  void write(const void* data, size_t n);
  // Syncs and gives the file its name (or, for a special file, just finishes writing).
  void commit();
  const std::string& path() const { return path_; }

 private:
  void abandon();
  std::string path_, tmp_;
  int fd_ = -1;
  bool replace_ = false, special_ = false, committed_ = false;
};

// The whole of `bytes` through an OutputFile. Checkpoints replace their own files (Replace);
// user-named outputs pass Refuse unless -f was given.
void write_file_atomic(const std::string& path, const std::string& bytes, Overwrite overwrite = Overwrite::Replace);
// Temporaries "<path>.tmp.<pid>[.<unique>]" left by processes that died mid-write (kill -9, power loss) are
// removed; a live process's are left alone.
void remove_stale_temporaries(const std::string& path);

}  // namespace rb
