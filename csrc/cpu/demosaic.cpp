// Edge-aware (soft-weighted Hamilton-Adams) pre-demosaic, CPU kernel, and the argument checks that
// the CUDA kernel (csrc/cuda/demosaic.cu) shares.
//
// mosaic [N, 1, H, W] (H, W even, >= 4), pattern RGGB | BGGR | GRBG | GBRG, wb [3] or [N, 3]
// -> camera RGB [N, 3, H, W]. Formulas: python/nnraw/ops/demosaic.py (the pure-PyTorch reference,
// which this kernel matches at every pixel, borders included).
//
// Layout of the work: rows are split over threads (at::parallel_for); each thread streams down its
// rows with small ring buffers (about 20 rows of W values, which stay in L2):
//   1. balanced rows  b = mosaic * wb gain of the site's colour, with 2 mirrored columns each side;
//   2. green rows     G = b at G sites, the soft-weighted Hamilton-Adams estimate elsewhere;
//      colour-difference rows dR = b - G at R sites (0 elsewhere), dB likewise, 1 mirrored column;
//   3. output row y   from G(y) and dR, dB of rows y-1..y+1.
// Borders: the mosaic is mirrored without repeating the edge (index -k reads k, index H-1+k reads
// H-1-k), which keeps the CFA phase. Rows are mirrored by choosing the source row; columns by the
// halo columns of the row buffers, so the per-pixel loops have no bounds logic at all.
// Every row loop is written branch-free over all W pixels (the green estimate is evaluated at G
// sites too and then replaced) so that the compiler vectorises it.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <array>
#include <cmath>
#include <string>
#include <string_view>
#include <vector>

namespace nnraw::demosaic {

constexpr const char* kOp = "nnraw.edge_aware_demosaic";

// The dtype as Python prints it, so that C++ and Python error messages read the same.
std::string python_dtype_name(c10::ScalarType type) {
  switch (type) {
    case c10::ScalarType::Float: return "torch.float32";
    case c10::ScalarType::Double: return "torch.float64";
    case c10::ScalarType::Half: return "torch.float16";
    case c10::ScalarType::BFloat16: return "torch.bfloat16";
    case c10::ScalarType::Long: return "torch.int64";
    case c10::ScalarType::Int: return "torch.int32";
    case c10::ScalarType::Short: return "torch.int16";
    case c10::ScalarType::Char: return "torch.int8";
    case c10::ScalarType::Byte: return "torch.uint8";
    case c10::ScalarType::Bool: return "torch.bool";
    case c10::ScalarType::ComplexFloat: return "torch.complex64";
    case c10::ScalarType::ComplexDouble: return "torch.complex128";
    default: return std::string("torch.") + c10::toString(type);
  }
}

// Colour codes 0 = R, 1 = G, 2 = B of the 2x2 CFA block, packed 2 bits each at position
// 2 * (2 * (y & 1) + (x & 1)).
int cfa_code(std::string_view pattern) {
  int code = 0;
  for (int k = 0; k < 4; ++k) {
    const int colour = pattern[k] == 'R' ? 0 : pattern[k] == 'G' ? 1 : 2;
    code |= colour << (2 * k);
  }
  return code;
}

// The checks of check_demosaic_args() in python/nnraw/ops/demosaic.py, same order, same text and
// exception types (TORCH_CHECK_VALUE -> ValueError, TORCH_CHECK_TYPE -> TypeError). Returns the CFA code.
int check_args(const at::Tensor& mosaic, std::string_view pattern, const at::Tensor& wb) {
  TORCH_CHECK_VALUE(pattern == "RGGB" || pattern == "BGGR" || pattern == "GRBG" || pattern == "GBRG", kOp,
                    ": pattern must be one of RGGB, BGGR, GRBG, GBRG, got '", pattern, "'");
  TORCH_CHECK_VALUE(mosaic.dim() == 4 && mosaic.size(1) == 1, kOp,
                    ": mosaic must have shape [N, 1, H, W], got ", mosaic.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(mosaic.scalar_type()), kOp,
                   ": mosaic must be a floating-point tensor, got ", python_dtype_name(mosaic.scalar_type()));
  const int64_t h = mosaic.size(2), w = mosaic.size(3);
  TORCH_CHECK_VALUE(h >= 4 && w >= 4 && h % 2 == 0 && w % 2 == 0, kOp,
                    ": mosaic height and width must be even and >= 4, got ", h, "x", w);
  TORCH_CHECK_TYPE(wb.scalar_type() == mosaic.scalar_type(), kOp, ": wb must have the mosaic's dtype ",
                   python_dtype_name(mosaic.scalar_type()), ", got ", python_dtype_name(wb.scalar_type()));
  TORCH_CHECK_VALUE(wb.device() == mosaic.device(), kOp, ": wb must be on the mosaic's device ",
                    mosaic.device(), ", got ", wb.device());
  const int64_t n = mosaic.size(0);
  TORCH_CHECK_VALUE((wb.dim() == 1 && wb.size(0) == 3) || (wb.dim() == 2 && wb.size(0) == n && wb.size(1) == 3),
                    kOp, ": wb must have shape [3] or [N, 3] = [", n, ", 3], got ", wb.sizes());
  return cfa_code(pattern);
}

namespace {

inline int colour_at(int code, int64_t y, int64_t x) {
  return (code >> (2 * (2 * (y & 1) + (x & 1)))) & 3;
}

// Mirror without edge repeat: -k -> k, n-1+k -> n-1-k (valid for k <= n-1).
inline int64_t mirror(int64_t i, int64_t n) {
  return i < 0 ? -i : (i >= n ? 2 * n - 2 - i : i);
}

// Per-thread ring buffers. Balanced rows: 8 slots of W + 4 (2 halo columns each side); green rows:
// 4 slots of W; colour-difference rows dR, dB: 4 slots of W + 2 (1 halo column each side).
template <typename T>
struct RowRings {
  int64_t width;
  std::vector<T> balanced, green, diff_r, diff_b;
  explicit RowRings(int64_t w)
      : width(w), balanced(8 * (w + 4)), green(4 * w), diff_r(4 * (w + 2)), diff_b(4 * (w + 2)) {}
  // Pointers to column 0 of the slot for (virtual, possibly negative) row v.
  T* b(int64_t v) { return balanced.data() + (v & 7) * (width + 4) + 2; }
  T* g(int64_t v) { return green.data() + (v & 3) * width; }
  T* dr(int64_t v) { return diff_r.data() + (v & 3) * (width + 2) + 1; }
  T* db(int64_t v) { return diff_b.data() + (v & 3) * (width + 2) + 1; }
};

// b[x] = mosaic[x] * gain of the colour at x, then 2 mirrored columns each side.
template <typename scalar_t, typename T>
void balance_row(const scalar_t* __restrict src, T* __restrict b, int64_t w, T gain_even, T gain_odd) {
  for (int64_t x = 0; x < w; x += 2) {
    b[x] = static_cast<T>(src[x]) * gain_even;
    b[x + 1] = static_cast<T>(src[x + 1]) * gain_odd;
  }
  b[-1] = b[1];
  b[-2] = b[2];
  b[w] = b[w - 2];
  b[w + 1] = b[w - 3];
}

// Soft-weighted Hamilton-Adams green estimate at every pixel of a row from the balanced rows
// y-2..y+2 (u2, u1, c, d1, d2), in the reference's order of operations.
template <typename T>
void green_estimate_row(const T* __restrict u2, const T* __restrict u1, const T* __restrict c,
                        const T* __restrict d1, const T* __restrict d2, T* __restrict g, int64_t w) {
  const T eps = static_cast<T>(1e-9);
  for (int64_t x = 0; x < w; ++x) {
    const T left = c[x - 1], right = c[x + 1], up = u1[x], down = d1[x];
    const T grad_x = std::abs(left - right) / 2;
    const T grad_y = std::abs(up - down) / 2;
    const T lap_x = 2 * c[x] - c[x - 2] - c[x + 2];
    const T lap_y = 2 * c[x] - u2[x] - d2[x];
    const T l_x = std::abs(lap_x) / 4;
    const T l_y = std::abs(lap_y) / 4;
    const T i_x = (left + right) / 2 + lap_x / 8;
    const T i_y = (up + down) / 2 + lap_y / 8;
    const T weight = (grad_y + l_y) / (grad_x + grad_y + l_x + l_y + eps);
    g[x] = weight * i_x + (1 - weight) * i_y;
  }
}

template <typename scalar_t>
void demosaic_rows(const scalar_t* __restrict src, scalar_t* __restrict out_r, scalar_t* __restrict out_g,
                   scalar_t* __restrict out_b, int64_t h, int64_t w, int64_t row_begin, int64_t row_end,
                   int code, const at::opmath_type<scalar_t>* gains, RowRings<at::opmath_type<scalar_t>>& rings) {
  using T = at::opmath_type<scalar_t>;
  // Balanced row v (virtual: -3 .. h+2, read from the mirrored source row).
  auto fill_balanced = [&](int64_t v) {
    balance_row(src + mirror(v, h) * w, rings.b(v), w, gains[colour_at(code, v, 0)], gains[colour_at(code, v, 1)]);
  };
  // Green and colour-difference rows of virtual row v (needs balanced rows v-2 .. v+2).
  auto fill_green = [&](int64_t v) {
    T* g = rings.g(v);
    const T* c = rings.b(v);
    green_estimate_row(rings.b(v - 2), rings.b(v - 1), c, rings.b(v + 1), rings.b(v + 2), g, w);
    const int64_t g_phase = colour_at(code, v, 0) == 1 ? 0 : 1;     // column parity of G in this row
    const int other = colour_at(code, v, 1 - g_phase);               // R or B
    for (int64_t x = g_phase; x < w; x += 2) g[x] = c[x];
    T* d_here = other == 0 ? rings.dr(v) : rings.db(v);
    T* d_none = other == 0 ? rings.db(v) : rings.dr(v);
    for (int64_t x = -1; x <= w; ++x) d_none[x] = 0;
    for (int64_t x = g_phase; x < w; x += 2) d_here[x] = 0;
    for (int64_t x = 1 - g_phase; x < w; x += 2) d_here[x] = c[x] - g[x];
    d_here[-1] = d_here[1];
    d_here[w] = d_here[w - 2];
  };
  // R or B of output row y from the colour differences of rows y-1..y+1. The terms that the
  // reference does not use at a site are exact zeros there, so one branch-free formula per row
  // gives the reference's value: in a row that holds the colour, d(x) + (d(x-1) + d(x+1)) / 2
  // (own sites: d; G sites: horizontal mean); in a row without it, vertical mean (G sites) +
  // diagonal mean (sites of the other colour).
  auto colour_row = [&](const T* __restrict g, const T* __restrict d_up, const T* __restrict d,
                        const T* __restrict d_down, bool row_has_colour, T gain, scalar_t* __restrict out) {
    if (row_has_colour) {
      for (int64_t x = 0; x < w; ++x) {
        const T diff = d[x] + (d[x - 1] + d[x + 1]) / 2;
        out[x] = static_cast<scalar_t>((g[x] + diff) / gain);
      }
    } else {
      for (int64_t x = 0; x < w; ++x) {
        const T diff = (d_up[x] + d_down[x]) / 2 + (d_up[x - 1] + d_up[x + 1] + d_down[x - 1] + d_down[x + 1]) / 4;
        out[x] = static_cast<scalar_t>((g[x] + diff) / gain);
      }
    }
  };

  for (int64_t v = row_begin - 3; v <= row_begin + 2; ++v) fill_balanced(v);
  fill_green(row_begin - 1);
  fill_green(row_begin);
  for (int64_t y = row_begin; y < row_end; ++y) {
    fill_balanced(y + 3);
    fill_green(y + 1);
    const bool row_has_r = colour_at(code, y, 0) == 0 || colour_at(code, y, 1) == 0;
    const T* g = rings.g(y);
    const int64_t offset = y * w;
    colour_row(g, rings.dr(y - 1), rings.dr(y), rings.dr(y + 1), row_has_r, gains[0], out_r + offset);
    colour_row(g, rings.db(y - 1), rings.db(y), rings.db(y + 1), !row_has_r, gains[2], out_b + offset);
    const T gain_g = gains[1];
    scalar_t* __restrict og = out_g + offset;
    for (int64_t x = 0; x < w; ++x) og[x] = static_cast<scalar_t>(g[x] / gain_g);
  }
}

at::Tensor edge_aware_demosaic_cpu(const at::Tensor& mosaic, c10::string_view pattern, const at::Tensor& wb) {
  const int code = check_args(mosaic, pattern, wb);
  const at::Tensor input = mosaic.contiguous();
  const int64_t n = input.size(0), h = input.size(2), w = input.size(3);
  at::Tensor out = at::empty({n, 3, h, w}, input.options());
  if (n == 0) return out;
  // Gains as [N, 3] doubles (exact for every floating dtype), cast to the compute type below.
  const at::Tensor gains64 = wb.to(at::kDouble).reshape({-1, 3}).expand({n, 3}).contiguous();
  const double* gains_all = gains64.data_ptr<double>();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "edge_aware_demosaic_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    const scalar_t* src = input.const_data_ptr<scalar_t>();
    scalar_t* dst = out.mutable_data_ptr<scalar_t>();
    const int64_t plane = h * w;
    // Rows of all images in one range; a thread's range is cut at image boundaries. Each cut costs
    // two extra green rows, so the grain keeps pieces long.
    at::parallel_for(0, n * h, 64, [&](int64_t begin, int64_t end) {
      RowRings<T> rings(w);
      while (begin < end) {
        const int64_t image = begin / h;
        const int64_t row_begin = begin - image * h;
        const int64_t row_end = std::min(h, row_begin + (end - begin));
        const T gains[3] = {static_cast<T>(gains_all[3 * image]), static_cast<T>(gains_all[3 * image + 1]),
                            static_cast<T>(gains_all[3 * image + 2])};
        scalar_t* out_image = dst + image * 3 * plane;
        demosaic_rows<scalar_t>(src + image * plane, out_image, out_image + plane, out_image + 2 * plane, h, w,
                                row_begin, row_end, code, gains, rings);
        begin += row_end - row_begin;
      }
    });
  });
  return out;
}

}  // namespace
}  // namespace nnraw::demosaic

TORCH_LIBRARY_IMPL(nnraw, CPU, m) {
  m.impl("edge_aware_demosaic", &nnraw::demosaic::edge_aware_demosaic_cpu);
}
