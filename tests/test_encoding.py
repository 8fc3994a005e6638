"""nnraw.encoding: the white-balanced, encoded domain of the learned path."""

from __future__ import annotations

import pytest
import torch

from nnraw import encoding as E
from nnraw.training.dataset import BAYER_PATTERNS, mosaic
from nnraw.models import build_model

CONFIG = {"architecture": "half_res_residual", "domain": "srgb",
          "params": {"channels": 8, "depth": 4, "dilations": [1, 2, 2, 1]}}


@pytest.mark.parametrize("enc", E.ENCODINGS)
def test_encode_decode_round_trip_and_slope(enc):
    x = torch.linspace(-0.1, 3.5, 20001, dtype=torch.float64)
    y = E.encode(x, enc)
    assert torch.allclose(E.decode(y, enc), x, atol=1e-12, rtol=0)
    assert (y[1:] > y[:-1]).all(), "encodings must be strictly increasing (invertible, never flat)"
    h = 1e-7
    numeric = (E.encode(x + h, enc) - E.encode(x - h, enc)) / (2 * h)
    assert torch.allclose(E.slope(x, enc), numeric, atol=1e-5, rtol=1e-5)


def test_srgb_encoding_is_the_srgb_curve_on_0_1():
    from nnraw.training.unprocess import linear_to_srgb

    x = torch.linspace(0, 1, 1001, dtype=torch.float64)
    assert torch.allclose(E.encode(x, "srgb"), linear_to_srgb(x), atol=1e-12)


def test_unknown_encoding_is_named():
    with pytest.raises(ValueError, match="encoding must be one of"):
        E.encode(torch.zeros(1), "gamma22")


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
def test_encoded_pre_demosaic_keeps_every_sampled_value(pattern):
    g = torch.Generator().manual_seed(1)
    cam = torch.rand(2, 3, 40, 48, generator=g) * 0.9
    m = mosaic(cam, pattern)
    wb = torch.tensor([[2.0, 1.0, 1.6], [1.3, 1.0, 3.0]])
    out = E.pre_demosaic(m, pattern, wb, "srgb")
    assert out.shape == (2, 3, 40, 48)
    assert (mosaic(out, pattern) - m).abs().max() < 1e-6


def test_linear_encoding_is_the_seed_pre_demosaic():
    from nnraw.ops import edge_aware_demosaic

    m = mosaic(torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2)), "GRBG")
    wb = torch.tensor([2.0, 1.0, 1.5])
    assert torch.equal(E.pre_demosaic(m, "GRBG", wb, "linear"), edge_aware_demosaic(m, "GRBG", wb))


def test_encoded_pre_demosaic_is_better_on_a_held_out_photo():
    """The measurement behind the design (bench/encoding_domains.py): on a real photo, under tungsten light,
    the encoded pre-demosaic beats the linear one by more than 1 dB at ISO 100."""
    from nnraw.training import evaluate as ev

    try:
        items = ev.scenes("skimage", 2, 128)
    except FileNotFoundError as exc:
        from conftest import SHARED, need_shared

        need_shared(SHARED, f"skimage photos ({exc})")  # skips only where ../shared is absent
        raise
    wb = ev.WB_CONDITIONS["tungsten"]
    gains = []
    for k, (_, scene) in enumerate(items):
        cam = ev.camera_rgb(scene, wb)
        truth = ev.render(cam, wb)
        noisy = ev.noisy_mosaic(cam, "iso100", seed=k)
        lin = ev.psnr(ev.render(ev.pre_demosaic(noisy, wb, "linear"), wb), truth)
        enc = ev.psnr(ev.render(ev.pre_demosaic(noisy, wb, "srgb"), wb), truth)
        gains.append(enc - lin)
    assert min(gains) > 1.0, gains


def test_untrained_domain_network_returns_its_input():
    """The last convolution starts at zero: the wrapped network is the identity (encode/decode exact)."""
    net = build_model(CONFIG)
    assert net.domain == "srgb" and net.halo == 12
    x = torch.rand(2, 3, 64, 64) * 1.2 - 0.05          # below black and above white too
    wb = torch.tensor([[2.0, 1.0, 1.6], [1.0, 1.0, 1.0]])
    with torch.no_grad():
        y = E.in_domain(net, wb)(x, torch.full_like(x, 0.01))
    h = net.halo
    assert torch.allclose(y, x[..., h:-h, h:-h], atol=1e-6)


def test_linear_networks_are_not_wrapped():
    net = build_model({"architecture": "half_res_residual", "params": {"channels": 8, "depth": 3}})
    assert net.domain == "linear" and E.in_domain(net, torch.ones(3)) is net


def test_bad_domain_and_dilations_are_named():
    with pytest.raises(ValueError, match="domain must be one of"):
        build_model({**CONFIG, "domain": "xyz"})
    with pytest.raises(ValueError, match="dilations must be 4 integers"):
        build_model({**CONFIG, "params": {"channels": 8, "depth": 4, "dilations": [1, 2]}})


def test_tiled_inference_in_the_domain_equals_the_whole_image():
    """Encoding, the noise map's derivative and decoding are pointwise: tiling stays exact up to the
    last bit of the curves (ATen evaluates pow() vectorised or scalar depending on where a value falls
    in a tile's row, which may differ by one ulp; the linear-domain networks stay bit-exact)."""
    from nnraw.infer import forward_whole, run_tiled

    torch.manual_seed(0)
    net = build_model(CONFIG)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)          # a non-trivial network
    wrapped = E.in_domain(net, torch.tensor([1.3, 1.0, 3.0])).eval()
    x = torch.rand(1, 3, 90, 110)
    sigma = lambda t: 0.01 + 0.05 * t.clamp(0, 1)      # noqa: E731
    whole = forward_whole(wrapped, x, sigma)
    tiled = run_tiled(wrapped, x, sigma, tile=32)
    assert (whole - tiled).abs().max() < 2e-6
    assert (whole - x).abs().max() > 1e-3                # the network did something
