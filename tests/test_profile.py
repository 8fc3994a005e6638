"""nnraw.noise.profile: flat-field fitting (synthetic DNGs with known a, b; a real raw) and darktable import."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from conftest import SHARED_DATA, need_shared
from nnraw.noise.model import PENTAX_K3_ALPHA, NoiseProfile
from nnraw.noise.profile import (DARKTABLE_TO_RAW_A, _read_flat_mosaic, add_arguments, block_statistics,
                           darktable_profile, fit_noise_model, fit_profile, load_darktable_profiles, run,
                           scene_block_statistics)

BLACK, WHITE = 256, 16383
CFA_CODES = {"RGGB": (0, 1, 1, 2), "BGGR": (2, 1, 1, 0), "GRBG": (1, 0, 2, 1), "GBRG": (1, 2, 0, 1)}


def write_bayer_dng(path: Path, mosaic_u16: np.ndarray, pattern: str = "RGGB") -> None:
    """A minimal Bayer CFA DNG that rawpy reads (DNG.md: uint16 CFA is accepted)."""
    tags = [(33421, "H", 2, (2, 2), True), (33422, "B", 4, CFA_CODES[pattern], True),
            (50706, "B", 4, (1, 4, 0, 0), True), (50708, "s", 0, "nnraw synthetic flat field", True),
            (50714, "H", 1, (BLACK,), True), (50717, "H", 1, (WHITE,), True),
            (50721, "i", 18, (1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 1), True),
            (50728, "I", 6, (1, 2, 1, 1, 1, 1), True), (271, "s", 0, "nnraw", True), (272, "s", 0, "synthetic", True)]
    tifffile.imwrite(path, mosaic_u16, photometric=32803, extratags=tags, metadata=None, software=False)


def synthetic_flat(level: float, a: float, b: float, shape, rng, shading: float = 0.0) -> np.ndarray:
    """Normalised flat field with Poisson-Gaussian noise (independent of nnraw.noise.model), optional
    smooth vignetting-like shading."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w] / max(h, w)
    clean = level * (1 - shading * ((yy - 0.5) ** 2 + (xx - 0.5) ** 2))
    return rng.poisson(clean / a) * a + np.sqrt(b) * rng.standard_normal(shape)


def to_raw_u16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(BLACK + x * (WHITE - BLACK)), 0, 65535).astype(np.uint16)


def test_fit_noise_model_recovers_known_line_with_outliers():
    rng = np.random.default_rng(0)
    mean = rng.uniform(0.02, 0.9, 3000)
    n = 480
    true = 2e-3 * mean + 3e-5
    var = true * rng.chisquare(n - 1, mean.size) / (n - 1)
    var[:150] *= rng.uniform(2, 10, 150)                      # 5 % textured blocks
    a, b = fit_noise_model(mean, var, np.full(mean.size, n))
    assert a == pytest.approx(2e-3, rel=0.02) and b == pytest.approx(3e-5, rel=0.1)
    with pytest.raises(ValueError, match="need blocks at two or more brightness levels"):
        fit_noise_model(np.full(5, 0.2), np.full(5, 1e-3))


def test_block_statistics_recovers_profile_from_shaded_flat_fields():
    rng = np.random.default_rng(1)
    a, b = 8e-4, 4e-5
    stats = [block_statistics(synthetic_flat(level, a, b, (256, 384), rng, shading=0.3), "RGGB")
             for level in (0.05, 0.15, 0.3, 0.5, 0.7)]
    from nnraw.noise.profile import BlockStatistics, fit_block_statistics

    p = fit_block_statistics(BlockStatistics.concatenate(stats))
    for c in range(3):
        assert p.a[c] == pytest.approx(a, rel=0.05)
        assert p.b[c] == pytest.approx(b, rel=0.15)


@pytest.mark.parametrize("pattern", ["RGGB", "GBRG"])
def test_fit_profile_from_synthetic_dngs(tmp_path, pattern):
    rng = np.random.default_rng(2)
    a, b = 1.5e-3, 6e-5                               # about ISO 3200 on the reference K-3 table
    paths = []
    for k, level in enumerate((0.04, 0.1, 0.2, 0.35, 0.5, 0.7)):
        path = tmp_path / f"flat_{k}.dng"
        write_bayer_dng(path, to_raw_u16(synthetic_flat(level, a, b, (192, 256), rng, shading=0.2)), pattern)
        paths.append(path)
    frame = _read_flat_mosaic(paths[0])
    assert frame.pattern == pattern and frame.mosaic.shape == (192, 256)
    profile = fit_profile(paths, iso=3200)
    assert "ISO 3200" in profile.name
    for c in range(3):
        assert profile.a[c] == pytest.approx(a, rel=0.05), profile
        assert profile.b[c] == pytest.approx(b, rel=0.2), profile   # b: quantisation + few dark blocks


def test_fit_profile_pairs_remove_fixed_texture(tmp_path):
    rng = np.random.default_rng(3)
    a, b = 1e-3, 2e-5
    texture = 1 + 0.05 * rng.standard_normal((128, 128))         # a fixed, fine-grained surface texture
    paths = []
    for k, level in enumerate((0.05, 0.15, 0.3, 0.5)):
        for shot in range(2):
            x = rng.poisson(level * texture / a) * a + np.sqrt(b) * rng.standard_normal(texture.shape)
            path = tmp_path / f"flat_{k}_{shot}.dng"
            write_bayer_dng(path, to_raw_u16(x))
            paths.append(path)
    paired = fit_profile(paths, pairs=True)
    single = fit_profile(paths)
    assert paired.a[1] == pytest.approx(a, rel=0.05)
    assert single.a[1] > 1.5 * a                              # texture biases the single-shot estimate
    with pytest.raises(ValueError, match="--pairs needs an even number of raws, got 3"):
        fit_profile(paths[:3], pairs=True)


def test_fit_profile_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.dng: no such file"):
        fit_profile([tmp_path / "nope.dng"])
    bad = tmp_path / "bad.dng"
    bad.write_bytes(b"not a raw file")
    with pytest.raises(ValueError, match="cannot read .*bad.dng as a raw file"):
        fit_profile([bad])


def test_cli_writes_profile(tmp_path, capsys):
    rng = np.random.default_rng(4)
    paths = []
    for k, level in enumerate((0.1, 0.3, 0.6)):
        path = tmp_path / f"f{k}.dng"
        write_bayer_dng(path, to_raw_u16(synthetic_flat(level, 2e-3, 1e-4, (128, 128), rng)))
        paths.append(str(path))
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = tmp_path / "profile.json"
    assert run(parser.parse_args([*paths, "--iso", "1600", "-o", str(out)])) == 0
    p = NoiseProfile.load(out)
    assert p.a[1] == pytest.approx(2e-3, rel=0.1)
    assert "G: a = " in capsys.readouterr().out
    assert run(parser.parse_args(["--iso", "100", "-o", str(out)])) == 2
    assert "no FLATFIELD_RAWS given" in capsys.readouterr().err


# --- darktable --------------------------------------------------------------------------------
@pytest.fixture
def darktable_json() -> Path:
    path = SHARED_DATA / "darktable-noiseprofiles.json"
    need_shared(path, "darktable's noiseprofiles.json")
    return path


def test_darktable_import_converts_to_raw_domain(darktable_json):
    table = load_darktable_profiles(darktable_json)
    k3 = {e.iso: e for e in table[("Pentax", "K-3")]}
    assert sorted(k3)[:7] == [100, 200, 400, 800, 1600, 3200, 6400]
    p = darktable_profile("PENTAX", "K-3", 1600, table=table)          # case-insensitive maker
    assert p.a == (DARKTABLE_TO_RAW_A * k3[1600.0].a[1],) * 3
    assert p.b == (DARKTABLE_TO_RAW_A * k3[1600.0].b[1],) * 3
    # The converted darktable values agree with the reference table within a factor 1.5 at ISO 200..6400.
    for iso, alpha in PENTAX_K3_ALPHA.items():
        if iso >= 200:
            assert darktable_profile("Pentax", "K-3", iso, table=table).a[1] == pytest.approx(alpha, rel=0.25)
    # log-log interpolation between darktable ISOs, white-balance-aware channels.
    mid = darktable_profile("Pentax", "Pentax K-3", 1131.4, table=table).a[1]
    assert darktable_profile("Pentax", "K-3", 800, table=table).a[1] < mid < darktable_profile("Pentax", "K-3", 1600, table=table).a[1]
    wb = (2.6, 1.0, 2.0)
    pw = darktable_profile("Pentax", "K-3", 800, table=table, wb=wb)
    assert pw.a[0] == pytest.approx(DARKTABLE_TO_RAW_A * k3[800.0].a[0] / 2.6)
    with pytest.raises(KeyError, match="no darktable profile for 'Pentax' 'K-99'.*K-3"):
        darktable_profile("Pentax", "K-99", 800, table=table)


def test_darktable_duplicate_isos_keep_first(tmp_path):
    data = {"version": 0, "noiseprofiles": [{"maker": "Acme", "models": [{"model": "One", "profiles": [
        {"name": "a", "iso": 200, "a": [2e-6] * 3, "b": [1e-8] * 3},
        {"name": "b", "iso": 100, "a": [1e-6] * 3, "b": [1e-8] * 3},
        {"name": "c", "iso": 100, "a": [9e-6] * 3, "b": [9e-8] * 3}]}]}]}
    path = tmp_path / "np.json"
    path.write_text(json.dumps(data))
    entries = load_darktable_profiles(path)[("Acme", "One")]
    assert [e.iso for e in entries] == [100, 200] and entries[0].a[0] == 1e-6
    assert darktable_profile("Acme", "One", 400, path).a[0] == pytest.approx(DARKTABLE_TO_RAW_A * 4e-6)
    (tmp_path / "bad.json").write_text("[]")
    with pytest.raises(ValueError, match="bad.json is not a darktable noiseprofiles.json"):
        load_darktable_profiles(tmp_path / "bad.json")


def test_real_raw_noise_is_the_same_in_all_channels(canon_dng):
    """On the Canon 550D DNG's flat ColorChecker blocks the raw-domain a is channel-independent
    (conversion gain is per pixel) -- unlike darktable's post-white-balance a."""
    frame = _read_flat_mosaic(canon_dng)
    assert frame.pattern == "RGGB"
    stats = scene_block_statistics(frame.mosaic, frame.pattern, 8, frame.valid)
    fits = [fit_noise_model(stats.mean[stats.channel == c], stats.variance[stats.channel == c],
                            stats.count[stats.channel == c]) for c in range(3)]
    a = [f[0] for f in fits]
    assert min(a) > 1e-4 and max(a) < 3e-4
    assert max(a) / min(a) < 1.05


def _patchwork_mosaic(a: float, b: float, seed: int = 0) -> np.ndarray:
    """A 512x512 mosaic of flat 64x64 patches at brightnesses 0.03..0.8, with Poisson-Gaussian noise."""
    import torch

    from nnraw.noise.model import add_noise

    rng = np.random.default_rng(seed)
    levels = rng.uniform(0.03, 0.8, size=(8, 8))
    clean = np.kron(levels, np.ones((64, 64)))
    noisy = add_noise(torch.from_numpy(clean).float()[None, None], (torch.tensor([a] * 3), torch.tensor([b] * 3)),
                      torch.Generator().manual_seed(seed), pattern="RGGB")
    return noisy[0, 0].numpy()


@pytest.mark.parametrize("a,b", [(2e-3, 2e-5), (2e-4, 1e-6)])
def test_estimate_scene_profile_recovers_known_noise(a, b):
    from nnraw.noise.profile import estimate_scene_profile

    prof = estimate_scene_profile(_patchwork_mosaic(a, b), "RGGB")
    assert prof.a[0] == prof.a[1] == prof.a[2]
    assert prof.a[1] == pytest.approx(a, rel=0.1)
    # b is small next to a*x at these brightnesses: only its order of magnitude is identifiable.
    assert 0 <= prof.b[1] < 10 * b + 0.1 * a


def test_estimate_scene_profile_refuses_an_image_without_flat_parts():
    from nnraw.noise.profile import estimate_scene_profile

    yy, xx = np.mgrid[:256, :256]
    texture = 0.5 + 0.3 * np.sin(xx / 1.3) * np.sin(yy / 3.1)  # structured everywhere, no flat block
    with pytest.raises(ValueError, match="flat blocks"):
        estimate_scene_profile(texture, "RGGB")


def test_estimate_scene_profile_on_the_real_canon_raw(canon_dng):
    # The Canon DNG carries ISO 0; docs/NOISE.md measured a ~ 1.6e-4 on its ColorChecker patches.
    from nnraw.noise.profile import estimate_scene_profile
    from nnraw.io.raw import normalise, read_raw

    raw = read_raw(canon_dng)
    prof = estimate_scene_profile(normalise(raw)[0, 0].numpy(), raw.pattern)
    assert 0.8e-4 < prof.a[1] < 3.2e-4, prof
