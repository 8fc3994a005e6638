"""Training data: clean linear camera-RGB images, and noisy mosaics synthesised from them per batch.

Three parts:

* ``nnraw dataset build SRC... -o DIR`` (:func:`build_dataset`): turns raw files and sRGB photos into
  clean linear camera RGB, one ``images/<k>.npy`` (uint16, [H, W, 3], value / 65535 = linear RGB in
  [0, 1]) per image, plus ``dataset.json`` (per-image source, size, white balance, colour matrix and
  split) and ``train.txt`` / ``val.txt`` (the split, by image).

  - raw files, the reference method: half-resolution RGB (R, mean of the two G, B of each 2x2 CFA
    block), then an area downscale by 4 (each output pixel averages 16 raw pixels, 32 for green), so
    the noise of an ISO-100 shot vanishes;
  - sRGB photos: an area downscale by >= 2 (removes JPEG blocking and demosaicing traces), then
    unprocessing (Brooks et al. 2019, :mod:`nnraw.unprocess`) with per-image random colour matrix and
    white-balance gains, stored in the metadata.

* :class:`CleanCropDataset`: random crops (train) or a fixed grid of crops (val) of a built directory.

* :func:`make_training_batch`: mosaic, fresh Poisson-Gaussian noise, edge-aware pre-demosaic and the
  noise-level map, on whatever device the batch is on -- every epoch sees new noise.
  :func:`reference_patches` cuts the reference system's four 31x31 patches out of 66x66 tiles.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from nnraw.noise import NoiseProfile, add_noise, noise_params, random_noise_params, sigma_map

BAYER_PATTERNS = ("RGGB", "BGGR", "GRBG", "GBRG")


# ==================================================================================================
# Batch synthesis
# ==================================================================================================
def mosaic(rgb: torch.Tensor, pattern: str) -> torch.Tensor:
    """Bayer-sample Tensor[N, 3, H, W] with ``pattern`` -> Tensor[N, 1, H, W] (H, W even)."""
    from nnraw.ops.demosaic import cfa_masks

    if rgb.dim() != 4 or rgb.shape[1] != 3:
        raise ValueError(f"mosaic: rgb must have shape [N, 3, H, W], got {list(rgb.shape)}")
    if pattern not in BAYER_PATTERNS:
        raise ValueError(f"mosaic: pattern must be one of {BAYER_PATTERNS}, got {pattern!r}")
    masks = cfa_masks(pattern, rgb.shape[-2], rgb.shape[-1], rgb.device, rgb.dtype)
    return (rgb * masks).sum(1, keepdim=True)


def _patterns_for(pattern: Union[str, Sequence[str]], n: int, generator: torch.Generator | None) -> list[str]:
    if isinstance(pattern, str) and pattern == "random":
        dev = generator.device if generator is not None else "cpu"
        idx = torch.randint(0, 4, (n,), generator=generator, device=dev).tolist()
        return [BAYER_PATTERNS[i] for i in idx]
    if isinstance(pattern, str):
        if pattern not in BAYER_PATTERNS:
            raise ValueError(f"make_training_batch: pattern must be one of {BAYER_PATTERNS} or 'random', got {pattern!r}")
        return [pattern] * n
    patterns = list(pattern)
    if len(patterns) != n or any(p not in BAYER_PATTERNS for p in patterns):
        raise ValueError(f"make_training_batch: need {n} patterns from {BAYER_PATTERNS}, got {patterns}")
    return patterns


def make_training_batch(clean: torch.Tensor, wb: torch.Tensor,
                        profiles: Union[NoiseProfile, Sequence[NoiseProfile], tuple, str] = "random",
                        pattern: Union[str, Sequence[str]] = "RGGB",
                        generator: torch.Generator | None = None) -> dict:
    """Synthesise a noisy training batch from clean crops (fresh noise at every call).

    Args:
        clean: Tensor[N, 3, H, W] clean linear camera RGB in [0, 1], H and W even (>= 4).
        wb: Tensor[3] or Tensor[N, 3] as-shot white-balance gains (used by the pre-demosaic only).
        profiles: a NoiseProfile, a list of N, ``(a, b)`` tensors ([N, 3], [N], [3]) or ``"random"``
            (:func:`nnraw.noise.random_noise_params`, for noise-conditioned networks).
        pattern: a Bayer pattern for all samples, a list of N, or ``"random"`` (one per sample).
        generator: torch.Generator on ``clean``'s device, for reproducible batches.

    Returns:
        dict with
          ``mosaic_noisy`` Tensor[N, 1, H, W] noisy mosaic (clipped to [0, 1]),
          ``predemosaic``  Tensor[N, 3, H, W] edge-aware demosaic of it (camera RGB, no WB),
          ``sigma_map``    Tensor[N, 3, H, W] noise std per pixel and channel, sqrt(a x + b) of
                           ``clean`` (the oracle level; at inference it comes from the noisy input),
          ``clean``        Tensor[N, 3, H, W] (the target),
          ``a``, ``b``     Tensor[N, 3], ``wb`` Tensor[N, 3], ``pattern`` list[str].
    """
    from nnraw.ops import edge_aware_demosaic

    if clean.dim() != 4 or clean.shape[1] != 3:
        raise ValueError(f"make_training_batch: clean must have shape [N, 3, H, W], got {list(clean.shape)}")
    n, _, h, w = clean.shape
    if h % 2 or w % 2 or h < 4 or w < 4:
        raise ValueError(f"make_training_batch: crop height and width must be even and >= 4, got {h}x{w}")
    clean = clean.float() if clean.dtype not in (torch.float32, torch.float64) else clean
    wb = torch.as_tensor(wb, dtype=clean.dtype, device=clean.device)
    if wb.shape == (3,):
        wb = wb.expand(n, 3)
    if wb.shape != (n, 3):
        raise ValueError(f"make_training_batch: wb must have shape [3] or [N, 3] = [{n}, 3], got {list(wb.shape)}")
    if isinstance(profiles, str):
        if profiles != "random":
            raise ValueError(f"make_training_batch: profiles must be a NoiseProfile, a list, (a, b) or 'random', got {profiles!r}")
        a, b = random_noise_params(n, generator, device=clean.device, dtype=clean.dtype)
    else:
        a, b = noise_params(profiles, n, clean.device, clean.dtype)
    patterns = _patterns_for(pattern, n, generator)

    mosaic_noisy = torch.empty(n, 1, h, w, device=clean.device, dtype=clean.dtype)
    predemosaic = torch.empty_like(clean)
    for pat in dict.fromkeys(patterns):          # one pass per distinct pattern, in order of appearance
        idx = torch.tensor([i for i, p in enumerate(patterns) if p == pat], device=clean.device)
        m = mosaic(clean[idx], pat)
        noisy = add_noise(m, (a[idx], b[idx]), generator=generator, pattern=pat)
        mosaic_noisy[idx] = noisy
        predemosaic[idx] = edge_aware_demosaic(noisy, pat, wb[idx].contiguous())
    return {
        "mosaic_noisy": mosaic_noisy,
        "predemosaic": predemosaic,
        "sigma_map": sigma_map(clean, a, b),
        "clean": clean,
        "a": a, "b": b, "wb": wb, "pattern": patterns,
    }


#: The reference layout: 66x66 tile -> four 31x31 patches; top-left corners (y, x).
REFERENCE_TILE = 66
REFERENCE_PATCH = 31
REFERENCE_OFFSETS = ((1, 1), (1, 34), (34, 1), (34, 34))


def reference_patches(tile: torch.Tensor) -> torch.Tensor:
    """Cut the reference system's four 31x31 patches out of 66x66 tiles.

    The patches' centre pixels (offset + 15) are at (16, 16), (16, 49), (49, 16), (49, 49) of the
    tile: rows and columns of both parities, so for any Bayer pattern the four centres sit on the
    four CFA sites (R, G1, G2, B) and no colour is favoured by the central-pixel loss.

    Args:
        tile: Tensor[N, C, 66, 66] (clean, noisy, pre-demosaiced ... cut them all the same way).
    Returns:
        Tensor[4N, C, 31, 31], patch k of tile i at index 4 i + k.
    """
    if tile.dim() != 4 or tile.shape[-2:] != (REFERENCE_TILE, REFERENCE_TILE):
        raise ValueError(f"reference_patches: tile must have shape [N, C, 66, 66], got {list(tile.shape)}")
    p = REFERENCE_PATCH
    patches = [tile[:, :, y:y + p, x:x + p] for y, x in REFERENCE_OFFSETS]
    return torch.stack(patches, 1).flatten(0, 1)


def reference_patch_batch(batch: dict) -> dict:
    """Apply :func:`reference_patches` to every image tensor of a :func:`make_training_batch` result
    made from 66x66 tiles; per-sample vectors (a, b, wb) and patterns are repeated 4 times."""
    out = {}
    for key, v in batch.items():
        if isinstance(v, torch.Tensor) and v.dim() == 4:
            out[key] = reference_patches(v)
        elif isinstance(v, torch.Tensor):
            out[key] = v.repeat_interleave(4, 0)
        elif isinstance(v, list):
            out[key] = [p for p in v for _ in range(4)]
        else:
            out[key] = v
    return out
