"""nnraw.training.unprocess: unprocessing followed by the forward pipeline returns the input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import TRAIN_DIR, need_shared
from nnraw.training.unprocess import (BLUE_GAIN_RANGE, RED_GAIN_RANGE, UnprocessParams, apply_gains_exact, inverse_smoothstep,
                             linear_to_srgb, process, random_ccm, random_gains, random_params, safe_invert_gains,
                             smoothstep, srgb_to_linear, unprocess)


def test_curves_invert_each_other():
    x = torch.linspace(0, 1, 10001, dtype=torch.float64)
    assert torch.allclose(smoothstep(inverse_smoothstep(x)), x, atol=1e-12)
    assert torch.allclose(linear_to_srgb(srgb_to_linear(x)), x, atol=1e-12)
    assert srgb_to_linear(torch.tensor(0.5)).item() == pytest.approx(0.21404, abs=1e-5)


def test_random_camera_models():
    g = torch.Generator().manual_seed(0)
    ccm = random_ccm(500, g)
    assert torch.allclose(ccm.sum(-1), torch.ones(500, 3), atol=1e-6)     # white stays white
    wb, rgb_gain = random_gains(500, g)
    assert (wb[:, 1] == 1).all()
    assert RED_GAIN_RANGE[0] <= wb[:, 0].min() and wb[:, 0].max() <= RED_GAIN_RANGE[1]
    assert BLUE_GAIN_RANGE[0] <= wb[:, 2].min() and wb[:, 2].max() <= BLUE_GAIN_RANGE[1]
    assert (rgb_gain >= 1).all() and rgb_gain.mean() == pytest.approx(1.27, abs=0.05)
    again = random_ccm(500, torch.Generator().manual_seed(0))
    assert torch.equal(ccm, again)


def test_highlight_preserving_inverse_keeps_white_and_inverts_exactly():
    gains = torch.tensor([[2.4, 1.3, 1.9]], dtype=torch.float64)
    white = torch.ones(1, 3, 2, 2, dtype=torch.float64)
    assert torch.allclose(safe_invert_gains(white, gains), white)
    x = torch.rand(1, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x = 0.5 * x + 0.5                                   # many pixels in the highlight ramp (gray > 0.9)
    y = safe_invert_gains(x, gains)
    assert torch.allclose(apply_gains_exact(y, gains), x, atol=1e-12)
    assert not torch.allclose(y * gains[:, :, None, None], x, atol=1e-3)   # the plain gains would not


@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-10), (torch.float32, 2e-6)])
def test_unprocess_then_process_returns_input(device, dtype, atol):
    g = torch.Generator().manual_seed(2)
    x = torch.rand(4, 3, 32, 32, generator=g, dtype=dtype)
    x = (0.7 * x.mean(1, keepdim=True) + 0.3 * x).clamp(0, 1).to(device)   # natural-ish saturation, full range
    raw, params = unprocess(x, generator=g)
    assert raw.shape == x.shape and raw.device == x.device
    assert raw.min() >= 0 and raw.max() <= 1
    assert (raw.mean(dim=(2, 3)) < x.mean(dim=(2, 3))).all()      # linear and darker than the sRGB input
    back = process(raw, params)
    assert torch.allclose(back, x, atol=atol), (back - x).abs().max()


def test_unprocess_then_process_real_photo():
    folder = TRAIN_DIR / "skimage"
    need_shared(folder, "sRGB photos")
    files = sorted(folder.glob("*.png"))
    if not files:
        pytest.fail(f"no sRGB photos in {folder}")
    from PIL import Image

    img = np.asarray(Image.open(files[0]).convert("RGB"), dtype=np.float32) / 255
    x = torch.from_numpy(img[:192, :192].copy()).permute(2, 0, 1)[None].repeat(3, 1, 1, 1)
    raw, params = unprocess(x, generator=torch.Generator().manual_seed(3))
    err = (process(raw, params) - x).abs()
    assert (err < 1e-4).float().mean() > 0.999                  # only pixels clipped by unprocessing may differ
    assert err.mean() < 1e-5


def test_explicit_params_and_errors():
    p = random_params(2, torch.Generator().manual_seed(4))
    x = torch.rand(2, 3, 8, 8)
    raw1, _ = unprocess(x, p)
    raw2, _ = unprocess(x, UnprocessParams(p.rgb2cam.clone(), p.wb.clone(), p.rgb_gain.clone()))
    assert torch.equal(raw1, raw2)
    assert torch.allclose(p.cam2rgb @ p.rgb2cam, torch.eye(3).expand(2, 3, 3), atol=1e-5)
    with pytest.raises(ValueError, match=r"unprocess: image must have shape \[N, 3, H, W\], got \[3, 8, 8\]"):
        unprocess(x[0])
