#include "kernels/cpu/cpu_backend.h"

#include <sched.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#include "src/common/dmath.h"
#include "kernels/numerics.h"
#include "src/common/errors.h"

namespace rb {

namespace {
// Below this many floats of work a loop runs on the calling thread: handing it to the pool costs
// more than the work (decoding calls every kernel on a single row).
constexpr int64_t kParallelMin = 16384;
// Column reductions (bias and norm-weight gradients) sum fixed blocks of rows, then the blocks in
// order: the result does not depend on the thread count.
constexpr int kReduceBlock = 64;
}  // namespace

int available_cpus() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
  return 1;
}

CpuBackend::CpuBackend(int threads, CpuPath path) : k_(cpu_kernels(path)), pool_(threads > 0 ? threads : available_cpus()) {
  if (!cpu_path_supported(path)) throw Error(std::string("this CPU cannot run the ") + cpu_path_name(path) + " kernels");
}

std::unique_ptr<Backend> make_cpu_backend(int threads, CpuPath path) { return std::make_unique<CpuBackend>(threads, path); }
std::unique_ptr<Backend> make_cpu_backend(int threads) { return make_cpu_backend(threads, selected_cpu_path()); }

void CpuBackend::for_rows(int64_t rows, int64_t per_row, RangeFn fn) {
  if (rows <= 0) return;
  const int64_t grain = std::max<int64_t>(1, kParallelMin / std::max<int64_t>(1, per_row));
  pool_.parallel_for(rows, grain, fn);
}

template <typename BlockFn>
static void column_reduce(ThreadPool& pool, std::vector<float>& scratch, float* acc, int rows, int C, BlockFn&& accumulate_rows) {
  const int nblocks = (rows + kReduceBlock - 1) / kReduceBlock;
  if (scratch.size() < size_t(nblocks) * C) scratch.resize(size_t(nblocks) * C);  // kept: no page faults per call
  std::fill(scratch.begin(), scratch.begin() + long(nblocks) * C, 0.0f);
  float* const partial = scratch.data();
  pool.parallel_for(nblocks, std::max<int64_t>(1, kParallelMin / (int64_t(kReduceBlock) * C + 1)), [&](int64_t b0, int64_t b1) {
    for (int64_t blk = b0; blk < b1; blk++) {
      float* p = partial + size_t(blk) * C;
      accumulate_rows(p, int(blk) * kReduceBlock, std::min<int>(rows, int(blk + 1) * kReduceBlock));
    }
  });
  for (int blk = 0; blk < nblocks; blk++) {
    const float* p = partial + size_t(blk) * C;
    for (int c = 0; c < C; c++) acc[c] += p[c];
  }
}

float* CpuBackend::alloc(size_t count) {
  const size_t bytes = ((count * sizeof(float) + 63) / 64) * 64;
  void* p = std::aligned_alloc(64, bytes ? bytes : 64);
  if (!p) throw std::bad_alloc();
  std::memset(p, 0, bytes);
  return static_cast<float*>(p);
}
void CpuBackend::release(float* p) { std::free(p); }
void CpuBackend::upload(float* dst, const float* host, size_t count) { std::memcpy(dst, host, count * sizeof(float)); }
void CpuBackend::download(float* host, const float* src, size_t count) { std::memcpy(host, src, count * sizeof(float)); }
void CpuBackend::fill(float* dst, float value, size_t count) { std::fill(dst, dst + count, value); }
void CpuBackend::copy(float* dst, const float* src, size_t count) { std::memcpy(dst, src, count * sizeof(float)); }
int32_t* CpuBackend::alloc_index(size_t count) {
  return reinterpret_cast<int32_t*>(alloc(count));  // same size and alignment as float
}
void CpuBackend::release_index(int32_t* p) { std::free(p); }
void CpuBackend::upload_index(int32_t* dst, const int32_t* host, size_t count) {
  std::memcpy(dst, host, count * sizeof(int32_t));
}

// Few rows (decoding): columns split across the pool, B streamed once. Otherwise rows split at
// multiples of the tile. Either way each element's arithmetic is the contract's, so the result
// does not depend on the split, the thread count or M (batch invariance).
constexpr int kSmallM = 4;

void CpuBackend::gemm_serial(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb,
                             float beta, float* C, int ldc) const {
  if (M <= 0 || N <= 0) return;
  if (M < kSmallM)
    k_.gemm_cols(ta, tb, M, 0, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  else
    k_.gemm_rows(ta, tb, 0, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

namespace {
// Columns per chunk of a few-row fp32 product: one register group of 128 (8 vectors) for wide
// products, 64 for narrower ones, so that N = 128 still splits in two and each chunk keeps 4+
// independent FMA chains. The caller claims chunks from the front and the worker from the back:
// at an even pace each core streams the same columns product after product (its share of the
// weights stays in its L2); a slowed worker just claims fewer.
// Decoding's products below this many multiply-adds are small jobs for the pool (ThreadPool::JobSize):
// on a VM whose two cores were ~0.5 us apart a round trip, a 512 x 256 bf16 product (131k, 1.5 us)
// lost 0.3 us when split and a 256 x 1536 one (393k, 5.3 us) gained 2.2 us.
ThreadPool::JobSize job_size(int64_t multiply_adds) {
  return multiply_adds < (int64_t(1) << 18) ? ThreadPool::JobSize::Small : ThreadPool::JobSize::Large;
}

int few_row_chunk(int N, int threads) {
  if (threads <= 1) return N;
  return N >= 512 ? 128 : 64;
}

// The same for bf16 panels: two chunks per thread, whole groups of 32 columns (the panels' unit),
// at least 64. Each claim moves the job's cache line between the cores (~0.1 us), and the bf16
// kernel is fast enough for that to show: a 1536-column product in 12 chunks took 6.0 us, in 4
// 4.9-5.4 us (Zen 5 VM).
int few_row_chunk_bf16(int N, int threads) {
  if (threads <= 1) return N;
  const int per_chunk = (N + 2 * threads - 1) / (2 * threads);
  return std::max(64, (per_chunk + 31) / 32 * 32);
}
}  // namespace

void CpuBackend::gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb,
                      float beta, float* C, int ldc) {
  if (M <= 0 || N <= 0) return;
  const int64_t work = int64_t(M) * N * std::max(K, 1);
  const int nt = threads();
  // Few rows are memory-bound: splitting them pays off earlier (each core streams part of W).
  const int64_t serial_below = M < kSmallM ? (int64_t(1) << 14) : (int64_t(1) << 17);
  if (nt == 1 || work < serial_below) return gemm_serial(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  if (M < kSmallM) {
    const int cols = few_row_chunk(N, nt);
    pool_.parallel_for((N + cols - 1) / cols, 1,
                       [&](int64_t c0, int64_t c1) {
                         k_.gemm_cols(ta, tb, M, int(c0) * cols, std::min<int>(N, int(c1) * cols), K, alpha, A, lda, B, ldb, beta,
                                      C, ldc);
                       },
                       job_size(work));
    return;
  }
  if (K <= 0) return gemm_serial(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  // Goto blocking with each block of op(B) packed once, shared: panels packed across the pool,
  // then rows split across it. K blocks run in order, so the bits are gemm_serial's.
  const int mr = k_.gemm_mr, nr = k_.gemm_nr, KC = kGemmKC, NC = k_.gemm_nc;
  const int kc_max = std::min(K, KC), nc_max = std::min(N, NC);
  const size_t need = size_t(kc_max) * ((nc_max + nr - 1) / nr * nr);
  if (bpack_.size() < need) bpack_.resize(need);
  float* bpack = bpack_.data();
  const bool pack_all = tb || M >= 2048;  // contiguous panels pay off when many rows reuse them
  const int row_chunk = std::min(k_.gemm_mc, std::max(mr, (M + 4 * nt - 1) / (4 * nt) + mr - 1) / mr * mr);
  for (int jc = 0; jc < N; jc += NC) {
    const int nc = std::min(NC, N - jc), npanels = (nc + nr - 1) / nr;
    for (int pc = 0; pc < K; pc += KC) {
      const int kc = std::min(KC, K - pc);
      if (pack_all) {  // B^T (transposed), or B reused by many rows: every panel, across the pool
        pool_.parallel_for(npanels, std::max(1, 2048 / kc), [&](int64_t p0, int64_t p1) {
          k_.pack_b(bpack + size_t(p0) * kc * nr, B, ldb, tb, pc, kc, jc + int(p0) * nr,
                    std::min(nc, int(p1) * nr) - int(p0) * nr);
        });
      } else if (nc % nr) {  // whole panels of B are read in place; only a ragged one is packed
        const int last = (npanels - 1) * nr;
        k_.pack_b(bpack + size_t(last) * kc, B, ldb, tb, pc, kc, jc + last, nc - last);
      }
      pool_.parallel_for((M + row_chunk - 1) / row_chunk, 1, [&](int64_t c0, int64_t c1) {
        k_.gemm_packed_rows(ta, tb, pack_all, int(c0) * row_chunk, std::min<int>(M, int(c1) * row_chunk), A, lda, B, ldb, pc, kc,
                            jc, nc, bpack, alpha, beta, C, ldc, pc == 0);
      });
    }
  }
}

// Few-row products on weight panels (bf16, int8): columns across the pool, as few-row fp32
// products; each core streams its part of the weights and finishes its own columns (bias, gelu).
template <class Columns>
void CpuBackend::panel_columns(int M, int N, int K, float* C, int ldc, float* gelu_out, const Columns& product) {
  const auto columns = [&](int j0, int j1) {
    product(j0, j1);
    if (gelu_out)
      for (int i = 0; i < M; i++) k_.gelu(gelu_out + size_t(i) * ldc + j0, C + size_t(i) * ldc + j0, size_t(j1 - j0));
  };
  // Below ~64k multiply-adds (~1.5 us on one core) the hand-off and the activations' trip to the
  // other core cost more than half the work (measured on the Zen 5 VM: a 384 x 128 product 1.3 us
  // alone, 1.55 us split; 512 x 128 1.7 us alone, 1.4 us split).
  const int64_t work = int64_t(M) * N * std::max(K, 1);
  if (threads() == 1 || work < (int64_t(1) << 16)) return columns(0, N);
  const int cols = few_row_chunk_bf16(N, threads());
  pool_.parallel_for((N + cols - 1) / cols, 1,
                     [&](int64_t c0, int64_t c1) { columns(int(c0) * cols, std::min<int>(N, int(c1) * cols)); }, job_size(work));
}

void CpuBackend::gemm_bf16(int M, int N, int K, float alpha, const float* A, int lda, const uint16_t* B_panels, float beta,
                           float* C, int ldc, const float* bias, float* gelu_out) {
  if (M <= 0 || N <= 0) return;
  panel_columns(M, N, K, C, ldc, gelu_out,
                [&](int j0, int j1) { k_.gemm_cols_bf16(M, j0, j1, N, K, alpha, A, lda, B_panels, beta, C, ldc, bias); });
}

void CpuBackend::quantize_rows_u7(const float* x, int rows, int K, int ldx, uint8_t* q, int ldq, float* scale) {
  const auto quantize = [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; i++) k_.quantize_u7(x + size_t(i) * ldx, K, q + size_t(i) * ldq, scale + i);
  };
  if (rows == 1) return quantize(0, 1);  // decoding: no hand-off for one row
  for_rows(rows, K, quantize);           // the encoder's batched rows: each row on its own, the same bytes
}

void CpuBackend::gemm_i8(int M, int N, int K, const uint8_t* Aq, int lda, const float* a_scale, const int8_t* B_panels,
                         const float* b_scale, const int32_t* b_colsum, float beta, float* C, int ldc, const float* bias,
                         float* gelu_out) {
  if (M <= 0 || N <= 0) return;
  panel_columns(M, N, K, C, ldc, gelu_out, [&](int j0, int j1) {
    k_.gemm_cols_i8(M, j0, j1, N, K, Aq, lda, a_scale, B_panels, b_scale, b_colsum, beta, C, ldc, bias);
  });
}

void CpuBackend::add_bias(float* y, const float* bias, int rows, int cols) {
  for_rows(rows, cols, [&](int64_t r0, int64_t r1) { k_.add_bias_rows(y, bias, int(r0), int(r1), cols); });
}

void CpuBackend::bias_backward(float* dbias, const float* dy, int rows, int cols) {
  column_reduce(pool_, reduce_scratch_, dbias, rows, cols, [&](float* p, int r0, int r1) { k_.add_rows(p, dy, r0, r1, cols); });
}

void CpuBackend::add_inplace(float* y, const float* x, size_t count) {
  pool_.parallel_for(int64_t(count), kParallelMin, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++) y[i] += x[i];
  });
}

void CpuBackend::layernorm_forward(float* out, float* mean, float* rstd, const float* x, const float* w, const float* b, int rows,
                                   int C) {
  for_rows(rows, C, [&](int64_t r0, int64_t r1) { k_.layernorm_rows(out, mean, rstd, x, w, b, int(r0), int(r1), C); });
}

void CpuBackend::layernorm_backward(float* dx, float* dw, float* db, const float* dout, const float* x, const float* w,
                                    const float* mean, const float* rstd, int rows, int C) {
  for_rows(rows, C, [&](int64_t r0, int64_t r1) { k_.layernorm_backward_rows(dx, dout, x, w, mean, rstd, int(r0), int(r1), C); });
  const int C2 = 2 * C;
  std::vector<float> both(size_t(C2), 0.0f);
  column_reduce(pool_, reduce_scratch_, both.data(), rows, C2,
                [&](float* p, int r0, int r1) { k_.layernorm_param_grad_rows(p, p + C, dout, x, mean, rstd, r0, r1, C); });
  for (int c = 0; c < C; c++) {
    dw[c] += both[c];
    db[c] += both[C + c];
  }
}

void CpuBackend::gelu_forward(float* out, const float* x, size_t count) {
  pool_.parallel_for(int64_t(count), kParallelMin, [&](int64_t b, int64_t e) { k_.gelu(out + b, x + b, size_t(e - b)); });
}

void CpuBackend::gelu_backward(float* dx, const float* x, const float* dout, size_t count) {
  pool_.parallel_for(int64_t(count), kParallelMin,
                     [&](int64_t b, int64_t e) { k_.gelu_backward(dx + b, x + b, dout + b, size_t(e - b)); });
}

void CpuBackend::rmsnorm_forward(float* out, float* rstd, const float* x, int ld_x, int rows, int groups, int width) {
  for_rows(rows, int64_t(groups) * width,
           [&](int64_t r0, int64_t r1) { k_.rmsnorm_rows(out, rstd, x, ld_x, int(r0), int(r1), groups, width); });
}

void CpuBackend::rmsnorm_backward(float* dx, int ld_x, const float* dout, const float* y, const float* rstd, int rows, int groups,
                                  int width) {
  for_rows(rows, int64_t(groups) * width,
           [&](int64_t r0, int64_t r1) { k_.rmsnorm_backward_rows(dx, ld_x, dout, y, rstd, int(r0), int(r1), groups, width); });
}

void CpuBackend::swish_gate_forward(float* out, const float* g, int ld_g, const float* y, int rows, int cols) {
  for_rows(rows, cols, [&](int64_t r0, int64_t r1) { k_.swish_gate_rows(out, g, ld_g, y, int(r0), int(r1), cols); });
}

void CpuBackend::swish_gate_backward(float* dg, float* dy, int ld_g, const float* g, const float* y, const float* dout, int rows,
                                     int cols) {
  for_rows(rows, cols,
           [&](int64_t r0, int64_t r1) { k_.swish_gate_backward_rows(dg, dy, ld_g, g, y, dout, int(r0), int(r1), cols); });
}

void CpuBackend::rope(float* x, int ld, int rows, int heads, int hd, int seq_len, int64_t pos0, float scale, bool inverse) {
  const int half = hd / 2;
  const int npos = std::min(rows, seq_len);
  // Angles in double with the project's own exp/log/sin/cos, so every CPU has the same table.
  RopeTable& t = rope_table_;
  if (t.pos0 != pos0 || t.npos != npos || t.hd != hd || t.inverse != inverse) {
    t.cs.resize(size_t(npos) * half);
    t.sn.resize(size_t(npos) * half);
    const double log_base = dmath::log(10000.0);
    for (int i = 0; i < half; i++) {
      const double theta = dmath::exp(-(2.0 * i / hd) * log_base);
      for (int p = 0; p < npos; p++) {
        double s, c;
        dmath::sincos(double(pos0 + p) * theta, &s, &c);
        t.cs[size_t(p) * half + i] = float(c);
        t.sn[size_t(p) * half + i] = float(inverse ? -s : s);
      }
    }
    t.pos0 = pos0, t.npos = npos, t.hd = hd, t.inverse = inverse;
  }
  const std::vector<float>&cs = t.cs, &sn = t.sn;
  for_rows(rows, int64_t(heads) * hd, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      const float* c = cs.data() + size_t(r % seq_len) * half;
      const float* s = sn.data() + size_t(r % seq_len) * half;
      for (int h = 0; h < heads; h++) {
        float* xr = x + size_t(r) * ld + size_t(h) * hd;
        for (int i = 0; i < half; i++) {
          const float a = xr[2 * i], b = xr[2 * i + 1];
          xr[2 * i] = (a * c[i] - b * s[i]) * scale;
          xr[2 * i + 1] = (a * s[i] + b * c[i]) * scale;
        }
      }
    }
  });
}

void CpuBackend::embedding_forward(float* out, const float* table, const int32_t* idx, int count, int dim, bool accumulate) {
  for_rows(count, dim, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) {
      float* o = out + size_t(i) * dim;
      const float* t = table + size_t(idx[i]) * dim;
      if (!accumulate) {
        std::memcpy(o, t, dim * sizeof(float));
        continue;
      }
      for (int c = 0; c < dim; c++) o[c] += t[c];
    }
  });
}

void CpuBackend::embedding_backward(float* dtable, const float* dout, const int32_t* idx, int count, int dim) {
  // Chunks own ranges of table rows: colliding indices never race, each row sums its gradients
  // in increasing i whatever the split, and each chunk reads only the gradient rows it owns.
  int32_t rows = 0;
  for (int i = 0; i < count; i++) rows = std::max(rows, idx[i] + 1);
  const int64_t grain = std::max<int64_t>(1, (rows + 2 * threads() - 1) / (2 * threads()));
  pool_.parallel_for(rows, int64_t(count) * dim < kParallelMin ? rows : grain, [&](int64_t r0, int64_t r1) {
    for (int i = 0; i < count; i++) {
      if (idx[i] < r0 || idx[i] >= r1) continue;
      float* dst = dtable + size_t(idx[i]) * dim;
      const float* src = dout + size_t(i) * dim;
      for (int c = 0; c < dim; c++) dst[c] += src[c];
    }
  });
}

void CpuBackend::adamw_step(float* p, const float* g_raw, float* m, float* v, const float* mask, size_t n, const AdamWStep& s) {
  pool_.parallel_for(int64_t(n), 65536,
                     [&](int64_t b, int64_t e) { k_.adamw_range(p, g_raw, m, v, mask, size_t(b), size_t(e), s); });
}

double CpuBackend::sum_squares(const float* x, size_t n) {
  constexpr size_t kBlock = 4096;
  const size_t nblocks = (n + kBlock - 1) / kBlock;
  std::vector<double> partial(nblocks, 0.0);
  pool_.parallel_for(int64_t(nblocks), 16, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; b++) {
      double s = 0.0;
      for (size_t i = size_t(b) * kBlock; i < std::min(n, size_t(b + 1) * kBlock); i++) s += double(x[i]) * x[i];
      partial[size_t(b)] = s;
    }
  });
  double total = 0.0;
  for (double s : partial) total += s;
  return total;
}

void CpuBackend::crossentropy_forward(float* losses, const float* logits, const int32_t* targets, int rows, int V) {
  for_rows(rows, int64_t(V) * 8, [&](int64_t r0, int64_t r1) {
    k_.crossentropy_rows(losses, const_cast<float*>(logits), targets, int(r0), int(r1), V, false, 0.0f);
  });
}

void CpuBackend::crossentropy_fused_backward(float* losses, float* logits, const int32_t* targets, int rows, int V,
                                             float dscale) {
  for_rows(rows, int64_t(V) * 8,
           [&](int64_t r0, int64_t r1) { k_.crossentropy_rows(losses, logits, targets, int(r0), int(r1), V, true, dscale); });
}

}  // namespace rb
