// Edge-aware (soft-weighted Hamilton-Adams) pre-demosaic, CUDA kernel. Same maths, order of
// operations and mirrored borders as the CPU kernel (csrc/cpu/demosaic.cpp) and the reference
// (python/nnraw/ops/demosaic.py).
//
// One block per 64 x 32 output tile (grid z = image). In shared memory:
//   1. the white-balanced mosaic of the tile plus a 3-pixel halo (38 x 70), read once from global
//      memory with mirrored indices (no edge repeat: -k -> k), so nothing else needs bounds logic;
//   2. green on the tile plus a 1-pixel halo (34 x 66);
//   3. each thread then writes R, G, B of its pixels, consecutive threads on consecutive columns, so
//      the three plane stores of a warp are 128-byte coalesced.
// All arithmetic in at::opmath_type<scalar_t> (float for float16/bfloat16/float32, double for float64).
// Memory traffic per pixel: 4 bytes read (+ ~30% halo, mostly from L2) and 12 bytes written.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <string_view>

namespace nnraw::demosaic {

// Defined in csrc/cpu/demosaic.cpp (always compiled into the same library): the argument checks
// shared with the Python function, returning the CFA colour codes (2 bits per site).
int check_args(const at::Tensor& mosaic, std::string_view pattern, const at::Tensor& wb);

namespace {

constexpr int kTileW = 64;
constexpr int kTileH = 32;
constexpr int kThreads = 256;
constexpr int kBalW = kTileW + 6;    // mosaic tile + 3-pixel halo each side
constexpr int kBalH = kTileH + 6;
constexpr int kGreenW = kTileW + 2;  // green tile + 1-pixel halo each side
constexpr int kGreenH = kTileH + 2;

__device__ __forceinline__ int colour_at(int code, int y, int x) {
  return (code >> (2 * (2 * (y & 1) + (x & 1)))) & 3;   // y, x may be negative: & 1 is still the phase
}

// Mirror without edge repeat, then clamped: positions of a partial tile far outside a small image
// are never used for an output pixel, they only need a valid address.
__device__ __forceinline__ int mirror_index(int i, int n) {
  i = i < 0 ? -i : (i >= n ? 2 * n - 2 - i : i);
  return i < 0 ? 0 : (i >= n ? n - 1 : i);
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
edge_aware_demosaic_kernel(const scalar_t* __restrict__ mosaic, scalar_t* __restrict__ out,
                           const at::opmath_type<scalar_t>* __restrict__ gains, int h, int w, int code) {
  using T = at::opmath_type<scalar_t>;
  __shared__ T balanced[kBalH][kBalW];
  __shared__ T green[kGreenH][kGreenW];

  const int image = blockIdx.z;
  const int x0 = blockIdx.x * kTileW;
  const int y0 = blockIdx.y * kTileH;
  const int64_t plane = static_cast<int64_t>(h) * w;
  const scalar_t* src = mosaic + image * plane;
  const T gain_r = gains[3 * image], gain_g = gains[3 * image + 1], gain_b = gains[3 * image + 2];
  // Select by colour code without a local array (dynamic indexing would put it in local memory).
  auto gain_of = [&](int colour) { return colour == 0 ? gain_r : (colour == 1 ? gain_g : gain_b); };

  // 1. Balanced mosaic with halo 3. Tile origins are even, so the phase of a tile position is that
  //    of the image position it stands for.
  for (int i = threadIdx.x; i < kBalH * kBalW; i += kThreads) {
    const int ty = i / kBalW, tx = i - ty * kBalW;
    const int y = y0 - 3 + ty, x = x0 - 3 + tx;
    const T value = static_cast<T>(src[static_cast<int64_t>(mirror_index(y, h)) * w + mirror_index(x, w)]);
    balanced[ty][tx] = value * gain_of(colour_at(code, y, x));
  }
  __syncthreads();

  // 2. Green with halo 1: the sample at G sites, the soft-weighted Hamilton-Adams estimate elsewhere
  //    (evaluated for every pixel, then selected: no divergence between neighbouring threads).
  const T eps = static_cast<T>(1e-9);
  for (int i = threadIdx.x; i < kGreenH * kGreenW; i += kThreads) {
    const int gy = i / kGreenW, gx = i - gy * kGreenW;
    const int by = gy + 2, bx = gx + 2;                    // same pixel in the balanced tile
    const T c = balanced[by][bx];
    const T left = balanced[by][bx - 1], right = balanced[by][bx + 1];
    const T up = balanced[by - 1][bx], down = balanced[by + 1][bx];
    const T grad_x = fabs(left - right) / 2;
    const T grad_y = fabs(up - down) / 2;
    const T lap_x = 2 * c - balanced[by][bx - 2] - balanced[by][bx + 2];
    const T lap_y = 2 * c - balanced[by - 2][bx] - balanced[by + 2][bx];
    const T l_x = fabs(lap_x) / 4;
    const T l_y = fabs(lap_y) / 4;
    const T i_x = (left + right) / 2 + lap_x / 8;
    const T i_y = (up + down) / 2 + lap_y / 8;
    const T weight = (grad_y + l_y) / (grad_x + grad_y + l_x + l_y + eps);
    const T estimate = weight * i_x + (1 - weight) * i_y;
    green[gy][gx] = colour_at(code, y0 - 1 + gy, x0 - 1 + gx) == 1 ? c : estimate;
  }
  __syncthreads();

  // 3. R and B by colour differences d = balanced - green at the sites of that colour (0 elsewhere).
  //    In a row that holds the colour: d(x) + (d(x-1) + d(x+1)) / 2 (own sites: d; G sites: the
  //    horizontal mean); in a row without it: vertical mean (G sites) + diagonal mean (other colour).
  //    The terms not used at a site are exact zeros, so this is the reference's value.
  scalar_t* out_image = out + image * 3 * plane;
  for (int i = threadIdx.x; i < kTileH * kTileW; i += kThreads) {
    const int ty = i / kTileW, tx = i - ty * kTileW;
    const int y = y0 + ty, x = x0 + tx;
    if (y >= h || x >= w) continue;
    const int gy = ty + 1, gx = tx + 1, by = ty + 3, bx = tx + 3;
    const T g = green[gy][gx];
    T rgb[3];
    rgb[1] = g / gain_g;
#pragma unroll
    for (int k = 0; k < 3; k += 2) {
      auto diff = [&](int dy, int dx) -> T {
        return colour_at(code, y + dy, x + dx) == k ? balanced[by + dy][bx + dx] - green[gy + dy][gx + dx] : T(0);
      };
      const bool row_has_colour = colour_at(code, y, 0) == k || colour_at(code, y, 1) == k;
      const T colour_diff = row_has_colour
          ? diff(0, 0) + (diff(0, -1) + diff(0, 1)) / 2
          : (diff(-1, 0) + diff(1, 0)) / 2 + (diff(-1, -1) + diff(-1, 1) + diff(1, -1) + diff(1, 1)) / 4;
      rgb[k] = (g + colour_diff) / gain_of(k);
    }
    const int64_t offset = static_cast<int64_t>(y) * w + x;
    out_image[offset] = static_cast<scalar_t>(rgb[0]);
    out_image[plane + offset] = static_cast<scalar_t>(rgb[1]);
    out_image[2 * plane + offset] = static_cast<scalar_t>(rgb[2]);
  }
}

at::Tensor edge_aware_demosaic_cuda(const at::Tensor& mosaic, c10::string_view pattern, const at::Tensor& wb) {
  const int code = check_args(mosaic, pattern, wb);
  const c10::cuda::CUDAGuard guard(mosaic.device());
  const at::Tensor input = mosaic.contiguous();
  const int64_t n = input.size(0), h = input.size(2), w = input.size(3);
  TORCH_CHECK_VALUE(h <= INT32_MAX && w <= INT32_MAX && n <= 65535, "nnraw.edge_aware_demosaic: CUDA kernel supports ",
                    "N <= 65535 and sides < 2^31, got ", n, "x", h, "x", w);
  at::Tensor out = at::empty({n, 3, h, w}, input.options());
  if (n == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "edge_aware_demosaic_cuda", [&] {
    using T = at::opmath_type<scalar_t>;
    // Gains as [N, 3] in the compute type (exact: float16/bfloat16/float32 -> float, float64 -> double).
    const at::Tensor gains = wb.to(c10::CppTypeToScalarType<T>::value).reshape({-1, 3}).expand({n, 3}).contiguous();
    const dim3 grid(static_cast<unsigned>((w + kTileW - 1) / kTileW), static_cast<unsigned>((h + kTileH - 1) / kTileH),
                    static_cast<unsigned>(n));
    TORCH_CHECK_VALUE(grid.y <= 65535, "nnraw.edge_aware_demosaic: CUDA kernel supports H <= ", 65535 * kTileH,
                      ", got ", h);
    edge_aware_demosaic_kernel<scalar_t><<<grid, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        input.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), gains.const_data_ptr<T>(),
        static_cast<int>(h), static_cast<int>(w), code);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace
}  // namespace nnraw::demosaic

TORCH_LIBRARY_IMPL(nnraw, CUDA, m) {
  m.impl("edge_aware_demosaic", &nnraw::demosaic::edge_aware_demosaic_cuda);
}
