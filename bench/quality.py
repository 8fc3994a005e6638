"""Image quality of nnraw against classical and learned demosaicers/denoisers, as photos arrive.

The protocol of :mod:`nnraw.training.evaluate`: crops of held-out photos (two sources the networks never
trained on), each under three camera white balances (neutral, daylight, tungsten) and six noise
levels (Pentax K-3 ISO 100 ... 6400, the NVIDIA paper's level), as RGGB mosaics with Poisson-Gaussian
noise (fixed seeds); every method's camera RGB x the gains, clipped, sRGB curve; PSNR against the
clean photo's rendering, 10 px border cropped, averaged over crops. All methods run in this one script.

Methods:
  Menon 2007               colour_demosaicing on the white-balanced mosaic
  LibRaw AAHD              rawpy on a Bayer DNG of the same mosaic (as-shot WB, raw colour)
  demosaicnet              Gharbi et al. 2016 pretrained Bayer model, in the sRGB domain and its GRBG
                           layout (the mosaic rendered to sRGB per site, read one column to the right)
  BM3D + Menon             the `bm3d` package per Bayer plane after a generalised Anscombe transform,
                           then Menon (at the heavy-noise levels only: it is slow)
  pre-demosaic (linear)    nnraw's edge-aware pre-demosaic in linear camera RGB (the seed's)
  pre-demosaic (encoded)   the same white balanced and sRGB-encoded: ``nnraw convert --model none``
  nnraw default            the shipped default network, run as ``nnraw convert`` runs it

    PYTHONPATH=python python bench/quality.py [--images 4 --crop 192 --models NAME...]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nnraw.training.evaluate import BORDER, LEVELS


def colour_demosaic(method: str, mosaic_wb: np.ndarray) -> torch.Tensor:
    """colour_demosaicing on the white-balanced mosaic -> white-balanced linear RGB [3, H, W]."""
    import colour_demosaicing as cd

    fn = {"bilinear": cd.demosaicing_CFA_Bayer_bilinear, "malvar": cd.demosaicing_CFA_Bayer_Malvar2004,
          "menon": cd.demosaicing_CFA_Bayer_Menon2007}[method]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = fn(mosaic_wb.astype(np.float64), "RGGB")
    return torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1).float()


def write_bayer_dng(path: Path, mosaic: np.ndarray, wb: np.ndarray) -> None:
    """A minimal RGGB Bayer DNG (uint16, black 0, white 65535, AsShotNeutral = 1 / wb)."""
    import tifffile

    raw = np.clip(np.round(mosaic * 65535), 0, 65535).astype(np.uint16)
    neutral = (1.0 / wb) / (1.0 / wb).max()
    rat = lambda vals, den=1_000_000: [int(round(v * den)) if i % 2 == 0 else den
                                       for v in vals for i in range(2)]
    srat = lambda vals: [x for v in vals for x in (int(round(v * 10000)), 10000)]
    tags = [
        (33421, "H", 2, (2, 2), True),                   # CFARepeatPatternDim
        (33422, "B", 4, (0, 1, 1, 2), True),             # CFAPattern RGGB
        (50706, "B", 4, (1, 4, 0, 0), True),             # DNGVersion
        (50708, "s", 0, "nnraw synthetic", True),        # UniqueCameraModel
        (50714, "H", 1, 0, True),                        # BlackLevel
        (50717, "H", 1, 65535, True),                    # WhiteLevel
        (50721, "2i", 9, srat([1, 0, 0, 0, 1, 0, 0, 0, 1]), True),   # ColorMatrix1 (identity)
        (50728, "2I", 3, rat(neutral), True),            # AsShotNeutral
        (50778, "H", 1, 21, True),                       # CalibrationIlluminant1 D65
    ]
    tifffile.imwrite(path, raw, photometric=32803, extratags=tags, metadata=None, software=False)


def libraw_aahd(mosaic: np.ndarray, wb: np.ndarray) -> torch.Tensor:
    """LibRaw AAHD (rawpy) on a DNG of the mosaic -> white-balanced linear RGB [3, H, W]."""
    import rawpy

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "mosaic.dng"
        write_bayer_dng(p, mosaic, wb)
        with rawpy.imread(str(p)) as raw:
            rgb = raw.postprocess(demosaic_algorithm=rawpy.DemosaicAlgorithm.AAHD, use_camera_wb=True,
                                  output_color=rawpy.ColorSpace.raw, gamma=(1, 1), no_auto_bright=True,
                                  output_bps=16, user_flip=0, highlight_mode=rawpy.HighlightMode.Clip)
    return torch.from_numpy(rgb.astype(np.float32) / 65535).permute(2, 0, 1)


_DEMOSAICNET = None


def demosaicnet_srgb(mosaic: torch.Tensor, wb: torch.Tensor) -> torch.Tensor:
    """demosaicnet's pretrained Bayer model in sRGB/GRBG; returns sRGB [3, H, W] (cols 0, W-1 copied)."""
    global _DEMOSAICNET
    import demosaicnet

    from nnraw.ops.demosaic import cfa_masks
    from nnraw.training.unprocess import linear_to_srgb

    if _DEMOSAICNET is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _DEMOSAICNET = demosaicnet.BayerDemosaick(pretrained=True).eval()
    h, w = mosaic.shape
    masks = cfa_masks("RGGB", h, w)
    gains = (masks * wb[:, None, None]).sum(0)
    srgb_mosaic = linear_to_srgb((mosaic * gains).clamp(0, 1))
    grbg = srgb_mosaic[:, 1:w - 1]                                   # one column right: GRBG
    pad = 48
    padded = F.pad(grbg[None, None], (pad, pad, pad, pad), mode="reflect")[0, 0]
    m3 = padded[None] * cfa_masks("GRBG", *padded.shape)
    with torch.no_grad():
        out = _DEMOSAICNET(m3[None])[0]
    oy, ox = (out.shape[-2] - (h)) // 2, (out.shape[-1] - (w - 2)) // 2
    out = out[:, oy:oy + h, ox:ox + w - 2]
    full = torch.cat([out[:, :, :1], out, out[:, :, -1:]], -1)
    return full.clamp(0, 1)


def bm3d_menon(noisy: torch.Tensor, wb, level: str) -> torch.Tensor:
    """BM3D per Bayer plane after the generalised Anscombe transform (Makitalo & Foi 2013), then
    Menon 2007 on the white-balanced mosaic -> camera RGB [3, H, W].

    With var = a x + b, z = x / a is Poisson plus Gaussian noise of std sqrt(b) / a; the GAT
    2 sqrt(z + 3/8 + b / a^2) makes its std ~1; BM3D denoises each of the four planes with that
    sigma (scaled to the plane's range); the closed-form approximation of the exact unbiased inverse
    takes it back.
    """
    import bm3d

    from nnraw.training.evaluate import level_profile

    prof = level_profile(level)
    m = noisy[0, 0].double().numpy()
    out = np.empty_like(m)
    colours = {(0, 0): 0, (0, 1): 1, (1, 0): 1, (1, 1): 2}            # RGGB
    for (dy, dx), c in colours.items():
        a, b = float(prof.a[c]), float(prof.b[c])
        z = m[dy::2, dx::2] / a
        s2 = b / a ** 2
        f = 2 * np.sqrt(np.maximum(z + 3 / 8 + s2, 0))
        lo, hi = f.min(), f.max()
        scale = max(hi - lo, 1e-6)
        d = bm3d.bm3d((f - lo) / scale, sigma_psd=1.0 / scale) * scale + lo
        d = np.maximum(d, 1e-3)
        inv = (0.25 * d ** 2 + 0.25 * math.sqrt(1.5) / d - 1.375 / d ** 2 + 0.625 * math.sqrt(1.5) / d ** 3
               - 0.125 - s2)
        out[dy::2, dx::2] = np.maximum(inv, 0) * a
    gains = np.tile(np.array([[wb[0], wb[1]], [wb[1], wb[2]]]), (m.shape[0] // 2, m.shape[1] // 2))
    rgb = colour_demosaic("menon", out * gains)
    return rgb / torch.tensor(wb, dtype=torch.float32).reshape(3, 1, 1)


def evaluate(sources: list[str], n_images: int, crop: int, levels: list[str], bm3d_levels: list[str],
             seed: int = 0, default: str = "default", extra_models: tuple[str, ...] = (),
             passes: tuple[int, ...] = ()) -> dict:
    """{source: {wb: {method: {level: mean PSNR}}}} and seconds per method (under key "_seconds")."""
    from nnraw.training import evaluate as ev
    from nnraw.encoding import site_gains
    from nnraw.models import load_model

    nets = {name: load_model(name) for name in (default, *extra_models)}
    scores: dict = {}
    seconds: dict[str, float] = {}

    def add(source, wb_name, method, level, value, dt):
        scores.setdefault(source, {}).setdefault(wb_name, {}).setdefault(method, {}).setdefault(level, []).append(value)
        seconds[method] = seconds.get(method, 0.0) + dt

    for source in sources:
        items = ev.scenes(source, n_images, crop)
        for k, (name, scene) in enumerate(items):
            for wb_name, wb in ev.WB_CONDITIONS.items():
                cam = ev.camera_rgb(scene, wb)
                truth = ev.render(cam, wb)
                wbt = torch.tensor(wb)
                for li, level in enumerate(levels):
                    noisy = ev.noisy_mosaic(cam, level, seed=seed * 100_003 + 1000 * k + li)
                    score = lambda out: ev.psnr(ev.render(out, wb), truth)  # noqa: E731
                    mosaic_wb = (noisy * site_gains(wbt, "RGGB", noisy))[0, 0].numpy()
                    t = time.perf_counter()
                    out = colour_demosaic("menon", mosaic_wb) / wbt.reshape(3, 1, 1)
                    add(source, wb_name, "Menon 2007", level, score(out), time.perf_counter() - t)
                    t = time.perf_counter()
                    out = libraw_aahd(noisy[0, 0].numpy(), np.asarray(wb)) / wbt.reshape(3, 1, 1)
                    add(source, wb_name, "LibRaw AAHD", level, score(out), time.perf_counter() - t)
                    t = time.perf_counter()
                    out = demosaicnet_srgb(noisy[0, 0], wbt)
                    add(source, wb_name, "demosaicnet", level, ev.psnr(out, truth), time.perf_counter() - t)
                    if level in bm3d_levels:
                        t = time.perf_counter()
                        out = bm3d_menon(noisy, wb, level)
                        add(source, wb_name, "BM3D + Menon", level, score(out), time.perf_counter() - t)
                    t = time.perf_counter()
                    out = ev.pre_demosaic(noisy, wb, "linear")
                    add(source, wb_name, "pre-demosaic (linear)", level, score(out), time.perf_counter() - t)
                    t = time.perf_counter()
                    pre = ev.pre_demosaic(noisy, wb, "srgb")
                    add(source, wb_name, "pre-demosaic (encoded)", level, score(pre), time.perf_counter() - t)
                    for net_name, net in nets.items():
                        t = time.perf_counter()
                        out = ev.network(net, pre, wb, level)
                        add(source, wb_name, f"nnraw {net_name}", level, score(out), time.perf_counter() - t)
                    for n in passes:                  # the default at other self-ensemble pass counts
                        t = time.perf_counter()
                        out = ev.network(nets[default], pre, wb, level, passes=n)
                        add(source, wb_name, f"nnraw {default}, {n} pass{'es' * (n > 1)}", level, score(out),
                            time.perf_counter() - t)
            print(f"{source}: image {k + 1}/{len(items)} done", file=sys.stderr, flush=True)
        scores.setdefault(source, {})["_crops"] = len(items)
    return mean_scores(scores, seconds)


def mean_scores(scores: dict, seconds: dict[str, float]) -> dict:
    """{source: {wb: {method: {level: [psnr...]}}, "_crops": n}} -> the same with means, plus "_seconds"."""
    means = {src: {wb: (v if wb == "_crops" else {m: {lv: float(np.mean(x)) for lv, x in d.items()} for m, d in v.items()})
                   for wb, v in per.items()} for src, per in scores.items()}
    means["_seconds"] = seconds
    return means


def markdown_tables(means: dict, levels: list[str]) -> str:
    """One table per (source, white balance): methods x levels, PSNR in dB; then, per level, the
    default's margins over the acceptance references (worst cell over sources and white balances)."""
    out = []
    for source, per in means.items():
        if source.startswith("_"):
            continue
        for wb, table in per.items():
            if wb.startswith("_"):
                continue
            out.append(f"**{source}, {wb} white balance** ({per['_crops']} crops)\n")
            out.append("| method | " + " | ".join(lv.replace("iso", "ISO ") for lv in levels) + " |")
            out.append("|---|" + "---:|" * len(levels))
            for m, d in table.items():
                out.append(f"| {m} | " + " | ".join(f"{d[lv]:.2f}" if lv in d else "-" for lv in levels) + " |")
            out.append("")
    cells = [(src, wb, t) for src, per in means.items() if not src.startswith("_")
             for wb, t in per.items() if not wb.startswith("_")]
    if cells and "nnraw default" in cells[0][2]:
        out.append("**nnraw default minus ..., worst cell over sources and white balances (dB)**\n")
        out.append("| reference | " + " | ".join(lv.replace("iso", "ISO ") for lv in levels) + " |")
        out.append("|---|" + "---:|" * len(levels))
        for ref in ("pre-demosaic (encoded)", "demosaicnet", "BM3D + Menon", "Menon 2007", "LibRaw AAHD"):
            row = []
            for lv in levels:
                diffs = [t["nnraw default"][lv] - t[ref][lv] for _, _, t in cells if lv in t.get(ref, {})]
                row.append(f"{min(diffs):+.2f}" if diffs else "-")
            out.append(f"| {ref} | " + " | ".join(row) + " |")
        variants = [m for m in cells[0][2] if m.startswith("nnraw ") and m != "nnraw default"]
        if variants:
            out.append("\n**other nnraw networks and settings minus demosaicnet, worst cell (dB)**\n")
            out.append("| method | " + " | ".join(lv.replace("iso", "ISO ") for lv in levels) + " |")
            out.append("|---|" + "---:|" * len(levels))
            for m in variants:
                row = [f"{min(t[m][lv] - t['demosaicnet'][lv] for _, _, t in cells):+.2f}" for lv in levels]
                out.append(f"| {m} | " + " | ".join(row) + " |")
    return "\n".join(out)


def speed(tile: int = 1024, tiles: int = 2, threads: int = 2) -> str:
    """Network-only time of the default model and demosaicnet on ``tiles`` tiles of ``tile`` px,
    side by side in one run, extrapolated to a 24 MP raw (6000 x 4000)."""
    import demosaicnet

    from nnraw.models import load_model
    from nnraw.models.bayer_joint import bind_pattern

    torch.set_num_threads(threads)
    lines = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dnet = demosaicnet.BayerDemosaick(pretrained=True).eval()
    model = bind_pattern(load_model("default"), "RGGB")    # the joint default needs the CFA pattern
    h = model.halo
    x = torch.rand(1, 3, tile + 2 * h, tile + 2 * h)
    m3 = torch.rand(1, 3, tile + 2 * 48, tile + 2 * 48)
    results = {}
    for name, fn in (("default", lambda: model(x, x * 0.05)), ("demosaicnet", lambda: dnet(m3))):
        with torch.inference_mode():
            fn()
            t = time.perf_counter()
            for _ in range(tiles):
                fn()
            dt = (time.perf_counter() - t) / (tiles * tile * tile / 1e6)
        results[name] = dt
        lines.append(f"{name}: {dt:.2f} s/MP -> {24 * dt:.1f} s for 24 MP")
    lines.append(f"default / demosaicnet time ratio: {results['default'] / results['demosaicnet']:.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sources", nargs="+", default=["wikipedia", "skimage"], help="held-out image sources")
    p.add_argument("--images", type=int, default=4, help="crops per source (one per image, spread)")
    p.add_argument("--crop", type=int, default=192, help="crop size (even)")
    p.add_argument("--levels", nargs="+", default=list(LEVELS))
    p.add_argument("--bm3d-levels", nargs="*", default=["iso3200", "iso6400", "nvidia"],
                   help="levels at which BM3D + Menon runs (slow: ~1 s per 100x100 plane)")
    p.add_argument("--models", nargs="*", default=[], help="other shipped networks to score beside the default")
    p.add_argument("--passes", nargs="*", type=int, default=[],
                   help="also score the default with these self-ensemble pass counts (1, 2, 4, 8)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--speed", action="store_true", help="only time default vs demosaicnet (24 MP extrapolated)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.speed:
        print(speed(threads=args.threads))
        return 0
    t = time.perf_counter()
    means = evaluate(args.sources, args.images, args.crop, args.levels, args.bm3d_levels,
                     extra_models=tuple(args.models), passes=tuple(args.passes))
    seconds = means.pop("_seconds")
    print(f"PSNR (dB) in sRGB, {BORDER} px border cropped; crops of {args.crop} px from held-out sources "
          f"{', '.join(args.sources)}; {time.strftime('%Y-%m-%d', time.gmtime())}; "
          f"{time.perf_counter() - t:.0f} s\n")
    print(markdown_tables(means, args.levels))
    print("\nseconds per method (all crops, white balances and levels): " +
          ", ".join(f"{m} {s:.1f}" for m, s in seconds.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
