"""X-Trans classical demosaic vs per-channel bilinear on X-Trans-mosaicked photos (issue #18).

A quick noise-free measurement, NOT nnraw.training.evaluate's full protocol (no camera, no noise
levels): each photo's sRGB-encoded values (the encoded domain the pre-demosaic runs in) are sampled
through the X-Trans layout at phase (0, 0) and demosaiced; PSNR over the image less an 8-pixel border,
mean over the photos.

    .venv/bin/python bench/xtrans_demosaic.py [N_PHOTOS]
"""

import glob
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
from nnraw import cfa  # noqa: E402


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    root = Path(__file__).resolve().parents[2] / "shared" / "data" / "train" / "bsds432"
    files = sorted(glob.glob(str(root / "*.jpg")))[-n:]  # the last N by name
    methods = {
        "bilinear (per channel, 3x3)": lambda x: cfa.bilinear_demosaic(x, cfa.XTRANS),
        "colour difference (nnraw.cfa, r=1/2)": lambda x: cfa.colour_difference_demosaic(x, cfa.XTRANS),
    }
    scores = {k: [] for k in methods}
    for f in files:
        im = np.asarray(Image.open(f).convert("RGB"), np.float32) / 255.0
        cmap = cfa.colour_map(cfa.XTRANS, *im.shape[:2])
        x = torch.from_numpy(np.take_along_axis(im, cmap[..., None], 2)[..., 0].copy())[None, None]
        for k, fn in methods.items():
            out = fn(x)[0].permute(1, 2, 0).numpy()[8:-8, 8:-8]
            scores[k].append(-10 * np.log10(np.mean((out - im[8:-8, 8:-8]) ** 2)))
    print(f"{len(files)} photos from {root.relative_to(root.parents[2])}, X-Trans phase (0, 0), noise-free")
    for k, v in scores.items():
        print(f"| {k} | {np.mean(v):.2f} dB |")


if __name__ == "__main__":
    main()
