// Carried-state training (truncated backpropagation through time, as RWKV's infctx trainer and
// Transformer-XL do): every row of the global batch is a cursor that walks one training stream
// window by window from its start; the final retention state of one window is the initial state
// of the next (detached), and a row whose stream ended starts a new one from a zero state. The
// cursors are drawn from the run's RNG by every rank alike, so the windows do not depend on the
// number of ranks; each micro-batch's rows live in one GlobalStream.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "datasets/dataset.h"
#include "src/model/model.h"
#include "src/model/safetensors.h"

namespace rb {

class Communicator;

class CarriedRows {
 public:
  CarriedRows(const ByteDataset& data, Model& model, int micro_batches);

  // Fills batch [micro_batches, B, T] with each row's next window, drawing a new stream (a random
  // packed patch's stream, so streams are chosen in proportion to their length) for rows that
  // have none; advances the cursors.
  void next_windows(Rng& rng, uint8_t* batch);
  // The stream to forward micro-batch m with (rows that start a stream this step are reset).
  GlobalStream& stream(int micro);
  // Bytes of the last next_windows that were padding past a stream's end (for the notes).
  uint64_t padding_bytes() const { return padding_; }

  // Checkpoints: every rank sends the micro-batches it owns (micro_batches_of) so all hold all.
  void gather(Communicator& comm);
  void broadcast(Communicator& comm);  // rank 0's rows to every rank (after a resume)
  // Tensor and metadata for state.safetensors; `keep` holds the buffers until written.
  void save(std::vector<StTensorOut>& tensors, std::map<std::string, std::string>& meta, std::vector<float>& keep) const;
  void load(const SafetensorsReader& file, const std::string& path);

 private:
  struct Cursor {
    int64_t stream = -1;  // -1: draw a new one at the next step
    uint64_t offset = 0;  // bytes of the stream already given
    bool reset = false;   // the row starts its stream at this step
  };
  const ByteDataset& data_;
  int B_, T_, micros_;
  std::vector<Cursor> cursors_;  // [micros * B]
  std::vector<std::unique_ptr<GlobalStream>> streams_;
  uint64_t padding_ = 0;
};

}  // namespace rb
