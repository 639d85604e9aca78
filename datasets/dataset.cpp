#include "datasets/dataset.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "src/common/errors.h"
#include "src/model/model.h"

namespace rb {

namespace fs = std::filesystem;

std::vector<uint8_t> read_file_bytes(const std::string& path, uint64_t limit) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused just below).
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) throw Error(path + ": cannot open (" + std::strerror(errno) + ")");
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) throw Error(path + ": not a regular file");
  const uint64_t size = uint64_t(st.st_size);
  if (size > limit)
    throw Error(path + ": " + std::to_string(size) + " bytes is more than the " + std::to_string(limit >> 20) +
                " MiB that may be held in memory (half of this machine's)");
  std::vector<uint8_t> bytes(static_cast<size_t>(size));
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t r = ::read(fd, bytes.data() + done, bytes.size() - done);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) throw Error(path + ": read failed (" + std::strerror(errno) + ")");
    if (r == 0)
      throw Error(path + ": shrank while being read (" + std::to_string(done) + " of " + std::to_string(size) + " bytes)");
    done += size_t(r);
  }
  return bytes;
}

uint64_t max_held_bytes() {
  const double half = physical_memory_bytes() / 2;
  return half > 0 ? uint64_t(half) : uint64_t(4) << 30;
}

std::vector<FoundFile> collect_files(const std::vector<std::string>& paths) {
  if (paths.empty()) throw Error("no data given (--data PATH...)");
  std::vector<FoundFile> out;
  for (const std::string& p : paths) {
    std::error_code ec;
    const auto status = fs::status(p, ec);
    if (ec || !fs::exists(status)) throw Error(p + ": no such file or folder");
    if (fs::is_regular_file(status)) {
      out.push_back({p, fs::path(p).filename().string(), true});
      continue;
    }
    if (!fs::is_directory(status)) throw Error(p + ": not a file or folder");
    std::vector<FoundFile> found;
    fs::recursive_directory_iterator it(p, fs::directory_options::skip_permission_denied, ec), end;
    if (ec) throw Error(p + ": cannot list folder (" + ec.message() + ")");
    for (; it != end; it.increment(ec)) {
      if (ec) throw Error(p + ": cannot list folder (" + ec.message() + ")");
      if (it->is_regular_file(ec)) found.push_back({it->path().string(), it->path().lexically_relative(p).string(), false});
    }
    if (found.empty()) throw Error(p + ": folder has no files");
    std::sort(found.begin(), found.end(), [](const FoundFile& a, const FoundFile& b) { return a.name < b.name; });
    out.insert(out.end(), found.begin(), found.end());
  }
  for (const FoundFile& f : out)
    if (::access(f.path.c_str(), R_OK) != 0) throw Error(f.path + ": cannot read (" + std::strerror(errno) + ")");
  return out;
}

namespace {
uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}
}  // namespace

FileStream::FileStream(const std::string& path, int P, bool raw, std::string* notice, MediaForm form) {
  // Text is read whole (not memory-mapped): a file truncated while a run uses it can then never
  // raise SIGBUS; the run keeps the bytes it read.
  std::vector<uint8_t> file = read_file_bytes(path, max_held_bytes());
  modality_ = raw ? Modality::Text : detect_modality(file.data(), size_t(std::min<uint64_t>(file.size(), 64)));
  if (modality_ == Modality::Text) {
    header_ = make_header(Modality::Text, P);
    decoded_ = std::move(file);
    return;
  }
  file.clear();
  file.shrink_to_fit();  // decoded below from the file itself
  std::vector<uint8_t> stream = modality_ == Modality::Image ? image_stream(read_image(path, notice), P, form)
                                                             : audio_stream(read_audio(path, notice), P, form);
  const size_t hs = media_header_size(P);
  header_.assign(stream.begin(), stream.begin() + long(hs));
  decoded_.assign(stream.begin() + long(hs), stream.end());
}

ByteDataset::ByteDataset(const std::vector<std::string>& paths, int P, double val_fraction, MediaForm form) : P_(P) {
  if (val_fraction < 0 || val_fraction >= 1) throw Error("val_fraction must be in [0, 1)");
  uint64_t in_memory = 0;
  const uint64_t limit = max_held_bytes();
  for (const FoundFile& f : collect_files(paths)) {
    std::string notice;
    std::unique_ptr<FileStream> fsm;
    try {
      fsm = std::make_unique<FileStream>(f.path, P, false, &notice, form);
    } catch (const Error& e) {
      if (f.named) throw;  // a file the user named must work; one found in a folder is skipped
      warnings_.push_back(std::string(e.what()) + " (skipped)");
      continue;
    }
    if (!notice.empty()) warnings_.push_back(notice);
    if ((in_memory += fsm->body_size()) > limit)
      throw Error(f.path + ": the data (text, decoded images and audio) would exceed " + std::to_string(limit >> 20) +
                  " MiB in memory, half of this machine's (train on fewer files)");
    files_.push_back(std::move(fsm));
    names_.push_back(f.name);
  }
  if (files_.empty()) throw Error(paths.front() + (paths.size() > 1 ? " ..." : "") + ": no usable files");
  uint64_t total = 0;
  for (const auto& f : files_) total += f->body_size();
  if (total == 0) throw Error(paths.front() + (paths.size() > 1 ? " ..." : "") + ": all files are empty");

  // Validation by file: files in the order of a hash of their path (stable, independent of how
  // they were listed), taken while they fit the budget. Falls back to the tail of every file.
  const uint64_t budget = uint64_t(double(total) * val_fraction);
  std::vector<int> order(files_.size());
  for (size_t i = 0; i < order.size(); i++) order[i] = int(i);
  std::sort(order.begin(), order.end(), [&](int a, int b) { return fnv1a(names_[a]) < fnv1a(names_[b]); });
  std::vector<bool> is_val(files_.size(), false);
  uint64_t held = 0;
  if (files_.size() >= 2 && budget > 0)
    for (int i : order)
      if (files_[i]->body_size() > 0 && held + files_[i]->body_size() <= budget + budget / 2) {
        is_val[i] = true;
        held += files_[i]->body_size();
        if (held >= budget) break;
      }
  const bool by_file = held > 0 && held < total;
  split_kind_ = budget == 0 ? "none" : by_file ? "by file" : "by tail of each file";
  for (size_t i = 0; i < files_.size(); i++) {
    const uint64_t size = files_[i]->body_size();
    if (size == 0) continue;
    if (by_file || budget == 0) {
      (is_val[i] && by_file ? val_ : train_).push_back({int(i), 0, size});
    } else {
      const uint64_t cut = size - uint64_t(double(size) * val_fraction);
      if (cut > 0) train_.push_back({int(i), 0, cut});
      if (cut < size) val_.push_back({int(i), cut, size});
    }
  }
  if (train_.empty()) throw Error(paths.front() + ": no training bytes left after the validation split");
  std::string id = split_kind_ + " " + std::to_string(val_fraction) + " " + std::to_string(P);
  for (size_t i = 0; i < files_.size(); i++)  // the modality too: the same file read another way is other data
    id += "\n" + names_[i] + " " + std::to_string(files_[i]->body_size()) + " " + modality_name(files_[i]->modality());
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)fnv1a(id));
  fingerprint_ = buf;
  for (const StreamSpan& s : train_) {
    packed_start_.push_back(packed_size_);
    const uint64_t len = uint64_t(files_[s.file]->header().size()) + (s.end - s.begin);
    packed_size_ += (len + P_ - 1) / P_ * P_;
  }
}

uint64_t ByteDataset::val_file_bytes() const {
  uint64_t n = 0;
  for (const StreamSpan& s : val_) n += s.end - s.begin;
  return n;
}

void ByteDataset::read_window(uint64_t start_patch, int T, uint8_t* out) const {
  uint64_t pos = (start_patch * P_) % packed_size_;
  int done = 0;
  while (done < T) {
    // The training stream holding `pos`, and how much of it to copy.
    const size_t s = train_stream_at(pos / uint64_t(P_));
    const StreamSpan& span = train_[s];
    const uint64_t stream_end = packed_start_[s] + train_stream_bytes(s);
    const uint64_t in_stream = pos - packed_start_[s];
    const uint64_t n = std::min<uint64_t>(uint64_t(T - done), stream_end - pos);
    for (uint64_t i = 0; i < n; i++) {
      const uint64_t at = in_stream + i;
      const std::vector<uint8_t>& header = files_[span.file]->header();
      const uint64_t hs = header.size();
      uint8_t b = 0;  // padding after the file's bytes
      if (at < hs)
        b = header[at];
      else if (at - hs < span.end - span.begin)
        b = files_[span.file]->body()[span.begin + at - hs];
      out[done + i] = b;
    }
    done += int(n);
    pos = (pos + n) % packed_size_;
  }
}

size_t ByteDataset::train_stream_at(uint64_t patch) const {
  const uint64_t pos = (patch * P_) % packed_size_;
  return size_t(std::upper_bound(packed_start_.begin(), packed_start_.end(), pos) - packed_start_.begin()) - 1;
}

uint64_t ByteDataset::train_stream_bytes(size_t s) const {
  if (s >= packed_start_.size()) throw Error("training stream " + std::to_string(s) + " does not exist");
  return (s + 1 < packed_start_.size() ? packed_start_[s + 1] : packed_size_) - packed_start_[s];
}

int ByteDataset::read_stream_window(size_t s, uint64_t offset, int T, uint8_t* out) const {
  const uint64_t len = train_stream_bytes(s);
  if (offset % uint64_t(P_) != 0 || offset >= len) throw Error("read_stream_window: offset outside the stream");
  const int n = int(std::min<uint64_t>(uint64_t(T), len - offset));
  read_window((packed_start_[s] + offset) / uint64_t(P_), n, out);
  std::fill(out + n, out + T, uint8_t(0));
  return n;
}

void ByteDataset::sample_window(Rng& rng, int T, uint8_t* out) const { read_window(rng.below(train_patches()), T, out); }

}  // namespace rb
