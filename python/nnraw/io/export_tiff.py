"""`nnraw dng-to-tiff IN.dng OUT.tif`: the image of a linear DNG as a linear float32 RGB TIFF.

GIMP cannot read a LinearRaw DNG (its TIFF loader opens only the small preview), so the GIMP raw
loader (plugins/gimp/nnraw/nnraw.py) runs ``nnraw convert`` and then this command, and puts the
pixels into a 32-bit float linear image.

What the TIFF holds (scene-referred, ready for a linear-light editor)::

    x        = (stored - BlackLevel) / (WhiteLevel - BlackLevel)      camera RGB, 1 = sensor white
    balanced = x * as-shot white balance (1 / AsShotNeutral)
    out      = camera_to_srgb_matrix @ balanced * 2**BaselineExposure   linear sRGB (Rec. 709 primaries, D65)
    EXIF Orientation applied (stored upright)

Values are NOT clipped: highlights may exceed 1.0 and noise may dip below 0, so nothing is lost
before editing. The file is uncompressed, interleaved (PlanarConfiguration 1), little-endian
float32, 3 samples, so a reader needs no codec (the GIMP plug-in reads it with the stdlib).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

__all__ = ["read_linear_dng", "dng_to_linear_srgb", "write_float_tiff", "convert_dng_to_tiff"]

LINEAR_RAW = 34892


class DngReadError(ValueError):
    """A DNG without a readable LinearRaw image."""


def read_linear_dng(path: str | Path) -> tuple[np.ndarray, dict]:
    """The LinearRaw image of a DNG, scaled to [0, 1] camera RGB, and its colour tags.

    Returns:
        (camera_rgb float32 [H, W, 3], tags) where tags has cm1/cm2/ill1/ill2/neutral/baseline_exposure
        (see nnraw.io.raw) and "orientation".
    """
    import tifffile

    from nnraw.io.raw import _dng_colour_tags

    path = Path(path)
    try:
        tif = tifffile.TiffFile(path)
    except (OSError, tifffile.TiffFileError) as exc:
        raise DngReadError(f"dng-to-tiff: {path}: not a readable DNG/TIFF ({exc})") from exc
    with tif:
        pages = list(tif.pages)
        for page in tif.pages:
            pages.extend(page.pages or [])
        linear = [p for p in pages if p.photometric == LINEAR_RAW]
        if not linear:
            kinds = sorted({int(p.photometric) for p in pages})
            raise DngReadError(f"dng-to-tiff: {path}: no LinearRaw (34892) image, found photometric {kinds}; "
                               "expected a demosaiced DNG such as nnraw convert writes")
        page = max(linear, key=lambda p: p.shape[0] * p.shape[1])
        data = page.asarray()
        if data.ndim != 3 or data.shape[2] != 3:
            raise DngReadError(f"dng-to-tiff: {path}: LinearRaw image must be [H, W, 3], got {list(data.shape)}")
        black = np.asarray(page.tags[50714].value if 50714 in page.tags else 0, dtype=np.float64).reshape(-1)
        white_default = 1.0 if data.dtype.kind == "f" else float(np.iinfo(data.dtype).max)
        white = np.asarray(page.tags[50717].value if 50717 in page.tags else white_default,
                           dtype=np.float64).reshape(-1)
        orientation = int(tif.pages[0].tags[274].value) if 274 in tif.pages[0].tags else 1
    black = black[:3] if black.size >= 3 else np.repeat(black[:1], 3)
    white = white[:3] if white.size >= 3 else np.repeat(white[:1], 3)
    rgb = ((data.astype(np.float32) - black.astype(np.float32)) / (white - black).astype(np.float32))
    tags = _dng_colour_tags(path)
    tags["orientation"] = orientation
    if "cm1" not in tags:
        raise DngReadError(f"dng-to-tiff: {path}: no ColorMatrix1 in IFD0; cannot map camera RGB to sRGB")
    return rgb, tags


def dng_to_linear_srgb(camera_rgb: np.ndarray, tags: dict) -> np.ndarray:
    """[H, W, 3] camera RGB (1 = white) -> [H', W', 3] float32 linear sRGB, as-shot WB, exposure, upright."""
    from types import SimpleNamespace

    from nnraw.io.preview import apply_orientation, camera_to_srgb_matrix

    neutral = np.asarray(tags.get("neutral", [1.0, 1.0, 1.0]), dtype=np.float64)
    meta = SimpleNamespace(colour_matrix1=tags["cm1"], colour_matrix2=tags.get("cm2"),
                           illuminant1=tags.get("ill1", 21), illuminant2=tags.get("ill2"))
    m = camera_to_srgb_matrix(meta) * (1.0 / neutral)[None, :] * 2.0 ** float(tags.get("baseline_exposure", 0.0))
    out = np.einsum("ij,hwj->hwi", m.astype(np.float32), camera_rgb, optimize=True)
    return np.ascontiguousarray(apply_orientation(out, int(tags.get("orientation", 1))), dtype=np.float32)


def write_float_tiff(path: str | Path, rgb: np.ndarray) -> None:
    """Write [H, W, 3] float32 as an uncompressed interleaved little-endian TIFF, atomically."""
    import tifffile

    from nnraw.io.dng import atomic_output

    rgb = np.ascontiguousarray(rgb, dtype="<f4")
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"dng-to-tiff: image must be [H, W, 3], got {list(rgb.shape)}")
    with atomic_output(path, overwrite=True) as tmp:
        tifffile.imwrite(tmp, rgb, photometric="rgb", planarconfig="contig", compression=None,
                         byteorder="<", metadata=None, software="nnraw dng-to-tiff")


def convert_dng_to_tiff(dng: str | Path, tiff: str | Path) -> tuple[int, int]:
    """Read ``dng``'s linear image and write it to ``tiff`` as linear sRGB float32; returns (width, height)."""
    rgb = dng_to_linear_srgb(*read_linear_dng(dng))
    write_float_tiff(tiff, rgb)
    return rgb.shape[1], rgb.shape[0]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", metavar="IN.dng", help="a demosaiced (LinearRaw) DNG, e.g. written by nnraw convert")
    p.add_argument("output", metavar="OUT.tif", help="float32 linear sRGB TIFF to write (replaced if present)")
    p.add_argument("--json", action="store_true", help='print {"output", "width", "height"} as JSON')


def run(args: argparse.Namespace) -> int:
    try:
        width, height = convert_dng_to_tiff(args.input, args.output)
    except (DngReadError, OSError, ValueError) as exc:
        print(str(exc) if str(exc).startswith("dng-to-tiff") else f"dng-to-tiff: {args.input}: {exc}",
              file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"output": str(args.output), "width": width, "height": height}))
    return 0
