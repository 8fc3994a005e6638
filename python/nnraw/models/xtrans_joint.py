"""Noise-aware joint demosaicker and denoiser on demosaicnet's X-Trans layout (issue #18).

The X-Trans network of Gharbi et al. 2016 as its published weights have it
(``demosaicnet.XTransDemosaick``, ``xtrans.pth``), turned noise-aware the way
:mod:`nnraw.models.bayer_joint` turned the Bayer one (``model.init_from = "demosaicnet:xtrans"``):

    mosaic [3, H, W] (each site's own colour, 0 elsewhere), in demosaicnet's X-Trans phase
      -> conv1: 3x3, 3 + 1 -> 64    (+ the noise-std mosaic, zero-initialised weights)
      -> 10 x (3x3, 64 -> 64); each followed by PReLU (fused op, slope 0 = ReLU)   (full resolution)
      -> cat(mosaic, features) -> 3x3, 67 -> 64, PReLU -> 1x1, 64 -> 3

No downsampling, so it costs ~440 kMAC per pixel (3x the Bayer network's 143). All convolutions are
valid: the core maps a window of S x S to S - 24 at offset 12. With PReLU slopes 0 and the noise
weights 0 the network is demosaicnet exactly (tested against ``demosaicnet.XTransDemosaick``).

Phases: demosaicnet was trained on one phase of the 6x6 layout (:data:`DEMOSAICNET_XTRANS`, from
``demosaicnet.mosaic.xtrans_cell``). Every one of the 36 phases of Fujifilm's layout
(:data:`nnraw.cfa.XTRANS` shifted) becomes it in a window that starts (dy, dx) in [0, 6) further down
and right (:func:`phase_shift`). The tile is T = H + 2 * 18: each item's window is [d, d + T) (five
zero rows/columns appended), the core's output [12 + d, T - 12 + d) in tile rows, of which rows
[18, 18 + H) are kept; the appended zeros reach only core outputs at tile rows >= T - 12 > 18 + H.

The halo, 18, is a multiple of 6: the reflection-padded whole image then starts with the image's own
pattern (periodically extended), and so does every tile that starts at a multiple of 6, which is what
the bound module's ``cfa_period = 6`` asks of nnraw.infer's tile grid. Model interface as
bayer_joint's: ``forward(rgb, sigma, pattern)``, ``for_pattern(p)`` / :func:`bind_pattern`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nnraw import cfa
from nnraw.models.bayer_joint import PatternBound, _prelu
from nnraw.models.layers import check_forward_input, make_prelu

#: demosaicnet's X-Trans phase (``demosaicnet.mosaic.xtrans``'s docstring, rows top to bottom).
DEMOSAICNET_XTRANS = "GBGGRG" "RGRBGB" "GBGGRG" "GRGGBG" "BGBRGR" "GRGGBG"
MAX_SHIFT = 5           # a window shift of at most 5 rows / columns reaches demosaicnet's phase


@lru_cache(maxsize=64)
def phase_shift(pattern: str) -> tuple[int, int]:
    """(dy, dx) in [0, 6)^2 such that the window of an image with top-left block ``pattern`` that
    starts at (dy, dx) has demosaicnet's phase; a ValueError for a block that is no X-Trans phase."""
    if not isinstance(pattern, str) or len(pattern) != 36 or set(pattern) - set(cfa.COLOURS):
        raise ValueError(f"nnraw.models.XTransJointDenoiser: pattern must be a 36-letter X-Trans block "
                         f"(nnraw.cfa), got {pattern!r}")
    for dy in range(6):
        for dx in range(6):
            if cfa.shifted(pattern, dy, dx) == DEMOSAICNET_XTRANS:
                return dy, dx
    raise ValueError(f"nnraw.models.XTransJointDenoiser: {pattern!r} is a 6x6 pattern but no phase of the "
                     f"X-Trans layout (nnraw.cfa.XTRANS): the network knows only that layout")


@lru_cache(maxsize=64)
def _masks_np(pattern: str, h: int, w: int) -> np.ndarray:
    return cfa.masks(pattern, h, w).astype(np.float32)


def _xtrans_masks(pattern: str, h: int, w: int, device, dtype) -> torch.Tensor:
    return torch.from_numpy(_masks_np(pattern, h, w)).to(device, dtype)


class XTransJointDenoiser(nn.Module):
    """forward(rgb [N, 3, H+36, W+36], sigma [N, 3, H+36, W+36], pattern) -> [N, 3, H, W].

    Args:
        width: feature channels (demosaicnet: 64).
        depth: 3x3 convolutions before the head (demosaicnet: 11).
        sigma_scale: the noise std is multiplied by this before conv1 (sigma ~ 0.003-0.1 in sRGB).
        prelu_init: initial PReLU slope (0: the ReLU network the weights were trained as).
    """

    noise_conditioned = True
    needs_pattern = True
    default_passes = 2            # nnraw.infer.self_ensemble: the image and its transpose (docs/BENCHMARKS.md)
    cfa_period = 6
    example_pattern = DEMOSAICNET_XTRANS      # a pattern it takes (nnraw.models.macs_per_pixel)

    def __init__(self, width: int = 64, depth: int = 11, sigma_scale: float = 10.0, prelu_init: float = 0.0):
        super().__init__()
        if depth < 1:
            raise ValueError(f"XTransJointDenoiser: depth must be >= 1, got {depth}")
        self.width, self.depth = int(width), int(depth)
        self.sigma_scale = float(sigma_scale)
        self.core_halo = depth + 1                       # 12 for depth 11
        self.halo = 6 * -(-(self.core_halo + MAX_SHIFT) // 6)   # 18: room for the shift, a multiple of 6
        self.pattern: str | Sequence[str] | None = None
        convs = [nn.Conv2d(4, width, 3)] + [nn.Conv2d(width, width, 3) for _ in range(depth - 1)]
        self.convs = nn.ModuleList(convs)
        self.prelus = nn.ModuleList([make_prelu(width, prelu_init) for _ in convs])
        with torch.no_grad():
            self.convs[0].weight[:, 3:].zero_()       # the noise input starts switched off
        self.post_conv = nn.Conv2d(3 + width, width, 3)
        self.post_prelu = make_prelu(width, prelu_init)
        self.output = nn.Conv2d(width, 3, 1)
        # Convolutions 2..depth (64 -> 64, 91 % of the MACs) under CPU bfloat16 autocast; conv1 (it
        # reads the mosaic and the noise map) and the head with the mosaic skip stay float32, as
        # bayer_joint's trunk. nnraw.infer sets it (precision "auto", CPUs with AVX512_BF16); training
        # never does. Measured: docs/BENCHMARKS.md (tests/test_cpu_precision.py holds it to 0.05 dB).
        self.trunk_bfloat16 = False

    def for_pattern(self, pattern: str | Sequence[str]) -> PatternBound:
        """This network with ``pattern`` fixed: the two-argument module nnraw.infer runs."""
        bound = PatternBound(self, pattern)
        bound.cfa_period = self.cfa_period
        return bound

    def _patterns(self, pattern, n: int) -> list[str]:
        pattern = self.pattern if pattern is None else pattern
        if pattern is None:
            raise ValueError("nnraw.models.XTransJointDenoiser: this network needs the X-Trans pattern of the "
                             "image's top-left pixel (pattern=..., or model.for_pattern(p))")
        pats = [pattern] * n if isinstance(pattern, str) else list(pattern)
        if len(pats) != n:
            raise ValueError(f"nnraw.models.XTransJointDenoiser: pattern must be one 36-letter X-Trans block "
                             f"or a list of {n} of them, got {pattern!r}")
        for p in pats:
            phase_shift(p)
        return pats

    def core(self, mosaic: torch.Tensor, sigma_mosaic: torch.Tensor | None) -> torch.Tensor:
        """demosaicnet's forward on a window in its phase: mosaic [N, 3, S, S], sigma_mosaic
        [N, 1, S, S] (already scaled) or None -> [N, 3, S - 24, S - 24] at offset 12."""
        if sigma_mosaic is None:
            sigma_mosaic = mosaic.new_zeros(mosaic.shape[0], 1, *mosaic.shape[-2:])
        x = _prelu(self.prelus[0], self.convs[0](torch.cat([mosaic, sigma_mosaic], 1)))
        bf16 = self.trunk_bfloat16 and x.device.type == "cpu" and x.dtype == torch.float32
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            for conv, act in zip(self.convs[1:], self.prelus[1:]):
                x = _prelu(act, conv(x))
        x = x.float()
        c = (mosaic.shape[-1] - x.shape[-1]) // 2
        skip = mosaic[..., c:c + x.shape[-2], c:c + x.shape[-1]]
        return self.output(_prelu(self.post_prelu, self.post_conv(torch.cat([skip, x], 1))))

    def forward(self, rgb: torch.Tensor, sigma: torch.Tensor | None = None,
                pattern: str | Sequence[str] | None = None) -> torch.Tensor:
        check_forward_input("XTransJointDenoiser", rgb, sigma, self.halo, needs_sigma=True, even=False)
        n, _, th, tw = rgb.shape
        pats = self._patterns(pattern, n)
        h, w = th - 2 * self.halo, tw - 2 * self.halo
        masks = {p: _xtrans_masks(p, th, tw, rgb.device, rgb.dtype) for p in dict.fromkeys(pats)}
        m = torch.stack([masks[p] for p in pats]) if len(masks) > 1 else masks[pats[0]][None]
        mos = rgb * m
        sig = (sigma * m).sum(1, keepdim=True) * self.sigma_scale
        x = F.pad(torch.cat([mos, sig], 1), (0, MAX_SHIFT, 0, MAX_SHIFT))
        shifts = [phase_shift(p) for p in pats]
        if len(masks) == 1:
            dy, dx = shifts[0]
            x = x[..., dy:dy + th, dx:dx + tw]
        else:
            x = torch.stack([x[i, :, dy:dy + th, dx:dx + tw] for i, (dy, dx) in enumerate(shifts)])
        y = self.core(x[:, :3], x[:, 3:])          # [N, 3, T - 24, T - 24] at tile offset core_halo + (dy, dx)
        o = self.halo - self.core_halo
        if len(masks) == 1:
            dy, dx = shifts[0]
            return y[..., o - dy:o - dy + h, o - dx:o - dx + w]
        return torch.stack([y[i, :, o - dy:o - dy + h, o - dx:o - dx + w] for i, (dy, dx) in enumerate(shifts)])

    @staticmethod
    def demosaicnet_names(depth: int) -> dict[str, str]:
        """demosaicnet.XTransDemosaick's parameter prefixes -> this network's."""
        names = {"fullres_processor.post_conv": "post_conv", "fullres_processor.output": "output"}
        names.update({f"main_processor.conv{i + 1}": f"convs.{i}" for i in range(depth)})
        return names
