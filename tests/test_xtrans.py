"""X-Trans (6x6 CFA) raws (issue #18): pattern helpers, the synthetic X-Trans DNG fixture (every one
of the 36 phases, odd sizes), read_raw, the classic colour-difference demosaic, and `nnraw convert`
through the real CLI (linear and CFA DNGs; while no X-Trans network is shipped the default model falls
back to the classic demosaic and says so; the network itself: tests/test_xtrans_joint.py). Other non-Bayer sensors keep their refusal.
"""

from __future__ import annotations

import numpy as np
import pytest

from dng_fixtures import write_bayer_dng, write_monochrome_dng, write_xtrans_dng
from nnraw import cfa
from nnraw.io.raw import RawReadError, normalise, read_raw

PHASES = [(dy, dx) for dy in range(6) for dx in range(6)]
# odd and even sizes, several per phase across the suite
SIZES = [(47, 71), (53, 60), (36, 37), (61, 49)]


def test_xtrans_layout_is_fujifilms():
    rows = [cfa.XTRANS[6 * i: 6 * i + 6] for i in range(6)]
    assert rows == ["GGRGGB", "GGBGGR", "BRGRBG", "GGBGGR", "GGRGGB", "RBGBRG"]
    arr = cfa.as_array(cfa.XTRANS)
    assert (arr == 1).sum() == 20 and (arr == 0).sum() == 8 and (arr == 2).sum() == 8
    # every row and column holds R, G and B
    assert all(set(arr[i]) == {0, 1, 2} and set(arr[:, i]) == {0, 1, 2} for i in range(6))


def test_pattern_helpers():
    assert cfa.as_string(cfa.as_array("GRBG")) == "GRBG"
    assert cfa.period("RGGB") == 2 and cfa.period(cfa.XTRANS) == 6
    assert cfa.shifted("RGGB", 1, 0) == "GBRG" and cfa.shifted("RGGB", 1, 1) == "BGGR"
    assert cfa.shifted(cfa.XTRANS, 6, 12) == cfa.XTRANS
    # X-Trans is symmetric under a (3, 3) shift: the 36 crop offsets give 18 distinct 6x6 blocks
    assert cfa.shifted(cfa.XTRANS, 3, 3) == cfa.XTRANS
    assert len({cfa.shifted(cfa.XTRANS, dy, dx) for dy, dx in PHASES}) == 18
    assert all(cfa.is_xtrans(cfa.shifted(cfa.XTRANS, dy, dx)) for dy, dx in PHASES)
    assert not cfa.is_xtrans("RGGB") and not cfa.is_xtrans("G" * 36)
    m = cfa.masks(cfa.XTRANS, 13, 17)
    assert m.shape == (3, 13, 17) and (m.sum(0) == 1).all()
    big = cfa.colour_map(cfa.XTRANS, 30, 30)
    for dy, dx in PHASES:  # a crop by (dy, dx) has the shifted pattern
        np.testing.assert_array_equal(big[dy:, dx:][:18, :18], cfa.colour_map(cfa.shifted(cfa.XTRANS, dy, dx), 18, 18))
    with pytest.raises(ValueError):
        cfa.as_array("RGGBX")
    with pytest.raises(ValueError):
        cfa.as_array(np.zeros((4, 4)))


@pytest.mark.parametrize("phase", PHASES, ids=[f"phase{dy}{dx}" for dy, dx in PHASES])
def test_fixture_reads_back_with_its_6x6_pattern(tmp_path, phase):
    import rawpy

    size = SIZES[(6 * phase[0] + phase[1]) % len(SIZES)]
    src = write_xtrans_dng(tmp_path / f"xt{phase[0]}{phase[1]}.dng", phase=phase, size=size, seed=phase[0])
    with rawpy.imread(str(src.path)) as r:
        assert r.raw_pattern.shape == (6, 6)
        desc = r.color_desc.decode()
        got = "".join(desc[c] for c in np.array(r.raw_pattern).reshape(-1))
        assert got == src.pattern  # colour_desc is RGBG: index 3 would be a G too
        np.testing.assert_array_equal(r.raw_image_visible, src.mosaic)
        assert r.raw_image_visible.shape == size
        assert r.white_level == src.white
        assert list(r.black_level_per_channel) == [1024] * 4
    raw = read_raw(src.path)
    assert raw.pattern == src.pattern and raw.visible.shape == size
    np.testing.assert_array_equal(raw.visible, src.mosaic)
    assert raw.black_levels.shape == (6, 6) and (raw.black_levels == 1024).all() and raw.white_level == src.white
    np.testing.assert_allclose(raw.wb, 1 / src.neutral)
    assert raw.colour_matrix_source == "dng" and raw.mosaic.shape == (size[0] // 6 * 6, size[1] // 6 * 6)
    x = normalise(raw, whole=True)[0, 0].numpy()
    np.testing.assert_allclose(x, (src.mosaic - 1024.0) / (src.white - 1024.0), atol=1e-6)


def test_other_sensors_keep_their_refusal(tmp_path):
    mono = write_monochrome_dng(tmp_path / "mono.dng")
    with pytest.raises(RawReadError, match=r"mono\.dng: "):
        read_raw(mono)
    quad = write_bayer_dng(tmp_path / "quad.dng", size=(48, 72), extra_tags=[
        (33421, 3, 2, [4, 4], True), (33422, 1, 16, bytes([0, 0, 1, 1, 0, 0, 1, 1, 1, 1, 2, 2, 1, 1, 2, 2]), True)])
    # LibRaw folds a 4x4 DNG CFAPattern to its top-left 2x2 block (RRGG here): refused as not Bayer
    with pytest.raises(RawReadError, match=r"quad\.dng: CFA pattern 'RRGG' .* is not an R/G/G/B Bayer pattern"):
        read_raw(quad.path)


def _psnr(a, b):
    return float(-10 * np.log10(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)))


@pytest.mark.parametrize("phase", [(0, 0), (1, 4), (5, 3)])
def test_colour_difference_demosaic_exact_at_sites_local_and_beats_bilinear(phase):
    import torch

    from dng_fixtures import synthetic_scene

    pattern = cfa.shifted(cfa.XTRANS, *phase)
    base, _ = synthetic_scene(61, 83, np.array([0.55, 1.0, 0.65]), seed=3)
    # photos have correlated channels: a detailed luminance times a slowly varying colour
    yy, xx = np.mgrid[0:61, 0:83] / 83.0
    chroma = np.stack([0.8 + 0.2 * np.sin(3 * xx), np.ones_like(xx), 0.7 + 0.2 * np.cos(2 * yy)], -1)
    scene = np.clip(base[..., 1:2] * chroma, 0, 1)
    cmap = cfa.colour_map(pattern, 61, 83)
    mosaic = np.take_along_axis(scene, cmap[..., None], axis=2)[..., 0]
    x = torch.from_numpy(mosaic.astype(np.float32))[None, None]
    out = cfa.colour_difference_demosaic(x, pattern)
    assert out.shape == (1, 3, 61, 83)
    got = out[0].permute(1, 2, 0).numpy()
    sampled = np.take_along_axis(got, cmap[..., None], axis=2)[..., 0]
    np.testing.assert_array_equal(sampled, mosaic.astype(np.float32))      # exact at sampled sites
    # a crop with a halo of 3 (green radius 1 + difference radius 2) equals the whole's crop, bit for bit
    y0, y1, x0, x1 = 13, 40, 17, 59
    crop = cfa.colour_difference_demosaic(x[..., y0 - 3:y1 + 3, x0 - 3:x1 + 3], cfa.shifted(pattern, y0 - 3, x0 - 3))
    assert torch.equal(crop[..., 3:-3, 3:-3], out[..., y0:y1, x0:x1])
    bil = cfa.bilinear_demosaic(x, pattern)[0].permute(1, 2, 0).numpy()
    inner = (slice(6, -6), slice(6, -6))
    assert _psnr(got[inner], scene[inner]) >= _psnr(bil[inner], scene[inner]) + 1.0
    # the 2x2 Bayer case runs through the same code
    assert cfa.colour_difference_demosaic(x, "RGGB").shape == (1, 3, 61, 83)


def test_a_6x6_cfa_that_is_not_xtrans_is_refused(tmp_path):
    code = {"R": 0, "G": 1, "B": 2}
    odd = "RGBGRG" "GGGGGG" "BGRGBG" "GGGGGG" "RGBGRG" "GGGGGG"
    bad = write_bayer_dng(tmp_path / "odd6.dng", size=(48, 72), extra_tags=[
        (33421, 3, 2, [6, 6], True), (33422, 1, 36, bytes(code[c] for c in odd), True)])
    with pytest.raises(RawReadError, match=r"odd6\.dng: 6x6 CFA pattern .* is not an X-Trans layout"):
        read_raw(bad.path)


# ------------------------------------------------------------------------------- `nnraw convert` (CLI)

def _nnraw(*args):
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "nnraw", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=600)


def _linear_image(path):
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0].pages[0]
        return page.asarray(), {t.code: t.value for t in page.tags.values()}


CLI_CASES = [((0, 0), (47, 71)), ((1, 4), (36, 37)), ((5, 3), (61, 49)), ((2, 5), (53, 60)), ((3, 1), (41, 43))]


@pytest.mark.parametrize("phase,size", CLI_CASES, ids=[f"phase{p[0]}{p[1]}-{s[0]}x{s[1]}" for p, s in CLI_CASES])
def test_cli_converts_xtrans_linear_and_cfa(tmp_path, phase, size):
    import rawpy
    import torch

    from nnraw.encoding import pre_demosaic

    src = write_xtrans_dng(tmp_path / "xt.dng", phase=phase, size=size, seed=phase[1])
    lin, cfa_out = tmp_path / "lin.dng", tmp_path / "cfa.dng"
    proc = _nnraw("convert", src.path, "--model", "none", "-o", lin)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    stored, tags = _linear_image(lin)
    assert tags[262] == 34892 and stored.shape == (*size, 3)         # LinearRaw at the raw's full size
    # the whole image's encoded-domain colour-difference demosaic (convert runs it in strips)
    raw = read_raw(src.path)
    whole = pre_demosaic(normalise(raw, whole=True), raw.pattern, torch.as_tensor(raw.wb, dtype=torch.float32))
    expect = np.rint(np.clip(whole[0].permute(1, 2, 0).double().numpy(), 0, 1) * 65535)
    assert np.abs(stored.astype(np.float64) - expect).max() <= 1
    # sampled sites keep the mosaic
    cmap = cfa.colour_map(src.pattern, *size)
    sampled = np.take_along_axis(stored, cmap[..., None], axis=2)[..., 0] / 65535.0
    np.testing.assert_allclose(sampled, (src.mosaic - 1024.0) / (src.white - 1024.0), atol=1.5 / 65535)

    proc = _nnraw("convert", src.path, "--model", "none", "--output", "cfa", "-o", cfa_out)
    assert proc.returncode == 0, proc.stderr
    with rawpy.imread(str(cfa_out)) as r:
        assert r.raw_pattern.shape == (6, 6)
        desc = r.color_desc.decode()
        assert "".join(desc[c] for c in np.array(r.raw_pattern).reshape(-1)) == src.pattern
        assert r.raw_image_visible.shape == size
        diff = np.abs(r.raw_image_visible.astype(np.int64) - src.mosaic.astype(np.int64))
        assert diff.max() <= 1
        assert list(r.black_level_per_channel) == [1024] * 4 and r.white_level == src.white


def test_cli_default_model_on_xtrans_runs_the_classic_demosaic_and_says_so(tmp_path):
    """Without a shipped X-Trans network: the classic demosaic and one line saying so. Once
    python/nnraw/weights/xtrans.* is shipped, ``default`` runs it instead (tests/test_xtrans_joint.py
    covers both with a weights folder of its own) and says nothing."""
    from nnraw.models import XTRANS_MODEL, available_models

    src = write_xtrans_dng(tmp_path / "fuji.dng", phase=(4, 2), size=(37, 55))
    out, plain = tmp_path / "out.dng", tmp_path / "plain.dng"
    proc = _nnraw("convert", src.path, "-o", out, "--iso", "800")     # an ISO: no note that it was assumed
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    if XTRANS_MODEL in available_models():
        assert lines == [], proc.stderr
        assert _nnraw("convert", src.path, "--model", "none", "-o", plain).returncode == 0
        assert not np.array_equal(_linear_image(out)[0], _linear_image(plain)[0])
        return
    assert len(lines) == 1 and "fuji.dng" in lines[0] and "X-Trans" in lines[0] and "not denoised" in lines[0], proc.stderr
    assert _nnraw("convert", src.path, "--model", "none", "-o", plain).returncode == 0
    assert np.array_equal(_linear_image(out)[0], _linear_image(plain)[0])
    quiet = _nnraw("convert", src.path, "-o", tmp_path / "q.dng", "--quiet")
    assert quiet.returncode == 0 and quiet.stderr.strip() == "" and quiet.stdout.strip() == ""


def test_pre_demosaic_in_strips_equals_the_whole(tmp_path):
    import torch

    from nnraw.convert import pre_demosaic as stripped
    from nnraw.encoding import pre_demosaic

    src = write_xtrans_dng(tmp_path / "s.dng", phase=(2, 3), size=(59, 41))
    raw = read_raw(src.path)
    x = normalise(raw, whole=True)
    whole = pre_demosaic(x, raw.pattern, torch.as_tensor(raw.wb, dtype=torch.float32))
    for rows in (8, 10, 14, 512):
        assert torch.equal(stripped(x, raw.pattern, raw.wb, rows_per_strip=rows), whole), rows


@pytest.mark.skipif(__import__("shutil").which("exiftool") is None, reason="exiftool not installed")
def test_exiftool_validates_both_xtrans_outputs(tmp_path):
    import subprocess

    src = write_xtrans_dng(tmp_path / "v.dng", phase=(1, 1), size=(43, 65))
    for kind in ("linear", "cfa"):
        out = tmp_path / f"{kind}.dng"
        assert _nnraw("convert", src.path, "--model", "none", "--output", kind, "-o", out).returncode == 0
        text = subprocess.run(["exiftool", "-validate", "-warning", "-a", str(out)], capture_output=True,
                              text=True, timeout=120).stdout
        assert "Validate                        : OK" in text and "Warning" not in text, text


@pytest.mark.parametrize("phase", PHASES, ids=[f"phase{dy}{dx}" for dy, dx in PHASES])
def test_every_phase_converts_linear_and_cfa(tmp_path, phase):
    import rawpy

    from nnraw.convert import convert_file

    size = SIZES[(6 * phase[0] + phase[1] + 1) % len(SIZES)]
    src = write_xtrans_dng(tmp_path / "p.dng", phase=phase, size=size, seed=phase[1])
    lin = convert_file(src.path, tmp_path / "lin.dng", model="none", device="cpu")
    assert lin.ok, lin.error
    assert _linear_image(tmp_path / "lin.dng")[0].shape == (*size, 3)
    out = convert_file(src.path, tmp_path / "cfa.dng", model="none", kind="cfa", device="cpu")
    assert out.ok, out.error
    with rawpy.imread(str(tmp_path / "cfa.dng")) as r:
        desc = r.color_desc.decode()
        assert "".join(desc[c] for c in np.array(r.raw_pattern).reshape(-1)) == src.pattern
        assert np.abs(r.raw_image_visible.astype(np.int64) - src.mosaic.astype(np.int64)).max() <= 1


@pytest.mark.slow
def test_darktable_42_develops_both_xtrans_outputs(tmp_path):
    """darktable-cli 4.2 (host) develops the linear and the X-Trans CFA DNG: full size, grey patch neutral."""
    import shutil
    import subprocess

    if shutil.which("darktable-cli") is None:
        pytest.skip("darktable-cli is not installed on this host")

    def develop(out, tif):
        return subprocess.run(["timeout", "300", "darktable-cli", str(out), str(tif), "--core", "--library", ":memory:",
                               "--configdir", str(tmp_path / "dtconf"), "--conf", "write_sidecar_files=never"],
                              capture_output=True, text=True, timeout=330)

    _develop_both_outputs(tmp_path, develop)


@pytest.mark.slow
def test_darktable_50_chroot_develops_both_xtrans_outputs(tmp_path):
    """darktable-cli 5.0 (the Debian 13 chroot of tests/chroot.py) develops both X-Trans outputs."""
    from chroot import chroot_for_tests, run_in_chroot

    root = chroot_for_tests()
    version = run_in_chroot(root, ["darktable-cli", "--version"], timeout=120)
    assert "5.0" in version.stdout, version.stdout + version.stderr

    def develop(out, tif):
        return run_in_chroot(root, ["timeout", "300", "darktable-cli", str(out), str(tif), "--core", "--library",
                                    ":memory:", "--configdir", str(tmp_path / "dtconf50"), "--conf",
                                    "write_sidecar_files=never"], binds=[tmp_path], timeout=360)

    _develop_both_outputs(tmp_path, develop)


def _develop_both_outputs(tmp_path, develop) -> None:
    import tifffile

    src = write_xtrans_dng(tmp_path / "dt.dng", phase=(3, 4), size=(181, 263))
    for kind in ("linear", "cfa"):
        out = tmp_path / f"{kind}.dng"
        assert _nnraw("convert", src.path, "--model", "none", "--output", kind, "-o", out).returncode == 0
        tif = tmp_path / f"{kind}-dt.tif"
        proc = develop(out, tif)
        assert tif.is_file(), proc.stdout + proc.stderr
        img = tifffile.imread(tif).astype(np.float64)
        y0, y1, x0, x1 = src.grey_box
        grey = img[y0 + 3:y1 - 3, x0 + 3:x1 - 3, :3].reshape(-1, 3).mean(0)
        print(kind, img.shape, "darktable grey patch", grey)
        assert img.shape[:2] == (181, 263), img.shape
        assert grey.min() > 0.1 * img.max() and grey.max() / grey.min() < 1.04, grey   # neutral, not magenta
