"""nnraw.models: the interface tiled inference relies on (halo, shapes, receptive field) and the
shipped weight files (safetensors + JSON, loaded without pickle)."""

from __future__ import annotations

import json

import pytest
import torch

from nnraw.models import (ARCHITECTURES, WEIGHTS_DIR, available_models, build_model, load_model, save_model)

CONFIGS = [
    {"architecture": "reference", "params": {}},
    {"architecture": "half_res_residual", "params": {"channels": 8, "depth": 3}},
    {"architecture": "half_res_residual", "params": {"channels": 8, "depth": 6}},
]


def _randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model.eval()


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c['architecture']}-{c['params']}")
def test_halo_is_even_and_forward_shrinks_by_it(config):
    model = build_model(config).eval()
    h = model.halo
    assert h % 2 == 0 and h > 0
    rgb = torch.rand(2, 3, 20 + 2 * h, 28 + 2 * h)
    sigma = torch.full_like(rgb, 0.02)
    out = model(rgb, sigma if model.noise_conditioned else None)
    assert out.shape == (2, 3, 20, 28)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c['architecture']}-{c['params']}")
def test_output_depends_only_on_the_halo_neighbourhood(config):
    """Changing inputs farther than halo from an output pixel leaves it unchanged; changing the
    pixel under it changes it (the halo is not larger than the receptive field needs)."""
    model = _randomise(build_model(config))
    h = model.halo
    rgb = torch.rand(1, 3, 16 + 2 * h, 16 + 2 * h)
    sigma = torch.rand_like(rgb) * 0.05
    s = sigma if model.noise_conditioned else None
    with torch.no_grad():
        base = model(rgb, s)
        # Output pixel (0, 0) sees input rows/cols 0 .. 2h (+1 for the 2x2 cells of half-res models).
        far = rgb.clone()
        far[..., 2 * h + 2:, :] = torch.rand_like(far[..., 2 * h + 2:, :])
        far[..., :, 2 * h + 2:] = torch.rand_like(far[..., :, 2 * h + 2:])
        out = model(far, s)
        assert torch.equal(out[..., 0, 0], base[..., 0, 0])
        near = rgb.clone()
        near[..., h, h] += 0.3
        assert not torch.equal(model(near, s)[..., 0, 0], base[..., 0, 0])


def test_tiles_reassemble_the_whole_image_exactly():
    model = _randomise(build_model(CONFIGS[2]))
    h = model.halo
    rgb = torch.rand(1, 3, 32 + 2 * h, 48 + 2 * h)
    sigma = torch.rand_like(rgb) * 0.05
    with torch.no_grad():
        whole = model(rgb, sigma)
        left = model(rgb[..., :, : 24 + 2 * h], sigma[..., :, : 24 + 2 * h])
        right = model(rgb[..., :, 24:], sigma[..., :, 24:])
    torch.testing.assert_close(torch.cat([left, right], -1), whole, rtol=1e-4, atol=2e-5)


def test_untrained_models_start_at_their_input():
    """Reference nets start near the identity, the default model exactly at the pre-demosaic."""
    rgb = torch.rand(1, 3, 64, 64)
    ref = build_model(CONFIGS[0]).eval()
    res = build_model(CONFIGS[2]).eval()
    with torch.no_grad():
        assert (ref(rgb) - rgb[..., 8:-8, 8:-8]).abs().max() < 0.01
        h = res.halo
        assert torch.equal(res(rgb, torch.rand_like(rgb)), rgb[..., h:-h, h:-h])


def test_reference_has_the_seed_parameter_count():
    assert sum(p.numel() for p in build_model(CONFIGS[0]).parameters()) == 123_011


def test_bad_inputs_name_the_model_and_the_shapes():
    res = build_model(CONFIGS[1])
    with pytest.raises(ValueError, match=r"HalfResResidualDenoiser: this model is noise-conditioned"):
        res(torch.rand(1, 3, 32, 32), None)
    with pytest.raises(ValueError, match=r"must be even \(CFA phase\), got 31x32"):
        res(torch.rand(1, 3, 31, 32), torch.rand(1, 3, 31, 32))
    with pytest.raises(ValueError, match=r"rgb must have shape \[N, 3, H, W\], got \[1, 4, 32, 32\]"):
        build_model(CONFIGS[0])(torch.rand(1, 4, 32, 32))
    with pytest.raises(ValueError, match=r"architecture must be one of .* got 'unet'"):
        build_model({"architecture": "unet"})


def test_save_and_load_round_trip_without_pickle(tmp_path):
    model = _randomise(build_model(CONFIGS[1]))
    w, c = save_model(model, CONFIGS[1], "tiny", tmp_path)
    assert w.read_bytes()[:8] != b"\x80\x02\x8a\x0a" and json.loads(c.read_text())["architecture"]
    assert available_models(tmp_path) == ["tiny"]
    loaded = load_model("tiny", weights_dir=tmp_path)
    assert not loaded.training
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        torch.testing.assert_close(b, a.half().float(), msg=k)
    with pytest.raises(FileNotFoundError, match=r"no model 'nope'.*available: \['tiny'\]"):
        load_model("nope", weights_dir=tmp_path)


@pytest.mark.parametrize("name", available_models())
def test_every_shipped_model_loads(name):
    from safetensors import safe_open

    path = WEIGHTS_DIR / f"{name}.safetensors"
    config = json.loads((WEIGHTS_DIR / f"{name}.json").read_text())
    # 1.2 MB per weight set, float16 (the largest network, 564k parameters, is 1.1 MB): a noise-blended model
    # holds its fine-tuned weights, its start and each via point (nnraw.models.noise_blend)
    blend = config.get("noise_blend")
    sets = 1 + (1 + len(blend.get("via", [])) if blend else 0)
    assert path.stat().st_size < 1_200_000 * sets, (path.stat().st_size, sets)
    with safe_open(str(path), "pt") as f:          # a safetensors file, not a pickle
        assert len(list(f.keys())) > 0
    model = load_model(name)
    assert type(model) is ARCHITECTURES[config["architecture"]]
    h = model.halo
    rgb = torch.rand(1, 3, 16 + 2 * h, 16 + 2 * h)
    if getattr(model, "needs_pattern", False):      # the joint networks re-sample the mosaic: tell them the CFA
        from nnraw.cfa import XTRANS

        model = model.for_pattern(XTRANS if getattr(model, "cfa_period", 2) == 6 else "RGGB")
    with torch.no_grad():
        out = model(rgb, torch.full_like(rgb, 0.01) if model.noise_conditioned else None)
    assert out.shape == (1, 3, 16, 16) and torch.isfinite(out).all()


def test_default_and_fast_are_shipped():
    """The weights ship in git: their absence is a failure (tests/skip_policy.py), never a skip."""
    assert {"default", "fast"} <= set(available_models())
