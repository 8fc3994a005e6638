// MS-SSIM losses on CUDA, forward and analytic backward (the formulas are in csrc/cpu/ms_ssim.cpp).
//
// center_ms_ssim_l1: one block per (sample, channel) patch; the 1-D windows live in shared memory, the
// moments are block reductions (two-pass: means, then centred second moments); the backward recomputes
// them and writes the gradient of every pixel in the same kernel.
//
// ms_ssim: per scale one fused kernel loads a 26x42 tile of x and y into shared memory, filters the five
// moments (x, y, x², y², xy) vertically then horizontally (11 taps, valid), evaluates cs / ssim per pixel
// and writes one partial sum per block (summed in float64, deterministic). The backward also writes the
// per-pixel derivative maps into zero-padded buffers; a second fused kernel per scale (coarse to fine)
// filters them with the adjoint of the valid filter, multiplies by x, y and adds the pooling adjoint of
// the coarser scale's gradient. float16/bfloat16 are computed in float32; float64 stays float64.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <vector>

namespace nnraw {

// Defined in csrc/cpu/ms_ssim.cpp (one source for the checks and constants of both devices).
void check_center_ms_ssim_l1_args(const char* op, const at::Tensor& pred, const at::Tensor& target, double alpha);
void check_center_ms_ssim_l1_backward_args(const char* op, const at::Tensor& grad, const at::Tensor& pred,
                                           const at::Tensor& target, double alpha);
void check_ms_ssim_args(const char* op, const at::Tensor& x, const at::Tensor& y, double data_range);
void check_ms_ssim_backward_args(const char* op, const at::Tensor& grad, const at::Tensor& x, const at::Tensor& y,
                                 double data_range);
const std::array<double, 5>& center_sigmas();
const std::array<double, 5>& ms_ssim_weights();
std::array<float, 11> ms_ssim_window();

namespace {

constexpr int kScales = 5;
constexpr int kTaps = 11;
constexpr int kHalo = kTaps - 1;
constexpr int kThreads = 256;
constexpr double kC1 = 0.01 * 0.01;
constexpr double kC2 = 0.03 * 0.03;

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  return v;
}

// Sums K values over the block (blockDim.x * blockDim.y threads, a multiple of 32); every thread gets the
// totals. smem must hold 32 * K values.
template <int K, typename T>
__device__ __forceinline__ void block_sum(T (&v)[K], T* smem) {
  const int tid = threadIdx.x + threadIdx.y * blockDim.x;
  const int lane = tid & 31, warp = tid >> 5;
  const int nwarps = (blockDim.x * blockDim.y) >> 5;
#pragma unroll
  for (int k = 0; k < K; ++k) v[k] = warp_sum(v[k]);
  if (lane == 0) {
#pragma unroll
    for (int k = 0; k < K; ++k) smem[warp * K + k] = v[k];
  }
  __syncthreads();
  if (warp == 0) {
#pragma unroll
    for (int k = 0; k < K; ++k) {
      T t = lane < nwarps ? smem[lane * K + k] : T(0);
      t = warp_sum(t);
      if (lane == 0) smem[k] = t;  // warp 0 reads all of its values before lane 0 writes (same warp)
    }
  }
  __syncthreads();
#pragma unroll
  for (int k = 0; k < K; ++k) v[k] = smem[k];
  __syncthreads();
}

// ---------------------------------------------------------------------------------------------------
// Central-pixel mixed loss.
// ---------------------------------------------------------------------------------------------------

struct Sigmas {
  double s[kScales];
};

// Normalised 1-D windows g[s][i] into shared memory.
template <typename acc_t>
__device__ void center_windows(acc_t* g, int P, const Sigmas& sig) {
  const int tid = threadIdx.x;
  const acc_t m = static_cast<acc_t>(P / 2);
  for (int i = tid; i < kScales * P; i += blockDim.x) {
    const int s = i / P;
    const acc_t t = static_cast<acc_t>(i % P) - m;
    const acc_t sg = static_cast<acc_t>(sig.s[s]);
    g[i] = exp(-t * t / (2 * sg * sg));
  }
  __syncthreads();
  if (tid < kScales) {
    acc_t sum = 0;
    for (int i = 0; i < P; ++i) sum += g[tid * P + i];
    for (int i = 0; i < P; ++i) g[tid * P + i] /= sum;
  }
  __syncthreads();
}

template <typename acc_t>
struct CenterStats {
  acc_t mux[kScales], muy[kScales], vx[kScales], vy[kScales], cov[kScales], cs[kScales];
  acc_t l, ms, l1;
};

// Moments of the patch of this block; every thread ends with the same statistics.
template <typename scalar_t, typename acc_t>
__device__ void center_stats(const scalar_t* x, const scalar_t* y, int P, const acc_t* g, acc_t* red,
                             CenterStats<acc_t>& st) {
  const int n = P * P;
  acc_t m[2 * kScales];
#pragma unroll
  for (int k = 0; k < 2 * kScales; ++k) m[k] = 0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const int r = i / P, c = i % P;
    const acc_t xv = static_cast<acc_t>(x[i]), yv = static_cast<acc_t>(y[i]);
#pragma unroll
    for (int s = 0; s < kScales; ++s) {
      const acc_t w = g[s * P + r] * g[s * P + c];
      m[s] += w * xv;
      m[kScales + s] += w * yv;
    }
  }
  block_sum(m, red);
  acc_t v[3 * kScales + 1];
#pragma unroll
  for (int k = 0; k < 3 * kScales + 1; ++k) v[k] = 0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const int r = i / P, c = i % P;
    const acc_t xv = static_cast<acc_t>(x[i]), yv = static_cast<acc_t>(y[i]);
#pragma unroll
    for (int s = 0; s < kScales; ++s) {
      const acc_t w = g[s * P + r] * g[s * P + c];
      const acc_t dx = xv - m[s], dy = yv - m[kScales + s];
      v[s] += w * dx * dx;
      v[kScales + s] += w * dy * dy;
      v[2 * kScales + s] += w * dx * dy;
    }
    const acc_t d = xv - yv;
    v[3 * kScales] += g[(kScales - 1) * P + r] * g[(kScales - 1) * P + c] * (d < acc_t(0) ? -d : d);
  }
  block_sum(v, red);
  const acc_t C1 = static_cast<acc_t>(kC1), C2 = static_cast<acc_t>(kC2);
  acc_t prod = 1;
#pragma unroll
  for (int s = 0; s < kScales; ++s) {
    st.mux[s] = m[s];
    st.muy[s] = m[kScales + s];
    st.vx[s] = v[s];
    st.vy[s] = v[kScales + s];
    st.cov[s] = v[2 * kScales + s];
    st.cs[s] = (2 * st.cov[s] + C2) / (st.vx[s] + st.vy[s] + C2);
    prod *= st.cs[s];
  }
  const acc_t mx = st.mux[kScales - 1], my = st.muy[kScales - 1];
  st.l = (2 * mx * my + C1) / (mx * mx + my * my + C1);
  st.ms = st.l * prod;
  st.l1 = v[3 * kScales];
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) center_forward_kernel(const scalar_t* __restrict__ x,
                                                                  const scalar_t* __restrict__ y,
                                                                  scalar_t* __restrict__ out, int P, double alpha,
                                                                  Sigmas sig) {
  using acc_t = at::opmath_type<scalar_t>;
  extern __shared__ unsigned char smem_raw[];
  acc_t* red = reinterpret_cast<acc_t*>(smem_raw);        // 32 * 16 values
  acc_t* g = red + 32 * (3 * kScales + 1);                // kScales * P
  center_windows(g, P, sig);
  const int64_t patch = blockIdx.x;
  CenterStats<acc_t> st;
  center_stats(x + patch * P * P, y + patch * P * P, P, g, red, st);
  if (threadIdx.x == 0) {
    const acc_t a = static_cast<acc_t>(alpha);
    out[patch] = static_cast<scalar_t>(a * (1 - st.ms) + (1 - a) * st.l1);
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) center_backward_kernel(const scalar_t* __restrict__ grad,
                                                                   const scalar_t* __restrict__ x,
                                                                   const scalar_t* __restrict__ y,
                                                                   scalar_t* __restrict__ out, int P, double alpha,
                                                                   Sigmas sig) {
  using acc_t = at::opmath_type<scalar_t>;
  extern __shared__ unsigned char smem_raw[];
  acc_t* red = reinterpret_cast<acc_t*>(smem_raw);
  acc_t* g = red + 32 * (3 * kScales + 1);
  center_windows(g, P, sig);
  const int64_t patch = blockIdx.x;
  const scalar_t* xp = x + patch * P * P;
  const scalar_t* yp = y + patch * P * P;
  CenterStats<acc_t> st;
  center_stats(xp, yp, P, g, red, st);
  const acc_t a = static_cast<acc_t>(alpha);
  const acc_t gr = static_cast<acc_t>(grad[patch]);
  const acc_t C1 = static_cast<acc_t>(kC1), C2 = static_cast<acc_t>(kC2);
  // dMS/dl and dMS/dcs_s as products of the other factors (no division by a possibly zero cs).
  acc_t dms_dl = 1;
  acc_t coef_cs[kScales];
#pragma unroll
  for (int s = 0; s < kScales; ++s) {
    dms_dl *= st.cs[s];
    acc_t others = st.l;
#pragma unroll
    for (int j = 0; j < kScales; ++j)
      if (j != s) others *= st.cs[j];
    coef_cs[s] = -a * gr * others * 2 / (st.vx[s] + st.vy[s] + C2);
  }
  const acc_t mx = st.mux[kScales - 1], my = st.muy[kScales - 1];
  const acc_t coef_l = -a * gr * dms_dl * 2 * (my - mx * st.l) / (mx * mx + my * my + C1);
  const acc_t coef_l1 = (1 - a) * gr;
  for (int i = threadIdx.x; i < P * P; i += blockDim.x) {
    const int r = i / P, c = i % P;
    const acc_t xv = static_cast<acc_t>(xp[i]), yv = static_cast<acc_t>(yp[i]);
    const acc_t g8 = g[(kScales - 1) * P + r] * g[(kScales - 1) * P + c];
    const acc_t d = xv - yv;
    const acc_t sgn = d > acc_t(0) ? acc_t(1) : (d < acc_t(0) ? acc_t(-1) : acc_t(0));
    acc_t v = (coef_l + coef_l1 * sgn) * g8;
#pragma unroll
    for (int s = 0; s < kScales; ++s) {
      const acc_t w = g[s * P + r] * g[s * P + c];
      v += coef_cs[s] * w * ((yv - st.muy[s]) - st.cs[s] * (xv - st.mux[s]));
    }
    out[patch * P * P + i] = static_cast<scalar_t>(v);
  }
}

Sigmas sigmas() {
  Sigmas s;
  for (int i = 0; i < kScales; ++i) s.s[i] = center_sigmas()[i];
  return s;
}

at::Tensor center_ms_ssim_l1_cuda(const at::Tensor& pred, const at::Tensor& target, double alpha) {
  check_center_ms_ssim_l1_args("nnraw.center_ms_ssim_l1", pred, target, alpha);
  c10::cuda::CUDAGuard guard(pred.device());
  const auto x = pred.contiguous();
  const auto y = target.contiguous();
  const int64_t N = x.size(0), C = x.size(1), P = x.size(2);
  auto out = at::empty({N, C}, x.options());
  if (N * C == 0) return out;
  TORCH_CHECK(N * C <= 0x7fffffff, "nnraw.center_ms_ssim_l1: too many patches, got ", N * C);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "center_ms_ssim_l1_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const size_t smem = sizeof(acc_t) * (32 * (3 * kScales + 1) + kScales * P);
    center_forward_kernel<scalar_t><<<static_cast<unsigned>(N * C), kThreads, smem, stream>>>(
        x.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), static_cast<int>(P), alpha,
        sigmas());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

at::Tensor center_ms_ssim_l1_backward_cuda(const at::Tensor& grad, const at::Tensor& pred, const at::Tensor& target,
                                           double alpha) {
  check_center_ms_ssim_l1_backward_args("nnraw.center_ms_ssim_l1_backward", grad, pred, target, alpha);
  c10::cuda::CUDAGuard guard(pred.device());
  const auto x = pred.contiguous();
  const auto y = target.contiguous();
  const auto gr = grad.contiguous();
  const int64_t N = x.size(0), C = x.size(1), P = x.size(2);
  auto out = at::empty_like(x, at::MemoryFormat::Contiguous);
  if (N * C == 0) return out;
  TORCH_CHECK(N * C <= 0x7fffffff, "nnraw.center_ms_ssim_l1_backward: too many patches, got ", N * C);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "center_ms_ssim_l1_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const size_t smem = sizeof(acc_t) * (32 * (3 * kScales + 1) + kScales * P);
    center_backward_kernel<scalar_t><<<static_cast<unsigned>(N * C), kThreads, smem, stream>>>(
        gr.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
        static_cast<int>(P), alpha, sigmas());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Full-image MS-SSIM.
// ---------------------------------------------------------------------------------------------------

constexpr int kLevels = 5;
constexpr int TW = 32;           // output tile width  (blockDim.x)
constexpr int TH = 16;           // output tile height (blockDim.y = 8, two rows per thread)
constexpr int BY = 8;
constexpr int SW = TW + kHalo;   // shared tile width
constexpr int SH = TH + kHalo;   // shared tile height

template <typename T>
struct Window {
  T g[kTaps];
};

struct LevelShape {
  int64_t H, W, Ho, Wo;
};

std::array<LevelShape, kLevels> level_shapes(int64_t H, int64_t W) {
  std::array<LevelShape, kLevels> s{};
  for (int l = 0; l < kLevels; ++l) {
    s[l] = {H, W, H - kHalo, W - kHalo};
    H = (H + 1) / 2;
    W = (W + 1) / 2;
  }
  return s;
}

// pytorch_msssim's 2x2 average pooling: padding = side % 2 on both sides, zeros counted (divisor 4).
template <typename T>
__global__ void pool_kernel(const T* __restrict__ x, const T* __restrict__ y, T* __restrict__ xo,
                            T* __restrict__ yo, int64_t planes, int64_t H, int64_t W, int64_t Hn, int64_t Wn) {
  const int64_t total = planes * Hn * Wn;
  const int64_t ph = H % 2, pw = W % 2;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t j = i % Wn, r = (i / Wn) % Hn, p = i / (Wn * Hn);
    const int64_t ra = 2 * r - ph, ca = 2 * j - pw;
    const T* xp = x + p * H * W;
    const T* yp = y + p * H * W;
    T sx = 0, sy = 0;
#pragma unroll
    for (int a = 0; a < 2; ++a) {
#pragma unroll
      for (int b = 0; b < 2; ++b) {
        const int64_t rr = ra + a, cc = ca + b;
        if (rr >= 0 && rr < H && cc >= 0 && cc < W) {
          sx += xp[rr * W + cc];
          sy += yp[rr * W + cc];
        }
      }
    }
    xo[i] = sx * T(0.25);
    yo[i] = sy * T(0.25);
  }
}

enum MomentsMode { kSumsOnly = 0, kCsDerivative = 1, kSsimDerivative = 2 };

// One output tile [TH, TW] of one level of one plane: partial sums of the cs and ssim maps, and in the
// derivative modes the derivatives of cs (or ssim) with respect to (mu_x, E[x^2], E[xy]) written into the
// interior of the zero-padded maps D[planes][3][Ho + 20][Wo + 20].
template <typename T, int Mode>
__global__ void __launch_bounds__(TW * BY) moments_kernel(const T* __restrict__ x, const T* __restrict__ y,
                                                          int64_t planes, LevelShape s, Window<T> win, T C1, T C2,
                                                          double* __restrict__ partial, T* __restrict__ D) {
  __shared__ T sx[SH][SW];
  __shared__ T sy[SH][SW];
  __shared__ T sv[5][TH][SW];
  __shared__ T red[32 * 2];
  const int tx = threadIdx.x, ty = threadIdx.y, tid = tx + ty * TW;
  const int64_t c0 = static_cast<int64_t>(blockIdx.x) * TW, r0 = static_cast<int64_t>(blockIdx.y) * TH;
  const int64_t tiles = static_cast<int64_t>(gridDim.x) * gridDim.y;
  const int64_t tile = blockIdx.y * static_cast<int64_t>(gridDim.x) + blockIdx.x;
  const int64_t Wp = s.Wo + 2 * kHalo, plane_p = (s.Ho + 2 * kHalo) * Wp;
  for (int64_t p = blockIdx.z; p < planes; p += gridDim.z) {
    const T* xp = x + p * s.H * s.W;
    const T* yp = y + p * s.H * s.W;
    for (int i = tid; i < SH * SW; i += TW * BY) {
      const int r = i / SW, c = i % SW;
      const int64_t gr = r0 + r, gc = c0 + c;
      const bool in = gr < s.H && gc < s.W;
      sx[r][c] = in ? xp[gr * s.W + gc] : T(0);
      sy[r][c] = in ? yp[gr * s.W + gc] : T(0);
    }
    __syncthreads();
    for (int i = tid; i < TH * SW; i += TW * BY) {
      const int r = i / SW, c = i % SW;
      T ax = 0, ay = 0, axx = 0, ayy = 0, axy = 0;
#pragma unroll
      for (int k = 0; k < kTaps; ++k) {
        const T xv = sx[r + k][c], yv = sy[r + k][c];
        const T gx = win.g[k] * xv, gy = win.g[k] * yv;
        ax += gx;
        ay += gy;
        axx += gx * xv;
        ayy += gy * yv;
        axy += gx * yv;
      }
      sv[0][r][c] = ax;
      sv[1][r][c] = ay;
      sv[2][r][c] = axx;
      sv[3][r][c] = ayy;
      sv[4][r][c] = axy;
    }
    __syncthreads();
    T sums[2] = {T(0), T(0)};
#pragma unroll
    for (int rr = 0; rr < TH / BY; ++rr) {
      const int r = ty + rr * BY;
      const int64_t gr = r0 + r, gc = c0 + tx;
      if (gr < s.Ho && gc < s.Wo) {
        T m[5];
#pragma unroll
        for (int q = 0; q < 5; ++q) {
          T acc = 0;
#pragma unroll
          for (int k = 0; k < kTaps; ++k) acc += win.g[k] * sv[q][r][tx + k];
          m[q] = acc;
        }
        const T m1 = m[0], m2 = m[1];
        const T m11 = m1 * m1, m22 = m2 * m2, m12 = m1 * m2;
        const T den = (m[2] - m11) + (m[3] - m22) + C2;
        const T cs = (2 * (m[4] - m12) + C2) / den;
        const T b1 = m11 + m22 + C1;
        const T lum = (2 * m12 + C1) / b1;
        sums[0] += cs;
        sums[1] += lum * cs;
        if (Mode != kSumsOnly) {
          const T inv = T(1) / den;
          T dm = 2 * (m1 * cs - m2) * inv, de11 = -cs * inv, de12 = 2 * inv;
          if (Mode == kSsimDerivative) {
            dm = lum * dm + 2 * (m2 - m1 * lum) / b1 * cs;
            de11 *= lum;
            de12 *= lum;
          }
          T* d = D + p * 3 * plane_p + (gr + kHalo) * Wp + gc + kHalo;
          d[0] = dm;
          d[plane_p] = de11;
          d[2 * plane_p] = de12;
        }
      }
    }
    block_sum(sums, red);
    if (tid == 0) {
      partial[(p * tiles + tile) * 2] = static_cast<double>(sums[0]);
      partial[(p * tiles + tile) * 2 + 1] = static_cast<double>(sums[1]);
    }
    // block_sum ends with a barrier: the shared tiles may be reused for the next plane.
  }
}

// Per plane: the MS-SSIM value, and (when grad is given) the scale of each level's derivative map:
// grad[n] / C * dMS/dv_l / (Ho_l Wo_l), zero where relu clipped v_l.
struct LevelConsts {
  double w[kLevels];
  double count[kLevels];
};

__global__ void combine_kernel(const double* __restrict__ means_cs, const double* __restrict__ means_ss,
                               int64_t planes, int64_t C, LevelConsts k, double* __restrict__ ms,
                               const double* __restrict__ grad, double* __restrict__ scale) {
  const int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (p >= planes) return;
  double v[kLevels];
  for (int l = 0; l < kLevels - 1; ++l) v[l] = fmax(means_cs[l * planes + p], 0.0);
  v[kLevels - 1] = fmax(means_ss[(kLevels - 1) * planes + p], 0.0);
  double m = 1;
  for (int l = 0; l < kLevels; ++l) m *= pow(v[l], k.w[l]);
  if (ms) ms[p] = m;
  if (scale) {
    const double gnc = grad[p / C] / static_cast<double>(C);
    for (int l = 0; l < kLevels; ++l) {
      double d = 0;
      if (v[l] > 0) {
        d = k.w[l] * pow(v[l], k.w[l] - 1.0);
        for (int j = 0; j < kLevels; ++j)
          if (j != l) d *= pow(v[j], k.w[j]);
      }
      scale[l * planes + p] = gnc * d / k.count[l];
    }
  }
}

// Gradient of one level: gx[r][c] = scale (A + 2 x B + y Cc) + pool^T(gnext), with A, B, Cc the valid
// 11x11 filtering of the zero-padded derivative maps (the adjoint of the forward's valid filtering).
template <typename T>
__global__ void __launch_bounds__(TW * BY) adjoint_kernel(const T* __restrict__ D, const T* __restrict__ x,
                                                          const T* __restrict__ y, int64_t planes, LevelShape s,
                                                          Window<T> win, const double* __restrict__ scale,
                                                          const T* __restrict__ gnext, int64_t Hn, int64_t Wn,
                                                          T* __restrict__ gx) {
  __shared__ T sd[3][SH][SW];
  __shared__ T sv[3][TH][SW];
  const int tx = threadIdx.x, ty = threadIdx.y, tid = tx + ty * TW;
  const int64_t c0 = static_cast<int64_t>(blockIdx.x) * TW, r0 = static_cast<int64_t>(blockIdx.y) * TH;
  const int64_t Wp = s.Wo + 2 * kHalo, Hp = s.Ho + 2 * kHalo, plane_p = Hp * Wp;
  const int64_t ph = s.H % 2, pw = s.W % 2;
  for (int64_t p = blockIdx.z; p < planes; p += gridDim.z) {
    const T* dp = D + p * 3 * plane_p;
    for (int i = tid; i < SH * SW; i += TW * BY) {
      const int r = i / SW, c = i % SW;
      const int64_t gr = r0 + r, gc = c0 + c;
      const bool in = gr < Hp && gc < Wp;
#pragma unroll
      for (int ch = 0; ch < 3; ++ch) sd[ch][r][c] = in ? dp[ch * plane_p + gr * Wp + gc] : T(0);
    }
    __syncthreads();
    for (int i = tid; i < TH * SW; i += TW * BY) {
      const int r = i / SW, c = i % SW;
#pragma unroll
      for (int ch = 0; ch < 3; ++ch) {
        T acc = 0;
#pragma unroll
        for (int k = 0; k < kTaps; ++k) acc += win.g[k] * sd[ch][r + k][c];
        sv[ch][r][c] = acc;
      }
    }
    __syncthreads();
    const T a = static_cast<T>(scale[p]);
#pragma unroll
    for (int rr = 0; rr < TH / BY; ++rr) {
      const int r = ty + rr * BY;
      const int64_t gr = r0 + r, gc = c0 + tx;
      if (gr < s.H && gc < s.W) {
        T f[3];
#pragma unroll
        for (int ch = 0; ch < 3; ++ch) {
          T acc = 0;
#pragma unroll
          for (int k = 0; k < kTaps; ++k) acc += win.g[k] * sv[ch][r][tx + k];
          f[ch] = acc;
        }
        const int64_t idx = p * s.H * s.W + gr * s.W + gc;
        T v = a * (f[0] + 2 * x[idx] * f[1] + y[idx] * f[2]);
        if (gnext) v += T(0.25) * gnext[p * Hn * Wn + ((gr + ph) / 2) * Wn + (gc + pw) / 2];
        gx[idx] = v;
      }
    }
    __syncthreads();
  }
}

dim3 tile_grid(int64_t rows, int64_t cols, int64_t planes) {
  return dim3(static_cast<unsigned>((cols + TW - 1) / TW), static_cast<unsigned>((rows + TH - 1) / TH),
              static_cast<unsigned>(std::min<int64_t>(planes, 65535)));
}

unsigned flat_blocks(int64_t n) {
  return static_cast<unsigned>(std::min<int64_t>((n + 255) / 256, 65535));
}

// Everything the forward and backward share: the pyramid, the per-level means, optional derivative maps.
struct MsSsimRun {
  std::array<LevelShape, kLevels> sh;
  std::array<at::Tensor, kLevels> x, y, D;
  at::Tensor means_cs, means_ss;  // [5, planes] float64
  LevelConsts consts;
};

template <typename T>
MsSsimRun ms_ssim_levels(const at::Tensor& x0, const at::Tensor& y0, double data_range, bool derivatives,
                            cudaStream_t stream) {
  MsSsimRun run;
  const int64_t N = x0.size(0), C = x0.size(1), planes = N * C;
  run.sh = level_shapes(x0.size(2), x0.size(3));
  run.x[0] = x0;
  run.y[0] = y0;
  for (int l = 1; l < kLevels; ++l) {
    const auto& a = run.sh[l - 1];
    const auto& b = run.sh[l];
    run.x[l] = at::empty({N, C, b.H, b.W}, x0.options());
    run.y[l] = at::empty({N, C, b.H, b.W}, x0.options());
    pool_kernel<T><<<flat_blocks(planes * b.H * b.W), 256, 0, stream>>>(
        run.x[l - 1].data_ptr<T>(), run.y[l - 1].data_ptr<T>(), run.x[l].data_ptr<T>(), run.y[l].data_ptr<T>(),
        planes, a.H, a.W, b.H, b.W);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  Window<T> win;
  const auto gf = ms_ssim_window();
  for (int k = 0; k < kTaps; ++k) win.g[k] = static_cast<T>(gf[k]);
  const T C1 = static_cast<T>((0.01 * data_range) * (0.01 * data_range));
  const T C2 = static_cast<T>((0.03 * data_range) * (0.03 * data_range));
  auto dopt = x0.options().dtype(at::kDouble);
  std::vector<at::Tensor> cs(kLevels), ss(kLevels);
  for (int l = 0; l < kLevels; ++l) {
    const auto& s = run.sh[l];
    const dim3 grid = tile_grid(s.Ho, s.Wo, planes);
    const int64_t tiles = static_cast<int64_t>(grid.x) * grid.y;
    auto partial = at::empty({planes, tiles, 2}, dopt);
    T* D = nullptr;
    if (derivatives) {
      run.D[l] = at::zeros({planes, 3, s.Ho + 2 * kHalo, s.Wo + 2 * kHalo}, x0.options());
      D = run.D[l].data_ptr<T>();
    }
    const dim3 block(TW, BY);
    const T* xl = run.x[l].data_ptr<T>();
    const T* yl = run.y[l].data_ptr<T>();
    double* pp = partial.data_ptr<double>();
    if (!derivatives) {
      moments_kernel<T, kSumsOnly><<<grid, block, 0, stream>>>(xl, yl, planes, s, win, C1, C2, pp, D);
    } else if (l < kLevels - 1) {
      moments_kernel<T, kCsDerivative><<<grid, block, 0, stream>>>(xl, yl, planes, s, win, C1, C2, pp, D);
    } else {
      moments_kernel<T, kSsimDerivative><<<grid, block, 0, stream>>>(xl, yl, planes, s, win, C1, C2, pp, D);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    auto means = partial.sum(1) / static_cast<double>(s.Ho * s.Wo);  // [planes, 2]
    cs[l] = means.select(1, 0);
    ss[l] = means.select(1, 1);
    run.consts.w[l] = ms_ssim_weights()[l];
    run.consts.count[l] = static_cast<double>(s.Ho * s.Wo);
  }
  run.means_cs = at::stack(cs, 0).contiguous();
  run.means_ss = at::stack(ss, 0).contiguous();
  return run;
}

at::ScalarType compute_dtype(const at::Tensor& t) {
  return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

at::Tensor ms_ssim_cuda(const at::Tensor& x_in, const at::Tensor& y_in, double data_range) {
  check_ms_ssim_args("nnraw.ms_ssim", x_in, y_in, data_range);
  c10::cuda::CUDAGuard guard(x_in.device());
  const auto ct = compute_dtype(x_in);
  const auto x = x_in.to(ct).contiguous();
  const auto y = y_in.to(ct).contiguous();
  const int64_t N = x.size(0), C = x.size(1), planes = N * C;
  if (planes == 0) return at::empty({N}, x_in.options());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  at::Tensor ms = at::empty({planes}, x.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(ct, "ms_ssim_cuda", [&] {
    auto run = ms_ssim_levels<scalar_t>(x, y, data_range, false, stream);
    combine_kernel<<<static_cast<unsigned>((planes + 127) / 128), 128, 0, stream>>>(
        run.means_cs.data_ptr<double>(), run.means_ss.data_ptr<double>(), planes, C, run.consts,
        ms.data_ptr<double>(), nullptr, nullptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return ms.view({N, C}).mean(1).to(x_in.scalar_type());
}

at::Tensor ms_ssim_backward_cuda(const at::Tensor& grad, const at::Tensor& x_in, const at::Tensor& y_in,
                                 double data_range) {
  check_ms_ssim_backward_args("nnraw.ms_ssim_backward", grad, x_in, y_in, data_range);
  c10::cuda::CUDAGuard guard(x_in.device());
  const auto ct = compute_dtype(x_in);
  const auto x = x_in.to(ct).contiguous();
  const auto y = y_in.to(ct).contiguous();
  const auto g = grad.to(at::kDouble).contiguous();
  const int64_t N = x.size(0), C = x.size(1), planes = N * C;
  auto out = at::empty(x.sizes(), x.options());
  if (planes == 0) return out.to(x_in.scalar_type());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(ct, "ms_ssim_backward_cuda", [&] {
    using T = scalar_t;
    auto run = ms_ssim_levels<T>(x, y, data_range, true, stream);
    auto scale = at::empty({kLevels, planes}, x.options().dtype(at::kDouble));
    combine_kernel<<<static_cast<unsigned>((planes + 127) / 128), 128, 0, stream>>>(
        run.means_cs.data_ptr<double>(), run.means_ss.data_ptr<double>(), planes, C, run.consts, nullptr,
        g.data_ptr<double>(), scale.data_ptr<double>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    Window<T> win;
    const auto gf = ms_ssim_window();
    for (int k = 0; k < kTaps; ++k) win.g[k] = static_cast<T>(gf[k]);
    at::Tensor gnext;
    for (int l = kLevels - 1; l >= 0; --l) {
      const auto& s = run.sh[l];
      at::Tensor gl = (l == 0) ? out : at::empty({N, C, s.H, s.W}, x.options());
      const int64_t Hn = l < kLevels - 1 ? run.sh[l + 1].H : 0;
      const int64_t Wn = l < kLevels - 1 ? run.sh[l + 1].W : 0;
      adjoint_kernel<T><<<tile_grid(s.H, s.W, planes), dim3(TW, BY), 0, stream>>>(
          run.D[l].data_ptr<T>(), run.x[l].data_ptr<T>(), run.y[l].data_ptr<T>(), planes, s, win,
          scale.data_ptr<double>() + l * planes, gnext.defined() ? gnext.data_ptr<T>() : nullptr, Hn, Wn,
          gl.data_ptr<T>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      gnext = gl;
    }
  });
  return out.to(x_in.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(nnraw, CUDA, m) {
  m.impl("center_ms_ssim_l1", &center_ms_ssim_l1_cuda);
  m.impl("center_ms_ssim_l1_backward", &center_ms_ssim_l1_backward_cuda);
  m.impl("ms_ssim", &ms_ssim_cuda);
  m.impl("ms_ssim_backward", &ms_ssim_backward_cuda);
}

}  // namespace nnraw
