"""Edge-aware pre-demosaic: soft-weighted Hamilton-Adams, as in the reference system.

White balance is applied to the mosaic before interpolation and removed after, so the result is
camera RGB (not white balanced) while the edge decisions see balanced colours. Borders are handled by
mirroring the mosaic (reflection keeps the CFA phase: pixel -k has the colour of pixel +k), so no
pixel is lost.

Green at an R or B site (colour C, neighbours along x at +-1, +-2)::

    gX = |G(x-1) - G(x+1)| / 2,   lX = |2C - C(x-2) - C(x+2)| / 4      (same along y)
    iX = (G(x-1) + G(x+1)) / 2 + (2C - C(x-2) - C(x+2)) / 8            (same along y)
    w  = (gY + lY) / (gX + gY + lX + lY + 1e-9);   G = w iX + (1 - w) iY

R and B by colour differences: at a G site from the two R (B) neighbours in its row or column;
at a B (R) site from the four diagonal R (B) neighbours.

The compiled op ``torch.ops.nnraw.edge_aware_demosaic`` (csrc/cpu/demosaic.cpp, csrc/cuda/demosaic.cu)
has a fake kernel here, so it works under ``torch.compile(fullgraph=True)`` and ``torch.export``.
It is a preprocessing step and is not differentiable (no autograd formula is registered; gradients
do not flow back to the mosaic or the gains).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nnraw.ops._library import HAVE_COMPILED, use_compiled, warn_fallback

BAYER_PATTERNS = ("RGGB", "BGGR", "GRBG", "GBRG")
_OP = "nnraw.edge_aware_demosaic"


def check_demosaic_args(mosaic: torch.Tensor, pattern: str, wb: torch.Tensor) -> None:
    """Validate the arguments; messages name the op and show what was expected and what came."""
    if pattern not in BAYER_PATTERNS:
        raise ValueError(f"{_OP}: pattern must be one of {', '.join(BAYER_PATTERNS)}, got {pattern!r}")
    if mosaic.dim() != 4 or mosaic.shape[1] != 1:
        raise ValueError(f"{_OP}: mosaic must have shape [N, 1, H, W], got {list(mosaic.shape)}")
    if not mosaic.is_floating_point():
        raise TypeError(f"{_OP}: mosaic must be a floating-point tensor, got {mosaic.dtype}")
    h, w = mosaic.shape[-2:]
    if h < 4 or w < 4 or h % 2 or w % 2:
        raise ValueError(f"{_OP}: mosaic height and width must be even and >= 4, got {h}x{w}")
    if wb.dtype != mosaic.dtype:
        raise TypeError(f"{_OP}: wb must have the mosaic's dtype {mosaic.dtype}, got {wb.dtype}")
    if wb.device != mosaic.device:
        raise ValueError(f"{_OP}: wb must be on the mosaic's device {mosaic.device}, got {wb.device}")
    if not (wb.shape == (3,) or wb.shape == (mosaic.shape[0], 3)):
        raise ValueError(f"{_OP}: wb must have shape [3] or [N, 3] = [{mosaic.shape[0]}, 3], got {list(wb.shape)}")


def cfa_masks(pattern: str, h: int, w: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """[3, H, W] masks, 1 where the CFA has R, G, B."""
    masks = torch.zeros(3, h, w, device=device, dtype=dtype)
    for k, colour in enumerate(pattern):
        dy, dx = divmod(k, 2)
        masks["RGB".index(colour), dy::2, dx::2] = 1
    return masks


def _shift(t: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """out[y, x] = t[y + dy, x + dx] on a padded tensor (caller crops the border)."""
    return torch.roll(t, shifts=(-dy, -dx), dims=(-2, -1))


def edge_aware_demosaic_reference(mosaic: torch.Tensor, pattern: str, wb: torch.Tensor) -> torch.Tensor:
    """Pure-PyTorch edge-aware demosaic (the test oracle and the fallback).

    Args:
        mosaic: Tensor[N, 1, H, W], floating point, H and W even.
        pattern: one of ``BAYER_PATTERNS``: the colours of the top-left 2x2 block.
        wb: Tensor[3] or Tensor[N, 3], white-balance gains (R, G, B).

    Returns:
        Tensor[N, 3, H, W], camera RGB (white balance removed again).
    """
    check_demosaic_args(mosaic, pattern, wb)
    n, _, h, w = mosaic.shape
    # Halo of 3 (green needs +-2 mosaic pixels, R/B need +-1 green); a reflect pad must be smaller
    # than the side, so H = 4 allows at most 3. The rolls below wrap around, which spoils only the
    # outer 2 pixels of the padded grid: never read for the cropped output.
    pad = 3
    gains = wb.reshape(-1, 3, 1, 1).expand(n, 3, 1, 1)
    m = F.pad(mosaic, (pad, pad, pad, pad), mode="reflect")[:, 0]        # [N, H+6, W+6]
    # CFA masks of the padded grid: padded pixel p is image pixel p - 3, so cut them from a grid
    # padded by 4 (even, same phase as the image) minus its outer pixel.
    masks = cfa_masks(pattern, h + 8, w + 8, mosaic.device, mosaic.dtype)[:, 1:-1, 1:-1]
    gain_map = (masks[None] * gains).sum(1)
    m = m * gain_map
    is_r, is_g, is_b = masks[0].bool(), masks[1].bool(), masks[2].bool()

    s = lambda dy, dx: _shift(m, dy, dx)  # noqa: E731
    # Green at R/B sites.
    gx = (s(0, -1) - s(0, 1)).abs() / 2
    gy = (s(-1, 0) - s(1, 0)).abs() / 2
    lap_x = 2 * m - s(0, -2) - s(0, 2)
    lap_y = 2 * m - s(-2, 0) - s(2, 0)
    lx, ly = lap_x.abs() / 4, lap_y.abs() / 4
    ix = (s(0, -1) + s(0, 1)) / 2 + lap_x / 8
    iy = (s(-1, 0) + s(1, 0)) / 2 + lap_y / 8
    wgt = (gy + ly) / (gx + gy + lx + ly + 1e-9)
    green = torch.where(is_g, m, wgt * ix + (1 - wgt) * iy)

    # R and B by colour differences (C - G) interpolated from the neighbours that carry C.
    out = []
    for colour_mask in (is_r, is_b):
        diff = torch.where(colour_mask, m - green, torch.zeros_like(m))
        gd = lambda dy, dx: _shift(diff, dy, dx)  # noqa: E731
        row_has = _shift(colour_mask, 0, 1)       # the right neighbour carries the colour
        horizontal = (gd(0, -1) + gd(0, 1)) / 2
        vertical = (gd(-1, 0) + gd(1, 0)) / 2
        diagonal = (gd(-1, -1) + gd(-1, 1) + gd(1, -1) + gd(1, 1)) / 4
        at_g = torch.where(row_has, horizontal, vertical)
        c_diff = torch.where(colour_mask, diff, torch.where(is_g, at_g, diagonal))
        out.append(green + c_diff)
    rgb = torch.stack([out[0], green, out[1]], 1)[:, :, pad:-pad, pad:-pad]
    return rgb / gains


if HAVE_COMPILED:

    @torch.library.register_fake("nnraw::edge_aware_demosaic")
    def _edge_aware_demosaic_fake(mosaic: torch.Tensor, pattern: str, wb: torch.Tensor) -> torch.Tensor:
        # Same checks as the kernels; the kernels return a new contiguous [N, 3, H, W] tensor.
        check_demosaic_args(mosaic, pattern, wb)
        n, _, h, w = mosaic.shape
        return mosaic.new_empty((n, 3, h, w))


def edge_aware_demosaic(mosaic: torch.Tensor, pattern: str, wb: torch.Tensor) -> torch.Tensor:
    """Edge-aware pre-demosaic of a Bayer mosaic (see module docstring).

    Runs the compiled kernel (CPU or CUDA) when the op library is built, else the pure-PyTorch
    reference (with a warning). Not differentiable: a preprocessing step, no gradient flows back.

    Args:
        mosaic: Tensor[N, 1, H, W] of any floating dtype (float16/bfloat16 are computed in float32),
            H and W even and >= 4, any strides (the kernels read a contiguous copy).
        pattern: "RGGB", "BGGR", "GRBG" or "GBRG": the colours of the top-left 2x2 block.
        wb: Tensor[3] or Tensor[N, 3] white-balance gains (R, G, B), same dtype and device as
            ``mosaic``; applied before interpolation, removed after.

    Returns:
        Tensor[N, 3, H, W] camera RGB (not white balanced), contiguous, ``mosaic``'s dtype.
    """
    check_demosaic_args(mosaic, pattern, wb)
    if use_compiled(mosaic):
        return torch.ops.nnraw.edge_aware_demosaic(mosaic, pattern, wb)
    warn_fallback("edge_aware_demosaic")
    return edge_aware_demosaic_reference(mosaic, pattern, wb)
