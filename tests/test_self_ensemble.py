"""nnraw.infer.self_ensemble: the mean of a network over orientations of the image.

Each pass is run by run_tiled (exact), so the ensemble equals the mean of whole-image passes; the
CFA pattern of each orientation (nnraw.cfa.transformed) must be right for every Bayer pattern, every
X-Trans phase and odd sizes, which the equivariance tests check: with all 8 orientations the result
of a turned image is the turned result, and that only holds when every pass was told its pattern.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_bayer_joint import _randomise

from nnraw import cfa
from nnraw.encoding import in_domain
from nnraw.infer import DIHEDRAL, cpu_has_fast_bfloat16, default_passes, denoise_camera_rgb, forward_whole, self_ensemble
from nnraw.models import build_model
from nnraw.models.bayer_joint import bind_pattern

BAYER_SMALL = {"architecture": "bayer_joint", "params": {"width": 8, "depth": 3}, "domain": "srgb"}
XTRANS_SMALL = {"architecture": "xtrans_joint", "params": {"width": 8, "depth": 3}, "domain": "srgb"}
WB = torch.tensor([2.0, 1.0, 1.6])


def _prepare(net):
    return lambda pat: in_domain(bind_pattern(net, pat), WB)


def _sigma(x):
    return 0.01 + 0.03 * x.clamp(0, 1)                  # pointwise, like a noise profile


def _turn(x, t, fh, fv):
    x = x.transpose(-1, -2) if t else x
    dims = [d for d, on in ((-1, fh), (-2, fv)) if on]
    return x.flip(dims) if dims else x


@pytest.mark.parametrize("pattern", ["RGGB", "BGGR", "GRBG", "GBRG", cfa.shifted(cfa.XTRANS, 3, 1)])
@pytest.mark.parametrize("shape", [(37, 50), (48, 31)])
def test_transformed_pattern_is_the_turned_images_top_left(pattern, shape):
    h, w = shape
    n = cfa.period(pattern)
    cmap = cfa.colour_map(pattern, h, w)
    for t, fh, fv in DIHEDRAL:
        turned = _turn(torch.from_numpy(cmap), t, fh, fv).numpy()
        want = cfa.as_string(np.ascontiguousarray(turned[:n, :n]))
        assert cfa.transformed(pattern, h, w, transpose=t, flip_h=fh, flip_v=fv) == want


@pytest.mark.parametrize("passes", [2, 4, 8])
def test_tiled_ensemble_is_the_mean_of_whole_image_passes(passes):
    net = _randomise(build_model(BAYER_SMALL))
    rgb = torch.rand(1, 3, 42, 54, generator=torch.Generator().manual_seed(1))    # even: forward_whole needs it
    got = self_ensemble(_prepare(net), rgb, _sigma, passes=passes, pattern="GRBG", tile=16, threads=1)
    h, w = rgb.shape[-2:]
    want = torch.zeros_like(rgb)
    for t, fh, fv in DIHEDRAL[:passes]:
        pat = cfa.transformed("GRBG", h, w, transpose=t, flip_h=fh, flip_v=fv)
        o = forward_whole(_prepare(net)(pat), _turn(rgb, t, fh, fv).contiguous(), _sigma)
        dims = [d for d, on in ((-1, fh), (-2, fv)) if on]
        o = o.flip(dims) if dims else o
        want += o.transpose(-1, -2) if t else o
    torch.testing.assert_close(got, want / passes, rtol=0, atol=2e-6)


@pytest.mark.parametrize("config,pattern", [(BAYER_SMALL, "RGGB"), (BAYER_SMALL, "GBRG"),
                                            (XTRANS_SMALL, cfa.shifted(cfa.XTRANS, 2, 5))])
def test_eight_passes_are_equivariant_under_every_turn(config, pattern):
    """ens(turn(x)) == turn(ens(x)): the turned image's own pattern is derived, so the same 8 passes
    run. A wrong pattern for any orientation breaks this by far more than rounding."""
    net = _randomise(build_model(config), scale=0.1)
    rgb = torch.rand(1, 3, 43, 38, generator=torch.Generator().manual_seed(2))
    h, w = rgb.shape[-2:]
    base = self_ensemble(_prepare(net), rgb, _sigma, passes=8, pattern=pattern, tile=24, threads=1)
    for t, fh, fv in DIHEDRAL[1:]:
        pat = cfa.transformed(pattern, h, w, transpose=t, flip_h=fh, flip_v=fv)
        turned = self_ensemble(_prepare(net), _turn(rgb, t, fh, fv), _sigma, passes=8, pattern=pat, tile=24,
                               threads=1)
        torch.testing.assert_close(turned, _turn(base, t, fh, fv), rtol=0, atol=1e-5)


def test_one_pass_is_the_network_itself_and_bad_counts_are_refused():
    net = _randomise(build_model(BAYER_SMALL))
    rgb = torch.rand(1, 3, 30, 30, generator=torch.Generator().manual_seed(3))
    one = self_ensemble(_prepare(net), rgb, _sigma, passes=1, pattern="RGGB", threads=1)
    torch.testing.assert_close(one, forward_whole(_prepare(net)("RGGB"), rgb, _sigma), rtol=0, atol=1e-6)
    assert not torch.allclose(self_ensemble(_prepare(net), rgb, _sigma, passes=2, pattern="RGGB", threads=1), one,
                              atol=1e-4)
    with pytest.raises(ValueError, match="passes must be one of 1, 2, 4, 8, got 3"):
        self_ensemble(_prepare(net), rgb, _sigma, passes=3, pattern="RGGB")


def test_default_passes_follow_the_networks_speed():
    """2 passes for the joint networks where they run fast (CUDA, or the bfloat16 trunk of a CPU with
    AVX512_BF16), 1 in float32 on the CPU and for networks without ``default_passes``."""
    net = build_model(BAYER_SMALL)
    assert net.default_passes == 2 and build_model(XTRANS_SMALL).default_passes == 2
    assert default_passes(net, torch.device("cuda")) == 2
    assert default_passes(net, torch.device("cpu"), "auto") == (2 if cpu_has_fast_bfloat16() else 1)
    assert default_passes(net, torch.device("cpu"), "float32") == 1
    assert default_passes(build_model({"architecture": "reference", "params": {}}), torch.device("cuda")) == 1


@pytest.mark.parametrize("precision", ["auto", "float32"])
def test_denoise_camera_rgb_runs_the_default_passes(precision):
    """Without ``passes`` denoise_camera_rgb runs :func:`default_passes`; ``passes`` overrides it."""
    net = _randomise(build_model(BAYER_SMALL), scale=0.1)
    rgb = torch.rand(1, 3, 36, 40, generator=torch.Generator().manual_seed(4))
    kw = dict(model=net, sigma=0.02, wb=WB.numpy(), pattern="BGGR", device="cpu", precision=precision)
    sigma = lambda x: torch.full_like(x, 0.02)            # noqa: E731
    n = default_passes(net, torch.device("cpu"), precision)
    want = self_ensemble(_prepare(net), rgb, sigma, passes=n, pattern="BGGR", precision=precision)
    torch.testing.assert_close(denoise_camera_rgb(rgb, **kw), want, rtol=0, atol=0)
    other = self_ensemble(_prepare(net), rgb, sigma, passes=3 - n, pattern="BGGR", precision=precision)
    torch.testing.assert_close(denoise_camera_rgb(rgb, passes=3 - n, **kw), other, rtol=0, atol=0)


def test_convert_passes_reach_the_network(tmp_path):
    """``nnraw convert --passes``: 1 and 2 passes give different, close results; a bad count is an error
    naming the option, before anything is written."""
    import rawpy

    from dng_fixtures import write_bayer_dng
    from nnraw.convert import convert_file

    src = write_bayer_dng(tmp_path / "noisy.dng", pattern="GBRG", size=(70, 90)).path
    outs = {}
    for passes in (1, 2):
        dst = tmp_path / f"out-{passes}.dng"
        result = convert_file(src, dst, passes=passes)
        assert result.ok, result.error
        with rawpy.imread(str(dst)) as raw:
            outs[passes] = raw.raw_image.astype(np.int64)
    diff = np.abs(outs[1] - outs[2])
    assert diff.max() > 0 and diff.mean() < 0.01 * outs[1].mean()
    bad = convert_file(src, tmp_path / "bad.dng", passes=3)
    assert not bad.ok and "--passes must be one of 1, 2, 4, 8" in bad.error
    assert not (tmp_path / "bad.dng").exists()
