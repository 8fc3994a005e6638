"""Which domain should the learned path work in? The classic pre-demosaic, run in each candidate
encoding (nnraw.encoding.ENCODINGS: linear, srgb, sqrt, log), scored by the protocol of
nnraw.training.evaluate (held-out photos, three white balances, six noise levels, sRGB PSNR).

The pre-demosaic is the network's input and the learned residual's starting point: the domain in
which it is best is the domain in which the interpolation assumption (smooth colour differences)
holds best. White balance is applied first for every encoding except "linear (camera)", the seed's
unbalanced domain, measured for reference.

    PYTHONPATH=python python bench/encoding_domains.py [--images 8 --crop 192]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from nnraw.training import evaluate as ev
from nnraw.encoding import ENCODINGS, pre_demosaic
from nnraw.ops import edge_aware_demosaic


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sources", nargs="+", default=["wikipedia", "skimage"])
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--crop", type=int, default=192)
    p.add_argument("--levels", nargs="+", default=list(ev.LEVELS))
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    methods = ["linear (camera)"] + list(ENCODINGS)
    scores: dict[str, dict[str, list[float]]] = {m: {lv: [] for lv in args.levels} for m in methods}
    per_wb: dict[str, dict[str, list[float]]] = {m: {wb: [] for wb in ev.WB_CONDITIONS} for m in methods}
    n = 0
    for source in args.sources:
        for k, (_, scene) in enumerate(ev.scenes(source, args.images, args.crop)):
            n += 1
            for wb_name, wb in ev.WB_CONDITIONS.items():
                cam = ev.camera_rgb(scene, wb)
                truth = ev.render(cam, wb)
                for li, level in enumerate(args.levels):
                    noisy = ev.noisy_mosaic(cam, level, seed=1000 * k + li)
                    outs = {"linear (camera)": edge_aware_demosaic(noisy, "RGGB", torch.ones(3))[0]}
                    for enc in ENCODINGS:
                        outs[enc] = pre_demosaic(noisy, "RGGB", torch.tensor(wb), enc)[0]
                    for m, out in outs.items():
                        v = ev.psnr(ev.render(out, wb), truth)
                        scores[m][level].append(v)
                        per_wb[m][wb_name].append(v)
    print(f"pre-demosaic PSNR (dB, sRGB) by encoding: {n} crops of {args.crop} px from "
          f"{', '.join(args.sources)} x 3 white balances; {time.strftime('%Y-%m-%d', time.gmtime())}; "
          f"{time.perf_counter() - t0:.0f} s\n")
    print("| domain | " + " | ".join(lv.replace("iso", "ISO ") for lv in args.levels) + " | "
          + " | ".join(ev.WB_CONDITIONS) + " |")
    print("|---|" + "---:|" * (len(args.levels) + len(ev.WB_CONDITIONS)))
    for m in methods:
        print(f"| {m} | " + " | ".join(f"{np.mean(scores[m][lv]):.2f}" for lv in args.levels) + " | "
              + " | ".join(f"{np.mean(per_wb[m][wb]):.2f}" for wb in ev.WB_CONDITIONS) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
