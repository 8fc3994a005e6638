"""The README's before/after figure: `nnraw convert --strength 0 / 1 / 2` on a crop of the real Canon
EOS 550D raw in ../shared/data/raw (the colour chart's grey patches, where noise shows), rendered by
`--preview` and brightened x2.2 for the web, side by side with labels.

    PYTHONPATH=python python bench/figures.py        # -> docs/img/strength-0-1-2.png
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
RAW = ROOT.parent / "shared" / "data" / "raw" / "tinydng_colorchart_Canon550D_MagicLantern.dng"
BOX = (650, 790, 935, 1000)        # left, top, right, bottom in the oriented preview (1734 x 1156)
BRIGHTEN = 2.2


def main() -> int:
    from nnraw.convert import convert_file

    if not RAW.exists():
        print(f"bench/figures.py: {RAW} not found (../shared/data beside the repository)", file=sys.stderr)
        return 1
    panels = []
    with tempfile.TemporaryDirectory() as d:
        for s, label in ((0.0, "strength 0 (same as --model none)"), (1.0, "strength 1 (default)"), (2.0, "strength 2")):
            png = Path(d) / f"s{s}.png"
            result = convert_file(RAW, Path(d) / f"s{s}.dng", strength=s, preview=png, device="cpu")
            if not result.ok:
                print(result.error, file=sys.stderr)
                return 1
            crop = np.asarray(Image.open(png).convert("RGB").crop(BOX), dtype=np.float32)
            img = Image.fromarray(np.clip(crop * BRIGHTEN, 0, 255).astype(np.uint8))
            canvas = Image.new("RGB", (img.width, img.height + 20), "white")
            canvas.paste(img, (0, 20))
            ImageDraw.Draw(canvas).text((2, 4), label, fill="black")
            panels.append(canvas)
    gap = 6
    out = Image.new("RGB", (sum(p.width for p in panels) + gap * (len(panels) - 1), panels[0].height), "white")
    x = 0
    for p in panels:
        out.paste(p, (x, 0))
        x += p.width + gap
    target = ROOT / "docs" / "img" / "strength-0-1-2.png"
    out.save(target, optimize=True)
    print(f"wrote {target} ({target.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
