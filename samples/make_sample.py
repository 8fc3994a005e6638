"""Make samples/canon550d_colorchart_crop.dng: a 768x512 crop around the ColorChecker of the Canon EOS
550D Magic Lantern DNG from syoyo/tinydng (see ATTRIBUTION.md), written as an uncompressed 16-bit
Bayer CFA DNG with the original's camera and colour tags.

    python samples/make_sample.py [SOURCE.dng] [OUTPUT.dng]

The defaults read ../shared/data/raw/tinydng_colorchart_Canon550D_MagicLantern.dng beside the repository.
The crop origin (within the original's ActiveArea) is even in both directions, so the CFA stays RGGB.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import rawpy
import tifffile

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO.parent / "shared" / "data" / "raw" / "tinydng_colorchart_Canon550D_MagicLantern.dng"
OUTPUT = REPO / "samples" / "canon550d_colorchart_crop.dng"
TOP, LEFT, HEIGHT, WIDTH = 520, 608, 512, 768   # in the visible (active) area of the original

# Tags copied as they are: (code, TIFF type) — camera identity, CFA layout, levels and colour.
COPIED = {
    271: 2, 272: 2, 274: 3, 33421: 3, 33422: 1, 50706: 1, 50707: 1, 50708: 2, 50714: 4, 50717: 4,
    50721: 10, 50727: 5, 50728: 5, 50731: 5, 50732: 5, 50734: 5,
}


def main(source: Path = SOURCE, output: Path = OUTPUT) -> None:
    with rawpy.imread(str(source)) as raw:
        stored = raw.raw_image.copy()            # the whole stored image, 14-bit values unpacked
        top0, left0 = raw.sizes.top_margin, raw.sizes.left_margin
    if (top0 + TOP) % 2 or (left0 + LEFT) % 2:
        raise SystemExit("crop origin must be even so that the CFA pattern stays RGGB")
    crop = np.ascontiguousarray(stored[top0 + TOP: top0 + TOP + HEIGHT, left0 + LEFT: left0 + LEFT + WIDTH])
    with tifffile.TiffFile(source) as tif:
        tags = tif.pages[0].tags
        extratags = []
        for code, typ in COPIED.items():
            if code not in tags:
                continue
            tag = tags[code]
            value = tag.value
            if typ in (5, 10):                   # rationals: tifffile gives (num, den) pairs
                value = [int(v) for v in np.asarray(value).reshape(-1)]
                count = len(value) // 2
            elif typ == 1:
                value = value if isinstance(value, bytes) else bytes(np.asarray(value, dtype=np.uint8).reshape(-1))
                count = len(value)
            elif typ == 2:
                count = 0
            else:
                value = np.asarray(value).reshape(-1).tolist()
                count = len(value)
                value = value if count > 1 else value[0]
            extratags.append((code, typ, count, value, True))
    extratags += [
        (305, 2, 0, "Magic Lantern; cropped by nnraw samples/make_sample.py", True),
        (50730, 10, 1, [0, 1], True),            # BaselineExposure 0 (the original has 0/0, "undef")
        (50719, 4, 2, [0, 0], True),             # DefaultCropOrigin
        (50720, 4, 2, [WIDTH, HEIGHT], True),    # DefaultCropSize
    ]
    with tifffile.TiffWriter(output) as tif:
        tif.write(crop, photometric=32803, subfiletype=0, extratags=sorted(extratags), metadata=None, software=False)
    print(f"wrote {output} ({output.stat().st_size} bytes, {WIDTH}x{HEIGHT} RGGB from {source.name} at "
          f"x={LEFT}, y={TOP} of its active area)")


if __name__ == "__main__":
    main(*(Path(a) for a in sys.argv[1:3]))
