"""Read a Bayer camera raw file (rawpy/LibRaw) into a :class:`RawImage`.

Every Bayer format LibRaw reads works (DNG, PEF, NEF, CR2/CR3, ARW, ORF, RW2, RAF-Bayer, KDC...).
What is kept: the whole visible area of the mosaic (``RawImage.visible``, any size, odd included:
every pixel), its CFA pattern (the colours of the top-left 2x2 block of that area, so an ActiveArea
that starts at an odd row or column gives the right phase), a DNG's default crop, per-CFA-position
black levels and the white level, the as-shot white balance, the camera's colour matrices
(XYZ -> camera, DNG convention), the orientation, ISO and camera make/model. ``RawImage.mosaic`` is
the same area cropped to whole 2x2 cells (even height/width: a view, for the statistics code).

Colour matrices: for a DNG source they are read from its own tags (ColorMatrix1/2,
CalibrationIlluminant1/2, ForwardMatrix1/2, BaselineExposure) with tifffile, because LibRaw does not
expose them; for other formats LibRaw's built-in matrix (``rgb_xyz_matrix``, measured under D65) is
used. When neither exists (e.g. some old cameras) the sRGB primaries are assumed and
``RawImage.colour_matrix_source`` says so.

X-Trans (6x6 CFA) raws are read too, at any crop phase: ``pattern`` is then the 36-letter top-left
6x6 block (nnraw.cfa), ``black_levels`` [6, 6] and ``mosaic`` whole 6x6 cells.

Other files are refused with :class:`RawReadError`, whose message names the file and the reason:
not a raw / corrupt / truncated, Foveon or other stacked sensors, monochrome, already demosaiced
(linear) DNGs, and any CFA that is neither a 2x2 R/G/G/B Bayer pattern nor a 6x6 X-Trans layout.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

__all__ = ["RawImage", "RawReadError", "read_raw", "normalise", "RAW_EXTENSIONS", "XYZ_TO_LINEAR_SRGB"]

#: File extensions (lower case) treated as camera raws when a directory is given to `nnraw convert`.
RAW_EXTENSIONS = frozenset(
    ".3fr .ari .arw .bay .cr2 .cr3 .crw .cs1 .dcr .dng .erf .fff .iiq .k25 .kdc .mdc .mef .mos .mrw "
    ".nef .nrw .orf .ori .pef .ptx .pxn .raf .raw .rw2 .rwl .sr2 .srf .srw .x3f".split()
)

#: XYZ (D65) -> linear sRGB (IEC 61966-2-1). Used as the colour matrix of a camera whose own matrix is
#: unknown (it then behaves as an sRGB-primaries camera).
XYZ_TO_LINEAR_SRGB = np.array(
    [[3.2404542, -1.5371385, -0.4985314],
     [-0.9692660, 1.8760108, 0.0415560],
     [0.0556434, -0.2040259, 1.0572252]]
)

# DNG / EXIF LightSource codes for the illuminants LibRaw's matrices are measured under.
ILLUMINANT_D65 = 21
ILLUMINANT_UNKNOWN = 0

# LibRaw's sizes.flip -> EXIF Orientation (1..8). flip bits: 1 = mirror x, 2 = mirror y, 4 = transpose.
_FLIP_TO_EXIF = {0: 1, 1: 2, 2: 4, 3: 3, 4: 5, 5: 8, 6: 6, 7: 7}


class RawReadError(Exception):
    """A file could not be read as a Bayer raw; the message names the file and the reason."""

    def __init__(self, path: str | Path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


@dataclasses.dataclass
class RawImage:
    """A Bayer raw, as read by :func:`read_raw`.

    Attributes:
        mosaic: uint16 [H, W], the visible area cropped to whole 2x2 CFA cells (H and W even; a view
            of ``visible``).
        pattern: CFA colours of ``mosaic[:2, :2]`` read row by row: "RGGB", "BGGR", "GRBG" or "GBRG";
            for an X-Trans raw the 36 letters of ``mosaic[:6, :6]`` (see :mod:`nnraw.cfa`).
        black_levels: float64 [2, 2] (X-Trans: [6, 6]), black level at each position of the CFA block.
        white_level: saturation value (same scale as ``mosaic``).
        wb: float64 [3], as-shot white-balance gains (R, G, B) with G = 1.
        colour_matrix1, colour_matrix2: float64 [3, 3], XYZ -> camera RGB (DNG ColorMatrix convention);
            ``colour_matrix2`` may be None.
        illuminant1, illuminant2: EXIF LightSource codes of the two matrices (21 = D65, 17 = A, 0 = unknown).
        forward_matrix1, forward_matrix2: float64 [3, 3] camera -> XYZ(D50) or None (DNG sources only).
        colour_matrix_source: "dng", "libraw" or "assumed-srgb".
        baseline_exposure: DNG BaselineExposure in EV (0 when the source has none).
        orientation: EXIF Orientation 1..8 of the stored pixels.
        iso: ISO speed from the metadata, or None when the file does not say (or says 0).
        make, model: camera maker and model.
        unique_camera_model: DNG UniqueCameraModel (make + model for non-DNG sources).
        path: the file read.
        visible: uint16 [H', W'], the whole visible area (ActiveArea of a DNG), odd sizes included;
            ``mosaic`` is its top-left even part. None only for RawImages built by hand (= mosaic).
        default_crop: (x, y, width, height) of a DNG's DefaultCropOrigin/Size relative to the visible
            area, or None (the whole visible area).
    """

    mosaic: np.ndarray
    pattern: str
    black_levels: np.ndarray
    white_level: float
    wb: np.ndarray
    colour_matrix1: np.ndarray
    colour_matrix2: np.ndarray | None = None
    illuminant1: int = ILLUMINANT_D65
    illuminant2: int | None = None
    forward_matrix1: np.ndarray | None = None
    forward_matrix2: np.ndarray | None = None
    colour_matrix_source: str = "libraw"
    baseline_exposure: float = 0.0
    orientation: int = 1
    iso: float | None = None
    make: str = ""
    model: str = ""
    unique_camera_model: str = ""
    path: Path = Path()
    visible: np.ndarray | None = None
    default_crop: tuple[int, int, int, int] | None = None

    def __post_init__(self):
        if self.visible is None:
            self.visible = self.mosaic

    @property
    def height(self) -> int:
        """Height of the whole visible area."""
        return int(self.visible.shape[0])

    @property
    def width(self) -> int:
        """Width of the whole visible area."""
        return int(self.visible.shape[1])


def _libraw_errors():
    import rawpy

    return {
        getattr(rawpy, "LibRawFileUnsupportedError", None): "not a raw file LibRaw can read (unsupported or unknown format)",
        getattr(rawpy, "LibRawIOError", None): "truncated or unreadable file (I/O error while reading the raw data)",
        getattr(rawpy, "LibRawDataError", None): "corrupt raw data",
        getattr(rawpy, "LibRawRequestForNonexistentImageError", None): "the file holds no raw image",
        getattr(rawpy, "LibRawOutOfOrderCallError", None): "LibRaw failed (out-of-order call)",
        getattr(rawpy, "LibRawTooBigError", None): "image too big for LibRaw",
        getattr(rawpy, "LibRawMemPoolOverflowError", None): "image too big for LibRaw (memory pool overflow)",
        getattr(rawpy, "LibRawUnsufficientMemoryError", None): "not enough memory to unpack the raw data",
        getattr(rawpy, "LibRawCancelledByCallbackError", None): "reading was cancelled",
        getattr(rawpy, "LibRawNoThumbnailError", None): "no thumbnail",
    }


def _map_libraw_error(path: Path, exc: Exception) -> RawReadError:
    for cls, reason in _libraw_errors().items():
        if cls is not None and isinstance(exc, cls):
            return RawReadError(path, f"{reason} [{type(exc).__name__}: {exc}]")
    return RawReadError(path, f"LibRaw could not read it [{type(exc).__name__}: {exc}]")


def _dng_colour_tags(path: Path) -> dict:
    """ColorMatrix1/2, CalibrationIlluminant1/2, ForwardMatrix1/2, AsShotNeutral, BaselineExposure,
    UniqueCameraModel of a DNG, read with tifffile from IFD0 (where DNG puts them)."""
    import tifffile

    def matrix(value) -> np.ndarray:
        v = np.asarray(value, dtype=np.float64).reshape(-1)
        if v.size == 18:  # (numerator, denominator) pairs
            v = v[0::2] / v[1::2]
        return v.reshape(-1, 3)

    def scalar(value) -> float:
        v = np.asarray(value, dtype=np.float64).reshape(-1)
        if v.size == 2 and v[1] == 0:  # "undef" (0/0) as Magic Lantern writes it
            return 0.0
        return float(v[0] / v[1]) if v.size == 2 else float(v[0])

    out: dict = {}
    with tifffile.TiffFile(path) as tif:
        tags = tif.pages[0].tags
        get = lambda code: tags[code].value if code in tags else None  # noqa: E731
        for code, key in ((50721, "cm1"), (50722, "cm2"), (50964, "fm1"), (50965, "fm2")):
            if get(code) is not None:
                out[key] = matrix(get(code))
        for code, key in ((50778, "ill1"), (50779, "ill2")):
            if get(code) is not None:
                out[key] = int(np.asarray(get(code)).reshape(-1)[0])
        if get(50728) is not None:
            v = np.asarray(get(50728), dtype=np.float64).reshape(-1)
            out["neutral"] = v[0::2] / v[1::2] if v.size == 6 else v
        if get(50730) is not None:
            out["baseline_exposure"] = scalar(get(50730))
        if get(50708) is not None:
            ucm = get(50708)
            out["unique_camera_model"] = ucm.decode(errors="replace") if isinstance(ucm, bytes) else str(ucm)
        # ActiveArea and DefaultCropOrigin/Size live in the raw image's IFD (IFD0 or a SubIFD with
        # NewSubFileType 0)
        for page in [tif.pages[0], *(tif.pages[0].pages or [])]:
            ptags = page.tags
            kind = ptags[254].value if 254 in ptags else 0
            if int(kind) != 0 or 262 not in ptags or int(ptags[262].value) != 32803:
                continue
            if 50829 in ptags:
                aa = _numbers(ptags[50829])
                if len(aa) == 4:
                    out["active_area"] = tuple(int(round(v)) for v in aa)
            if 50714 in ptags and 50713 in ptags and 50715 not in ptags and 50716 not in ptags:
                dims, levels = _numbers(ptags[50713]), _numbers(ptags[50714])   # no BlackLevelDeltaH/V
                if dims == [2, 2] and len(levels) == 4:
                    out["black_2x2"] = np.array(levels).reshape(2, 2)
                elif dims == [6, 6] and len(levels) == 36:
                    out["black_6x6"] = np.array(levels).reshape(6, 6)
                elif dims == [1, 1] and len(levels) == 1:
                    out["black_2x2"] = np.full((2, 2), levels[0])
            if 50720 in ptags:
                origin = _numbers(ptags[50719]) if 50719 in ptags else [0.0, 0.0]
                size = _numbers(ptags[50720])
                if len(origin) == 2 and len(size) == 2:
                    out["default_crop"] = tuple(int(round(v)) for v in (*origin, *size))
            break
    return out


def _numbers(tag) -> list[float]:
    """A TIFF SHORT/LONG/RATIONAL tag's values (tifffile gives rationals as flat (num, den) pairs)."""
    v = np.asarray(tag.value, dtype=np.float64).reshape(-1)
    if int(tag.dtype) in (5, 10):  # RATIONAL, SRATIONAL
        return (v[0::2] / np.where(v[1::2] == 0, 1, v[1::2])).tolist()
    return v.tolist()


def _is_dng(path: Path) -> bool:
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            return 50706 in tif.pages[0].tags
    except Exception:  # not a TIFF at all
        return False


# First bytes of the raw containers LibRaw reads (offset, signature). A file with none of them and no
# Exif camera name is one LibRaw identified by its *size* alone (its table of headerless sensor dumps
# and old cameras): any file of such a size, random bytes included, "opens", with a guessed layout.
_CONTAINER_SIGNATURES = (
    (0, b"II*\0"), (0, b"MM\0*"),          # TIFF: DNG, NEF, CR2, ARW, PEF, KDC, IIQ, 3FR, SRW, ...
    (0, b"IIRO"), (0, b"IIRS"), (0, b"MMOR"),  # Olympus ORF
    (0, b"IIU\0"),                            # Panasonic RW2 / RAW
    (4, b"ftyp"),                              # ISO base media: Canon CR3
    (0, b"FUJIFILM"),                          # RAF
    (6, b"HEAPCCDR"),                          # Canon CRW (CIFF)
    (0, b"\0MRM"),                            # Minolta MRW
    (0, b"FOVb"),                              # Sigma X3F
    (0, b"ARRI"), (0, b"RIFF"), (0, b"\xff\xd8\xff"),  # ARRI; Canon/Nikon RIFF; JPEG-wrapped raws
)


def _has_container_header(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(16)
    return any(head[off:off + len(sig)] == sig for off, sig in _CONTAINER_SIGNATURES)


# What a file that LibRaw cannot open is, when it is a common non-raw format (first bytes).
_OTHER_FORMATS = (
    (b"\xff\xd8\xff", "a JPEG image"), (b"\x89PNG\r\n\x1a\n", "a PNG image"), (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"), (b"PK\x03\x04", "a ZIP archive"), (b"BM", "a BMP image"),
    (b"\x1f\x8b", "a gzip archive"), (b"8BPS", "a Photoshop document"),
)


#: The file name endings each of those kinds normally has (a .png that is a PNG is no surprise).
_KIND_SUFFIXES = {
    "a JPEG image": {".jpg", ".jpeg", ".jpe", ".jfif"}, "a PNG image": {".png"}, "a GIF image": {".gif"},
    "a PDF document": {".pdf"}, "a ZIP archive": {".zip"}, "a BMP image": {".bmp"},
    "a gzip archive": {".gz", ".tgz"}, "a Photoshop document": {".psd"},
    "a HEIF/AVIF image": {".heic", ".heif", ".avif"}, "a WebP image": {".webp"},
    "a text file": {".txt", ".md", ".csv", ".json", ".xml", ".xmp", ".html", ".log"},
}


def _what_it_is(head: bytes) -> str | None:
    """'a JPEG image', 'a text file', ... for a file that is not a raw; None when unknown."""
    for sig, name in _OTHER_FORMATS:
        if head.startswith(sig):
            return name
    if head[4:12] in (b"ftypheic", b"ftypheix", b"ftypavif", b"ftypmif1"):
        return "a HEIF/AVIF image"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "a WebP image"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # a multi-byte character cut at the end of the sample is still text
        try:
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return None
    if text and all(c.isprintable() or c in "\t\r\n\f" for c in text):
        return "a text file"
    return None


def _not_a_raw(path: Path, exc: Exception | None = None) -> RawReadError | None:
    """The plain-words error for an empty file or one whose first bytes are no raw container."""
    size = path.stat().st_size
    if size == 0:
        return RawReadError(path, "empty file (0 bytes): not a raw file")
    with open(path, "rb") as f:
        head = f.read(512)
    kind = _what_it_is(head)
    if kind is not None:
        suffix = path.suffix.lower()
        if suffix in _KIND_SUFFIXES.get(kind, set()):
            return RawReadError(path, f"not a raw file: it is {kind} ({size} bytes)")
        named = f", although its name ends in {path.suffix}" if path.suffix else ""
        return RawReadError(path, f"not a raw file: it is {kind} ({size} bytes){named}")
    if exc is not None and not _has_container_header(path):
        return RawReadError(path, f"not a raw file: it starts with no raw file header LibRaw knows "
                                  f"[{type(exc).__name__}: {exc}]")
    return None


def _exif_iso_make_model(path: Path) -> tuple[float | None, str, str]:
    """ISO, make and model from the file's Exif (exiv2); empty when exiv2 cannot read the format."""
    try:
        import pyexiv2

        with open(path, "rb") as f:
            data = f.read()
        with pyexiv2.ImageData(data) as img:
            exif = img.read_exif()
    except Exception:
        return None, "", ""
    iso = None
    for key in ("Exif.Photo.ISOSpeedRatings", "Exif.Photo.PhotographicSensitivity", "Exif.Image.ISOSpeedRatings"):
        try:
            value = float(str(exif[key]).split()[0])
        except (KeyError, ValueError, IndexError):
            continue
        if value > 0:
            iso = value
            break
    return iso, exif.get("Exif.Image.Make", "").strip(), exif.get("Exif.Image.Model", "").strip()


def read_raw(path: str | Path) -> RawImage:
    """Read a Bayer raw file.

    Args:
        path: the raw file.

    Returns:
        RawImage with ``visible`` uint16 [H, W] (the whole visible area) and ``mosaic`` (its even part).

    Raises:
        RawReadError: the file is missing, not a raw, corrupt or truncated, or not a Bayer raw.
    """
    import rawpy

    path = Path(path)
    if not path.is_file():
        raise RawReadError(path, "no such file")
    if path.stat().st_size == 0:
        raise _not_a_raw(path)
    is_dng = _is_dng(path)
    try:
        tags = _dng_colour_tags(path) if is_dng else {}
    except Exception:  # a DNG whose tags tifffile cannot parse: LibRaw says what is wrong below
        tags = {}
    try:
        with rawpy.imread(str(path)) as r:
            raw_type = r.raw_type
            num_colors = int(r.num_colors)
            color_desc = r.color_desc.decode(errors="replace")
            raw_pattern = None if r.raw_pattern is None else np.array(r.raw_pattern)
            if raw_type != rawpy.RawType.Flat:
                raise RawReadError(
                    path,
                    "already demosaiced (linear/stacked raw data, e.g. a LinearRaw DNG or a Foveon sensor): "
                    "nnraw needs a Bayer mosaic",
                )
            if raw_pattern is None or num_colors == 1:
                raise RawReadError(path, f"monochrome sensor ({num_colors} colour channel): nnraw needs a Bayer mosaic")
            if raw_pattern.shape not in ((2, 2), (6, 6)):
                raise RawReadError(path, f"CFA of shape {raw_pattern.shape} is not supported: nnraw needs a 2x2 Bayer "
                                         "or a 6x6 X-Trans mosaic")
            n = raw_pattern.shape[0]   # the CFA's period: 2 (Bayer) or 6 (X-Trans)
            visible = np.array(r.raw_image_visible, dtype=np.uint16)
            if min(visible.shape) < max(4, n):
                raise RawReadError(path, f"visible raw area {visible.shape} is too small (need at least {max(4, n)}x{max(4, n)})")
            colours = np.array(r.raw_colors_visible[:n, :n])
            margins = (int(r.sizes.top_margin), int(r.sizes.left_margin))
            own_active_area = False
            if "active_area" in tags:
                # LibRaw moves an ActiveArea that starts at an odd row/column to the next even one
                # and drops that row/column: take the DNG's own ActiveArea from the stored image
                # instead (every pixel), with the CFA colours at its origin (LibRaw's colours
                # continued with period 2).
                top, left, bottom, right = tags["active_area"]
                full = r.raw_image
                if (0 <= top < bottom <= full.shape[0] and 0 <= left < right <= full.shape[1]
                        and (top, left, bottom - top, right - left) != (*margins, *visible.shape)):
                    visible = np.array(full[top:bottom, left:right], dtype=np.uint16)
                    colours = np.array([[colours[(top + dy - margins[0]) % n, (left + dx - margins[1]) % n]
                                         for dx in range(n)] for dy in range(n)])
                    own_active_area = True
                del full
            black_per_channel = np.array(r.black_level_per_channel, dtype=np.float64)
            white = float(r.white_level)
            cam_wb = np.array(r.camera_whitebalance, dtype=np.float64)
            xyz_cam = np.array(r.rgb_xyz_matrix, dtype=np.float64)[:3]
            flip = int(r.sizes.flip)
    except RawReadError:
        raise
    except Exception as exc:  # rawpy raises its own LibRaw* errors; anything else is unreadable too
        # LibRaw says "I/O error" for a text file or a JPEG as for a truncated raw: tell them apart
        # by the first bytes (a raw container header that LibRaw then fails on = truncated/corrupt).
        raise (_not_a_raw(path, exc) or _map_libraw_error(path, exc)) from exc

    pattern = "".join(color_desc[int(c)] for c in colours.reshape(-1))
    if n == 6:
        from nnraw import cfa

        if set(pattern) - set("RGB") or not cfa.is_xtrans(pattern):
            raise RawReadError(path, f"6x6 CFA pattern {pattern!r} (colours {color_desc!r}) is not an X-Trans "
                                     "layout: nnraw reads 2x2 Bayer and 6x6 X-Trans mosaics")
    elif sorted(pattern) != ["B", "G", "G", "R"]:
        raise RawReadError(path, f"CFA pattern {pattern!r} (colours {color_desc!r}) is not an R/G/G/B Bayer pattern")
    if visible.ndim != 2 or min(visible.shape) < 4:
        raise RawReadError(path, f"visible raw area {visible.shape} is too small (need at least 4x4)")
    h, w = visible.shape[0] // n * n, visible.shape[1] // n * n
    mosaic = visible[:h, :w]   # whole CFA cells (a view) for the statistics code; convert uses `visible`
    black_levels = black_per_channel[colours]   # [n, n]: the black level at each position of the block
    if n == 6 and "black_6x6" in tags:   # a DNG's own 6x6 BlackLevel (relative to its ActiveArea)
        black_levels = tags["black_6x6"]
    if own_active_area and n == 2 and "black_2x2" in tags:
        # LibRaw also lays a 2x2 BlackLevel out from its moved origin; the DNG's is relative to the
        # ActiveArea's (ours)
        black_levels = tags["black_2x2"]
    if not white > black_levels.max():
        raise RawReadError(path, f"white level {white:g} is not above the black levels {black_levels.tolist()}")

    # As-shot white balance (LibRaw gives it per colour index of color_desc), normalised to G = 1.
    gains = {}
    for index, colour in enumerate(color_desc[:4]):
        if cam_wb[index] > 0 and colour not in gains:
            gains[colour] = cam_wb[index]
    wb = np.array([gains.get(c, 0.0) for c in "RGB"])
    if not (wb > 0).all():
        wb = np.ones(3)
    wb = wb / wb[1]

    iso, make, model = _exif_iso_make_model(path)
    if not (make or model) and not _has_container_header(path):
        raise RawReadError(
            path,
            f"headerless raw data: no file header and no camera name, so LibRaw could only guess the layout "
            f"from the file size ({w}x{h}, white level {white:g}); nnraw does not convert files whose "
            "sensor, levels and colours are guessed (wrap the data in a DNG with its real parameters)",
        )

    if "cm1" in tags and tags["cm1"].shape == (3, 3):
        cm1, source = tags["cm1"], "dng"
        ill1 = tags.get("ill1", ILLUMINANT_UNKNOWN)
    elif np.abs(xyz_cam).sum() > 0:
        cm1, source, ill1 = xyz_cam, "libraw", ILLUMINANT_D65
    else:
        cm1, source, ill1 = XYZ_TO_LINEAR_SRGB.copy(), "assumed-srgb", ILLUMINANT_D65
    cm2 = tags.get("cm2") if source == "dng" and tags.get("cm2", np.zeros(0)).shape == (3, 3) else None
    if "neutral" in tags and len(tags["neutral"]) == 3 and (tags["neutral"] > 0).all():
        wb = 1.0 / tags["neutral"]
        wb = wb / wb[1]

    return RawImage(
        mosaic=mosaic,
        pattern=pattern,
        black_levels=black_levels,
        white_level=white,
        wb=wb,
        colour_matrix1=cm1,
        colour_matrix2=cm2,
        illuminant1=int(ill1),
        illuminant2=tags.get("ill2") if cm2 is not None else None,
        forward_matrix1=tags.get("fm1") if source == "dng" else None,
        forward_matrix2=tags.get("fm2") if source == "dng" and cm2 is not None else None,
        colour_matrix_source=source,
        baseline_exposure=float(tags.get("baseline_exposure", 0.0)),
        orientation=_FLIP_TO_EXIF.get(flip, 1),
        iso=iso,
        make=make,
        model=model,
        unique_camera_model=tags.get("unique_camera_model") or f"{make} {model}".strip() or "unknown camera",
        path=path,
        visible=visible,
        default_crop=_valid_crop(tags.get("default_crop"), visible.shape),
    )


def _valid_crop(crop, shape) -> tuple[int, int, int, int] | None:
    """A default crop that lies inside the visible area and is not the whole of it, else None."""
    if crop is None:
        return None
    x, y, w, h = crop
    if x < 0 or y < 0 or w <= 0 or h <= 0 or x + w > shape[1] or y + h > shape[0]:
        return None
    if (x, y, w, h) == (0, 0, shape[1], shape[0]):
        return None
    return (x, y, w, h)


def normalise(raw: RawImage, *, whole: bool = False) -> torch.Tensor:
    """Black-subtract and scale the mosaic: (x - black[cfa]) / (white - black[cfa]).

    Not clipped: values below black stay negative (noise), values are 1 at saturation.

    Args:
        whole: normalise the whole visible area (``raw.visible``, odd sizes included) instead of
            ``raw.mosaic`` (whole 2x2 cells).

    Returns:
        Tensor[1, 1, H, W] float32.
    """
    src = getattr(raw, "visible", None) if whole else None
    src = raw.mosaic if src is None else src
    h, w = src.shape
    levels = np.asarray(raw.black_levels, dtype=np.float64)
    n = 6 if levels.size == 36 else 2   # per position of the 2x2 (Bayer) or 6x6 (X-Trans) block
    levels = levels.reshape(n, n)
    black = levels.astype(np.float32)
    scale = (1.0 / (raw.white_level - levels)).astype(np.float32)
    out = np.empty((h, w), np.float32)
    for dy in range(n):
        for dx in range(n):
            plane = src[dy::n, dx::n].astype(np.float32)
            plane -= black[dy, dx]
            plane *= scale[dy, dx]
            out[dy::n, dx::n] = plane
    return torch.from_numpy(out)[None, None]
