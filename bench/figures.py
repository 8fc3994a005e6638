"""The docs' before/after figures, from the real raws in ../shared/data/raw, rendered by `--preview`:

- docs/img/strength-0-1-2.png: `nnraw convert --strength 0 / 1 / 2` on a crop of the Canon EOS 550D raw
  (the colour chart's grey patches, where noise shows), brightened x2.2 for the web;
- docs/img/before-after-canon.png and before-after-kodak.png: `--model none` (the classic pre-demosaic,
  the network's input) beside the default network, on the Canon and on the Kodak DC50 raw.

    PYTHONPATH=python python bench/figures.py        # -> the three PNGs
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
RAW_DIR = ROOT.parent / "shared" / "data" / "raw"
RAW = RAW_DIR / "tinydng_colorchart_Canon550D_MagicLantern.dng"
BOX = (650, 790, 935, 1000)        # left, top, right, bottom in the oriented preview (1734 x 1156)
BRIGHTEN = 2.2
# (raw, crop box in its preview, brighten, output name): the before/after pairs
PAIRS = ((RAW, (380, 430, 700, 670), BRIGHTEN, "before-after-canon.png"),
         (RAW_DIR / "rawpy_RAW_KODAK_DC50.KDC", (200, 120, 520, 360), 1.0, "before-after-kodak.png"))


def _panel(raw: Path, d: str, box, brighten: float, label: str, **convert) -> Image.Image:
    from nnraw.convert import convert_file

    png = Path(tempfile.mkdtemp(dir=d)) / "preview.png"       # a fresh folder per panel
    result = convert_file(raw, png.with_suffix(".dng"), preview=png, device="cpu", **convert)
    if not result.ok:
        raise SystemExit(f"bench/figures.py: {result.error}")
    crop = np.asarray(Image.open(png).convert("RGB").crop(box), dtype=np.float32)
    img = Image.fromarray(np.clip(crop * brighten, 0, 255).astype(np.uint8))
    canvas = Image.new("RGB", (img.width, img.height + 20), "white")
    canvas.paste(img, (0, 20))
    ImageDraw.Draw(canvas).text((2, 4), label, fill="black")
    return canvas


def _save(panels: list[Image.Image], name: str) -> None:
    gap = 6
    out = Image.new("RGB", (sum(p.width for p in panels) + gap * (len(panels) - 1), panels[0].height), "white")
    x = 0
    for p in panels:
        out.paste(p, (x, 0))
        x += p.width + gap
    target = ROOT / "docs" / "img" / name
    out.save(target, optimize=True)
    print(f"wrote {target} ({target.stat().st_size // 1024} KB)")


def main() -> int:
    missing = [p for p in (RAW, *(r for r, *_ in PAIRS)) if not p.exists()]
    if missing:
        print(f"bench/figures.py: {missing[0]} not found (../shared/data beside the repository)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as d:
        _save([_panel(RAW, d, BOX, BRIGHTEN, label, strength=s)
               for s, label in ((0.0, "strength 0 (same as --model none)"), (1.0, "strength 1 (default)"),
                                (2.0, "strength 2"))], "strength-0-1-2.png")
        for raw, box, brighten, name in PAIRS:
            _save([_panel(raw, d, box, brighten, "--model none (classic demosaic, the input)", model="none"),
                   _panel(raw, d, box, brighten, "default network, strength 1")], name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
