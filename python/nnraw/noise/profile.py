"""Measuring noise profiles: flat-field fitting, and darktable's noiseprofiles.json.

Fitting (``nnraw profile FLATFIELD_RAWS... --iso N -o profile.json``), as the reference system did:
a series of flat-field raws at one ISO and rising exposure; in each, the CFA is split into its four
colour planes, each plane is cut into blocks (``block`` x ``block`` same-colour pixels); per block
the mean and the noise variance are measured, and ``var = a * mean + b`` is fitted per channel
(R, G = both greens, B) by iteratively reweighted least squares with Huber weights (robust to
blocks with texture, dust, vignetting steps).

The variance of a block is measured without the scene: ``var(p[y, x+1] - p[y, x]) / 2`` over
horizontally neighbouring same-colour pixels (smooth shading cancels; white noise doubles), or,
with ``pairs=True``, from two shots of the same exposure: ``var(p1 - p2) / 2``, which also removes
fixed texture. Blocks with clipped pixels (at or above white, or at raw 0) are dropped.

darktable (:func:`load_darktable_profiles`, :func:`darktable_profile`): darktable's a, b are NOT
raw-domain variances. docs/NOISE.md gives the measurement; :data:`DARKTABLE_TO_RAW_A` is the
factor that converts darktable's green-channel ``a`` into the raw-domain ``a`` used here, and the
importer also removes the white-balance gains that darktable's red and blue channels carry.

Raw files are read with the converter's ``nnraw.io.raw.read_raw`` when it is present, else with rawpy
directly (:func:`_read_flat_mosaic_rawpy`; nnraw.io.raw was on another branch when this was written).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from nnraw.cfa import period
from nnraw.noise.model import NoiseProfile, _loglog_interp

CHANNEL_OF = {"R": 0, "G": 1, "B": 2}


# ==================================================================================================
# Block statistics and robust fitting (array level)
# ==================================================================================================
@dataclass
class BlockStatistics:
    """Per-block measurements of one or more flat fields.

    Attributes:
        mean: float64 [K], the block means (normalised raw units).
        variance: float64 [K], the noise variance estimates.
        channel: int [K], 0 = R, 1 = G, 2 = B.
        count: int [K], how many differences each variance came from.
    """

    mean: np.ndarray
    variance: np.ndarray
    channel: np.ndarray
    count: np.ndarray

    @staticmethod
    def concatenate(parts: Sequence["BlockStatistics"]) -> "BlockStatistics":
        if not parts:
            return BlockStatistics(np.zeros(0), np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64))
        return BlockStatistics(*(np.concatenate([getattr(p, f) for p in parts])
                                 for f in ("mean", "variance", "channel", "count")))


def _planes(mosaic: np.ndarray, pattern: str) -> list[tuple[int, np.ndarray]]:
    """The colour planes of a mosaic as (channel, plane) pairs: one per site of the pattern's period
    (four for a 2x2 Bayer pattern, 36 for a 6x6 X-Trans one)."""
    n = period(pattern)
    out = []
    for k, colour in enumerate(pattern):
        dy, dx = divmod(k, n)
        out.append((CHANNEL_OF[colour], mosaic[dy::n, dx::n]))
    return out


def centre_window(h: int, w: int, pattern: str, side: int) -> tuple[slice, slice]:
    """Rows and columns of a centre crop of at most ``side`` x ``side`` of an h x w mosaic, starting at
    whole CFA periods so that ``pattern`` stays the crop's pattern at [0, 0]."""
    n = period(pattern)
    top, left = max(0, (h - side) // (2 * n) * n), max(0, (w - side) // (2 * n) * n)
    return slice(top, top + side), slice(left, left + side)


def _blocks(plane: np.ndarray, block: int) -> np.ndarray:
    h, w = (plane.shape[0] // block) * block, (plane.shape[1] // block) * block
    return plane[:h, :w].reshape(h // block, block, w // block, block).swapaxes(1, 2).reshape(-1, block, block)


def block_statistics(mosaic: np.ndarray, pattern: str, block: int = 16,
                     second: np.ndarray | None = None, valid: np.ndarray | None = None) -> BlockStatistics:
    """Mean and noise variance per block and CFA plane of a normalised Bayer mosaic.

    Args:
        mosaic: float [H, W], (raw - black) / (white - black).
        pattern: "RGGB", "BGGR", "GRBG" or "GBRG".
        block: block side in same-colour pixels (16 -> 32x32 raw pixels).
        second: optional second shot of the same exposure [H, W]: variance from ``(m1 - m2) / 2``.
        valid: optional bool [H, W], False for clipped pixels (blocks holding any are dropped).
    """
    if mosaic.ndim != 2:
        raise ValueError(f"block_statistics: mosaic must be 2-D [H, W], got shape {mosaic.shape}")
    if pattern not in ("RGGB", "BGGR", "GRBG", "GBRG"):
        raise ValueError(f"block_statistics: pattern must be a Bayer pattern like 'RGGB', got {pattern!r}")
    if second is not None and second.shape != mosaic.shape:
        raise ValueError(f"block_statistics: the two shots differ in shape: {mosaic.shape} vs {second.shape}")
    m = mosaic.astype(np.float64)
    valid = np.ones(m.shape, bool) if valid is None else valid
    means, variances, channels, counts = [], [], [], []
    ok_planes = [plane for _, plane in _planes(valid, pattern)]
    for k, (channel, plane) in enumerate(_planes(m, pattern)):
        ok = _blocks(ok_planes[k], block).all(axis=(1, 2))
        if second is not None:
            other = _planes(second.astype(np.float64), pattern)[k][1]
            b1, b2 = _blocks(plane, block), _blocks(other, block)
            mean = (b1 + b2).mean(axis=(1, 2)) / 2
            diff = (b1 - b2).reshape(len(b1), -1)
        else:
            b1 = _blocks(plane, block)
            mean = b1.mean(axis=(1, 2))
            diff = (b1[:, :, 1:] - b1[:, :, :-1]).reshape(len(b1), -1)
        var = diff.var(axis=1, ddof=1) / 2
        means.append(mean[ok]); variances.append(var[ok])
        channels.append(np.full(ok.sum(), channel)); counts.append(np.full(ok.sum(), diff.shape[1]))
    return BlockStatistics(np.concatenate(means), np.concatenate(variances),
                           np.concatenate(channels), np.concatenate(counts))


def scene_block_statistics(mosaic: np.ndarray, pattern: str, block: int = 8,
                           valid: np.ndarray | None = None, tolerance: float = 0.2) -> BlockStatistics:
    """Block statistics from an ordinary photo: only blocks that look flat are kept.

    A block counts as flat when three noise estimates agree within ``tolerance`` (in log): the
    variance of horizontal and of vertical same-colour differences (/2), and the residual variance
    after removing a fitted plane. Texture raises the first two unequally and the plane residual
    more than the differences; pure white noise makes all three equal. Used to measure noise on
    the ColorChecker patches of a real raw (docs/NOISE.md).
    """
    m = mosaic.astype(np.float64)
    valid = np.ones(m.shape, bool) if valid is None else valid
    yy, xx = np.mgrid[:block, :block]
    design = np.stack([np.ones(block * block), yy.ravel(), xx.ravel()], 1)
    ok_planes = [plane for _, plane in _planes(valid, pattern)]
    parts = []
    for k, (channel, plane) in enumerate(_planes(m, pattern)):
        b = _blocks(plane, block)
        if len(b) == 0:                # a plane smaller than one block (a tiny image)
            continue
        vh = (b[:, :, 1:] - b[:, :, :-1]).reshape(len(b), -1).var(1, ddof=1) / 2
        vv = (b[:, 1:, :] - b[:, :-1, :]).reshape(len(b), -1).var(1, ddof=1) / 2
        flat = b.reshape(len(b), -1).T
        resid = flat - design @ np.linalg.lstsq(design, flat, rcond=None)[0]
        vp = resid.var(0, ddof=3)
        with np.errstate(divide="ignore", invalid="ignore"):
            ok = ((np.abs(np.log(vh / vv)) < tolerance) & (np.abs(np.log(vp / (vh + vv) * 2)) < tolerance)
                  & _blocks(ok_planes[k], block).all(axis=(1, 2)))
        parts.append(BlockStatistics(b.mean(axis=(1, 2))[ok], ((vh + vv) / 2)[ok], np.full(ok.sum(), channel),
                                     np.full(ok.sum(), 2 * block * (block - 1))))
    return BlockStatistics.concatenate(parts)


def fit_noise_model(mean: np.ndarray, variance: np.ndarray, count: np.ndarray | None = None,
                    iterations: int = 20, huber: float = 2.0) -> tuple[float, float]:
    """Robust fit of ``variance = a * mean + b``.

    Iteratively reweighted least squares: each block's residual is scaled by its expected standard
    error (a sample variance from n differences has relative std ~ sqrt(2 / n), times the model
    variance); residuals beyond ``huber`` robust standard deviations (MAD) get Huber weights.

    Returns:
        (a, b). ``a`` is clamped at >= 0.
    """
    x = np.asarray(mean, np.float64)
    y = np.asarray(variance, np.float64)
    n = np.full(x.shape, 64.0) if count is None else np.asarray(count, np.float64)
    if x.size < 2 or np.ptp(x) <= 0:
        raise ValueError(f"fit_noise_model: need blocks at two or more brightness levels, got {x.size} "
                         f"blocks spanning [{x.min() if x.size else float('nan'):.4g}, "
                         f"{x.max() if x.size else float('nan'):.4g}]")
    design = np.stack([x, np.ones_like(x)], 1)
    coef = np.linalg.lstsq(design, y, rcond=None)[0]
    robust = np.ones_like(x)
    for _ in range(iterations):
        pred = np.maximum(design @ coef, 1e-3 * max(np.median(y), 1e-30))
        se = pred * np.sqrt(2.0 / np.maximum(n - 1, 1))
        r = (y - design @ coef) / se
        mad = 1.4826 * np.median(np.abs(r - np.median(r))) or 1.0
        u = np.abs(r) / (huber * mad)
        robust = np.where(u <= 1, 1.0, 1.0 / np.maximum(u, 1e-12))
        w = robust / se ** 2
        sw = np.sqrt(w)
        new = np.linalg.lstsq(design * sw[:, None], y * sw, rcond=None)[0]
        if np.allclose(new, coef, rtol=1e-9, atol=1e-15):
            coef = new
            break
        coef = new
    a, b = float(coef[0]), float(coef[1])
    return max(a, 0.0), b


def fit_block_statistics(stats: BlockStatistics, name: str = "") -> NoiseProfile:
    """Per-channel robust fit of a :class:`BlockStatistics` -> NoiseProfile."""
    a, b = [], []
    for c, colour in enumerate("RGB"):
        sel = stats.channel == c
        if sel.sum() < 2:
            raise ValueError(f"fit_profile: too few usable blocks for channel {colour}: {int(sel.sum())}")
        ac, bc = fit_noise_model(stats.mean[sel], stats.variance[sel], stats.count[sel])
        a.append(ac); b.append(bc)
    return NoiseProfile(tuple(a), tuple(b), name)


def estimate_scene_profile(mosaic: np.ndarray, pattern: str, *, name: str = "", max_side: int = 2048,
                           block: int = 8, max_mean: float = 0.9) -> NoiseProfile:
    """Blind noise estimate from the photo itself, for raws whose ISO is unknown.

    Takes the flat blocks of the normalised mosaic (``scene_block_statistics``: blocks where
    horizontal, vertical and plane-residual noise estimates agree), from a centre crop of at most
    ``max_side`` pixels, and fits one ``var = a x + b`` over all channels together (in the raw domain
    the Poisson gain is the same for R, G and B: docs/NOISE.md). Blocks brighter than ``max_mean``
    are left out (clipping lowers their variance).

    Raises:
        ValueError: too few flat blocks, or not at two brightness levels.
    """
    m = np.asarray(mosaic, np.float64)
    m = m[centre_window(*m.shape, pattern, max_side)]
    stats = scene_block_statistics(m, pattern, block=block)
    keep = stats.mean < max_mean
    if keep.sum() < 16:
        raise ValueError(f"estimate_scene_profile: only {int(keep.sum())} flat blocks found; "
                         "cannot estimate the noise from this image")
    a, b = fit_noise_model(stats.mean[keep], stats.variance[keep], stats.count[keep])
    if a <= 0 and b <= 0:
        raise ValueError("estimate_scene_profile: the fitted noise variance is not positive")
    b = max(b, 0.0)
    return NoiseProfile((a, a, a), (b, b, b), name or "estimated from the image")


# ==================================================================================================
# Raw files
# ==================================================================================================
@dataclass
class FlatMosaic:
    mosaic: np.ndarray      # float64 [H, W], (raw - black) / (white - black), unclipped
    pattern: str
    valid: np.ndarray       # bool [H, W]: not clipped at white, not at raw 0
    iso: float | None


def _read_flat_mosaic(path: Path) -> FlatMosaic:
    """Read a Bayer raw and normalise it (unclipped) by its black and white levels.

    Uses the converter's reader ``nnraw.io.raw.read_raw`` when it is installed (same CFA, black and
    ISO handling as ``nnraw convert``), and rawpy directly otherwise.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"nnraw profile: {path}: no such file")
    try:
        from nnraw.io.raw import RawReadError, read_raw
    except ImportError:
        return _read_flat_mosaic_rawpy(path)
    try:
        raw = read_raw(path)
    except RawReadError as exc:
        raise ValueError(f"nnraw profile: cannot read {path} as a raw file: {exc.reason}") from exc
    if len(raw.pattern) == 36:   # read_raw reads X-Trans since #18; this path is Bayer-only
        raise ValueError(f"nnraw profile: {path}: X-Trans (6x6 CFA) raws are not supported here yet (Bayer only)")
    data = raw.mosaic.astype(np.float64)
    h, w = data.shape
    black_map = np.tile(np.asarray(raw.black_levels, np.float64), (h // 2, w // 2))
    white = float(raw.white_level)
    return FlatMosaic((data - black_map) / (white - black_map), raw.pattern, (data < white) & (data > 0), raw.iso)


def _read_flat_mosaic_rawpy(path: Path) -> FlatMosaic:
    """The fallback reader: rawpy directly (used when nnraw.io.raw is not available)."""
    import rawpy

    try:
        with rawpy.imread(str(path)) as raw:
            data = raw.raw_image_visible.astype(np.float64)
            pat = raw.raw_pattern
            desc = raw.color_desc.decode()
            if pat is None or pat.shape != (2, 2):
                raise ValueError(f"nnraw profile: {path} is not a 2x2 Bayer raw (pattern {pat})")
            pattern = "".join(desc[i] for i in pat.flatten())
            blacks = np.asarray(raw.black_level_per_channel, np.float64)
            black = np.zeros((2, 2))
            for k in range(4):
                black[k // 2, k % 2] = blacks[pat.flatten()[k]]
            white = float(raw.white_level)
    except rawpy.LibRawError as exc:
        raise ValueError(f"nnraw profile: cannot read {path} as a raw file: {exc}") from exc
    if pattern not in ("RGGB", "BGGR", "GRBG", "GBRG"):
        raise ValueError(f"nnraw profile: {path}: unsupported CFA {pattern!r} (need a Bayer RGB pattern)")
    h, w = (data.shape[0] // 2) * 2, (data.shape[1] // 2) * 2     # keep the 2x2 phase
    data = data[:h, :w]
    black_map = np.tile(black, (h // 2, w // 2))
    return FlatMosaic((data - black_map) / (white - black_map), pattern, (data < white) & (data > 0), None)


def fit_profile(flat_field_raws: Sequence[Path], iso: float | None = None, block: int = 16,
                pairs: bool = False, max_mean: float = 0.95) -> NoiseProfile:
    """Fit a NoiseProfile from flat-field raws of one ISO at several exposures.

    Args:
        flat_field_raws: raw files (any rawpy-readable Bayer raw).
        iso: the ISO they were shot at (goes into the profile's name).
        block: block side in same-colour pixels.
        pairs: files come in consecutive pairs of equal exposure; the variance is taken from each
            pair's difference (removes any fixed pattern and texture).
        max_mean: blocks brighter than this (normalised) are dropped (sensor non-linearity near white).
    """
    paths = [Path(p) for p in flat_field_raws]
    if not paths:
        raise ValueError("nnraw profile: no flat-field raws given")
    if pairs and len(paths) % 2:
        raise ValueError(f"nnraw profile: --pairs needs an even number of raws, got {len(paths)}")
    parts = []
    frames = [_read_flat_mosaic(p) for p in paths]
    groups = [(frames[i], frames[i + 1]) for i in range(0, len(frames), 2)] if pairs else [(f, None) for f in frames]
    for first, second in groups:
        valid = first.valid if second is None else first.valid & second.valid
        if second is not None and (second.pattern != first.pattern or second.mosaic.shape != first.mosaic.shape):
            raise ValueError("nnraw profile: the two raws of a pair differ in CFA pattern or size")
        stats = block_statistics(first.mosaic, first.pattern, block,
                                 second.mosaic if second is not None else None, valid)
        keep = stats.mean <= max_mean
        parts.append(BlockStatistics(stats.mean[keep], stats.variance[keep], stats.channel[keep], stats.count[keep]))
    stats = BlockStatistics.concatenate(parts)
    if iso is None:
        found = {f.iso for f in frames if f.iso}
        iso = found.pop() if len(found) == 1 else None
    name = f"flat-field fit of {len(paths)} raws" + (f", ISO {iso:g}" if iso else "")
    return fit_block_statistics(stats, name)


# ==================================================================================================
# darktable's noiseprofiles.json
# ==================================================================================================
#: raw-domain (a, b) = DARKTABLE_TO_RAW_A * darktable (a, b) (green channel; R/B also divided by
#: their WB gain, b by its square).
#: Measured in docs/NOISE.md: the median ratio of the reference system's Pentax K-3 table to
#: darktable's K-3 green-channel a over ISO 200..6400 (ISO 100 left out: the two tables disagree on
#: its slope); cross-checked on the Canon 550D DNG.
DARKTABLE_TO_RAW_A = 25.0


@dataclass(frozen=True)
class DarktableEntry:
    iso: float
    a: tuple[float, float, float]
    b: tuple[float, float, float]


def load_darktable_profiles(json_path: Path) -> dict[tuple[str, str], list[DarktableEntry]]:
    """Read darktable's noiseprofiles.json -> {(maker, model): entries sorted by ISO}.

    Where darktable lists the same ISO twice for a model (e.g. two contributed sets), the first
    entry is kept. Makers and models are matched case-insensitively by :func:`darktable_profile`.
    """
    path = Path(json_path)
    try:
        data = json.loads(path.read_text())
        makers = data["noiseprofiles"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"load_darktable_profiles: {path} is not a darktable noiseprofiles.json: {exc}") from exc
    table: dict[tuple[str, str], list[DarktableEntry]] = {}
    for maker in makers:
        for model in maker.get("models", []):
            seen: dict[float, DarktableEntry] = {}
            for p in model.get("profiles", []):
                iso = float(p["iso"])
                if iso not in seen:
                    seen[iso] = DarktableEntry(iso, tuple(map(float, p["a"])), tuple(map(float, p["b"])))
            table[(maker["maker"], model["model"])] = sorted(seen.values(), key=lambda e: e.iso)
    return table


def _find_model(table, maker: str, model: str) -> list[DarktableEntry]:
    key = {(mk.lower(), md.lower()): v for (mk, md), v in table.items()}
    mk, md = maker.lower().strip(), model.lower().strip()
    if md.startswith(mk + " "):
        md = md[len(mk) + 1:]
    if (mk, md) in key:
        return key[(mk, md)]
    models = sorted(m for (k, m) in table if k.lower() == mk)
    raise KeyError(f"darktable_profile: no darktable profile for {maker!r} {model!r}; "
                   f"{maker} models: {', '.join(models[:20]) or 'none (unknown maker)'}"
                   + (" ..." if len(models) > 20 else ""))


def darktable_profile(maker: str, model: str, iso: float, json_path: Path | None = None,
                      wb: Sequence[float] | None = None, table=None) -> NoiseProfile:
    """A raw-domain NoiseProfile from darktable's profiles for a camera, at ``iso``.

    Conversion (docs/NOISE.md): darktable fits its variance after white balance and on its own
    scale; raw-domain ``a`` is the same for all CFA colours, so it is taken from darktable's green
    channel times :data:`DARKTABLE_TO_RAW_A`, and ``b`` likewise (darktable's normalisation of the
    signal is the raw one, (raw - black) / (white - black); its variance estimate is low by the
    factor). R and B get the green values unless ``wb`` (the gains darktable applied, G = 1) is
    given: then a_c = factor * a_dt,c / wb_c and b_c = factor * b_dt,c / wb_c^2.

    Between darktable's ISOs: log-log interpolation of a (b linearly in ISO; b may be negative);
    outside: the nearest ISO's values scaled by ISO ratio (a) and left as is (b).
    """
    if table is None:
        if json_path is None:
            raise ValueError("darktable_profile: pass json_path (darktable's noiseprofiles.json) or table")
        table = load_darktable_profiles(json_path)
    entries = _find_model(table, maker, model)
    iso = float(iso)
    if not math.isfinite(iso) or iso <= 0:
        raise ValueError(f"darktable_profile: iso must be positive, got {iso}")
    isos = [e.iso for e in entries]

    def at(values_of, kind: str) -> np.ndarray:
        vals = np.array([values_of(e) for e in entries], np.float64)        # [E, 3]
        if len(entries) == 1 or iso <= isos[0] or iso >= isos[-1]:
            i = 0 if iso <= isos[0] else len(isos) - 1
            scale = iso / isos[i] if kind == "a" else 1.0
            return vals[i] * scale
        out = []
        for c in range(3):
            if kind == "a" and (vals[:, c] > 0).all():
                out.append(_loglog_interp(iso, isos, vals[:, c]))
            else:
                out.append(float(np.interp(iso, isos, vals[:, c])))
        return np.array(out)

    a_dt = at(lambda e: e.a, "a")
    b_dt = at(lambda e: e.b, "b")
    k = DARKTABLE_TO_RAW_A
    if wb is None:
        a = (k * a_dt[1],) * 3
        b = (k * b_dt[1],) * 3
    else:
        g = np.asarray(wb, np.float64) / float(wb[1])
        a = tuple(k * a_dt / g)
        b = tuple(k * b_dt / g ** 2)
    return NoiseProfile(a, b, name=f"{maker} {model} ISO {iso:g} (darktable, x{k:g} to raw domain)")


# ==================================================================================================
# Command line: nnraw profile
# ==================================================================================================
def add_arguments(p) -> None:
    p.add_argument("raws", nargs="*", type=Path, metavar="FLATFIELD_RAWS",
                   help="flat-field raws of one ISO at several exposures (defocused, evenly lit surface)")
    p.add_argument("--iso", type=float, required=True, help="the ISO of the raws (or the ISO wanted from darktable)")
    p.add_argument("-o", "--output", type=Path, required=True, help="profile file to write (JSON)")
    p.add_argument("--block", type=int, default=16, help="block side in same-colour pixels (default 16)")
    p.add_argument("--pairs", action="store_true",
                   help="raws come in pairs of equal exposure: variance from each pair's difference")
    p.add_argument("--max-mean", type=float, default=0.95, help="drop blocks brighter than this (default 0.95)")
    p.add_argument("--darktable", type=Path, metavar="NOISEPROFILES_JSON",
                   help="instead of fitting raws: convert darktable's profile (needs --maker and --model)")
    p.add_argument("--maker", help="camera maker as in darktable's noiseprofiles.json, e.g. Canon")
    p.add_argument("--model", help="camera model as in darktable's noiseprofiles.json, e.g. 'EOS 550D'")


def run(args) -> int:
    import sys

    if args.darktable is not None:
        if args.raws:
            print("nnraw profile: give either FLATFIELD_RAWS or --darktable, not both", file=sys.stderr)
            return 2
        if not (args.maker and args.model):
            print("nnraw profile: --darktable needs --maker and --model", file=sys.stderr)
            return 2
        try:
            profile = darktable_profile(args.maker, args.model, args.iso, args.darktable)
        except (KeyError, ValueError) as exc:
            print(f"nnraw profile: {exc.args[0] if exc.args else exc}", file=sys.stderr)
            return 1
    else:
        if not args.raws:
            print("nnraw profile: no FLATFIELD_RAWS given (or use --darktable)", file=sys.stderr)
            return 2
        try:
            profile = fit_profile(args.raws, args.iso, block=args.block, pairs=args.pairs, max_mean=args.max_mean)
        except (OSError, ValueError) as exc:
            print(f"{exc}", file=sys.stderr)
            return 1
    profile.save(args.output)
    print(f"{args.output}: {profile.name}")
    for c, name in enumerate("RGB"):
        print(f"  {name}: a = {profile.a[c]:.4e}  b = {profile.b[c]:.4e}")
    return 0
