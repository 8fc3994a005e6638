"""Synthetic raw files for the tests: Bayer CFA DNGs (any 2x2 pattern, known black/white levels,
white balance, colour matrix, orientation), monochrome DNGs, and the pieces to check them with.

A synthetic scene is linear camera RGB in [0, 1] (smooth colour gradients, a few edges and a neutral
grey patch whose camera values are ``AsShotNeutral * level``, so it renders neutral), mosaicked as
``round(black + x * (white - black))``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import tifffile

# Canon EOS 550D's ColorMatrix1 (XYZ -> camera), as its Magic Lantern DNG holds it.
CANON_550D_MATRIX = np.array([[0.6461, -0.1164, -0.0857], [-0.3825, 1.1597, 0.2534], [-0.0416, 0.154, 0.6039]])
CFA_CODE = {"R": 0, "G": 1, "B": 2}


@dataclasses.dataclass
class SyntheticRaw:
    """What a fixture was written with (the test oracle)."""

    path: Path
    scene: np.ndarray          # float64 [H, W, 3] camera RGB in [0, 1] (visible area)
    mosaic: np.ndarray         # uint16 [H, W] as stored (visible area)
    pattern: str
    black: np.ndarray          # [2, 2] per CFA position
    white: int
    neutral: np.ndarray        # AsShotNeutral (camera RGB of white), G = 1
    orientation: int
    grey_box: tuple[int, int, int, int]  # y0, y1, x0, x1 of the neutral patch (stored orientation)

    @property
    def wb(self) -> np.ndarray:
        return 1.0 / self.neutral


def synthetic_scene(h: int, w: int, neutral: np.ndarray, seed: int = 0) -> tuple[np.ndarray, tuple]:
    """[H, W, 3] camera RGB in [0.02, 0.9] and the (y0, y1, x0, x1) box of its neutral grey patch."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    phase = rng.uniform(0, 2 * np.pi, 3)
    scene = np.stack([0.45 + 0.35 * np.sin(2 * np.pi * (1.3 + c) * x + 3 * y + phase[c]) for c in range(3)], -1)
    scene[h // 3: h // 3 + h // 8, :, 0] *= 0.3                       # a horizontal red edge
    scene[:, w // 2: w // 2 + w // 10, 2] = 0.8                         # a vertical blue band
    box = (h // 2, h // 2 + max(8, h // 5), w // 8, w // 8 + max(8, w // 5))
    scene[box[0]:box[1], box[2]:box[3]] = 0.4 * np.asarray(neutral) / np.max(neutral)
    return np.clip(scene, 0.02, 0.9), box


def mosaic_of(scene: np.ndarray, pattern: str, black: np.ndarray, white: int) -> np.ndarray:
    """Sample ``scene`` through the CFA: uint16 [H, W] = round(black + x * (white - black))."""
    h, w, _ = scene.shape
    out = np.empty((h, w), np.float64)
    for k, colour in enumerate(pattern):
        dy, dx = divmod(k, 2)
        b = black[dy, dx]
        out[dy::2, dx::2] = b + scene[dy::2, dx::2, "RGB".index(colour)] * (white - b)
    return np.rint(out).astype(np.uint16)


def _srational(values) -> list[int]:
    out = []
    for v in np.asarray(values, dtype=np.float64).reshape(-1):
        out += [int(round(v * 10000)), 10000]
    return out


def write_bayer_dng(
    path: Path,
    *,
    pattern: str = "RGGB",
    size: tuple[int, int] = (64, 96),
    black=(512, 516, 508, 520),
    white: int = 15000,
    neutral=(0.5, 1.0, 0.7),
    orientation: int = 1,
    make: str = "nnraw",
    model: str = "Synthetic Bayer",
    colour_matrix: np.ndarray = CANON_550D_MATRIX,
    active_area: tuple[int, int, int, int] | None = None,
    seed: int = 0,
    repeat: tuple[int, int] = (1, 1),
    extra_tags: list[tuple] = (),
    scene: np.ndarray | None = None,
) -> SyntheticRaw:
    """Write an uncompressed uint16 Bayer CFA DNG (image in IFD0, as Magic Lantern writes them).

    Args:
        pattern: colours of the visible area's top-left 2x2 block.
        size: (H, W) of the visible area.
        black: black levels at the four CFA positions (row by row).
        active_area: (top, left, bottom, right) margins: the stored image is larger by these and the
            DNG's ActiveArea tag points at the visible part; the padding rows hold black.
        repeat: tile the scene (rows, columns) times: a cheap way to a large image (benchmarks);
            the visible size is then ``size * repeat``.
        extra_tags: more tifffile extratags ``(code, type, count, value, True)``; one with the code of
            a default tag replaces it.
        scene: [H, W, 3] camera RGB in [0, 1] to mosaic instead of the synthetic scene (``size`` is
            then its shape; ``grey_box`` is the whole image).
    """
    black_2x2 = np.asarray(black, dtype=np.float64).reshape(2, 2)
    neutral = np.asarray(neutral, dtype=np.float64) / neutral[1]
    if scene is None:
        h, w = size
        scene, box = synthetic_scene(h, w, neutral, seed)
    else:
        h, w = scene.shape[:2]
        box = (0, h, 0, w)
    mosaic = mosaic_of(scene, pattern, black_2x2, white)
    if repeat != (1, 1):
        scene, mosaic = np.tile(scene, (*repeat, 1)), np.tile(mosaic, repeat)
    stored = mosaic
    top = left = 0
    if active_area is not None:
        top, left, bottom, right = active_area
        stored = np.full((top + h + bottom, left + w + right), int(black_2x2.min()), np.uint16)
        stored[top:top + h, left:left + w] = mosaic
    tags = [
        (271, 2, 0, make, True),
        (272, 2, 0, model, True),
        (274, 3, 1, orientation, True),
        (33421, 3, 2, [2, 2], True),                                     # CFARepeatPatternDim
        (33422, 1, 4, bytes(CFA_CODE[c] for c in pattern), True),       # CFAPattern
        (50706, 1, 4, bytes((1, 4, 0, 0)), True),                        # DNGVersion
        (50707, 1, 4, bytes((1, 1, 0, 0)), True),                        # DNGBackwardVersion
        (50708, 2, 0, f"{make} {model}", True),                          # UniqueCameraModel
        (50713, 3, 2, [2, 2], True),                                     # BlackLevelRepeatDim
        (50714, 4, 4, [int(b) for b in black_2x2.reshape(-1)], True),    # BlackLevel
        (50717, 4, 1, int(white), True),                                 # WhiteLevel
        (50721, 10, 9, _srational(colour_matrix), True),                 # ColorMatrix1
        (50728, 5, 3, _srational(neutral), True),                        # AsShotNeutral
        (50778, 3, 1, 21, True),                                         # CalibrationIlluminant1 D65
    ]
    if active_area is not None:
        tags.append((50829, 4, 4, [top, left, top + h, left + w], True))  # ActiveArea
    replaced = {t[0] for t in extra_tags}
    tags = [t for t in tags if t[0] not in replaced] + list(extra_tags)
    with tifffile.TiffWriter(path) as tif:
        tif.write(stored, photometric=32803, subfiletype=0, extratags=sorted(tags), metadata=None, software=False)
    return SyntheticRaw(path=Path(path), scene=scene, mosaic=mosaic, pattern=pattern, black=black_2x2,
                        white=white, neutral=neutral, orientation=orientation, grey_box=box)


def write_monochrome_dng(path: Path, size: tuple[int, int] = (64, 96)) -> Path:
    """A monochrome (1-sample LinearRaw, e.g. a Leica Monochrom) DNG: not a Bayer raw."""
    h, w = size
    image = (np.arange(h * w).reshape(h, w) % 4000 + 500).astype(np.uint16)
    tags = [
        (271, 2, 0, "nnraw", True), (272, 2, 0, "Synthetic Mono", True),
        (50706, 1, 4, bytes((1, 4, 0, 0)), True), (50708, 2, 0, "nnraw Synthetic Mono", True),
        (50714, 4, 1, 500, True), (50717, 4, 1, 4500, True),
    ]
    with tifffile.TiffWriter(path) as tif:  # tifffile refuses 1-sample LinearRaw: write grey, then retag
        tif.write(image, photometric="minisblack", subfiletype=0, extratags=tags, metadata=None, software=False)
    _set_ifd0_short(Path(path), 262, 34892)  # PhotometricInterpretation LinearRaw
    return Path(path)


def _set_ifd0_short(path: Path, tag: int, value: int) -> None:
    """Overwrite the value of a SHORT tag in IFD0 in place (little-endian classic TIFF)."""
    import struct

    with open(path, "r+b") as f:
        head = f.read(8)
        assert head[:2] == b"II", "fixture writer expects little-endian TIFF"
        (offset,) = struct.unpack("<I", head[4:8])
        f.seek(offset)
        (count,) = struct.unpack("<H", f.read(2))
        for i in range(count):
            f.seek(offset + 2 + 12 * i)
            code, typ = struct.unpack("<HH", f.read(4))
            if code == tag and typ == 3:
                f.seek(offset + 2 + 12 * i + 8)
                f.write(struct.pack("<H", value))
                return
    raise AssertionError(f"tag {tag} not found in IFD0 of {path}")


def expected_pre_demosaic(raw: SyntheticRaw):
    """The pre-demosaic of a fixture computed from what it was written with: Tensor[1, 3, H, W].

    Normalisation here is independent of nnraw.io.raw: (stored - black[cfa]) / (white - black[cfa]).
    The demosaic is the pure-PyTorch reference, run white balanced and sRGB-encoded as nnraw's
    pre-demosaic is (nnraw.encoding.pre_demosaic).
    """
    import torch

    from nnraw.encoding import decode, encode, site_gains
    from nnraw.ops import edge_aware_demosaic_reference

    h, w = raw.mosaic.shape
    black = np.tile(raw.black, (h // 2, w // 2))
    x = (raw.mosaic.astype(np.float64) - black) / (raw.white - black)
    mosaic = torch.from_numpy(x.astype(np.float32))[None, None]
    wb = torch.tensor(raw.wb, dtype=torch.float32)
    e = edge_aware_demosaic_reference(encode(mosaic * site_gains(wb, raw.pattern, mosaic)), raw.pattern, torch.ones(3))
    return decode(e) / wb.reshape(1, 3, 1, 1)


def quantised(rgb) -> np.ndarray:
    """uint16 [H, W, 3] as nnraw stores camera RGB: round(clip(x, 0, 1) * 65535)."""
    arr = rgb[0].permute(1, 2, 0).double().numpy()
    return np.rint(np.clip(arr, 0, 1) * 65535).astype(np.uint16)


def write_noisy_bayer_dng(path: Path, *, size: tuple[int, int] = (96, 128), level: float = 0.25,
                          noise_std: float = 0.03, seed: int = 11, **kw) -> SyntheticRaw:
    """A flat grey (camera RGB ``level`` times the neutral) Bayer DNG with Gaussian noise of ``noise_std``
    (fraction of white) on every photosite: the scene for "is it denoised" tests (flat_noise_std)."""
    neutral = np.asarray(kw.pop("neutral", (0.5, 1.0, 0.7)), dtype=np.float64)
    rng = np.random.default_rng(seed)
    scene = np.clip(level * neutral / neutral[1] + rng.normal(0, noise_std, (*size, 3)), 0, 1)
    return write_bayer_dng(path, scene=scene, neutral=tuple(neutral), **kw)


def flat_noise_std(image: np.ndarray, margin: int = 8) -> float:
    """Noise on a flat image: the std, away from a ``margin`` border, of each 2x2-phase plane (a CFA
    mosaic, [H, W]) or each channel ([H, W, C]) about its own mean, averaged; in the image's units."""
    img = np.asarray(image, dtype=np.float64)[margin:-margin, margin:-margin]
    if img.ndim == 2:
        planes = [img[dy::2, dx::2] for dy in (0, 1) for dx in (0, 1)]
    else:
        planes = [img[..., c] for c in range(img.shape[-1])]
    return float(np.mean([p.std() for p in planes]))


def write_xtrans_dng(
    path: Path,
    *,
    phase: tuple[int, int] = (0, 0),
    size: tuple[int, int] = (47, 71),
    black: int = 1024,
    white: int = 16383,
    neutral=(0.55, 1.0, 0.65),
    make: str = "nnraw",
    model: str = "Synthetic X-Trans",
    colour_matrix: np.ndarray = CANON_550D_MATRIX,
    seed: int = 0,
) -> SyntheticRaw:
    """Write an uncompressed uint16 X-Trans CFA DNG (CFARepeatPatternDim 6x6, 36-entry CFAPattern).

    Args:
        phase: (dy, dx) in 0..5: the stored image's top-left 6x6 block is Fujifilm's X-Trans layout
            (nnraw.cfa.XTRANS) shifted by it, as a crop of a larger X-Trans image by (dy, dx) is.
        size: (H, W) of the image; any size, odd ones included.
        black: one black level for all positions (BlackLevel, BlackLevelRepeatDim 1x1).

    The returned ``pattern`` is the 36-letter top-left block; ``black`` is [2, 2] of the one level.
    LibRaw reads such files (raw_pattern is the 6x6 block) but its own postprocess fails on them.
    """
    from nnraw import cfa

    neutral = np.asarray(neutral, dtype=np.float64) / neutral[1]
    h, w = size
    scene, box = synthetic_scene(h, w, neutral, seed)
    pattern = cfa.shifted(cfa.XTRANS, *phase)
    cmap = cfa.colour_map(pattern, h, w)
    x = np.take_along_axis(scene, cmap[..., None], axis=2)[..., 0]
    mosaic = np.rint(black + x * (white - black)).astype(np.uint16)
    tags = [
        (271, 2, 0, make, True),
        (272, 2, 0, model, True),
        (274, 3, 1, 1, True),
        (33421, 3, 2, [6, 6], True),                                     # CFARepeatPatternDim
        (33422, 1, 36, bytes(CFA_CODE[c] for c in pattern), True),      # CFAPattern
        (50706, 1, 4, bytes((1, 4, 0, 0)), True),                        # DNGVersion
        (50707, 1, 4, bytes((1, 1, 0, 0)), True),                        # DNGBackwardVersion
        (50708, 2, 0, f"{make} {model}", True),                          # UniqueCameraModel
        (50714, 4, 1, int(black), True),                                 # BlackLevel
        (50717, 4, 1, int(white), True),                                 # WhiteLevel
        (50721, 10, 9, _srational(colour_matrix), True),                 # ColorMatrix1
        (50728, 5, 3, _srational(neutral), True),                        # AsShotNeutral
        (50778, 3, 1, 21, True),                                         # CalibrationIlluminant1 D65
    ]
    with tifffile.TiffWriter(path) as tif:
        tif.write(mosaic, photometric=32803, subfiletype=0, extratags=sorted(tags), metadata=None, software=False)
    return SyntheticRaw(path=Path(path), scene=scene, mosaic=mosaic, pattern=pattern,
                        black=np.full((2, 2), float(black)), white=white, neutral=neutral, orientation=1,
                        grey_box=box)
