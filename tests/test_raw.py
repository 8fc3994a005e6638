"""nnraw.io.raw: reading Bayer raws (synthetic DNGs with known contents, and the real raws in ../shared)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import shared_file
from dng_fixtures import CANON_550D_MATRIX, write_bayer_dng, write_monochrome_dng

from nnraw.io.raw import RawReadError, normalise, read_raw

PATTERNS = ["RGGB", "BGGR", "GRBG", "GBRG"]
# EXIF orientation -> LibRaw flip is exercised through read_raw's mapping back to EXIF.
ORIENTATIONS = {"RGGB": 1, "BGGR": 3, "GRBG": 6, "GBRG": 8}


@pytest.mark.parametrize("pattern", PATTERNS)
def test_reads_pattern_levels_wb_orientation(tmp_path, pattern):
    src = write_bayer_dng(tmp_path / "a.dng", pattern=pattern, black=(500, 510, 520, 530), white=16000,
                          neutral=(0.4, 1.0, 0.8), orientation=ORIENTATIONS[pattern], make="Acme", model="Bayer 1")
    raw = read_raw(src.path)
    assert raw.pattern == pattern
    np.testing.assert_array_equal(raw.mosaic, src.mosaic)
    np.testing.assert_array_equal(raw.black_levels, [[500, 510], [520, 530]])
    assert raw.white_level == 16000
    np.testing.assert_allclose(raw.wb, [2.5, 1.0, 1.25], rtol=1e-4)
    assert raw.orientation == ORIENTATIONS[pattern]
    assert (raw.make, raw.model) == ("Acme", "Bayer 1")
    assert raw.colour_matrix_source == "dng"
    np.testing.assert_allclose(raw.colour_matrix1, CANON_550D_MATRIX, atol=1e-4)


def test_normalise_per_position_black_and_white(tmp_path):
    src = write_bayer_dng(tmp_path / "a.dng", pattern="GBRG", black=(100, 200, 300, 400), white=4000)
    x = normalise(read_raw(src.path))
    assert x.shape == (1, 1, *src.mosaic.shape) and x.dtype.is_floating_point
    m = src.mosaic.astype(np.float64)
    for (dy, dx), b in zip([(0, 0), (0, 1), (1, 0), (1, 1)], (100, 200, 300, 400)):
        np.testing.assert_allclose(x[0, 0, dy::2, dx::2].numpy(), (m[dy::2, dx::2] - b) / (4000 - b), rtol=1e-6, atol=1e-7)


def test_odd_visible_area_is_cropped_to_even_keeping_the_phase(tmp_path):
    src = write_bayer_dng(tmp_path / "a.dng", pattern="GRBG", size=(65, 97), active_area=(2, 4, 1, 1))
    raw = read_raw(src.path)
    assert raw.mosaic.shape == (64, 96) and raw.pattern == "GRBG"
    np.testing.assert_array_equal(raw.mosaic, src.mosaic[:64, :96])


def test_iso_from_exif(tmp_path):
    import pyexiv2

    src = write_bayer_dng(tmp_path / "a.dng")
    assert read_raw(src.path).iso is None
    with pyexiv2.Image(str(src.path)) as img:
        img.modify_exif({"Exif.Photo.ISOSpeedRatings": "3200"})
    assert read_raw(src.path).iso == 3200


def test_missing_file(tmp_path):
    with pytest.raises(RawReadError, match=r"nope\.dng: no such file"):
        read_raw(tmp_path / "nope.dng")


def test_truncated(tmp_path):
    src = write_bayer_dng(tmp_path / "a.dng")
    data = src.path.read_bytes()
    bad = tmp_path / "cut.dng"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(RawReadError, match=r"cut\.dng: truncated"):
        read_raw(bad)


def test_random_bytes(tmp_path):
    bad = tmp_path / "noise.NEF"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(RawReadError, match=r"noise\.NEF: not a raw file"):
        read_raw(bad)


@pytest.mark.parametrize("size", [1024 * 768, 1920 * 1080 * 2])
def test_headerless_file_is_refused_not_guessed(tmp_path, size):
    # LibRaw identifies headerless sensor dumps by their size alone, so these random bytes "open"
    import rawpy

    bad = tmp_path / "sensor dump.RAW"
    bad.write_bytes(np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes())
    with rawpy.imread(str(bad)) as r:
        assert r.raw_image.size > 0
    with pytest.raises(RawReadError, match=r"sensor dump\.RAW: headerless raw data: .*guess the layout from the file size"):
        read_raw(bad)


def test_real_headerless_dump_is_refused():
    path = shared_file("mushfiqulalam_DSC_1339_768x512_rggb.raw")  # 768x512 uint16, read by LibRaw as 1024x768x8
    with pytest.raises(RawReadError, match=r"768x512_rggb\.raw: headerless raw data"):
        read_raw(path)


def test_jpeg_renamed_nef(tmp_path):
    from PIL import Image

    bad = tmp_path / "photo.NEF"
    Image.fromarray(np.full((32, 48, 3), 128, np.uint8)).save(bad, format="JPEG")
    with pytest.raises(RawReadError, match=r"photo\.NEF: not a raw file: it is a JPEG image \(\d+ bytes\)") as err:
        read_raw(bad)
    assert "truncated" not in str(err.value) and "I/O error" not in str(err.value)


def test_empty_file_says_it_is_empty(tmp_path):
    bad = tmp_path / "empty.CR2"
    bad.write_bytes(b"")
    with pytest.raises(RawReadError, match=r"empty\.CR2: empty file \(0 bytes\): not a raw file$"):
        read_raw(bad)


@pytest.mark.parametrize("text", ["shopping list:\n- milk\n- bread\n", "Grüße aus Köln – notes\r\n" * 40])
def test_text_file_renamed_raw_says_it_is_text(tmp_path, text):
    bad = tmp_path / "notes.NEF"
    bad.write_text(text, encoding="utf-8")
    with pytest.raises(RawReadError, match=r"notes\.NEF: not a raw file: it is a text file") as err:
        read_raw(bad)
    assert "truncated" not in str(err.value)


def test_the_three_messages_differ_from_truncated(tmp_path):
    """An empty file, a text file and a JPEG each say what they are; only a cut raw says truncated."""
    from PIL import Image

    src = write_bayer_dng(tmp_path / "a.dng")
    cut = tmp_path / "cut.NEF"
    cut.write_bytes(src.path.read_bytes()[:3000])
    (tmp_path / "empty.NEF").write_bytes(b"")
    (tmp_path / "text.NEF").write_text("hello\n")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "jpeg.NEF", format="JPEG")
    messages = {}
    for name in ("cut", "empty", "text", "jpeg"):
        with pytest.raises(RawReadError) as err:
            read_raw(tmp_path / f"{name}.NEF")
        messages[name] = err.value.reason
    print(messages)
    assert messages["cut"].startswith("truncated")
    assert messages["empty"].startswith("empty file")
    assert messages["text"].startswith("not a raw file: it is a text file")
    assert messages["jpeg"].startswith("not a raw file: it is a JPEG image")


def test_monochrome_dng(tmp_path):
    bad = write_monochrome_dng(tmp_path / "mono.dng")
    with pytest.raises(RawReadError, match=r"mono\.dng: monochrome"):
        read_raw(bad)


def test_linear_dng_is_refused(tmp_path):
    import torch

    from nnraw.io.dng import DngMetadata, write_linear_dng

    out = tmp_path / "linear.dng"
    meta = DngMetadata(make="A", model="B", unique_camera_model="A B", colour_matrix1=CANON_550D_MATRIX, wb=np.ones(3))
    write_linear_dng(out, torch.rand(1, 3, 32, 48), meta=meta, preview=np.zeros((32, 48, 3), np.uint8))
    with pytest.raises(RawReadError, match=r"linear\.dng: already demosaiced"):
        read_raw(out)


def test_real_canon_dng():
    path = shared_file("tinydng_colorchart_Canon550D_MagicLantern.dng")
    raw = read_raw(path)
    assert raw.pattern == "RGGB" and raw.mosaic.shape == (1156, 1734)
    np.testing.assert_array_equal(raw.black_levels, np.full((2, 2), 2056))
    assert raw.white_level == 15000
    np.testing.assert_allclose(raw.wb, [2.477, 1.0, 2.477 / 1.462], rtol=1e-3)   # 1 / AsShotNeutral(1, 2.477, 1.462)
    assert raw.make == "Canon" and raw.model == "Canon EOS Kiss X4"
    assert raw.iso is None  # the file says ISO 0
    assert raw.baseline_exposure == 0.0  # "undef" (0/0) in the file


def test_real_kodak_kdc():
    path = shared_file("rawpy_RAW_KODAK_DC50.KDC")
    before = (path.stat().st_mtime_ns, path.read_bytes())
    raw = read_raw(path)
    assert raw.pattern in ("RGGB", "BGGR", "GRBG", "GBRG")
    assert raw.mosaic.shape[0] % 2 == 0 and raw.mosaic.shape[1] % 2 == 0
    assert raw.make == "Eastman Kodak Company"
    assert raw.colour_matrix_source in ("libraw", "assumed-srgb")
    assert (path.stat().st_mtime_ns, path.read_bytes()) == before


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_survives_libraw(tmp_path, orientation):
    src = write_bayer_dng(tmp_path / "o.dng", size=(32, 48), orientation=orientation)
    raw = read_raw(src.path)
    assert raw.orientation == orientation
    np.testing.assert_array_equal(raw.mosaic, src.mosaic)        # pixels stay as stored


XTRANS = [1, 1, 0, 1, 1, 2, 1, 1, 2, 1, 1, 0, 2, 0, 1, 0, 2, 1, 1, 1, 2, 1, 1, 0, 1, 1, 0, 1, 1, 2, 0, 2, 1, 2, 0, 1]


def test_xtrans_is_read_with_its_6x6_pattern(tmp_path):
    # X-Trans is read since #18 (tests/test_xtrans.py covers every phase)
    src = write_bayer_dng(tmp_path / "xt.dng", size=(48, 72),
                          extra_tags=[(33421, 3, 2, [6, 6], True), (33422, 1, 36, bytes(XTRANS), True)])
    raw = read_raw(src.path)
    assert raw.pattern == "".join("RGB"[c] for c in XTRANS) and raw.black_levels.shape == (6, 6)


def test_cygm_cfa_is_refused(tmp_path):
    src = write_bayer_dng(tmp_path / "cygm.dng", size=(48, 72),
                          extra_tags=[(33422, 1, 4, bytes([3, 1, 5, 4]), True), (50710, 1, 4, bytes([3, 4, 5, 1]), True)])
    with pytest.raises(RawReadError, match=r"cygm\.dng: CFA pattern '\w{4}' .* is not an R/G/G/B Bayer pattern"):
        read_raw(src.path)


def _srat(values):
    return [v for x in np.asarray(values, dtype=float).reshape(-1) for v in (int(round(x * 10000)), 10000)]


def test_dual_illuminant_matrices_and_baseline_exposure(tmp_path):
    cm2 = CANON_550D_MATRIX * 1.1
    fm1 = np.array([[0.7, 0.2, 0.05], [0.3, 0.8, -0.1], [0.0, -0.1, 0.9]])
    fm2 = fm1 * 0.95
    src = write_bayer_dng(tmp_path / "dual.dng", extra_tags=[
        (50778, 3, 1, 17, True), (50779, 3, 1, 21, True), (50722, 10, 9, _srat(cm2), True),
        (50964, 10, 9, _srat(fm1), True), (50965, 10, 9, _srat(fm2), True), (50730, 10, 1, _srat([0.35]), True)])
    raw = read_raw(src.path)
    assert (raw.illuminant1, raw.illuminant2) == (17, 21)
    np.testing.assert_allclose(raw.colour_matrix2, cm2, atol=1e-4)
    np.testing.assert_allclose(raw.forward_matrix1, fm1, atol=1e-4)
    np.testing.assert_allclose(raw.forward_matrix2, fm2, atol=1e-4)
    assert raw.baseline_exposure == pytest.approx(0.35)
