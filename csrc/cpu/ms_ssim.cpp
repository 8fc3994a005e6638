// MS-SSIM losses on the CPU, forward and analytic backward.
//
// 1. center_ms_ssim_l1: the central-pixel mixed loss of Zhao et al. 2017 (NVIDIA PL4NN). On each odd
//    square patch [P, P] five Gaussian windows G_s (sigma 0.5, 1, 2, 4, 8), centred on the central pixel
//    and normalised to sum 1 over the patch, give mu_x, mu_y, var_x, var_y, cov_xy per scale:
//        l    = (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1)       (sigma 8 only), C1 = 0.01^2
//        cs_s = (2 cov_xy + C2) / (var_x + var_y + C2),                           C2 = 0.03^2
//        MS = l prod_s cs_s,   L1 = sum_p G_8(p) |x_p - y_p|,   loss = alpha (1 - MS) + (1 - alpha) L1.
//    Values are taken as given (the reference system added +0.5 to its inputs before the loss).
// 2. ms_ssim: full-image MS-SSIM (Wang et al. 2003) exactly as pytorch_msssim.ms_ssim(x, y, data_range,
//    size_average=False): 11-tap Gaussian (sigma 1.5) valid separable filtering, 5 scales, 2x2 average
//    pooling between scales with a zero pad of 1 (counted in the average) on odd sides, relu on the
//    per-channel means, weights 0.0448 0.2856 0.3001 0.2363 0.1333, mean over channels.
//    Backward: the derivative maps of the per-pixel cs/ssim with respect to (mu_x, E[x^2], E[xy]) are
//    filtered with the adjoint of the valid filter (valid filtering of the zero-padded map, the kernel
//    being symmetric) and pulled back through the pooling.
//
// The argument checks are defined here once and also used by the CUDA kernels (csrc/cuda/ms_ssim.cu).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <vector>

namespace nnraw {

// ---------------------------------------------------------------------------------------------------
// Argument checks (shared with the CUDA kernels; the Python fake kernels repeat the same texts).
// ---------------------------------------------------------------------------------------------------

namespace {

std::string shape_str(const at::Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) {
    if (i) s += ", ";
    s += std::to_string(t.size(i));
  }
  return s + "]";
}

// dtype as Python prints it (torch.float32), so that the C++ and Python messages are the same text.
std::string dtype_str(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "torch.float32";
    case at::kDouble: return "torch.float64";
    case at::kHalf: return "torch.float16";
    case at::kBFloat16: return "torch.bfloat16";
    case at::kByte: return "torch.uint8";
    case at::kChar: return "torch.int8";
    case at::kShort: return "torch.int16";
    case at::kInt: return "torch.int32";
    case at::kLong: return "torch.int64";
    case at::kBool: return "torch.bool";
    default: return std::string("torch.") + c10::toString(t);
  }
}

void check_floating(const char* op, const char* name, const at::Tensor& t) {
  const auto dt = t.scalar_type();
  const bool ok = dt == at::kFloat || dt == at::kDouble ||
                  (t.is_cuda() && (dt == at::kHalf || dt == at::kBFloat16));
  TORCH_CHECK(ok, op, ": ", name, " must be float32 or float64 (float16/bfloat16 only on CUDA), got ",
              dtype_str(dt), " on ", t.device().type());
}

void check_pair(const char* op, const char* a_name, const at::Tensor& a, const char* b_name,
                const at::Tensor& b) {
  TORCH_CHECK(a.dim() == 4, op, ": ", a_name, " must have shape [N, C, H, W], got ", shape_str(a));
  TORCH_CHECK(b.device() == a.device(), op, ": ", b_name, " must be on ", a_name, "'s device ", a.device(),
              ", got ", b.device());
  TORCH_CHECK(b.scalar_type() == a.scalar_type(), op, ": ", b_name, " must have ", a_name, "'s dtype ",
              dtype_str(a.scalar_type()), ", got ", dtype_str(b.scalar_type()));
  TORCH_CHECK(a.sizes() == b.sizes(), op, ": ", a_name, " and ", b_name,
              " must have the same shape, got ", shape_str(a), " and ", shape_str(b));
  check_floating(op, a_name, a);
}

void check_grad(const char* op, const at::Tensor& grad, const at::Tensor& like, at::IntArrayRef expected) {
  TORCH_CHECK(grad.device() == like.device(), op, ": grad must be on the input's device ", like.device(),
              ", got ", grad.device());
  TORCH_CHECK(grad.scalar_type() == like.scalar_type(), op, ": grad must have the input's dtype ",
              dtype_str(like.scalar_type()), ", got ", dtype_str(grad.scalar_type()));
  TORCH_CHECK(grad.sizes() == expected, op, ": grad must have shape ", expected, ", got ", shape_str(grad));
}

}  // namespace

constexpr int64_t kCenterMinPatch = 3;
constexpr int64_t kMsSsimMinSide = 161;  // pytorch_msssim: min side > (11 - 1) * 2^4 = 160

void check_center_ms_ssim_l1_args(const char* op, const at::Tensor& pred, const at::Tensor& target, double alpha) {
  check_pair(op, "pred", pred, "target", target);
  const int64_t h = pred.size(2), w = pred.size(3);
  TORCH_CHECK(h == w && h % 2 == 1 && h >= kCenterMinPatch, op,
              ": patches must be square with an odd side P >= 3, got ", h, "x", w);
  TORCH_CHECK(alpha >= 0.0 && alpha <= 1.0, op, ": alpha must be in [0, 1], got ", alpha);
}

void check_center_ms_ssim_l1_backward_args(const char* op, const at::Tensor& grad, const at::Tensor& pred,
                                           const at::Tensor& target, double alpha) {
  check_center_ms_ssim_l1_args(op, pred, target, alpha);
  check_grad(op, grad, pred, {pred.size(0), pred.size(1)});
}

void check_ms_ssim_args(const char* op, const at::Tensor& x, const at::Tensor& y, double data_range) {
  check_pair(op, "x", x, "y", y);
  const int64_t h = x.size(2), w = x.size(3);
  TORCH_CHECK(std::min(h, w) >= kMsSsimMinSide, op,
              ": height and width must be > 160 for 5 scales (11x11 window after 4 halvings), got ", h, "x", w);
  TORCH_CHECK(data_range > 0.0, op, ": data_range must be > 0, got ", data_range);
}

void check_ms_ssim_backward_args(const char* op, const at::Tensor& grad, const at::Tensor& x, const at::Tensor& y,
                                 double data_range) {
  check_ms_ssim_args(op, x, y, data_range);
  check_grad(op, grad, x, {x.size(0)});
}

// Window constants shared with CUDA.
const std::array<double, 5>& center_sigmas() {
  static const std::array<double, 5> s = {0.5, 1.0, 2.0, 4.0, 8.0};
  return s;
}
const std::array<double, 5>& ms_ssim_weights() {
  static const std::array<double, 5> w = {0.0448, 0.2856, 0.3001, 0.2363, 0.1333};
  return w;
}

// The 11-tap Gaussian (sigma 1.5) exactly as pytorch_msssim builds it (float32 exp, normalised by a
// float32 torch.sum); the values are spelled out because the rounding of that sum depends on its order.
std::array<float, 11> ms_ssim_window() {
  return {0x1.0d957p-10f, 0x1.f1fe02p-8f, 0x1.26eb18p-5f, 0x1.bff0fep-4f, 0x1.b43c3ep-3f, 0x1.10656p-2f,
          0x1.b43c3ep-3f, 0x1.bff0fep-4f, 0x1.26eb18p-5f, 0x1.f1fe02p-8f, 0x1.0d957p-10f};
}

namespace {

// ---------------------------------------------------------------------------------------------------
// Central-pixel mixed loss.
// ---------------------------------------------------------------------------------------------------

constexpr int kScales = 5;
constexpr double kC1 = 0.01 * 0.01;
constexpr double kC2 = 0.03 * 0.03;

// 1-D normalised Gaussians g[s][i] (the 2-D window is g[s][r] g[s][c], normalised since each 1-D is).
template <typename T>
std::vector<T> center_windows_1d(int64_t P) {
  std::vector<T> g(kScales * P);
  const double m = static_cast<double>(P / 2);
  for (int s = 0; s < kScales; ++s) {
    const double sigma = center_sigmas()[s];
    double sum = 0.0;
    std::vector<double> v(P);
    for (int64_t i = 0; i < P; ++i) {
      v[i] = std::exp(-(i - m) * (i - m) / (2.0 * sigma * sigma));
      sum += v[i];
    }
    for (int64_t i = 0; i < P; ++i) g[s * P + i] = static_cast<T>(v[i] / sum);
  }
  return g;
}

template <typename T>
struct CenterStats {
  T mux[kScales], muy[kScales], vx[kScales], vy[kScales], cov[kScales];
  T l, cs[kScales], ms, l1;
};

// Moments of one patch (two-pass: means first, then centred second moments).
template <typename T>
void center_stats(const T* x, const T* y, int64_t P, const T* g, CenterStats<T>& st) {
  for (int s = 0; s < kScales; ++s) {
    const T* gs = g + s * P;
    T mx = 0, my = 0;
    for (int64_t r = 0; r < P; ++r) {
      T rx = 0, ry = 0;
      for (int64_t c = 0; c < P; ++c) {
        rx += gs[c] * x[r * P + c];
        ry += gs[c] * y[r * P + c];
      }
      mx += gs[r] * rx;
      my += gs[r] * ry;
    }
    T vx = 0, vy = 0, cv = 0;
    for (int64_t r = 0; r < P; ++r) {
      T rxx = 0, ryy = 0, rxy = 0;
      for (int64_t c = 0; c < P; ++c) {
        const T dx = x[r * P + c] - mx, dy = y[r * P + c] - my;
        rxx += gs[c] * dx * dx;
        ryy += gs[c] * dy * dy;
        rxy += gs[c] * dx * dy;
      }
      vx += gs[r] * rxx;
      vy += gs[r] * ryy;
      cv += gs[r] * rxy;
    }
    st.mux[s] = mx; st.muy[s] = my; st.vx[s] = vx; st.vy[s] = vy; st.cov[s] = cv;
    st.cs[s] = (2 * cv + T(kC2)) / (vx + vy + T(kC2));
  }
  const int L = kScales - 1;
  st.l = (2 * st.mux[L] * st.muy[L] + T(kC1)) / (st.mux[L] * st.mux[L] + st.muy[L] * st.muy[L] + T(kC1));
  st.ms = st.l;
  for (int s = 0; s < kScales; ++s) st.ms *= st.cs[s];
  const T* g8 = g + L * P;
  T l1 = 0;
  for (int64_t r = 0; r < P; ++r) {
    T row = 0;
    for (int64_t c = 0; c < P; ++c) row += g8[c] * std::abs(x[r * P + c] - y[r * P + c]);
    l1 += g8[r] * row;
  }
  st.l1 = l1;
}

at::Tensor center_ms_ssim_l1_cpu(const at::Tensor& pred, const at::Tensor& target, double alpha) {
  check_center_ms_ssim_l1_args("nnraw.center_ms_ssim_l1", pred, target, alpha);
  const auto x = pred.contiguous();
  const auto y = target.contiguous();
  const int64_t N = x.size(0), C = x.size(1), P = x.size(2);
  auto out = at::empty({N, C}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "center_ms_ssim_l1_cpu", [&] {
    const auto g = center_windows_1d<scalar_t>(P);
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* yp = y.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    const scalar_t a = static_cast<scalar_t>(alpha);
    at::parallel_for(0, N * C, 1, [&](int64_t begin, int64_t end) {
      CenterStats<scalar_t> st;
      for (int64_t i = begin; i < end; ++i) {
        center_stats(xp + i * P * P, yp + i * P * P, P, g.data(), st);
        op[i] = a * (1 - st.ms) + (1 - a) * st.l1;
      }
    });
  });
  return out;
}

at::Tensor center_ms_ssim_l1_backward_cpu(const at::Tensor& grad, const at::Tensor& pred, const at::Tensor& target,
                                          double alpha) {
  check_center_ms_ssim_l1_backward_args("nnraw.center_ms_ssim_l1_backward", grad, pred, target, alpha);
  const auto x = pred.contiguous();
  const auto y = target.contiguous();
  const auto gr = grad.contiguous();
  const int64_t N = x.size(0), C = x.size(1), P = x.size(2);
  auto out = at::empty_like(x, at::MemoryFormat::Contiguous);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "center_ms_ssim_l1_backward_cpu", [&] {
    using T = scalar_t;
    const auto g = center_windows_1d<T>(P);
    const T* xp = x.data_ptr<T>();
    const T* yp = y.data_ptr<T>();
    const T* gp = gr.data_ptr<T>();
    T* op = out.data_ptr<T>();
    const T a = static_cast<T>(alpha);
    const int L = kScales - 1;
    at::parallel_for(0, N * C, 1, [&](int64_t begin, int64_t end) {
      CenterStats<T> st;
      for (int64_t i = begin; i < end; ++i) {
        const T* xi = xp + i * P * P;
        const T* yi = yp + i * P * P;
        T* oi = op + i * P * P;
        center_stats(xi, yi, P, g.data(), st);
        // dMS/dl and dMS/dcs_s as products of the other factors (no division by a possibly zero cs).
        T dms_dl = 1;
        for (int s = 0; s < kScales; ++s) dms_dl *= st.cs[s];
        T coef_cs[kScales];  // -alpha grad dMS/dcs_s * 2 / den_s
        for (int s = 0; s < kScales; ++s) {
          T others = st.l;
          for (int j = 0; j < kScales; ++j)
            if (j != s) others *= st.cs[j];
          coef_cs[s] = -a * gp[i] * others * 2 / (st.vx[s] + st.vy[s] + T(kC2));
        }
        const T mx = st.mux[L], my = st.muy[L];
        // dl/dx_p = 2 G_8(p) (mu_y - mu_x l) / (mu_x^2 + mu_y^2 + C1)
        const T coef_l = -a * gp[i] * dms_dl * 2 * (my - mx * st.l) / (mx * mx + my * my + T(kC1));
        const T coef_l1 = (1 - a) * gp[i];
        for (int64_t r = 0; r < P; ++r) {
          for (int64_t c = 0; c < P; ++c) {
            const T xv = xi[r * P + c], yv = yi[r * P + c];
            const T g8 = g[L * P + r] * g[L * P + c];
            const T d = xv - yv;
            const T sgn = d > 0 ? T(1) : (d < 0 ? T(-1) : T(0));
            T v = (coef_l + coef_l1 * sgn) * g8;
            for (int s = 0; s < kScales; ++s) {
              const T gs = g[s * P + r] * g[s * P + c];
              v += coef_cs[s] * gs * ((yv - st.muy[s]) - st.cs[s] * (xv - st.mux[s]));
            }
            oi[r * P + c] = v;
          }
        }
      }
    });
  });
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Full-image MS-SSIM.
// ---------------------------------------------------------------------------------------------------

constexpr int kLevels = 5;
constexpr int kTaps = 11;
constexpr int kHalo = kTaps - 1;
constexpr int64_t kRowBlock = 8;  // output rows per parallel task

struct LevelShape {
  int64_t H, W;    // level input
  int64_t Ho, Wo;  // valid filtered maps
};

std::array<LevelShape, kLevels> level_shapes(int64_t H, int64_t W) {
  std::array<LevelShape, kLevels> s{};
  for (int l = 0; l < kLevels; ++l) {
    s[l] = {H, W, H - kHalo, W - kHalo};
    H = (H + 1) / 2;  // avg_pool2d(2, padding = side % 2)
    W = (W + 1) / 2;
  }
  return s;
}

// 2x2 average pooling of pytorch_msssim: padding = side % 2 on both sides, zeros counted (divisor 4).
template <typename T>
void pool_plane_rows(const T* in, int64_t H, int64_t W, T* out, int64_t Hn, int64_t Wn, int64_t r0, int64_t r1) {
  const int64_t ph = H % 2, pw = W % 2;
  for (int64_t i = r0; i < r1; ++i) {
    const int64_t ra = 2 * i - ph, rb = ra + 1;
    const T* rowa = (ra >= 0) ? in + ra * W : nullptr;
    const T* rowb = (rb < H) ? in + rb * W : nullptr;
    for (int64_t j = 0; j < Wn; ++j) {
      const int64_t ca = 2 * j - pw, cb = ca + 1;
      T s = 0;
      if (rowa) {
        if (ca >= 0) s += rowa[ca];
        if (cb < W) s += rowa[cb];
      }
      if (rowb) {
        if (ca >= 0) s += rowb[ca];
        if (cb < W) s += rowb[cb];
      }
      out[i * Wn + j] = s * T(0.25);
    }
  }
}

template <typename T>
void pool_levels(const T* in, T* out, int64_t planes, const LevelShape& a, const LevelShape& b) {
  const int64_t blocks = (b.H + kRowBlock - 1) / kRowBlock;
  at::parallel_for(0, planes * blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t p = t / blocks, blk = t % blocks;
      pool_plane_rows(in + p * a.H * a.W, a.H, a.W, out + p * b.H * b.W, b.H, b.W, blk * kRowBlock,
                      std::min(b.H, (blk + 1) * kRowBlock));
    }
  });
}

// The hot loops are written in blocks of kLanes columns so that the compiler vectorises them, and are
// compiled twice: for the baseline ISA and, on x86-64 with GCC/Clang, for AVX2+FMA (chosen at run time).
#if defined(__GNUC__) && defined(__x86_64__)
#define NNRAW_ALWAYS_INLINE inline __attribute__((always_inline))
#define NNRAW_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define NNRAW_HAVE_AVX2_CLONE 1
#else
#define NNRAW_ALWAYS_INLINE inline
#define NNRAW_HAVE_AVX2_CLONE 0
#endif

bool cpu_has_avx2() {
#if NNRAW_HAVE_AVX2_CLONE
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
#else
  return false;
#endif
}

template <typename T>
constexpr int kLanes = 64 / static_cast<int>(sizeof(T));  // two AVX-512 / four AVX2 registers

// Vertical 11-tap sums of x, y, x^2, y^2, xy over input rows r..r+10 (x, y point at row r), W columns,
// into v[5][W].
template <typename T>
NNRAW_ALWAYS_INLINE void vertical_moments(const T* __restrict x, const T* __restrict y, int64_t W,
                                          const T* __restrict g, T* __restrict v) {
  constexpr int V = kLanes<T>;
  int64_t c0 = 0;
  for (; c0 + V <= W; c0 += V) {
    T ax[V] = {}, ay[V] = {}, axx[V] = {}, ayy[V] = {}, axy[V] = {};
    for (int k = 0; k < kTaps; ++k) {
      const T gk = g[k];
      const T* __restrict xr = x + k * W + c0;
      const T* __restrict yr = y + k * W + c0;
      for (int j = 0; j < V; ++j) {
        const T xv = xr[j], yv = yr[j];
        const T gx = gk * xv, gy = gk * yv;
        ax[j] += gx;
        ay[j] += gy;
        axx[j] += gx * xv;
        ayy[j] += gy * yv;
        axy[j] += gx * yv;
      }
    }
    for (int j = 0; j < V; ++j) {
      v[c0 + j] = ax[j];
      v[W + c0 + j] = ay[j];
      v[2 * W + c0 + j] = axx[j];
      v[3 * W + c0 + j] = ayy[j];
      v[4 * W + c0 + j] = axy[j];
    }
  }
  for (int64_t c = c0; c < W; ++c) {
    T ax = 0, ay = 0, axx = 0, ayy = 0, axy = 0;
    for (int k = 0; k < kTaps; ++k) {
      const T xv = x[k * W + c], yv = y[k * W + c];
      const T gx = g[k] * xv, gy = g[k] * yv;
      ax += gx;
      ay += gy;
      axx += gx * xv;
      ayy += gy * yv;
      axy += gx * yv;
    }
    v[c] = ax; v[W + c] = ay; v[2 * W + c] = axx; v[3 * W + c] = ayy; v[4 * W + c] = axy;
  }
}

// Vertical 11-tap sums of three maps with row stride W (d points at row r) into v[3][W].
template <typename T>
NNRAW_ALWAYS_INLINE void vertical3(const T* __restrict d, int64_t plane, int64_t W, const T* __restrict g,
                                   T* __restrict v) {
  constexpr int V = kLanes<T>;
  int64_t c0 = 0;
  for (; c0 + V <= W; c0 += V) {
    T a0[V] = {}, a1[V] = {}, a2[V] = {};
    for (int k = 0; k < kTaps; ++k) {
      const T gk = g[k];
      const T* __restrict r0 = d + k * W + c0;
      const T* __restrict r1 = r0 + plane;
      const T* __restrict r2 = r1 + plane;
      for (int j = 0; j < V; ++j) {
        a0[j] += gk * r0[j];
        a1[j] += gk * r1[j];
        a2[j] += gk * r2[j];
      }
    }
    for (int j = 0; j < V; ++j) {
      v[c0 + j] = a0[j];
      v[W + c0 + j] = a1[j];
      v[2 * W + c0 + j] = a2[j];
    }
  }
  for (int64_t c = c0; c < W; ++c) {
    T a0 = 0, a1 = 0, a2 = 0;
    for (int k = 0; k < kTaps; ++k) {
      a0 += g[k] * d[k * W + c];
      a1 += g[k] * d[plane + k * W + c];
      a2 += g[k] * d[2 * plane + k * W + c];
    }
    v[c] = a0; v[W + c] = a1; v[2 * W + c] = a2;
  }
}

// Horizontal 11-tap sums out[c] = sum_k g[k] v[c + k], c < n.
template <typename T>
NNRAW_ALWAYS_INLINE void horizontal(const T* __restrict v, int64_t n, const T* __restrict g, T* __restrict out) {
  const T g0 = g[0], g1 = g[1], g2 = g[2], g3 = g[3], g4 = g[4], g5 = g[5];
  for (int64_t c = 0; c < n; ++c) {
    // symmetric window: g[k] == g[10 - k]
    out[c] = g0 * (v[c] + v[c + 10]) + g1 * (v[c + 1] + v[c + 9]) + g2 * (v[c + 2] + v[c + 8]) +
             g3 * (v[c + 3] + v[c + 7]) + g4 * (v[c + 4] + v[c + 6]) + g5 * v[c + 5];
  }
}

// Sum of n values with kLanes independent accumulators (vectorisable without reassociation flags).
template <typename T>
NNRAW_ALWAYS_INLINE double lane_sum(const T* __restrict v, int64_t n) {
  constexpr int V = kLanes<T>;
  T acc[V] = {};
  int64_t c0 = 0;
  for (; c0 + V <= n; c0 += V)
    for (int j = 0; j < V; ++j) acc[j] += v[c0 + j];
  double s = 0;
  for (int j = 0; j < V; ++j) s += acc[j];
  for (int64_t c = c0; c < n; ++c) s += v[c];
  return s;
}

// What moments_rows computes besides the sums: nothing, or the derivative maps of cs (levels 0-3) or
// of ssim (level 4).
enum MomentsMode { kSumsOnly = 0, kCsDerivative = 1, kSsimDerivative = 2 };

// One block of output rows of one level of one plane: sums of the cs and ssim maps; in the derivative
// modes also the derivatives of the per-pixel cs (or ssim) with respect to (mu_x, E[x^2], E[xy]),
// written into the interior of the zero-padded maps D[3][Ho + 20][Wo + 20] (padding zeroed here too).
template <typename T, int Mode>
NNRAW_ALWAYS_INLINE void moments_rows_body(const T* x, const T* y, const LevelShape& s, const T* g, T C1, T C2,
                                           int64_t r0, int64_t r1, double* sums, T* D) {
  const int64_t Wp = s.Wo + 2 * kHalo, Hp = s.Ho + 2 * kHalo;
  const int64_t plane_p = Hp * Wp;
  std::vector<T> buf(5 * s.W + 7 * s.Wo);
  T* vb = buf.data();
  T* m = vb + 5 * s.W;  // m[5][Wo]: mu1, mu2, E11, E22, E12
  T* csb = m + 5 * s.Wo;
  T* ssb = csb + s.Wo;
  double cs_acc = 0, ss_acc = 0;
  for (int64_t r = r0; r < r1; ++r) {
    vertical_moments(x + r * s.W, y + r * s.W, s.W, g, vb);
    for (int q = 0; q < 5; ++q) horizontal(vb + q * s.W, s.Wo, g, m + q * s.Wo);
    const T* __restrict pm1 = m;
    const T* __restrict pm2 = m + s.Wo;
    const T* __restrict pe11 = m + 2 * s.Wo;
    const T* __restrict pe22 = m + 3 * s.Wo;
    const T* __restrict pe12 = m + 4 * s.Wo;
    T* __restrict pcs = csb;
    T* __restrict pss = ssb;
    T* __restrict d0 = (Mode != kSumsOnly) ? D + (r + kHalo) * Wp + kHalo : nullptr;
    T* __restrict d1 = (Mode != kSumsOnly) ? d0 + plane_p : nullptr;
    T* __restrict d2 = (Mode != kSumsOnly) ? d1 + plane_p : nullptr;
    for (int64_t c = 0; c < s.Wo; ++c) {
      const T m1 = pm1[c], m2 = pm2[c];
      const T m11 = m1 * m1, m22 = m2 * m2, m12 = m1 * m2;
      const T den = (pe11[c] - m11) + (pe22[c] - m22) + C2;
      const T cs = (2 * (pe12[c] - m12) + C2) / den;
      const T b1 = m11 + m22 + C1;
      const T lum = (2 * m12 + C1) / b1;
      pcs[c] = cs;
      pss[c] = lum * cs;
      if constexpr (Mode != kSumsOnly) {
        // cs:   d/dmu1 = 2 (mu1 cs - mu2) / den,  d/dE11 = -cs / den,  d/dE12 = 2 / den
        // ssim: lum * (the above) + dlum/dmu1 * cs with dlum/dmu1 = 2 (mu2 - mu1 lum) / b1
        const T inv = T(1) / den;
        const T dm = 2 * (m1 * cs - m2) * inv, de11 = -cs * inv, de12 = 2 * inv;
        if constexpr (Mode == kSsimDerivative) {
          d0[c] = lum * dm + 2 * (m2 - m1 * lum) / b1 * cs;
          d1[c] = lum * de11;
          d2[c] = lum * de12;
        } else {
          d0[c] = dm;
          d1[c] = de11;
          d2[c] = de12;
        }
      }
    }
    cs_acc += lane_sum(csb, s.Wo);
    ss_acc += lane_sum(ssb, s.Wo);
    if constexpr (Mode != kSumsOnly) {  // left and right padding of this row
      for (int ch = 0; ch < 3; ++ch) {
        T* row = D + ch * plane_p + (r + kHalo) * Wp;
        std::fill(row, row + kHalo, T(0));
        std::fill(row + kHalo + s.Wo, row + Wp, T(0));
      }
    }
  }
  if constexpr (Mode != kSumsOnly) {  // top and bottom padding rows, by the first and last blocks
    for (int ch = 0; ch < 3; ++ch) {
      T* plane = D + ch * plane_p;
      if (r0 == 0) std::fill(plane, plane + kHalo * Wp, T(0));
      if (r1 == s.Ho) std::fill(plane + (s.Ho + kHalo) * Wp, plane + Hp * Wp, T(0));
    }
  }
  sums[0] = cs_acc;
  sums[1] = ss_acc;
}

template <typename T, int Mode>
void moments_rows_base(const T* x, const T* y, const LevelShape& s, const T* g, T C1, T C2, int64_t r0,
                       int64_t r1, double* sums, T* D) {
  moments_rows_body<T, Mode>(x, y, s, g, C1, C2, r0, r1, sums, D);
}

#if NNRAW_HAVE_AVX2_CLONE
template <typename T, int Mode>
NNRAW_TARGET_AVX2 void moments_rows_avx2(const T* x, const T* y, const LevelShape& s, const T* g, T C1, T C2,
                                         int64_t r0, int64_t r1, double* sums, T* D) {
  moments_rows_body<T, Mode>(x, y, s, g, C1, C2, r0, r1, sums, D);
}
#endif

template <typename T>
void moments_rows(const T* x, const T* y, const LevelShape& s, const T* g, T C1, T C2, int64_t r0, int64_t r1,
                  double* sums, T* D, bool last) {
  const int mode = D == nullptr ? kSumsOnly : (last ? kSsimDerivative : kCsDerivative);
#if NNRAW_HAVE_AVX2_CLONE
  if (cpu_has_avx2()) {
    if (mode == kSumsOnly) return moments_rows_avx2<T, kSumsOnly>(x, y, s, g, C1, C2, r0, r1, sums, D);
    if (mode == kCsDerivative) return moments_rows_avx2<T, kCsDerivative>(x, y, s, g, C1, C2, r0, r1, sums, D);
    return moments_rows_avx2<T, kSsimDerivative>(x, y, s, g, C1, C2, r0, r1, sums, D);
  }
#endif
  if (mode == kSumsOnly) return moments_rows_base<T, kSumsOnly>(x, y, s, g, C1, C2, r0, r1, sums, D);
  if (mode == kCsDerivative) return moments_rows_base<T, kCsDerivative>(x, y, s, g, C1, C2, r0, r1, sums, D);
  return moments_rows_base<T, kSsimDerivative>(x, y, s, g, C1, C2, r0, r1, sums, D);
}

// Sums of the cs and ssim maps of one level for all planes; optionally the derivative maps.
template <typename T>
void level_moments(const T* x, const T* y, int64_t planes, const LevelShape& s, const T* g, T C1, T C2,
                   double* cs_mean, double* ss_mean, T* D, bool last) {
  const int64_t blocks = (s.Ho + kRowBlock - 1) / kRowBlock;
  std::vector<double> part(planes * blocks * 2);
  const int64_t dplane = 3 * (s.Ho + 2 * kHalo) * (s.Wo + 2 * kHalo);
  at::parallel_for(0, planes * blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t p = t / blocks, blk = t % blocks;
      moments_rows(x + p * s.H * s.W, y + p * s.H * s.W, s, g, C1, C2, blk * kRowBlock,
                   std::min(s.Ho, (blk + 1) * kRowBlock), part.data() + 2 * t, D ? D + p * dplane : nullptr,
                   last);
    }
  });
  const double n = static_cast<double>(s.Ho * s.Wo);
  for (int64_t p = 0; p < planes; ++p) {
    double cs = 0, ss = 0;
    for (int64_t b = 0; b < blocks; ++b) {
      cs += part[2 * (p * blocks + b)];
      ss += part[2 * (p * blocks + b) + 1];
    }
    cs_mean[p] = cs / n;
    ss_mean[p] = ss / n;
  }
}

// The per-level values entering the product: relu(cs) for levels 0-3 and relu(ssim) for level 4.
inline void level_values(const double* cs_mean, const double* ss_mean, int64_t planes, int64_t p, double* v) {
  for (int l = 0; l < kLevels - 1; ++l) v[l] = std::max(cs_mean[l * planes + p], 0.0);
  v[kLevels - 1] = std::max(ss_mean[(kLevels - 1) * planes + p], 0.0);
}

// Pyramid of x and y: level 0 is the input; levels 1-4 are pooled into `store`.
template <typename T>
struct Pyramid {
  std::array<LevelShape, kLevels> shape;
  std::array<const T*, kLevels> x{}, y{};
  std::vector<T> store;
  Pyramid(const T* x0, const T* y0, int64_t planes, int64_t H, int64_t W) : shape(level_shapes(H, W)) {
    int64_t total = 0;
    for (int l = 1; l < kLevels; ++l) total += 2 * planes * shape[l].H * shape[l].W;
    store.resize(total);
    x[0] = x0;
    y[0] = y0;
    T* cur = store.data();
    for (int l = 1; l < kLevels; ++l) {
      const int64_t n = planes * shape[l].H * shape[l].W;
      T* xl = cur;
      T* yl = cur + n;
      cur += 2 * n;
      pool_levels(x[l - 1], xl, planes, shape[l - 1], shape[l]);
      pool_levels(y[l - 1], yl, planes, shape[l - 1], shape[l]);
      x[l] = xl;
      y[l] = yl;
    }
  }
};

template <typename T>
std::array<T, kTaps> window_as() {
  const auto gf = ms_ssim_window();
  std::array<T, kTaps> g{};
  for (int k = 0; k < kTaps; ++k) g[k] = static_cast<T>(gf[k]);
  return g;
}

at::Tensor ms_ssim_cpu(const at::Tensor& x_in, const at::Tensor& y_in, double data_range) {
  check_ms_ssim_args("nnraw.ms_ssim", x_in, y_in, data_range);
  const auto x = x_in.contiguous();
  const auto y = y_in.contiguous();
  const int64_t N = x.size(0), C = x.size(1), planes = N * C;
  auto out = at::empty({N}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ms_ssim_cpu", [&] {
    using T = scalar_t;
    const auto g = window_as<T>();
    const T C1 = static_cast<T>((0.01 * data_range) * (0.01 * data_range));
    const T C2 = static_cast<T>((0.03 * data_range) * (0.03 * data_range));
    Pyramid<T> pyr(x.data_ptr<T>(), y.data_ptr<T>(), planes, x.size(2), x.size(3));
    std::vector<double> cs(kLevels * planes), ss(kLevels * planes);
    for (int l = 0; l < kLevels; ++l)
      level_moments(pyr.x[l], pyr.y[l], planes, pyr.shape[l], g.data(), C1, C2, cs.data() + l * planes,
                    ss.data() + l * planes, static_cast<T*>(nullptr), l == kLevels - 1);
    T* op = out.data_ptr<T>();
    const auto& w = ms_ssim_weights();
    for (int64_t n = 0; n < N; ++n) {
      double acc = 0;
      for (int64_t c = 0; c < C; ++c) {
        double v[kLevels];
        level_values(cs.data(), ss.data(), planes, n * C + c, v);
        double ms = 1;
        for (int l = 0; l < kLevels; ++l) ms *= std::pow(v[l], w[l]);
        acc += ms;
      }
      op[n] = static_cast<T>(acc / C);
    }
  });
  return out;
}

// Adjoint pass for a block of rows of level l: gx[r][c] = a (A + 2 x B + y Cc) + pool^T(g_next), where
// A, B, Cc are the valid 11x11 filterings of the zero-padded derivative maps D.
template <typename T>
NNRAW_ALWAYS_INLINE void adjoint_rows_body(const T* D, const T* x, const T* y, const LevelShape& s, const T* g,
                                           T a, const T* gnext, const LevelShape* sn, T* gx, int64_t r0,
                                           int64_t r1) {
  const int64_t Wp = s.Wo + 2 * kHalo, Hp = s.Ho + 2 * kHalo, plane_p = Hp * Wp;
  std::vector<T> buf(3 * Wp + 4 * s.W);
  T* vb = buf.data();
  T* A = vb + 3 * Wp;
  T* B = A + s.W;
  T* Cc = B + s.W;
  T* up = Cc + s.W;  // pool^T of the coarser gradient along this row
  const int64_t ph = s.H % 2, pw = s.W % 2;
  for (int64_t r = r0; r < r1; ++r) {
    vertical3(D + r * Wp, plane_p, Wp, g, vb);
    horizontal(vb, s.W, g, A);
    horizontal(vb + Wp, s.W, g, B);
    horizontal(vb + 2 * Wp, s.W, g, Cc);
    if (gnext) {
      const T* nrow = gnext + ((r + ph) / 2) * sn->W;
      for (int64_t c = 0; c < s.W; ++c) up[c] = T(0.25) * nrow[(c + pw) / 2];
    } else {
      std::fill(up, up + s.W, T(0));
    }
    const T* __restrict xr = x + r * s.W;
    const T* __restrict yr = y + r * s.W;
    const T* __restrict pA = A;
    const T* __restrict pB = B;
    const T* __restrict pC = Cc;
    const T* __restrict pu = up;
    T* __restrict out = gx + r * s.W;
    for (int64_t c = 0; c < s.W; ++c) out[c] = a * (pA[c] + 2 * xr[c] * pB[c] + yr[c] * pC[c]) + pu[c];
  }
}

template <typename T>
void adjoint_rows_base(const T* D, const T* x, const T* y, const LevelShape& s, const T* g, T a, const T* gnext,
                       const LevelShape* sn, T* gx, int64_t r0, int64_t r1) {
  adjoint_rows_body(D, x, y, s, g, a, gnext, sn, gx, r0, r1);
}

#if NNRAW_HAVE_AVX2_CLONE
template <typename T>
NNRAW_TARGET_AVX2 void adjoint_rows_avx2(const T* D, const T* x, const T* y, const LevelShape& s, const T* g, T a,
                                         const T* gnext, const LevelShape* sn, T* gx, int64_t r0, int64_t r1) {
  adjoint_rows_body(D, x, y, s, g, a, gnext, sn, gx, r0, r1);
}
#endif

template <typename T>
void adjoint_rows(const T* D, const T* x, const T* y, const LevelShape& s, const T* g, T a, const T* gnext,
                  const LevelShape* sn, T* gx, int64_t r0, int64_t r1) {
#if NNRAW_HAVE_AVX2_CLONE
  if (cpu_has_avx2()) return adjoint_rows_avx2(D, x, y, s, g, a, gnext, sn, gx, r0, r1);
#endif
  adjoint_rows_base(D, x, y, s, g, a, gnext, sn, gx, r0, r1);
}

at::Tensor ms_ssim_backward_cpu(const at::Tensor& grad, const at::Tensor& x_in, const at::Tensor& y_in,
                                double data_range) {
  check_ms_ssim_backward_args("nnraw.ms_ssim_backward", grad, x_in, y_in, data_range);
  const auto x = x_in.contiguous();
  const auto y = y_in.contiguous();
  const auto gr = grad.contiguous();
  const int64_t N = x.size(0), C = x.size(1), planes = N * C;
  auto out = at::empty_like(x, at::MemoryFormat::Contiguous);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ms_ssim_backward_cpu", [&] {
    using T = scalar_t;
    const auto g = window_as<T>();
    const T C1 = static_cast<T>((0.01 * data_range) * (0.01 * data_range));
    const T C2 = static_cast<T>((0.03 * data_range) * (0.03 * data_range));
    Pyramid<T> pyr(x.data_ptr<T>(), y.data_ptr<T>(), planes, x.size(2), x.size(3));
    const auto& sh = pyr.shape;
    // Derivative maps of every level (zero-padded by 10 on each side), then the means.
    std::array<int64_t, kLevels> doff{};
    int64_t dtotal = 0;
    for (int l = 0; l < kLevels; ++l) {
      doff[l] = dtotal;
      dtotal += planes * 3 * (sh[l].Ho + 2 * kHalo) * (sh[l].Wo + 2 * kHalo);
    }
    std::vector<T> D(dtotal);
    std::vector<double> cs(kLevels * planes), ss(kLevels * planes);
    for (int l = 0; l < kLevels; ++l)
      level_moments(pyr.x[l], pyr.y[l], planes, sh[l], g.data(), C1, C2, cs.data() + l * planes,
                    ss.data() + l * planes, D.data() + doff[l], l == kLevels - 1);
    // Per-plane scale of each level's map: grad[n] / C * dMS/dv_l / (Ho Wo), zero where relu clipped.
    const auto& w = ms_ssim_weights();
    const T* gp = gr.data_ptr<T>();
    std::vector<T> scale(kLevels * planes);
    for (int64_t p = 0; p < planes; ++p) {
      double v[kLevels];
      level_values(cs.data(), ss.data(), planes, p, v);
      const double gnc = static_cast<double>(gp[p / C]) / static_cast<double>(C);
      for (int l = 0; l < kLevels; ++l) {
        double d = 0;
        if (v[l] > 0) {
          d = w[l] * std::pow(v[l], w[l] - 1.0);
          for (int j = 0; j < kLevels; ++j)
            if (j != l) d *= std::pow(v[j], w[j]);
        }
        scale[l * planes + p] = static_cast<T>(gnc * d / static_cast<double>(sh[l].Ho * sh[l].Wo));
      }
    }
    // Adjoint filtering, coarse to fine, adding the pooling adjoint of the coarser level's gradient.
    std::vector<T> gbuf_a, gbuf_b;
    const T* gnext = nullptr;
    for (int l = kLevels - 1; l >= 0; --l) {
      const auto& s = sh[l];
      T* gl;
      if (l == 0) {
        gl = out.data_ptr<T>();
      } else {
        auto& buf = (l % 2) ? gbuf_a : gbuf_b;
        buf.resize(planes * s.H * s.W);
        gl = buf.data();
      }
      const int64_t blocks = (s.H + kRowBlock - 1) / kRowBlock;
      const int64_t dplane = 3 * (s.Ho + 2 * kHalo) * (s.Wo + 2 * kHalo);
      const LevelShape* sn = (l < kLevels - 1) ? &sh[l + 1] : nullptr;
      const T* gn = gnext;
      at::parallel_for(0, planes * blocks, 1, [&](int64_t begin, int64_t end) {
        for (int64_t t = begin; t < end; ++t) {
          const int64_t p = t / blocks, blk = t % blocks;
          adjoint_rows(D.data() + doff[l] + p * dplane, pyr.x[l] + p * s.H * s.W, pyr.y[l] + p * s.H * s.W, s,
                       g.data(), scale[l * planes + p], gn ? gn + p * sn->H * sn->W : nullptr, sn,
                       gl + p * s.H * s.W, blk * kRowBlock, std::min(s.H, (blk + 1) * kRowBlock));
        }
      });
      gnext = gl;
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(nnraw, CPU, m) {
  m.impl("center_ms_ssim_l1", &center_ms_ssim_l1_cpu);
  m.impl("center_ms_ssim_l1_backward", &center_ms_ssim_l1_backward_cpu);
  m.impl("ms_ssim", &ms_ssim_cpu);
  m.impl("ms_ssim_backward", &ms_ssim_backward_cpu);
}

}  // namespace nnraw
