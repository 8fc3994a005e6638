"""Colour filter array (CFA) pattern helpers for 2x2 Bayer and 6x6 X-Trans layouts.

A pattern is a string of its colours row by row ("RGGB" for a 2x2 Bayer block, 36 letters for a 6x6
X-Trans block) or the equivalent integer array (0 = R, 1 = G, 2 = B) of shape [n, n]. The pattern of
an image is the block at its top-left pixel; cropping the image by (dy, dx) pixels shifts that block
(its phase) by the same amount, modulo the period.
"""

from __future__ import annotations

import numpy as np

COLOURS = "RGB"

# Fujifilm X-Trans as it is usually published (e.g. the Wikipedia figure, LibRaw's xtrans_abs), row by row.
XTRANS = "GGRGGB" "GGBGGR" "BRGRBG" "GGBGGR" "GGRGGB" "RBGBRG"


def as_array(pattern: str | np.ndarray) -> np.ndarray:
    """The pattern as an int64 [n, n] array of colour indices (0 R, 1 G, 2 B)."""
    if isinstance(pattern, str):
        n = int(round(len(pattern) ** 0.5))
        if n * n != len(pattern) or n not in (2, 6) or set(pattern) - set(COLOURS):
            raise ValueError(f"CFA pattern {pattern!r}: expected 4 or 36 letters of R, G, B")
        return np.array([COLOURS.index(c) for c in pattern], np.int64).reshape(n, n)
    arr = np.asarray(pattern, dtype=np.int64)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] not in (2, 6) or arr.min() < 0 or arr.max() > 2:
        raise ValueError(f"CFA pattern of shape {arr.shape}: expected a 2x2 or 6x6 array of 0 (R), 1 (G), 2 (B)")
    return arr


def as_string(pattern: str | np.ndarray) -> str:
    """The pattern as its colour letters row by row."""
    return "".join(COLOURS[int(c)] for c in as_array(pattern).reshape(-1))


def period(pattern: str | np.ndarray) -> int:
    """2 for a Bayer pattern, 6 for an X-Trans one."""
    return as_array(pattern).shape[0]


def shifted(pattern: str | np.ndarray, dy: int, dx: int) -> str:
    """The pattern at pixel (dy, dx) of an image whose top-left pattern is ``pattern`` (a crop's phase)."""
    arr = as_array(pattern)
    return as_string(np.roll(arr, (-dy, -dx), axis=(0, 1)))


def is_xtrans(pattern: str | np.ndarray) -> bool:
    """Whether ``pattern`` is the X-Trans layout at some phase (one of its 36 shifts)."""
    arr = as_array(pattern)
    return arr.shape == (6, 6) and any(shifted(XTRANS, dy, dx) == as_string(arr) for dy in range(6) for dx in range(6))


def transformed(pattern: str | np.ndarray, h: int, w: int, *, transpose: bool = False,
                flip_h: bool = False, flip_v: bool = False) -> str:
    """The top-left pattern of an ``h`` x ``w`` image (top-left pattern ``pattern``) after it is
    transposed, then flipped left-right and/or upside down (in that order, as nnraw.infer's
    self-ensemble does it). A flip of an odd-sized side brings a new phase: the far edge's."""
    arr = as_array(pattern)
    n = arr.shape[0]
    hh, ww = (w, h) if transpose else (h, w)                 # the shape after the transpose
    ys, xs = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    ys = hh - 1 - ys if flip_v else ys
    xs = ww - 1 - xs if flip_h else xs
    if transpose:
        ys, xs = xs, ys
    return as_string(arr[ys % n, xs % n])


def colour_map(pattern: str | np.ndarray, h: int, w: int) -> np.ndarray:
    """int64 [h, w]: the colour index at every pixel of an image whose top-left pattern is ``pattern``."""
    arr = as_array(pattern)
    n = arr.shape[0]
    return np.tile(arr, (-(-h // n), -(-w // n)))[:h, :w]


def masks(pattern: str | np.ndarray, h: int, w: int) -> np.ndarray:
    """bool [3, h, w]: where R, G and B are sampled."""
    cmap = colour_map(pattern, h, w)
    return np.stack([cmap == c for c in range(3)])


# --- classical demosaic for any 2x2 or 6x6 pattern (torch, CPU and CUDA) ---------------------------

def _weights(radius: int) -> list[tuple[int, int, float]]:
    """(dy, dx, w) of a separable triangle kernel of the given radius (w = (r+1-|dy|)(r+1-|dx|))."""
    return [(dy, dx, float((radius + 1 - abs(dy)) * (radius + 1 - abs(dx))))
            for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)]


def _shifted_sum(x, radius: int):
    """sum over the triangle kernel of x shifted, zero outside the image; a fixed order of additions, so
    every output pixel depends only on its (2r+1)^2 window, bit for bit (a crop with a halo of r equals
    the whole's crop)."""
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    p = F.pad(x, (radius, radius, radius, radius))
    out = None
    for dy, dx, wt in _weights(radius):
        term = p[..., radius + dy: radius + dy + h, radius + dx: radius + dx + w] * wt
        out = term if out is None else out + term
    return out


def normalised_convolution(mosaic, mask, radius: int):
    """Per-channel weighted average of the sampled neighbours: [N, C, H, W] from mosaic [N, 1, H, W] and
    float mask [1 or N, C, H, W] (1 where channel c is sampled)."""
    num = _shifted_sum(mosaic * mask, radius)
    den = _shifted_sum(mask.expand_as(num), radius)
    return num / den.clamp_min(1e-12)


def bilinear_demosaic(mosaic, pattern: str):
    """Per-channel bilinear-like interpolation (normalised convolution, 3x3 triangle kernel, falling back
    to 5x5 where a channel has no sample in the 3x3 window): the quality baseline."""
    import torch

    m = torch.from_numpy(masks(pattern, *mosaic.shape[-2:])).to(mosaic)[None]
    small = _shifted_sum(m, 1)
    out = torch.where(small > 0, normalised_convolution(mosaic, m, 1), normalised_convolution(mosaic, m, 2))
    return torch.where(m > 0, mosaic.expand_as(out), out)


def colour_difference_demosaic(mosaic, pattern: str, *, green_radius: int = 1, difference_radius: int = 2):
    """Classical demosaic for any 2x2 or 6x6 pattern: green by normalised convolution (triangle kernel of
    ``green_radius``), then red and blue as green plus their colour difference (R - G, B - G at the red
    and blue sites), interpolated the same way with ``difference_radius``. Sampled values are kept
    exactly. Local: each output pixel depends on its window of radius green_radius + difference_radius
    only (bit for bit), so a tile with that halo equals the whole image's crop.

    Args:
        mosaic: [N, 1, H, W] float, in whatever domain the caller works (nnraw: encoded, white balanced).
        pattern: the top-left block (see nnraw.cfa).

    Returns:
        [N, 3, H, W].
    """
    import torch

    m = torch.from_numpy(masks(pattern, *mosaic.shape[-2:])).to(mosaic)[None]
    green = normalised_convolution(mosaic, m[:, 1:2], green_radius)
    green = torch.where(m[:, 1:2] > 0, mosaic, green)
    diff = normalised_convolution(mosaic - green, m[:, 0::2], difference_radius)
    rb = green + diff
    rb = torch.where(m[:, 0::2] > 0, mosaic.expand_as(rb), rb)
    return torch.cat([rb[:, :1], green, rb[:, 1:]], 1)
