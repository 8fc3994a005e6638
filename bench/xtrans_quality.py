"""X-Trans image quality (issue #18), nnraw.training.evaluate's protocol with an X-Trans mosaic.

Held-out photos, three camera white balances, six noise levels, as bench/quality.py, but sampled
through Fujifilm's 6x6 layout (in demosaicnet's own phase, so that its published model runs as
trained; nnraw's networks are told the pattern and map any phase onto it, tests/test_xtrans_joint.py).
The noise is Poisson-Gaussian per pixel and channel before sampling (nnraw.training.evaluate.noisy_mosaic:
the same statistics as noise per site after it).

Methods:
  bilinear (per channel)   nnraw.cfa.bilinear_demosaic in linear camera RGB: the baseline of #18
  pre-demosaic (encoded)   `nnraw convert --model none` on an X-Trans raw (nnraw.cfa's colour
                           difference demosaic, white balanced and sRGB-encoded)
  demosaicnet              Gharbi et al. 2016's published X-Trans model (noise-free training), in the
                           white-balanced sRGB domain it was trained in
  nnraw default            what `nnraw convert` runs on an X-Trans raw (the shipped X-Trans network)

    PYTHONPATH=python python bench/xtrans_quality.py [--images 2 --crop 128]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import markdown_tables, mean_scores  # noqa: E402  (bench/quality.py: the same tables)

from nnraw.training.evaluate import LEVELS  # noqa: E402

_DEMOSAICNET = None


def demosaicnet_pattern() -> str:
    """demosaicnet's X-Trans cell (demosaicnet.mosaic.xtrans_cell) as nnraw.cfa letters."""
    from demosaicnet.mosaic import xtrans_cell

    cell = np.asarray(xtrans_cell())              # [3, 6, 6] one-hot R, G, B
    return "".join("RGB"[int(c)] for c in cell.argmax(0).reshape(-1))


def demosaicnet_xtrans(mosaic: torch.Tensor, wb: torch.Tensor, pattern: str) -> torch.Tensor:
    """The published X-Trans model on the white-balanced, sRGB-encoded mosaic -> sRGB [3, H, W]."""
    global _DEMOSAICNET
    import demosaicnet

    from nnraw import cfa
    from nnraw.training.unprocess import linear_to_srgb

    if _DEMOSAICNET is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _DEMOSAICNET = demosaicnet.XTransDemosaick(pretrained=True).eval()
    h, w = mosaic.shape[-2:]
    m = torch.from_numpy(cfa.masks(pattern, h, w)).to(mosaic)
    gains = (m * wb[:, None, None]).sum(0)
    enc = linear_to_srgb((mosaic[0, 0] * gains).clamp(0, 1))
    pad = 12 * 6                                   # a multiple of 6 keeps the phase; the net needs 12
    padded = F.pad(enc[None, None], (pad, pad, pad, pad), mode="reflect")[0, 0]
    m3 = padded[None] * torch.from_numpy(cfa.masks(pattern, *padded.shape)).to(padded)
    with torch.no_grad():
        out = _DEMOSAICNET(m3[None])[0]
    oy, ox = (out.shape[-2] - h) // 2, (out.shape[-1] - w) // 2
    return out[:, oy:oy + h, ox:ox + w].clamp(0, 1)


def evaluate(sources: list[str], n_images: int, crop: int, levels: list[str], model: str | None,
             passes: tuple[int, ...] = ()) -> dict:
    from nnraw import cfa
    from nnraw.training import evaluate as ev

    pattern = demosaicnet_pattern()
    assert cfa.is_xtrans(pattern), pattern
    net = None
    if model:
        from nnraw.models import load_model

        net = load_model(model)
    scores: dict = {}
    seconds: dict[str, float] = {}

    def add(source, wb_name, method, level, value, dt):
        scores.setdefault(source, {}).setdefault(wb_name, {}).setdefault(method, {}).setdefault(level, []).append(value)
        seconds[method] = seconds.get(method, 0.0) + dt

    for source in sources:
        items = ev.scenes(source, n_images, crop)
        for k, (_, scene) in enumerate(items):
            for wb_name, wb in ev.WB_CONDITIONS.items():
                cam = ev.camera_rgb(scene, wb)
                truth = ev.render(cam, wb)
                wbt = torch.tensor(wb)
                for li, level in enumerate(levels):
                    noisy = ev.noisy_mosaic(cam, level, 1000 * k + li, pattern)
                    score = lambda out: ev.psnr(ev.render(out, wb), truth)  # noqa: E731
                    t = time.perf_counter()
                    add(source, wb_name, "bilinear (per channel)", level,
                        score(cfa.bilinear_demosaic(noisy, pattern)[0]), time.perf_counter() - t)
                    t = time.perf_counter()
                    pre = ev.pre_demosaic(noisy, wb, "srgb", pattern=pattern)
                    add(source, wb_name, "pre-demosaic (encoded)", level, score(pre), time.perf_counter() - t)
                    t = time.perf_counter()
                    add(source, wb_name, "demosaicnet", level, ev.psnr(demosaicnet_xtrans(noisy, wbt, pattern), truth),
                        time.perf_counter() - t)
                    if net is not None:
                        t = time.perf_counter()
                        out = ev.network(net, pre, wb, level, pattern=pattern)
                        add(source, wb_name, "nnraw default", level, score(out), time.perf_counter() - t)
                        for n in passes:      # other self-ensemble pass counts
                            t = time.perf_counter()
                            out = ev.network(net, pre, wb, level, pattern=pattern, passes=n)
                            add(source, wb_name, f"nnraw default, {n} pass{'es' * (n > 1)}", level, score(out),
                                time.perf_counter() - t)
            print(f"{source}: image {k + 1}/{len(items)} done", file=sys.stderr, flush=True)
        scores.setdefault(source, {})["_crops"] = len(items)
    return mean_scores(scores, seconds)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sources", nargs="+", default=["wikipedia", "skimage"])
    p.add_argument("--images", type=int, default=2, help="crops per source")
    p.add_argument("--crop", type=int, default=128, help="crop size (a multiple of 6 is not needed)")
    p.add_argument("--levels", nargs="+", default=list(LEVELS))
    p.add_argument("--model", default="xtrans", help="the shipped X-Trans network ('' to skip it)")
    p.add_argument("--passes", nargs="*", type=int, default=[],
                   help="also score the network with these self-ensemble pass counts (1, 2, 4, 8)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t = time.perf_counter()
    means = evaluate(args.sources, args.images, args.crop, args.levels, args.model or None, tuple(args.passes))
    print(f"PSNR (dB) in sRGB, 10 px border cropped; X-Trans mosaics ({demosaicnet_pattern()[:6]}... demosaicnet's "
          f"phase) of {args.crop} px crops from held-out {', '.join(args.sources)}; "
          f"{time.strftime('%Y-%m-%d', time.gmtime())}; {time.perf_counter() - t:.0f} s\n")
    print(markdown_tables(means, args.levels))
    cells = [t for src, per in means.items() if not src.startswith("_") for wb, t in per.items() if not wb.startswith("_")]
    worst = {lv: min(t["pre-demosaic (encoded)"][lv] - t["bilinear (per channel)"][lv] for t in cells) for lv in args.levels}
    print("\n`--model none` minus per-channel bilinear, worst cell (dB): "
          + ", ".join(f"{lv.replace('iso', 'ISO ')} {v:+.2f}" for lv, v in worst.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
