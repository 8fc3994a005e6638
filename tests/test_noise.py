"""nnraw.noise.model: profiles, ISO interpolation, and the Poisson-Gaussian synthesiser's statistics."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from nnraw.noise.model import (A_RANGE, NVIDIA_PROFILE, PENTAX_K3_ALPHA, NoiseProfile, add_noise, random_noise_params,
                         random_profile, reference_profile, sigma_map)

# Flat levels far enough from 0 and 1 (> 3.5 sigma) that clipping does not bias the variance.
LEVELS = (0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6)


def flat_levels(channels: int, rows: int, device="cpu") -> torch.Tensor:
    """[1, C, rows, 2 * len(LEVELS)]: each pair of columns one flat level (pairs keep mosaics phase-aligned)."""
    x = torch.tensor(LEVELS, device=device).repeat_interleave(2)
    return x.view(1, 1, 1, -1).expand(1, channels, rows, x.numel()).contiguous()


def fit_line(mean: np.ndarray, var: np.ndarray) -> tuple[float, float]:
    a, b = np.polyfit(mean, var, 1)
    return float(a), float(b)


@pytest.mark.parametrize("a", [0.004, 0.0012])
def test_rgb_noise_statistics_match_profile(device, a):
    # Read noise comparable to shot noise in the range measured, so both are measurable to 5 %.
    profile = NoiseProfile((a, a * 0.5, a * 2), (0.15 * a, 0.1 * a, 0.2 * a))
    clean = flat_levels(3, 100000, device)
    gen = torch.Generator(device=device).manual_seed(1)
    noisy = add_noise(clean, profile, generator=gen)
    assert noisy.shape == clean.shape and noisy.device == clean.device
    assert noisy.min() >= 0 and noisy.max() <= 1
    diff = (noisy - clean).double().cpu()
    for c in range(3):
        var = diff[0, c].var(0)[::2].numpy()
        mean = clean[0, c].double().cpu().mean(0)[::2].numpy()
        a_fit, b_fit = fit_line(mean, var)
        assert a_fit == pytest.approx(profile.a[c], rel=0.05), (c, a_fit, b_fit)
        assert b_fit == pytest.approx(profile.b[c], rel=0.05), (c, a_fit, b_fit)


@pytest.mark.parametrize("pattern", ["RGGB", "GBRG"])
def test_mosaic_noise_uses_each_sites_channel(device, pattern):
    profile = NoiseProfile((0.001, 0.003, 0.006), (2e-4, 3e-4, 6e-4))
    clean = flat_levels(1, 200000, device)
    noisy = add_noise(clean, profile, generator=torch.Generator(device=device).manual_seed(2), pattern=pattern)
    diff = (noisy - clean).double().cpu()[0, 0]
    for k, colour in enumerate(pattern):
        dy, dx = divmod(k, 2)
        var = diff[dy::2, dx::2].var(0).numpy()
        mean = clean[0, 0, dy::2, dx::2].double().cpu().mean(0).numpy()
        a_fit, b_fit = fit_line(mean, var)
        c = "RGB".index(colour)
        assert a_fit == pytest.approx(profile.a[c], rel=0.05), (colour, a_fit)
        assert b_fit == pytest.approx(profile.b[c], rel=0.05), (colour, b_fit)


def test_per_sample_parameters_and_generator_reproducibility():
    clean = torch.full((2, 3, 256, 256), 0.3)
    a = torch.tensor([1e-4, 4e-3])
    b = torch.tensor([0.0, 1e-4])
    n1 = add_noise(clean, (a, b), generator=torch.Generator().manual_seed(5))
    n2 = add_noise(clean, (a, b), generator=torch.Generator().manual_seed(5))
    assert torch.equal(n1, n2)
    var = (n1 - clean).var(dim=(1, 2, 3))
    expected = a * 0.3 + b
    assert torch.allclose(var, expected, rtol=0.05)


def test_add_noise_errors():
    with pytest.raises(ValueError, match=r"add_noise: a mosaic needs pattern"):
        add_noise(torch.zeros(1, 1, 4, 4), NVIDIA_PROFILE)
    with pytest.raises(ValueError, match=r"add_noise: clean must have shape \[N, 3, H, W\].*got \[3, 4, 4\]"):
        add_noise(torch.zeros(3, 4, 4), NVIDIA_PROFILE)
    with pytest.raises(ValueError, match=r"got 1 profiles for a batch of 2"):
        add_noise(torch.zeros(2, 3, 4, 4), [NVIDIA_PROFILE])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (a generator on another device)")
def test_add_noise_generator_device_mismatch():
    with pytest.raises(ValueError, match=r"add_noise: the generator is on cuda.* but clean is on cpu"):
        add_noise(torch.zeros(1, 3, 4, 4), NVIDIA_PROFILE, generator=torch.Generator(device="cuda"))


def test_reference_profile_hits_table_values_exactly():
    for iso, alpha in PENTAX_K3_ALPHA.items():
        p = reference_profile(iso)
        assert p.a == (alpha,) * 3 and p.b == (0.0,) * 3


def test_reference_profile_log_log_interpolation_and_extrapolation():
    # Halfway in log ISO between 800 and 1600 -> halfway in log alpha.
    iso = math.sqrt(800 * 1600)
    expected = math.sqrt(PENTAX_K3_ALPHA[800] * PENTAX_K3_ALPHA[1600])
    assert reference_profile(iso).a[0] == pytest.approx(expected, rel=1e-12)
    isos = [100, 141, 200, 283, 400, 1000, 2500, 6400]
    alphas = [reference_profile(i).a[0] for i in isos]
    assert alphas == sorted(alphas)
    assert reference_profile(50).a[0] == PENTAX_K3_ALPHA[100]           # extended low ISO: base gain
    assert reference_profile(12800).a[0] == pytest.approx(2 * PENTAX_K3_ALPHA[6400])
    with pytest.raises(ValueError, match="iso must be a positive number, got -1"):
        reference_profile(-1)


def test_profile_json_round_trip(tmp_path):
    p = NoiseProfile((1e-3, 2e-3, 3e-3), (1e-6, -2e-7, 0.0), name="test cam ISO 800")
    assert NoiseProfile.from_json(p.to_json()) == p
    assert NoiseProfile.from_json(json.dumps(p.to_json())) == p
    path = tmp_path / "p.json"
    p.save(path)
    assert NoiseProfile.load(path) == p
    assert [f.name for f in tmp_path.iterdir()] == ["p.json"]          # no temporary left behind
    (tmp_path / "bad.json").write_text('{"hello": 1}')
    with pytest.raises(ValueError, match=r"bad.json is not a noise profile"):
        NoiseProfile.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match=r"a must have 3 values \(R, G, B\), got 2"):
        NoiseProfile((1.0, 2.0), (0, 0, 0))
    with pytest.raises(ValueError, match=r"a must be >= 0"):
        NoiseProfile((-1e-3, 0, 0), (0, 0, 0))


def test_variance_and_sigma_map():
    p = NoiseProfile((1e-3, 2e-3, 4e-3), (1e-5, 0.0, -1e-5))
    x = torch.rand(2, 3, 8, 8)
    var = p.variance(x)
    assert torch.allclose(var[:, 1], 2e-3 * x[:, 1])
    assert (var >= 0).all()
    s = p.sigma_map(x)
    assert s.shape == x.shape and torch.allclose(s, var.sqrt())
    a, b = p.tensors()
    assert torch.allclose(sigma_map(x, a, b), s)
    assert torch.allclose(p.variance(torch.tensor([0.5, 0.5, 0.5])), torch.tensor([5.1e-4, 1e-3, 1.99e-3]))
    assert NVIDIA_PROFILE.a == (0.005,) * 3 and NVIDIA_PROFILE.b == (0.0001,) * 3


def test_random_profiles_cover_the_range_with_brooks_read_noise():
    a, b = random_noise_params(4000, torch.Generator().manual_seed(0))
    assert a.shape == (4000, 3) and torch.equal(a[:, 0], a[:, 2])
    assert a.min() >= A_RANGE[0] and a.max() <= A_RANGE[1]
    assert a.max() > NVIDIA_PROFILE.a[0] and a.min() < PENTAX_K3_ALPHA[100]
    la, lb = a[:, 0].double().log().numpy(), b[:, 0].double().log().numpy()
    slope, intercept = np.polyfit(la, lb, 1)
    assert slope == pytest.approx(2.18, abs=0.05) and intercept == pytest.approx(1.20, abs=0.3)
    assert np.std(lb - (2.18 * la + 1.20)) == pytest.approx(0.26, rel=0.1)
    p = random_profile(torch.Generator().manual_seed(3))
    assert isinstance(p, NoiseProfile) and A_RANGE[0] <= p.a[0] <= A_RANGE[1]
