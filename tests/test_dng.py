"""nnraw.io.dng (linear DNG writer, metadata copy, atomic output) and nnraw.io.preview (sRGB, orientation, XCF)."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess

import numpy as np
import pytest
import rawpy
import tifffile
import torch
from dng_fixtures import CANON_550D_MATRIX, write_bayer_dng

import nnraw
from nnraw.io.dng import DngMetadata, atomic_output, copy_metadata, write_linear_dng
from nnraw.io.preview import apply_orientation, render_srgb, write_xcf


def exiftool_warnings(path) -> list[str]:
    """`exiftool -validate -warning` findings for ``path`` (empty when it validates cleanly)."""
    exe = shutil.which("exiftool")
    if exe is None:
        pytest.skip("exiftool is not installed (Debian: libimage-exiftool-perl; `make system-deps`)")
    out = subprocess.run([exe, "-j", "-validate", "-warning", "-a", str(path)], capture_output=True, text=True, check=True)
    info = json.loads(out.stdout)[0]
    warnings = info.get("Warning", [])
    warnings = [warnings] if isinstance(warnings, str) else list(warnings)
    if info.get("Validate") != "OK":
        warnings.append(f"Validate: {info.get('Validate')}")
    return warnings


def exiftool_tags(path) -> dict:
    exe = shutil.which("exiftool")
    if exe is None:
        pytest.skip("exiftool is not installed (Debian: libimage-exiftool-perl; `make system-deps`)")
    out = subprocess.run([exe, "-j", "-n", "-a", "-G1", str(path)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)[0]


def meta(**kw) -> DngMetadata:
    base = dict(make="Acme", model="Linear 1", unique_camera_model="Acme Linear 1", colour_matrix1=CANON_550D_MATRIX,
                wb=np.array([2.0, 1.0, 1.5]), orientation=6, baseline_exposure=0.5)
    base.update(kw)
    return DngMetadata(**base)


def image_ifd(path):
    """The LinearRaw image (SubIFD of IFD0) as tifffile reads it, and its tags."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0].pages[0]
        return page.asarray(), {t.code: t.value for t in page.tags.values()}, {t.code: t.value for t in tif.pages[0].tags.values()}


def test_uint16_layout_and_values(tmp_path):
    rgb = torch.rand(1, 3, 40, 60, generator=torch.Generator().manual_seed(0)) * 1.2 - 0.1
    out = tmp_path / "x.dng"
    write_linear_dng(out, rgb, meta=meta(), preview=np.zeros((20, 30, 3), np.uint8))
    stored, tags, ifd0 = image_ifd(out)
    expect = np.rint(np.clip(rgb[0].permute(1, 2, 0).numpy(), 0, 1) * 65535).astype(np.uint16)
    assert stored.dtype == np.uint16 and stored.shape == (40, 60, 3)
    assert np.abs(stored.astype(int) - expect).max() <= 1
    assert tags[262] == 34892 and tags[254] == 0 and tags[259] == 1                       # LinearRaw, main image, raw
    assert list(tags[50717]) == [65535] * 3 and list(tags[50714]) == [0] * 3 and list(tags[50720]) == [60, 40]
    assert ifd0[254] == 1 and ifd0[262] == 2 and bytes(ifd0[50706]) == bytes((1, 4, 0, 0))  # preview, RGB, DNG 1.4
    assert ifd0[274] == 6 and ifd0[305] == f"nnraw {nnraw.__version__}"
    neutral = np.asarray(ifd0[50728], dtype=float).reshape(-1, 2)
    np.testing.assert_allclose(neutral[:, 0] / neutral[:, 1], [0.5, 1.0, 1 / 1.5], rtol=1e-5)
    cm = np.asarray(ifd0[50721], dtype=float).reshape(-1, 2)
    np.testing.assert_allclose((cm[:, 0] / cm[:, 1]).reshape(3, 3), CANON_550D_MATRIX, atol=1e-6)
    assert exiftool_warnings(out) == []
    with rawpy.imread(str(out)) as r:
        assert r.raw_type == rawpy.RawType.Stack
        np.testing.assert_array_equal(r.raw_image[..., :3], stored)


def test_subifds_tag_is_long(tmp_path):
    out = tmp_path / "x.dng"
    write_linear_dng(out, torch.rand(1, 3, 8, 8), meta=meta(), preview=np.zeros((8, 8, 3), np.uint8))
    data = out.read_bytes()
    (ifd,) = struct.unpack("<I", data[4:8])
    (n,) = struct.unpack("<H", data[ifd:ifd + 2])
    types = {struct.unpack("<H", data[ifd + 2 + 12 * i: ifd + 4 + 12 * i])[0]:
             struct.unpack("<H", data[ifd + 4 + 12 * i: ifd + 6 + 12 * i])[0] for i in range(n)}
    assert types[330] == 4


def test_float16_deflate(tmp_path):
    import imagecodecs  # noqa: F401  (a dependency: float16 DNGs need it)
    rgb = torch.rand(1, 3, 24, 32, generator=torch.Generator().manual_seed(1))
    out = tmp_path / "f.dng"
    write_linear_dng(out, rgb, meta=meta(), preview=np.zeros((24, 32, 3), np.uint8), dtype="float16")
    stored, tags, ifd0 = image_ifd(out)
    assert stored.dtype == np.float16 and tags[259] == 8 and tags[317] == 3 and tuple(tags[339]) == (3, 3, 3)
    assert bytes(ifd0[50707]) == bytes((1, 4, 0, 0))
    np.testing.assert_array_equal(stored, rgb[0].permute(1, 2, 0).numpy().astype(np.float16))
    assert exiftool_warnings(out) == []
    with rawpy.imread(str(out)) as r:
        assert r.raw_image.shape[:2] == (24, 32)


def test_bad_arguments_leave_nothing(tmp_path):
    with pytest.raises(ValueError, match=r"preview must be uint8 \[h, w, 3\], got float32"):
        write_linear_dng(tmp_path / "x.dng", torch.rand(1, 3, 8, 8), meta=meta(), preview=np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match=r"rgb must have shape \[1, 3, H, W\] or \[3, H, W\], got \[1, 4, 8, 8\]"):
        write_linear_dng(tmp_path / "x.dng", torch.rand(1, 4, 8, 8), meta=meta(), preview=np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match=r"orientation must be 1..8, got 9"):
        write_linear_dng(tmp_path / "x.dng", torch.rand(1, 3, 8, 8), meta=meta(orientation=9),
                         preview=np.zeros((8, 8, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_never_clobbers_without_overwrite(tmp_path):
    target = tmp_path / "t.dng"
    target.write_bytes(b"mine")
    with pytest.raises(FileExistsError, match=r"t\.dng: output exists \(use --overwrite"):
        with atomic_output(target, overwrite=False):
            pass
    # Appearing while we wrote: still not replaced.
    other = tmp_path / "u.dng"
    with pytest.raises(FileExistsError, match=r"u\.dng: output exists"):
        with atomic_output(other, overwrite=False) as tmp:
            tmp.write_bytes(b"new")
            other.write_bytes(b"theirs")
    assert other.read_bytes() == b"theirs" and target.read_bytes() == b"mine"
    with atomic_output(target, overwrite=True) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.dng", "u.dng"]


def test_atomic_output_removes_temp_on_error(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_output(tmp_path / "t.dng") as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_copy_metadata_keeps_capture_drops_structure(tmp_path):
    import pyexiv2

    src = write_bayer_dng(tmp_path / "src.dng", orientation=3).path
    with pyexiv2.Image(str(src)) as img:
        img.modify_exif({"Exif.Photo.ExposureTime": "1/250", "Exif.Photo.LensModel": "Test 50mm F1.8",
                         "Exif.Image.ExposureTime": "1/100", "Exif.Image.FNumber": "28/10",
                         "Exif.Image.DateTimeOriginal": "    :  :     :  :  "})
        img.modify_xmp({"Xmp.xmp.Rating": "4", "Xmp.tiff.Orientation": "3", "Xmp.crs.Exposure2012": "+1.0"})
    out = tmp_path / "out.dng"
    write_linear_dng(out, torch.rand(1, 3, 16, 16), meta=meta(orientation=1), preview=np.zeros((16, 16, 3), np.uint8))
    copied = copy_metadata(src, out)
    assert copied["exif"] >= 3 and copied["xmp"] == 1
    tags = exiftool_tags(out)
    assert tags["ExifIFD:ExposureTime"] == 0.004                      # the Exif IFD's value wins over IFD0's
    assert tags["ExifIFD:FNumber"] == 2.8                             # TIFF-EP IFD0 tag moved to the Exif IFD
    assert tags["ExifIFD:LensModel"] == "Test 50mm F1.8"
    assert tags["IFD0:Orientation"] == 1                              # ours, not the source's 3
    assert tags["XMP-xmp:Rating"] == 4 and "XMP-crs:Exposure2012" not in tags and "XMP-tiff:Orientation" not in tags
    assert "ExifIFD:DateTimeOriginal" not in tags                     # blank date dropped
    assert "IFD0:CFAPattern2" not in tags and "SubIFD:CFAPattern2" not in tags
    assert "IFD0:CFARepeatPatternDim" not in tags and "IFD0:BlackLevelRepeatDim" not in tags
    assert exiftool_warnings(out) == []


def test_copy_metadata_from_unknown_format_copies_nothing(tmp_path):
    src = tmp_path / "x.raw"
    src.write_bytes(b"\0" * 1000)
    out = tmp_path / "out.dng"
    write_linear_dng(out, torch.rand(1, 3, 8, 8), meta=meta(), preview=np.zeros((8, 8, 3), np.uint8))
    assert copy_metadata(src, out) == {"exif": 0, "xmp": 0}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_apply_orientation_matches_pil_exif_transpose(orientation):
    from PIL import Image, ImageOps

    img = np.random.default_rng(orientation).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    pil = Image.fromarray(img)
    exif = pil.getexif()
    exif[0x0112] = orientation
    pil.info["exif"] = exif.tobytes()
    expected = np.asarray(ImageOps.exif_transpose(Image.open(_roundtrip_png(pil, exif))))
    np.testing.assert_array_equal(apply_orientation(img, orientation), expected)


def _roundtrip_png(pil, exif):
    import io

    buf = io.BytesIO()
    pil.save(buf, format="PNG", exif=exif)
    buf.seek(0)
    return buf


def test_render_srgb_neutral_and_orientation():
    m = meta(orientation=6)
    neutral = torch.tensor(1.0 / m.wb, dtype=torch.float32)                 # camera RGB of white
    rgb = (0.18 * neutral).reshape(1, 3, 1, 1).expand(1, 3, 4, 6).contiguous()
    out = render_srgb(rgb, m, orient=True)
    assert out.shape == (6, 4, 3)
    assert np.ptp(out[0, 0].astype(int)) <= 1                               # grey stays grey
    assert render_srgb(rgb, m, orient=False, max_size=3).shape == (2, 3, 3)
    with pytest.raises(ValueError, match=r"render_srgb: rgb must have shape \[1, 3, H, W\], got \[3, 4, 6\]"):
        render_srgb(rgb[0], m)


def test_write_xcf_read_back_with_gimpformats(tmp_path):
    from gimpformats.gimpXcfDocument import GimpDocument

    a = np.random.default_rng(0).integers(0, 256, (70, 130, 3), dtype=np.uint8)
    b = 255 - a
    write_xcf(tmp_path / "c.xcf", [("plain", a), ("nnraw", b)])
    doc = GimpDocument(str(tmp_path / "c.xcf"))
    assert (doc.width, doc.height) == (130, 70)
    layers = {layer.name: np.asarray(layer.image.convert("RGB")) for layer in doc.raw_layers}
    assert list(layers) == ["nnraw", "plain"]                                 # top layer first
    np.testing.assert_array_equal(layers["plain"], a)
    np.testing.assert_array_equal(layers["nnraw"], b)
    with pytest.raises(ValueError, match=r"write_xcf: layer 'x' must be uint8 \[70, 130, 3\], got uint8 \[2, 2, 3\]"):
        write_xcf(tmp_path / "d.xcf", [("plain", a), ("x", a[:2, :2])])
