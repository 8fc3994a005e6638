"""Which noise profile describes one photo: the one the user gave, else the camera's darktable profile
at its ISO, else the seed's reference table (Pentax K-3), else (no ISO in the metadata) one measured
on the flat parts of the photo itself. ``nnraw convert`` and ``nnraw denoise-rgb`` ask here; the
network is then told the profile's per-pixel noise level.
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from nnraw.io.raw import normalise
from nnraw.noise.model import NoiseProfile, reference_profile
from nnraw.noise.profile import (centre_window, darktable_profile, estimate_scene_profile, load_darktable_profiles,
                                 scene_block_statistics)

_OP = "nnraw.noise.choose"


class ProfileWarning(RuntimeWarning):
    """The noise profile of a photo is a guess (no ISO, nothing flat to measure) or was corrected;
    ``nnraw convert`` shows these as notes on the photo."""


def choose_noise_profile(*, profile: str | Path | NoiseProfile | None = None, raw: Any = None,
                         iso: float | None = None) -> tuple[NoiseProfile, str]:
    """The noise profile for an image and where it came from (for the log).

    Order: an explicit ``profile`` (NoiseProfile or a file for NoiseProfile.load); else, at the ISO
    (``iso``, or else ``raw.iso``), the camera's darktable profile (``raw.make``/``raw.model``) when
    darktable knows the camera, or the seed's reference table (Pentax K-3); else (no ISO anywhere) a
    profile measured on the flat parts of the photo itself.
    """
    if isinstance(profile, NoiseProfile):
        return profile, "given profile"
    if profile is not None:
        return NoiseProfile.load(profile), f"profile file {profile}"
    iso = iso or (getattr(raw, "iso", None) if raw is not None else None)
    if iso and iso > 0:
        return camera_profile(raw, iso)
    if raw is None:
        raise ValueError(f"{_OP}: the ISO is unknown: pass --iso N or --profile FILE")
    return measured_profile(raw)


def camera_profile(raw: Any, iso: float) -> tuple[NoiseProfile, str]:
    """darktable's profile of the raw's camera at ``iso`` when darktable knows the camera (``raw`` has
    make/model), else the reference (Pentax K-3) table's; and where it came from."""
    if raw is not None and getattr(raw, "make", None) and getattr(raw, "model", None):
        table = _darktable_table()
        if table is not None:
            wb = getattr(raw, "wb", None)
            try:
                found = darktable_profile(raw.make, raw.model, iso, table=table,
                                          wb=None if wb is None else [float(v) for v in wb])
            except KeyError:  # camera not in darktable's list
                found = None
            if found is not None:
                return found, f"darktable profile {raw.make} {raw.model} ISO {iso:g}"
    return reference_profile(iso), f"reference (Pentax K-3) profile at ISO {iso:g}"


def measured_profile(raw: Any) -> tuple[NoiseProfile, str]:
    """No ISO in the metadata: the noise measured on the flat parts of the photo itself; where it has
    none, the gentlest table entry (ISO 100), with a warning that says what to pass."""
    try:
        found = estimate_scene_profile(normalise(raw)[0, 0].numpy(), raw.pattern)
    except ValueError as exc:
        warnings.warn(f"{_OP}: the ISO is unknown ({getattr(raw, 'make', '')} {getattr(raw, 'model', '')} "
                      f"metadata has ISO {getattr(raw, 'iso', None)}) and {exc}; assuming ISO 100 — "
                      "pass --iso N or --profile FILE", ProfileWarning, stacklevel=3)
        return reference_profile(100), "assumed ISO 100 (no ISO in the metadata, no flat areas to measure)"
    return found, f"estimated from the image (no ISO in the metadata): a={found.a[1]:.3g}, b={found.b[1]:.3g}"


DARKTABLE_PROFILE_PATHS = (
    "/usr/share/darktable/noiseprofiles.json",
    "/usr/local/share/darktable/noiseprofiles.json",
    "/app/share/darktable/noiseprofiles.json",  # flatpak
)


@functools.lru_cache(maxsize=1)
def _darktable_table():
    """darktable's noiseprofiles.json, parsed once: $NNRAW_DARKTABLE_NOISEPROFILES or darktable's install."""
    env = os.environ.get("NNRAW_DARKTABLE_NOISEPROFILES")
    for candidate in ([env] if env else []) + list(DARKTABLE_PROFILE_PATHS):
        if Path(candidate).is_file():
            return load_darktable_profiles(Path(candidate))
    return None


# --- a profile checked against the photo ----------------------------------------------------------
# A profile can claim more noise than the photo has: another camera's profile, an ISO the metadata
# misreports, a profile measured in another mode. The network then smooths away detail and, in the
# dark, shifts colour (issue #17: a profile x3 cost 1.1 dB at ISO 1600 and cast +13 % at the NVIDIA
# level). The photo's own flat areas bound its noise from above (texture and shading only add
# variance), so where they show clearly less noise than the profile claims, the profile is scaled
# down to what they show. A profile that claims too little cannot be told from texture this way
# (docs/NOISE.md): it is kept; the network then denoises less, which never makes a photo worse.
class ProfileScaledWarning(ProfileWarning):
    """The noise profile was scaled down to the photo's noise (:func:`check_against_photo`)."""


CHECK_LIMIT = 0.8        # act when the photo's noise std is below 0.8 x the profile's
CHECK_MIN_BLOCKS = 2     # flat blocks needed (8 x 8 same-colour pixels each)
CHECK_QUANTILE = 0.2     # of the blocks' variance ratios: textured blocks that pass as flat sit above it
CHECK_QUANTILE_OF_NOISE = 0.848   # that quantile where every block is pure noise (measured: 0.840..0.848
                                  # on 4096 blocks of flat synthetic mosaics at ISO 100, 1600, NVIDIA level)
CHECK_MAX_SIDE = 2048    # measured on a centre crop of at most this side (a second for 24 MP)


def check_against_photo(profile: NoiseProfile, mosaic: np.ndarray, pattern: str, *,
                        limit: float = CHECK_LIMIT) -> tuple[NoiseProfile, float]:
    """``profile``, scaled down to the noise the photo's flat areas show where that is below
    ``limit`` x the profile's; and the scale ``k`` of its noise std (1.0: kept as it is).

    ``mosaic``: float [H, W], the CFA samples normalised by black and white level (the units of
    ``profile``); ``pattern``: its 4- or 36-letter CFA pattern at [0, 0]. Measured on a centre crop
    of at most CHECK_MAX_SIDE: each flat block's (:func:`nnraw.noise.profile.scene_block_statistics`:
    the horizontal, vertical and plane-residual estimates agree) noise variance over the profile's at
    its level, for blocks below 0.9 and 2.5 of their own noise sigmas above black (noise clipped at
    black has less variance). The photo's noise variance in units of the profile's is the 20th
    percentile of those ratios over its value where every block is pure noise (flat blocks with
    texture only raise the upper ones); ``k`` is its root.
    """
    m = np.asarray(mosaic, np.float64)
    stats = scene_block_statistics(m[centre_window(*m.shape, pattern, CHECK_MAX_SIDE)], pattern)
    expected = (np.asarray(profile.a, np.float64)[stats.channel] * stats.mean
                + np.asarray(profile.b, np.float64)[stats.channel])
    keep = (stats.mean < 0.9) & (expected > 0) & (stats.mean > 2.5 * np.sqrt(stats.variance))
    if keep.sum() < CHECK_MIN_BLOCKS:
        return profile, 1.0
    ratio = np.quantile(stats.variance[keep] / expected[keep], CHECK_QUANTILE)
    k = float(np.sqrt(ratio / CHECK_QUANTILE_OF_NOISE))
    if not (k < limit):
        return profile, 1.0
    return profile.noise_times(k), k
