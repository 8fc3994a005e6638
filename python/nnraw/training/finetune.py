"""Training-time helpers of the demosaicnet fine-tuning (issue #17, ``configs/joint.toml``).

``data.noise = "mix"`` draws the noise of each batch with :func:`draw_noise_mix` (settings in
``[data.noise_mix]``): a wider range than :func:`nnraw.noise.model.random_noise_params` (from below ISO 100
to beyond the NVIDIA level), read noise b that is 0 or log-uniform, a per-channel spread of the
profile (real cameras' profiles differ per channel; the network sees per-pixel, per-channel sigma
maps), and a fixed number of low-noise crops in every batch so that ISO 100 holds.
"""

from __future__ import annotations

import math

import torch

NOISE_MIX_DEFAULTS = {
    "a_range": [3e-5, 8e-3],       # log-uniform; K-3 ISO 100 is 6.7e-5, the NVIDIA level 5e-3
    "b_zero_fraction": 0.5,        # b = 0 (shot noise only) for this fraction of the crops
    "b_range": [1e-6, 2e-4],       # else log-uniform here (the NVIDIA level has 1e-4)
    "channel_spread": 0.1,         # log-std of a per-channel factor on a and b (1 = equal channels)
    "low_per_batch": 1,            # crops per batch drawn from low_a_range instead (ISO <= ~200)
    "low_a_range": [3e-5, 1.5e-4],
}


def _log_uniform(n: int, lo: float, hi: float, generator: torch.Generator) -> torch.Tensor:
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    return torch.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * u)


def draw_noise_mix(n: int, generator: torch.Generator, spec: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` Poisson-Gaussian profiles (var = a x + b): (a, b), Tensor[N, 3] float32 each.

    The first ``low_per_batch`` crops get a from ``low_a_range`` (the batch's crops are drawn at
    random, so which crop is low-noise carries no information).
    """
    s = {**NOISE_MIX_DEFAULTS, **(spec or {})}
    unknown = set(s) - set(NOISE_MIX_DEFAULTS)
    if unknown:
        raise ValueError(f"nnraw train: data.noise_mix has unknown keys {sorted(unknown)}; "
                         f"known: {sorted(NOISE_MIX_DEFAULTS)}")
    a = _log_uniform(n, *s["a_range"], generator)
    low = min(int(s["low_per_batch"]), n)
    if low:
        a[:low] = _log_uniform(low, *s["low_a_range"], generator)
    b = _log_uniform(n, *s["b_range"], generator)
    b = torch.where(torch.rand(n, generator=generator, dtype=torch.float64) < float(s["b_zero_fraction"]),
                    torch.zeros_like(b), b)
    spread = torch.exp(float(s["channel_spread"]) * torch.randn(n, 3, generator=generator, dtype=torch.float64))
    return (a[:, None] * spread).float(), (b[:, None] * spread).float()


def hardness_pattern(family: str) -> str:
    """The CFA pattern the hard-crop mining demosaics with, for a config's ``data.pattern``: an X-Trans
    phase for X-Trans training (``"xtrans"`` or a 36-letter block), else RGGB (any Bayer phase is
    equally hard for the classic demosaic on average)."""
    if family == "xtrans":
        from nnraw.cfa import XTRANS

        return XTRANS
    return family if isinstance(family, str) and len(family) == 36 else "RGGB"


def demosaic_hardness(clean: torch.Tensor, wb: torch.Tensor, pattern: str = "RGGB") -> torch.Tensor:
    """Per crop: the mean absolute error, white balanced and sRGB-encoded, of the classic pre-demosaic
    of its noise-free mosaic (``pattern``: RGGB, or an X-Trans phase for X-Trans training) -- high
    where there is moire-prone detail or saturated colour.
    ``clean`` Tensor[N, 3, H, W] camera RGB, ``wb`` Tensor[N, 3] -> Tensor[N]."""
    from nnraw.training.dataset import mosaic
    from nnraw.encoding import encode, gains_like, pre_demosaic

    g = gains_like(wb, clean)
    pre = pre_demosaic(mosaic(clean, pattern), pattern, wb.contiguous(), "srgb")
    m = 4                                               # the demosaic's own border
    err = (encode(pre * g) - encode(clean * g))[..., m:-m, m:-m]
    return err.abs().flatten(1).mean(1)


def with_hard_crops(source, clean: torch.Tensor, wb: torch.Tensor, hard: int, candidates: int,
                    pattern: str = "RGGB"):
    """Replace the last ``hard`` crops of a batch by the hardest (:func:`demosaic_hardness` with
    ``pattern``) of ``hard * candidates`` fresh crops drawn by ``source.clean_crops()`` (a
    nnraw.training.train.BatchSource)."""
    n = clean.shape[0]
    hard = min(int(hard), n)
    if hard <= 0:
        return clean, wb
    cs, ws = [], []
    while sum(len(c) for c in cs) < hard * max(1, int(candidates)):
        c, w = source.clean_crops()
        cs.append(c)
        ws.append(w)
    c, w = torch.cat(cs), torch.cat(ws)
    pick = demosaic_hardness(c.float(), w.float(), pattern).topk(hard).indices
    clean, wb = clean.clone(), wb.clone()
    clean[n - hard:], wb[n - hard:] = c[pick].to(clean.dtype), w[pick].to(wb.dtype)
    return clean, wb


def _per_crop_factor(n: int, generator: torch.Generator, fraction: float, lo: float, hi: float) -> torch.Tensor:
    """Tensor[N] float32: 1 for most crops, log-uniform in [lo, hi] for a ``fraction`` of them."""
    f = _log_uniform(n, lo, hi, generator)
    pick = torch.rand(n, generator=generator, dtype=torch.float64) < float(fraction)
    return torch.where(pick, f, torch.ones_like(f)).float()


def darken(clean: torch.Tensor, generator: torch.Generator, fraction: float, lo: float, hi: float) -> torch.Tensor:
    """A ``fraction`` of the crops exposed ``lo``..``hi`` times as much (log-uniform), before the noise.

    The training photos are well exposed; the raws that need denoising most are not (night scenes,
    pushed shadows). Under the same profile a darker scene has a lower signal-to-noise ratio and, in
    the sRGB-encoded domain the network works in, its noise is stretched by the curve's steep foot:
    without such crops the network met dark noisy areas only in the tests, and left a green
    checkerboard there (tests/test_artifacts.py)."""
    k = _per_crop_factor(clean.shape[0], generator, fraction, lo, hi)
    return clean * k.to(clean.dtype)[:, None, None, None]


def jitter_sigma(sigma: torch.Tensor, generator: torch.Generator, fraction: float, lo: float, hi: float) -> torch.Tensor:
    """The noise map of a ``fraction`` of the crops scaled by a log-uniform ``lo``..``hi``, the noise
    itself left as drawn: real profiles are often off (issue #17 asks for robustness to the profile's
    std x0.5 and x3), and a network that only ever saw exact maps extrapolated wildly from a wrong one
    (casts to -15 % at x3)."""
    k = _per_crop_factor(sigma.shape[0], generator, fraction, lo, hi)
    return sigma * k.to(sigma.dtype)[:, None, None, None]
