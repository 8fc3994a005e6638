"""Image quality of nnraw's networks against classical and learned demosaicers, on synthetic raws.

Ground truth: fixed crops of the held-out validation split of a dataset built by
``nnraw dataset build`` (never trained on): clean linear camera RGB plus its as-shot white balance.
Each crop is Bayer-sampled (RGGB) and given Poisson-Gaussian noise (fixed seed) at the Pentax K-3
reference levels (ISO 100, 400, 1600, 3200, 6400) and at the NVIDIA paper's level.

Rendering to sRGB, the same for every method: camera RGB x as-shot white-balance gains, clipped to
[0, 1], sRGB transfer curve (no colour matrix, no tone curve). PSNR in that sRGB, 10 px border
cropped, averaged over crops.

Methods:
  bilinear, Malvar 2004, Menon 2007  colour_demosaicing on the white-balanced mosaic
  LibRaw AHD                         rawpy on a Bayer DNG of the same mosaic (as-shot WB, raw colour)
  demosaicnet                        Gharbi et al. 2016 pretrained Bayer model, in the sRGB domain and
                                     its GRBG layout: the mosaic is rendered to sRGB per site and read
                                     one column to the right (RGGB -> GRBG); reflect-padded by 48 px
  pre-demosaic                       nnraw.ops.edge_aware_demosaic (the networks' input)
  reference-isoN                     the seed's per-ISO network at its own ISO (where shipped)
  default                            nnraw's noise-conditioned network (sigma from the noisy input)

The networks see their input reflect-padded by their halo (even: CFA phase kept).

    PYTHONPATH=python python bench/quality.py --data /work/cache/dataset [--images 12 --crop 256]
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

LEVELS = ["iso100", "iso400", "iso1600", "iso3200", "iso6400", "nvidia"]
BORDER = 10


def srgb_render(cam: torch.Tensor, wb: torch.Tensor) -> torch.Tensor:
    """Tensor[3, H, W] camera RGB -> sRGB: x wb, clip, sRGB curve (what nnraw's validation scores too)."""
    from nnraw.train import render_srgb

    return render_srgb(cam, wb)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a[..., BORDER:-BORDER, BORDER:-BORDER], b[..., BORDER:-BORDER, BORDER:-BORDER]
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    return 10 * math.log10(1 / max(mse, 1e-12))


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


def libraw_ahd(mosaic: np.ndarray, wb: np.ndarray) -> torch.Tensor:
    """LibRaw AHD (rawpy) on a DNG of the mosaic -> white-balanced linear RGB [3, H, W]."""
    import rawpy

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "mosaic.dng"
        write_bayer_dng(p, mosaic, wb)
        with rawpy.imread(str(p)) as raw:
            rgb = raw.postprocess(demosaic_algorithm=rawpy.DemosaicAlgorithm.AHD, use_camera_wb=True,
                                  output_color=rawpy.ColorSpace.raw, gamma=(1, 1), no_auto_bright=True,
                                  output_bps=16, user_flip=0, highlight_mode=rawpy.HighlightMode.Clip)
    return torch.from_numpy(rgb.astype(np.float32) / 65535).permute(2, 0, 1)


_DEMOSAICNET = None


def demosaicnet_srgb(mosaic: torch.Tensor, wb: torch.Tensor) -> torch.Tensor:
    """demosaicnet's pretrained Bayer model in sRGB/GRBG; returns sRGB [3, H, W] (cols 0, W-1 copied)."""
    global _DEMOSAICNET
    import demosaicnet

    from nnraw.ops.demosaic import cfa_masks
    from nnraw.unprocess import linear_to_srgb

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


def run_network(model, rgb: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Whole-image forward with reflect padding by the halo: [3, H, W] -> [3, H, W]."""
    h = model.halo
    x = F.pad(rgb[None], (h, h, h, h), mode="reflect")
    s = F.pad(sigma[None], (h, h, h, h), mode="reflect")
    with torch.no_grad():
        return model(x, s if model.noise_conditioned else None)[0].clamp(0, 1)


def evaluate(data_dir: str, n_images: int, crop: int, levels: list[str], seed: int = 0,
             dataset_factory=None) -> tuple[dict, dict]:
    from nnraw.models import available_models, load_model
    from nnraw.noise import add_noise, sigma_map
    from nnraw.ops import edge_aware_demosaic
    from nnraw.ops.demosaic import cfa_masks
    from nnraw.train import level_profile

    if dataset_factory is None:
        from nnraw.dataset import CleanCropDataset

        ds = CleanCropDataset(data_dir, "val", crop)
    else:
        ds = dataset_factory("val", crop)
    n = min(n_images, len(ds))
    if n == 0:
        raise SystemExit(f"bench/quality.py: no validation crops of {crop} px in {data_dir}")
    shipped = available_models()
    default = load_model("default") if "default" in shipped else None
    scores: dict[str, dict[str, list[float]]] = {}
    seconds: dict[str, float] = {}

    def add(method: str, level: str, value: float, dt: float) -> None:
        scores.setdefault(method, {}).setdefault(level, []).append(value)
        seconds[method] = seconds.get(method, 0.0) + dt

    picks = [int(k) for k in np.linspace(0, len(ds) - 1, n).round()]    # spread over the split's images
    for i, k in enumerate(picks):
        item = ds[k]
        clean, wb = item["clean"].float(), torch.as_tensor(item["wb"]).float()
        truth = srgb_render(clean, wb)
        masks = cfa_masks("RGGB", *clean.shape[-2:])
        mosaic_clean = (clean * masks).sum(0, keepdim=True)[None]
        for li, level in enumerate(levels):
            prof = level_profile(level)
            g = torch.Generator().manual_seed(seed * 100_003 + i * 101 + li)
            noisy = add_noise(mosaic_clean, prof, generator=g, pattern="RGGB")[0, 0]
            gains = (masks * wb[:, None, None]).sum(0)
            mosaic_wb = (noisy * gains).numpy()
            for method in ("bilinear", "malvar", "menon"):
                t = time.perf_counter()
                out = colour_demosaic(method, mosaic_wb)
                add(method, level, psnr(srgb_render(out, torch.ones(3)), truth), time.perf_counter() - t)
            t = time.perf_counter()
            out = libraw_ahd(noisy.numpy(), wb.numpy())
            add("libraw-ahd", level, psnr(srgb_render(out, torch.ones(3)), truth), time.perf_counter() - t)
            t = time.perf_counter()
            out = demosaicnet_srgb(noisy, wb)
            add("demosaicnet", level, psnr(out, truth), time.perf_counter() - t)
            t = time.perf_counter()
            pre = edge_aware_demosaic(noisy[None, None].contiguous(), "RGGB", wb.contiguous())[0]
            add("pre-demosaic", level, psnr(srgb_render(pre, wb), truth), time.perf_counter() - t)
            a, b = prof.tensors()
            sigma = sigma_map(pre[None], a[None], b[None])[0]
            ref_name = f"reference-{level}"
            if level.startswith("iso") and ref_name in shipped:
                t = time.perf_counter()
                out = run_network(load_model(ref_name), pre, sigma)
                add("reference (own ISO)", level, psnr(srgb_render(out, wb), truth), time.perf_counter() - t)
            if default is not None:
                t = time.perf_counter()
                out = run_network(default, pre, sigma)
                add("default", level, psnr(srgb_render(out, wb), truth), time.perf_counter() - t)
        print(f"image {i + 1}/{n} done", file=sys.stderr, flush=True)
    means = {m: {lv: float(np.mean(v)) for lv, v in d.items()} for m, d in scores.items()}
    seconds["crops"] = n
    return means, seconds


def markdown_table(means: dict, levels: list[str]) -> str:
    head = "| method | " + " | ".join(lv.replace("iso", "ISO ") for lv in levels) + " |"
    sep = "|---|" + "---:|" * len(levels)
    rows = [head, sep]
    for m, d in means.items():
        rows.append(f"| {m} | " + " | ".join(f"{d[lv]:.2f}" if lv in d else "-" for lv in levels) + " |")
    return "\n".join(rows)


def speed(tile: int = 1024, tiles: int = 2, threads: int = 2) -> str:
    """Network-only time of the default model and demosaicnet on ``tiles`` tiles of ``tile`` px,
    side by side in one run, extrapolated to a 24 MP raw (6000 x 4000)."""
    import demosaicnet

    from nnraw.models import load_model

    torch.set_num_threads(threads)
    lines = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dnet = demosaicnet.BayerDemosaick(pretrained=True).eval()
    model = load_model("default")
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


def main(argv: list[str] | None = None, dataset_factory=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="/work/cache/dataset", help="dataset folder (nnraw dataset build)")
    p.add_argument("--images", type=int, default=12, help="validation crops to use")
    p.add_argument("--crop", type=int, default=256, help="crop size (even)")
    p.add_argument("--levels", nargs="+", default=LEVELS)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--speed", action="store_true", help="only time default vs demosaicnet (24 MP extrapolated)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.speed:
        print(speed(threads=args.threads))
        return 0
    t = time.perf_counter()
    means, seconds = evaluate(args.data, args.images, args.crop, args.levels, dataset_factory=dataset_factory)
    n = seconds.pop("crops")
    print(f"PSNR (dB) in sRGB, {BORDER} px border cropped; {n} validation crops of {args.crop} px "
          f"(of {args.images} asked for); "
          f"{time.strftime('%Y-%m-%d', time.gmtime())}; {time.perf_counter() - t:.0f} s\n")
    print(markdown_table(means, args.levels))
    print("\nseconds per method (all crops and levels): " +
          ", ".join(f"{m} {s:.1f}" for m, s in seconds.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
