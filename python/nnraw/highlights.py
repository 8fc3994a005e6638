"""Highlight recovery where the green photosites clipped, as in the reference system, done in WB space.

Clipping semantics (raw values normalised to [0, 1] by (v - black) / (white - black)):

* A photosite clips at 1.0 in camera space, whatever its colour. After white balance (gains
  ``wb / wb_G``, so green's gain is 1) red clips at ``wb_R / wb_G`` (about 2) and blue at
  ``wb_B / wb_G`` (about 1.5): in a white-balanced blown highlight, green is the first channel to
  saturate and stops at 1.0 while red and blue keep rising. Left alone this paints blown
  highlights magenta.
* The reference rule, in WB space (r, g, b = the white-balanced values): where green clipped
  (``g >= 0.999``) and red or blue is brighter than green's clip level (``r > 1`` or ``b > 1``), the
  true green is at least 1 and is estimated as ``(r + b) / 2``. We keep the larger of that and the
  clipped green (``g = max(g, (r + b) / 2)``): lowering a clipped green below its clip level, as the
  plain rule does when one of r, b is dark, would invent a colour the sensor did not see.
* The result is converted back to camera RGB (divided by the gains), so the recovered green may be
  above 1.0: the output is NOT clipped, and the DNG writer must keep values > 1 (float samples, or
  a white level that leaves head-room); clipping it again to 1 undoes the recovery.
* Red and blue are not touched: where they clipped too (camera value >= 0.999) nothing better than
  their clipped values is known, and the developer's own highlight module handles the rest.

Where in the pipeline: after the pre-demosaic (its camera-RGB output, before the network), so
that the network sees the neutral highlights it was trained on, not magenta edges; the noise
map is taken from the image clipped to [0, 1] (:func:`nnraw.infer.denoise_camera_rgb` does that).
"""

from __future__ import annotations

import torch

_OP = "nnraw.recover_highlights"

GREEN_CLIPPED = 0.999
"""Green counts as clipped at or above this fraction of the white level (as in the reference)."""


def recover_highlights(rgb: torch.Tensor, wb: torch.Tensor | tuple | list, *, clipped: float = GREEN_CLIPPED,
                       inplace: bool = False, rows_per_chunk: int = 256) -> torch.Tensor:
    """Rebuild clipped green from red and blue in white-balanced space (see module docstring).

    Args:
        rgb: Tensor[N, 3, H, W] float, camera RGB normalised to [0, 1] (not white balanced).
        wb: white-balance gains (R, G, B): Tensor[3] / Tensor[N, 3] or a sequence of 3 numbers
            (normalised by the green gain here, so any scale works).
        clipped: green clip threshold (fraction of the white level).
        inplace: write the recovered green into ``rgb`` itself (saves a full-size copy).
        rows_per_chunk: rows processed at a time (bounds the temporaries; the result does not depend on it).

    Returns:
        Tensor[N, 3, H, W] camera RGB (``rgb`` itself when inplace); green may exceed 1 in recovered
        highlights.
    """
    if not isinstance(rgb, torch.Tensor) or rgb.dim() != 4 or rgb.shape[1] != 3:
        got = list(rgb.shape) if isinstance(rgb, torch.Tensor) else type(rgb).__name__
        raise ValueError(f"{_OP}: rgb must be a Tensor of shape [N, 3, H, W], got {got}")
    if not rgb.is_floating_point():
        raise TypeError(f"{_OP}: rgb must be floating point, got {rgb.dtype}")
    gains = torch.as_tensor(wb, dtype=rgb.dtype, device=rgb.device)
    if not (gains.shape == (3,) or gains.shape == (rgb.shape[0], 3)):
        raise ValueError(f"{_OP}: wb must have shape [3] or [N, 3] = [{rgb.shape[0]}, 3], got {list(gains.shape)}")
    if not bool(torch.isfinite(gains).all()) or not bool((gains > 0).all()):
        raise ValueError(f"{_OP}: wb gains must be finite and > 0, got {gains.tolist()}")
    gains = gains.reshape(-1, 3, 1, 1)
    gains = gains / gains[:, 1:2]
    out = rgb if inplace else rgb.clone()
    step = max(1, rows_per_chunk)
    for y0 in range(0, rgb.shape[2], step):
        part = out[:, :, y0:y0 + step]
        g = part[:, 1:2]                 # green gain is 1 after normalisation
        green_clipped = g >= clipped
        if not bool(green_clipped.any()):  # most rows of most photos: nothing to do
            continue
        r = part[:, 0:1] * gains[:, 0:1]
        b = part[:, 2:3] * gains[:, 2:3]
        blown = green_clipped & ((r > 1) | (b > 1))
        g.copy_(torch.where(blown, torch.maximum(g, (r + b) / 2), g))
    return out
