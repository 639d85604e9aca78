// The MEGABYTE x RetNet model of doc/SPEC.md §1: patch embedder, global RetNet (or the attention
// baseline), global-to-local projection, local Transformer over all patches at once, byte
// cross-entropy. Parameters and gradients are two flat buffers laid out by parameter_table().
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <unordered_map>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "src/model/config.h"
#include "src/model/params.h"

namespace rb {

// Carries the global model across consecutive windows of the same byte streams, so a file of
// any length is processed window by window with a constant-size state: per layer the retention
// state [B, H, dk, dv], the patch position (for the rotary phase) and the last patch's bytes
// (the next window's first global input). Owned by the caller; see Model::new_stream().
class GlobalStream {
 public:
  GlobalStream(Backend& be, const ModelConfig& c, int B);
  ~GlobalStream();
  GlobalStream(const GlobalStream&) = delete;
  GlobalStream& operator=(const GlobalStream&) = delete;
  int batch() const { return B_; }
  int64_t patches() const { return patches_; }
  void reset();  // back to the start of a stream (zero state, pad input)
  // Row b alone back to the start of a stream (carried-state training: a row's file ended). The
  // position counter is shared by the rows: rotary phases depend only on distances, so a row may
  // start at any position.
  void reset_row(int b);
  std::unique_ptr<GlobalStream> clone() const;
  // Host copies of the state, for saving: per layer [B, H, dk, dv], concatenated.
  std::vector<float> export_states() const;
  void import_states(const std::vector<float>& states, int64_t patches);
  size_t state_floats() const { return state_size_ * states_.size(); }
  // Everything a training checkpoint needs to continue the rows exactly.
  const std::vector<int32_t>& last_patch() const { return last_patch_; }
  const std::vector<uint8_t>& fresh_rows() const { return fresh_; }
  void import_rows(const std::vector<float>& states, int64_t patches, const std::vector<int32_t>& last_patch,
                   const std::vector<uint8_t>& fresh);

 private:
  friend class Model;
  GlobalStream(Backend& be, int B, int P, size_t state_size, size_t layers);
  Backend& be_;
  int B_;
  int64_t patches_ = 0;
  size_t state_size_ = 0;            // per layer
  std::vector<float*> states_;       // one per global layer
  std::vector<int32_t> last_patch_;  // [B, P] bytes of the last patch seen
  std::vector<uint8_t> fresh_;       // [B] 1: the row starts a stream (its first input is the pad)
  int P_ = 0;
};

// Per-user workspace for one-position steps (decoding), kept apart from the weights: one model
// serves any number of decoders. Made by Model::new_step_scratch().
struct StepScratch {
  int rows = 1;                                             // local rows it holds
  Buffer pieces, h, ln, qkv, att, big, logits, mean, rstd;  // local model, [rows, ...]
  Buffer g_x, g_ln, g_qkv, g_att, g_big;                    // attention global, one row
  int32_t* idx = nullptr;
  Backend* be = nullptr;
  ~StepScratch();
};

// How inference holds the weights. F32: as trained. BF16: every weight rounded to bf16 (to
// nearest, ties to even) and decoding's few-row products stream bf16 copies at half the bytes;
// widening is exact, so every path (batched, stepped, any CPU) still computes the same bits, now
// for the rounded model. Recorded by .rbz files; a model file of BF16 tensors loads as BF16.
// I8 (inference only): the weights stay as they are, and every product (batched or stepped)
// multiplies int8 copies (one scale per output) by its input rows rounded to 7 bits (one scale
// per row), summed exactly in integers (Backend::gemm_i8): the same bits on every path, about half
// the bytes of bf16 to stream, ~0.1% more bits per byte (bench/NOTES.md). Not recorded by .rbz files yet.
enum class WeightFormat { F32, BF16, I8 };
const char* weight_format_name(WeightFormat f);  // "fp32", "bf16", "int8"
WeightFormat parse_weight_format(const std::string& s, const std::string& what);
uint16_t bf16_round(float x);  // to nearest, ties to even (the upper 16 bits of the rounded float)
float bf16_widen(uint16_t h);  // exact: the bits become the float's upper half

class Model {
 public:
  Model(const ModelConfig& cfg, Backend& backend);
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelConfig& config() const { return cfg_; }
  Backend& backend() { return be_; }
  const std::vector<TensorEntry>& table() const { return table_; }
  size_t num_params() const { return num_params_; }
  // Rounds every weight to bf16 (BF16) for inference; F32 after BF16 is an error. Changes the
  // fingerprint (the weights change). I8 keeps the weights (and the fingerprint) and makes the
  // products int8; leaving it returns to the format it came from.
  void set_weight_format(WeightFormat f);
  // A bf16 model's weights on the fp32 kernels, their values unchanged (widening is exact, and the
  // fingerprint stays): what training steps need, which leave values bf16 cannot hold.
  void widen_to_fp32();
  WeightFormat weight_format() const { return format_; }
  // int8 products on (I8) or off (back to what the weights hold), as an archive or a saved
  // decoding state says they were computed.
  void set_int8_products(bool on) { set_weight_format(on ? WeightFormat::I8 : weight_values()); }
  // What the weights hold: fp32 or bf16 values (under I8, the format it came from).
  WeightFormat weight_values() const { return format_ == WeightFormat::I8 ? values_ : format_; }
  // Writable parameters: drops the transposed copies used by few-row products (they go stale).
  float* params() {
    transposed_.clear();
    return params_;
  }
  float* grads();  // allocated on first use
  const Weights& weights() const { return w_; }

  void init_random(uint64_t seed);
  // Loads tensors by their SPEC names; shapes must match this model's config.
  void load_tensors(const class SafetensorsReader& file);
  // Writes model weights with "config" (and `extra` keys) in __metadata__, atomically.
  void save(const std::string& path, const std::map<std::string, std::string>& extra = {}) const;
  // Reads the config from a model file's metadata and builds the model with its weights.
  static std::unique_ptr<Model> load(const std::string& path, Backend& backend);

  // Retention chunk size for training/eval forwards (sequences <= chunk use the parallel form).
  int retention_chunk = 64;
  // Eval forwards run retention patch by patch (the recurrent form) instead of chunkwise: then
  // every logit is bitwise what the decoder computes stepping byte by byte (batch invariance),
  // which the codec needs; the chunkwise form agrees only to rounding.
  bool retention_recurrent = false;
  // The form of the image and audio streams it was trained on ("media" in __metadata__): eval,
  // compress and generate lay media out the same way.
  MediaForm media_form = MediaForm::Plain;

  enum class Mode { Eval, Train };
  // x: B sequences of T bytes (T a multiple of P). Returns the mean cross-entropy in nats.
  // Eval keeps logits(); Train turns them into dlogits for backward(). With a stream (retention
  // global only) the window continues where the stream's previous window ended; in Train mode
  // the carried state enters detached (truncated backpropagation through time: no gradient
  // flows into the previous window). row_bytes (optional, [B]): row b's bytes past row_bytes[b]
  // are padding (a stream that ended): they are inputs still, but no targets: the mean and the
  // gradients cover the other bytes only.
  double forward(const uint8_t* x, int B, int T, Mode mode, GlobalStream* stream = nullptr, const int* row_bytes = nullptr);
  std::unique_ptr<GlobalStream> new_stream(int B) { return std::make_unique<GlobalStream>(be_, cfg_, B); }
  // Accumulates parameter gradients (+=) for the last Train forward.
  void backward();
  void zero_grad();
  const float* logits() const;       // [B*T, 256], valid after an Eval forward
  const float* byte_losses() const;  // [B*T] nats, after any forward

  // Global model only, for decoding and prompt ingestion: for each of the stream's B sequences,
  // npatches rows whose inputs are the embeddings of patches[b][k] (P bytes each, [B, npatches,
  // P]; no shift; patches = null means one step on the pad vector, the input of a stream's first
  // position), at positions stream->patches() onwards; updates the stream. Always the recurrent
  // form (patch by patch), so ingesting equals stepping, and B sequences in lockstep equal each
  // alone (batch invariance). Returns the global outputs [B * npatches, D_G] (backend memory,
  // valid until the next call).
  const float* global_step(const uint8_t* patches, int npatches, GlobalStream* stream);

  // Decoding, one position at a time for `rows` independent sequences in lockstep (the same
  // kernels and order of operations as forward(), so the same bits, whatever `rows` is).
  // local_step: the local model at position p of each row's patch in progress, given the patch's
  // global output piece p (row r's at g_pieces + r * g_stride, D_E floats), the previous byte
  // (256 = pad at p = 0) and the patch's q|k|v cache per local layer ([rows, P, 3 D_L], positions
  // < p filled; position p is written). Writes logits [rows, 256] into scratch.logits.
  std::unique_ptr<StepScratch> new_step_scratch(int rows = 1);
  // Makes the transposed weight copies few-row products read (otherwise made on first use).
  void prepare_decoding();
  void local_step(const float* g_pieces, size_t g_stride, const int32_t* prev_bytes, int p, int rows, float* const* qkv_cache,
                  StepScratch& s);
  // One attention-global step at patch position pos (input: the patch's bytes, or the pad vector
  // when patch is null); appends k and v rows at pos of the per-layer caches [.., D_G]; writes
  // the global output [D_G] to out.
  void global_attention_step(const uint8_t* patch, int64_t pos, float* const* k_cache, float* const* v_cache, StepScratch& s,
                             float* out);

  // Sizes activation buffers for up to B x T now, so later calls of any smaller shape reuse them
  // (local = false: only what global_step needs).
  void reserve(int B, int T, bool local = true);

  // Multiply-adds of one forward (matrix products, retention/attention), for GFLOP/s reports.
  double forward_flops(int B, int T) const;

 private:
  struct Acts;
  void ensure_acts(int B, int T, bool local = true);
  void ensure_grads();
  // Global layers + final LN on g_res[0] -> g_out; recurrent: retention patch by patch.
  void run_global(GlobalStream* stream, bool recurrent);
  void forward_global_retention(int l, GlobalStream* stream, bool recurrent);
  void forward_global_attention(int l);
  void backward_global_retention(int l);
  void backward_global_attention(int l);
  void forward_local(int l);
  // y[rows, out] = x W^T (+ bias) (+ beta y). Fewer than 64 rows read a transposed copy of W (made
  // on first use): under the GEMM contract both give the same bits, and few-row products want W^T.
  // gelu_out: also gelu(y) there (the MLP's first product; fused into the bf16 decoding product).
  void linear(float* y, const float* x, const float* W, const float* bias, int rows, int in, int out, float beta = 0.0f,
              float* gelu_out = nullptr);
  const float* transposed(const float* W, int out, int in);  // W [out, in] -> cached W^T
  // W [out, in] -> its cached int8 copy: panels, one scale and one column sum per output (Backend::gemm_i8).
  struct Int8Copy {
    const int8_t* panels;
    const float* scale;
    const int32_t* colsum;
  };
  Int8Copy int8_copy(const float* W, int out, int in);
  // The few-row products' copy of W for the weight format (prepare_decoding).
  void decoding_copy(const float* W, int out, int in);
  // out = in + W2 gelu(W1 LN(in) + b1) + b2 (the global FFN and the local MLP sub-block).
  void residual_mlp(float* out, const float* in, float* ln, float* mean, float* rstd, float* h, float* ha, const float* ln_w,
                    const float* ln_b, const float* w1, const float* b1, const float* w2, const float* b2, int rows, int C,
                    int hidden);
  void backward_local(int l);
  // Buffers and weights of one attention half-block (model.cpp, attention_half).
  struct AttentionHalf {
    const float* in;
    float *mid, *ln, *mean, *rstd, *qkv, *att;
    const float *ln_w, *ln_b, *wqkv, *bqkv, *wo, *bo;
  };
  void attention_half(const AttentionHalf& b, int rows, int C, const std::function<void(float*, float*)>& attend);

  ModelConfig cfg_;
  Backend& be_;
  std::vector<TensorEntry> table_;
  size_t num_params_ = 0;
  float* params_ = nullptr;
  float* grads_ = nullptr;
  Weights w_, gw_;
  std::vector<float> gammas_host_;
  float* gammas_ = nullptr;
  std::unique_ptr<Acts> a_;
  std::unordered_map<const float*, Buffer> transposed_;  // W -> W^T for few-row products
  bool train_ready_ = false;
  std::vector<int32_t> step_idx_;  // host scratch for the step functions' indices
  WeightFormat format_ = WeightFormat::F32;
  WeightFormat values_ = WeightFormat::F32;  // what the weights hold under I8: fp32 or bf16 values
  Buffer int8_x_, int8_x_scale_;             // the input rows of an int8 product, rounded to 7 bits
  // Few-row products read bf16 copies of W^T when the weights are bf16 and the backend can.
  bool bf16_copies() const { return format_ == WeightFormat::BF16 && be_.has_gemm_bf16(); }
};

// Model fingerprint: 64-bit FNV-1a over the config JSON and the weights' bytes, as 16 hex digits
// (recorded by decode states and .rbz files, which only that model can continue or decode).
std::string model_fingerprint(const Model& model);

// About how many bytes of activations a forward of B x T bytes allocates (for refusing configs
// that cannot fit before trying), and the machine's physical memory (0 if unknown).
double activation_bytes(const ModelConfig& c, int B, int T);
double physical_memory_bytes();
// Throws rb::Error("<what>: ... needs about N MiB of activations ...") when a forward of B x T
// cannot fit in this machine's memory.
void check_activation_memory(const ModelConfig& c, int B, int T, const std::string& what);

}  // namespace rb
