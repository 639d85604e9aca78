// Data-parallel training's arithmetic: which micro-batches each rank computes, and the step's
// gradient summed in one fixed order, so N ranks give bitwise the weights of one process.
#pragma once
#include <cstddef>
#include <vector>

#include "datasets/dataset.h"
#include "kernels/backend.h"
#include "trainer/communicator.h"

namespace rb {

// Rank `rank` of `ranks` computes micro-batches [first, end) of a step's `accum_steps`
// (contiguous, sizes differing by at most one).
struct MicroRange {
  int first = 0, end = 0;
};
MicroRange micro_batches_of(int rank, int ranks, int accum_steps);

// The step's gradient is the micro-batch gradients added one at a time in micro-batch order,
// ((g0 + g1) + g2) + ..., whatever the number of ranks. Rank 0 folds its own as they come; rank r > 0
// keeps its own until the running sum of ranks 0..r-1 arrives, adds them in order and passes the sum
// on, chunk by chunk so consecutive ranks overlap; the last rank broadcasts the total.
class OrderedGradientSum {
 public:
  OrderedGradientSum(Backend& be, size_t n);
  // After each of this rank's micro-batches but its last: takes the gradient in `grads` (which the
  // caller zeroes before the next micro-batch).
  void keep(const float* grads, int rank);
  // After this rank's last micro-batch (its gradient in `grads`): leaves the step's total in
  // `grads` on every rank.
  void finish(float* grads, Communicator& comm);

 private:
  Backend& be_;
  size_t n_;
  Buffer sum_;                // rank 0: its micro-batches so far
  std::vector<Buffer> held_;  // rank r > 0: its micro-batches but the last, in order
  size_t kept_ = 0;
  Buffer staging_;           // one chunk of the running sum on the backend
  std::vector<float> host_;  // a chunk in transit, or the whole total for the broadcast
};

// Rank 0 checks that every rank was started on the same data (names, sizes and content), model
// and training config, and build. Throws RanksDisagree on every rank when one differs.
void check_ranks_agree(Communicator& comm, const ByteDataset& data, const std::string& model_config_json,
                       const std::string& train_config_json);

// Throws rb::Error on every rank unless all ranks hold bitwise the same n values at `values` (a
// safety net at checkpoints: ranks whose weights drifted apart would train on nonsense).
void check_ranks_hold_the_same(Communicator& comm, Backend& be, const float* values, size_t n, const char* what);

}  // namespace rb
