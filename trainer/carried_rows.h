// Carried-state training (truncated backpropagation through time, as RWKV's infctx trainer and
// Transformer-XL do): every row of the global batch is a cursor that walks one training stream
// window by window; the final retention state of one window is the initial state of the next
// (detached). A row starts at a random patch of the packed streams with a zero state and walks
// until its stream ends or it has walked its budget of windows (uniform in 1 .. 2 carry_bytes / T
// - 1, so rows part ways and states of every age up to ~2 carry_bytes are trained), then starts
// elsewhere. Few rows walking whole files in order would see a handful of files per run. The
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
  CarriedRows(const ByteDataset& data, Model& model, int micro_batches, int64_t carry_bytes);

  // Fills batch [micro_batches, B, T] with each row's next window, drawing a new start (a random
  // packed patch: streams are chosen in proportion to their length) for rows that have none;
  // advances the cursors.
  void next_windows(Rng& rng, uint8_t* batch);
  // Where each row's window of the last next_windows came from (stream, byte offset in it).
  struct Window {
    int64_t stream;
    uint64_t offset;
  };
  std::vector<Window> last_windows() const;
  // The stream to forward micro-batch m with (rows that start a stream this step are reset).
  GlobalStream& stream(int micro);
  // Micro-batch m's bytes of data per row in the last windows ([B]; less than T where a stream
  // ended inside its window and the rest is zero padding, which is not trained on).
  const int* row_bytes(int micro) const { return lengths_.data() + size_t(micro) * size_t(B_); }

  // Checkpoints: every rank sends the micro-batches it owns (micro_batches_of) so all hold all.
  void gather(Communicator& comm);
  void broadcast(Communicator& comm);  // rank 0's rows to every rank (after a resume)
  // Tensor and metadata for state.safetensors; `keep` holds the buffers until written.
  void save(std::vector<StTensorOut>& tensors, std::map<std::string, std::string>& meta, std::vector<float>& keep) const;
  void load(const SafetensorsReader& file, const std::string& path);

 private:
  struct Cursor {
    int64_t stream = -1;    // -1: draw a new start at the next step
    uint64_t offset = 0;    // the stream's byte where the row's next window starts
    int64_t remaining = 0;  // windows the row may still walk before starting elsewhere
    bool reset = false;     // the row starts at this step (zero state, pad input)
    Window last{-1, 0};     // where the row's last window came from
  };
  const ByteDataset& data_;
  int B_, T_, micros_;
  int64_t walk_windows_;         // mean windows a row walks (carry_bytes / T, at least 1)
  std::vector<Cursor> cursors_;  // [micros * B]
  std::vector<int> lengths_;     // [micros * B]: the last windows' bytes of data
  std::vector<std::unique_ptr<GlobalStream>> streams_;
};

}  // namespace rb
