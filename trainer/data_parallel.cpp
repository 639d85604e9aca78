#include "trainer/data_parallel.h"

#include <xxhash.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "kernels/numerics.h"

namespace rb {

namespace {
constexpr size_t kChunk = size_t(1) << 18;  // floats per message of the reduction chain (1 MiB)
}

MicroRange micro_batches_of(int rank, int ranks, int accum_steps) {
  return {int(int64_t(accum_steps) * rank / ranks), int(int64_t(accum_steps) * (rank + 1) / ranks)};
}

OrderedGradientSum::OrderedGradientSum(Backend& be, size_t n) : be_(be), n_(n) {}

void OrderedGradientSum::keep(const float* grads, int rank) {
  if (rank == 0) {
    if (!sum_.data()) sum_ = Buffer(be_, n_);
    if (kept_ == 0)
      be_.copy(sum_.data(), grads, n_);
    else
      be_.add_inplace(sum_.data(), grads, n_);
  } else {
    if (held_.size() <= kept_) held_.emplace_back(be_, n_);
    be_.copy(held_[kept_].data(), grads, n_);
  }
  kept_++;
}

void OrderedGradientSum::finish(float* grads, Communicator& comm) {
  const int rank = comm.rank(), ranks = comm.size();
  const size_t kept = kept_;
  kept_ = 0;
  if (rank == 0) {
    if (kept) be_.add_inplace(grads, sum_.data(), n_);  // addition commutes bitwise: S + g_last
    if (ranks == 1) return;
    host_.resize(std::min(kChunk, n_));
    for (size_t at = 0; at < n_; at += kChunk) {
      const size_t len = std::min(kChunk, n_ - at);
      be_.download(host_.data(), grads + at, len);
      comm.send(host_.data(), len * sizeof(float), 1);
    }
  } else {
    if (!staging_.data()) staging_ = Buffer(be_, std::min(kChunk, n_));
    host_.resize(std::min(kChunk, n_));
    for (size_t at = 0; at < n_; at += kChunk) {
      const size_t len = std::min(kChunk, n_ - at);
      comm.receive(host_.data(), len * sizeof(float), rank - 1);
      be_.upload(staging_.data(), host_.data(), len);
      for (size_t i = 0; i < kept; i++) be_.add_inplace(staging_.data(), held_[i].data() + at, len);
      be_.add_inplace(staging_.data(), grads + at, len);
      if (rank + 1 < ranks) {
        be_.download(host_.data(), staging_.data(), len);
        comm.send(host_.data(), len * sizeof(float), rank + 1);
      } else {
        be_.copy(grads + at, staging_.data(), len);
      }
    }
  }
  host_.resize(n_);
  if (rank == ranks - 1) be_.download(host_.data(), grads, n_);
  comm.broadcast(host_.data(), n_ * sizeof(float), ranks - 1);
  if (rank != ranks - 1) be_.upload(grads, host_.data(), n_);
  host_.resize(std::min(kChunk, n_));
}

namespace {
// What a rank was started with, in a fixed-size record rank 0 can gather.
struct RankIdentity {
  char data_fingerprint[24] = {};
  uint64_t data_content = 0, model_config = 0, train_config = 0, build = 0;  // build: numerics contract version
  int64_t files = 0;
};

uint64_t hash_string(const std::string& s) { return XXH64(s.data(), s.size(), 0); }

uint64_t hash_content(const ByteDataset& data) {
  XXH64_state_t* st = XXH64_createState();
  XXH64_reset(st, 0);
  const int P = data.patch_size();
  const uint64_t total = data.train_bytes();
  std::vector<uint8_t> window((size_t(1) << 20) / size_t(P) * size_t(P));  // windows start on patches
  for (uint64_t at = 0; at < total;) {
    const int len = int(std::min<uint64_t>(window.size(), total - at));
    data.read_window(at / uint64_t(P), len, window.data());
    XXH64_update(st, window.data(), size_t(len));
    at += uint64_t(len);
  }
  for (const StreamSpan& s : data.val_streams()) {
    XXH64_update(st, data.header(s).data(), data.header(s).size());
    XXH64_update(st, data.span_data(s), s.end - s.begin);
  }
  const uint64_t h = XXH64_digest(st);
  XXH64_freeState(st);
  return h;
}

std::string rank_name(int r) { return "rank " + std::to_string(r); }
}  // namespace

void check_ranks_agree(Communicator& comm, const ByteDataset& data, const std::string& model_config_json,
                       const std::string& train_config_json) {
  if (comm.size() == 1) return;
  RankIdentity me;
  std::snprintf(me.data_fingerprint, sizeof me.data_fingerprint, "%s", data.fingerprint().c_str());
  me.data_content = hash_content(data);
  me.model_config = hash_string(model_config_json);
  me.train_config = hash_string(train_config_json);
  me.build = uint64_t(kNumericsVersion);
  me.files = int64_t(data.num_files());
  std::vector<RankIdentity> all(size_t(comm.rank() == 0 ? comm.size() : 1));
  comm.gather(&me, sizeof me, all.data(), 0);
  char verdict[512] = {};
  if (comm.rank() == 0) {
    for (int r = 1; r < comm.size() && !verdict[0]; r++) {
      const RankIdentity& o = all[size_t(r)];
      std::string why;
      if (std::strcmp(o.data_fingerprint, me.data_fingerprint) != 0 || o.files != me.files)
        why = rank_name(r) + " was given other data (" + std::to_string(o.files) + " files, fingerprint " + o.data_fingerprint +
              ") than rank 0 (" + std::to_string(me.files) + " files, fingerprint " + me.data_fingerprint + ")";
      else if (o.data_content != me.data_content)
        why = rank_name(r) + " sees other bytes in the same data files than rank 0 (copies differ between machines?)";
      else if (o.model_config != me.model_config)
        why = rank_name(r) + " was given another model config than rank 0";
      else if (o.train_config != me.train_config)
        why = rank_name(r) + " was given other training settings than rank 0";
      else if (o.build != me.build)
        why = rank_name(r) + " runs a retbyte of numerics contract version " + std::to_string(o.build) + ", rank 0 version " +
              std::to_string(me.build);
      if (!why.empty())
        std::snprintf(verdict, sizeof verdict, "%s; every rank must run the same command on the same files", why.c_str());
    }
  }
  comm.broadcast(verdict, sizeof verdict, 0);
  if (verdict[0]) throw RanksDisagree(comm.rank() == 0 ? std::string(verdict) : "refused by rank 0 (it says why)");
}

void check_ranks_hold_the_same(Communicator& comm, Backend& be, const float* values, size_t n, const char* what) {
  if (comm.size() == 1) return;
  std::vector<float> host(n);
  be.download(host.data(), values, n);
  const uint64_t mine = XXH64(host.data(), n * sizeof(float), 0);
  std::vector<uint64_t> all(size_t(comm.rank() == 0 ? comm.size() : 1));
  comm.gather(&mine, sizeof mine, all.data(), 0);
  int32_t first_bad = 0;
  if (comm.rank() == 0)
    for (int r = comm.size() - 1; r > 0; r--)
      if (all[size_t(r)] != mine) first_bad = r;
  comm.broadcast(&first_bad, sizeof first_bad, 0);
  if (first_bad)
    throw Error(
        std::string(what) + " of rank " + std::to_string(first_bad) +
        " differ from rank 0's (ranks on CPUs or builds that break the numerics contract?); stopping before the checkpoint");
}

}  // namespace rb
