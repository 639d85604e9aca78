#include "trainer/carried_rows.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "src/common/errors.h"
#include "trainer/communicator.h"
#include "trainer/data_parallel.h"

namespace rb {

CarriedRows::CarriedRows(const ByteDataset& data, Model& model, int micro_batches, int64_t carry_bytes)
    : data_(data),
      B_(model.config().B),
      T_(model.config().T),
      micros_(micro_batches),
      walk_windows_(std::max<int64_t>(1, carry_bytes / model.config().T)) {
  if (model.config().global != GlobalKind::Retention)
    throw Error("\"carry_state\": true needs the retention global (the attention baseline keeps no state)");
  cursors_.resize(size_t(micros_) * B_);
  lengths_.assign(cursors_.size(), T_);
  for (int m = 0; m < micros_; m++) streams_.push_back(model.new_stream(B_));
}

void CarriedRows::next_windows(Rng& rng, uint8_t* batch) {
  for (size_t w = 0; w < cursors_.size(); w++) {
    Cursor& c = cursors_[w];
    c.reset = c.stream < 0;
    if (c.reset) {
      const uint64_t patch = rng.below(data_.train_patches());
      const size_t s = data_.train_stream_at(patch);
      const int64_t budget = 1 + int64_t(rng.below(uint64_t(2 * walk_windows_ - 1)));
      c = Cursor{int64_t(s), patch * uint64_t(data_.patch_size()) - data_.train_stream_start(s), budget, true, {-1, 0}};
    }
    const uint64_t len = data_.train_stream_bytes(size_t(c.stream));
    lengths_[w] = data_.read_stream_window(size_t(c.stream), c.offset, T_, batch + w * size_t(T_));
    c.last = {c.stream, c.offset};
    c.offset += uint64_t(T_);
    if (c.offset >= len || --c.remaining == 0) c.stream = -1;  // the next step starts elsewhere
  }
}

std::vector<CarriedRows::Window> CarriedRows::last_windows() const {
  std::vector<Window> v;
  for (const Cursor& c : cursors_) v.push_back(c.last);
  return v;
}

GlobalStream& CarriedRows::stream(int micro) {
  for (int b = 0; b < B_; b++)
    if (cursors_[size_t(micro) * B_ + b].reset) streams_[size_t(micro)]->reset_row(b);
  return *streams_[size_t(micro)];
}

namespace {
// One micro-batch's stream as bytes: states, position, last patches and fresh flags.
struct StreamBytes {
  std::vector<float> states;
  int64_t patches = 0;
  std::vector<int32_t> last_patch;
  std::vector<uint8_t> fresh;
};
StreamBytes take(const GlobalStream& s) { return {s.export_states(), s.patches(), s.last_patch(), s.fresh_rows()}; }
void move_between(Communicator& comm, GlobalStream& s, int root) {
  StreamBytes b = take(s);
  comm.broadcast(b.states.data(), b.states.size() * sizeof(float), root);
  comm.broadcast(&b.patches, sizeof b.patches, root);
  comm.broadcast(b.last_patch.data(), b.last_patch.size() * sizeof(int32_t), root);
  comm.broadcast(b.fresh.data(), b.fresh.size(), root);
  if (comm.rank() != root) s.import_rows(b.states, b.patches, b.last_patch, b.fresh);
}
}  // namespace

void CarriedRows::gather(Communicator& comm) {
  if (comm.size() == 1) return;
  for (int r = 0; r < comm.size(); r++) {
    const MicroRange mine = micro_batches_of(r, comm.size(), micros_);
    for (int m = mine.first; m < mine.end; m++) move_between(comm, *streams_[size_t(m)], r);
  }
}

void CarriedRows::broadcast(Communicator& comm) {
  if (comm.size() == 1) return;
  for (auto& s : streams_) move_between(comm, *s, 0);
  std::vector<int64_t> flat;
  for (const Cursor& c : cursors_) flat.insert(flat.end(), {c.stream, int64_t(c.offset), c.remaining, int64_t(c.reset)});
  comm.broadcast(flat.data(), flat.size() * sizeof(int64_t), 0);
  for (size_t w = 0; w < cursors_.size(); w++)
    cursors_[w] = Cursor{flat[4 * w], uint64_t(flat[4 * w + 1]), flat[4 * w + 2], flat[4 * w + 3] != 0, {-1, 0}};
}

void CarriedRows::save(std::vector<StTensorOut>& tensors, std::map<std::string, std::string>& meta,
                       std::vector<float>& keep) const {
  nlohmann::json j = {{"patches", nlohmann::json::array()},
                      {"cursors", nlohmann::json::array()},
                      {"last_patch", nlohmann::json::array()},
                      {"fresh", nlohmann::json::array()}};
  keep.clear();
  for (const auto& s : streams_) {
    const StreamBytes b = take(*s);
    keep.insert(keep.end(), b.states.begin(), b.states.end());
    j["patches"].push_back(b.patches);
    for (int32_t v : b.last_patch) j["last_patch"].push_back(v);
    for (uint8_t v : b.fresh) j["fresh"].push_back(int(v));
  }
  for (const Cursor& c : cursors_) j["cursors"].push_back({c.stream, c.offset, c.remaining});
  tensors.push_back({"carry.states", "F32", {int64_t(micros_), int64_t(streams_[0]->state_floats())}, keep.data()});
  meta["carry"] = j.dump();
}

void CarriedRows::load(const SafetensorsReader& file, const std::string& path) {
  const auto bad = [&](const std::string& what) { return Error(path + ": carried state: " + what + " (damaged file?)"); };
  const auto it = file.metadata().find("carry");
  if (it == file.metadata().end()) throw bad("no \"carry\" in __metadata__");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(it->second);
  } catch (const nlohmann::json::parse_error&) {
    throw bad("\"carry\" is not valid JSON");
  }
  const size_t floats = streams_[0]->state_floats(), P = streams_[0]->last_patch().size() / size_t(B_);
  std::vector<float> states(size_t(micros_) * floats);
  file.read_f32("carry.states", {int64_t(micros_), int64_t(floats)}, states.data());
  try {
    if (j.at("cursors").size() != cursors_.size() || j.at("patches").size() != size_t(micros_) ||
        j.at("last_patch").size() != size_t(micros_) * B_ * P || j.at("fresh").size() != size_t(micros_) * B_)
      throw bad("sizes do not match the config");
    for (size_t w = 0; w < cursors_.size(); w++) {
      const int64_t s = j["cursors"][w].at(0).get<int64_t>();
      const uint64_t off = j["cursors"][w].at(1).get<uint64_t>();
      const int64_t remaining = j["cursors"][w].at(2).get<int64_t>();
      if (s >= int64_t(data_.train_streams()) || s < -1 ||
          (s >= 0 && (off >= data_.train_stream_bytes(size_t(s)) || remaining <= 0)))
        throw bad("a cursor points outside the training streams");
      cursors_[w] = Cursor{s, off, remaining, false, {-1, 0}};
    }
    for (int m = 0; m < micros_; m++) {
      std::vector<float> st(states.begin() + long(m * floats), states.begin() + long((m + 1) * floats));
      std::vector<int32_t> last(size_t(B_) * P);
      std::vector<uint8_t> fresh(static_cast<size_t>(B_), 0);
      for (size_t i = 0; i < last.size(); i++) last[i] = j["last_patch"][size_t(m) * B_ * P + i].get<int32_t>();
      for (int b = 0; b < B_; b++) fresh[size_t(b)] = uint8_t(j["fresh"][size_t(m) * B_ + size_t(b)].get<int>());
      streams_[size_t(m)]->import_rows(st, j["patches"][size_t(m)].get<int64_t>(), last, fresh);
    }
  } catch (const nlohmann::json::exception&) {
    throw bad("\"carry\" has the wrong shape");
  }
}

}  // namespace rb
