"""Unprocessing sRGB photos into linear camera RGB, and the forward pipeline that undoes it.

After Brooks, Mildenhall, Xue, Chen, Sharlet, Barron, "Unprocessing images for learned raw
denoising", CVPR 2019. Batched, in torch, on any device. The unprocessing steps, in order::

    sRGB in [0, 1] -> inverse tone curve (smoothstep)  -> inverse sRGB transfer curve (linear sRGB)
    -> random sRGB->camera matrix (convex mix of 4 XYZ->camera matrices times sRGB->XYZ, rows
       normalised to sum 1, so white stays white) -> inverse white balance and brightening, with
       Brooks' highlight-preserving inverse -> clip to [0, 1]

:func:`process` is the exact inverse: gains (solving the highlight-preserving inverse per pixel),
camera->sRGB matrix, clip, sRGB transfer curve, smoothstep. ``process(*unprocess(x)) == x`` up to
float rounding wherever unprocessing did not clip (see tests/test_unprocess.py).

Differences from Brooks et al.: the exact piecewise sRGB curve instead of a 2.2 power (the inputs
are sRGB-encoded); the brightening gain ``rgb_gain = 1 / N(0.8, 0.1)`` is clamped to >= 1 so that
unprocessing never pushes green above 1 (Brooks' draw does so for ~2 % of images); the forward
pipeline re-applies ``rgb_gain`` so that the round trip is exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: Brooks et al. 2019's XYZ -> camera matrices (from four cameras), mixed at random.
XYZ_TO_CAMS = (
    ((1.0234, -0.2969, -0.2266), (-0.5625, 1.6328, -0.0469), (-0.0703, 0.2188, 0.6406)),
    ((0.4913, -0.0541, -0.0202), (-0.613, 1.3513, 0.2906), (-0.1564, 0.2151, 0.7183)),
    ((0.838, -0.263, -0.0639), (-0.2887, 1.0725, 0.2496), (-0.0627, 0.1427, 0.5438)),
    ((0.6596, -0.2079, -0.0562), (-0.4782, 1.3016, 0.1933), (-0.097, 0.1581, 0.5181)),
)
#: Linear sRGB (D65) -> XYZ.
SRGB_TO_XYZ = ((0.4124564, 0.3575761, 0.1804375),
               (0.2126729, 0.7151522, 0.0721750),
               (0.0193339, 0.1191920, 0.9503041))

#: Brooks' ranges: red gain U(1.9, 2.4), blue gain U(1.5, 1.9), rgb_gain = 1 / N(0.8, 0.1).
RED_GAIN_RANGE = (1.9, 2.4)
BLUE_GAIN_RANGE = (1.5, 1.9)
RGB_GAIN_INV_MEAN, RGB_GAIN_INV_STD = 0.8, 0.1
HIGHLIGHT_INFLECTION = 0.9


@dataclass
class UnprocessParams:
    """The per-image camera model drawn by unprocessing.

    Attributes:
        rgb2cam: Tensor[N, 3, 3], linear sRGB -> camera RGB (rows sum to 1).
        wb: Tensor[N, 3], as-shot white-balance gains (red, 1, blue): camera RGB * wb is balanced.
        rgb_gain: Tensor[N], global brightening undone by unprocessing (>= 1).
    """

    rgb2cam: torch.Tensor
    wb: torch.Tensor
    rgb_gain: torch.Tensor

    @property
    def cam2rgb(self) -> torch.Tensor:
        return torch.linalg.inv(self.rgb2cam.double()).to(self.rgb2cam.dtype)

    def to(self, device=None, dtype=None) -> "UnprocessParams":
        return UnprocessParams(self.rgb2cam.to(device, dtype), self.wb.to(device, dtype),
                               self.rgb_gain.to(device, dtype))

    def __getitem__(self, i) -> "UnprocessParams":
        return UnprocessParams(self.rgb2cam[i], self.wb[i], self.rgb_gain[i])


# --- random camera -------------------------------------------------------------------------------
def random_ccm(n: int, generator: torch.Generator | None = None, dtype=torch.float32) -> torch.Tensor:
    """Tensor[N, 3, 3] random sRGB -> camera matrices (Brooks et al. 2019), on the generator's device."""
    dev = generator.device if generator is not None else torch.device("cpu")
    xyz2cams = torch.tensor(XYZ_TO_CAMS, dtype=torch.float64, device=dev)             # [4, 3, 3]
    weights = torch.rand(n, 4, generator=generator, device=dev, dtype=torch.float64) * (1e8 - 1e-8) + 1e-8
    weights = weights / weights.sum(1, keepdim=True)
    xyz2cam = torch.einsum("nk,kij->nij", weights, xyz2cams)
    rgb2cam = xyz2cam @ torch.tensor(SRGB_TO_XYZ, dtype=torch.float64, device=dev)
    rgb2cam = rgb2cam / rgb2cam.sum(-1, keepdim=True)
    return rgb2cam.to(dtype)


def random_gains(n: int, generator: torch.Generator | None = None,
                 dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """(wb Tensor[N, 3] = (red, 1, blue), rgb_gain Tensor[N]) in Brooks' ranges (rgb_gain >= 1)."""
    dev = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(n, 2, generator=generator, device=dev, dtype=torch.float64)
    red = RED_GAIN_RANGE[0] + (RED_GAIN_RANGE[1] - RED_GAIN_RANGE[0]) * u[:, 0]
    blue = BLUE_GAIN_RANGE[0] + (BLUE_GAIN_RANGE[1] - BLUE_GAIN_RANGE[0]) * u[:, 1]
    inv = RGB_GAIN_INV_MEAN + RGB_GAIN_INV_STD * torch.randn(n, generator=generator, device=dev,
                                                              dtype=torch.float64)
    rgb_gain = 1.0 / inv.clamp(0.3, 1.0)
    wb = torch.stack([red, torch.ones_like(red), blue], 1)
    return wb.to(dtype), rgb_gain.to(dtype)


def random_params(n: int, generator: torch.Generator | None = None, dtype=torch.float32) -> UnprocessParams:
    """A random camera model per image (colour matrix, white balance, brightening)."""
    rgb2cam = random_ccm(n, generator, dtype)
    wb, rgb_gain = random_gains(n, generator, dtype)
    return UnprocessParams(rgb2cam, wb, rgb_gain)


# --- the individual steps --------------------------------------------------------------------------
def smoothstep(x: torch.Tensor) -> torch.Tensor:
    """The global tone curve Brooks et al. assume: 3x^2 - 2x^3 on [0, 1]."""
    x = x.clamp(0, 1)
    return x * x * (3 - 2 * x)


def inverse_smoothstep(y: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`smoothstep`: 0.5 - sin(asin(1 - 2y) / 3)."""
    y = y.clamp(0, 1)
    return 0.5 - torch.sin(torch.asin(1 - 2 * y) / 3)


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    """sRGB transfer curve (IEC 61966-2-1) decoded: [0, 1] -> linear [0, 1]."""
    x = x.clamp(0, 1)
    return torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    """sRGB transfer curve encoded: linear [0, 1] -> sRGB [0, 1] (inputs clamped)."""
    x = x.clamp(0, 1)
    return torch.where(x <= 0.0031308, x * 12.92, 1.055 * x.clamp_min(0.0031308) ** (1 / 2.4) - 0.055)


def apply_ccm(image: torch.Tensor, ccm: torch.Tensor) -> torch.Tensor:
    """Tensor[N, 3, H, W] -> each pixel p becomes ccm[n] @ p; ccm: Tensor[N, 3, 3] or [3, 3]."""
    if ccm.dim() == 2:
        ccm = ccm.expand(image.shape[0], 3, 3)
    return torch.einsum("nij,njhw->nihw", ccm.to(image.dtype), image)


def _highlight_mask(gray: torch.Tensor) -> torch.Tensor:
    return ((gray - HIGHLIGHT_INFLECTION).clamp_min(0) / (1 - HIGHLIGHT_INFLECTION)).square().clamp_max(1)


def safe_invert_gains(image: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
    """Divide by ``gains`` (Tensor[N, 3], each >= 1) while preserving highlights (Brooks et al.).

    The applied factor per channel is ``g' = m + (1 - m) / gains`` with
    ``m = clamp(((gray - 0.9) / 0.1)^2, 0, 1)``, gray = mean over channels: near white the gains
    fade out, so saturated whites stay white instead of turning into a colour cast.
    """
    inv = (1.0 / gains).to(image.dtype)[:, :, None, None]
    m = _highlight_mask(image.mean(1, keepdim=True))
    return image * (m + (1 - m) * inv)


def apply_gains_exact(raw: torch.Tensor, gains: torch.Tensor, iterations: int = 48) -> torch.Tensor:
    """Exact inverse of :func:`safe_invert_gains` (without highlights: ``raw * gains``).

    Per pixel it solves ``t = mean_c(raw_c / g'_c(m(t)))`` for the pre-inverse gray level t by
    bisection (the right-hand side decreases in t, so the root is unique), in float64.
    """
    y = raw.double()
    n, c, h, w = y.shape
    inv = (1.0 / gains.double())[:, :, None, None].expand(n, c, 1, 1)
    out = y / inv                                            # below the highlight ramp: plain gains
    # Only pixels whose gray level may reach the ramp (t > inflection) need solving.
    hi = torch.maximum(y, out).mean(1)                       # [N, H, W]; g' lies in [1/gains, 1]
    sel = hi > HIGHLIGHT_INFLECTION
    if sel.any():
        idx_n = sel.nonzero()[:, 0]
        ys = y.permute(0, 2, 3, 1)[sel]                      # [K, 3]
        invs = inv[idx_n, :, 0, 0]                           # [K, 3]
        lo = torch.minimum(ys, ys / invs).mean(1)
        up = torch.maximum(ys, ys / invs).mean(1)
        for _ in range(iterations):
            t = (lo + up) / 2
            m = _highlight_mask(t)[:, None]
            f = (ys / (m + (1 - m) * invs)).mean(1) - t
            lo = torch.where(f > 0, t, lo)
            up = torch.where(f > 0, up, t)
        m = _highlight_mask((lo + up) / 2)[:, None]
        solved = out.permute(0, 2, 3, 1).clone()
        solved[sel] = ys / (m + (1 - m) * invs)
        out = solved.permute(0, 3, 1, 2)
    return out.to(raw.dtype).contiguous()


# --- the pipelines -------------------------------------------------------------------------------
def _check(image: torch.Tensor, op: str) -> None:
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"{op}: image must have shape [N, 3, H, W], got {list(image.shape)}")
    if not image.is_floating_point():
        raise TypeError(f"{op}: image must be floating point in [0, 1], got {image.dtype}")


def unprocess(srgb: torch.Tensor, params: UnprocessParams | None = None,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, UnprocessParams]:
    """sRGB photos -> linear camera RGB (not white balanced), as a raw file would hold them.

    Args:
        srgb: Tensor[N, 3, H, W] in [0, 1].
        params: the camera model to use; drawn at random (with ``generator``) when None.
    Returns:
        (Tensor[N, 3, H, W] linear camera RGB in [0, 1], the UnprocessParams used).
    """
    _check(srgb, "unprocess")
    if params is None:
        params = random_params(srgb.shape[0], generator, srgb.dtype)
    params = params.to(srgb.device, srgb.dtype)
    x = srgb_to_linear(inverse_smoothstep(srgb))
    x = apply_ccm(x, params.rgb2cam)
    x = safe_invert_gains(x, params.wb * params.rgb_gain[:, None])
    return x.clamp(0, 1), params


def process(raw_rgb: torch.Tensor, params: UnprocessParams) -> torch.Tensor:
    """Linear camera RGB -> sRGB: white balance and brightening (exact inverse of the highlight-
    preserving inverse), camera -> sRGB matrix, clip, sRGB curve, smoothstep tone curve.

    Args:
        raw_rgb: Tensor[N, 3, H, W] linear camera RGB (e.g. a demosaiced raw).
        params: the camera model (as returned by :func:`unprocess`).
    Returns:
        Tensor[N, 3, H, W] sRGB in [0, 1].
    """
    _check(raw_rgb, "process")
    params = params.to(raw_rgb.device, raw_rgb.dtype)
    x = apply_gains_exact(raw_rgb, params.wb * params.rgb_gain[:, None])
    x = apply_ccm(x, params.cam2rgb).clamp(0, 1)
    return smoothstep(linear_to_srgb(x))
