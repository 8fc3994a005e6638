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

from nnraw.io.raw import normalise
from nnraw.noise.model import NoiseProfile, reference_profile
from nnraw.noise.profile import darktable_profile, estimate_scene_profile, load_darktable_profiles

_OP = "nnraw.noise.choose"


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
                      "pass --iso N or --profile FILE", RuntimeWarning, stacklevel=3)
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
