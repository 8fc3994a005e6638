// PReLU with per-channel slopes: CPU kernels, plus the argument checks and the memory-format rule
// that the CUDA kernels (csrc/cuda/prelu.cu) share.
//
//   y = x            where x > 0
//   y = weight[c] x  elsewhere                     x: [N, C, *spatial], weight: [C]
//
// Backward, split as in the reference system:
//   kernel 1: grad_x = grad (x > 0) or weight[c] grad, and partial sums of x*grad over x <= 0, one per
//             (sample, channel) and spatial chunk;
//   kernel 2: grad_weight[c] = sum of the partial sums over samples and chunks.
//
// Autograd (for every device) is registered here in C++ rather than in Python with
// torch.library.register_autograd: a Python autograd kernel costs about 0.1 ms of CPU time per
// forward+backward, more than the CUDA kernels take for a training batch.
//
// Memory formats: x that is channels_last (4-D) or channels_last_3d (5-D) is read in place and the
// outputs are written in the same format; any other x is made contiguous first and the outputs are
// contiguous (the Python fake kernels in python/nnraw/ops/prelu.py follow the same rule).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <algorithm>
#include <sstream>
#include <string>
#include <vector>

namespace nnraw::prelu_detail {

std::string dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "float32";
    case at::kDouble: return "float64";
    case at::kHalf: return "float16";
    case at::kBFloat16: return "bfloat16";
    case at::kLong: return "int64";
    case at::kInt: return "int32";
    case at::kShort: return "int16";
    case at::kChar: return "int8";
    case at::kByte: return "uint8";
    case at::kBool: return "bool";
    default: return c10::toString(t);
  }
}

std::string shape_str(at::IntArrayRef sizes) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < sizes.size(); ++i) s << (i ? ", " : "") << sizes[i];
  s << "]";
  return s.str();
}

// Checks shared by both ops and both devices. `op` is "nnraw::prelu" or "nnraw::prelu_backward".
void check_prelu_args(const char* op, const at::Tensor& x, const at::Tensor& weight) {
  TORCH_CHECK(x.dim() >= 2, op, ": x must have shape [N, C, *spatial] (at least 2 dimensions), got ",
              shape_str(x.sizes()));
  const int64_t channels = x.size(1);
  TORCH_CHECK(weight.dim() == 1 && weight.size(0) == channels, op, ": weight must have shape [C] = [",
              channels, "], got ", shape_str(weight.sizes()));
  TORCH_CHECK(weight.device() == x.device(), op, ": weight must be on x's device ", x.device().str(),
              ", got ", weight.device().str());
  TORCH_CHECK(weight.scalar_type() == x.scalar_type(), op, ": weight must have x's dtype ",
              dtype_name(x.scalar_type()), ", got ", dtype_name(weight.scalar_type()));
}

void check_prelu_backward_args(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& weight) {
  constexpr const char* op = "nnraw::prelu_backward";
  check_prelu_args(op, x, weight);
  TORCH_CHECK(grad.sizes() == x.sizes(), op, ": grad must have x's shape ", shape_str(x.sizes()), ", got ",
              shape_str(grad.sizes()));
  TORCH_CHECK(grad.device() == x.device(), op, ": grad must be on x's device ", x.device().str(), ", got ",
              grad.device().str());
  TORCH_CHECK(grad.scalar_type() == x.scalar_type(), op, ": grad must have x's dtype ",
              dtype_name(x.scalar_type()), ", got ", dtype_name(grad.scalar_type()));
}

// The layout the kernels read and write: channels-last when x already is (and is not also plain
// contiguous, as happens when C == 1 or the spatial size is 1), contiguous otherwise.
at::MemoryFormat prelu_memory_format(const at::Tensor& x) {
  if (x.dim() == 4 && !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast)) {
    return at::MemoryFormat::ChannelsLast;
  }
  if (x.dim() == 5 && !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast3d)) {
    return at::MemoryFormat::ChannelsLast3d;
  }
  return at::MemoryFormat::Contiguous;
}

int64_t spatial_size(const at::Tensor& x) {
  int64_t s = 1;
  for (int64_t d = 2; d < x.dim(); ++d) s *= x.size(d);
  return s;
}

}  // namespace nnraw::prelu_detail

namespace {

using namespace nnraw::prelu_detail;

constexpr int64_t kGrain = 32768;          // elements per parallel task, at least
// Spatial elements per backward partial sum, at most: about 4096 float additions per accumulator.
constexpr int64_t kChunkPlanar = 32768;    // contiguous: a plane run, over 2 vectors of accumulators
constexpr int64_t kChunkPixels = 4096;     // channels-last: pixels, one accumulator per channel

void check_cpu_dtype(const char* op, const at::Tensor& x) {
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, op,
              ": x dtype must be one of float32, float64 on cpu, got ", dtype_name(x.scalar_type()));
}

// ---- SIMD ------------------------------------------------------------------------------------
// 16-byte vectors through the GCC/Clang vector extensions (SSE2 on x86-64, NEON on arm64). The plain
// `x > 0 ? x : w * x` loop is not vectorised by GCC 12 (it keeps a branch, which mispredicts on every
// other element of real activations), and at::vec::Vectorized falls back to scalar code unless the
// file is compiled once per CPU capability as ATen does.
template <typename T>
struct Simd;
template <>
struct Simd<float> {
  typedef float vec __attribute__((vector_size(16)));
};
template <>
struct Simd<double> {
  typedef double vec __attribute__((vector_size(16)));
};

template <typename T>
using vec_t = typename Simd<T>::vec;
template <typename T>
constexpr int64_t kWidth = sizeof(vec_t<T>) / sizeof(T);

template <typename T>
inline vec_t<T> load(const T* p) {
  vec_t<T> v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}
template <typename T>
inline void store(T* p, vec_t<T> v) {
  __builtin_memcpy(p, &v, sizeof(v));
}
template <typename T>
inline vec_t<T> broadcast(T s) {
  return vec_t<T>{} + s;
}

// ---- forward ---------------------------------------------------------------------------------

template <typename scalar_t>
inline scalar_t prelu_scalar(scalar_t v, scalar_t w) {
  return v > scalar_t(0) ? v : w * v;
}

template <typename scalar_t>
inline void prelu_span_one_slope(const scalar_t* __restrict x, scalar_t* __restrict y, int64_t n, scalar_t w) {
  using V = vec_t<scalar_t>;
  constexpr int64_t L = kWidth<scalar_t>;
  const V zero{}, wv = broadcast(w);
  int64_t i = 0;
  for (; i + 2 * L <= n; i += 2 * L) {
    const V a = load(x + i), b = load(x + i + L);
    store(y + i, a > zero ? a : a * wv);
    store(y + i + L, b > zero ? b : b * wv);
  }
  for (; i < n; ++i) y[i] = prelu_scalar(x[i], w);
}

template <typename scalar_t>
inline void prelu_span_per_channel(const scalar_t* __restrict x, scalar_t* __restrict y,
                                   const scalar_t* __restrict w, int64_t channels) {
  using V = vec_t<scalar_t>;
  constexpr int64_t L = kWidth<scalar_t>;
  const V zero{};
  int64_t c = 0;
  for (; c + L <= channels; c += L) {
    const V v = load(x + c);
    store(y + c, v > zero ? v : v * load(w + c));
  }
  for (; c < channels; ++c) y[c] = prelu_scalar(x[c], w[c]);
}

template <typename scalar_t>
void prelu_forward_nchw(const scalar_t* x, scalar_t* y, const scalar_t* w, int64_t rows, int64_t channels,
                        int64_t spatial) {
  // Rows are (sample, channel) planes of `spatial` elements.
  const int64_t total = rows * spatial;
  at::parallel_for(0, total, kGrain, [&](int64_t begin, int64_t end) {
    int64_t i = begin;
    while (i < end) {
      const int64_t row = i / spatial;
      const int64_t stop = std::min(end, (row + 1) * spatial);
      prelu_span_one_slope(x + i, y + i, stop - i, w[row % channels]);
      i = stop;
    }
  });
}

template <typename scalar_t>
void prelu_forward_nhwc(const scalar_t* x, scalar_t* y, const scalar_t* w, int64_t pixels, int64_t channels) {
  // Pixels (sample, position) of `channels` contiguous elements each.
  const int64_t grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(channels, 1));
  at::parallel_for(0, pixels, grain, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      prelu_span_per_channel(x + p * channels, y + p * channels, w, channels);
    }
  });
}

at::Tensor prelu_cpu(const at::Tensor& x_in, const at::Tensor& weight_in) {
  constexpr const char* op = "nnraw::prelu";
  check_prelu_args(op, x_in, weight_in);
  check_cpu_dtype(op, x_in);
  const auto format = prelu_memory_format(x_in);
  const at::Tensor x = x_in.contiguous(format);
  const at::Tensor weight = weight_in.contiguous();
  at::Tensor y = at::empty(x.sizes(), x.options().memory_format(format));
  if (x.numel() == 0) return y;
  const int64_t n = x.size(0), channels = x.size(1), spatial = spatial_size(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "nnraw_prelu_cpu", [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* wp = weight.const_data_ptr<scalar_t>();
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    if (format == at::MemoryFormat::Contiguous) {
      prelu_forward_nchw(xp, yp, wp, n * channels, channels, spatial);
    } else {
      prelu_forward_nhwc(xp, yp, wp, n * spatial, channels);
    }
  });
  return y;
}

// ---- backward --------------------------------------------------------------------------------

// grad_x over a span with one slope; returns the sum of x*grad over x <= 0.
template <typename scalar_t>
inline scalar_t prelu_backward_span_one_slope(const scalar_t* __restrict g, const scalar_t* __restrict x,
                                              scalar_t* __restrict gx, int64_t n, scalar_t w) {
  using V = vec_t<scalar_t>;
  constexpr int64_t L = kWidth<scalar_t>;
  const V zero{}, wv = broadcast(w);
  V acc0{}, acc1{};
  int64_t i = 0;
  for (; i + 2 * L <= n; i += 2 * L) {
    const V xa = load(x + i), ga = load(g + i), xb = load(x + i + L), gb = load(g + i + L);
    const auto pa = xa > zero, pb = xb > zero;
    store(gx + i, pa ? ga : ga * wv);
    store(gx + i + L, pb ? gb : gb * wv);
    acc0 += pa ? zero : xa * ga;
    acc1 += pb ? zero : xb * gb;
  }
  scalar_t total = 0;
  for (; i < n; ++i) {
    const scalar_t xv = x[i], gv = g[i];
    const bool positive = xv > scalar_t(0);
    gx[i] = positive ? gv : w * gv;
    if (!positive) total += xv * gv;
  }
  acc0 += acc1;
  for (int64_t k = 0; k < L; ++k) total += acc0[k];
  return total;
}

// grad_x over one pixel's channels; adds x*grad over x <= 0 into acc[c].
template <typename scalar_t>
inline void prelu_backward_span_per_channel(const scalar_t* __restrict g, const scalar_t* __restrict x,
                                            scalar_t* __restrict gx, const scalar_t* __restrict w,
                                            scalar_t* __restrict acc, int64_t channels) {
  using V = vec_t<scalar_t>;
  constexpr int64_t L = kWidth<scalar_t>;
  const V zero{};
  int64_t c = 0;
  for (; c + L <= channels; c += L) {
    const V xv = load(x + c), gv = load(g + c);
    const auto positive = xv > zero;
    store(gx + c, positive ? gv : gv * load(w + c));
    store(acc + c, load(acc + c) + (positive ? zero : xv * gv));
  }
  for (; c < channels; ++c) {
    const scalar_t xv = x[c], gv = g[c];
    const bool positive = xv > scalar_t(0);
    gx[c] = positive ? gv : w[c] * gv;
    if (!positive) acc[c] += xv * gv;
  }
}

std::tuple<at::Tensor, at::Tensor> prelu_backward_cpu(const at::Tensor& grad_in, const at::Tensor& x_in,
                                                      const at::Tensor& weight_in) {
  constexpr const char* op = "nnraw::prelu_backward";
  check_prelu_backward_args(grad_in, x_in, weight_in);
  check_cpu_dtype(op, x_in);
  const auto format = prelu_memory_format(x_in);
  const at::Tensor x = x_in.contiguous(format);
  const at::Tensor grad = grad_in.contiguous(format);
  const at::Tensor weight = weight_in.contiguous();
  at::Tensor grad_x = at::empty(x.sizes(), x.options().memory_format(format));
  at::Tensor grad_weight = at::zeros({weight.size(0)}, weight.options());  // stays 0 when x is empty
  if (x.numel() == 0) return {grad_x, grad_weight};

  const int64_t n = x.size(0), channels = x.size(1), spatial = spatial_size(x);
  const int64_t max_chunk = format == at::MemoryFormat::Contiguous ? kChunkPlanar : kChunkPixels;
  const int64_t chunks = (spatial + max_chunk - 1) / max_chunk;  // spatial chunks per sample
  const int64_t chunk_len = (spatial + chunks - 1) / chunks;

  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "nnraw_prelu_backward_cpu", [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* gp = grad.const_data_ptr<scalar_t>();
    const scalar_t* wp = weight.const_data_ptr<scalar_t>();
    scalar_t* gxp = grad_x.mutable_data_ptr<scalar_t>();
    scalar_t* gwp = grad_weight.mutable_data_ptr<scalar_t>();
    // Kernel 1: grad_x and partial sums, one per (sample, chunk, channel).
    std::vector<scalar_t> partial(static_cast<size_t>(n * chunks * channels), scalar_t(0));
    scalar_t* pp = partial.data();
    if (format == at::MemoryFormat::Contiguous) {
      // Tasks: (sample, channel, chunk) -> a run of one plane.
      const int64_t tasks = n * channels * chunks;
      const int64_t grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(chunk_len, 1));
      at::parallel_for(0, tasks, grain, [&](int64_t begin, int64_t end) {
        for (int64_t t = begin; t < end; ++t) {
          const int64_t chunk = t % chunks, row = t / chunks;  // row = sample * C + channel
          const int64_t sample = row / channels, c = row % channels;
          const int64_t s0 = chunk * chunk_len, s1 = std::min(spatial, s0 + chunk_len);
          const int64_t off = row * spatial + s0;
          pp[(sample * chunks + chunk) * channels + c] =
              prelu_backward_span_one_slope(gp + off, xp + off, gxp + off, s1 - s0, wp[c]);
        }
      });
    } else {
      // Tasks: (sample, chunk) -> a run of pixels, all channels.
      const int64_t tasks = n * chunks;
      at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
        for (int64_t t = begin; t < end; ++t) {
          const int64_t sample = t / chunks, chunk = t % chunks;
          const int64_t s0 = chunk * chunk_len, s1 = std::min(spatial, s0 + chunk_len);
          scalar_t* acc = pp + t * channels;
          for (int64_t s = s0; s < s1; ++s) {
            const int64_t off = (sample * spatial + s) * channels;
            prelu_backward_span_per_channel(gp + off, xp + off, gxp + off, wp, acc, channels);
          }
        }
      });
    }
    // Kernel 2: reduce the partial sums over samples and chunks.
    std::vector<double> sum(static_cast<size_t>(channels), 0.0);
    for (int64_t r = 0; r < n * chunks; ++r) {
      const scalar_t* row = pp + r * channels;
      for (int64_t c = 0; c < channels; ++c) sum[c] += static_cast<double>(row[c]);
    }
    for (int64_t c = 0; c < channels; ++c) gwp[c] = static_cast<scalar_t>(sum[c]);
  });
  return {grad_x, grad_weight};
}

// ---- autograd (all devices) ------------------------------------------------------------------

at::Tensor call_prelu(const at::Tensor& x, const at::Tensor& weight) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("nnraw::prelu", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&)>();
  return op.call(x, weight);
}

std::tuple<at::Tensor, at::Tensor> call_prelu_backward(const at::Tensor& grad, const at::Tensor& x,
                                                       const at::Tensor& weight) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("nnraw::prelu_backward", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                 const at::Tensor&)>();
  return op.call(grad, x, weight);
}

class PReLUFunction : public torch::autograd::Function<PReLUFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({x, weight});
    return call_prelu(x, weight);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    if (!grads[0].defined()) return {at::Tensor(), at::Tensor()};
    auto [grad_x, grad_weight] = call_prelu_backward(grads[0], saved[0], saved[1]);
    return {ctx->needs_input_grad(0) ? grad_x : at::Tensor(), ctx->needs_input_grad(1) ? grad_weight : at::Tensor()};
  }
};

// prelu_backward is differentiable only once: its own backward refuses clearly.
class PReLUBackwardFunction : public torch::autograd::Function<PReLUBackwardFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext*, const at::Tensor& grad,
                                                const at::Tensor& x, const at::Tensor& weight) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [grad_x, grad_weight] = call_prelu_backward(grad, x, weight);
    return {grad_x, grad_weight};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext*, torch::autograd::variable_list) {
    TORCH_CHECK(false, "nnraw::prelu_backward: double backward (gradients of gradients) is not supported");
  }
};

at::Tensor prelu_autograd(const at::Tensor& x, const at::Tensor& weight) {
  return PReLUFunction::apply(x, weight);
}

std::tuple<at::Tensor, at::Tensor> prelu_backward_autograd(const at::Tensor& grad, const at::Tensor& x,
                                                           const at::Tensor& weight) {
  auto out = PReLUBackwardFunction::apply(grad, x, weight);
  return {out[0], out[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(nnraw, Autograd, m) {
  m.impl("prelu", &prelu_autograd);
  m.impl("prelu_backward", &prelu_backward_autograd);
}

TORCH_LIBRARY_IMPL(nnraw, CPU, m) {
  m.impl("prelu", &prelu_cpu);
  m.impl("prelu_backward", &prelu_backward_cpu);
}
