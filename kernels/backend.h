// The compute interface the model is written against. Every buffer is a row-major float array
// owned by the backend (alloc/release); shapes are explicit in each signature. A CUDA backend
// implements the same class over device memory, so model code never changes.
//
// Conventions (as in llm.c): *_forward writes its outputs and saves what *_backward needs;
// backward functions ACCUMULATE (+=) into parameter gradients and into gradients flowing to a
// residual stream (marked "+="), and WRITE (=) every other output.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace rb {

// Shapes of one retention call: B sequences of n positions, H heads, key width dk, value width dv.
// q and k rows have stride ld_qk (head h starts at column h*dk), v rows stride ld_v (head h at h*dv),
// o rows stride H*dv. Row b*n + t is position t of sequence b. State tensors are [B, H, dk, dv].
struct RetentionShape {
  int B = 1, n = 0, H = 1, dk = 0, dv = 0;
  int ld_qk = 0, ld_v = 0;
  int64_t state_size() const { return int64_t(B) * H * dk * dv; }
};

// Shapes of one causal softmax attention call: nseq sequences of S positions each, packed qkv rows
// [nseq*S, 3*D] (all q, then all k, then all v; head h is columns h*hd within each block).
struct AttentionShape {
  int nseq = 1, S = 0, H = 1, hd = 0;
  int D() const { return H * hd; }
  int64_t probs_size() const { return int64_t(nseq) * H * S * S; }
};

// One AdamW update's scalars (trainer/adamw.h): g = grad * grad_scale; m = b1 m + (1 - b1) g;
// v = b2 v + (1 - b2) g^2; p -= lr ((m / bc1) / (sqrt(v / bc2) + eps) + weight_decay mask p).
struct AdamWStep {
  float lr, beta1, beta2, eps, weight_decay, bc1, bc2, grad_scale;
};

// A device's memory and execution: buffers, host transfers, synchronisation and recorded units.
class DeviceMemory {
 public:
  virtual ~DeviceMemory() = default;
  // Waits until every op issued so far has finished (a GPU runs them asynchronously); for timing.
  virtual void synchronize() {}

  // Decoding repeats one short sequence of ops per byte (and per patch) with a few arguments
  // changed. Ops issued between begin_recorded(key) and end_recorded() may be collected and run
  // as one unit when end_recorded() is called: the CUDA backend keeps one CUDA graph per key,
  // updates its arguments and launches it once instead of dozens of kernels. Inside, no op may
  // allocate or copy between host and device memory (such a call throws; releases are deferred
  // until the unit has run), except small index uploads. cancel_recorded()
  // drops what was collected (after an exception). The CPU runs ops at once and ignores these.
  virtual void begin_recorded(uint64_t key) {}
  virtual void end_recorded() {}
  virtual void cancel_recorded() {}

  virtual float* alloc(size_t count) = 0;  // zero-initialised
  virtual void release(float* p) = 0;
  virtual void upload(float* dst, const float* host, size_t count) = 0;
  virtual void download(float* host, const float* src, size_t count) = 0;
  virtual void fill(float* dst, float value, size_t count) = 0;
  virtual void copy(float* dst, const float* src, size_t count) = 0;
  // Index buffers (byte values, row indices) live beside the float buffers.
  virtual int32_t* alloc_index(size_t count) = 0;
  virtual void release_index(int32_t* p) = 0;
  virtual void upload_index(int32_t* dst, const int32_t* host, size_t count) = 0;
};

// The op table the model, trainer and decoder are written against: every computation, on device
// memory. Each op's contract (shapes, accumulation, reduction order) is stated once, here.
// bf16 weight panels (gemm_bf16): columns in panels of kBf16Panel; panel p holds columns
// [p kBf16Panel, p kBf16Panel + w) as a [K, w] row-major block, w = min(kBf16Panel, N - p kBf16Panel),
// the panels one after another. In each k row the full groups of 32 columns are interleaved (slot
// 2i holds column i of the group, 2i + 1 column 16 + i: a CPU widens a vector load of them with a
// shift and a mask, no shuffle) and the last w % 32 columns follow in order. `B` is [K, N] row-major (ldb) bf16; `out` has K N
// values.
constexpr int kBf16Panel = 128;
void pack_bf16_panels(const uint16_t* B, int K, int N, int ldb, uint16_t* out);

// int8 products (gemm_i8), for inference: 8-bit integer weights times 7-bit integer activations,
// summed exactly in 32-bit integers (so the order of the sum does not matter), then one fixed
// fp32 epilogue. Weights: each output column rounded to int8 in [-127, 127] with its own scale
// (max |w| / 127), in panels of kI8Panel columns; with K4 = ceil(K / 4), panel p holds columns
// [p kI8Panel, p kI8Panel + w) as [K4][w][4] bytes (the 4 consecutive k of one column together,
// k >= K zero), the panels one after another (N K4 4 bytes). `W` is [N, K] row-major (out x in,
// torch.nn.Linear's layout); b_scale gets N scales, b_colsum N sums of the column's int8 values.
constexpr int kI8Panel = 128;
constexpr int kI8ActivationOffset = 64;  // activations are stored as q + 64 in [1, 127]
size_t i8_panel_bytes(int N, int K);
void pack_i8_panels(const float* W, int N, int K, int8_t* out, float* b_scale, int32_t* b_colsum);
// One row of activations to 7 bits: scale = max |x| / 63 (1 when x is all zero), q = x / scale
// rounded to the nearest integer (ties to even) in [-63, 63], stored as q + 64; positions
// [K, 4 ceil(K / 4)) hold 64 (zero). Exact IEEE operations only: the same bytes on every CPU.
void quantize_row_u7(const float* x, int K, uint8_t* q, float* scale);

class DeviceOps {
 public:
  virtual ~DeviceOps() = default;
  // C[M,N] = alpha * op(A)[M,K] op(B)[K,N] + beta * C, row-major with leading dimensions.
  virtual void gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda, const float* B,
                    int ldb, float beta, float* C, int ldc) = 0;
  // The same product, then + bias[N] when given (C = alpha A B + beta C, then C + bias), with
  // B [K, N] held as bf16 in column panels (pack_bf16_panels): weights rounded to bf16, read by
  // decoding's few-row products at half the bytes, each panel contiguous so a core streams its
  // columns in order. bf16 widens to float exactly, so the result is bitwise gemm(false, false, ...)
  // on the widened values followed by add_bias. Backends without it say so and are never asked.
  // With gelu_out, also gelu_out = gelu(C) (same layout; may be C): each thread on its own columns
  // right after computing them, bitwise gelu_forward's values.
  virtual bool has_gemm_bf16() const { return false; }
  virtual void gemm_bf16(int M, int N, int K, float alpha, const float* A, int lda, const uint16_t* B_panels, float beta,
                         float* C, int ldc, const float* bias = nullptr, float* gelu_out = nullptr);
  // int8 products (kI8Panel): C[M, N] from activations Aq [M, lda bytes] quantized row by row
  // (quantize_rows_u7: a_scale one per row) and weights in int8 panels (pack_i8_panels): per
  // output, s = the exact integer sum over k of Aq * B, then
  //   y = float(s - 64 b_colsum[j]) * a_scale[i];  y = y * b_scale[j];
  //   if beta != 0: y = y + beta C;  if bias: y = y + bias[j];  C = y
  // each step one fp32 rounding, on every backend and path. With gelu_out, also gelu_out = gelu(C).
  virtual bool has_gemm_i8() const { return false; }
  virtual void quantize_rows_u7(const float* x, int rows, int K, int ldx, uint8_t* q, int ldq, float* scale);
  virtual void gemm_i8(int M, int N, int K, const uint8_t* Aq, int lda, const float* a_scale, const int8_t* B_panels,
                       const float* b_scale, const int32_t* b_colsum, float beta, float* C, int ldc, const float* bias = nullptr,
                       float* gelu_out = nullptr);
  // y[rows, out] = x[rows, in] W^T (+ bias): W stored [out, in] like torch.nn.Linear.
  void linear_forward(float* y, const float* x, const float* W, const float* bias, int rows, int in, int out);
  // dx = dy W (or += with accumulate_dx); dW += dy^T x; dbias += column sums of dy.
  void linear_backward(float* dx, float* dW, float* dbias, const float* dy, const float* x, const float* W, int rows, int in,
                       int out, bool accumulate_dx = false);

  virtual void add_bias(float* y, const float* bias, int rows, int cols) = 0;
  virtual void bias_backward(float* dbias, const float* dy, int rows, int cols) = 0;  // +=
  virtual void add_inplace(float* y, const float* x, size_t count) = 0;               // y += x

  // LayerNorm over the last dim C (eps 1e-5); mean/rstd [rows] are saved for backward.
  virtual void layernorm_forward(float* out, float* mean, float* rstd, const float* x, const float* w, const float* b, int rows,
                                 int C) = 0;
  // dx +=, dw +=, db +=
  virtual void layernorm_backward(float* dx, float* dw, float* db, const float* dout, const float* x, const float* w,
                                  const float* mean, const float* rstd, int rows, int C) = 0;

  // GELU, exact erf form.
  virtual void gelu_forward(float* out, const float* x, size_t count) = 0;
  virtual void gelu_backward(float* dx, const float* x, const float* dout, size_t count) = 0;

  // RMSNorm without affine over groups of `width` values (eps 1e-6); rstd [rows*groups].
  // x has row stride ld_x, out is dense [rows, groups*width].
  virtual void rmsnorm_forward(float* out, float* rstd, const float* x, int ld_x, int rows, int groups, int width) = 0;
  // dx (row stride ld_x) = ; uses the normalised output y.
  virtual void rmsnorm_backward(float* dx, int ld_x, const float* dout, const float* y, const float* rstd, int rows, int groups,
                                int width) = 0;

  // out = silu(g) * y; g has row stride ld_g, y/out dense [rows, cols].
  virtual void swish_gate_forward(float* out, const float* g, int ld_g, const float* y, int rows, int cols) = 0;
  // dg (row stride ld_g) =, dy =
  virtual void swish_gate_backward(float* dg, float* dy, int ld_g, const float* g, const float* y, const float* dout, int rows,
                                   int cols) = 0;

  // Rotary position (interleaved pairs) on `heads` blocks of width hd starting at x, row stride ld;
  // row r is position pos0 + r % seq_len. Then multiplies by `scale`. inverse = apply the
  // transpose (the backward of the forward with the same scale).
  virtual void rope(float* x, int ld, int rows, int heads, int hd, int seq_len, int64_t pos0, float scale, bool inverse) = 0;

  // Embedding rows: out[i] = table[idx[i]] (or += with accumulate); backward
  // dtable[idx[i]] += dout[i].
  virtual void embedding_forward(float* out, const float* table, const int32_t* idx, int count, int dim,
                                 bool accumulate = false) = 0;
  virtual void embedding_backward(float* dtable, const float* dout, const int32_t* idx, int count, int dim) = 0;

  // Cross-entropy over V classes; losses[rows] in nats. The fused form also turns logits into
  // dlogits = (softmax - onehot) * dscale in place.
  virtual void crossentropy_forward(float* losses, const float* logits, const int32_t* targets, int rows, int V) = 0;
  virtual void crossentropy_fused_backward(float* losses, float* logits_to_dlogits, const int32_t* targets, int rows, int V,
                                           float dscale) = 0;

  // Causal softmax attention (scale 1/sqrt(hd)); out [nseq*S, D]; probs saved for backward.
  virtual void attention_forward(float* out, float* probs, const float* qkv, const AttentionShape& s) = 0;
  // dqkv = (all of it is written)
  virtual void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* probs,
                                  const AttentionShape& s) = 0;

  // One query row against n cached keys/values (decoding with a KV cache): q [H*hd],
  // k/v rows of stride ld, out [H*hd]; softmax scale 1/sqrt(hd), no mask (all n are visible).
  virtual void attention_decode(float* out, const float* q, const float* k, const float* v, int n, int ld, int H, int hd) = 0;

  // Chunkwise retention. gammas[H]. state_in may be null (zeros); state_out may be null.
  // saved_states [B, H, nchunks, dk, dv] receives the state entering each chunk (null if no
  // backward will follow).
  virtual void retention_chunkwise_forward(float* o, const float* q, const float* k, const float* v, const float* gammas,
                                           const RetentionShape& s, int chunk, const float* state_in, float* state_out,
                                           float* saved_states) = 0;
  // dq, dk, dv = (same strides as q, k, v); dstate_out (gradient reaching the final state, may be
  // null = zeros); dstate_in = gradient of the initial state (may be null).
  virtual void retention_chunkwise_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                                            const float* v, const float* gammas, const RetentionShape& s, int chunk,
                                            const float* saved_states, const float* dstate_out, float* dstate_in) = 0;
  // The optimiser's two passes over every parameter (element-wise, so any split gives the same
  // bits). sum_squares sums x^2 in double over fixed blocks of 4096, then the blocks in order.
  virtual void adamw_step(float* p, const float* g, float* m, float* v, const float* decay_mask, size_t n,
                          const AdamWStep& s) = 0;
  virtual double sum_squares(const float* x, size_t n) = 0;

  // Recurrent retention, one position at a time: S = gamma S + k^T v, o = q S. `state`
  // [B, H, dk, dv] is read and updated in place (the decoding form; no backward).
  virtual void retention_recurrent_forward(float* o, const float* q, const float* k, const float* v, const float* gammas,
                                           const RetentionShape& s, float* state) = 0;
};

// A backend: one device's memory and its op table (the CPU paths, CUDA, the tests' emulated GPU).
class Backend : public DeviceMemory, public DeviceOps {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  // Which implementation runs its kernels ("avx512", "avx2", "portable" on the CPU).
  virtual std::string kernel_path() const { return name(); }
  virtual int threads() const = 0;
  // Host work across the backend's host threads (the codec's independent lanes): fn(begin, end) on
  // disjoint ranges covering [0, n), in any order, on any thread; returns when all are done. fn must
  // not throw. Serial unless the backend has a pool of host threads.
  virtual void host_parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
    if (n > 0) fn(0, n);
  }
};

// Runs fn() between be.begin_recorded(key) and be.end_recorded(); cancels on an exception.
template <class Fn>
void run_recorded(Backend& be, uint64_t key, Fn&& fn) {
  be.begin_recorded(key);
#if defined(__cpp_exceptions)
  try {
    fn();
  } catch (...) {
    be.cancel_recorded();
    throw;
  }
#else  // a translation unit built without exceptions (the ISA kernels, which never record)
  fn();
#endif
  be.end_recorded();
}

// A backend buffer that frees itself.
class Buffer {
 public:
  Buffer() = default;
  Buffer(Backend& be, size_t count) : be_(&be), p_(be.alloc(count)), n_(count) {}
  ~Buffer() { reset(); }
  Buffer(Buffer&& o) noexcept : be_(o.be_), p_(o.p_), n_(o.n_) { o.p_ = nullptr, o.n_ = 0; }
  Buffer& operator=(Buffer&& o) noexcept {
    if (this != &o) {
      reset();
      be_ = o.be_, p_ = o.p_, n_ = o.n_;
      o.p_ = nullptr, o.n_ = 0;
    }
    return *this;
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  float* data() const { return p_; }
  size_t size() const { return n_; }
  Buffer clone() const {
    Buffer b(*be_, n_);
    be_->copy(b.p_, p_, n_);
    return b;
  }
  void reset() {
    if (p_) be_->release(p_);
    p_ = nullptr, n_ = 0;
  }

 private:
  Backend* be_ = nullptr;
  float* p_ = nullptr;
  size_t n_ = 0;
};

// The CPU backend on the path RETBYTE_CPU names, else the best this CPU has (an rb::Error when
// RETBYTE_CPU is unknown or unsupported). threads <= 0 means every available core.
std::unique_ptr<Backend> make_cpu_backend(int threads);

// Decay of retention head h: 1 - 2^(-5-h).
inline float retention_gamma(int h) { return 1.0f - float(1.0 / double(int64_t(1) << (5 + h))); }

}  // namespace rb
