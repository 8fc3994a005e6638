"""`nnraw dng-to-tiff` (nnraw.io.export_tiff): a LinearRaw DNG -> linear sRGB float32 TIFF for the GIMP loader."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from nnraw.cli import main
from nnraw.io.dng import DngMetadata, write_dng_file
from nnraw.io.export_tiff import DngReadError, convert_dng_to_tiff, read_linear_dng
from nnraw.io.preview import SRGB_TO_XYZ


def _dng(path, rgb, *, orientation=1, wb=(2.0, 1.0, 1.5), baseline_exposure=0.5):
    """A DNG whose camera RGB *is* linear sRGB (ColorMatrix1 = XYZ -> sRGB), so the expected TIFF is simple."""
    meta = DngMetadata(make="Test", model="Cam", unique_camera_model="Test Cam",
                       colour_matrix1=np.linalg.inv(SRGB_TO_XYZ), wb=np.array(wb), orientation=orientation,
                       baseline_exposure=baseline_exposure)
    write_dng_file(path, rgb, meta=meta, preview=np.zeros((4, 6, 3), np.uint8))
    return path


@pytest.fixture
def camera_rgb():
    rng = np.random.default_rng(3)
    return rng.uniform(0.0, 0.6, (3, 10, 14)).astype(np.float32)     # [3, H, W]


def test_values_are_white_balanced_exposed_linear_srgb_unclipped(tmp_path, camera_rgb):
    dng = _dng(tmp_path / "a.dng", camera_rgb)
    assert convert_dng_to_tiff(dng, tmp_path / "a.tif") == (14, 10)
    with tifffile.TiffFile(tmp_path / "a.tif") as tif:
        page = tif.pages[0]
        assert (page.dtype, page.compression, page.planarconfig, tif.byteorder) == (np.float32, 1, 1, "<")
        out = page.asarray()
    expected = camera_rgb.transpose(1, 2, 0) * np.array([2.0, 1.0, 1.5]) * 2 ** 0.5
    # uint16 quantisation in the DNG (0.5 / 65535) times the gain (up to 2.83), plus 1e-6 rational matrices
    np.testing.assert_allclose(out, expected, rtol=0, atol=4e-5)
    assert out.max() > 1.0, "highlights above white are kept, not clipped"


def test_orientation_is_applied(tmp_path, camera_rgb):
    upright = read_linear_dng(_dng(tmp_path / "a.dng", camera_rgb))[0]
    convert_dng_to_tiff(_dng(tmp_path / "r.dng", camera_rgb, orientation=6), tmp_path / "r.tif")
    rotated = tifffile.imread(tmp_path / "r.tif")
    assert rotated.shape == (14, 10, 3)
    np.testing.assert_allclose(rotated / (np.array([2.0, 1.0, 1.5]) * 2 ** 0.5), np.rot90(upright, -1), atol=1e-6)


def test_cli_json_and_bayer_dng_refused(tmp_path, capsys, canon_dng, camera_rgb):
    dng = _dng(tmp_path / "a.dng", camera_rgb)
    assert main(["dng-to-tiff", str(dng), str(tmp_path / "a.tif"), "--json"]) == 0
    assert '"width": 14, "height": 10' in capsys.readouterr().out
    assert main(["dng-to-tiff", str(canon_dng), str(tmp_path / "b.tif")]) == 1
    err = capsys.readouterr().err
    assert canon_dng.name in err and "no LinearRaw (34892) image, found photometric [32803]" in err
    assert not (tmp_path / "b.tif").exists()


def test_not_a_tiff(tmp_path):
    bad = tmp_path / "x.dng"
    bad.write_bytes(b"not a tiff at all")
    with pytest.raises(DngReadError, match=r"dng-to-tiff: .*x\.dng: not a readable DNG/TIFF"):
        read_linear_dng(bad)
