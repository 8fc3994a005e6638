"""`nnraw denoise-rgb` (nnraw.denoise_rgb): formats, bit depths, sRGB round trips, noise levels, errors.

Small stand-in networks that follow the models/ interface are defined here; the test that runs
the shipped "default" network skips until nnraw.models is in the build.
"""

from __future__ import annotations

import imagecodecs
import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from torch import nn

from nnraw.cli import main
from nnraw.denoise_rgb import (
    DenoiseRGBError,
    denoise_rgb_file,
    linear_to_srgb,
    read_rgb,
    srgb_decoding_slope,
    srgb_to_linear,
)
from nnraw.infer import forward_whole


class CentreCrop(nn.Module):
    """The identity as a 'network' with halo 2: output = the input's centre."""

    halo = 2
    noise_conditioned = False

    def forward(self, rgb, sigma=None):
        return rgb[:, :, 2:-2, 2:-2].clone()


class SigmaEcho(nn.Module):
    """Returns the noise map it was given (centre): shows what sigma the command computed."""

    halo = 2
    noise_conditioned = True

    def forward(self, rgb, sigma):
        return sigma[:, :, 2:-2, 2:-2].clone()


class SmallDenoiser(nn.Module):
    halo = 4
    noise_conditioned = True

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(6, 8, 5), nn.ReLU(), nn.Conv2d(8, 3, 5))

    def forward(self, rgb, sigma):
        return rgb[:, :, 4:-4, 4:-4] + self.body(torch.cat([rgb, sigma], 1))


def _rand(shape, seed=0):
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def test_float_tiff_linear_matches_network(tmp_path):
    torch.manual_seed(0)
    model = SmallDenoiser().eval()
    src, dst = tmp_path / "in.tif", tmp_path / "out.tif"
    img = _rand((70, 90, 3), 1)
    tifffile.imwrite(src, img, photometric="rgb")
    denoise_rgb_file(src, dst, noise_std=0.03, linear=True, model=model, device="cpu", tile=32,
                     resample_bayer=False)
    out = tifffile.imread(dst)
    assert out.dtype == np.float32 and out.shape == img.shape
    x = torch.from_numpy(img.transpose(2, 0, 1).copy())[None]
    want = forward_whole(model, x, torch.full_like(x, 0.03))[0].numpy().transpose(1, 2, 0)
    np.testing.assert_array_equal(out, want)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif", "out.tif"]  # no temp file left


@pytest.mark.parametrize("resample", [False, True])
def test_linear_noise_std_is_the_constant_noise_map(tmp_path, resample):
    """The network sees std S/gain per channel (camera units when resampled); back in the file's units: S."""
    src, dst = tmp_path / "in.tif", tmp_path / "out.tif"
    tifffile.imwrite(src, _rand((20, 24, 3), 2), photometric="rgb")
    denoise_rgb_file(src, dst, noise_std=0.05, linear=True, model=SigmaEcho(), device="cpu", resample_bayer=resample)
    np.testing.assert_allclose(tifffile.imread(dst), np.float32(0.05), rtol=1e-6)


def test_srgb_noise_std_is_carried_through_the_decoding_slope(tmp_path):
    src, dst = tmp_path / "in.tif", tmp_path / "out.tif"
    enc = np.rint(_rand((16, 18, 3), 3) * 65535).astype(np.uint16)
    tifffile.imwrite(src, enc, photometric="rgb")
    img = read_rgb(src)
    assert img.srgb and img.dtype == np.uint16
    lin = srgb_to_linear(torch.from_numpy(img.rgb))
    want = 0.01 * srgb_decoding_slope(lin)
    from nnraw.denoise_rgb import denoise_rgb_array

    got = denoise_rgb_array(lin.numpy(), noise_std=0.01, srgb=True, model=SigmaEcho(), device="cpu",
                            resample_bayer=False)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-6, atol=0)


def test_srgb_curve_and_slope():
    v = torch.linspace(0, 1, 1001, dtype=torch.float64)
    assert torch.allclose(linear_to_srgb(srgb_to_linear(v)), v, atol=1e-12)
    lin = srgb_to_linear(v)[1:-1]
    eps = 1e-7
    numeric = (srgb_to_linear(linear_to_srgb(lin) + eps) - srgb_to_linear(linear_to_srgb(lin) - eps)) / (2 * eps)
    assert torch.allclose(srgb_decoding_slope(lin), numeric, rtol=1e-4)


@pytest.mark.parametrize("fmt,dtype,channels", [
    ("png", np.uint8, 3), ("png", np.uint8, 4), ("png", np.uint8, 1),
    ("png", np.uint16, 3), ("tif", np.uint16, 3), ("tif", np.uint8, 2), ("tif", np.float32, 4),
])
def test_identity_round_trip_keeps_format_depth_alpha(tmp_path, fmt, dtype, channels):
    """Through the identity network every format comes back unchanged (sRGB decode/encode is exact)."""
    rng = np.random.default_rng(4)
    shape = (21, 17) if channels == 1 else (21, 17, channels)
    if np.issubdtype(dtype, np.integer):
        arr = rng.integers(0, np.iinfo(dtype).max + 1, size=shape, dtype=np.uint32).astype(dtype)
    else:
        arr = rng.random(shape, dtype=np.float32) * 1.5 - 0.2  # linear float: outside [0, 1] kept
    src, dst = tmp_path / f"in.{fmt}", tmp_path / f"out.{fmt}"
    if fmt == "png" and dtype == np.uint16:
        src.write_bytes(imagecodecs.png_encode(arr))  # Pillow cannot write 16-bit RGB PNGs
    elif fmt == "png":
        Image.fromarray(arr).save(src)
    else:
        photometric = "rgb" if channels >= 3 else "minisblack"
        tifffile.imwrite(src, arr, photometric=photometric, extrasamples=["unassalpha"] if channels in (2, 4) else None)
    denoise_rgb_file(src, dst, noise_std=0.0, model=CentreCrop(), device="cpu", resample_bayer=False)
    back = read_rgb(dst)
    again = read_rgb(src)
    assert back.dtype == again.dtype and back.grey == again.grey
    np.testing.assert_array_equal(back.rgb, again.rgb)
    if channels in (2, 4):
        np.testing.assert_array_equal(back.alpha, arr[..., -1])
    else:
        assert back.alpha is None


def test_errors_name_the_file(tmp_path):
    src = tmp_path / "in.tif"
    with pytest.raises(DenoiseRGBError, match=r"in.tif: no such file"):
        denoise_rgb_file(src, tmp_path / "out.tif", noise_std=0.1, model=CentreCrop())
    tifffile.imwrite(src, np.full((8, 8, 3), np.nan, np.float32), photometric="rgb")
    with pytest.raises(DenoiseRGBError, match=r"in.tif: the image holds NaN or infinite values"):
        denoise_rgb_file(src, tmp_path / "out.tif", noise_std=0.1, model=CentreCrop())
    with pytest.raises(DenoiseRGBError, match=r"out.jpg: unsupported output format '.jpg'"):
        denoise_rgb_file(src, tmp_path / "out.jpg", noise_std=0.1, model=CentreCrop())
    tifffile.imwrite(src, _rand((8, 8, 3)), photometric="rgb")
    with pytest.raises(DenoiseRGBError, match=r"out.png: PNG cannot hold float samples"):
        denoise_rgb_file(src, tmp_path / "out.png", noise_std=0.1, model=CentreCrop())
    with pytest.raises(DenoiseRGBError, match="would overwrite the input"):
        denoise_rgb_file(src, src, noise_std=0.1, model=CentreCrop())
    with pytest.raises(DenoiseRGBError, match=r"--noise-std must be a noise std in \[0, 1\], got 2.0"):
        denoise_rgb_file(src, tmp_path / "o.tif", noise_std=2.0, model=SigmaEcho())
    with pytest.raises(DenoiseRGBError, match="noise-conditioned: pass --noise-std N"):
        denoise_rgb_file(src, tmp_path / "o.tif", model=SigmaEcho())
    tifffile.imwrite(src, _rand((8, 8, 5)), photometric="minisblack", planarconfig="contig")
    with pytest.raises(DenoiseRGBError, match=r"expected a grey, grey\+alpha, RGB or RGBA image, got samples of shape \[8, 8, 5\]"):
        denoise_rgb_file(src, tmp_path / "o.tif", noise_std=0.1, model=CentreCrop())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif"]  # nothing half-written


def test_cli_reports_errors_with_the_file(tmp_path, capsys):
    missing = tmp_path / "missing.tif"
    assert main(["denoise-rgb", str(missing), str(tmp_path / "o.tif"), "--linear", "--noise-std", "0.02"]) == 2
    assert f"{missing}: no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: --iso and --noise-std exclude each other
        main(["denoise-rgb", "a.tif", "b.tif", "--iso", "800", "--noise-std", "0.1"])


def _default_model():
    """The shipped default network must be there (its weights are in git): fail, never skip."""
    from nnraw import models

    assert "default" in models.available_models(), models.available_models()


def _noisy_ramp():
    clean = np.tile(np.linspace(0.05, 0.8, 96, dtype=np.float32)[None, :, None], (64, 1, 3))
    noisy = clean + np.random.default_rng(5).normal(0, 0.03, clean.shape).astype(np.float32)
    return clean, noisy


def test_gimp_call_with_the_default_model(tmp_path):
    """Exactly what the GIMP plug-in runs: float32 RGB TIFF, --linear --noise-std N --strength S, shipped weights."""
    _default_model()
    src, dst = tmp_path / "in.tif", tmp_path / "out.tif"
    _, noisy = _noisy_ramp()
    tifffile.imwrite(src, noisy, photometric="rgb")
    outs = {}
    for strength in ("1", "0.5"):
        dst = tmp_path / f"out-{strength}.tif"
        assert main(["denoise-rgb", str(src), str(dst), "--linear", "--noise-std", "0.03", "--strength", strength,
                     "--device", "cpu"]) == 0
        outs[strength] = out = tifffile.imread(dst)
        assert out.dtype == np.float32 and out.shape == noisy.shape and np.isfinite(out).all()
        assert not np.array_equal(out, noisy)  # the network ran
    # --strength reaches the network: half strength leaves the result nearer the noisy input
    change = {k: float(np.abs(v - noisy).mean()) for k, v in outs.items()}
    assert change["0.5"] < 0.9 * change["1"], change


def test_default_model_reduces_rgb_noise():
    """The shipped default on i.i.d. RGB noise (std 0.03 on a ramp), through the four Bayer samplings;
    fed the RGB directly, the raw-trained network removes far less (printed for the record)."""
    _default_model()
    from nnraw.denoise_rgb import denoise_rgb_array

    clean, noisy = _noisy_ramp()
    err_in = np.abs(noisy - clean)[8:-8, 8:-8].mean()
    out = denoise_rgb_array(noisy, noise_std=0.03, model="default", device="cpu")
    direct = denoise_rgb_array(noisy, noise_std=0.03, model="default", device="cpu", resample_bayer=False)
    err_out = np.abs(out - clean)[8:-8, 8:-8].mean()
    err_direct = np.abs(direct - clean)[8:-8, 8:-8].mean()
    print(f"mean |error|: noisy {err_in:.4f}, Bayer-resampled {err_out:.4f}, RGB fed directly {err_direct:.4f}")
    assert err_out < 0.6 * err_in
    np.testing.assert_allclose(out.mean(axis=(0, 1)), clean.mean(axis=(0, 1)), atol=0.005)  # no colour cast


@pytest.mark.xfail(strict=True, reason="the white-balanced default (issue #10, 2026-12-02) halves less of it: "
                   "mean |error| 0.0242 -> 0.0127 (the previous, linear default: 0.0103); docs/MODELS.md")
def test_default_model_halves_rgb_noise():
    _default_model()
    from nnraw.denoise_rgb import denoise_rgb_array

    clean, noisy = _noisy_ramp()
    out = denoise_rgb_array(noisy, noise_std=0.03, model="default", device="cpu")
    assert np.abs(out - clean)[8:-8, 8:-8].mean() < 0.5 * np.abs(noisy - clean)[8:-8, 8:-8].mean()


def test_bayer_resampling_is_the_mean_of_four_pre_demosaics():
    """With the identity 'network', the output is the mean over the four CFA phases of the pre-demosaic
    of the image divided by CAMERA_WB, times CAMERA_WB (odd size: mirrored to even, cropped back)."""
    from nnraw.training.dataset import mosaic
    from nnraw.denoise_rgb import CAMERA_WB, denoise_rgb_array
    from nnraw.ops import edge_aware_demosaic

    img = _rand((23, 30, 3), 8)
    got = denoise_rgb_array(img, noise_std=0.0, model=CentreCrop(), device="cpu")
    x = torch.from_numpy(img.transpose(2, 0, 1).copy())[None]
    cam = torch.nn.functional.pad(x / CAMERA_WB[:, None, None], (0, 0, 0, 1), mode="reflect")
    pres = [edge_aware_demosaic(mosaic(cam, p), p, CAMERA_WB) for p in ("RGGB", "BGGR", "GRBG", "GBRG")]
    want = (sum(pres) * CAMERA_WB[:, None, None] / 4)[0, :, :23].numpy().transpose(1, 2, 0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    # a smooth image (linear ramps per channel) comes back as it was away from the mirrored borders:
    # the pre-demosaic is exact on linear ramps
    yy, xx = np.mgrid[0:24, 0:32].astype(np.float32)
    ramp = np.stack([0.1 + 0.01 * xx, 0.2 + 0.005 * yy, 0.3 + 0.004 * (xx + yy)], -1)
    back = denoise_rgb_array(ramp, noise_std=0.0, model=CentreCrop(), device="cpu")
    np.testing.assert_allclose(back[4:-4, 4:-4], ramp[4:-4, 4:-4], atol=2e-6)
    with pytest.raises(DenoiseRGBError, match="the image of 3x8 is too small"):
        denoise_rgb_array(np.zeros((3, 8, 3), np.float32), noise_std=0.0, model=CentreCrop(), device="cpu")


def test_gimp_call_path_with_an_untrained_default(tmp_path, monkeypatch):
    """The GIMP plug-in's exact command line, through nnraw.models, with an untrained network (its last
    layer starts at zero: the identity) saved as `fast` (what denoise-rgb runs for `default`: an RGB image
    has no mosaic for the joint default) to a temporary weights folder; odd image size too."""
    from nnraw import models
    config = {"architecture": "half_res_residual", "params": {"channels": 8, "depth": 3}}
    monkeypatch.setattr(models, "WEIGHTS_DIR", tmp_path / "weights")
    models.save_model(models.build_model(config), config, "fast", dtype=torch.float32)
    src, dst = tmp_path / "in.tif", tmp_path / "out.tif"
    img = _rand((45, 61, 3), 6)
    tifffile.imwrite(src, img, photometric="rgb")
    assert main(["denoise-rgb", str(src), str(dst), "--linear", "--noise-std", "0.02", "--device", "cpu"]) == 0
    out = tifffile.imread(dst)
    assert out.dtype == np.float32 and out.shape == img.shape
    from nnraw.denoise_rgb import denoise_rgb_array

    # the untrained default is the identity on its input: the same as the identity crop through the
    # same four Bayer samplings
    want = denoise_rgb_array(img, noise_std=0.02, model=CentreCrop(), device="cpu")
    np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-7)
