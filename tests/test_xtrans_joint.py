"""nnraw.models.xtrans_joint (issue #18): demosaicnet's X-Trans layout started from its published weights.

Step 0 is demosaicnet.XTransDemosaick exactly in every one of the 36 phases of Fujifilm's layout, a
6x6 block that is no X-Trans phase is refused, the noise path and PReLU slopes start switched off, the
published weights map key by key, and configs/xtrans.toml trains (loss falls) and resumes bit-exactly.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from nnraw import cfa
from nnraw.models import build_model, load_model, macs_per_pixel, save_model
from nnraw.models.bayer_joint import bind_pattern, demosaicnet_state, demosaicnet_weights_path, map_demosaicnet_state
from nnraw.models.xtrans_joint import DEMOSAICNET_XTRANS, XTransJointDenoiser, phase_shift

CONFIG = {"architecture": "xtrans_joint", "params": {}, "domain": "srgb"}
SMALL = {"architecture": "xtrans_joint", "params": {"width": 8, "depth": 3}, "domain": "srgb"}
PHASES = [cfa.shifted(cfa.XTRANS, dy, dx) for dy in range(6) for dx in range(6)]


def _randomise(model: torch.nn.Module, seed: int = 0, scale: float = 0.2) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return model.eval()


def _demosaicnet():
    import demosaicnet  # noqa: F401  (a test dependency, pyproject [test]: fails when missing)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # demosaicnet imports pkg_resources
        import demosaicnet
    return demosaicnet


@pytest.fixture(scope="module")
def published():
    """(our network with demosaicnet's X-Trans weights, demosaicnet.XTransDemosaick(pretrained=True))."""
    dmn = _demosaicnet()
    net = build_model(CONFIG)
    net.load_state_dict(demosaicnet_state(net, "demosaicnet:xtrans"))
    return net.eval(), dmn.XTransDemosaick(pretrained=True).eval()


def test_demosaicnet_phase_is_its_mosaic_cell():
    cell = _demosaicnet().mosaic.xtrans_cell()
    ours = torch.from_numpy(cfa.masks(DEMOSAICNET_XTRANS, 6, 6)).float()
    assert torch.equal(torch.as_tensor(cell), ours)
    assert cfa.is_xtrans(DEMOSAICNET_XTRANS)


def test_geometry_and_defaults():
    torch.set_num_threads(1)
    net = build_model(CONFIG)
    assert isinstance(net, XTransJointDenoiser)
    assert net.halo == 18 and net.halo % 6 == 0 and net.noise_conditioned and net.needs_pattern
    assert net.domain == "srgb"
    assert sum(p.numel() for p in net.parameters()) == 411267
    rgb = torch.rand(2, 3, 21 + 36, 26 + 36)                   # any size, odd too
    assert net(rgb, torch.full_like(rgb, 0.01), cfa.XTRANS).shape == (2, 3, 21, 26)
    assert macs_per_pixel(build_model(CONFIG)) / 1000 == pytest.approx(409.7, abs=0.1)


def test_prelu_is_the_fused_op_at_slope_zero():
    from nnraw.ops import PReLU

    net = build_model(CONFIG)
    acts = list(net.prelus) + [net.post_prelu]
    assert len(acts) == 12
    for act in acts:
        assert isinstance(act, PReLU) and torch.count_nonzero(act.weight) == 0


def test_every_xtrans_phase_maps_onto_demosaicnets():
    # the layout repeats under a shift of (3, 3) (its two 3x3 halves are swapped copies): the 36 shifts
    # give 18 distinct blocks, every one of which must map
    assert len(set(PHASES)) == 18 and cfa.shifted(cfa.XTRANS, 3, 3) == cfa.XTRANS
    for p in PHASES:
        dy, dx = phase_shift(p)
        assert 0 <= dy < 6 and 0 <= dx < 6 and cfa.shifted(p, dy, dx) == DEMOSAICNET_XTRANS


def test_a_6x6_block_that_is_no_xtrans_phase_is_refused():
    net = build_model(SMALL)
    rgb = torch.rand(1, 3, 40, 40)
    bad = "RGGB" * 9                                          # 36 letters, a Bayer tiling: no X-Trans phase
    with pytest.raises(ValueError, match="no phase of the X-Trans layout"):
        net(rgb, rgb, bad)
    with pytest.raises(ValueError, match="36-letter X-Trans"):
        net(rgb, rgb, "RGGB")
    with pytest.raises(ValueError, match="X-Trans pattern"):
        net(rgb, rgb)
    with pytest.raises(ValueError, match="no phase"):
        bind_pattern(net, bad)


@pytest.mark.parametrize("k", range(36))
def test_step0_is_demosaicnet_in_every_phase(published, k):
    """Phase k of Fujifilm's layout: our output == demosaicnet on the window that starts on its phase."""
    torch.set_num_threads(1)
    net, ref = published
    pattern = PHASES[k]
    g = torch.Generator().manual_seed(k)
    t = 48
    rgb = torch.rand(1, 3, t, t, generator=g)
    sigma = torch.rand(1, 3, t, t, generator=g) * 0.1
    dy, dx = phase_shift(pattern)
    mosaic = rgb * torch.from_numpy(cfa.masks(pattern, t, t)).float()
    window = mosaic[..., dy:, dx:]
    dmn_masks = torch.from_numpy(cfa.masks(DEMOSAICNET_XTRANS, t - dy, t - dx)).float()
    assert torch.equal(dmn_masks * window, window)               # the window is in demosaicnet's phase
    with torch.no_grad():
        ours = net(rgb, sigma, pattern)
        theirs = ref(window)                                      # output at tile offset 12 + (dy, dx)
    o = net.halo - 12
    torch.testing.assert_close(ours, theirs[..., o - dy:o - dy + t - 36, o - dx:o - dx + t - 36], rtol=0, atol=1e-5)


def test_step0_is_demosaicnet_on_its_own_mosaic(published):
    dmn = _demosaicnet()
    net, ref = published
    rgb = torch.rand(1, 3, 60, 60, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours = net(rgb, torch.full_like(rgb, 0.05), DEMOSAICNET_XTRANS)
        theirs = ref(dmn.mosaic.xtrans(rgb))
    torch.testing.assert_close(ours, theirs[..., 6:-6, 6:-6], rtol=0, atol=1e-6)


@pytest.mark.parametrize("oy,ox", [(0, 1), (1, 0), (2, 3), (5, 5), (3, 4)])
def test_crops_at_any_offset_keep_the_phase(oy, ox):
    """A crop starting at (oy, ox) has the shifted pattern; each image pixel's output is unchanged."""
    net = _randomise(build_model(SMALL), scale=0.3)
    g = torch.Generator().manual_seed(3)
    assert net.halo == 12                                      # depth 3: core 4 + shift 5, rounded up to 6
    big = torch.rand(1, 3, 42, 42, generator=g)
    sig = torch.rand(1, 3, 42, 42, generator=g) * 0.1
    with torch.no_grad():
        full = net(big, sig, cfa.XTRANS)                       # image pixels [12, 30)
        crop = net(big[..., oy:oy + 36, ox:ox + 36], sig[..., oy:oy + 36, ox:ox + 36], cfa.shifted(cfa.XTRANS, oy, ox))
    torch.testing.assert_close(crop, full[..., oy:oy + 12, ox:ox + 12], rtol=0, atol=1e-6)


def test_mixed_patterns_in_a_batch_equal_one_by_one():
    net = _randomise(build_model(SMALL))
    pats = [PHASES[0], PHASES[7], PHASES[35], PHASES[7]]
    g = torch.Generator().manual_seed(4)
    rgb, sigma = torch.rand(4, 3, 31, 31, generator=g), torch.rand(4, 3, 31, 31, generator=g) * 0.1
    with torch.no_grad():
        batch = net(rgb, sigma, pats)
        for i, p in enumerate(pats):
            torch.testing.assert_close(batch[i:i + 1], net(rgb[i:i + 1], sigma[i:i + 1], p), rtol=0, atol=1e-6)


def test_the_noise_input_starts_switched_off_and_learns():
    torch.set_num_threads(1)
    net = build_model(CONFIG)
    assert torch.count_nonzero(net.convs[0].weight[:, 3:]) == 0
    assert torch.count_nonzero(net.convs[0].weight[:, :3]) > 0
    rgb = torch.rand(1, 3, 50, 50, generator=torch.Generator().manual_seed(7))
    a = net(rgb, torch.full_like(rgb, 0.001), cfa.XTRANS)
    b = net(rgb, torch.full_like(rgb, 0.1), cfa.XTRANS)
    assert torch.equal(a, b)
    b.square().mean().backward()
    assert net.convs[0].weight.grad[:, 3:].abs().sum() > 0


def test_demosaicnet_keys_map_one_to_one():
    _demosaicnet()
    dmn = torch.load(demosaicnet_weights_path("xtrans"), map_location="cpu", weights_only=True)
    net = build_model(CONFIG)
    state = map_demosaicnet_state(dmn, net.state_dict(), XTransJointDenoiser.demosaicnet_names)
    assert set(state) == set(net.state_dict())
    assert torch.equal(state["convs.0.weight"][:, :3], dmn["main_processor.conv1.weight"])
    assert torch.count_nonzero(state["convs.0.weight"][:, 3:]) == 0
    for i in range(11):
        assert torch.equal(state[f"convs.{i}.bias"], dmn[f"main_processor.conv{i + 1}.bias"])
    for ours, theirs in [("post_conv", "fullres_processor.post_conv"), ("output", "fullres_processor.output")]:
        assert torch.equal(state[f"{ours}.weight"], dmn[f"{theirs}.weight"])
    # the Bayer weights do not fit the X-Trans network (and the other way round): a clear error
    with pytest.raises(ValueError, match="bayer.pth"):
        demosaicnet_state(net, "demosaicnet:bayer")
    with pytest.raises(ValueError, match="xtrans.pth"):
        demosaicnet_state(build_model({"architecture": "bayer_joint"}), "demosaicnet:xtrans")


def test_loads_from_safetensors_and_json(tmp_path):
    net = _randomise(build_model(SMALL), scale=0.05)
    save_model(net, {**SMALL, "halo": net.halo, "noise_conditioned": True}, "xt-test", tmp_path, dtype=torch.float32)
    loaded = load_model("xt-test", weights_dir=tmp_path)
    assert isinstance(loaded, XTransJointDenoiser) and loaded.domain == "srgb"
    rgb = torch.rand(1, 3, 30, 30, generator=torch.Generator().manual_seed(8))      # halo 12
    with torch.no_grad():
        torch.testing.assert_close(loaded(rgb, rgb * 0.1, PHASES[5]), net(rgb, rgb * 0.1, PHASES[5]), rtol=0, atol=0)


# --- training ---------------------------------------------------------------------------------------

def test_training_batches_draw_xtrans_phases():
    from nnraw.training.dataset import make_training_batch, mosaic, xtrans_patterns

    assert xtrans_patterns() == tuple(PHASES)
    g = torch.Generator().manual_seed(0)
    clean = torch.rand(6, 3, 24, 30, generator=g) * 0.8
    b = make_training_batch(clean, torch.tensor([2.0, 1.0, 1.5]), (torch.full((3,), 1e-3), torch.zeros(3)),
                            "xtrans", g, encoding="srgb")
    assert len(b["pattern"]) == 6 and all(cfa.is_xtrans(p) for p in b["pattern"])
    for i, p in enumerate(b["pattern"]):        # the pre-demosaic keeps the (noisy) sampled values
        m = torch.from_numpy(cfa.masks(p, 24, 30))
        resampled = (b["predemosaic"][i] * m).sum(0)
        torch.testing.assert_close(resampled, b["mosaic_noisy"][i, 0], rtol=0, atol=2e-6)
    noise = b["mosaic_noisy"] - torch.cat([mosaic(clean[i:i + 1], p) for i, p in enumerate(b["pattern"])])
    assert 0.5 * 0.02 < noise.std() < 2 * 0.02                       # sqrt(a x), x ~ 0.4
    with pytest.raises(ValueError, match="X-Trans"):
        make_training_batch(clean, torch.ones(3), "random", "RGGB" * 9, g)


def test_hard_crop_mining_follows_the_pattern_family():
    from nnraw.training.finetune import demosaic_hardness, hardness_pattern

    assert hardness_pattern("xtrans") == cfa.XTRANS and hardness_pattern("random") == "RGGB"
    yy, xx = torch.meshgrid(torch.arange(36.0), torch.arange(36.0), indexing="ij")
    flat = torch.full((3, 36, 36), 0.3)
    stripes = (0.3 + 0.25 * torch.sign(torch.sin((xx + yy) * 1.4))).expand(3, 36, 36).clone()
    h = demosaic_hardness(torch.stack([flat, stripes]), torch.ones(2, 3), cfa.XTRANS)
    assert h[0] < 1e-4 < h[1]


def _xtrans_config(steps: int) -> dict:
    from test_bayer_joint import _joint_config

    return _joint_config(steps, "xtrans.toml", crop=12)


def test_xtrans_config_starts_at_demosaicnet_and_resumes_bit_exactly(tmp_path):
    """configs/xtrans.toml (shrunk crops): step 0 validation is the published X-Trans network on
    X-Trans-mosaicked crops, and a run split in two equals a straight one."""
    _demosaicnet()
    from test_bayer_joint import _Crops
    from nnraw.training import train as T

    torch.set_num_threads(1)
    cfg = _xtrans_config(steps=3)
    assert cfg["model"]["architecture"] == "xtrans_joint" and cfg["data"]["pattern"] == "xtrans"
    straight = T.train(cfg, tmp_path / "straight", dataset_factory=_Crops, quiet=True)
    T.train(cfg, tmp_path / "split", steps=2, dataset_factory=_Crops, quiet=True)
    torch.manual_seed(999)
    resumed = T.train(cfg, tmp_path / "split", dataset_factory=_Crops, quiet=True)
    assert resumed["step"] == straight["step"] == 3
    for (k, a), (_, b) in zip(straight["model"].state_dict().items(), resumed["model"].state_dict().items()):
        assert torch.equal(a, b), k
    net = build_model(cfg["model"])
    net.load_state_dict(demosaicnet_state(net, "demosaicnet:xtrans"))
    val = T.validation_set(cfg, net, int(cfg["validate"]["seed"]), dataset_factory=_Crops)
    assert all(cfa.is_xtrans(p) for p in val["nvidia"]["pattern"]) and len(val["nvidia"]["pattern"]) == 2
    import csv

    with (tmp_path / "straight" / "val.csv").open(newline="") as f:
        step0 = [r for r in csv.DictReader(f) if r["step"] == "0"]
    expected = T.validate(net, val, cfg, torch.device("cpu"))
    assert [float(r["psnr_srgb"]) for r in step0] == pytest.approx([r["psnr_srgb"] for r in expected], abs=1e-9)


def test_a_few_xtrans_steps_lower_the_loss(tmp_path):
    """A small xtrans_joint network (random start, no init_from) on configs/xtrans.toml's data path:
    30 steps lower the held-out loss."""
    from test_bayer_joint import _Crops
    from nnraw.training import train as T

    torch.set_num_threads(1)
    cfg = _xtrans_config(steps=30)
    cfg["model"] = {**SMALL, "params": {"width": 8, "depth": 3}}
    cfg["data"].update(crop=24, batch=4)
    cfg["optim"]["lr"] = 3e-3
    cfg["validate"].update(every=30, levels=["nvidia"])
    torch.manual_seed(0)
    model = build_model(cfg["model"])
    val = T.validation_set(cfg, model, 1234, dataset_factory=_Crops)
    before = T.validate(model, val, cfg, torch.device("cpu"))[0]
    result = T.train(cfg, tmp_path, dataset_factory=_Crops, quiet=True)
    after = result["val"][0]
    assert result["step"] == 30
    assert after["loss"] < before["loss"], (before, after)


# --- inference ------------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [0, 7, 22, 35])
def test_tiled_equals_whole(k):
    """Tiles start at multiples of 6 (the bound module's cfa_period) and the halo is a multiple of 6, so
    every tile, like the padded whole image, starts with the image's own pattern. In float32: tiles this
    small take other oneDNN bfloat16 kernels than the whole image (the next test checks "auto")."""
    from nnraw.infer import TileGrid, forward_whole, run_tiled

    net = bind_pattern(_randomise(build_model(SMALL)), PHASES[k])
    assert net.cfa_period == 6
    g = torch.Generator().manual_seed(5)
    rgb = torch.rand(1, 3, 41, 47, generator=g)                # odd, not multiples of the tile
    sigma_fn = lambda x: 0.02 + 0.05 * x                      # noqa: E731 (pointwise, like a profile)
    whole = forward_whole(net, rgb, sigma_fn, precision="float32")
    for tile in (12, 16, 20):                                 # 16 and 20 round to multiples of 6
        grid = TileGrid.plan(41, 47, tile, net.halo, 6)
        assert all(y % 6 == 0 and x % 6 == 0 for y, x in grid.origins)
        torch.testing.assert_close(run_tiled(net, rgb, sigma_fn, tile=tile, threads=1, precision="float32"), whole,
                                   rtol=0, atol=1e-6)


def test_tiled_equals_whole_at_real_tile_sizes_under_auto():
    """The shipped network under precision "auto" (its trunk in bfloat16 where the CPU has AVX512_BF16):
    tiles of hundreds of pixels, as nnraw convert cuts them, give the whole image's numbers exactly."""
    from nnraw.infer import forward_whole, run_tiled

    net = bind_pattern(load_model("xtrans"), PHASES[22])
    rgb = torch.rand(1, 3, 400, 430, generator=torch.Generator().manual_seed(6))
    sigma_fn = lambda x: 0.01 + 0.02 * x                      # noqa: E731
    torch.set_num_threads(2)                                  # the same threads for both (oneDNN's blocking)
    whole = forward_whole(net, rgb, sigma_fn, precision="auto")
    assert net.net.trunk_bfloat16 == __import__("nnraw.infer").infer.cpu_has_fast_bfloat16()
    torch.testing.assert_close(run_tiled(net, rgb, sigma_fn, tile=204, precision="auto", threads=2), whole,
                               rtol=0, atol=0)


def test_tiled_equals_whole_full_size_in_the_encoded_domain():
    from nnraw.encoding import in_domain
    from nnraw.infer import forward_whole, run_tiled

    torch.set_num_threads(1)
    net = in_domain(bind_pattern(_randomise(build_model(CONFIG), scale=0.05), PHASES[13]), torch.tensor([2.0, 1.0, 1.5]))
    assert net.cfa_period == 6
    rgb = torch.rand(1, 3, 55, 49, generator=torch.Generator().manual_seed(6))
    sigma_fn = lambda x: torch.full_like(x, 0.01)            # noqa: E731
    torch.testing.assert_close(run_tiled(net, rgb, sigma_fn, tile=24, threads=1), forward_whole(net, rgb, sigma_fn),
                               rtol=0, atol=1e-5)


@pytest.fixture
def weights(tmp_path, monkeypatch):
    """A weights folder with ``xtrans`` = the step-0 X-Trans network (demosaicnet exactly, as an export
    of a run at step 0 would write it) and ``bayer-only`` = a small bayer_joint; nnraw looks there."""
    import nnraw.models as models
    from nnraw.training import train as T

    _demosaicnet()
    d = tmp_path / "weights"
    cfg = T.load_config(Path(__file__).resolve().parent.parent / "configs" / "xtrans.toml")
    net = build_model(cfg["model"])
    net.load_state_dict(demosaicnet_state(net, "demosaicnet:xtrans"))
    save_model(net, {"architecture": "xtrans_joint", "params": cfg["model"]["params"], "domain": "srgb",
                     "halo": net.halo, "noise_conditioned": True, "sensor": "X-Trans"}, "xtrans", d,
               dtype=torch.float32)
    bayer = build_model({"architecture": "bayer_joint", "params": {"width": 8, "depth": 3}, "domain": "srgb"})
    save_model(bayer, {"architecture": "bayer_joint", "params": {"width": 8, "depth": 3}, "domain": "srgb",
                       "halo": bayer.halo, "noise_conditioned": True}, "bayer-only", d)
    monkeypatch.setattr(models, "WEIGHTS_DIR", d)
    return d


def test_convert_default_runs_the_shipped_xtrans_network(tmp_path, weights):
    """``--model default`` on an X-Trans raw runs ``xtrans`` (and ``--model xtrans`` the same), with no
    'not denoised' note; the output is the step-0 network's (demosaicnet), not the classic demosaic."""
    from dng_fixtures import write_xtrans_dng
    from nnraw.convert import convert_file

    torch.set_num_threads(1)
    src = write_xtrans_dng(tmp_path / "fuji.dng", phase=(2, 5), size=(43, 50)).path
    res = convert_file(src, tmp_path / "d.dng", model="default", device="cpu")
    assert res.ok, res.error
    assert res.model == "xtrans" and not [n for n in res.notes if "not denoised" in n], res.notes
    named = convert_file(src, tmp_path / "x.dng", model="xtrans", device="cpu")
    plain = convert_file(src, tmp_path / "n.dng", model="none", device="cpu")
    assert named.ok and plain.ok
    import tifffile

    def image(p):
        with tifffile.TiffFile(p) as t:
            return max((pg for pg in t.pages), key=lambda pg: pg.shape[0] * pg.shape[1] if len(pg.shape) >= 2 else 0).asarray()

    d, x, n = image(tmp_path / "d.dng"), image(tmp_path / "x.dng"), image(tmp_path / "n.dng")
    assert d.shape == n.shape and np.array_equal(d, x)
    assert not np.array_equal(d, n)


def test_convert_refuses_a_network_for_the_other_cfa(tmp_path, weights):
    from dng_fixtures import write_bayer_dng, write_xtrans_dng
    from nnraw.convert import convert_file

    bayer = write_bayer_dng(tmp_path / "canon.dng", pattern="RGGB", size=(40, 46)).path
    res = convert_file(bayer, tmp_path / "b.dng", model="xtrans", device="cpu")
    assert not res.ok and "canon.dng" in res.error and "xtrans.json" in res.error and "X-Trans raws" in res.error
    fuji = write_xtrans_dng(tmp_path / "fuji.dng", phase=(0, 3), size=(40, 40)).path
    res = convert_file(fuji, tmp_path / "f.dng", model="bayer-only", device="cpu")
    assert not res.ok and "fuji.dng" in res.error and "bayer-only.json" in res.error and "Bayer raws" in res.error
    res = convert_file(fuji, tmp_path / "r.dng", model="reference", device="cpu")
    assert not res.ok and "fuji.dng" in res.error and "Bayer raws only" in res.error
    assert not (tmp_path / "b.dng").exists() and not (tmp_path / "f.dng").exists()


def test_without_a_shipped_xtrans_network_default_falls_back_and_says_so(tmp_path, monkeypatch):
    import nnraw.models as models
    from dng_fixtures import write_xtrans_dng
    from nnraw.convert import convert_file

    monkeypatch.setattr(models, "WEIGHTS_DIR", tmp_path / "empty")
    src = write_xtrans_dng(tmp_path / "fuji.dng", phase=(1, 1), size=(37, 41)).path
    res = convert_file(src, tmp_path / "o.dng", model="default", device="cpu")
    assert res.ok and res.model == "none"
    assert len(res.notes) == 1 and "not denoised" in res.notes[0] and "xtrans.safetensors" in res.notes[0]


def test_info_lists_the_xtrans_network(weights):
    from nnraw.models import describe_models, format_models

    rows = {m["name"]: m for m in describe_models(weights)}
    assert rows["xtrans"]["sensor"] == "X-Trans" and rows["xtrans"]["architecture"] == "xtrans_joint"
    assert rows["xtrans"]["kmac_per_pixel"] == pytest.approx(409.7, abs=0.1)
    assert rows["bayer-only"]["sensor"] == "Bayer"
    assert "xtrans" in format_models(list(rows.values()))
