"""Camera noise: Poisson-Gaussian profiles and the noise synthesiser used for training.

A profile gives, per colour channel c in (R, G, B), the variance of a raw value whose noise-free
level is x (x in [0, 1] after black/white normalisation, ``(raw - black) / (white - black)``)::

    var_c(x) = a_c * x + b_c          (Foi et al. 2008: a = shot-noise gain, b = read-noise variance)

Synthesis follows the reference system: ``Poisson(x / a) * a + sqrt(b) * N(0, 1)``, clipped to [0, 1].

Built in:

* :func:`reference_profile` -- the reference system's Pentax K-3 table (ISO 100..6400, b = 0), with
  log-log interpolation between table ISOs. Below ISO 100 the ISO-100 profile is returned (extended
  low ISOs are the base analogue gain with a digital push, so the raw noise does not shrink); above
  ISO 6400 ``a`` grows in proportion to ISO (slope 1 in log-log: the analogue gain, and so the
  variance per unit of normalised signal, doubles with each ISO stop).
* :data:`NVIDIA_PROFILE` -- the level used by Zhao et al. 2017 (a = 0.005, b = 0.0001).
* :func:`random_profile` / :func:`random_noise_params` -- random (a, b) for noise-conditioned training:
  ``a`` log-uniform in [A_RANGE] = [5e-5, 1.2e-2] (from below the K-3's ISO 100 to above the NVIDIA
  level, Brooks et al. 2019 use [1e-4, 1.2e-2]); ``log b = 2.18 log a + 1.20 + N(0, 0.26^2)`` (Brooks
  et al. 2019, "Unprocessing images for learned raw denoising", Sec. 3.2). In the raw domain the
  three channels share ``a`` and ``b`` (the conversion gain is per pixel, not per colour filter), so
  the sampled values are the same for R, G and B.

Negative ``b`` (darktable fits sometimes have it) is kept in the profile; :meth:`NoiseProfile.variance`
clamps the variance at 0 and :func:`add_noise` uses ``sqrt(max(b, 0))``.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import torch

CHANNELS = ("R", "G", "B")

#: The reference system's Pentax K-3 table (SEED.md): ISO -> alpha, beta = 0, raw scaled to [0, 1].
PENTAX_K3_ALPHA: dict[int, float] = {
    100: 6.66667e-5,
    200: 1.0e-4,
    400: 1.92308e-4,
    800: 3.57143e-4,
    1600: 7.14286e-4,
    3200: 1.388889e-3,
    6400: 2.5e-3,
}

#: Range of the shot-noise gain ``a`` drawn by :func:`random_noise_params` (log-uniform).
A_RANGE = (5e-5, 1.2e-2)
#: Brooks et al. 2019: log(b) = B_SLOPE * log(a) + B_INTERCEPT + N(0, B_LOG_STD^2).
B_SLOPE, B_INTERCEPT, B_LOG_STD = 2.18, 1.20, 0.26

_FORMAT = "nnraw-noise-profile"


def _triple(values, what: str) -> tuple[float, float, float]:
    if isinstance(values, (int, float)):
        values = (values,) * 3
    values = tuple(float(v) for v in values)
    if len(values) != 3:
        raise ValueError(f"NoiseProfile: {what} must have 3 values (R, G, B), got {len(values)}: {values}")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"NoiseProfile: {what} must be finite, got {values}")
    return values  # type: ignore[return-value]


@dataclass(frozen=True)
class NoiseProfile:
    """Poisson-Gaussian noise of one camera at one ISO: ``var_c(x) = a[c] * x + b[c]``, x in [0, 1].

    Attributes:
        a: shot-noise gain per channel (R, G, B), >= 0.
        b: read-noise variance per channel (R, G, B); may be slightly negative in fitted profiles.
        name: free text (camera, ISO, origin).
    """

    a: tuple[float, float, float]
    b: tuple[float, float, float]
    name: str = ""

    def __post_init__(self) -> None:
        a = _triple(self.a, "a")
        b = _triple(self.b, "b")
        if min(a) < 0:
            raise ValueError(f"NoiseProfile: a must be >= 0 per channel, got {a}")
        object.__setattr__(self, "a", a)
        object.__setattr__(self, "b", b)

    # --- evaluation -----------------------------------------------------------------------------
    def tensors(self, device=None, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """(a, b) as Tensor[3] each."""
        return (torch.tensor(self.a, device=device, dtype=dtype),
                torch.tensor(self.b, device=device, dtype=dtype))

    def variance(self, x_rgb: torch.Tensor) -> torch.Tensor:
        """Noise variance of noise-free values ``x_rgb``: Tensor[..., 3, H, W] (channel dim -3) or
        Tensor[..., 3] (a single colour per row). Returns the same shape, clamped at >= 0."""
        x = torch.as_tensor(x_rgb)
        if not x.is_floating_point():
            x = x.float()
        a, b = self.tensors(x.device, x.dtype)
        if x.dim() >= 3 and x.shape[-3] == 3:
            a, b = a[:, None, None], b[:, None, None]
        elif x.shape[-1] != 3:
            raise ValueError(f"NoiseProfile.variance: x must have 3 channels at dim -3 ([..., 3, H, W]) "
                             f"or dim -1 ([..., 3]), got shape {list(x.shape)}")
        return (a * x + b).clamp_min(0)

    def sigma_map(self, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel noise standard deviation for the network's noise-level input.

        Args:
            x: Tensor[N, 3, H, W], an estimate of the noise-free image in [0, 1] (values are clamped).
        Returns:
            Tensor[N, 3, H, W], ``sqrt(a_c * x + b_c)``.
        """
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"NoiseProfile.sigma_map: x must have shape [N, 3, H, W], got {list(x.shape)}")
        return sigma_map(x, *self.tensors(x.device, x.dtype))

    def scaled(self, gain: float) -> "NoiseProfile":
        """The profile after multiplying the signal by ``gain`` (a * gain, b * gain^2)."""
        return NoiseProfile(tuple(v * gain for v in self.a), tuple(v * gain * gain for v in self.b),
                            self.name)

    def noise_times(self, k: float) -> "NoiseProfile":
        """The profile with its noise std multiplied by ``k`` at every level (a and b x k^2): how a
        mis-calibrated profile misleads a network."""
        k2 = float(k) ** 2
        return NoiseProfile(tuple(k2 * v for v in self.a), tuple(k2 * v for v in self.b), self.name)

    # --- files ----------------------------------------------------------------------------------
    def to_json(self) -> dict:
        return {"format": _FORMAT, "version": 1, "name": self.name,
                "model": "var = a * x + b, x = (raw - black) / (white - black)",
                "a": list(self.a), "b": list(self.b)}

    @classmethod
    def from_json(cls, data: Union[dict, str]) -> "NoiseProfile":
        if isinstance(data, str):
            data = json.loads(data)
        if not isinstance(data, dict) or "a" not in data or "b" not in data:
            raise ValueError(f"NoiseProfile.from_json: expected an object with 'a' and 'b', got {str(data)[:80]!r}")
        if data.get("format", _FORMAT) != _FORMAT:
            raise ValueError(f"NoiseProfile.from_json: format must be {_FORMAT!r}, got {data.get('format')!r}")
        return cls(tuple(data["a"]), tuple(data["b"]), str(data.get("name", "")))

    def save(self, path: Union[str, Path]) -> None:
        """Write the profile as JSON (to a temporary name, then renamed)."""
        path = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.to_json(), f, indent=2)
                f.write("\n")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Union[str, Path]) -> "NoiseProfile":
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ValueError(f"NoiseProfile.load: cannot read {path}: {exc.strerror}") from exc
        try:
            return cls.from_json(text)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"NoiseProfile.load: {path} is not a noise profile: {exc}") from exc


NVIDIA_PROFILE = NoiseProfile(a=(0.005,) * 3, b=(0.0001,) * 3, name="NVIDIA level (Zhao et al. 2017)")


def reference_profile(iso: float) -> NoiseProfile:
    """The reference system's Pentax K-3 profile at ``iso`` (b = 0 at every ISO).

    Log-log interpolation between the table ISOs (exact at table ISOs); below ISO 100 the ISO-100
    value; above ISO 6400 ``a`` proportional to ISO from the ISO-6400 value.
    """
    iso = float(iso)
    if not math.isfinite(iso) or iso <= 0:
        raise ValueError(f"reference_profile: iso must be a positive number, got {iso}")
    isos = sorted(PENTAX_K3_ALPHA)
    if iso <= isos[0]:
        a = PENTAX_K3_ALPHA[isos[0]]
    elif iso >= isos[-1]:
        a = PENTAX_K3_ALPHA[isos[-1]] * iso / isos[-1]
    else:
        a = _loglog_interp(iso, isos, [PENTAX_K3_ALPHA[i] for i in isos])
    return NoiseProfile((a,) * 3, (0.0,) * 3, name=f"Pentax K-3 ISO {iso:g} (reference table)")


def _loglog_interp(x: float, xs: Sequence[float], ys: Sequence[float]) -> float:
    """Piecewise-linear interpolation of log(y) over log(x); xs ascending, x inside [xs[0], xs[-1]]."""
    for i in range(len(xs) - 1):
        if xs[i] <= x <= xs[i + 1]:
            if x == xs[i]:
                return float(ys[i])
            if x == xs[i + 1]:
                return float(ys[i + 1])
            t = (math.log(x) - math.log(xs[i])) / (math.log(xs[i + 1]) - math.log(xs[i]))
            return math.exp((1 - t) * math.log(ys[i]) + t * math.log(ys[i + 1]))
    raise ValueError(f"_loglog_interp: {x} outside [{xs[0]}, {xs[-1]}]")


# --- random profiles for noise-conditioned training ------------------------------------------------
def random_noise_params(n: int, generator: torch.Generator | None = None, device=None,
                        dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``n`` realistic (a, b) pairs (see module docstring for the ranges).

    Sampled on the generator's device (CPU when none), returned on ``device``.

    Returns:
        (a, b): Tensor[N, 3] each, equal over the three channels.
    """
    gen_device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(n, generator=generator, device=gen_device, dtype=torch.float64)
    lo, hi = math.log(A_RANGE[0]), math.log(A_RANGE[1])
    log_a = lo + (hi - lo) * u
    log_b = B_SLOPE * log_a + B_INTERCEPT + B_LOG_STD * torch.randn(
        n, generator=generator, device=gen_device, dtype=torch.float64)
    a = log_a.exp()[:, None].expand(n, 3)
    b = log_b.exp()[:, None].expand(n, 3)
    return a.to(device=device or gen_device, dtype=dtype).contiguous(), \
        b.to(device=device or gen_device, dtype=dtype).contiguous()


def random_profile(generator: torch.Generator | None = None) -> NoiseProfile:
    """One random realistic profile (see :func:`random_noise_params`)."""
    a, b = random_noise_params(1, generator, dtype=torch.float64)
    return NoiseProfile(tuple(a[0].tolist()), tuple(b[0].tolist()), name="random (Brooks et al. 2019 ranges)")


# --- synthesis --------------------------------------------------------------------------------------
NoiseSpec = Union[NoiseProfile, Sequence[NoiseProfile], tuple]


def noise_params(noise: NoiseSpec, n: int, device=None, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalise a noise specification to per-sample tensors (a, b), Tensor[N, 3] each.

    ``noise`` is a :class:`NoiseProfile` (same for all samples), a sequence of N profiles, or a
    tuple ``(a, b)`` of tensors/floats shaped [], [3], [N] or [N, 3].
    """
    if isinstance(noise, NoiseProfile):
        a, b = noise.tensors(device, dtype)
        return a.expand(n, 3), b.expand(n, 3)
    if isinstance(noise, (list, tuple)) and noise and all(isinstance(p, NoiseProfile) for p in noise):
        if len(noise) != n:
            raise ValueError(f"add_noise: got {len(noise)} profiles for a batch of {n}")
        a = torch.tensor([p.a for p in noise], device=device, dtype=dtype)
        b = torch.tensor([p.b for p in noise], device=device, dtype=dtype)
        return a, b
    if isinstance(noise, tuple) and len(noise) == 2:
        out = []
        for name, v in zip("ab", noise):
            t = torch.as_tensor(v, dtype=dtype, device=device)
            if t.dim() == 0:
                t = t.expand(n, 3)
            elif t.shape == (3,):
                t = t.expand(n, 3)
            elif t.shape == (n,):
                t = t[:, None].expand(n, 3)
            elif t.shape != (n, 3):
                raise ValueError(f"add_noise: {name} must have shape [], [3], [N] or [N, 3] with N = {n}, "
                                 f"got {list(t.shape)}")
            out.append(t)
        return out[0], out[1]
    raise TypeError(f"add_noise: noise must be a NoiseProfile, a list of them or a tuple (a, b), got {type(noise).__name__}")


def _per_pixel(param: torch.Tensor, shape: torch.Size, pattern: str | None) -> torch.Tensor:
    """Expand Tensor[N, 3] to broadcast against an image [N, 3, H, W] or a mosaic [N, 1, H, W]."""
    n, c, h, w = shape
    if c == 3:
        return param[:, :, None, None]
    from nnraw.ops.demosaic import cfa_masks

    masks = cfa_masks(pattern, h, w, param.device, param.dtype)           # [3, H, W]
    return torch.einsum("nc,chw->nhw", param, masks)[:, None]


def sigma_map(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, pattern: str | None = None) -> torch.Tensor:
    """Per-pixel noise std ``sqrt(max(a x + b, 0))`` of Tensor[N, 3, H, W] (or a mosaic [N, 1, H, W]
    with ``pattern``) for per-sample parameters a, b: Tensor[N, 3] (or [3])."""
    n = x.shape[0]
    a, b = noise_params((a, b), n, x.device, x.dtype)
    if x.shape[1] == 1 and pattern is None:
        raise ValueError("sigma_map: a mosaic [N, 1, H, W] needs its CFA pattern")
    pa, pb = _per_pixel(a, x.shape, pattern), _per_pixel(b, x.shape, pattern)
    return (pa * x.clamp(0, 1) + pb).clamp_min(0).sqrt()


def add_noise(clean: torch.Tensor, noise: NoiseSpec, generator: torch.Generator | None = None,
              pattern: str | None = None, clip: bool = True) -> torch.Tensor:
    """Poisson-Gaussian noise: ``Poisson(x / a) * a + sqrt(b) * N(0, 1)``, clipped to [0, 1].

    Args:
        clean: Tensor[N, 3, H, W] (RGB) or Tensor[N, 1, H, W] (Bayer mosaic, then ``pattern`` is
            needed to pick each pixel's channel), noise-free values in [0, 1], any device.
        noise: a NoiseProfile, a list of N profiles, or ``(a, b)`` tensors ([3], [N] or [N, 3]).
        generator: a torch.Generator on ``clean``'s device, for reproducible noise.
        pattern: "RGGB", "BGGR", "GRBG" or "GBRG" for mosaics.
        clip: clip the result to [0, 1] as a raw file would (default, as the reference system).

    Returns:
        Tensor like ``clean``.
    """
    if clean.dim() != 4 or clean.shape[1] not in (1, 3):
        raise ValueError(f"add_noise: clean must have shape [N, 3, H, W] or [N, 1, H, W], got {list(clean.shape)}")
    if not clean.is_floating_point():
        raise TypeError(f"add_noise: clean must be floating point, got {clean.dtype}")
    if clean.shape[1] == 1:
        from nnraw.ops.demosaic import BAYER_PATTERNS

        if pattern not in BAYER_PATTERNS:
            raise ValueError(f"add_noise: a mosaic needs pattern in {BAYER_PATTERNS}, got {pattern!r}")
    if generator is not None and generator.device.type != clean.device.type:
        raise ValueError(f"add_noise: the generator is on {generator.device} but clean is on {clean.device}; "
                         "pass torch.Generator(device=clean.device)")
    n, c, h, w = clean.shape
    # Sample in float32 at least: float16 cannot hold Poisson counts of ~1e4.
    work = torch.float64 if clean.dtype == torch.float64 else torch.float32
    a, b = noise_params(noise, n, clean.device, work)
    if (a < 0).any():
        raise ValueError(f"add_noise: a must be >= 0, got min {a.min().item():g}")
    if c == 1 and (h % 2 or w % 2):
        raise ValueError(f"add_noise: a mosaic needs even height and width, got {h}x{w}")
    # Per-pixel parameters by broadcasting (never materialised): RGB [N, 3, 1, 1]; a mosaic is
    # viewed as [N, 1, H/2, 2, W/2, 2] against the 2x2 CFA block's parameters [N, 1, 1, 2, 1, 2].
    if c == 3:
        view, pa, pb = clean, a[:, :, None, None], b[:, :, None, None]
    else:
        idx = torch.tensor(["RGB".index(ch) for ch in pattern], device=clean.device)
        view = clean.reshape(n, 1, h // 2, 2, w // 2, 2)
        pa = a[:, idx].view(n, 1, 1, 2, 1, 2)
        pb = b[:, idx].view(n, 1, 1, 2, 1, 2)
    x = view.to(work).clamp(0, 1)
    has_zero = bool((a == 0).any())
    safe_a = torch.where(pa > 0, pa, torch.ones_like(pa)) if has_zero else pa
    rate = x / safe_a
    # Exact Poisson draws. (A normal approximation for large counts was tried; on the shared 2-core
    # CPU its extra elementwise and indexing passes cost more than torch.poisson saved.)
    counts = torch.poisson(rate, generator=generator)
    noisy = counts * safe_a
    if has_zero:
        noisy = torch.where(pa > 0, noisy, x)
    if bool((b > 0).any()):
        noisy = torch.addcmul(noisy, pb.clamp_min(0).sqrt(),
                              torch.randn(noisy.shape, generator=generator, device=noisy.device, dtype=work))
    if clip:
        noisy = noisy.clamp(0, 1)
    noisy = noisy.reshape(clean.shape)
    return noisy.to(clean.dtype)
