"""The domain the learned path works in: white-balanced, perceptually encoded camera RGB.

Why (measured, docs/MODELS.md "Domain"): in linear camera RGB a shadow's shading is multiplicative,
colour differences are not smooth, and a network or a demosaicer weighs an error in a bright sky like
one in a dark face. After the as-shot white balance and a perceptual curve, shading is (nearly)
additive, colour differences are smooth -- the assumption of every demosaicer -- and errors weigh as a
viewer (and an sRGB PSNR) weigh them. The classic pre-demosaic alone gains 2-4 dB that way, and the
network trained there sees no camera-specific colour: a camera's white balance changes only the noise
level of each channel in this domain, which the noise map tells it.

So, for every image (``x`` linear camera RGB or mosaic normalised to [0, 1], ``wb`` as-shot gains):

    e = encode(x * wb)                 the domain; values of clipped highlights go above encode(1)
    sigma_e = slope(x * wb) * wb * sigma_x    the noise std carried through the derivative
    x = decode(e) / wb                 back to linear camera RGB for the DNG (which stays linear)

The curves are continued by their tangent lines outside [0, 1] (below black: noise; above white:
white-balanced highlights), so they are invertible everywhere and never flat (a clamp would give
training no gradient there).

Encodings (for the measurement in bench/encoding_domains.py; the shipped networks use "srgb"):
  linear  the identity (the seed system's domain)
  srgb    the sRGB transfer curve (IEC 61966-2-1)
  sqrt    the square root (variance-stabilising for pure shot noise), linear below 1e-3
  log     log(x + 0.01), scaled to [0, 1] over [0, 1]
"""

from __future__ import annotations

import math

import torch

ENCODINGS = ("linear", "srgb", "sqrt", "log")
#: What a network's ``domain`` may be: camera RGB as is ("linear", the seed's), white balanced and
#: linear ("linear_wb"), or white balanced and encoded (an encoding other than "linear").
NETWORK_DOMAINS = ("linear", "linear_wb", "srgb", "sqrt", "log")

# sRGB: linear segment below _KNEE (slope 12.92), power law above, tangent line above 1.
_KNEE = 0.0031308
_TOP_SLOPE = 1.055 / 2.4
_SQRT_KNEE = 1e-3
_LOG_EPS = 0.01
_LOG_SCALE = 1.0 / math.log((1 + _LOG_EPS) / _LOG_EPS)


def _check(encoding: str) -> None:
    if encoding not in ENCODINGS:
        raise ValueError(f"nnraw.encoding: encoding must be one of {ENCODINGS}, got {encoding!r}")


def encode(x: torch.Tensor, encoding: str = "srgb") -> torch.Tensor:
    """Linear (white-balanced) values -> the encoded domain; any real input (see module docstring)."""
    _check(encoding)
    if encoding == "linear":
        return x
    if encoding == "srgb":
        inside = 1.055 * x.clamp(_KNEE, 1.0) ** (1 / 2.4) - 0.055
        return torch.where(x <= _KNEE, 12.92 * x, torch.where(x <= 1.0, inside, 1.0 + _TOP_SLOPE * (x - 1.0)))
    if encoding == "sqrt":
        k = math.sqrt(_SQRT_KNEE)
        return torch.where(x <= _SQRT_KNEE, k + (x - _SQRT_KNEE) / (2 * k), x.clamp_min(_SQRT_KNEE).sqrt())
    # log: tangent line below 0
    return torch.where(x <= 0, x / _LOG_EPS, torch.log((x.clamp_min(0) + _LOG_EPS) / _LOG_EPS)) * _LOG_SCALE


def decode(e: torch.Tensor, encoding: str = "srgb") -> torch.Tensor:
    """The exact inverse of :func:`encode`."""
    _check(encoding)
    if encoding == "linear":
        return e
    if encoding == "srgb":
        knee_e = 12.92 * _KNEE
        inside = ((e.clamp(knee_e, 1.0) + 0.055) / 1.055) ** 2.4
        return torch.where(e <= knee_e, e / 12.92, torch.where(e <= 1.0, inside, 1.0 + (e - 1.0) / _TOP_SLOPE))
    if encoding == "sqrt":
        k = math.sqrt(_SQRT_KNEE)
        return torch.where(e <= k, _SQRT_KNEE + (e - k) * 2 * k, e.clamp_min(k) ** 2)
    v = e / _LOG_SCALE
    return torch.where(v <= 0, v * _LOG_EPS, _LOG_EPS * torch.exp(v.clamp_min(0)) - _LOG_EPS)


def slope(x: torch.Tensor, encoding: str = "srgb") -> torch.Tensor:
    """d encode / dx at linear ``x`` (maps a linear noise std to the encoded domain)."""
    _check(encoding)
    if encoding == "linear":
        return torch.ones_like(x)
    if encoding == "srgb":
        inside = _TOP_SLOPE * x.clamp(_KNEE, 1.0) ** (1 / 2.4 - 1)
        return torch.where(x <= _KNEE, torch.full_like(x, 12.92),
                           torch.where(x <= 1.0, inside, torch.full_like(x, _TOP_SLOPE)))
    if encoding == "sqrt":
        return 0.5 / x.clamp_min(_SQRT_KNEE).sqrt()
    return _LOG_SCALE / (x.clamp_min(0) + _LOG_EPS)


def gains_like(wb: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Gains [3] or [N, 3] -> broadcastable against ``x`` [N, 3, H, W] (x's dtype and device)."""
    wb = torch.as_tensor(wb, dtype=x.dtype, device=x.device)
    return wb.reshape(-1, 3, 1, 1)


def site_gains(wb: torch.Tensor, pattern: str, mosaic: torch.Tensor) -> torch.Tensor:
    """Gains [3] or [N, 3] -> the gain of each site of ``mosaic`` [N, 1, H, W] with CFA ``pattern``."""
    if len(pattern) == 36:   # X-Trans (nnraw.cfa)
        from nnraw import cfa

        masks = torch.from_numpy(cfa.masks(pattern, mosaic.shape[-2], mosaic.shape[-1])).to(mosaic.device, mosaic.dtype)
    else:
        from nnraw.ops.demosaic import cfa_masks

        masks = cfa_masks(pattern, mosaic.shape[-2], mosaic.shape[-1], mosaic.device, mosaic.dtype)
    g = torch.as_tensor(wb, dtype=mosaic.dtype, device=mosaic.device).reshape(-1, 3, 1, 1)
    return (masks[None] * g).sum(1, keepdim=True)


def pre_demosaic(mosaic: torch.Tensor, pattern: str, wb: torch.Tensor, encoding: str = "srgb") -> torch.Tensor:
    """The classic edge-aware pre-demosaic done in the encoded domain; returns linear camera RGB.

    ``encode(mosaic * wb)`` -> :func:`nnraw.ops.edge_aware_demosaic` (gains 1: already balanced) ->
    ``decode(.) / wb``. The sampled value of each site is kept (to rounding), so the round trip to the
    mosaic is exact within a DN. ``encoding="linear"`` is the seed system's linear-domain demosaic.

    An X-Trans pattern (36 letters, nnraw.cfa) takes :func:`nnraw.cfa.colour_difference_demosaic`
    instead of the Bayer op, the same way (white balanced and encoded; any H and W; local with a halo
    of 3 pixels).

    Args:
        mosaic: Tensor[N, 1, H, W] float, normalised (0 = black, 1 = white), H and W even (Bayer).
        pattern: CFA pattern of the top-left 2x2 block (or 6x6 X-Trans block).
        wb: Tensor[3] or [N, 3] as-shot gains (green 1).
    Returns:
        Tensor[N, 3, H, W] linear camera RGB, mosaic's dtype and device.
    """
    from nnraw.ops import edge_aware_demosaic

    _check(encoding)
    wb = torch.as_tensor(wb, dtype=mosaic.dtype, device=mosaic.device)
    if len(pattern) == 36:
        from nnraw.cfa import colour_difference_demosaic

        e = colour_difference_demosaic(encode(mosaic * site_gains(wb, pattern, mosaic), encoding), pattern)
        return decode(e, encoding) / gains_like(wb, e)
    if encoding == "linear":
        return edge_aware_demosaic(mosaic, pattern, wb.contiguous())
    ones = torch.ones(3, dtype=mosaic.dtype, device=mosaic.device)
    e = edge_aware_demosaic(encode(mosaic * site_gains(wb, pattern, mosaic), encoding), pattern, ones)
    return decode(e, encoding) / gains_like(wb, e)


class EncodedDomain(torch.nn.Module):
    """Runs a network trained in the encoded domain on linear camera RGB, pointwise around it.

    ``forward(rgb, sigma)`` takes and returns linear camera RGB (and the linear noise std), like every
    nnraw model, so tiled inference (pointwise transforms commute with tiling), the CLI and
    denoise-rgb use it unchanged. ``wb``: Tensor[3] or [N, 3] (one set of gains per batch item).
    """

    def __init__(self, net: torch.nn.Module, wb: torch.Tensor, encoding: str = "srgb"):
        super().__init__()
        _check(encoding)
        self.net, self.encoding = net, encoding
        self.register_buffer("wb", torch.as_tensor(wb, dtype=torch.float32).reshape(-1, 3).clone(), persistent=False)
        self.halo = net.halo
        self.noise_conditioned = net.noise_conditioned
        self.cfa_period = getattr(net, "cfa_period", 2)   # X-Trans networks: tiles at multiples of 6

    def forward(self, rgb: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
        g = self.wb.to(rgb.device, torch.float32).reshape(-1, 3, 1, 1)
        with torch.autocast(rgb.device.type, enabled=False):
            x = rgb.float() * g
            e = encode(x, self.encoding)
            s = None if sigma is None else slope(x.clamp(0, None), self.encoding) * g * sigma.float()
        y = self.net(e, s)
        with torch.autocast(rgb.device.type, enabled=False):
            return decode(y.float(), self.encoding) / g


def in_domain(net: torch.nn.Module, wb) -> torch.nn.Module:
    """``net`` wrapped in :class:`EncodedDomain` with gains ``wb`` when it was trained in an encoded
    domain (``net.domain``), else ``net`` itself (linear-domain networks)."""
    domain = getattr(net, "domain", "linear")
    if domain == "linear":
        return net
    enc = "linear" if domain == "linear_wb" else domain
    return EncodedDomain(net, wb if wb is not None else torch.ones(3), enc)
