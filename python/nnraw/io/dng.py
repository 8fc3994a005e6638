"""Write a demosaiced, still-linear DNG (Adobe's layout), or a Bayer (CFA) DNG, and copy Exif/XMP into it.

Layout (facts in docs/../shared/notes/DNG.md, checked with rawpy/LibRaw, darktable and exiftool)::

    IFD0   NewSubFileType 1: 8-bit sRGB preview; DNGVersion 1.4, DNGBackwardVersion, UniqueCameraModel,
           ColorMatrix1/2 + CalibrationIlluminant1/2, ForwardMatrix1/2 (when known), AsShotNeutral,
           BaselineExposure, Make, Model, Orientation, Software "nnraw <version>", PreviewColorSpace sRGB
    SubIFD NewSubFileType 0: the image, PhotometricInterpretation LinearRaw (34892), 3 samples,
           uint16 uncompressed (default; white 65535, black 0) or float16 with deflate + predictor 3
           (white 1.0); BlackLevel, WhiteLevel, DefaultCropOrigin/Size

Quantisation (uint16): ``stored = round(clip(x, 0, 1) * 65535)`` (evaluated in float64) where ``x`` is camera RGB scaled so
that 0 is black and 1 is the sensor's white level; readers get ``x`` back to within 0.5 / 65535.
Values below black (noise) and above white are clipped.

CFA output (:func:`write_cfa_dng_file`, ``nnraw convert --output cfa``): the same IFD0, and a SubIFD
with PhotometricInterpretation CFA (32803), one uint16 sample per pixel: the denoised camera RGB
sampled back at the source's own CFA sites, ``stored = clip(round(black[cfa] + x * (white - black[cfa])),
0, white)`` with the source's pattern, black levels (per 2x2 position) and white level, so an editor
runs its own demosaic and raw-only modules on it.

Writes are atomic: everything goes to a temporary file in the target folder, which is fsynced and
renamed over the target only when complete (see :func:`atomic_output`); it is removed on any failure.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import struct
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

import nnraw

__all__ = [
    "DngMetadata", "write_linear_dng", "write_dng_file", "write_cfa_dng_file", "sample_cfa", "copy_metadata",
    "atomic_output", "DNG_VERSION", "LINEAR_RAW", "CFA",
]

DNG_VERSION = (1, 4, 0, 0)
LINEAR_RAW = 34892
CFA = 32803
_CFA_CODE = {"R": 0, "G": 1, "B": 2}
_RATIONAL_DEN = 1_000_000

# TIFF field types (tifffile accepts the numbers).
_BYTE, _ASCII, _SHORT, _LONG, _RATIONAL, _SRATIONAL = 1, 2, 3, 4, 5, 10


@dataclasses.dataclass
class DngMetadata:
    """What a linear DNG says about its camera and colour. Matrices follow the DNG convention.

    Attributes:
        make, model, unique_camera_model: camera identity.
        colour_matrix1, colour_matrix2: [3, 3] XYZ -> camera RGB (``colour_matrix2`` optional).
        illuminant1, illuminant2: EXIF LightSource codes (21 = D65, 17 = A, 0 = unknown).
        forward_matrix1, forward_matrix2: [3, 3] white-balanced camera -> XYZ(D50), optional.
        wb: [3] as-shot white-balance gains (G = 1); AsShotNeutral = 1 / wb.
        baseline_exposure: EV.
        orientation: EXIF Orientation 1..8 of the stored pixels.
        software: the Software tag (default ``nnraw <version>``).
        default_crop: (x, y, width, height) of the source's default crop within the image, or None
            (the whole image).
    """

    make: str
    model: str
    unique_camera_model: str
    colour_matrix1: np.ndarray
    wb: np.ndarray
    colour_matrix2: np.ndarray | None = None
    illuminant1: int = 21
    illuminant2: int | None = None
    forward_matrix1: np.ndarray | None = None
    forward_matrix2: np.ndarray | None = None
    baseline_exposure: float = 0.0
    orientation: int = 1
    software: str | None = None
    default_crop: tuple[int, int, int, int] | None = None

    @classmethod
    def from_raw(cls, raw) -> "DngMetadata":
        """From a :class:`nnraw.io.raw.RawImage`."""
        return cls(
            make=raw.make, model=raw.model, unique_camera_model=raw.unique_camera_model,
            colour_matrix1=raw.colour_matrix1, colour_matrix2=raw.colour_matrix2,
            illuminant1=raw.illuminant1, illuminant2=raw.illuminant2,
            forward_matrix1=raw.forward_matrix1, forward_matrix2=raw.forward_matrix2,
            wb=raw.wb, baseline_exposure=raw.baseline_exposure, orientation=raw.orientation,
            default_crop=getattr(raw, "default_crop", None),
        )


def _rationals(values, signed: bool) -> list[int]:
    out: list[int] = []
    for v in np.asarray(values, dtype=np.float64).reshape(-1):
        if not np.isfinite(v):
            raise ValueError(f"write_linear_dng: metadata value must be finite, got {v}")
        num = int(round(v * _RATIONAL_DEN))
        if not signed and num < 0:
            raise ValueError(f"write_linear_dng: unsigned rational must be >= 0, got {v}")
        out += [num, _RATIONAL_DEN]
    return out


def _ascii(text: str) -> str:
    # TIFF ASCII is 7-bit; keep what we can.
    return text.encode("ascii", errors="replace").decode("ascii") or "unknown"


def _ifd0_tags(meta: DngMetadata, backward_version: tuple[int, ...]) -> list[tuple]:
    wb = np.asarray(meta.wb, dtype=np.float64)
    if wb.shape != (3,) or not (wb > 0).all():
        raise ValueError(f"write_linear_dng: wb must be 3 positive gains, got {wb.tolist()}")
    cm1 = np.asarray(meta.colour_matrix1, dtype=np.float64)
    if cm1.shape != (3, 3):
        raise ValueError(f"write_linear_dng: colour_matrix1 must be 3x3, got shape {cm1.shape}")
    if not 1 <= int(meta.orientation) <= 8:
        raise ValueError(f"write_linear_dng: orientation must be 1..8, got {meta.orientation}")
    tags = [
        (271, _ASCII, 0, _ascii(meta.make), True),
        (272, _ASCII, 0, _ascii(meta.model), True),
        (274, _SHORT, 1, int(meta.orientation), True),
        (305, _ASCII, 0, _ascii(meta.software or f"nnraw {nnraw.__version__}"), True),
        (50706, _BYTE, 4, bytes(DNG_VERSION), True),
        (50707, _BYTE, 4, bytes(backward_version), True),
        (50708, _ASCII, 0, _ascii(meta.unique_camera_model), True),
        (50721, _SRATIONAL, 9, _rationals(cm1, True), True),
        (50778, _SHORT, 1, int(meta.illuminant1), True),
        (50728, _RATIONAL, 3, _rationals(1.0 / wb, False), True),
        (50730, _SRATIONAL, 1, _rationals([meta.baseline_exposure], True), True),
        (50970, _LONG, 1, 2, True),  # PreviewColorSpace: sRGB
    ]
    if meta.colour_matrix2 is not None:
        tags.append((50722, _SRATIONAL, 9, _rationals(meta.colour_matrix2, True), True))
        tags.append((50779, _SHORT, 1, int(meta.illuminant2 or 0), True))
    if meta.forward_matrix1 is not None:
        tags.append((50964, _SRATIONAL, 9, _rationals(meta.forward_matrix1, True), True))
    if meta.forward_matrix2 is not None and meta.colour_matrix2 is not None:
        tags.append((50965, _SRATIONAL, 9, _rationals(meta.forward_matrix2, True), True))
    return sorted(tags)


def _quantise(rgb, dtype: str) -> np.ndarray:
    """Tensor/array [1, 3, H, W] or [3, H, W] in [0, 1] -> [H, W, 3] array of the stored dtype."""
    arr = rgb.detach().cpu().numpy() if hasattr(rgb, "detach") else np.asarray(rgb)
    shape = list(arr.shape)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3 or arr.shape[0] != 3:
        raise ValueError(f"write_linear_dng: rgb must have shape [1, 3, H, W] or [3, H, W], got {shape}")
    arr = arr.transpose(1, 2, 0)
    if dtype == "uint16":
        out = np.empty(arr.shape, np.uint16)
        for y in range(0, arr.shape[0], 256):  # in float64 (exact rounding), a band of rows at a time
            band = np.clip(arr[y:y + 256].astype(np.float64), 0.0, 1.0) * 65535.0
            np.rint(band, out=out[y:y + 256], casting="unsafe")
        return out
    if dtype == "float16":
        return np.clip(arr, 0.0, 65504.0).astype(np.float16)
    raise ValueError(f"write_linear_dng: dtype must be 'uint16' or 'float16', got {dtype!r}")


def _fix_subifds_type(path: Path) -> None:
    """tifffile types the SubIFDs tag (330) as IFD (13); DNG readers and `exiftool -validate` want LONG."""
    with open(path, "r+b") as f:
        head = f.read(8)
        order = {b"II": "<", b"MM": ">"}[head[:2]]
        (offset,) = struct.unpack(order + "I", head[4:8])
        f.seek(offset)
        (count,) = struct.unpack(order + "H", f.read(2))
        for i in range(count):
            pos = offset + 2 + 12 * i
            f.seek(pos)
            tag, typ = struct.unpack(order + "HH", f.read(4))
            if tag == 330 and typ == 13:
                f.seek(pos + 2)
                f.write(struct.pack(order + "H", _LONG))
                return


def write_dng_file(path: str | Path, rgb, *, meta: DngMetadata, preview: np.ndarray, dtype: str = "uint16") -> None:
    """Write the DNG to ``path`` directly (not atomic; :func:`write_linear_dng` is).

    Args:
        path: output file.
        rgb: Tensor or array [1, 3, H, W] (or [3, H, W]) camera RGB, 0 = black, 1 = white.
        meta: camera and colour metadata.
        preview: uint8 [h, w, 3] sRGB preview of the same (unrotated) image, usually <= 1024 px.
        dtype: "uint16" (uncompressed) or "float16" (deflate + floating-point predictor).
    """
    import tifffile

    image = _quantise(rgb, dtype)
    h, w = image.shape[:2]
    preview = np.ascontiguousarray(preview)
    if preview.dtype != np.uint8 or preview.ndim != 3 or preview.shape[2] != 3:
        raise ValueError(f"write_linear_dng: preview must be uint8 [h, w, 3], got {preview.dtype} {list(preview.shape)}")
    backward = (1, 1, 0, 0) if dtype == "uint16" else (1, 4, 0, 0)
    if dtype == "uint16":
        white, black = [65535] * 3, [0] * 3
        compression, predictor = None, None
    else:
        try:
            import imagecodecs  # noqa: F401 - tifffile's floating-point predictor lives there
        except ImportError as exc:
            raise RuntimeError("write_linear_dng: dtype 'float16' needs the imagecodecs package "
                               "(deflate with the floating-point predictor); install it or use 'uint16'") from exc
        white, black = [1] * 3, [0] * 3
        compression, predictor = "zlib", 3
    image_tags = [
        (50714, _LONG, 3, black, True),       # BlackLevel (one per sample)
        (50717, _LONG, 3, white, True),       # WhiteLevel
        *_crop_tags(meta, w, h),              # DefaultCropOrigin/Size
    ]
    with tifffile.TiffWriter(path, bigtiff=False) as tif:
        tif.write(preview, photometric="rgb", subfiletype=1, subifds=1, extratags=_ifd0_tags(meta, backward),
                  metadata=None, software=False, resolution=(72, 72))
        tif.write(image, photometric=LINEAR_RAW, subfiletype=0, extratags=image_tags, metadata=None,
                  software=False, compression=compression, predictor=predictor, rowsperstrip=64)
    _fix_subifds_type(Path(path))


def _crop_tags(meta: DngMetadata, w: int, h: int) -> list[tuple]:
    x0, y0, cw, ch = meta.default_crop if meta.default_crop is not None else (0, 0, w, h)
    if not (0 <= x0 and 0 <= y0 and cw > 0 and ch > 0 and x0 + cw <= w and y0 + ch <= h):
        raise ValueError(f"write_dng: default crop {meta.default_crop} does not fit the {w}x{h} image")
    return [(50719, _LONG, 2, [int(x0), int(y0)], True), (50720, _LONG, 2, [int(cw), int(ch)], True)]


#: Sites whose source sample is at least this fraction of the way from black to white are clipped
#: (nnraw.highlights uses the same threshold): the CFA output keeps the source's own value there.
CLIPPED_FRACTION = 0.999


def _black_block(black_levels, n: int) -> np.ndarray:
    """float64 [n, n]: the black level at each position of the n x n CFA block (one level repeated)."""
    black = np.asarray(black_levels, dtype=np.float64)
    return black.reshape(n, n) if black.size == n * n else np.full((n, n), float(black.reshape(-1)[0]))


def sample_cfa(rgb, pattern: str, black_levels, white_level: float, source: np.ndarray | None = None) -> np.ndarray:
    """Camera RGB [1, 3, H, W] (0 = black, 1 = white) -> uint16 [H, W] Bayer mosaic in raw units.

    Each site keeps the channel its CFA colour records (``pattern`` = colours of the top-left 2x2
    block), scaled back to the source's levels: ``clip(round(black + x * (white - black)), 0, white)``,
    evaluated in float64. Values above white (recovered highlights) store as white (clipped, as the
    sensor was); values below black (noise) are kept down to 0. With ``source`` (the raw's own
    uint16 [H, W] mosaic), sites where the sensor clipped (at least :data:`CLIPPED_FRACTION` of the
    way to white) keep the source's value: there is no noise to remove there, and an editor's
    highlight reconstruction needs the real clipped samples (highlight recovery before the network
    may have raised green there).
    """
    arr = rgb.detach().cpu().numpy() if hasattr(rgb, "detach") else np.asarray(rgb)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3 or arr.shape[0] != 3:
        raise ValueError(f"write_cfa_dng: rgb must have shape [1, 3, H, W] or [3, H, W], got {list(arr.shape)}")
    n = 6 if len(pattern) == 36 else 2   # 2x2 Bayer or 6x6 X-Trans (nnraw.cfa)
    if n == 2 and sorted(pattern) != ["B", "G", "G", "R"] or n == 6 and set(pattern) - set("RGB"):
        raise ValueError(f"write_cfa_dng: pattern must be a Bayer pattern like 'RGGB' or 36 letters of an "
                         f"X-Trans block, got {pattern!r}")
    black = _black_block(black_levels, n)
    white = float(white_level)
    if not (0 <= black.min() and black.max() < white <= 65535):
        raise ValueError(f"write_cfa_dng: need 0 <= black {black.tolist()} < white {white:g} <= 65535")
    h, w = arr.shape[1:]
    out = np.empty((h, w), np.uint16)
    for k, colour in enumerate(pattern):
        dy, dx = divmod(k, n)
        b = black[dy, dx]
        x = arr["RGB".index(colour), dy::n, dx::n].astype(np.float64)
        out[dy::n, dx::n] = np.clip(np.rint(b + x * (white - b)), 0.0, white)
    if source is not None:
        if source.shape != (h, w):
            raise ValueError(f"write_cfa_dng: source mosaic {list(source.shape)} differs from the image {[h, w]}")
        for dy in range(n):
            for dx in range(n):
                src = source[dy::n, dx::n]
                clipped = src >= black[dy, dx] + CLIPPED_FRACTION * (white - black[dy, dx])
                out[dy::n, dx::n][clipped] = src[clipped]
    return out


def _level_tag(code: int, values) -> tuple:
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if np.all(v == np.round(v)):
        return (code, _LONG, v.size, [int(x) for x in v], True)
    return (code, _RATIONAL, v.size, _rationals(v, False), True)


def write_cfa_dng_file(path: str | Path, rgb, *, meta: DngMetadata, preview: np.ndarray, pattern: str,
                       black_levels, white_level: float, source: np.ndarray | None = None) -> None:
    """Write a Bayer (CFA) DNG to ``path`` directly (not atomic): the image sampled at the CFA sites.

    Args:
        path: output file.
        rgb: Tensor or array [1, 3, H, W] camera RGB (not white balanced), 0 = black, 1 = white level.
        meta: camera and colour metadata (as for the linear DNG; AsShotNeutral, matrices, orientation,
            default crop).
        preview: uint8 [h, w, 3] sRGB preview of the same (unrotated) image.
        pattern: CFA colours of the top-left 2x2 block ("RGGB", "BGGR", "GRBG" or "GBRG"), or the 36
            letters of the top-left 6x6 block of an X-Trans raw (written as a 6x6 CFA DNG).
        black_levels: [2, 2] (X-Trans [6, 6]) black level at each position of the block (raw units).
        white_level: saturation value (raw units, <= 65535).
        source: the raw's own mosaic [H, W]: clipped sites keep its values (see :func:`sample_cfa`).
    """
    import tifffile

    mosaic = sample_cfa(rgb, pattern, black_levels, white_level, source)
    h, w = mosaic.shape
    n = 6 if len(pattern) == 36 else 2   # X-Trans: CFARepeatPatternDim 6x6, 36 CFAPattern and BlackLevel entries
    black = _black_block(black_levels, n)
    preview = np.ascontiguousarray(preview)
    if preview.dtype != np.uint8 or preview.ndim != 3 or preview.shape[2] != 3:
        raise ValueError(f"write_cfa_dng: preview must be uint8 [h, w, 3], got {preview.dtype} {list(preview.shape)}")
    image_tags = [
        (33421, _SHORT, 2, [n, n], True),                                       # CFARepeatPatternDim
        (33422, _BYTE, n * n, bytes(_CFA_CODE[c] for c in pattern), True),     # CFAPattern
        (50710, _BYTE, 3, bytes((0, 1, 2)), True),                              # CFAPlaneColor
        (50711, _SHORT, 1, 1, True),                                            # CFALayout: rectangular
        (50713, _SHORT, 2, [n, n], True),                                       # BlackLevelRepeatDim
        _level_tag(50714, black),                                               # BlackLevel (n x n)
        _level_tag(50717, [white_level]),                                       # WhiteLevel
        *_crop_tags(meta, w, h),                                                # DefaultCropOrigin/Size
    ]
    with tifffile.TiffWriter(path, bigtiff=False) as tif:
        tif.write(preview, photometric="rgb", subfiletype=1, subifds=1, extratags=_ifd0_tags(meta, (1, 1, 0, 0)),
                  metadata=None, software=False, resolution=(72, 72))
        tif.write(mosaic, photometric=CFA, subfiletype=0, extratags=sorted(image_tags), metadata=None,
                  software=False, rowsperstrip=64)
    _fix_subifds_type(Path(path))


# Exif tags of the source that describe the capture (kept) rather than the stored image (ours).
_EXIF_IMAGE_KEEP = {
    "Artist", "Copyright", "DateTime", "ImageDescription", "XPTitle", "XPComment", "XPAuthor", "XPKeywords",
    "XPSubject", "Rating", "RatingPercent", "LensInfo", "CameraSerialNumber",
}
# TIFF-EP cameras (Kodak, old Nikon...) put capture tags in IFD0; Exif readers expect them in the Exif IFD.
_EXIF_IMAGE_TO_PHOTO = {
    "ExposureTime", "FNumber", "ExposureProgram", "ISOSpeedRatings", "ExposureBiasValue", "MaxApertureValue",
    "SubjectDistance", "MeteringMode", "LightSource", "Flash", "FocalLength", "SensingMethod",
    "DateTimeOriginal", "LensMake", "LensModel", "LensSerialNumber", "BodySerialNumber",
}
_EXIF_PHOTO_DROP = {"MakerNote", "PixelXDimension", "PixelYDimension", "InteroperabilityTag", "ComponentsConfiguration",
                    "CompressedBitsPerPixel"}
_XMP_DROP_PREFIXES = ("Xmp.tiff.", "Xmp.crs.", "Xmp.xmpMM.", "Xmp.exif.PixelXDimension", "Xmp.exif.PixelYDimension",
                      "Xmp.photoshop.ICCProfile", "Xmp.dng.")
_EXIF_DATE = re.compile(r"^\d{4}:\d{2}:\d{2} \d{2}:\d{2}:\d{2}$")


def _capture_exif(exif: dict[str, str]) -> dict[str, str]:
    """The Exif tags worth copying, under the keys a DNG should hold them (empty/invalid values dropped)."""
    out: dict[str, str] = {}
    for key, value in exif.items():
        _, group, name = key.split(".", 2)
        if name.startswith("0x") or not str(value).strip():
            continue
        if group == "Image" and name in _EXIF_IMAGE_TO_PHOTO:
            target = f"Exif.Photo.{name}"
            if target in exif:
                continue
        elif group == "Image" and name in _EXIF_IMAGE_KEEP:
            target = key
        elif group == "Photo" and name not in _EXIF_PHOTO_DROP:
            target = key
        elif group == "GPSInfo":
            target = key
        else:
            continue
        if name.startswith("DateTime") and not _EXIF_DATE.match(str(value).strip()):
            continue  # e.g. the blank dates Magic Lantern writes
        out[target] = value
    return out


def copy_metadata(source: str | Path, target: str | Path, *, creator_tool: str | None = None) -> dict[str, int]:
    """Copy the capture's Exif and XMP (exposure, ISO, lens, date, GPS, rating, keywords...) from
    ``source`` into the DNG ``target`` with pyexiv2, leaving out what would contradict the new image
    (sizes, strips, CFA, maker notes, orientation, DNG and Camera Raw tags). ``creator_tool``, when
    given, is written as XMP ``xmp:CreatorTool`` (what nnraw applied: model, strength).

    Returns:
        {"exif": n, "xmp": m}: how many tags were copied. Sources exiv2 cannot read give zeros.
    """
    import pyexiv2

    try:
        data = Path(source).read_bytes()
        with pyexiv2.ImageData(data) as src:
            exif = _capture_exif(src.read_exif())
            try:
                xmp = {k: v for k, v in src.read_xmp().items() if not k.startswith(_XMP_DROP_PREFIXES)}
            except Exception:
                xmp = {}
    except Exception:  # exiv2 does not know the format: nothing to copy
        exif, xmp = {}, {}
    if creator_tool is not None:
        xmp = {**xmp, "Xmp.xmp.CreatorTool": creator_tool}
    copied = {"exif": 0, "xmp": 0}
    with pyexiv2.Image(str(target)) as dst:
        for kind, tags, modify in (("exif", exif, dst.modify_exif), ("xmp", xmp, dst.modify_xmp)):
            if not tags:
                continue
            try:
                modify(tags)
                copied[kind] = len(tags)
            except Exception:  # one odd value must not lose the rest: copy tag by tag
                for key, value in tags.items():
                    with contextlib.suppress(Exception):
                        modify({key: value})
                        copied[kind] += 1
    return copied


@contextlib.contextmanager
def atomic_output(path: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; on success fsync it and move it to ``path``.

    Without ``overwrite`` an existing ``path`` is never replaced (checked before and, with a hard link,
    atomically at the end). The temporary file is removed on any failure.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: output exists (use --overwrite to replace it)")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path}: output folder {path.parent} does not exist")
    fd, tmp_name = tempfile.mkstemp(prefix=".nnraw-tmp-", suffix=path.suffix or ".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)   # fails if path appeared meanwhile: never clobber
            except FileExistsError:
                raise FileExistsError(f"{path}: output exists (use --overwrite to replace it)") from None
            except OSError:          # no hard links on this file system
                if path.exists():
                    raise FileExistsError(f"{path}: output exists (use --overwrite to replace it)") from None
                os.replace(tmp, path)
            tmp.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    finally:
        tmp.unlink(missing_ok=True)


def write_linear_dng(
    path: str | Path,
    rgb,
    *,
    meta: DngMetadata,
    preview: np.ndarray,
    dtype: str = "uint16",
    exif_source: str | Path | None = None,
    overwrite: bool = True,
) -> None:
    """Write a linear DNG atomically (temp file, fsync, rename), copying Exif/XMP from ``exif_source``.

    Args:
        path: output .dng.
        rgb: Tensor or array [1, 3, H, W] camera RGB, 0 = black, 1 = white level.
        meta: :class:`DngMetadata` (e.g. ``DngMetadata.from_raw(raw)``).
        preview: uint8 [h, w, 3] sRGB preview (unrotated; the Orientation tag applies to it too).
        dtype: "uint16" (default, uncompressed) or "float16" (deflate).
        exif_source: the raw file whose Exif/XMP is copied (None: copy nothing).
        overwrite: replace an existing ``path``.
    """
    with atomic_output(path, overwrite=overwrite) as tmp:
        write_dng_file(tmp, rgb, meta=meta, preview=preview, dtype=dtype)
        if exif_source is not None:
            copy_metadata(exif_source, tmp)
