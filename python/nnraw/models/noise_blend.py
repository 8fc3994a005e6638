"""A fine-tuned network's weights blended with its published start by the photo's noise level.

nnraw's default networks start from demosaicnet's published weights (Gharbi et al. 2016, trained
noise-free on millions of hard patches) and are fine-tuned noise-aware on two CPU cores. The fine-tuning
wins from ISO 1600 up and loses demosaicking detail at ISO 100-400 (docs/MODELS.md). Interpolating the
weights of a fine-tuned network with those it started from (WiSE-FT, Wortsman et al. 2022, "Robust
fine-tuning of zero-shot models") keeps what the start knew: here the blend factor follows the noise,

    weights = start + alpha(noise) * (fine-tuned - start),

with ``noise`` the noise std the network is told at a mid-grey (linear 0.18) pixel, so it follows the
profile, a wrong profile and ``--strength``; alpha is piecewise linear in log(noise) between the
anchors of the model's json (``noise_blend.anchors``: [[noise, alpha], ...], clamped at the ends).
One set of weights per photo: no cost per pixel, tiled == whole still holds.

A shipped model with a blend holds both weight sets in its safetensors (the start under ``start.``).

**Via points.** The path from the start to the fine-tuned weights may pass through other fine-tuned weight
sets of the same network at fixed alphas (``noise_blend.via``: [{"alpha": a, "source": ...}, ...] in the
json, weights under ``via<i>.``): piecewise linear through (0, start), (a_i, via_i) ..., (1, fine-tuned).
The default passes through a low-noise expert (configs/joint-low.toml) that keeps demosaicnet's detail
where the all-levels fine-tuning lost it (docs/MODELS.md); alpha 1 is the fine-tuned weights either way.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

START_PREFIX = "start."
VIA_PREFIX = "via"                # via0.<key>, via1.<key>, ...
GREY = 0.18


def noise_at_grey(sigma_fn: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """The noise std a sigma-map function gives a linear mid-grey pixel (mean over channels)."""
    return float(sigma_fn(torch.full((1, 3, 1, 1), GREY)).mean())


def alpha_for(noise: float, anchors: Sequence[Sequence[float]]) -> float:
    """alpha at ``noise``: piecewise linear in log(noise) between ``anchors`` ([[noise, alpha], ...],
    noise increasing), the end values outside them."""
    pts = sorted((float(n), float(a)) for n, a in anchors)
    if not pts or any(n <= 0 for n, _ in pts):
        raise ValueError(f"nnraw.models.noise_blend: anchors need noise > 0, got {anchors!r}")
    log_noise = math.log(noise) if noise > 0 else -math.inf
    return float(np.interp(log_noise, [math.log(n) for n, _ in pts], [a for _, a in pts]))


def attach(model: nn.Module, start: dict[str, torch.Tensor], anchors: Sequence[Sequence[float]],
           via: Sequence[tuple[float, dict[str, torch.Tensor]]] = ()) -> nn.Module:
    """Give ``model`` (holding its fine-tuned weights) a noise blend towards ``start``, through the
    weight sets ``via`` ([(alpha, state dict), ...], 0 < alpha < 1 increasing) on the way."""
    tuned = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for what, other in [("start", start)] + [(f"via point {i}", w) for i, (_, w) in enumerate(via)]:
        missing = set(tuned) ^ set(other)
        if missing:
            raise ValueError(f"nnraw.models.noise_blend: {what} and fine-tuned weights differ in {sorted(missing)[:4]}")
    positions = [float(a) for a, _ in via]
    if any(not 0 < a < 1 for a in positions) or positions != sorted(set(positions)):
        raise ValueError(f"nnraw.models.noise_blend: via points need increasing alphas in (0, 1), got {positions}")
    alpha_for(0.01, anchors)        # validates them
    model._noise_blend = {"start": {k: v.to(tuned[k]) for k, v in start.items()}, "tuned": tuned,
                          "via": [(float(a), {k: v.to(tuned[k]) for k, v in w.items()}) for a, w in via],
                          "anchors": [list(map(float, a)) for a in anchors], "alpha": 1.0}
    return model


def blend_of(model: nn.Module) -> dict | None:
    return getattr(model, "_noise_blend", None)


def path_weights(blend: dict, alpha: float) -> dict[str, torch.Tensor]:
    """The weights at ``alpha`` on the blend's path: piecewise linear through (0, start), its via
    points, (1, fine-tuned); alpha clamped to [0, 1]."""
    points = [(0.0, blend["start"]), *blend.get("via", ()), (1.0, blend["tuned"])]
    alpha = min(max(float(alpha), 0.0), 1.0)
    i = max(j for j in range(len(points) - 1) if points[j][0] <= alpha)
    (a0, w0), (a1, w1) = points[i], points[i + 1]
    t = (alpha - a0) / (a1 - a0)
    tuned = blend["tuned"]
    return {k: (w0[k] + t * (w1[k] - w0[k])) if tuned[k].is_floating_point() else tuned[k] for k in tuned}


def set_alpha(model: nn.Module, alpha: float) -> None:
    """Load the weights at ``alpha`` of the blend's path into ``model`` (without via points:
    start + alpha * (fine-tuned - start))."""
    blend = blend_of(model)
    if blend is None:
        raise ValueError("nnraw.models.noise_blend: this model has no noise blend")
    if blend["alpha"] == alpha:
        return
    with torch.no_grad():
        model.load_state_dict(path_weights(blend, alpha), strict=True)
    blend["alpha"] = alpha


def apply(model: nn.Module, sigma_fn: Callable[[torch.Tensor], torch.Tensor] | None) -> float | None:
    """Set a blended model's weights for the noise ``sigma_fn`` tells it; the alpha used (None: no blend)."""
    blend = blend_of(model)
    if blend is None or sigma_fn is None:
        return None
    alpha = alpha_for(noise_at_grey(sigma_fn), blend["anchors"])
    set_alpha(model, alpha)
    return alpha
