"""The shipped pair (issue #17): ``default`` is the fine-tuned joint network (bayer_joint, re-samples
the raw's mosaic), ``fast`` the earlier half_res_residual denoiser. convert hands the network the raw's
CFA pattern after its crop; denoise-rgb has no mosaic and runs ``fast``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dng_fixtures import write_bayer_dng
from nnraw.models import WEIGHTS_DIR, describe_models


def _config(name: str) -> dict:
    return json.loads((WEIGHTS_DIR / f"{name}.json").read_text())


def test_default_is_the_joint_network_and_fast_the_previous_one():
    assert _config("default")["architecture"] == "bayer_joint"
    assert _config("fast")["architecture"] == "half_res_residual"
    models = {m["name"]: m for m in describe_models()}
    assert models["default"]["default"] and not models["fast"]["default"]
    assert models["default"]["kmac_per_pixel"] > 2 * models["fast"]["kmac_per_pixel"] > 0


def test_denoise_rgb_runs_fast_for_default_and_refuses_a_mosaic_network():
    from nnraw.denoise_rgb import DenoiseRGBError, denoise_rgb_array, rgb_model_name
    from nnraw.models import load_model

    assert rgb_model_name("default") == "fast" and rgb_model_name("fast") == "fast"
    img = np.random.default_rng(0).random((40, 36, 3), dtype=np.float32) * 0.5 + 0.2
    a = denoise_rgb_array(img, noise_std=0.02, model="default", device="cpu")
    b = denoise_rgb_array(img, noise_std=0.02, model="fast", device="cpu")
    np.testing.assert_array_equal(a, b)
    with pytest.raises(DenoiseRGBError, match="needs_pattern"):
        denoise_rgb_array(img, noise_std=0.02, model=load_model("default"), device="cpu")


@pytest.mark.parametrize("pattern", ["RGGB", "BGGR", "GRBG", "GBRG"])
@pytest.mark.parametrize("margins", [None, (1, 1, 0, 0), (0, 1, 1, 0)])
def test_convert_binds_the_raws_pattern_after_the_crop(tmp_path, monkeypatch, pattern, margins):
    """Every Bayer phase and odd ActiveArea crops: the network is bound to the pattern of the visible
    area's top-left pixel, the phase the mosaic it re-samples starts with."""
    import nnraw.models.bayer_joint as bj
    from nnraw.convert import convert_file

    seen = []
    real = bj.bind_pattern
    monkeypatch.setattr(bj, "bind_pattern", lambda net, p: seen.append(p) or real(net, p))
    src = write_bayer_dng(tmp_path / "a.dng", pattern=pattern, size=(40, 46), active_area=margins).path
    convert_file(src, tmp_path / "a-out.dng", model="default", device="cpu")
    # with 2 self-ensemble passes (CPUs with AVX512_BF16) the image, then its transpose (GRBG <-> GBRG)
    from nnraw.infer import cpu_has_fast_bfloat16

    transposed = {"GRBG": "GBRG", "GBRG": "GRBG"}.get(pattern, pattern)
    assert seen == ([pattern, transposed] if cpu_has_fast_bfloat16() else [pattern])
