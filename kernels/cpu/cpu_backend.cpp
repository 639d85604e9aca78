#include "kernels/cpu/cpu_backend.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#include "kernels/cpu/gemm_avx512.h"
#include "kernels/cpu/vecmath.h"

extern "C" void openblas_set_num_threads(int);

namespace rb {

namespace {
// Below this many floats a loop runs on the calling thread: waking the team costs more than the
// work (decoding calls every kernel on a single row).
constexpr size_t kParallelMin = 16384;

// Column reductions (bias and norm-weight gradients) sum fixed blocks of rows, then the blocks in
// order: the result does not depend on the thread count.
constexpr int kReduceBlock = 64;

template <typename RowFn>
void column_reduce(float* acc, int rows, int C, int threads, RowFn&& accumulate_row) {
  const int nblocks = (rows + kReduceBlock - 1) / kReduceBlock;
  std::vector<float> partial(size_t(nblocks) * C, 0.0f);
#pragma omp parallel for num_threads(threads) schedule(static) if (nblocks > 1)
  for (int blk = 0; blk < nblocks; blk++) {
    float* p = partial.data() + size_t(blk) * C;
    const int r1 = std::min(rows, (blk + 1) * kReduceBlock);
    for (int r = blk * kReduceBlock; r < r1; r++) accumulate_row(p, r);
  }
  for (int blk = 0; blk < nblocks; blk++) {
    const float* p = partial.data() + size_t(blk) * C;
#pragma omp simd
    for (int c = 0; c < C; c++) acc[c] += p[c];
  }
}
}  // namespace

CpuBackend::CpuBackend(int threads) {
  threads_ = threads > 0 ? threads : omp_get_num_procs();
  omp_set_num_threads(threads_);
  openblas_set_num_threads(threads_);
  const char* env = std::getenv("RETBYTE_GEMM");  // "openblas" forces the OpenBLAS path
  use_avx512_ = sgemm_avx512_available() && !(env && std::string(env) == "openblas");
}

float* CpuBackend::alloc(size_t count) {
  const size_t bytes = ((count * sizeof(float) + 63) / 64) * 64;
  void* p = std::aligned_alloc(64, bytes ? bytes : 64);
  if (!p) throw std::bad_alloc();
  std::memset(p, 0, bytes);
  return static_cast<float*>(p);
}
void CpuBackend::release(float* p) { std::free(p); }
void CpuBackend::upload(float* dst, const float* host, size_t count) {
  std::memcpy(dst, host, count * sizeof(float));
}
void CpuBackend::download(float* host, const float* src, size_t count) {
  std::memcpy(host, src, count * sizeof(float));
}
void CpuBackend::fill(float* dst, float value, size_t count) { std::fill(dst, dst + count, value); }
void CpuBackend::copy(float* dst, const float* src, size_t count) {
  std::memcpy(dst, src, count * sizeof(float));
}
int32_t* CpuBackend::alloc_index(size_t count) {
  return reinterpret_cast<int32_t*>(alloc(count));  // same size and alignment as float
}
void CpuBackend::release_index(int32_t* p) { std::free(p); }
void CpuBackend::upload_index(int32_t* dst, const int32_t* host, size_t count) {
  std::memcpy(dst, host, count * sizeof(int32_t));
}

void CpuBackend::gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A,
                      int lda, const float* B, int ldb, float beta, float* C, int ldc) {
  if (M == 0 || N == 0) return;
  if (M == 1) {  // one row (decoding): sgemv, since sgemm would repack all of B on every call
    const int incx = trans_a ? lda : 1;
    if (trans_b) cblas_sgemv(CblasRowMajor, CblasNoTrans, N, K, alpha, B, ldb, A, incx, beta, C, 1);
    else cblas_sgemv(CblasRowMajor, CblasTrans, K, N, alpha, B, ldb, A, incx, beta, C, 1);
    return;
  }
  if (use_avx512_) {
    sgemm_avx512(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, threads_);
    return;
  }
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void CpuBackend::add_bias(float* y, const float* bias, int rows, int cols) {
#pragma omp parallel for num_threads(threads_) schedule(static) if (size_t(rows) * cols >= kParallelMin)
  for (int r = 0; r < rows; r++) {
    float* yr = y + size_t(r) * cols;
#pragma omp simd
    for (int c = 0; c < cols; c++) yr[c] += bias[c];
  }
}

void CpuBackend::bias_backward(float* dbias, const float* dy, int rows, int cols) {
  column_reduce(dbias, rows, cols, threads_, [&](float* p, int r) {
    const float* d = dy + size_t(r) * cols;
#pragma omp simd
    for (int c = 0; c < cols; c++) p[c] += d[c];
  });
}

void CpuBackend::add_inplace(float* y, const float* x, size_t count) {
#pragma omp parallel for simd num_threads(threads_) schedule(static) if (count >= kParallelMin)
  for (size_t i = 0; i < count; i++) y[i] += x[i];
}

void CpuBackend::layernorm_forward(float* out, float* mean, float* rstd, const float* x,
                                   const float* w, const float* b, int rows, int C) {
#pragma omp parallel for num_threads(threads_) schedule(static) if (size_t(rows) * C >= kParallelMin)
  for (int r = 0; r < rows; r++) {
    const float* xr = x + size_t(r) * C;
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int c = 0; c < C; c++) s += xr[c];
    const float m = s / C;
    float v = 0.0f;
#pragma omp simd reduction(+ : v)
    for (int c = 0; c < C; c++) v += (xr[c] - m) * (xr[c] - m);
    const float rs = 1.0f / std::sqrt(v / C + 1e-5f);
    float* o = out + size_t(r) * C;
#pragma omp simd
    for (int c = 0; c < C; c++) o[c] = (xr[c] - m) * rs * w[c] + b[c];
    mean[r] = m;
    rstd[r] = rs;
  }
}

void CpuBackend::layernorm_backward(float* dx, float* dw, float* db, const float* dout,
                                    const float* x, const float* w, const float* mean,
                                    const float* rstd, int rows, int C) {
#pragma omp parallel for num_threads(threads_) schedule(static)
  for (int r = 0; r < rows; r++) {
    const float* xr = x + size_t(r) * C;
    const float* d = dout + size_t(r) * C;
    const float m = mean[r], rs = rstd[r];
    float sum_dn = 0.0f, sum_dn_n = 0.0f;
#pragma omp simd reduction(+ : sum_dn, sum_dn_n)
    for (int c = 0; c < C; c++) {
      const float dn = d[c] * w[c];
      sum_dn += dn;
      sum_dn_n += dn * (xr[c] - m) * rs;
    }
    sum_dn /= C;
    sum_dn_n /= C;
    float* dxr = dx + size_t(r) * C;
#pragma omp simd
    for (int c = 0; c < C; c++) {
      const float n = (xr[c] - m) * rs;
      dxr[c] += (d[c] * w[c] - sum_dn - n * sum_dn_n) * rs;
    }
  }
  const int C2 = 2 * C;
  std::vector<float> both(size_t(C2), 0.0f);
  column_reduce(both.data(), rows, C2, threads_, [&](float* p, int r) {
    const float* xr = x + size_t(r) * C;
    const float* d = dout + size_t(r) * C;
    const float m = mean[r], rs = rstd[r];
#pragma omp simd
    for (int c = 0; c < C; c++) {
      p[c] += d[c] * (xr[c] - m) * rs;
      p[C + c] += d[c];
    }
  });
  for (int c = 0; c < C; c++) {
    dw[c] += both[c];
    db[c] += both[C + c];
  }
}

void CpuBackend::gelu_forward(float* out, const float* x, size_t count) {
#pragma omp parallel for simd num_threads(threads_) schedule(static) if (count >= kParallelMin)
  for (size_t i = 0; i < count; i++) out[i] = vec::gelu_fast(x[i]);
}

void CpuBackend::gelu_backward(float* dx, const float* x, const float* dout, size_t count) {
#pragma omp parallel for simd num_threads(threads_) schedule(static) if (count >= kParallelMin)
  for (size_t i = 0; i < count; i++) dx[i] = dout[i] * vec::gelu_grad_fast(x[i]);
}

void CpuBackend::rmsnorm_forward(float* out, float* rstd, const float* x, int ld_x, int rows,
                                 int groups, int width) {
#pragma omp parallel for num_threads(threads_) schedule(static) if (size_t(rows) * groups * width >= kParallelMin)
  for (int r = 0; r < rows; r++) {
    for (int g = 0; g < groups; g++) {
      const float* xr = x + size_t(r) * ld_x + size_t(g) * width;
      float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
      for (int c = 0; c < width; c++) ss += xr[c] * xr[c];
      const float rs = 1.0f / std::sqrt(ss / width + 1e-6f);
      float* o = out + (size_t(r) * groups + g) * width;
#pragma omp simd
      for (int c = 0; c < width; c++) o[c] = xr[c] * rs;
      rstd[size_t(r) * groups + g] = rs;
    }
  }
}

void CpuBackend::rmsnorm_backward(float* dx, int ld_x, const float* dout, const float* y,
                                  const float* rstd, int rows, int groups, int width) {
#pragma omp parallel for num_threads(threads_) schedule(static)
  for (int r = 0; r < rows; r++) {
    for (int g = 0; g < groups; g++) {
      const size_t off = (size_t(r) * groups + g) * width;
      const float* d = dout + off;
      const float* yr = y + off;
      float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
      for (int c = 0; c < width; c++) dot += d[c] * yr[c];
      dot /= width;
      const float rs = rstd[size_t(r) * groups + g];
      float* dxr = dx + size_t(r) * ld_x + size_t(g) * width;
#pragma omp simd
      for (int c = 0; c < width; c++) dxr[c] = rs * (d[c] - yr[c] * dot);
    }
  }
}

void CpuBackend::swish_gate_forward(float* out, const float* g, int ld_g, const float* y, int rows,
                                    int cols) {
#pragma omp parallel for num_threads(threads_) schedule(static) if (size_t(rows) * cols >= kParallelMin)
  for (int r = 0; r < rows; r++) {
    const float* gr = g + size_t(r) * ld_g;
    const float* yr = y + size_t(r) * cols;
    float* o = out + size_t(r) * cols;
#pragma omp simd
    for (int c = 0; c < cols; c++) o[c] = gr[c] * vec::sigmoid_fast(gr[c]) * yr[c];
  }
}

void CpuBackend::swish_gate_backward(float* dg, float* dy, int ld_g, const float* g, const float* y,
                                     const float* dout, int rows, int cols) {
#pragma omp parallel for num_threads(threads_) schedule(static)
  for (int r = 0; r < rows; r++) {
    const float* gr = g + size_t(r) * ld_g;
    const float* yr = y + size_t(r) * cols;
    const float* d = dout + size_t(r) * cols;
    float* dgr = dg + size_t(r) * ld_g;
    float* dyr = dy + size_t(r) * cols;
#pragma omp simd
    for (int c = 0; c < cols; c++) {
      const float s = vec::sigmoid_fast(gr[c]);
      const float silu = gr[c] * s;
      dyr[c] = d[c] * silu;
      dgr[c] = d[c] * yr[c] * (s + silu * (1.0f - s));
    }
  }
}

void CpuBackend::rope(float* x, int ld, int rows, int heads, int hd, int seq_len, int64_t pos0,
                      float scale, bool inverse) {
  const int half = hd / 2;
  const int npos = std::min(rows, seq_len);
  std::vector<float> cs(size_t(npos) * half), sn(size_t(npos) * half);
  for (int p = 0; p < npos; p++)
    for (int i = 0; i < half; i++) {
      const double theta = std::pow(10000.0, -2.0 * i / hd);
      const double angle = double(pos0 + p) * theta;
      cs[size_t(p) * half + i] = float(std::cos(angle));
      sn[size_t(p) * half + i] = float(inverse ? -std::sin(angle) : std::sin(angle));
    }
#pragma omp parallel for num_threads(threads_) schedule(static) if (size_t(rows) * heads * hd >= kParallelMin)
  for (int r = 0; r < rows; r++) {
    const float* c = cs.data() + size_t(r % seq_len) * half;
    const float* s = sn.data() + size_t(r % seq_len) * half;
    for (int h = 0; h < heads; h++) {
      float* xr = x + size_t(r) * ld + size_t(h) * hd;
#pragma omp simd
      for (int i = 0; i < half; i++) {
        const float a = xr[2 * i], b = xr[2 * i + 1];
        xr[2 * i] = (a * c[i] - b * s[i]) * scale;
        xr[2 * i + 1] = (a * s[i] + b * c[i]) * scale;
      }
    }
  }
}

void CpuBackend::embedding_forward(float* out, const float* table, const int32_t* idx, int count,
                                   int dim, bool accumulate) {
#pragma omp parallel for num_threads(threads_) schedule(static) if (size_t(count) * dim >= kParallelMin)
  for (int i = 0; i < count; i++) {
    float* o = out + size_t(i) * dim;
    const float* t = table + size_t(idx[i]) * dim;
    if (!accumulate) {
      std::memcpy(o, t, dim * sizeof(float));
      continue;
    }
#pragma omp simd
    for (int c = 0; c < dim; c++) o[c] += t[c];
  }
}

void CpuBackend::embedding_backward(float* dtable, const float* dout, const int32_t* idx, int count,
                                    int dim) {
  // Threads own column ranges, so colliding indices never race and the order is fixed.
  const int nt = std::min(threads_, std::max(1, dim / 16));
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num(), n = omp_get_num_threads();
    const int c0 = dim * t / n, c1 = dim * (t + 1) / n;
    for (int i = 0; i < count; i++) {
      float* dst = dtable + size_t(idx[i]) * dim;
      const float* src = dout + size_t(i) * dim;
      for (int c = c0; c < c1; c++) dst[c] += src[c];
    }
  }
}

void CpuBackend::crossentropy_forward(float* losses, const float* logits, const int32_t* targets,
                                      int rows, int V) {
#pragma omp parallel for num_threads(threads_) schedule(static)
  for (int r = 0; r < rows; r++) {
    const float* l = logits + size_t(r) * V;
    float mx = l[0];
    for (int c = 1; c < V; c++) mx = std::max(mx, l[c]);
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int c = 0; c < V; c++) s += vec::expf_fast(l[c] - mx);
    losses[r] = std::log(s) + mx - l[targets[r]];
  }
}

void CpuBackend::crossentropy_fused_backward(float* losses, float* logits, const int32_t* targets,
                                             int rows, int V, float dscale) {
#pragma omp parallel for num_threads(threads_) schedule(static)
  for (int r = 0; r < rows; r++) {
    float* l = logits + size_t(r) * V;
    const int t = targets[r];
    const float target_logit = l[t];
    float mx = l[0];
    for (int c = 1; c < V; c++) mx = std::max(mx, l[c]);
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int c = 0; c < V; c++) {
      l[c] = vec::expf_fast(l[c] - mx);
      s += l[c];
    }
    losses[r] = std::log(s) + mx - target_logit;
    const float inv = dscale / s;
#pragma omp simd
    for (int c = 0; c < V; c++) l[c] *= inv;
    l[t] -= dscale;
  }
}

std::unique_ptr<Backend> make_cpu_backend(int threads) { return std::make_unique<CpuBackend>(threads); }

}  // namespace rb
