"""Render camera RGB as 8-bit sRGB: the DNG's embedded preview, `--preview out.png` and `--compare out.xcf`.

Rendering (as dcraw/LibRaw do for a camera with one colour matrix)::

    balanced = wb * camera_rgb                               (as-shot white balance, G = 1)
    cam_from_srgb = ColorMatrix @ SRGB_TO_XYZ, rows normalised to sum 1 (sRGB white -> balanced white)
    linear_srgb = inverse(cam_from_srgb) @ balanced * 2**BaselineExposure, clipped to [0, 1]
    srgb = IEC 61966-2-1 curve, 8 bit; EXIF orientation applied last (for PNG/XCF; not in the DNG preview)

`--compare` writes a GIMP XCF with two layers (the plain pre-demosaic and the nnraw result). The file
is written by :func:`write_xcf` (XCF version 0: 8-bit RGB, uncompressed 64x64 tiles, which GIMP 2 and 3
open); gimpformats 2024/2025 reads XCF but cannot save it.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "SRGB_TO_XYZ", "camera_to_srgb_matrix", "render_srgb", "apply_orientation", "downscale", "write_png",
    "write_xcf",
]

#: linear sRGB -> XYZ (D65), IEC 61966-2-1.
SRGB_TO_XYZ = np.array(
    [[0.4124564, 0.3575761, 0.1804375],
     [0.2126729, 0.7151522, 0.0721750],
     [0.0193339, 0.1191920, 0.9503041]]
)
# EXIF LightSource codes of daylight-like illuminants: the matrix measured under one of these renders best.
_DAYLIGHT = {21, 20, 22, 23, 1, 4, 9, 10, 11}


def _pick_matrix(meta) -> np.ndarray:
    cm2 = getattr(meta, "colour_matrix2", None)
    if cm2 is not None and getattr(meta, "illuminant1", 0) not in _DAYLIGHT and getattr(meta, "illuminant2", 0) in _DAYLIGHT:
        return np.asarray(cm2, dtype=np.float64)
    return np.asarray(meta.colour_matrix1, dtype=np.float64)


def camera_to_srgb_matrix(meta) -> np.ndarray:
    """[3, 3] white-balanced camera RGB -> linear sRGB for ``meta`` (a RawImage or DngMetadata)."""
    cam_from_srgb = _pick_matrix(meta) @ SRGB_TO_XYZ
    cam_from_srgb = cam_from_srgb / cam_from_srgb.sum(axis=1, keepdims=True)
    return np.linalg.inv(cam_from_srgb)


def _srgb_curve(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x <= 0.0031308, 12.92 * x, 1.055 * x.clamp_min(0.0031308) ** (1 / 2.4) - 0.055)


def downscale(rgb: torch.Tensor, max_size: int) -> torch.Tensor:
    """Box-filter Tensor[1, 3, H, W] so its longer side is <= ``max_size`` (area average, then bilinear)."""
    h, w = rgb.shape[-2:]
    if max(h, w) <= max_size:
        return rgb
    factor = max(h, w) // max_size
    if factor > 1:
        rgb = torch.nn.functional.avg_pool2d(rgb, factor, ceil_mode=True, count_include_pad=False)
    h, w = rgb.shape[-2:]
    if max(h, w) > max_size:
        scale = max_size / max(h, w)
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        rgb = torch.nn.functional.interpolate(rgb, size=size, mode="bilinear", antialias=True, align_corners=False)
    return rgb


def render_srgb(rgb: torch.Tensor, meta, *, orient: bool = True, max_size: int | None = None) -> np.ndarray:
    """Render camera RGB for display.

    Args:
        rgb: Tensor[1, 3, H, W] camera RGB (not white balanced), 0 = black, 1 = white level.
        meta: RawImage or DngMetadata (wb, colour matrices, baseline_exposure, orientation).
        orient: apply the EXIF orientation (True for PNG/XCF; False for the DNG's embedded preview).
        max_size: downscale so the longer side is at most this many pixels.

    Returns:
        uint8 array [H', W', 3], sRGB.
    """
    if rgb.dim() != 4 or rgb.shape[:2] != (1, 3):
        raise ValueError(f"render_srgb: rgb must have shape [1, 3, H, W], got {list(rgb.shape)}")
    x = rgb.detach().float().cpu()
    if max_size is not None:
        x = downscale(x, max_size)
    wb = torch.as_tensor(np.asarray(meta.wb, dtype=np.float64), dtype=torch.float32)
    m = torch.as_tensor(camera_to_srgb_matrix(meta), dtype=torch.float32)
    m = m * wb[None, :] * float(2.0 ** getattr(meta, "baseline_exposure", 0.0))
    srgb = torch.einsum("ij,njhw->nihw", m, x).clamp_(0, 1)
    out = (_srgb_curve(srgb)[0] * 255 + 0.5).clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    return apply_orientation(out, meta.orientation) if orient else np.ascontiguousarray(out)


def apply_orientation(img: np.ndarray, orientation: int) -> np.ndarray:
    """Turn stored pixels [H, W, C] into display pixels for EXIF Orientation 1..8."""
    ops = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.transpose(1, 0, 2),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
        8: lambda a: np.rot90(a, 1),
    }
    if orientation not in ops:
        raise ValueError(f"apply_orientation: orientation must be 1..8, got {orientation}")
    return np.ascontiguousarray(ops[orientation](img))


def write_png(path: str | Path, img: np.ndarray) -> None:
    """Write uint8 [H, W, 3] as PNG (to the exact path given; callers make it atomic)."""
    from PIL import Image

    Image.fromarray(img, "RGB").save(path, format="PNG", compress_level=1)


def write_xcf(path: str | Path, layers: list[tuple[str, np.ndarray]]) -> None:
    """Write a GIMP XCF (version 0, 8-bit RGB, uncompressed tiles) with ``layers`` bottom to top.

    Args:
        path: output file.
        layers: (name, uint8 [H, W, 3]) pairs, all the same size; the last one is on top.
    """
    if not layers:
        raise ValueError("write_xcf: need at least one layer")
    h, w = layers[0][1].shape[:2]
    for name, img in layers:
        if img.dtype != np.uint8 or img.shape != (h, w, 3):
            raise ValueError(f"write_xcf: layer {name!r} must be uint8 [{h}, {w}, 3], got {img.dtype} {list(img.shape)}")

    u32 = lambda v: struct.pack(">I", v)  # noqa: E731

    def xcf_string(s: str) -> bytes:
        b = s.encode("utf-8") + b"\0"
        return u32(len(b)) + b

    def prop(kind: int, payload: bytes) -> bytes:
        return u32(kind) + u32(len(payload)) + payload

    PROP_END, PROP_OPACITY, PROP_VISIBLE, PROP_OFFSETS, PROP_COMPRESSION = 0, 6, 8, 15, 17
    out = bytearray(b"gimp xcf file\0" + u32(w) + u32(h) + u32(0))         # RGB image
    out += prop(PROP_COMPRESSION, b"\0") + prop(PROP_END, b"")
    table_at = len(out)
    n = len(layers)
    out += b"\0" * (4 * (n + 1)) + u32(0)                                  # layer pointers, 0; no channels
    pointers = []
    for name, img in reversed(layers):                                     # XCF lists the top layer first
        pointers.append(len(out))
        out += u32(w) + u32(h) + u32(0) + xcf_string(name)                 # RGB layer, no alpha
        out += prop(PROP_OPACITY, u32(255)) + prop(PROP_VISIBLE, u32(1)) + prop(PROP_OFFSETS, u32(0) + u32(0))
        out += prop(PROP_END, b"")
        hierarchy_at = len(out) + 8
        out += u32(hierarchy_at) + u32(0)                                  # hierarchy, no mask
        level_at = len(out) + 4 * 3 + 4 + 4
        out += u32(w) + u32(h) + u32(3) + u32(level_at) + u32(0)
        assert len(out) == level_at
        ty, tx = (h + 63) // 64, (w + 63) // 64
        tiles_at = len(out) + 8 + 4 * (ty * tx + 1)
        tile_ptrs, tile_bytes = [], bytearray()
        for y in range(0, h, 64):
            for x in range(0, w, 64):
                tile_ptrs.append(tiles_at + len(tile_bytes))
                tile_bytes += np.ascontiguousarray(img[y:y + 64, x:x + 64]).tobytes()
        out += u32(w) + u32(h) + b"".join(u32(p) for p in tile_ptrs) + u32(0)
        out += tile_bytes
    struct.pack_into(">" + "I" * n, out, table_at, *pointers)
    Path(path).write_bytes(bytes(out))
