"""nnraw.noise.choose.check_against_photo: a noise profile that claims more noise than the photo shows is
scaled down to the photo (issue #17: "robust to a wrong profile"); a right one, and one that claims too
little, are kept. Synthetic mosaics with known Poisson-Gaussian noise (numpy, independent of
nnraw.noise.model), Bayer and X-Trans, and `nnraw convert` on a DNG of one.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from nnraw import cfa
from nnraw.noise.choose import CHECK_LIMIT, check_against_photo
from nnraw.noise.model import NoiseProfile

A, B = 2e-3, 2e-5                      # var = A x + B: about ISO 3200 on an APS-C camera
TRUE = NoiseProfile(a=(A,) * 3, b=(B,) * 3, name="true")
XTRANS = cfa.shifted(cfa.XTRANS, 1, 4)


def chart(h: int = 256, w: int = 384, seed: int = 0, texture: float = 0.0) -> np.ndarray:
    """Camera RGB [H, W, 3]: a grid of flat colour patches 64 px wide (levels 0.04..0.8), plus
    ``texture`` x a random pattern that varies from pixel to pixel (0: a clean chart)."""
    rng = np.random.default_rng(seed)
    patches = rng.uniform(0.04, 0.8, size=(-(-h // 64), -(-w // 64), 3))
    scene = np.repeat(np.repeat(patches, 64, 0), 64, 1)[:h, :w]
    return np.clip(scene * (1 + texture * rng.standard_normal(scene.shape)), 0, 1)


def noisy(scene: np.ndarray, seed: int = 1, a: float = A, b: float = B) -> np.ndarray:
    """Poisson-Gaussian noise per pixel and channel, clipped to [0, 1] as a raw's samples are."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.poisson(scene / a) * a + np.sqrt(b) * rng.standard_normal(scene.shape), 0, 1)


def sampled(rgb: np.ndarray, pattern: str) -> np.ndarray:
    return (np.moveaxis(rgb, -1, 0) * cfa.masks(pattern, *rgb.shape[:2])).sum(0)


@pytest.mark.parametrize("pattern", ["RGGB", "GBRG", XTRANS])
def test_the_right_profile_is_kept(pattern):
    checked, k = check_against_photo(TRUE, sampled(noisy(chart()), pattern), pattern)
    assert k == 1.0 and checked is TRUE


@pytest.mark.parametrize("pattern", ["RGGB", XTRANS])
@pytest.mark.parametrize("scale", [1.5, 3.0, 10.0])
def test_a_profile_that_claims_too_much_noise_is_scaled_to_the_photo(pattern, scale):
    wrong = TRUE.noise_times(scale)
    checked, k = check_against_photo(wrong, sampled(noisy(chart()), pattern), pattern)
    assert k == pytest.approx(1 / scale, rel=0.1)
    assert checked.a == pytest.approx(tuple(v * k * k for v in wrong.a))
    assert checked.b == pytest.approx(tuple(v * k * k for v in wrong.b))


@pytest.mark.parametrize("scale", [0.3, 0.5, 0.9])
def test_a_profile_that_claims_too_little_noise_is_kept(scale):
    """Texture could pass for noise, so the photo only bounds its noise from above: a weak profile
    stays (the network then denoises less, which never makes a photo worse)."""
    weak = TRUE.noise_times(scale)
    assert check_against_photo(weak, sampled(noisy(chart()), "RGGB"), "RGGB") == (weak, 1.0)


def test_a_profile_just_above_the_photo_is_kept():
    """Within CHECK_LIMIT of the photo's noise, the profile is trusted."""
    near = TRUE.noise_times(1 / (CHECK_LIMIT + 0.1))
    assert check_against_photo(near, sampled(noisy(chart()), "RGGB"), "RGGB")[1] == 1.0


def test_noise_clipped_at_black_is_not_taken_for_a_weaker_noise():
    """Dark patches lose the negative half of their noise to the clip at black: their variance is
    lower than the profile's, and they must not scale the right profile down."""
    dark = chart() * 0.03                    # patches at 0.001..0.024: 0.1..2.4 noise sigmas
    checked, k = check_against_photo(TRUE, sampled(noisy(dark), "RGGB"), "RGGB")
    assert k == 1.0, f"the clip at black scaled a right profile by {k:.2f}"


def test_texture_never_scales_a_right_profile_down():
    scene = chart(texture=0.2)
    assert check_against_photo(TRUE, sampled(noisy(scene), "RGGB"), "RGGB")[1] == 1.0


def test_a_photo_without_flat_areas_keeps_the_profile():
    rng = np.random.default_rng(3)
    busy = rng.uniform(0.05, 0.9, size=(128, 128, 3))           # every pixel different
    wrong = TRUE.noise_times(3)
    assert check_against_photo(wrong, sampled(busy, "RGGB"), "RGGB") == (wrong, 1.0)


def test_a_large_photo_is_checked_on_its_centre_with_the_pattern_in_phase():
    """Photos larger than CHECK_MAX_SIDE are measured on a centre crop cut at whole pattern periods;
    a crop out of phase would mix colours in one plane and see texture, not noise."""
    from nnraw.noise.choose import CHECK_MAX_SIDE

    h, w = CHECK_MAX_SIDE + 2 * 7 + 6, 600                      # the crop's top is not a multiple of 6 + 1
    scene = chart(h, w)
    checked, k = check_against_photo(TRUE.noise_times(3), sampled(noisy(scene), XTRANS), XTRANS)
    assert k == pytest.approx(1 / 3, rel=0.1)


def test_convert_tells_when_it_scales_the_profile(tmp_path):
    """`nnraw convert --profile` with a profile 3x the photo's noise: stderr says so, naming the file
    and the scale; with the right profile it says nothing of it."""
    from dng_fixtures import write_bayer_dng
    from test_cli import nnraw

    src = write_bayer_dng(tmp_path / "chart.dng", scene=noisy(chart(128, 192))).path
    right, wrong = tmp_path / "right.json", tmp_path / "wrong.json"
    TRUE.save(right)
    TRUE.noise_times(3).save(wrong)
    said, notes = {}, {}
    for prof in (right, wrong):
        proc = nnraw("convert", src, "-o", tmp_path / f"{prof.stem}.dng", "--profile", prof)
        assert proc.returncode == 0, proc.stderr
        said[prof.stem] = proc.stderr
        proc = nnraw("convert", src, "-o", tmp_path / f"{prof.stem}.dng", "--profile", prof, "--json", "--overwrite")
        assert proc.returncode == 0, proc.stderr
        notes[prof.stem] = json.loads(proc.stdout)["results"][0]["notes"]
    assert "claims more noise" not in said["right"] and notes["right"] == [], (said["right"], notes["right"])
    told = (r"chart\.dng: the noise profile \(true\) claims more noise than the photo's flat areas show: the network "
            r"is told 0\.3\d x its noise")
    assert re.search(told, said["wrong"]), said["wrong"]
    assert len(notes["wrong"]) == 1 and re.search(told, notes["wrong"][0]), notes["wrong"]


@pytest.mark.parametrize("pattern, size", [("RGGB", (1, 1)), ("RGGB", (15, 9)), (XTRANS, (42, 42)), (XTRANS, (6, 6))])
def test_an_image_smaller_than_a_block_keeps_the_profile(pattern, size):
    """A tiny crop has no 8x8 block of same-colour pixels: nothing to measure, the profile stays."""
    mosaic = sampled(noisy(chart(*size)), pattern)
    wrong = TRUE.noise_times(3)
    assert check_against_photo(wrong, mosaic, pattern) == (wrong, 1.0)


def test_a_tiny_flat_xtrans_crop_is_measured():
    """43x50 px: one block in some of the 36 planes and none in others (this crashed `nnraw convert`
    on a 43x50 X-Trans DNG before the planes without a block were skipped)."""
    mosaic = sampled(noisy(chart(43, 50)), XTRANS)               # inside one flat patch
    assert check_against_photo(TRUE.noise_times(3), mosaic, XTRANS)[1] == pytest.approx(1 / 3, rel=0.2)
