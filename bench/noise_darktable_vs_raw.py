"""How darktable's noise profiles (a, b) relate to raw-domain variance (docs/NOISE.md).

1. The reference system's Pentax K-3 table (raw domain) against darktable's K-3 entries, per ISO.
2. The Canon 550D DNG in ../shared/data/raw: noise measured on the flat ColorChecker patches
   (raw domain, per channel) and in the masked optical-black margin; compared with darktable's
   Canon EOS 550D entries to bracket the unknown ISO.

Run: PYTHONPATH=python python bench/noise_darktable_vs_raw.py
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import numpy as np

from nnraw.noise.model import PENTAX_K3_ALPHA
from nnraw.noise.profile import (DARKTABLE_TO_RAW_A, _read_flat_mosaic, fit_noise_model, load_darktable_profiles,
                           scene_block_statistics)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DNG = DATA / "raw" / "tinydng_colorchart_Canon550D_MagicLantern.dng"


def iso_for(a_dt: float, entries, channel: int = 1) -> float:
    """The ISO at which darktable's channel a equals a_dt (log-log interpolation)."""
    pts = [(e.iso, e.a[channel]) for e in entries if e.a[channel] > 0]
    for (i0, a0), (i1, a1) in zip(pts, pts[1:]):
        if min(a0, a1) <= a_dt <= max(a0, a1) and a0 != a1:
            t = (math.log(a_dt) - math.log(a0)) / (math.log(a1) - math.log(a0))
            return math.exp(math.log(i0) + t * (math.log(i1) - math.log(i0)))
    return float("nan")


def main() -> None:
    table = load_darktable_profiles(DATA / "darktable-noiseprofiles.json")
    k3 = {e.iso: e for e in table[("Pentax", "K-3")]}
    print("1. Pentax K-3: reference table alpha (raw) vs darktable a (R, G, B)")
    print(f"{'ISO':>6} {'alpha_ref':>11} {'dt a_R':>10} {'dt a_G':>10} {'dt a_B':>10} "
          f"{'ref/dt_G':>9} {'dt R/G':>7} {'dt B/G':>7} {'dt b_G/a_G':>10}")
    ratios = {}
    for iso, alpha in PENTAX_K3_ALPHA.items():
        e = k3[float(iso)]
        ratios[iso] = alpha / e.a[1]
        print(f"{iso:>6} {alpha:>11.4e} {e.a[0]:>10.3e} {e.a[1]:>10.3e} {e.a[2]:>10.3e} {ratios[iso]:>9.2f} "
              f"{e.a[0] / e.a[1]:>7.2f} {e.a[2] / e.a[1]:>7.2f} {e.b[1] / e.a[1]:>10.2e}")
    mid = [ratios[i] for i in ratios if i >= 200]
    print(f"ratio ref/dt_G: median ISO 200-6400 = {statistics.median(mid):.2f}, "
          f"geometric mean = {math.exp(statistics.fmean(map(math.log, mid))):.2f}, "
          f"range {min(ratios.values()):.1f}..{max(ratios.values()):.1f}; used factor {DARKTABLE_TO_RAW_A}")

    if not DNG.exists():
        print(f"2. skipped: {DNG} not found")
        return
    import rawpy

    print("\n2. Canon 550D DNG (EXIF ISO 0): noise on flat ColorChecker blocks, raw domain")
    frame = _read_flat_mosaic(DNG)
    span = 15000 - 2056
    for block in (8, 12):
        stats = scene_block_statistics(frame.mosaic, frame.pattern, block, frame.valid)
        fits = []
        for c, name in enumerate("RGB"):
            sel = stats.channel == c
            a, b = fit_noise_model(stats.mean[sel], stats.variance[sel], stats.count[sel])
            fits.append((a, b))
            print(f"  block {block:>2} {name}: {int(sel.sum()):>5} flat blocks, mean {stats.mean[sel].min():.4f}.."
                  f"{stats.mean[sel].max():.4f}: a = {a:.3e}, b = {b:.3e} (read sigma {math.sqrt(max(b, 0)) * span:.1f} DN)")
    with rawpy.imread(str(DNG)) as raw:
        full = raw.raw_image.astype(np.float64)
        top, left = raw.sizes.top_margin, raw.sizes.left_margin
    ob = full[top:, 8:left - 8]
    d = ob[:, 2:] - ob[:, :-2]
    print(f"  optical black (masked left margin, {ob.shape[0]}x{ob.shape[1]}): mean {ob.mean():.1f} DN, "
          f"std {ob.std():.1f} DN, same-colour difference var/2 = {d.var() / 2:.0f} DN^2 = "
          f"{d.var() / 2 / span ** 2:.3e} normalised")
    a_canon = statistics.fmean(f[0] for f in fits)
    print(f"  raw-domain a (mean over R, G, B, block 8 and 12 last fit) = {a_canon:.3e} -> "
          f"{1 / a_canon:.0f} electrons at white (if a = 1 / electrons at full scale), "
          f"{1 / a_canon / span:.3f} e-/DN")
    c550 = table[("Canon", "EOS 550D")]
    for k in (10.0, DARKTABLE_TO_RAW_A, 30.0):
        print(f"  with factor {k:>4g}: darktable a_G would be {a_canon / k:.3e} -> ISO {iso_for(a_canon / k, c550):.0f}")


if __name__ == "__main__":
    main()
