// PReLU with per-channel slopes: CUDA kernels (float32, float64, float16, bfloat16; arithmetic in
// at::opmath_type, so float for the half types). See csrc/cpu/prelu.cpp for the definition, the
// argument checks and the memory-format rule, which are shared with these kernels.
//
//   forward   one flat, grid-stride pass; each thread handles a 16-byte vector when the pointers allow;
//             the channel of an element is tracked incrementally (one division per vector).
//   backward  kernel 1 writes grad_x and float32 partial sums of x*grad over x <= 0, one per
//             (sample, spatial chunk, channel): rows of the partial buffer are (sample, chunk);
//             kernel 2 reduces the rows into grad_weight [C] (in weight's dtype).
//             Contiguous x: a block per (sample, channel) plane chunk, vector loads once aligned.
//             Channels-last x: a block per (sample, pixel chunk, channel group); threads run along
//             the channels (coalesced), the block reduces over its pixels.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>

namespace nnraw::prelu_detail {
// Defined in csrc/cpu/prelu.cpp (the same shared object).
std::string dtype_name(at::ScalarType t);
void check_prelu_args(const char* op, const at::Tensor& x, const at::Tensor& weight);
void check_prelu_backward_args(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& weight);
at::MemoryFormat prelu_memory_format(const at::Tensor& x);
int64_t spatial_size(const at::Tensor& x);
}  // namespace nnraw::prelu_detail

namespace {

using namespace nnraw::prelu_detail;

constexpr int kThreads = 256;
constexpr int kVecBytes = 16;

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

void check_cuda_dtype(const char* op, const at::Tensor& x) {
  const auto t = x.scalar_type();
  TORCH_CHECK(t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16, op,
              ": x dtype must be one of float32, float64, float16, bfloat16 on cuda, got ", dtype_name(t));
}

bool aligned(const void* p, int bytes) {
  return reinterpret_cast<std::uintptr_t>(p) % bytes == 0;
}

// ---- forward ---------------------------------------------------------------------------------

// Element i has channel (i / inner) % channels: inner is the spatial size for contiguous x, 1 for
// channels-last x.
template <typename scalar_t, typename index_t, int VEC>
__global__ void prelu_forward_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ y,
                                     const scalar_t* __restrict__ weight, index_t numel, index_t channels,
                                     index_t inner) {
  using opmath_t = at::opmath_type<scalar_t>;
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x * VEC;
  for (index_t base = (static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x) * VEC; base < numel;
       base += stride) {
    const index_t q = base / inner;
    index_t r = base - q * inner;
    index_t c = q % channels;
    if (base + VEC <= numel) {
      const Pack<scalar_t, VEC> in = *reinterpret_cast<const Pack<scalar_t, VEC>*>(x + base);
      Pack<scalar_t, VEC> out;
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        const opmath_t v = static_cast<opmath_t>(in.v[j]);
        const opmath_t w = static_cast<opmath_t>(weight[c]);
        out.v[j] = static_cast<scalar_t>(v > opmath_t(0) ? v : w * v);
        if (++r == inner) {
          r = 0;
          c = (c + 1 == channels) ? 0 : c + 1;
        }
      }
      *reinterpret_cast<Pack<scalar_t, VEC>*>(y + base) = out;
    } else {
      for (index_t i = base; i < numel; ++i) {
        const opmath_t v = static_cast<opmath_t>(x[i]);
        const opmath_t w = static_cast<opmath_t>(weight[c]);
        y[i] = static_cast<scalar_t>(v > opmath_t(0) ? v : w * v);
        if (++r == inner) {
          r = 0;
          c = (c + 1 == channels) ? 0 : c + 1;
        }
      }
    }
  }
}

template <typename scalar_t, typename index_t, int VEC>
void launch_forward(const scalar_t* x, scalar_t* y, const scalar_t* w, int64_t numel, int64_t channels,
                    int64_t inner, cudaStream_t stream) {
  const int64_t vectors = (numel + VEC - 1) / VEC;
  const int64_t blocks = std::min<int64_t>((vectors + kThreads - 1) / kThreads, int64_t(1) << 20);
  prelu_forward_kernel<scalar_t, index_t, VEC><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
      x, y, w, static_cast<index_t>(numel), static_cast<index_t>(channels), static_cast<index_t>(inner));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor prelu_cuda(const at::Tensor& x_in, const at::Tensor& weight_in) {
  constexpr const char* op = "nnraw::prelu";
  check_prelu_args(op, x_in, weight_in);
  check_cuda_dtype(op, x_in);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const auto format = prelu_memory_format(x_in);
  const at::Tensor x = x_in.contiguous(format);
  const at::Tensor weight = weight_in.contiguous();
  at::Tensor y = at::empty(x.sizes(), x.options().memory_format(format));
  const int64_t numel = x.numel();
  if (numel == 0) return y;
  const int64_t channels = x.size(1);
  const int64_t inner = format == at::MemoryFormat::Contiguous ? spatial_size(x) : 1;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "nnraw_prelu_cuda", [&] {
    constexpr int kVec = kVecBytes / sizeof(scalar_t);
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* wp = weight.const_data_ptr<scalar_t>();
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    const bool vec = aligned(xp, kVecBytes) && aligned(yp, kVecBytes);
    // 32-bit indices while base + grid stride cannot overflow them.
    const bool small = numel < (int64_t(1) << 30);
    if (vec && small) {
      launch_forward<scalar_t, int32_t, kVec>(xp, yp, wp, numel, channels, inner, stream);
    } else if (vec) {
      launch_forward<scalar_t, int64_t, kVec>(xp, yp, wp, numel, channels, inner, stream);
    } else if (small) {
      launch_forward<scalar_t, int32_t, 1>(xp, yp, wp, numel, channels, inner, stream);
    } else {
      launch_forward<scalar_t, int64_t, 1>(xp, yp, wp, numel, channels, inner, stream);
    }
  });
  return y;
}

// ---- backward, kernel 1 -------------------------------------------------------------------------

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

// Sum over the block (blockDim.x == kThreads, 1-D); the result is valid in thread 0.
template <typename acc_t>
__device__ __forceinline__ acc_t block_sum(acc_t v) {
  __shared__ acc_t warp_totals[kThreads / 32];
  v = warp_sum(v);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warp_totals[warp] = v;
  __syncthreads();
  v = threadIdx.x < kThreads / 32 ? warp_totals[threadIdx.x] : acc_t(0);
  if (warp == 0) v = warp_sum(v);
  return v;
}

template <typename opmath_t, typename acc_t, typename scalar_t>
__device__ __forceinline__ void backward_element(const scalar_t& g, const scalar_t& x, scalar_t& gx, opmath_t w,
                                                 acc_t& acc) {
  const opmath_t gv = static_cast<opmath_t>(g), xv = static_cast<opmath_t>(x);
  if (xv > opmath_t(0)) {
    gx = static_cast<scalar_t>(gv);
  } else {
    gx = static_cast<scalar_t>(w * gv);
    acc += static_cast<acc_t>(xv * gv);
  }
}

// Contiguous x. grid.x: planes (sample * C + channel); grid.y: chunks of a plane.
// partial[(sample * chunks + chunk) * C + channel] = sum over the chunk of x*grad where x <= 0.
template <typename scalar_t, typename acc_t, int VEC>
__global__ void prelu_backward_planar_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ x,
                                             scalar_t* __restrict__ grad_x, const scalar_t* __restrict__ weight,
                                             acc_t* __restrict__ partial, int64_t channels, int64_t spatial,
                                             int64_t chunk_len) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int64_t plane = blockIdx.x, chunk = blockIdx.y, chunks = gridDim.y;
  const int64_t sample = plane / channels, c = plane - sample * channels;
  const int64_t s0 = chunk * chunk_len, s1 = std::min(spatial, s0 + chunk_len);
  const opmath_t w = static_cast<opmath_t>(weight[c]);
  acc_t acc = 0;
  if (s0 < s1) {
    const int64_t off = plane * spatial + s0, n = s1 - s0;
    const scalar_t* gp = grad + off;
    const scalar_t* xp = x + off;
    scalar_t* gxp = grad_x + off;
    // Scalar head up to the first 16-byte boundary (the launcher made the three pointers congruent).
    int64_t head = 0;
    if (VEC > 1) {
      const int64_t mis = (reinterpret_cast<std::uintptr_t>(xp) % kVecBytes) / sizeof(scalar_t);
      head = std::min<int64_t>(n, mis == 0 ? 0 : VEC - mis);
    }
    for (int64_t i = threadIdx.x; i < head; i += blockDim.x) backward_element(gp[i], xp[i], gxp[i], w, acc);
    const int64_t body = VEC > 1 ? (n - head) / VEC : 0;
    for (int64_t v = threadIdx.x; v < body; v += blockDim.x) {
      const int64_t i = head + v * VEC;
      const Pack<scalar_t, VEC> g = *reinterpret_cast<const Pack<scalar_t, VEC>*>(gp + i);
      const Pack<scalar_t, VEC> xv = *reinterpret_cast<const Pack<scalar_t, VEC>*>(xp + i);
      Pack<scalar_t, VEC> out;
#pragma unroll
      for (int j = 0; j < VEC; ++j) backward_element(g.v[j], xv.v[j], out.v[j], w, acc);
      *reinterpret_cast<Pack<scalar_t, VEC>*>(gxp + i) = out;
    }
    for (int64_t i = head + body * VEC + threadIdx.x; i < n; i += blockDim.x) {
      backward_element(gp[i], xp[i], gxp[i], w, acc);
    }
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) partial[(sample * chunks + chunk) * channels + c] = acc;
}

// Channels-last x: [N, spatial, C] in memory. Block (tx, ty) with tx * ty == kThreads; thread x runs
// over VEC-channel groups, thread y over pixels. grid.x: (sample, chunk); grid.y: channel groups.
template <typename scalar_t, typename acc_t, int VEC>
__global__ void prelu_backward_channels_last_kernel(const scalar_t* __restrict__ grad,
                                                    const scalar_t* __restrict__ x,
                                                    scalar_t* __restrict__ grad_x,
                                                    const scalar_t* __restrict__ weight,
                                                    acc_t* __restrict__ partial, int64_t channels,
                                                    int64_t spatial, int64_t chunk_len, int64_t chunks) {
  using opmath_t = at::opmath_type<scalar_t>;
  extern __shared__ unsigned char shared_bytes[];
  acc_t* shared = reinterpret_cast<acc_t*>(shared_bytes);  // [ty][tx * VEC]
  const int tx = blockDim.x, ty = blockDim.y;
  const int64_t row = blockIdx.x;  // sample * chunks + chunk
  const int64_t sample = row / chunks, chunk = row - sample * chunks;
  const int64_t c0 = (static_cast<int64_t>(blockIdx.y) * tx + threadIdx.x) * VEC;
  const int64_t s0 = chunk * chunk_len, s1 = std::min(spatial, s0 + chunk_len);
  acc_t acc[VEC];
  opmath_t w[VEC];
#pragma unroll
  for (int j = 0; j < VEC; ++j) {
    acc[j] = 0;
    w[j] = c0 + j < channels ? static_cast<opmath_t>(weight[c0 + j]) : opmath_t(0);
  }
  if (c0 < channels) {
    for (int64_t s = s0 + threadIdx.y; s < s1; s += ty) {
      const int64_t off = (sample * spatial + s) * channels + c0;
      if (VEC > 1) {  // the launcher picks VEC > 1 only when C % VEC == 0 and the pointers are aligned
        const Pack<scalar_t, VEC> g = *reinterpret_cast<const Pack<scalar_t, VEC>*>(grad + off);
        const Pack<scalar_t, VEC> xv = *reinterpret_cast<const Pack<scalar_t, VEC>*>(x + off);
        Pack<scalar_t, VEC> out;
#pragma unroll
        for (int j = 0; j < VEC; ++j) backward_element(g.v[j], xv.v[j], out.v[j], w[j], acc[j]);
        *reinterpret_cast<Pack<scalar_t, VEC>*>(grad_x + off) = out;
      } else {
        backward_element(grad[off], x[off], grad_x[off], w[0], acc[0]);
      }
    }
  }
  // Reduce over the pixels (threadIdx.y); ty is a power of two.
  const int width = tx * VEC;
#pragma unroll
  for (int j = 0; j < VEC; ++j) shared[threadIdx.y * width + threadIdx.x * VEC + j] = acc[j];
  __syncthreads();
  for (int half = ty / 2; half > 0; half >>= 1) {
    if (threadIdx.y < half) {
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        shared[threadIdx.y * width + threadIdx.x * VEC + j] += shared[(threadIdx.y + half) * width + threadIdx.x * VEC + j];
      }
    }
    __syncthreads();
  }
  if (threadIdx.y == 0) {
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      if (c0 + j < channels) partial[row * channels + c0 + j] = shared[threadIdx.x * VEC + j];
    }
  }
}

// ---- backward, kernel 2 -------------------------------------------------------------------------

// grad_weight[c] = sum over rows of partial[row, c]. Block (32, 8): x over channels, y over rows.
template <typename scalar_t, typename acc_t>
__global__ void prelu_grad_weight_kernel(const acc_t* __restrict__ partial, scalar_t* __restrict__ grad_weight,
                                         int64_t rows, int64_t channels) {
  __shared__ acc_t shared[8][32];
  const int64_t c = static_cast<int64_t>(blockIdx.x) * 32 + threadIdx.x;
  acc_t acc = 0;
  if (c < channels) {
    for (int64_t r = threadIdx.y; r < rows; r += 8) acc += partial[r * channels + c];
  }
  shared[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && c < channels) {
    acc_t total = 0;
#pragma unroll
    for (int k = 0; k < 8; ++k) total += shared[k][threadIdx.x];
    grad_weight[c] = static_cast<scalar_t>(total);
  }
}

int64_t next_pow2(int64_t v) {
  int64_t p = 1;
  while (p < v) p <<= 1;
  return p;
}

constexpr int64_t kElementsPerBlock = 8192;  // backward work per block, about
constexpr int64_t kMaxGridY = 65535;

template <typename scalar_t, typename acc_t, int VEC>
void launch_backward_planar(const scalar_t* g, const scalar_t* x, scalar_t* gx, const scalar_t* w, acc_t* partial,
                            int64_t planes, int64_t channels, int64_t spatial, int64_t chunks, int64_t chunk_len,
                            cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(planes), static_cast<unsigned>(chunks));
  prelu_backward_planar_kernel<scalar_t, acc_t, VEC><<<grid, kThreads, 0, stream>>>(g, x, gx, w, partial, channels,
                                                                                   spatial, chunk_len);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Launch geometry of the channels-last kernel; `chunks` spatial chunks per sample make the rows of
// the partial buffer (n * chunks).
struct ChannelsLastGrid {
  int tx, ty;              // threads along channel groups and along pixels (tx * ty == kThreads)
  int64_t channel_blocks;  // grid.y
  int64_t chunk_len, chunks;
};

ChannelsLastGrid channels_last_grid(int64_t channels, int64_t spatial, int vec) {
  ChannelsLastGrid g;
  const int64_t groups = (channels + vec - 1) / vec;
  g.tx = static_cast<int>(std::min<int64_t>(32, next_pow2(groups)));
  g.ty = kThreads / g.tx;
  g.channel_blocks = (groups + g.tx - 1) / g.tx;
  const int64_t pixels = std::max<int64_t>(g.ty, kElementsPerBlock / std::max<int64_t>(channels, 1));
  const int64_t chunks = (spatial + pixels - 1) / pixels;
  g.chunk_len = (spatial + chunks - 1) / chunks;
  g.chunks = (spatial + g.chunk_len - 1) / g.chunk_len;
  return g;
}

template <typename scalar_t, typename acc_t, int VEC>
void launch_backward_channels_last(const scalar_t* g, const scalar_t* x, scalar_t* gx, const scalar_t* w,
                                   acc_t* partial, int64_t n, int64_t channels, int64_t spatial,
                                   const ChannelsLastGrid& geo, cudaStream_t stream) {
  TORCH_CHECK(geo.channel_blocks <= kMaxGridY, "nnraw::prelu_backward: too many channels for the CUDA kernel: ",
              channels);
  const dim3 grid(static_cast<unsigned>(n * geo.chunks), static_cast<unsigned>(geo.channel_blocks));
  const dim3 block(geo.tx, geo.ty);
  const size_t shared = sizeof(acc_t) * kThreads * VEC;
  prelu_backward_channels_last_kernel<scalar_t, acc_t, VEC><<<grid, block, shared, stream>>>(
      g, x, gx, w, partial, channels, spatial, geo.chunk_len, geo.chunks);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

std::tuple<at::Tensor, at::Tensor> prelu_backward_cuda(const at::Tensor& grad_in, const at::Tensor& x_in,
                                                       const at::Tensor& weight_in) {
  constexpr const char* op = "nnraw::prelu_backward";
  check_prelu_backward_args(grad_in, x_in, weight_in);
  check_cuda_dtype(op, x_in);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const auto format = prelu_memory_format(x_in);
  const at::Tensor x = x_in.contiguous(format);
  const at::Tensor grad = grad_in.contiguous(format);
  const at::Tensor weight = weight_in.contiguous();
  at::Tensor grad_x = at::empty(x.sizes(), x.options().memory_format(format));
  const int64_t n = x.size(0), channels = x.size(1), spatial = spatial_size(x);
  if (x.numel() == 0) return {grad_x, at::zeros({channels}, weight.options())};
  at::Tensor grad_weight = at::empty({channels}, weight.options());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "nnraw_prelu_backward_cuda", [&] {
    // float32 partial sums (float64 for float64 inputs).
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    constexpr int kVec = kVecBytes / sizeof(scalar_t);
    const at::ScalarType acc_type = std::is_same_v<acc_t, double> ? at::kDouble : at::kFloat;
    const scalar_t* gp = grad.const_data_ptr<scalar_t>();
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* wp = weight.const_data_ptr<scalar_t>();
    scalar_t* gxp = grad_x.mutable_data_ptr<scalar_t>();
    at::Tensor partial;
    int64_t rows = 0;
    if (format == at::MemoryFormat::Contiguous) {
      // Vector loads once aligned: needs x, grad and grad_x at the same offset from a 16-byte boundary.
      const auto mis = [](const void* p) { return reinterpret_cast<std::uintptr_t>(p) % kVecBytes; };
      const bool vec = mis(xp) == mis(gp) && mis(xp) == mis(gxp) && mis(xp) % sizeof(scalar_t) == 0;
      int64_t chunks = std::min<int64_t>(kMaxGridY, (spatial + kElementsPerBlock - 1) / kElementsPerBlock);
      const int64_t chunk_len = (spatial + chunks - 1) / chunks;
      chunks = (spatial + chunk_len - 1) / chunk_len;
      rows = n * chunks;
      partial = at::empty({rows, channels}, x.options().dtype(acc_type));
      acc_t* pp = partial.mutable_data_ptr<acc_t>();
      if (vec) {
        launch_backward_planar<scalar_t, acc_t, kVec>(gp, xp, gxp, wp, pp, n * channels, channels, spatial, chunks,
                                                      chunk_len, stream);
      } else {
        launch_backward_planar<scalar_t, acc_t, 1>(gp, xp, gxp, wp, pp, n * channels, channels, spatial, chunks,
                                                   chunk_len, stream);
      }
    } else {
      const bool vec = channels % kVec == 0 && aligned(xp, kVecBytes) && aligned(gp, kVecBytes) &&
                       aligned(gxp, kVecBytes);
      const ChannelsLastGrid geo = channels_last_grid(channels, spatial, vec ? kVec : 1);
      rows = n * geo.chunks;
      partial = at::empty({rows, channels}, x.options().dtype(acc_type));
      acc_t* pp = partial.mutable_data_ptr<acc_t>();
      if (vec) {
        launch_backward_channels_last<scalar_t, acc_t, kVec>(gp, xp, gxp, wp, pp, n, channels, spatial, geo, stream);
      } else {
        launch_backward_channels_last<scalar_t, acc_t, 1>(gp, xp, gxp, wp, pp, n, channels, spatial, geo, stream);
      }
    }
    // Kernel 2: the reduction over samples (and chunks).
    const dim3 grid(static_cast<unsigned>((channels + 31) / 32));
    const dim3 block(32, 8);
    prelu_grad_weight_kernel<scalar_t, acc_t><<<grid, block, 0, stream>>>(
        partial.const_data_ptr<acc_t>(), grad_weight.mutable_data_ptr<scalar_t>(), rows, channels);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {grad_x, grad_weight};
}

}  // namespace

TORCH_LIBRARY_IMPL(nnraw, CUDA, m) {
  m.impl("prelu", &prelu_cuda);
  m.impl("prelu_backward", &prelu_backward_cuda);
}
