"""`nnraw convert --output cfa` (a Bayer DNG in the source's layout) and "every pixel kept": odd sizes,
ActiveArea and default crop at odd offsets, in all four CFA patterns, read back by rawpy/LibRaw,
exiftool and darktable (4.2 on the host, 5.0 in the Debian 13 chroot)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import rawpy
import tifffile
from conftest import shared_file
from dng_fixtures import write_bayer_dng
from test_dng import exiftool_tags, exiftool_warnings

from nnraw.cli import main
from nnraw.convert import convert_file

PATTERNS = ["RGGB", "BGGR", "GRBG", "GBRG"]
#: name -> (visible size, ActiveArea margins (top, left, bottom, right) or None, default crop (x, y, w, h) or None)
LAYOUTS = {
    "odd-size": ((91, 123), None, None),
    "odd-active-area": ((91, 123), (1, 3, 2, 1), None),
    "odd-default-crop": ((90, 122), (2, 2, 0, 0), (3, 1, 111, 85)),
    "all-odd": ((91, 123), (3, 1, 0, 2), (1, 3, 117, 87)),
}


def make_source(folder: Path, pattern: str, layout: str, **kw):
    size, active_area, crop = LAYOUTS[layout]
    extra = []
    if crop is not None:
        extra = [(50719, 4, 2, list(crop[:2]), True), (50720, 4, 2, list(crop[2:]), True)]
    return write_bayer_dng(folder / f"{pattern}-{layout}.dng", pattern=pattern, size=size, active_area=active_area,
                           black=(600, 604, 596, 610), white=15520, neutral=(0.45, 1.0, 0.65), extra_tags=extra, **kw)


def rawpy_pattern(path: Path) -> tuple[str, np.ndarray]:
    with rawpy.imread(str(path)) as r:
        desc = r.color_desc.decode()
        return "".join(desc[c] for c in r.raw_colors_visible[:2, :2].reshape(-1)), r.raw_image_visible.copy()


def grey_patch_rgb(img: np.ndarray, box, inset: int = 3) -> np.ndarray:
    y0, y1, x0, x1 = box
    return img[y0 + inset:y1 - inset, x0 + inset:x1 - inset, :3].reshape(-1, 3).astype(np.float64).mean(0)


def rawpy_render(path: Path) -> np.ndarray:
    """LibRaw's own development (its demosaic, camera WB, sRGB, linear 16-bit, no crop, no flip)."""
    with rawpy.imread(str(path)) as r:
        return r.postprocess(use_camera_wb=True, no_auto_bright=True, gamma=(1, 1), output_bps=16, user_flip=0)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("pattern", PATTERNS)
def test_every_pixel_kept_round_trip_and_no_colour_cast(tmp_path, pattern, layout):
    src = make_source(tmp_path, pattern, layout)
    h, w = src.mosaic.shape
    crop = LAYOUTS[layout][2]

    cfa = tmp_path / "cfa.dng"
    assert convert_file(src.path, cfa, model="none", kind="cfa").ok
    got_pattern, mosaic = rawpy_pattern(cfa)
    assert got_pattern == pattern and mosaic.shape == (h, w)
    assert np.abs(mosaic.astype(np.int32) - src.mosaic).max() <= 1           # the source mosaic within 1 DN

    linear = tmp_path / "linear.dng"
    assert convert_file(src.path, linear, model="none").ok
    with tifffile.TiffFile(linear) as tif:
        stored = tif.pages[0].pages[0].asarray()
    assert stored.shape == (h, w, 3)
    # at every site the channel its CFA colour recorded is the source's sample (black/white applied)
    for k, colour in enumerate(pattern):
        dy, dx = divmod(k, 2)
        b = src.black[dy, dx]
        want = np.clip((src.mosaic[dy::2, dx::2] - b) / (src.white - b), 0, 1) * 65535
        assert np.abs(stored[dy::2, dx::2, "RGB".index(colour)] - want).max() <= 1.0

    for path in (cfa, linear):
        tags = exiftool_tags(path)
        want_crop = crop if crop is not None else (0, 0, w, h)
        assert [tags["SubIFD:DefaultCropOrigin"], tags["SubIFD:DefaultCropSize"]] == \
            [f"{want_crop[0]} {want_crop[1]}", f"{want_crop[2]} {want_crop[3]}"]
        assert exiftool_warnings(path) == []
        rgb = grey_patch_rgb(rawpy_render(path), src.grey_box)                 # a grey card stays grey
        assert rgb.min() > 500 and rgb.max() / rgb.min() < 1.03, (path.name, rgb)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_clipped_highlights_keep_the_source_samples(tmp_path, pattern):
    """Where the sensor clipped (green just below white beside clipped red: nnraw.highlights raises that
    green), the CFA output keeps the raw's own samples, so --model none stays within 1 DN."""
    from nnraw.io.raw import read_raw

    h, w = 40, 56
    scene = np.full((h, w, 3), 0.3)
    scene[10:30, 12:44] = (1.0, 0.9995, 0.6)              # red clipped, green at 99.95 % of white
    src = write_bayer_dng(tmp_path / "hl.dng", pattern=pattern, scene=scene, neutral=(0.5, 1.0, 0.7),
                          black=(512, 512, 512, 512), white=15000)
    out = tmp_path / "hl-cfa.dng"
    assert convert_file(src.path, out, model="none", kind="cfa").ok
    _, mosaic = rawpy_pattern(out)
    assert np.abs(mosaic.astype(np.int32) - read_raw(src.path).visible).max() <= 1


def test_cfa_dng_keeps_the_source_layout_and_metadata(tmp_path):
    src = write_bayer_dng(tmp_path / "src.dng", pattern="GBRG", size=(64, 96), black=(500, 510, 520, 530),
                          white=16000, neutral=(0.4, 1.0, 0.8), orientation=6, make="Acme", model="Bayer 1")
    out = tmp_path / "out.dng"
    assert convert_file(src.path, out, model="none", kind="cfa").ok
    a, b = exiftool_tags(src.path), exiftool_tags(out)
    assert b["SubIFD:PhotometricInterpretation"] == 32803 and b["SubIFD:BitsPerSample"] == 16
    assert b["SubIFD:CFAPattern2"] == a["IFD0:CFAPattern2"] == "1 2 0 1"
    assert b["SubIFD:BlackLevel"] == a["IFD0:BlackLevel"] == "500 510 520 530"
    assert b["SubIFD:WhiteLevel"] == a["IFD0:WhiteLevel"] == 16000
    for tag in ("Orientation", "AsShotNeutral", "ColorMatrix1", "CalibrationIlluminant1", "Make", "Model",
                "UniqueCameraModel"):
        assert b[f"IFD0:{tag}"] == a[f"IFD0:{tag}"], tag
    assert b["IFD0:Software"].endswith("(model none, output cfa)")
    with rawpy.imread(str(out)) as r:
        assert r.raw_type == rawpy.RawType.Flat and r.num_colors == 3
        black = dict(zip("RGBG", r.black_level_per_channel))              # LibRaw: per colour index R, G, B, G2
        assert (black["R"], black["B"]) == (520, 510) and sorted(r.black_level_per_channel) == [500, 510, 520, 530]
        assert r.white_level == 16000 and r.sizes.flip == 6
        np.testing.assert_allclose(np.array(r.camera_whitebalance[:3]) / r.camera_whitebalance[1], [2.5, 1, 1.25],
                                   rtol=1e-3)
    assert exiftool_warnings(out) == []


def test_output_kind_on_the_command_line(tmp_path, capsys):
    src = write_bayer_dng(tmp_path / "a.dng", pattern="BGGR").path
    assert main(["convert", str(src), "--model", "none", "--output", "cfa", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)["results"][0]
    assert report["ok"] and report["kind"] == "cfa" and report["output"] == str(tmp_path / "a-nnraw.dng")
    assert rawpy_pattern(tmp_path / "a-nnraw.dng")[0] == "BGGR"
    out_dir = tmp_path / "out"
    assert main(["convert", str(src), "--model", "none", "--output", "cfa", "--out-dir", str(out_dir), "--quiet"]) == 0
    assert exiftool_tags(out_dir / "a-nnraw.dng")["SubIFD:PhotometricInterpretation"] == 32803
    named = tmp_path / "named.dng"
    assert main(["convert", str(src), "--model", "none", "-o", str(named), "--output", "linear", "--quiet"]) == 0
    assert exiftool_tags(named)["SubIFD:PhotometricInterpretation"] == 34892
    with pytest.raises(SystemExit) as usage:    # argparse: a usage error, exit 2
        main(["convert", str(src), "--model", "none", "--output", "cfa", "--output", "linear"])
    assert usage.value.code == 2 and "give one kind, linear or cfa" in capsys.readouterr().err
    assert main(["convert", str(src), "--model", "none", "-o", str(named), "--out-dir", str(out_dir)]) == 2
    assert "exclude each other" in capsys.readouterr().err


def test_default_model_cfa_output_of_a_real_raw(tmp_path):
    from nnraw.io.raw import read_raw

    path = shared_file("tinydng_colorchart_Canon550D_MagicLantern.dng")
    out = tmp_path / "canon-cfa.dng"
    result = convert_file(path, out, kind="cfa", iso=800, device="cpu")
    assert result.ok, result.error
    source = read_raw(path)
    pattern, mosaic = rawpy_pattern(out)
    assert pattern == source.pattern == "RGGB" and mosaic.shape == source.visible.shape
    diff = mosaic.astype(np.int32) - source.visible
    assert 0 < np.abs(diff).mean() < 0.02 * (source.white_level - 2056)     # near the source (noise: test_convert.py::test_default_model_denoises_a_flat_raw[cfa])
    assert exiftool_warnings(out) == []


# ------------------------------------------------------------------------------------ darktable (slow)

def _dt_command(dng: Path, folder: Path) -> list[str]:
    return ["timeout", "300", "darktable-cli", str(dng), str(folder / (dng.stem + "-dt.tif")), "--core",
            "--library", ":memory:", "--configdir", str(folder / "dtconf"), "--conf", "write_sidecar_files=never"]


def _check_darktable_render(tif: Path, src, proc) -> None:
    assert tif.is_file(), proc.stdout + proc.stderr
    img = tifffile.imread(tif).astype(np.float64)
    crop = LAYOUTS["all-odd"][2]
    assert img.shape[:2] == (crop[3], crop[2]), img.shape             # darktable shows the default crop
    y0, y1, x0, x1 = src.grey_box
    rgb = grey_patch_rgb(img, (y0 - crop[1], y1 - crop[1], x0 - crop[0], x1 - crop[0]))
    print("darktable grey patch", rgb)
    assert rgb.min() > 0.1 * img.max() and rgb.max() / rgb.min() < 1.04, rgb   # neutral, not magenta
    assert np.abs(img[..., 0] - img[..., 2]).max() > 0.2 * img.max()          # colours elsewhere survive


def _converted_all_odd(tmp_path: Path, pattern: str):
    src = make_source(tmp_path, pattern, "all-odd")
    out = tmp_path / f"{pattern}-cfa.dng"
    assert convert_file(src.path, out, model="none", kind="cfa").ok
    return src, out


@pytest.mark.slow
@pytest.mark.parametrize("pattern", PATTERNS)
def test_darktable_42_reads_the_cfa_dng_as_bayer(tmp_path, pattern):
    if shutil.which("darktable-cli") is None:
        pytest.skip("darktable-cli is not installed (Debian: darktable; `make system-deps`)")
    src, out = _converted_all_odd(tmp_path, pattern)
    proc = subprocess.run(_dt_command(out, tmp_path), capture_output=True, text=True, timeout=330)
    _check_darktable_render(tmp_path / (out.stem + "-dt.tif"), src, proc)


@pytest.mark.slow
@pytest.mark.parametrize("pattern", ["RGGB", "GBRG"])
def test_darktable_50_reads_the_cfa_dng_as_bayer(tmp_path, pattern):
    from chroot import chroot_for_tests, run_in_chroot

    root = chroot_for_tests()
    src, out = _converted_all_odd(tmp_path, pattern)
    version = run_in_chroot(root, ["darktable-cli", "--version"], timeout=120)
    assert "darktable 5." in version.stdout, version.stdout + version.stderr
    proc = run_in_chroot(root, _dt_command(out, tmp_path), binds=[tmp_path], timeout=330)
    _check_darktable_render(tmp_path / (out.stem + "-dt.tif"), src, proc)


@pytest.mark.parametrize("kind", ["linear", "cfa"])
def test_a_455x301_raw_comes_back_455x301_through_the_network(tmp_path, kind):
    """The issue's example (it came back 454x300): odd width and height, the shipped default network."""
    src = write_bayer_dng(tmp_path / "odd.dng", pattern="GRBG", size=(301, 455), neutral=(0.45, 1.0, 0.65))
    out = tmp_path / "odd-nnraw.dng"
    result = convert_file(src.path, out, kind=kind, iso=800, device="cpu")
    assert result.ok, result.error
    if kind == "cfa":
        pattern, mosaic = rawpy_pattern(out)
        assert pattern == "GRBG" and mosaic.shape == (301, 455)
    else:
        with tifffile.TiffFile(out) as tif:
            assert tif.pages[0].pages[0].shape == (301, 455, 3)
    rgb = grey_patch_rgb(rawpy_render(out), src.grey_box)
    assert rgb.max() / rgb.min() < 1.03, rgb
    assert exiftool_warnings(out) == []
