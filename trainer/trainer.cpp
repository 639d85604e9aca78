#include "trainer/trainer.h"
#include "trainer/curves.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "src/common/errors.h"
#include "src/model/evaluate.h"
#include "src/model/safetensors.h"
#include "trainer/carried_rows.h"

namespace rb {

namespace fs = std::filesystem;

namespace {
constexpr int kMaxNonfiniteInARow = 5;

double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
std::string rng_to_string(const Rng& r) {
  std::ostringstream os;
  for (int i = 0; i < 4; i++) os << (i ? " " : "") << r.raw_state()[i];
  return os.str();
}
}  // namespace

// Holds an exclusive flock on DIR/.lock for the life of a run: a second run into the same folder
// fails at once instead of interleaving its metrics and checkpoints. The kernel drops the lock
// when the process dies, so a killed run never leaves the folder locked.
RunFolderLock::RunFolderLock(const std::string& dir) {
  const std::string path = dir + "/.lock";
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) throw Error(path + ": cannot create the run folder's lock file (" + std::strerror(errno) + ")");
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd_);
    fd_ = -1;
    throw Error(dir + ": another retbyte train is using this run folder");
  }
}

RunFolderLock::~RunFolderLock() {
  if (fd_ >= 0) ::close(fd_);
}

Trainer::~Trainer() = default;

Trainer::Trainer(const TrainConfig& cfg, const std::vector<std::string>& data, const std::string& out_dir, Backend& backend,
                 bool resume, Communicator* comm, const std::string& init)
    : cfg_(cfg),
      own_comm_(comm ? nullptr : make_single_process_communicator()),
      comm_(comm ? *comm : *own_comm_),
      be_(backend),
      out_dir_(out_dir),
      data_(data, cfg.model.P, cfg.val_fraction, cfg.media),
      model_(std::make_unique<Model>(cfg.model, backend)),
      opt_(backend, model_->table(), model_->num_params()),
      rng_(cfg.seed) {
  model_->retention_chunk = cfg.chunk;
  model_->media_form = cfg.media;
  if (cfg.carry_state) carried_ = std::make_unique<CarriedRows>(data_, *model_, cfg.accum_steps, cfg.carry_bytes);
  horizon_ = cfg.steps;
  // A batch that cannot fit is refused before the run folder is touched.
  check_activation_memory(cfg.model, cfg.model.B, cfg.model.T, "training config");
  check_ranks_agree(comm_, data_, config_to_json(cfg_.model), train_config_to_json(cfg_));
  if (cfg_.accum_steps < comm_.size())
    throw RanksDisagree(
        "accum_steps " + std::to_string(cfg_.accum_steps) + " is fewer than the " + std::to_string(comm_.size()) +
        " ranks: each rank computes whole micro-batches of the global batch (accum_steps x B windows); raise accum_steps");
  if (comm_.rank() == 0) {
    std::error_code ec;
    if (resume && !fs::is_directory(out_dir_)) throw Error(out_dir_ + ": no such run folder to resume");
    fs::create_directories(out_dir_, ec);
    if (ec || !fs::is_directory(out_dir_)) throw Error(out_dir_ + ": cannot create output folder (" + ec.message() + ")");
    lock_ = std::make_unique<RunFolderLock>(out_dir_);  // before looking at what the folder holds
    if (resume) {
      load_checkpoint();
    } else {
      for (const char* f : {"/state.safetensors", "/model.safetensors"})
        if (fs::exists(out_dir_ + f))
          throw Error(out_dir_ + ": already holds a training run (" + std::string(f + 1) +
                      "); use --resume to continue it or choose another --out");
      if (init.empty())
        model_->init_random(cfg.seed);
      else
        start_from(init);
      std::ofstream(out_dir_ + "/metrics.jsonl", std::ios::trunc);
    }
  }
  share_state_from_rank_zero();
  batch_.resize(size_t(cfg.model.B) * cfg.model.T * size_t(cfg.accum_steps));
  grad_sum_ = std::make_unique<OrderedGradientSum>(be_, model_->num_params());
}

static std::string decay_name(int64_t longest_memory) {
  return longest_memory ? "longest_memory " + std::to_string(longest_memory) : std::string("the RetNet decays");
}

// Fine-tuning: the weights of an existing model, which must have this run's shape and media form.
void Trainer::start_from(const std::string& path) {
  const auto src = Model::load(path, be_);
  ModelConfig shape = src->config();
  shape.T = cfg_.model.T, shape.B = cfg_.model.B;  // training shapes, not the weights'
  // The heads' decays are constants, not weights: a run may give an existing model longer memory
  // (issue 24) and let training adapt the weights to it.
  shape.longest_memory = cfg_.model.longest_memory;
  if (src->config().longest_memory != cfg_.model.longest_memory)
    init_note_ = "the heads' decays change from " + decay_name(src->config().longest_memory) + " to " +
                 decay_name(cfg_.model.longest_memory) + " (the weights carry over)";
  if (!(shape == cfg_.model))
    throw Error(path + ": --init model has config " + config_to_json(src->config()) + ", but the run's is " +
                config_to_json(cfg_.model) + " (omit --config to train with the model's own)");
  if (src->media_form != cfg_.media)
    throw Error(path + ": --init model was trained on media in " + media_form_name(src->media_form) +
                " form, but the run's config says " + media_form_name(cfg_.media));
  std::vector<float> params(model_->num_params());
  src->backend().download(params.data(), src->params(), params.size());
  model_->backend().upload(model_->params(), params.data(), params.size());
  init_fingerprint_ = model_fingerprint(*src);
}

// Every rank starts from rank 0's weights, optimiser moments, step and RNG (fresh or resumed), so
// a run resumes with any number of ranks.
void Trainer::share_state_from_rank_zero() {
  if (comm_.size() == 1) return;
  const size_t n = model_->num_params();
  std::vector<float> params(n);
  if (comm_.rank() == 0) model_->backend().download(params.data(), model_->params(), n);
  comm_.broadcast(params.data(), n * sizeof(float), 0);
  if (comm_.rank() != 0) model_->backend().upload(model_->params(), params.data(), n);
  std::vector<float> m = opt_.download_m(), v = opt_.download_v();
  comm_.broadcast(m.data(), n * sizeof(float), 0);
  comm_.broadcast(v.data(), n * sizeof(float), 0);
  opt_.upload_moments(m.data(), v.data());
  int64_t scalars[5] = {step_, horizon_, int64_t(bytes_seen_), nonfinite_streak_, last_saved_step_};
  comm_.broadcast(scalars, sizeof scalars, 0);
  step_ = scalars[0], horizon_ = scalars[1], bytes_seen_ = uint64_t(scalars[2]);
  nonfinite_streak_ = int(scalars[3]), last_saved_step_ = scalars[4];
  opt_.set_steps_taken(step_);
  comm_.broadcast(rng_.raw_state(), 4 * sizeof(uint64_t), 0);
  if (carried_) carried_->broadcast(comm_);
}

namespace {
// Keys whose change alters the trajectory of a run; the others may change on --resume.
bool affects_trajectory(const std::string& key) {
  return key != "steps" && key != "val_every" && key != "val_bytes" && key != "checkpoint_every";
}
}  // namespace

void Trainer::load_checkpoint() {
  const std::string path = out_dir_ + "/state.safetensors";
  if (!fs::exists(path)) throw Error(path + ": no training state to resume from (run without --resume first)");
  SafetensorsReader state(path);
  const auto& meta = state.metadata();
  auto get = [&](const char* key) -> const std::string& {
    auto it = meta.find(key);
    if (it == meta.end())
      throw Error(path + ": missing \"" + std::string(key) + "\" in __metadata__ (not a retbyte training state?)");
    return it->second;
  };
  auto integer = [&](const char* key) {
    try {
      size_t used = 0;
      const long long v = std::stoll(get(key), &used);
      if (used != get(key).size() || v < 0) throw std::invalid_argument(key);
      return int64_t(v);
    } catch (const std::logic_error&) {
      throw Error(path + ": bad \"" + std::string(key) + "\" in __metadata__ (damaged file?)");
    }
  };
  auto json = [&](const char* key) {
    try {
      return nlohmann::json::parse(get(key));
    } catch (const nlohmann::json::parse_error&) {
      throw Error(path + ": \"" + std::string(key) + "\" in __metadata__ is not valid JSON (damaged file?)");
    }
  };
  const ModelConfig saved = parse_model_config(json("config"), path);
  if (!(saved == cfg_.model))
    throw Error(path + ": state is for model config " + get("config") + ", but --config gives " + config_to_json(cfg_.model));
  nlohmann::json was = json("train_config");
  if (was.is_object() && !was.contains("media")) was["media"] = "plain";            // states from before the residual form
  if (was.is_object() && !was.contains("carry_state")) was["carry_state"] = false;  // and before carried state
  if (was.is_object() && !was.contains("carry_bytes")) was["carry_bytes"] = cfg_.carry_bytes;  // (unused there)
  const nlohmann::json now = nlohmann::json::parse(train_config_to_json(cfg_));
  std::string changed;
  for (auto it = now.begin(); it != now.end(); ++it)
    if (affects_trajectory(it.key()) && (!was.contains(it.key()) || was[it.key()] != *it)) changed += " " + it.key();
  if (!changed.empty())
    throw Error(path + ": the run was started with other training settings (" + changed.substr(1) +
                "); resume with the config it was started with, or start a new --out");
  if (get("data") != data_.fingerprint())
    throw Error(path + ": the run was trained on other data (fingerprint " + get("data") + ", --data gives " +
                data_.fingerprint() + "); resume with the same files");
  const int64_t n = int64_t(model_->num_params());
  std::vector<float> params(static_cast<size_t>(n));
  state.read_f32("params", {n}, params.data());
  model_->backend().upload(model_->params(), params.data(), params.size());
  std::vector<float> m(params.size()), v(params.size());
  state.read_f32("adam.m", {n}, m.data());
  state.read_f32("adam.v", {n}, v.data());
  opt_.upload_moments(m.data(), v.data());
  step_ = integer("step");
  opt_.set_steps_taken(step_);
  horizon_ = cfg_.steps > 0 ? cfg_.steps : integer("horizon");
  bytes_seen_ = uint64_t(integer("bytes_seen"));
  nonfinite_streak_ = int(integer("nonfinite_streak"));
  std::istringstream rs(get("rng"));
  for (int i = 0; i < 4; i++) rs >> rng_.raw_state()[i];
  if (!rs) throw Error(path + ": bad \"rng\" in __metadata__ (damaged file?)");
  if (carried_) carried_->load(state, path);
  if (meta.count("init")) init_fingerprint_ = meta.at("init");
  last_saved_step_ = step_;
  // Metrics logged after the checkpoint (later steps, or skipped steps at its step) belong to a
  // run that did not reach its next checkpoint: they will be logged again.
  const std::string metrics = out_dir_ + "/metrics.jsonl";
  std::ifstream in(metrics);
  std::string line, kept;
  while (std::getline(in, line)) {
    try {
      const auto j = nlohmann::json::parse(line);
      const int64_t s = j.value("step", int64_t(0));
      if (s < step_ || (s == step_ && !j.value("skipped", false))) kept += line + "\n";
    } catch (const nlohmann::json::parse_error&) {
      // a torn last line from a crash: drop it
    }
  }
  write_file_atomic(metrics, kept);
}

// The state file alone resumes a run (weights, moments, step, RNG); model.safetensors is the
// weights for users. Each is written atomically, the state first.
void Trainer::save_checkpoint() {
  if (comm_.rank() != 0) {
    last_saved_step_ = step_;  // every rank agrees on when the last checkpoint was
    return;
  }
  const int64_t n = int64_t(model_->num_params());
  std::vector<float> params(static_cast<size_t>(n));
  model_->backend().download(params.data(), model_->params(), params.size());
  const std::vector<float> m = opt_.download_m(), v = opt_.download_v();
  std::vector<StTensorOut> t = {
      {"params", "F32", {n}, params.data()}, {"adam.m", "F32", {n}, m.data()}, {"adam.v", "F32", {n}, v.data()}};
  std::map<std::string, std::string> meta = {{"config", config_to_json(cfg_.model)},
                                             {"train_config", train_config_to_json(cfg_)},
                                             {"data", data_.fingerprint()},
                                             {"step", std::to_string(step_)},
                                             {"horizon", std::to_string(horizon_)},
                                             {"rng", rng_to_string(rng_)},
                                             {"bytes_seen", std::to_string(bytes_seen_)},
                                             {"nonfinite_streak", std::to_string(nonfinite_streak_)}};
  if (!init_fingerprint_.empty()) meta["init"] = init_fingerprint_;
  std::vector<float> carried_states;
  if (carried_) carried_->save(t, meta, carried_states);
  write_safetensors(out_dir_ + "/state.safetensors", t, meta);
  nlohmann::json summary = {{"step", step_},
                            {"horizon", horizon_},
                            {"bytes_seen", bytes_seen_},
                            {"val_bpb", last_val_bpb_},
                            {"train_files", data_.num_files()}};
  if (!init_fingerprint_.empty()) summary["init"] = init_fingerprint_;
  model_->save(out_dir_ + "/model.safetensors", {{"train_step", std::to_string(step_)}, {"training", summary.dump()}});
  last_saved_step_ = step_;
}

double Trainer::validate(int64_t max_bytes) {
  // Each modality present gets an equal share of the budget, so a mixed run validates all of them.
  std::map<Modality, std::vector<StreamSpan>> groups;
  for (const StreamSpan& s : data_.val_streams()) groups[data_.modality(s)].push_back(s);
  EvalResult total;
  last_val_by_modality_.clear();
  for (const auto& [modality, spans] : groups) {
    EvalResult part_total;
    int64_t budget = max_bytes / int64_t(groups.size());
    for (const StreamSpan& s : spans) {
      if (budget <= 0) break;
      StreamSpan part = s;
      part.end = std::min<uint64_t>(s.end, s.begin + uint64_t(budget));
      budget -= int64_t(part.end - part.begin);
      const EvalResult r = evaluate_stream(*model_, data_.header(part), data_.span_data(part), part.end - part.begin);
      part_total.nats += r.nats;
      part_total.bytes += r.bytes;
    }
    total.nats += part_total.nats;
    total.bytes += part_total.bytes;
    if (groups.size() > 1 && part_total.bytes) last_val_by_modality_[modality_name(modality)] = part_total.bpb();
  }
  last_val_bpb_ = total.bytes ? total.bpb() : -1;
  return last_val_bpb_;
}

StepReport Trainer::train_step() {
  const ModelConfig& c = cfg_.model;
  const double t0 = now_s();
  const int M = cfg_.accum_steps;
  const size_t window = size_t(c.B) * c.T;
  // Every rank draws the whole global batch from the shared RNG (so the windows do not depend on
  // the number of ranks) and computes its own micro-batches, each from a zero gradient.
  if (carried_)
    carried_->next_windows(rng_, batch_.data());
  else
    for (int w = 0; w < M * c.B; w++) data_.sample_window(rng_, c.T, batch_.data() + size_t(w) * c.T);
  const MicroRange mine = micro_batches_of(comm_.rank(), comm_.size(), M);
  std::vector<double> micro_loss(size_t(M), 0.0);
  for (int micro = mine.first; micro < mine.end; micro++) {
    model_->zero_grad();
    micro_loss[size_t(micro)] =
        model_->forward(batch_.data() + size_t(micro) * window, c.B, c.T, Model::Mode::Train,
                        carried_ ? &carried_->stream(micro) : nullptr, carried_ ? carried_->row_bytes(micro) : nullptr);
    model_->backward();
    if (micro + 1 < mine.end) grad_sum_->keep(model_->grads(), comm_.rank());
  }
  const double reduce_start = now_s();
  grad_sum_->finish(model_->grads(), comm_);
  // The loss, summed in micro-batch order on rank 0 from each micro-batch's owner.
  std::vector<double> all_losses(size_t(M) * size_t(comm_.rank() == 0 ? comm_.size() : 1));
  comm_.gather(micro_loss.data(), size_t(M) * sizeof(double), all_losses.data(), 0);
  double loss = 0;
  for (int r = 0; r < comm_.size() && comm_.rank() == 0; r++) {
    const MicroRange theirs = micro_batches_of(r, comm_.size(), M);
    for (int micro = theirs.first; micro < theirs.end; micro++)
      micro_loss[size_t(micro)] = all_losses[size_t(r) * M + size_t(micro)];
  }
  for (int micro = 0; micro < M; micro++) loss += micro_loss[size_t(micro)] / M;
  comm_.broadcast(&loss, sizeof loss, 0);
  const double reduce_s = now_s() - reduce_start;
  // Gradients are the sum over micro-batches of per-micro-batch means.
  const double norm = global_norm(model_->backend(), model_->grads(), model_->num_params()) / cfg_.accum_steps;
  StepReport r;
  r.reduce_s = reduce_s;
  r.loss = loss;
  r.bpb = loss / std::log(2.0);
  r.grad_norm = norm;
  r.lr = cfg_.lr_at(step_, horizon_);
  if (!std::isfinite(loss) || !std::isfinite(norm)) {
    r.skipped = true;
    if (++nonfinite_streak_ >= kMaxNonfiniteInARow)
      throw Error("training diverged: " + std::to_string(nonfinite_streak_) +
                  " non-finite losses or gradients in a row at step " + std::to_string(step_) + "; the last good checkpoint in " +
                  out_dir_ + " is kept (try a lower lr)");
  } else {
    nonfinite_streak_ = 0;
    float scale = 1.0f / float(cfg_.accum_steps);
    if (cfg_.grad_clip > 0 && norm > cfg_.grad_clip) scale *= float(cfg_.grad_clip / norm);
    opt_.step(model_->backend(), model_->params(), model_->grads(), float(r.lr), cfg_.adamw, scale);
    step_++;
  }
  const uint64_t bytes = uint64_t(c.B) * c.T * cfg_.accum_steps;
  bytes_seen_ += bytes;
  r.step = step_;
  r.horizon = horizon_;
  be_.synchronize();
  r.bytes_per_s = double(bytes) / (now_s() - t0);
  return r;
}

void Trainer::append_metrics(const StepReport& r) {
  nlohmann::ordered_json j;
  j["step"] = r.step;
  j["loss"] = r.loss;
  j["bpb"] = r.bpb;
  if (r.val_bpb >= 0) j["val_bpb"] = r.val_bpb;
  for (const auto& [kind, bpb] : r.val_bpb_by_modality) j["val_bpb_" + kind] = bpb;
  j["lr"] = r.lr;
  j["grad_norm"] = r.grad_norm;
  j["bytes_per_s"] = r.bytes_per_s;
  if (r.skipped) j["skipped"] = true;
  std::ofstream out(out_dir_ + "/metrics.jsonl", std::ios::app);
  out << j.dump() << "\n";
}

Trainer::Stop Trainer::run(int64_t target_steps, double minutes, const std::atomic<bool>* stop,
                           const std::function<void(const StepReport&)>& on_step) {
  const double start = now_s();
  if (target_steps <= 0) target_steps = horizon_;
  if (horizon_ <= 0 || target_steps > horizon_) horizon_ = target_steps;  // --steps beyond a resumed run's end extends it
  if (horizon_ <= 0 && minutes <= 0) throw Error("give --steps N or --minutes M (or \"steps\" in the config)");
  const int64_t first_step = step_;
  // With only a time budget the schedule's horizon is re-estimated at every step from the speed
  // measured since the third step (the first steps are slow: allocation, page faults), so a
  // slow start or a machine that gets busier never leaves the learning rate undecayed.
  const bool estimate = horizon_ <= 0;
  double mark_time = 0;
  int64_t mark_step = 0;
  Stop why = Stop::Finished;
  const bool leader = comm_.rank() == 0;
  auto checkpoint = [&] {
    check_ranks_hold_the_same(comm_, be_, model_->params(), model_->num_params(), "the weights");
    // Every rank's carried rows to every rank, so rank 0's state file holds them all (here, where
    // every rank takes part: a later save_checkpoint on rank 0 alone writes the same rows).
    if (carried_) carried_->gather(comm_);
    save_checkpoint();
  };
  while (true) {
    // Rank 0 decides whether to go on (steps, time, signals) and the horizon; the others follow.
    int64_t control[2] = {0, horizon_};  // {0 go on, else 1 + Stop}, horizon
    if (leader) {
      const double elapsed = now_s() - start;
      if (target_steps > 0 && step_ >= target_steps)
        control[0] = 1 + int(Stop::Finished);
      else if (stop && stop->load())
        control[0] = 1 + int(Stop::Interrupted);
      else if (minutes > 0 && elapsed >= minutes * 60)
        control[0] = 1 + int(Stop::TimeUp);
      if (estimate && step_ - first_step == 3) mark_time = elapsed, mark_step = step_;
      if (estimate && step_ - first_step > 3) {
        const double per_step = (elapsed - mark_time) / double(step_ - mark_step);
        control[1] = step_ + 1 + int64_t(std::max(0.0, minutes * 60 - elapsed) / std::max(per_step, 1e-9));
      }
    }
    comm_.broadcast(control, sizeof control, 0);
    horizon_ = control[1];
    if (control[0] != 0) {
      why = Stop(control[0] - 1);
      break;
    }
    StepReport r = train_step();
    losses_.push_back(r.loss);
    if (r.horizon <= 0) r.horizon = horizon_;
    if (leader) {
      if (!r.skipped && cfg_.val_every > 0 && step_ % cfg_.val_every == 0) {
        r.val_bpb = validate(cfg_.val_bytes);
        r.val_bpb_by_modality = last_val_by_modality_;
      }
      r.elapsed_s = now_s() - start;
      append_metrics(r);
      if (r.val_bpb >= 0) write_curves();
      if (on_step) on_step(r);
    }
    if (!r.skipped && cfg_.checkpoint_every > 0 && step_ % cfg_.checkpoint_every == 0) checkpoint();
  }
  if (step_ != last_saved_step_) checkpoint();
  if (leader) write_curves();
  return why;
}

void Trainer::write_curves() const {
  try {
    write_file_atomic(out_dir_ + "/curves.svg", training_curves_svg(out_dir_ + "/metrics.jsonl", "retbyte train: " + out_dir_));
  } catch (const Error&) {
    // The picture is a convenience: a run never fails for it (e.g. no steps yet).
  }
}

}  // namespace rb
