"""The photographer's strength control (``--strength S``, 0 to 2, default 1).

The network is conditioned on the noise map times S and its result is blended with the pre-demosaic
``pre + min(S, 1) * (net - pre)``: 0 gives the pre-demosaic itself (``--model none``) without running
the network, 1 is the network as trained, 2 denoises as if the noise were twice the measured one.
Used by ``nnraw convert`` (through :func:`nnraw.infer.denoise_camera_rgb`) and ``nnraw denoise-rgb``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

STRENGTH_RANGE = (0.0, 2.0)
"""Allowed ``strength`` values."""


def check_strength(strength: float, what: str = "strength") -> float:
    """``strength`` as a float, or ValueError naming the allowed range."""
    try:
        s = float(strength)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number from {STRENGTH_RANGE[0]:g} to {STRENGTH_RANGE[1]:g}, "
                         f"got {strength!r}") from None
    if not (math.isfinite(s) and STRENGTH_RANGE[0] <= s <= STRENGTH_RANGE[1]):
        raise ValueError(f"{what} must be from {STRENGTH_RANGE[0]:g} (no denoising) to {STRENGTH_RANGE[1]:g} "
                         f"(twice the measured noise), got {strength!r}")
    return s


def scale_noise_map(sigma_fn: Callable[[torch.Tensor], torch.Tensor],
                    factor: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """The noise-map function times ``factor`` (what the network is told at strength ``factor``)."""
    return lambda x: sigma_fn(x) * factor


def blend_strength(pre: torch.Tensor, net: torch.Tensor, strength: float) -> torch.Tensor:
    """``pre + min(strength, 1) * (net - pre)``, in place in ``net`` (returned).

    With the noise map scaled by ``strength`` as well, the result is continuous in ``strength`` and
    reaches ``pre`` exactly at 0 (where callers skip the network altogether)."""
    w = min(float(strength), 1.0)
    if w < 1.0:
        net.sub_(pre.to(net.device, net.dtype)).mul_(w).add_(pre.to(net.device, net.dtype))
    return net
