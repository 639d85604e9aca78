// The training loop: random windows from a ByteDataset (or, with carried state, each row walking
// one stream window by window: trainer/carried_rows.h), AdamW with warm-up + cosine, global-norm
// clipping, gradient accumulation, periodic validation, atomic checkpoints (model + optimizer
// state + RNG + step) from which a resumed run continues bit-identically.
#pragma once
#include <atomic>
#include <functional>
#include <memory>
#include <map>
#include <string>
#include <vector>

#include "datasets/dataset.h"
#include "src/model/model.h"
#include "trainer/adamw.h"
#include "trainer/communicator.h"
#include "trainer/data_parallel.h"
#include "trainer/train_config.h"

namespace rb {

class CarriedRows;

struct StepReport {
  int64_t step = 0;  // optimiser steps completed
  int64_t horizon = 0;
  double loss = 0, bpb = 0, lr = 0, grad_norm = 0, bytes_per_s = 0;
  double val_bpb = -1;                                // < 0 when not validated at this step
  std::map<std::string, double> val_bpb_by_modality;  // with it, when the data mixes modalities
  bool skipped = false;                               // non-finite loss or gradient: no update
  double reduce_s = 0;  // in the ranks' gradient and loss reduction (waiting for slower ranks included)
  double elapsed_s = 0;
};

class RunFolderLock {
 public:
  explicit RunFolderLock(const std::string& dir);  // throws rb::Error if another run holds it
  ~RunFolderLock();
  RunFolderLock(const RunFolderLock&) = delete;
  RunFolderLock& operator=(const RunFolderLock&) = delete;

 private:
  int fd_ = -1;
};

class Trainer {
 public:
  // Opens the data, builds the model (fresh, or from out_dir when resume) and prepares out_dir.
  // With a communicator of N ranks each rank computes its share of every step's micro-batches;
  // rank 0 alone touches out_dir, validates and decides when to stop, and the weights are bitwise
  // those of one process (the default world of one).
  // `init`: a model file whose weights a fresh run starts from (fine-tuning) instead of random
  // ones; its shape keys must equal cfg.model's (T and B may differ). A resumed run ignores it:
  // its weights come from its state, which records the init model's fingerprint.
  Trainer(const TrainConfig& cfg, const std::vector<std::string>& data, const std::string& out_dir, Backend& backend, bool resume,
          Communicator* comm = nullptr, const std::string& init = "");
  ~Trainer();

  enum class Stop { Finished, TimeUp, Interrupted };
  // Trains until `target_steps` optimiser steps have been taken in total (0 = the horizon), or
  // `minutes` of wall time (0 = no limit), or *stop becomes true. Checkpoints at the end.
  // `on_step` sees every step. Throws rb::Error when the run diverges (last checkpoint kept).
  Stop run(int64_t target_steps, double minutes, const std::atomic<bool>* stop,
           const std::function<void(const StepReport&)>& on_step);

  // Rank 0 writes; a no-op on the others. Carried rows are those of run()'s last checkpoint on
  // other ranks (gathered there, where every rank takes part).
  void save_checkpoint();
  double validate(int64_t max_bytes);  // bpb over the validation streams (up to max_bytes)
  int64_t step() const { return step_; }
  int64_t horizon() const { return horizon_; }
  Model& model() { return *model_; }
  const ByteDataset& data() const { return data_; }
  const std::vector<double>& step_losses() const { return losses_; }  // this process's steps
  Communicator& communicator() { return comm_; }
  double last_val_bpb() const { return last_val_bpb_; }
  const std::string& init_note() const { return init_note_; }  // e.g. the decays --init changed
  // "text", "image", "audio" -> bpb of the last validation (empty unless several are present).
  const std::map<std::string, double>& last_val_bpb_by_modality() const { return last_val_by_modality_; }

 private:
  StepReport train_step();
  void load_checkpoint();
  void start_from(const std::string& init_model);
  void share_state_from_rank_zero();
  void append_metrics(const StepReport& r);
  void write_curves() const;  // DIR/curves.svg from metrics.jsonl

  TrainConfig cfg_;
  std::unique_ptr<Communicator> own_comm_;
  Communicator& comm_;
  std::unique_ptr<RunFolderLock> lock_;
  Backend& be_;
  std::string out_dir_;
  std::string init_note_;         // what a fine-tuning run changed in the model it started from
  std::string init_fingerprint_;  // of the model a fine-tuning run started from; empty: random start
  ByteDataset data_;
  std::unique_ptr<Model> model_;
  AdamW opt_;
  Rng rng_;
  int64_t step_ = 0, horizon_ = 0, last_saved_step_ = -1;
  int nonfinite_streak_ = 0;
  uint64_t bytes_seen_ = 0;
  double last_val_bpb_ = -1;
  std::map<std::string, double> last_val_by_modality_;
  std::vector<double> losses_;
  std::vector<uint8_t> batch_;  // the step's global batch: accum_steps micro-batches of B windows
  std::unique_ptr<OrderedGradientSum> grad_sum_;
  std::unique_ptr<CarriedRows> carried_;  // with "carry_state": the rows' cursors and states
};

}  // namespace rb
