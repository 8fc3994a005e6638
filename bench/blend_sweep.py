"""Sweep a shipped network's noise blend (nnraw.models.noise_blend): PSNR at alpha 0 ... 1 per level,
on held-out crops that bench/quality.py does not score (wikipedia's images between its picks at their
most detailed position, skimage's at their centre). How the default's anchors were chosen
(docs/MODELS.md, "Noise blend").

    .venv/bin/python bench/blend_sweep.py [--model default] [--weights-dir DIR] [--images 3] [--levels iso100 ...]

Prints, per level, source and white balance, each alpha's PSNR minus alpha 0's (demosaicnet's
published weights), and the largest channel-mean shift (%) of the crops.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time

import numpy as np
import torch

from nnraw.models import load_model
from nnraw.models import noise_blend as nb
from nnraw.training import evaluate as ev

ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)


def selection_crops(source: str, n: int, crop: int = 128) -> list[torch.Tensor]:
    files = ev.source_files(source)
    if source == "wikipedia":
        idx = [int(k) + 3 for k in np.linspace(0, len(files) - 5, n).round()]
        return [ev.load_scene(files[i], crop, "detail") for i in idx]
    return [ev.load_scene(f, crop, "center") for f in files[:n]]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="default", help="a shipped model with a noise blend")
    p.add_argument("--weights-dir", default=None, help="load the model from here (an export not yet shipped; "
                   "`nnraw train ... --export-only --weights-dir DIR`), not from the installed package")
    p.add_argument("--images", type=int, default=3, help="crops per source")
    p.add_argument("--levels", nargs="+", default=list(ev.LEVELS))
    p.add_argument("--alphas", nargs="+", type=float, default=list(ALPHAS),
                   help="points of the blend's path (0 = start, 1 = fine-tuned; a via point sits at its own alpha)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    net = load_model(args.model, weights_dir=args.weights_dir)
    if nb.blend_of(net) is None:
        raise SystemExit(f"bench/blend_sweep.py: {args.model} has no noise blend")
    pattern = "RGGB"
    if "xtrans" in args.model:
        from xtrans_quality import demosaicnet_pattern

        pattern = demosaicnet_pattern()
    fixed = {}                  # one plain copy per alpha: nnraw.infer would re-blend a blended model per level
    alphas = tuple(args.alphas)
    for a in alphas:
        nb.set_alpha(net, a)
        fixed[a] = copy.deepcopy(net)
        del fixed[a]._noise_blend
    res: dict = {}
    t0 = time.time()
    for source in ("wikipedia", "skimage"):
        for k, scene in enumerate(selection_crops(source, args.images)):
            for wbn, wb in ev.WB_CONDITIONS.items():
                cam = ev.camera_rgb(scene, wb)
                truth = ev.render(cam, wb)
                for li, level in enumerate(args.levels):
                    noisy = ev.noisy_mosaic(cam, level, seed=7 + 1000 * k + li, pattern=pattern)
                    pre = ev.pre_demosaic(noisy, wb, "srgb", pattern=pattern)
                    for a in alphas:
                        out = ev.network(fixed[a], pre, wb, level, pattern=pattern)
                        shift = float(ev.channel_mean_shift(out, cam).abs().max())
                        res.setdefault((source, wbn, level, a), []).append((ev.psnr(ev.render(out, wb), truth), shift))
            print(f"{source}: crop {k + 1} done ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    print("alpha:", " ".join(str(a) for a in alphas))
    for level in args.levels:
        for source in ("wikipedia", "skimage"):
            for wbn in ev.WB_CONDITIONS:
                v = [np.mean([r[0] for r in res[(source, wbn, level, a)]]) for a in alphas]
                c = [np.max([r[1] for r in res[(source, wbn, level, a)]]) for a in alphas]
                print(f"{level:8s} {source:9s} {wbn:8s} " + " ".join(f"{x - v[0]:+.2f}" for x in v)
                      + f"   (alpha 0: {v[0]:.2f} dB)  cast % " + " ".join(f"{100 * x:.2f}" for x in c))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
