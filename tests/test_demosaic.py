"""Edge-aware pre-demosaic: compiled kernels against the vectorised reference and a slow per-pixel
reference written straight from the formulas (SEED.md "Pre-demosaic", mirrored borders)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nnraw.ops import HAVE_COMPILED
from nnraw.ops.demosaic import BAYER_PATTERNS, edge_aware_demosaic, edge_aware_demosaic_reference

OP = torch.ops.nnraw.edge_aware_demosaic if HAVE_COMPILED else None
needs_compiled = pytest.mark.skipif(not HAVE_COMPILED, reason="compiled op library nnraw._C not built (make dev)")

# Pattern of the crop that starts at (dy, dx) of an RGGB mosaic.
RGGB_CROPS = {(0, 0): "RGGB", (0, 1): "GRBG", (1, 0): "GBRG", (1, 1): "BGGR"}


def slow_per_pixel_demosaic(mosaic: np.ndarray, pattern: str, wb) -> np.ndarray:
    """The formulas pixel by pixel in plain Python (float64): mosaic [H, W], wb (R, G, B) -> [3, H, W].

    Every pixel outside the image reads the mosaic mirrored without edge repeat (-k -> k,
    H-1+k -> H-1-k); the colour of a position is that of the CFA phase, so the mirror keeps it.
    """
    h, w = mosaic.shape

    def mirror(i: int, n: int) -> int:
        return -i if i < 0 else (2 * n - 2 - i if i >= n else i)

    def colour(y: int, x: int) -> int:                      # 0 R, 1 G, 2 B
        return "RGB".index(pattern[2 * (y % 2) + x % 2])

    def balanced(y: int, x: int) -> float:
        return float(mosaic[mirror(y, h), mirror(x, w)]) * float(wb[colour(y, x)])

    def green(y: int, x: int) -> float:
        if colour(y, x) == 1:
            return balanced(y, x)
        c = balanced(y, x)
        left, right, up, down = balanced(y, x - 1), balanced(y, x + 1), balanced(y - 1, x), balanced(y + 1, x)
        g_x, g_y = abs(left - right) / 2, abs(up - down) / 2
        lap_x = 2 * c - balanced(y, x - 2) - balanced(y, x + 2)
        lap_y = 2 * c - balanced(y - 2, x) - balanced(y + 2, x)
        l_x, l_y = abs(lap_x) / 4, abs(lap_y) / 4
        i_x = (left + right) / 2 + lap_x / 8
        i_y = (up + down) / 2 + lap_y / 8
        weight = (g_y + l_y) / (g_x + g_y + l_x + l_y + 1e-9)
        return weight * i_x + (1 - weight) * i_y

    def colour_minus_green(y: int, x: int) -> float:
        return balanced(y, x) - green(y, x)

    out = np.zeros((3, h, w))
    for y in range(h):
        for x in range(w):
            g = green(y, x)
            out[1, y, x] = g / wb[1]
            for k in (0, 2):
                here = colour(y, x)
                if here == k:
                    value = balanced(y, x)
                elif here == 1:
                    if colour(y, x + 1) == k:            # the colour sits left and right
                        neighbours = [(y, x - 1), (y, x + 1)]
                    else:                                # above and below
                        neighbours = [(y - 1, x), (y + 1, x)]
                    value = g + sum(colour_minus_green(*p) for p in neighbours) / 2
                else:                                    # the other colour: four diagonals
                    diagonals = [(y - 1, x - 1), (y - 1, x + 1), (y + 1, x - 1), (y + 1, x + 1)]
                    value = g + sum(colour_minus_green(*p) for p in diagonals) / 4
                out[k, y, x] = value / wb[k]
    return out


def random_inputs(n: int, h: int, w: int, device: str, dtype=torch.float32, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    mosaic = torch.rand(n, 1, h, w, generator=gen, dtype=torch.float64)
    wb = 0.5 + 2 * torch.rand(n, 3, generator=gen, dtype=torch.float64)
    return mosaic.to(device, dtype), wb.to(device, dtype)


# ---------------------------------------------------------------------------------------------
# Correctness
# ---------------------------------------------------------------------------------------------

@needs_compiled
@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("size", [(4, 4), (4, 10), (18, 22), (34, 16)])
def test_compiled_matches_reference(device, pattern, dtype, size):
    mosaic, wb = random_inputs(3, *size, device, dtype, seed=size[0] * 100 + size[1])
    expected = edge_aware_demosaic_reference(mosaic, pattern, wb)
    got = OP(mosaic, pattern, wb)
    assert got.shape == (3, 3, *size) and got.dtype == dtype and got.is_contiguous()
    tol = dict(rtol=1e-6, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got, expected, **tol)


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
def test_reference_and_compiled_match_per_pixel_formulas(device, pattern):
    mosaic, wb = random_inputs(2, 12, 16, device, torch.float64, seed=7)
    expected = np.stack([slow_per_pixel_demosaic(mosaic[i, 0].cpu().numpy(), pattern, wb[i].cpu().numpy())
                         for i in range(2)])
    reference = edge_aware_demosaic_reference(mosaic, pattern, wb)
    np.testing.assert_allclose(reference.cpu().numpy(), expected, rtol=1e-12, atol=1e-12)
    if HAVE_COMPILED:
        np.testing.assert_allclose(OP(mosaic, pattern, wb).cpu().numpy(), expected, rtol=1e-12, atol=1e-12)


@needs_compiled
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_computed_in_float32(device, dtype):
    mosaic, wb = random_inputs(2, 16, 20, device, dtype, seed=3)
    got = OP(mosaic, "GRBG", wb)
    assert got.dtype == dtype
    expected = edge_aware_demosaic_reference(mosaic.float(), "GRBG", wb.float()).to(dtype)
    # Both round the same float32 result once; allow one unit in the last place.
    torch.testing.assert_close(got.float(), expected.float(), rtol=2 * torch.finfo(dtype).eps, atol=1e-3)


@needs_compiled
@pytest.mark.parametrize("threads", [2, 3])
def test_cpu_rows_split_over_threads_match_one_thread(threads):
    # at::parallel_for cuts 130 rows into 65 + 65 (2 threads: a cut at an odd row) or 44 + 44 + 42;
    # each piece restarts its row buffers with mirrored/halo rows: the result must not change.
    mosaic, wb = random_inputs(1, 130, 24, "cpu", torch.float32, seed=9)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = OP(mosaic, "GRBG", wb)
        torch.set_num_threads(threads)
        split = OP(mosaic, "GRBG", wb)
    finally:
        torch.set_num_threads(before)
    torch.testing.assert_close(split, single, rtol=0, atol=0)
    torch.testing.assert_close(split, edge_aware_demosaic_reference(mosaic, "GRBG", wb), rtol=1e-6, atol=1e-6)


@needs_compiled
def test_wb_shared_or_per_sample(device):
    mosaic, wb = random_inputs(3, 10, 12, device, torch.float32, seed=5)
    shared = OP(mosaic, "BGGR", wb[1])
    per_sample = OP(mosaic, "BGGR", wb[1].expand(3, 3))
    torch.testing.assert_close(shared, per_sample, rtol=0, atol=0)
    # Per-sample gains really are per sample: each image equals its own single-image demosaic.
    batched = OP(mosaic, "BGGR", wb)
    for i in range(3):
        torch.testing.assert_close(batched[i:i + 1], OP(mosaic[i:i + 1], "BGGR", wb[i]), rtol=0, atol=0)


@needs_compiled
def test_non_contiguous_mosaic(device):
    big, wb = random_inputs(2, 20, 40, device, torch.float32, seed=11)
    view = big[:, :, 2:14, 4:36:2]                         # strided, 12 x 16, starts on an even row
    assert not view.is_contiguous()
    torch.testing.assert_close(OP(view, "GBRG", wb), OP(view.contiguous(), "GBRG", wb), rtol=0, atol=0)
    channels_last = big.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(OP(channels_last, "RGGB", wb), OP(big, "RGGB", wb), rtol=0, atol=0)


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
def test_constant_image_is_reconstructed_everywhere(device, pattern):
    mosaic = torch.full((2, 1, 14, 18), 0.37, dtype=torch.float64, device=device)
    wb = torch.tensor([[2.1, 1.0, 1.6], [1.3, 0.9, 2.4]], dtype=torch.float64, device=device)
    out = edge_aware_demosaic(mosaic, pattern, wb)
    torch.testing.assert_close(out, torch.full_like(out, 0.37), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
def test_linear_colour_ramps_are_reconstructed_in_the_interior(device, pattern):
    # Each camera channel its own plane a + b y + c x; Hamilton-Adams green and colour-difference
    # interpolation are exact on linear data. The mirrored border breaks linearity within 3 pixels.
    h, w = 16, 22
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    planes = torch.stack([0.2 + 0.010 * y + 0.020 * x, 0.3 + 0.015 * y - 0.005 * x, 0.1 - 0.004 * y + 0.030 * x])
    masks = torch.zeros(3, h, w, dtype=torch.float64)
    for k, colour in enumerate(pattern):
        masks["RGB".index(colour), k // 2::2, k % 2::2] = 1
    mosaic = (planes * masks).sum(0)[None, None].to(device)
    wb = torch.tensor([1.9, 1.0, 1.4], dtype=torch.float64, device=device)
    out = edge_aware_demosaic(mosaic, pattern, wb)[0].cpu()
    torch.testing.assert_close(out[:, 3:-3, 3:-3], planes[:, 3:-3, 3:-3], rtol=1e-12, atol=1e-12)
    assert (out - planes).abs().max() > 1e-6, "the border is mirrored, so it cannot be linear there"


def test_real_raw_four_phases_agree(device, canon_dng):
    """Crops of a real RGGB raw starting at (0,0), (0,1), (1,0), (1,1) are the four CFA patterns; each
    demosaic must equal the reference and, away from its own mirrored border, the demosaic of the
    whole image at the same place."""
    import rawpy
    with rawpy.imread(str(canon_dng)) as raw:
        visible = raw.raw_image_visible.astype(np.float64)
        assert raw.color_desc == b"RGBG" and raw.raw_pattern.tolist() == [[0, 1], [3, 2]], "expected RGGB"
        cam_wb = np.array(raw.camera_whitebalance[:3])
    mosaic = (visible[300:556, 500:884] - 2056) / (15000 - 2056)              # 256 x 384, RGGB phase kept
    wb = torch.tensor(cam_wb / cam_wb[1], dtype=torch.float32, device=device)
    full = torch.from_numpy(mosaic).float()[None, None].to(device)
    whole = edge_aware_demosaic(full, "RGGB", wb)
    torch.testing.assert_close(whole, edge_aware_demosaic_reference(full, "RGGB", wb), rtol=1e-6, atol=1e-6)
    h, w = 250, 378
    for (dy, dx), pattern in RGGB_CROPS.items():
        crop = full[:, :, dy:dy + h, dx:dx + w]
        out = edge_aware_demosaic(crop, pattern, wb)
        torch.testing.assert_close(out, edge_aware_demosaic_reference(crop, pattern, wb), rtol=1e-6, atol=1e-6)
        # Pixels 3 or more from the crop's edge see no mirrored data: same inputs, same arithmetic.
        torch.testing.assert_close(out[..., 3:-3, 3:-3], whole[..., dy + 3:dy + h - 3, dx + 3:dx + w - 3],
                                   rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# Op registration: opcheck, torch.compile, errors
# ---------------------------------------------------------------------------------------------

@needs_compiled
@pytest.mark.parametrize("wb_shape", [(3,), (2, 3)])
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(device, wb_shape, requires_grad):
    mosaic, wb = random_inputs(2, 8, 12, device, torch.float32, seed=1)
    wb = wb[0] if wb_shape == (3,) else wb
    mosaic.requires_grad_(requires_grad)
    # All opcheck tests, test_autograd_registration included: the op declares itself not
    # differentiable (its Autograd key falls through), which opcheck accepts.
    torch.library.opcheck(OP.default, (mosaic, "RGGB", wb))
    torch.library.opcheck(OP.default, (mosaic.transpose(2, 3), "GBRG", wb))


@needs_compiled
def test_not_differentiable_output_does_not_require_grad(device):
    mosaic, wb = random_inputs(1, 8, 8, device, torch.float32)
    out = edge_aware_demosaic(mosaic.requires_grad_(), "RGGB", wb.requires_grad_())
    assert not out.requires_grad and out.grad_fn is None


@needs_compiled
def test_torch_compile_fullgraph(device):
    mosaic, wb = random_inputs(2, 12, 16, device, torch.float32, seed=2)
    compiled = torch.compile(edge_aware_demosaic, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(mosaic, "BGGR", wb), OP(mosaic, "BGGR", wb), rtol=0, atol=0)


def _calls():
    """The public function (Python checks), and the compiled op (C++ checks) where it is built."""
    calls = [pytest.param(edge_aware_demosaic, id="python")]
    if HAVE_COMPILED:
        calls.append(pytest.param(lambda *args: OP(*args), id="compiled"))
    return calls


@pytest.mark.parametrize("call", _calls())
def test_errors_name_the_op_and_show_expected_and_got(call, device):
    mosaic, wb = random_inputs(2, 8, 8, device, torch.float32)
    with pytest.raises(ValueError, match=r"nnraw.edge_aware_demosaic: pattern must be one of RGGB, BGGR, GRBG, GBRG, got 'RGBG'"):
        call(mosaic, "RGBG", wb)
    with pytest.raises(ValueError, match=r"mosaic must have shape \[N, 1, H, W\], got \[2, 3, 8, 8\]"):
        call(mosaic.expand(2, 3, 8, 8), "RGGB", wb)
    with pytest.raises(ValueError, match=r"mosaic must have shape \[N, 1, H, W\], got \[8, 8\]"):
        call(mosaic[0, 0], "RGGB", wb)
    with pytest.raises(TypeError, match=r"nnraw.edge_aware_demosaic: mosaic must be a floating-point tensor, got torch.int32"):
        call(mosaic.to(torch.int32), "RGGB", wb.to(torch.int32))
    with pytest.raises(ValueError, match=r"height and width must be even and >= 4, got 7x8"):
        call(mosaic[:, :, :7], "RGGB", wb)
    with pytest.raises(ValueError, match=r"height and width must be even and >= 4, got 8x2"):
        call(mosaic[:, :, :, :2], "RGGB", wb)
    with pytest.raises(TypeError, match=r"wb must have the mosaic's dtype torch.float32, got torch.float64"):
        call(mosaic, "RGGB", wb.double())
    with pytest.raises(ValueError, match=r"wb must have shape \[3\] or \[N, 3\] = \[2, 3\], got \[3, 3\]"):
        call(mosaic, "RGGB", torch.ones(3, 3, device=device))
    with pytest.raises(ValueError, match=r"wb must have shape \[3\] or \[N, 3\] = \[2, 3\], got \[4\]"):
        call(mosaic, "RGGB", torch.ones(4, device=device))
    other = "meta" if device == "cpu" else "cpu"
    with pytest.raises(ValueError, match=rf"wb must be on the mosaic's device {mosaic.device}, got {other}"):
        call(mosaic, "RGGB", wb.to(other))


# ---------------------------------------------------------------------------------------------
# The CUDA kernel's tiling, halo and mirror logic, checked on machines without a GPU
# ---------------------------------------------------------------------------------------------

_CUDA_EMULATION_HARNESS = r"""
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>
struct Dim { unsigned x = 0, y = 0, z = 0; };
static Dim blockIdx, threadIdx;
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(n)
#define __restrict__
#define __shared__ static
#define __syncthreads()
namespace at { template <class T> using opmath_type = T; }
using std::fabs;
namespace emu {
KERNEL
}
int main() {
  int n, h, w, code;
  if (fread(&n, 4, 1, stdin) != 1 || fread(&h, 4, 1, stdin) != 1 || fread(&w, 4, 1, stdin) != 1 ||
      fread(&code, 4, 1, stdin) != 1) return 1;
  std::vector<double> gains(3 * n), mosaic((size_t)n * h * w), out((size_t)n * 3 * h * w, NAN);
  if (fread(gains.data(), 8, gains.size(), stdin) != gains.size()) return 1;
  if (fread(mosaic.data(), 8, mosaic.size(), stdin) != mosaic.size()) return 1;
  for (unsigned z = 0; z < (unsigned)n; ++z)
    for (unsigned by = 0; by < (unsigned)((h + emu::kTileH - 1) / emu::kTileH); ++by)
      for (unsigned bx = 0; bx < (unsigned)((w + emu::kTileW - 1) / emu::kTileW); ++bx) {
        blockIdx.x = bx; blockIdx.y = by; blockIdx.z = z;
        emu::edge_aware_demosaic_kernel<double>(mosaic.data(), out.data(), gains.data(), h, w, code);
      }
  fwrite(out.data(), 8, out.size(), stdout);
}
"""


@pytest.mark.slow
def test_cuda_kernel_logic_emulated_on_the_host(tmp_path):
    """Compiles the body of csrc/cuda/demosaic.cu (constants, helpers, kernel) as host C++ with one
    'thread' per block, which executes every iteration of the block-strided loops in order: the same
    result as the GPU's threads between barriers. Runs every block of the grid in float64 and compares
    with the reference, so tile origins, halos, mirrored borders and partial tiles are checked where
    no GPU exists (the device fixture runs the real kernel where one does)."""
    import shutil
    import struct
    import subprocess
    from pathlib import Path

    compiler = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if compiler is None:
        pytest.skip("no C++ compiler on PATH to build the host emulation of the CUDA kernel")
    source = (Path(__file__).resolve().parents[1] / "csrc" / "cuda" / "demosaic.cu").read_text()
    kernel = source[source.index("constexpr int kTileW"):source.index("at::Tensor edge_aware_demosaic_cuda")]
    assert "constexpr int kThreads = 256;" in kernel
    kernel = kernel.replace("constexpr int kThreads = 256;", "constexpr int kThreads = 1;")
    (tmp_path / "emulate.cpp").write_text(_CUDA_EMULATION_HARNESS.replace("KERNEL", kernel))
    subprocess.run([compiler, "-std=c++20", "-O1", "-w", str(tmp_path / "emulate.cpp"), "-o", str(tmp_path / "emulate")],
                   check=True)
    # Sizes: smaller than a tile, exactly a tile (64 x 32), several tiles with partial ones, tall/thin.
    for (n, h, w), pattern in zip([(1, 4, 4), (2, 6, 10), (1, 32, 64), (3, 66, 130), (1, 130, 6), (2, 8, 200)],
                                  ["RGGB", "BGGR", "GRBG", "GBRG", "RGGB", "GBRG"]):
        mosaic, wb = random_inputs(n, h, w, "cpu", torch.float64, seed=h * w)
        code = sum("RGB".index(c) << (2 * k) for k, c in enumerate(pattern))
        payload = struct.pack("4i", n, h, w, code) + wb.numpy().tobytes() + mosaic.numpy().tobytes()
        run = subprocess.run([str(tmp_path / "emulate")], input=payload, capture_output=True, check=True)
        emulated = torch.from_numpy(np.frombuffer(run.stdout, dtype=np.float64).copy()).reshape(n, 3, h, w)
        torch.testing.assert_close(emulated, edge_aware_demosaic_reference(mosaic, pattern, wb),
                                   rtol=1e-12, atol=1e-12)
