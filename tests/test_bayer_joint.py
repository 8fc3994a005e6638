"""nnraw.models.bayer_joint (issue #17): demosaicnet's layout started from its published weights.

Step 0 is demosaicnet exactly (every Bayer phase, odd crops), tiling is exact, the noise path and the
PReLU slopes start switched off, the published weights map key by key, and the network loads from
safetensors + JSON like every shipped model.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from nnraw.models import build_model, load_model, save_model
from nnraw.models.bayer_joint import (PHASE_SHIFT, BayerJointDenoiser, bind_pattern, demosaicnet_state,
                                      demosaicnet_weights_path, map_demosaicnet_state)
from nnraw.ops.demosaic import cfa_masks

CONFIG = {"architecture": "bayer_joint", "params": {}, "domain": "srgb"}
SMALL = {"architecture": "bayer_joint", "params": {"width": 8, "depth": 3}, "domain": "srgb"}


def _randomise(model: torch.nn.Module, seed: int = 0, scale: float = 0.2) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return model.eval()


@pytest.fixture(scope="module")
def published():
    """(our network with demosaicnet's weights, demosaicnet.BayerDemosaick(pretrained=True))."""
    import demosaicnet  # noqa: F401  (a test dependency, pyproject [test]: fails when missing)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # demosaicnet imports pkg_resources
        import demosaicnet
    net = build_model(CONFIG)
    net.load_state_dict(demosaicnet_state(net))
    return net.eval(), demosaicnet.BayerDemosaick(pretrained=True).eval()


def test_geometry_and_defaults():
    net = build_model(CONFIG)
    assert isinstance(net, BayerJointDenoiser)
    assert net.halo == 32 and net.noise_conditioned and net.needs_pattern and net.domain == "srgb"
    rgb = torch.rand(2, 3, 20 + 64, 28 + 64)
    assert net(rgb, torch.full_like(rgb, 0.01), "RGGB").shape == (2, 3, 20, 28)
    assert build_model(SMALL).halo == 8


def test_prelu_is_the_fused_op_at_slope_zero():
    from nnraw.ops import PReLU

    net = build_model(CONFIG)
    acts = list(net.prelus) + [net.post_prelu]
    assert len(acts) == 16
    for act in acts:
        assert isinstance(act, PReLU)
        assert torch.count_nonzero(act.weight) == 0
    x = torch.randn(2, 64, 5, 5)
    torch.testing.assert_close(net.post_prelu(x), x.clamp_min(0), rtol=0, atol=0)


@pytest.mark.parametrize("pattern", list(PHASE_SHIFT))
def test_step0_is_demosaicnet_in_every_phase(published, pattern):
    """Any pattern: our output == demosaicnet on the window that starts on its G R / B G phase."""
    net, ref = published
    g = torch.Generator().manual_seed(1)
    t = 128
    rgb = torch.rand(2, 3, t, t, generator=g)
    sigma = torch.rand(2, 3, t, t, generator=g) * 0.1
    dy, dx = PHASE_SHIFT[pattern]
    mosaic = rgb * cfa_masks(pattern, t, t)
    window = mosaic[..., dy:t - dy, dx:t - dx]               # starts on a G R row, even size
    assert torch.equal(cfa_masks("GRBG", t - 2 * dy, t - 2 * dx)[None] * window, window)
    with torch.no_grad():
        ours = net(rgb, sigma, pattern)
        theirs = ref(window)                                  # output at tile offset 31 + (dy, dx)
    oy, ox = 1 - dy, 1 - dx
    torch.testing.assert_close(ours, theirs[..., oy:oy + t - 64, ox:ox + t - 64], rtol=0, atol=1e-5)


def test_step0_is_demosaicnet_on_its_own_phase(published):
    import demosaicnet

    net, ref = published
    rgb = torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours = net(rgb, torch.full_like(rgb, 0.05), "GRBG")
        theirs = ref(demosaicnet.mosaic.bayer(rgb))
    torch.testing.assert_close(ours, theirs[..., 1:-1, 1:-1], rtol=0, atol=1e-6)


@pytest.mark.parametrize("oy,ox", [(0, 0), (0, 1), (1, 0), (1, 1)])
def test_odd_crops_keep_the_phase(oy, ox):
    """A crop starting at an odd row/column has another pattern; the output at each image pixel is
    the same as the uncropped image's."""
    net = _randomise(build_model(SMALL), scale=0.3)
    names = {(0, 0): "GRBG", (0, 1): "RGGB", (1, 0): "BGGR", (1, 1): "GBRG"}
    g = torch.Generator().manual_seed(3)
    big = torch.rand(1, 3, 42, 42, generator=g)
    sig = torch.rand(1, 3, 42, 42, generator=g) * 0.1
    with torch.no_grad():
        full = net(big, sig, "GRBG")                          # image pixels [8, 34)
        crop = net(big[..., oy:oy + 40, ox:ox + 40], sig[..., oy:oy + 40, ox:ox + 40], names[(oy, ox)])
    torch.testing.assert_close(crop, full[..., oy:oy + 24, ox:ox + 24], rtol=0, atol=1e-6)


def test_mixed_patterns_in_a_batch_equal_one_by_one():
    net = _randomise(build_model(SMALL))
    pats = ["RGGB", "GRBG", "BGGR", "GBRG", "RGGB"]
    g = torch.Generator().manual_seed(4)
    rgb, sigma = torch.rand(5, 3, 30, 30, generator=g), torch.rand(5, 3, 30, 30, generator=g) * 0.1
    with torch.no_grad():
        batch = net(rgb, sigma, pats)
        for i, p in enumerate(pats):
            torch.testing.assert_close(batch[i:i + 1], net(rgb[i:i + 1], sigma[i:i + 1], p), rtol=0, atol=1e-6)


@pytest.mark.parametrize("pattern", list(PHASE_SHIFT))
def test_tiled_equals_whole(pattern):
    from nnraw.infer import forward_whole, run_tiled

    net = bind_pattern(_randomise(build_model(SMALL)), pattern)
    g = torch.Generator().manual_seed(5)
    rgb = torch.rand(1, 3, 38, 46, generator=g)                # not multiples of the tile: mirrored last tiles
    sigma_fn = lambda x: 0.02 + 0.05 * x                      # noqa: E731 (pointwise, like a profile)
    whole = forward_whole(net, rgb, sigma_fn)
    tiled = run_tiled(net, rgb, sigma_fn, tile=12, threads=1)
    torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-6)


def test_tiled_equals_whole_full_size_in_the_encoded_domain():
    from nnraw.encoding import in_domain
    from nnraw.infer import forward_whole, run_tiled

    net = in_domain(bind_pattern(_randomise(build_model(CONFIG), scale=0.05), "BGGR"), torch.tensor([2.0, 1.0, 1.5]))
    rgb = torch.rand(1, 3, 70, 66, generator=torch.Generator().manual_seed(6))
    sigma_fn = lambda x: torch.full_like(x, 0.01)            # noqa: E731
    torch.testing.assert_close(run_tiled(net, rgb, sigma_fn, tile=32, threads=1), forward_whole(net, rgb, sigma_fn),
                               rtol=0, atol=1e-5)


def test_the_noise_input_starts_switched_off_and_learns():
    net = build_model(CONFIG)
    _randomise(net, scale=0.05)
    with torch.no_grad():
        net.convs[0].weight[:, 4:].zero_()
    net = build_model(CONFIG)           # a fresh one: the constructor zeroes the noise weights itself
    assert torch.count_nonzero(net.convs[0].weight[:, 4:]) == 0
    assert torch.count_nonzero(net.convs[0].weight[:, :4]) > 0
    rgb = torch.rand(1, 3, 80, 80, generator=torch.Generator().manual_seed(7))
    a = net(rgb, torch.full_like(rgb, 0.001), "RGGB")
    b = net(rgb, torch.full_like(rgb, 0.1), "RGGB")
    assert torch.equal(a, b)
    b.square().mean().backward()
    assert net.convs[0].weight.grad[:, 4:].abs().sum() > 0


def test_pattern_is_required_and_checked():
    net = build_model(SMALL)
    rgb = torch.rand(1, 3, 20, 20)
    with pytest.raises(ValueError, match="CFA pattern"):
        net(rgb, rgb)
    with pytest.raises(ValueError, match="pattern"):
        net(rgb, rgb, "RGBG")
    with pytest.raises(ValueError, match="CFA pattern"):
        bind_pattern(net, None)
    bound = net.for_pattern("GBRG")
    assert (bound.halo, bound.noise_conditioned, bound.domain) == (net.halo, True, "srgb")


def test_demosaicnet_keys_map_one_to_one():
    import demosaicnet  # noqa: F401
    dmn = torch.load(demosaicnet_weights_path("bayer"), map_location="cpu", weights_only=True)
    net = build_model(CONFIG)
    state = map_demosaicnet_state(dmn, net.state_dict())
    assert set(state) == set(net.state_dict())
    torch.testing.assert_close(state["convs.0.weight"][:, :4], dmn["main_processor.conv1.weight"])
    assert torch.count_nonzero(state["convs.0.weight"][:, 4:]) == 0
    for i in range(15):
        assert torch.equal(state[f"convs.{i}.bias"], dmn[f"main_processor.conv{i + 1}.bias"])
    for ours, theirs in [("pack", "main_processor.pack_mosaic"), ("upsampler", "upsampler"),
                         ("residual_predictor", "residual_predictor"), ("post_conv", "fullres_processor.post_conv"),
                         ("output", "fullres_processor.output")]:
        assert torch.equal(state[f"{ours}.weight"], dmn[f"{theirs}.weight"])
        assert torch.equal(state[f"{ours}.bias"], dmn[f"{theirs}.bias"])
    prelus = [k for k in state if "prelu" in k]
    assert len(prelus) == 16 and all(torch.count_nonzero(state[k]) == 0 for k in prelus)
    with pytest.raises(KeyError, match="lack"):
        map_demosaicnet_state({k: v for k, v in dmn.items() if "conv7" not in k}, net.state_dict())


def test_train_init_key_loads_the_published_weights():
    import demosaicnet  # noqa: F401
    from nnraw.training.train import initial_weights

    net = build_model(CONFIG)
    state = initial_weights("demosaicnet:bayer", net)
    net.load_state_dict(state)
    dmn = torch.load(demosaicnet_weights_path(), map_location="cpu", weights_only=True)
    assert torch.equal(net.convs[14].weight, dmn["main_processor.conv15.weight"])


def test_weights_are_found_without_importing_demosaicnet():
    import demosaicnet  # noqa: F401
    code = ("import sys; from nnraw.models.bayer_joint import demosaicnet_weights_path as p; "
            "print(p().name, 'demosaicnet' in sys.modules, 'pkg_resources' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["bayer.pth", "False", "False"]


def test_loads_from_safetensors_and_json(tmp_path):
    net = _randomise(build_model(CONFIG), scale=0.05)
    save_model(net, {**CONFIG, "halo": net.halo, "noise_conditioned": True}, "joint-test", tmp_path, dtype=torch.float32)
    loaded = load_model("joint-test", weights_dir=tmp_path)
    assert isinstance(loaded, BayerJointDenoiser) and loaded.domain == "srgb"
    rgb = torch.rand(1, 3, 80, 80, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        torch.testing.assert_close(loaded(rgb, rgb * 0.1, "RGGB"), net(rgb, rgb * 0.1, "RGGB"), rtol=0, atol=0)


def test_denoise_camera_rgb_takes_the_pattern_from_the_raw():
    from types import SimpleNamespace

    from nnraw.infer import denoise_camera_rgb

    net = _randomise(build_model(SMALL), scale=0.05)
    rgb = torch.rand(1, 3, 40, 36, generator=torch.Generator().manual_seed(9))
    raw = SimpleNamespace(pattern="GBRG", wb=[2.0, 1.0, 1.5], iso=800, make=None, model=None)
    out = denoise_camera_rgb(rgb, raw=raw, model=net, tile=16)
    same = denoise_camera_rgb(rgb, model=net, wb=raw.wb, iso=800, pattern="GBRG", tile=64)
    torch.testing.assert_close(out, same, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="CFA pattern"):
        denoise_camera_rgb(rgb, model=net, iso=800)


def test_demosaicnet_notice_ships_beside_the_weights():
    from nnraw.models import WEIGHTS_DIR

    text = (WEIGHTS_DIR / "LICENSE-demosaicnet.txt").read_text()
    assert "MIT License" in text and "Copyright (c) 2016 Michael Gharbi" in text
    assert "The above copyright notice and this permission notice shall be included" in text


class _Crops(torch.utils.data.Dataset):
    """Four synthetic clean linear images; random even crops (train) or a fixed one (val)."""

    def __init__(self, split: str, crop: int):
        g = torch.Generator().manual_seed(0 if split == "train" else 1)
        yy, xx = torch.meshgrid(torch.linspace(0, 1, 120), torch.linspace(0, 1, 120), indexing="ij")
        self.images = [(0.3 + 0.2 * torch.sin(torch.rand(3, 1, 1, generator=g) * 20 * xx + 9 * yy)
                        + 0.05 * torch.rand(3, 120, 120, generator=g)).clamp(0, 1) for _ in range(4)]
        self.crop, self.train = crop, split == "train"

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        c, n = self.crop, 120 - self.crop
        y, x = (torch.randint(0, n // 2 + 1, (2,)) * 2).tolist() if self.train else (n // 2 // 2 * 2,) * 2
        return {"clean": self.images[i][:, y:y + c, x:x + c].clone(), "wb": torch.tensor([2.0, 1.0, 1.6])}


def _joint_config(steps: int, config: str = "joint.toml", crop: int = 16) -> dict:
    """configs/``config`` shrunk for a test: tiny crops and batches, ``steps`` steps, two validation crops."""
    from pathlib import Path

    from nnraw.training.train import load_config

    cfg = load_config(Path(__file__).resolve().parent.parent / "configs" / config)
    cfg["data"].update(crop=crop, batch=3)
    cfg["schedule"].update(steps=steps, warmup=2)
    cfg["validate"].update(every=1000, crops=2, levels=["iso100", "nvidia"])
    return cfg


def test_joint_config_starts_at_demosaicnet_and_resumes_bit_exactly(tmp_path):
    """configs/joint.toml (shrunk crops): step 0 validation is the published network, a run split in
    two equals a straight one (the checkpoint carries weights, Adam state and every RNG)."""
    import demosaicnet  # noqa: F401
    from nnraw.training import train as T

    torch.set_num_threads(1)
    cfg = _joint_config(steps=3)
    straight = T.train(cfg, tmp_path / "straight", dataset_factory=_Crops, quiet=True)
    T.train(cfg, tmp_path / "split", steps=2, dataset_factory=_Crops, quiet=True)
    torch.manual_seed(999)
    resumed = T.train(cfg, tmp_path / "split", dataset_factory=_Crops, quiet=True)
    assert resumed["step"] == straight["step"] == 3
    for (k, a), (_, b) in zip(straight["model"].state_dict().items(), resumed["model"].state_dict().items()):
        assert torch.equal(a, b), k
    net = build_model(cfg["model"])
    net.load_state_dict(demosaicnet_state(net))
    val = T.validation_set(cfg, net, int(cfg["validate"]["seed"]), dataset_factory=_Crops)
    assert set(val["nvidia"]["pattern"]) <= set(PHASE_SHIFT) and len(val["nvidia"]["pattern"]) == 2
    import csv

    with (tmp_path / "straight" / "val.csv").open(newline="") as f:
        step0 = [r for r in csv.DictReader(f) if r["step"] == "0"]
    expected = T.validate(net, val, cfg, torch.device("cpu"))
    assert [float(r["psnr_srgb"]) for r in step0] == pytest.approx([r["psnr_srgb"] for r in expected], abs=1e-9)


def test_noise_mix_ranges_and_low_noise_crops():
    from nnraw.training.finetune import draw_noise_mix

    g = torch.Generator().manual_seed(0)
    a, b = draw_noise_mix(4000, g, {"low_per_batch": 0, "channel_spread": 0.0})
    assert a.shape == b.shape == (4000, 3) and torch.equal(a[:, 0], a[:, 1])
    assert 3e-5 * 0.999 <= a.min() and a.max() <= 8e-3 * 1.001
    assert a.min() < 6.7e-5 and a.max() > 5e-3          # below ISO 100 and beyond the NVIDIA level
    assert 0.4 < (b[:, 0] == 0).float().mean() < 0.6
    nz = b[:, 0][b[:, 0] > 0]
    assert 1e-6 * 0.999 <= nz.min() and nz.max() <= 2e-4 * 1.001
    a, _ = draw_noise_mix(4, g, {})
    assert a[0].max() <= 1.5e-4 * 1.2                    # the batch's low-noise crop (channel spread 0.1)
    with pytest.raises(ValueError, match="unknown keys"):
        draw_noise_mix(4, g, {"a_rnage": [1e-5, 1e-3]})


def test_dark_crops_and_jittered_noise_maps():
    """darken scales a fraction of the crops by lo..hi (the rest untouched); jitter_sigma likewise the
    noise map only; the validation batches get neither (they go through BatchSource.make, not next)."""
    from nnraw.training.finetune import darken, jitter_sigma
    from nnraw.training import train as T

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2000, 3, 4, 4, generator=g) + 0.1
    ratio = darken(x, g, 0.25, 1 / 16, 1.0) / x
    assert torch.allclose(ratio.amax((1, 2, 3)), ratio.amin((1, 2, 3)), rtol=1e-5)   # one factor per crop
    k = ratio[:, 0, 0, 0]
    changed = k < 1 - 1e-6
    assert 0.2 < changed.float().mean() < 0.3 and k.min() >= 1 / 16 * 0.999 and k.max() <= 1.0 + 1e-6
    assert k[changed].median() < 0.35                # log-uniform over 1/16..1: median 1/4
    j = (jitter_sigma(x, g, 0.5, 0.5, 3.0) / x)[:, 0, 0, 0]
    moved = (j - 1).abs() > 1e-6
    assert 0.45 < moved.float().mean() < 0.55 and j.min() >= 0.5 * 0.999 and j.max() <= 3.0 * 1.001
    assert (j < 1).any() and (j > 1).any()
    cfg = _joint_config(steps=1)
    assert cfg["data"]["dark_fraction"] > 0 and cfg["data"]["sigma_jitter_fraction"] > 0   # configs/joint.toml uses both
    net = build_model({**SMALL, "params": {"width": 8, "depth": 3}})
    val = T.validation_set(cfg, net, 7, dataset_factory=_Crops)["nvidia"]
    cfg["data"]["dark_fraction"] = cfg["data"]["sigma_jitter_fraction"] = 0
    plain = T.validation_set(cfg, net, 7, dataset_factory=_Crops)["nvidia"]
    assert torch.equal(val["sigma"], plain["sigma"]) and torch.equal(val["target"], plain["target"])


def test_hard_crops_replace_the_last_ones_with_the_hardest():
    from nnraw.training.finetune import demosaic_hardness, with_hard_crops

    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(40.0), torch.arange(40.0), indexing="ij")
    flat = torch.full((3, 40, 40), 0.3)
    stripes = (0.3 + 0.25 * torch.sign(torch.sin((xx + yy) * 1.4))).expand(3, 40, 40).clone()  # diagonal, fine
    saturated = torch.stack([0.8 * (xx > 20), 0.05 * torch.ones_like(xx), 0.8 * (yy > 20)]).float()

    class Source:
        pool = [flat, saturated, stripes, flat]

        def clean_crops(self):
            return torch.stack(self.pool), torch.ones(4, 3)

    h = demosaic_hardness(torch.stack(Source.pool), torch.ones(4, 3))
    assert h[0] < 1e-4 and h[2] > h[1] > h[0]
    batch = torch.rand(4, 3, 40, 40, generator=g)
    clean, _ = with_hard_crops(Source(), batch, torch.ones(4, 3), 2, 2)
    assert torch.equal(clean[:2], batch[:2])
    assert torch.equal(clean[2], stripes) and torch.equal(clean[3], saturated)


def _ddp_worker(rank: int, world: int, port: int, run_dir: str, queue) -> None:
    import os

    from nnraw.training import train as T

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    cfg = _joint_config(steps=2)
    cfg["model"] = {**SMALL, "params": {"width": 8, "depth": 3}}      # no init_from: any size
    result = T.train(cfg, run_dir, dataset_factory=_Crops, quiet=True)
    queue.put((rank, [p.detach().numpy().copy() for p in result["model"].parameters()]))
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_ddp_averages_the_pattern_bound_network(tmp_path):
    """Training binds each batch's patterns around the DDP module, so ranks stay in sync."""
    from ddp_fixtures import run_ranks

    results = run_ranks(_ddp_worker, str(tmp_path))
    for a, b in zip(results[0], results[1]):
        assert (a == b).all()
