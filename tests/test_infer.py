"""Tiled inference (nnraw.infer): exactness against the whole-image computation, coverage, errors.

The networks here are small stand-ins defined in this file that follow the models/ interface:
``halo`` (even), ``noise_conditioned``, ``forward(rgb [N,3,H+2h,W+2h], sigma | None) -> [N,3,H,W]``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nnraw.infer import (
    TileGrid,
    denoise_camera_rgb,
    forward_whole,
    reflect_indices,
    reflect_pad,
    run_tiled,
)


class TwoLayerNet(nn.Module):
    """Valid 5x5 -> PReLU -> valid 5x5: halo 4, no noise input."""

    halo = 4
    noise_conditioned = False

    def __init__(self, width: int = 8):
        super().__init__()
        self.c1 = nn.Conv2d(3, width, 5)
        self.act = nn.PReLU(width, 0.1)
        self.c2 = nn.Conv2d(width, 3, 5)

    def forward(self, rgb, sigma=None):
        return self.c2(self.act(self.c1(rgb)))


class NoiseResidualNet(nn.Module):
    """Noise-conditioned residual net: concat(rgb, sigma) -> 5x5 -> ReLU -> 5x5 -> 1x1, halo 4."""

    halo = 4
    noise_conditioned = True

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(6, 12, 5), nn.ReLU(), nn.Conv2d(12, 12, 5), nn.ReLU(),
                                  nn.Conv2d(12, 3, 1))

    def forward(self, rgb, sigma):
        h = self.halo
        return rgb[:, :, h:-h, h:-h] + self.body(torch.cat([rgb, sigma], 1))


class SeedNet(nn.Module):
    """The reference system's 9-5-5 architecture (random weights), halo 8."""

    halo = 8
    noise_conditioned = False

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 64, 9), nn.PReLU(64, 0.1), nn.Conv2d(64, 64, 5),
                                  nn.PReLU(64, 0.1), nn.Conv2d(64, 3, 5))

    def forward(self, rgb, sigma=None):
        return self.body(rgb - 0.5) + 0.5


def _image(n=1, h=70, w=94, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, h, w, generator=g)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("tile", [16, 30, 64, 500])
def test_tiled_equals_whole_bit_exact(tile, channels_last):
    # 70 x 94: 16, 30 and 64 do not divide it; 500 is larger than the image.
    model = TwoLayerNet().eval()
    x = _image()
    whole = forward_whole(model, x, channels_last=channels_last)
    tiled = run_tiled(model, x, tile=tile, device="cpu", channels_last=channels_last)
    assert tiled.shape == x.shape and tiled.dtype == torch.float32
    assert torch.equal(tiled, whole), f"max |diff| {(tiled - whole).abs().max().item()}"


def test_tiled_equals_plain_pad_then_forward():
    """The definition in its plainest form: F.pad(reflect) then the model (contiguous format)."""
    model = SeedNet().eval()
    x = _image(h=90, w=66, seed=3)
    with torch.inference_mode():
        plain = model(F.pad(x, (8, 8, 8, 8), mode="reflect"))
    for tile in (24, 40, 128):
        tiled = run_tiled(model, x, tile=tile, device="cpu", channels_last=False)
        assert torch.equal(tiled, plain), f"tile {tile}: max |diff| {(tiled - plain).abs().max().item()}"


@pytest.mark.parametrize("batch", [1, 3, 7])
def test_batching_does_not_change_the_result(batch):
    model = SeedNet().eval()
    x = _image(n=2, h=64, w=80, seed=5)
    whole = forward_whole(model, x)
    tiled = run_tiled(model, x, tile=28, batch=batch, device="cpu")
    assert torch.equal(tiled, whole)


@pytest.mark.parametrize("as_function", [False, True])
def test_noise_conditioned_with_sigma_map_or_function(as_function):
    model = NoiseResidualNet().eval()
    x = _image(h=52, w=46, seed=7)
    sigma_map = 0.02 + 0.1 * x.clamp(0, 1).sqrt()
    sigma = (lambda t: 0.02 + 0.1 * t.clamp(0, 1).sqrt()) if as_function else sigma_map
    whole = forward_whole(model, x, sigma_map)
    tiled = run_tiled(model, x, sigma, tile=18, batch=2, device="cpu")
    assert torch.equal(tiled, whole)
    # The noise input matters (otherwise this test could not tell a dropped sigma).
    other = run_tiled(model, x, sigma_map * 3, tile=18, device="cpu")
    assert not torch.equal(other, whole)


@pytest.mark.parametrize("shape", [(37, 53), (5, 9), (200, 6)])
def test_odd_and_tiny_images(shape):
    model = TwoLayerNet().eval()
    x = _image(h=shape[0], w=shape[1], seed=11)
    whole = forward_whole(model, x)
    assert torch.equal(run_tiled(model, x, tile=16, device="cpu"), whole)


def test_every_output_pixel_written_no_black_frame():
    model = SeedNet().eval()
    x = 0.2 + 0.6 * _image(h=77, w=101, seed=13)
    out = torch.full_like(x, float("nan"))
    res = run_tiled(model, x, tile=32, device="cpu", out=out)
    assert res is out
    assert torch.isfinite(out).all(), "some output pixels were never written"
    # The outer 8 px (the reference system's black frame) carry image content, not zeros.
    frame = torch.cat([out[..., :8, :].flatten(), out[..., -8:, :].flatten(),
                       out[..., :, :8].flatten(), out[..., :, -8:].flatten()])
    assert (frame != 0).all()
    # ... and they equal the whole-image computation there too.
    assert torch.equal(out, forward_whole(model, x))


def test_reflect_indices_match_f_pad():
    for n in (5, 9, 16):
        base = torch.arange(n, dtype=torch.float32).reshape(1, 1, 1, n)
        padded = F.pad(base, (4, 4, 0, 0), mode="reflect").flatten().long()
        assert torch.equal(reflect_indices(-4, n + 4, n), padded)
    # Far beyond the image it keeps mirroring and stays in range.
    far = reflect_indices(-50, 60, 7)
    assert far.min() >= 0 and far.max() <= 6


def test_tile_grid_same_size_even_origins_cover_image():
    grid = TileGrid.plan(4000, 6000, 512, 8)
    assert grid.th % 2 == 0 and grid.tw % 2 == 0 and grid.th <= 512 and grid.tw <= 512
    ys = sorted({y for y, _ in grid.origins})
    xs = sorted({x for _, x in grid.origins})
    assert all(y % 2 == 0 for y in ys) and all(x % 2 == 0 for x in xs)
    assert ys[-1] + grid.th >= 4000 and xs[-1] + grid.tw >= 6000
    assert ys[-1] < 4000 and xs[-1] < 6000
    # Balanced: the waste past the image is less than one tile row/column of 2 px per tile.
    assert len(ys) * grid.th - 4000 < 2 * len(ys)
    odd = TileGrid.plan(37, 53, 15, 4)  # odd tile request rounds down to even
    assert odd.th % 2 == 0 and odd.tw % 2 == 0 and odd.th <= 14


def test_progress_reports_all_tiles():
    model = TwoLayerNet().eval()
    seen = []
    run_tiled(model, _image(h=40, w=40), tile=16, batch=2, device="cpu", progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (9, 9) and [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_errors_name_the_op_and_values():
    model = TwoLayerNet().eval()
    with pytest.raises(ValueError, match=r"nnraw.infer: rgb must have shape \[N, 3, H, W\], got \[1, 4, 20, 20\]"):
        run_tiled(model, torch.rand(1, 4, 20, 20), device="cpu")
    with pytest.raises(TypeError, match="rgb must be float32, got torch.float64"):
        run_tiled(model, torch.rand(1, 3, 20, 20, dtype=torch.float64), device="cpu")
    with pytest.raises(ValueError, match="3x20 is too small for a model with halo 4"):
        run_tiled(model, torch.rand(1, 3, 3, 20), device="cpu")
    with pytest.raises(ValueError, match="noise-conditioned: pass sigma"):
        run_tiled(NoiseResidualNet(), torch.rand(1, 3, 20, 20), device="cpu")
    with pytest.raises(ValueError, match=r"sigma must have the image's shape \[1, 3, 20, 20\], got \[1, 3, 20, 21\]"):
        run_tiled(NoiseResidualNet(), torch.rand(1, 3, 20, 20), torch.rand(1, 3, 20, 21), device="cpu")
    with pytest.raises(ValueError, match="precision 'float16' is only offered on CUDA"):
        run_tiled(model, torch.rand(1, 3, 20, 20), device="cpu", precision="float16")
    with pytest.raises(ValueError, match="precision must be one of auto, float32, float16, bfloat16, got 'fp8'"):
        run_tiled(model, torch.rand(1, 3, 20, 20), device="cpu", precision="fp8")

    class OddHalo(TwoLayerNet):
        halo = 3

    with pytest.raises(ValueError, match="model.halo must be even and >= 0 \\(CFA phase\\), got 3"):
        run_tiled(OddHalo(), torch.rand(1, 3, 20, 20), device="cpu")

    class WrongHalo(TwoLayerNet):
        halo = 2  # the convolutions really consume 4

    with pytest.raises(ValueError, match=r"returned \[\d, 3, 12, 12\] .* expected \[\d, 3, 16, 16\]"):
        run_tiled(WrongHalo(), torch.rand(1, 3, 16, 16), tile=16, device="cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="device 'cuda' requested but CUDA is not available"):
            run_tiled(model, torch.rand(1, 3, 20, 20), device="cuda")


def test_denoise_camera_rgb_with_module_and_constant_sigma():
    model = NoiseResidualNet().eval()
    x = _image(h=48, w=40, seed=17)
    got = denoise_camera_rgb(x, model=model, sigma=0.05, device="cpu", tile=20)
    want = forward_whole(model, x, torch.full_like(x, 0.05))
    assert torch.equal(got, want)


def test_denoise_camera_rgb_profile_from_iso():
    from nnraw.noise import model as noise
    model = NoiseResidualNet().eval()
    x = _image(h=64, w=72, seed=19) * 1.2 - 0.1  # some values outside [0, 1]
    got = denoise_camera_rgb(x, model=model, iso=1600, device="cpu", tile=24)
    prof = noise.reference_profile(1600)
    want = forward_whole(model, x, prof.sigma_map(x.clamp(0, 1)))
    assert torch.equal(got, want)
    with pytest.raises(ValueError, match="ISO is unknown.*pass --iso N or --profile FILE"):
        denoise_camera_rgb(x, model=model, device="cpu")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("precision,tol", [("float32", 1e-4), ("float16", 2e-2), ("bfloat16", 5e-2)])
def test_cuda_pipelined_matches_cpu(precision, tol):
    model = SeedNet().eval()
    x = _image(n=2, h=130, w=170, seed=23)
    cpu = forward_whole(model, x)
    gpu = run_tiled(model, x, tile=48, batch=3, device="cuda", precision=precision)  # host image: pipelined
    assert gpu.device.type == "cpu"
    assert (gpu - cpu).abs().max().item() < tol
    on_dev = run_tiled(model.cuda(), x.cuda(), tile=48, batch=3, device="cuda", precision=precision)
    assert on_dev.device.type == "cuda"
    assert (on_dev.cpu() - cpu).abs().max().item() < tol


def test_noise_profile_choice_order(tmp_path):
    from nnraw.noise import model as noise
    from types import SimpleNamespace

    from nnraw.noise.choose import _darktable_table, choose_noise_profile

    unknown = SimpleNamespace(make="Nobody", model="Camera 1", iso=800, wb=[2.0, 1.0, 1.5])
    prof, origin = choose_noise_profile(raw=unknown)
    assert origin.startswith("reference") and prof.a == noise.reference_profile(800).a
    prof, origin = choose_noise_profile(raw=unknown, iso=3200)  # --iso overrides the metadata
    assert prof.a == noise.reference_profile(3200).a
    given = noise.NoiseProfile((1e-3,) * 3, (1e-5,) * 3, name="test")
    path = tmp_path / "p.json"
    given.save(path)
    prof, origin = choose_noise_profile(profile=path, raw=unknown)
    assert prof.a == given.a and prof.b == given.b and str(path) in origin
    # No ISO in the metadata: the noise is measured on the flat parts of the image itself ...
    rng = np.random.default_rng(3)
    flat = np.kron(rng.uniform(0.05, 0.8, (6, 6)), np.ones((64, 64)))
    noisy = np.clip(rng.poisson(flat / 1e-3) * 1e-3, 0, 1)
    no_iso = SimpleNamespace(make="Nobody", model="Camera 1", iso=None, wb=None, pattern="RGGB",
                             mosaic=np.round(noisy * 65535).astype(np.uint16),
                             black_levels=np.zeros(4), white_level=65535)
    prof, origin = choose_noise_profile(raw=no_iso)
    assert origin.startswith("estimated from the image") and prof.a[1] == pytest.approx(1e-3, rel=0.15)
    # ... and where it has none, the gentlest table entry is used and the user is told what to pass.
    yy, xx = np.mgrid[:256, :256]
    no_iso.mosaic = np.round((0.5 + 0.3 * np.sin(xx / 1.3) * np.sin(yy / 3.1)) * 65535).astype(np.uint16)
    with pytest.warns(RuntimeWarning, match="Nobody Camera 1 metadata has ISO None.*flat blocks.*pass --iso N"):
        prof, origin = choose_noise_profile(raw=no_iso)
    assert prof == noise.reference_profile(100) and origin.startswith("assumed ISO 100")
    assert _darktable_table() is not None, "darktable's noiseprofiles.json is not installed (`make system-deps`)"
    canon = SimpleNamespace(make="Canon", model="EOS 550D", iso=800, wb=[2.0, 1.0, 1.5])
    prof, origin = choose_noise_profile(raw=canon)
    assert origin.startswith("darktable profile Canon EOS 550D")
    assert prof.a != noise.reference_profile(800).a


@pytest.mark.parametrize("config", [
    {"architecture": "half_res_residual", "params": {"channels": 16, "depth": 4}},
    {"architecture": "half_res_residual", "params": {"channels": 16, "depth": 4, "dilations": [1, 2, 4, 1]}},
    {"architecture": "reference", "params": {}},
])
def test_shipped_architectures_tile_exactly(config):
    """The real architectures of nnraw.models (random weights): tiled == whole, bit for bit."""
    from nnraw import models
    model = models.build_model(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.05)  # the default's last layer starts at zero: make the body matter
    x = _image(h=150, w=206, seed=29)
    sigma = torch.full_like(x, 0.03) if model.noise_conditioned else None
    whole = forward_whole(model, x, sigma)
    for tile in (40, 64, 100):
        assert torch.equal(run_tiled(model, x, sigma, tile=tile, device="cpu"), whole), f"tile {tile}"


def test_convert_runs_the_network_stage_end_to_end(tmp_path, monkeypatch):
    """nnraw convert --model default through denoise_camera_rgb, with an untrained default saved to a
    temporary weights folder: its last layer starts at zero, so it must return the pre-demosaic."""
    from nnraw import models
    from nnraw import convert
    from dng_fixtures import write_bayer_dng

    config = {"architecture": "half_res_residual", "params": {"channels": 8, "depth": 3}}
    monkeypatch.setattr(models, "WEIGHTS_DIR", tmp_path / "weights")
    models.save_model(models.build_model(config), config, "default", dtype=torch.float32)
    raw_file = write_bayer_dng(tmp_path / "in.dng", size=(64, 96), pattern="GRBG")
    raw = convert.read(raw_file.path)
    plain = convert.pre_demosaic(convert.normalise_mosaic(raw), raw.pattern, raw.wb)
    out = convert.network(plain, raw, model="default", iso=800, device="cpu")
    assert torch.equal(out, plain)
    result = convert.convert_file(raw_file.path, tmp_path / "out.dng", model="default", iso=800, device="cpu")
    assert result.ok, result.error
    assert result.stages["network"] > 0


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (5, 2), (9, 33), (40, 40)])
def test_mirrored_to_keeps_the_top_left_and_mirrors_bottom_and_right(shape):
    from nnraw.infer import mirrored_to

    x = torch.arange(float(shape[0] * shape[1])).reshape(1, 1, *shape).expand(1, 3, *shape).contiguous()
    y = mirrored_to(x, 34)
    h, w = shape
    assert y.shape[-2] == max(h + h % 2, 34) and y.shape[-1] == max(w + w % 2, 34)
    assert torch.equal(y[..., :h, :w], x)                         # the photo itself, at [0, 0]
    if 1 < h < y.shape[-2]:
        assert torch.equal(y[..., h, :w], x[..., h - 2, :])       # reflection without repeating the edge row
    if 1 < w < y.shape[-1]:
        assert torch.equal(y[..., :h, w], x[..., :, w - 2])
    assert set(y.unique().tolist()) <= set(x.unique().tolist())    # nothing but the photo's own pixels
