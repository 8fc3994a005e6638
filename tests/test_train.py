"""nnraw.training.train: the loop learns, checkpoints resume bit-exactly, DDP (gloo, 2 processes) runs.

The data are small synthetic clean images (smooth gradients, edges and texture) drawn from the
torch global RNG, so the resume test also checks that the global RNG state is restored.
"""

from __future__ import annotations

import copy
import csv
import os

import pytest
import torch

from nnraw.training import train as T


class SyntheticCleanCrops(torch.utils.data.Dataset):
    """Random crops of 4 synthetic 200x200 linear images; yields dict(clean [3, c, c], wb [3])."""

    def __init__(self, split: str, crop: int):
        g = torch.Generator().manual_seed(0 if split == "train" else 1)
        yy, xx = torch.meshgrid(torch.linspace(0, 1, 200), torch.linspace(0, 1, 200), indexing="ij")
        self.images = []
        for _ in range(4):
            f = torch.rand(3, 3, generator=g) * 8
            img = torch.stack([0.3 + 0.2 * torch.sin(f[c, 0] * xx + f[c, 1] * yy + f[c, 2]) for c in range(3)])
            img = img + 0.25 * (xx > torch.rand(1, generator=g)).float()     # an edge
            img = img + 0.05 * torch.rand(3, 200, 200, generator=g)           # clean texture
            self.images.append(img.clamp(0, 1))
        self.crop, self.train = crop, split == "train"

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        c, n = self.crop, 200 - self.crop
        y, x = ((torch.randint(0, n // 2 + 1, (2,)) * 2).tolist() if self.train else (n // 4 * 2, n // 4 * 2))
        return {"clean": self.images[i][:, y:y + c, x:x + c].clone(), "wb": torch.tensor([2.0, 1.0, 1.6])}


def tiny_config(arch: str = "half_res_residual", steps: int = 6) -> dict:
    cfg = copy.deepcopy(T.DEFAULTS)
    cfg["name"] = "tiny"
    if arch == "reference":
        cfg["model"] = {"architecture": "reference", "params": {"channels": 16}}
        cfg["data"].update(batch=8, noise="nvidia", pattern="RGGB")
        cfg["loss"]["mode"] = "center"
    else:
        cfg["model"] = {"architecture": "half_res_residual", "params": {"channels": 12, "depth": 3}}
        cfg["data"].update(crop=162, batch=2, noise="random", pattern="random")  # MS-SSIM needs > 160
        cfg["loss"]["domain"] = "srgb"
    cfg["optim"]["lr"] = 3e-3
    cfg["schedule"].update(steps=steps, warmup=2)
    cfg["validate"].update(every=1000, crops=2, levels=["nvidia"])
    cfg["checkpoint"]["every"] = 1000
    return cfg


@pytest.mark.parametrize("arch", ["half_res_residual", "reference"])
def test_a_few_steps_reduce_the_validation_loss(arch, tmp_path):
    torch.set_num_threads(1)
    cfg = tiny_config(arch, steps=30)
    cfg["validate"]["every"] = 30
    model = __import__("nnraw.models", fromlist=["build_model"]).build_model(cfg["model"])
    torch.manual_seed(0)
    val = T.validation_set(cfg, model, 1234, dataset_factory=SyntheticCleanCrops)
    before = T.validate(model, val, cfg, torch.device("cpu"))[0]
    result = T.train(cfg, tmp_path, dataset_factory=SyntheticCleanCrops, quiet=True)
    after = result["val"][0]
    assert result["step"] == 30
    assert after["loss"] < before["loss"], (before, after)
    assert (tmp_path / "train.csv").exists() and (tmp_path / "curves.png").stat().st_size > 1000


def _rows(path):
    with path.open(newline="") as f:
        return [(r["step"], r["loss"]) for r in csv.DictReader(f)]


def test_resume_is_bit_exact(tmp_path):
    torch.set_num_threads(1)
    cfg = tiny_config(steps=6)
    straight = T.train(cfg, tmp_path / "straight", dataset_factory=SyntheticCleanCrops, quiet=True)
    T.train(cfg, tmp_path / "split", steps=3, dataset_factory=SyntheticCleanCrops, quiet=True)
    torch.manual_seed(999)          # disturb the global RNG: the checkpoint must restore it
    resumed = T.train(cfg, tmp_path / "split", dataset_factory=SyntheticCleanCrops, quiet=True)
    assert resumed["step"] == straight["step"] == 6
    for (k, a), (_, b) in zip(straight["model"].state_dict().items(), resumed["model"].state_dict().items()):
        assert torch.equal(a, b), k
    assert _rows(tmp_path / "straight" / "train.csv") == _rows(tmp_path / "split" / "train.csv")


def test_export_writes_loadable_weights(tmp_path):
    from nnraw.models import load_model

    cfg = tiny_config(steps=2)
    T.train(cfg, tmp_path / "run", dataset_factory=SyntheticCleanCrops, quiet=True)
    w, c = T.export(cfg, tmp_path / "run", tmp_path / "weights")
    model = load_model("tiny", weights_dir=tmp_path / "weights")
    assert model.noise_conditioned and model.halo == 6 and w.suffix == ".safetensors"


@pytest.mark.parametrize("toml, message", [
    ('[loss]\nmode = "edges"\n', r"bad.toml: loss.mode must be 'center' or 'whole', got 'edges'"),
    ('[loss]\ndomain = "log"\n', r"loss.domain must be 'linear', 'linear_wb' or 'srgb', got 'log'"),
    ('[loss]\nbalance = "sqrt"\n', r"loss.balance must be 'none' or 'log', got 'sqrt'"),
    ('[data]\ncamera = "canon"\n', r"data.camera must be 'dataset' or 'random', got 'canon'"),
    ('[model]\ndomain = "gamma"\n', r"model.domain must be one of"),
    ('[data]\npre_demosaic = "gamma"\n', r"data.pre_demosaic must be one of"),
])
def test_bad_config_is_named(tmp_path, toml, message):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n' + toml)
    with pytest.raises(ValueError, match=message):
        T.load_config(bad)


def test_missing_config_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="config .*missing.toml does not exist"):
        T.load_config(tmp_path / "missing.toml")


def _ddp_worker(rank: int, world: int, port: int, run_dir: str, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    result = T.train(tiny_config(steps=3), run_dir, dataset_factory=SyntheticCleanCrops, quiet=True)
    # numpy copies travel by value (tensors would go through shared memory owned by this process).
    queue.put((rank, [p.detach().numpy().copy() for p in result["model"].parameters()]))
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_cpu_processes_stay_in_sync(tmp_path):
    from ddp_fixtures import run_ranks

    results = run_ranks(_ddp_worker, str(tmp_path))
    for a, b in zip(results[0], results[1]):
        assert (a == b).all()                          # gradients were averaged across ranks
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ck["world"] == 2 and len(ck["rng"]) == 2 and ck["step"] == 3
    assert not torch.equal(ck["rng"][0]["generator"], ck["rng"][1]["generator"])   # ranks draw different data


def test_srgb_loss_curve_is_the_srgb_curve_inside_and_never_flat_outside():
    """loss.domain 'srgb': the sRGB curve on [0, 1], its tangents outside, so shadows below 0 and
    highlights above white still get a gradient (a clamp would leave them stuck there)."""
    from nnraw.training.unprocess import linear_to_srgb

    inside = torch.linspace(0, 1, 10001, dtype=torch.float64)
    torch.testing.assert_close(T.srgb_curve_extended(inside), linear_to_srgb(inside), rtol=0, atol=1e-12)
    x = torch.tensor([-0.2, -1e-3, 1.0 + 1e-3, 1.5, 3.0], dtype=torch.float64, requires_grad=True)
    y = T.srgb_curve_extended(x)
    (grad,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(grad, torch.tensor([12.92, 12.92] + [1.055 / 2.4] * 3, dtype=torch.float64))
    torch.testing.assert_close(y[0], torch.tensor(-0.2 * 12.92, dtype=torch.float64))
    torch.testing.assert_close(y[3], torch.tensor(1 + 0.5 * 1.055 / 2.4, dtype=torch.float64))
    # continuous at the knee (whose slopes differ by 1.7 % in the standard itself) and, with its slope, at white
    for at, slope_tol in ((0.0031308, 0.02), (1.0, 1e-3)):
        a = torch.tensor([at - 1e-7, at + 1e-7], dtype=torch.float64, requires_grad=True)
        v = T.srgb_curve_extended(a)
        (g,) = torch.autograd.grad(v.sum(), a)
        assert abs(v[1] - v[0]).item() < 1e-5 and abs(g[1] - g[0]).item() < slope_tol * g[0].item()


def test_log_balance_weighs_each_sample_by_its_own_loss():
    """'log': the gradient reaching each sample is divided by that sample's loss; 'none': plain mean."""
    per = torch.tensor([0.004, 0.08], dtype=torch.float64, requires_grad=True)
    (g_log,) = torch.autograd.grad(T.training_objective(per, "log"), per)
    (g_mean,) = torch.autograd.grad(T.training_objective(per, "none"), per)
    torch.testing.assert_close(g_log, 0.5 / per.detach())
    torch.testing.assert_close(g_mean, torch.full((2,), 0.5, dtype=torch.float64))


def test_log_balanced_training_reduces_the_validation_loss(tmp_path):
    torch.set_num_threads(1)
    cfg = tiny_config(steps=30)
    cfg["loss"]["balance"] = "log"
    cfg["validate"]["every"] = 30
    model = __import__("nnraw.models", fromlist=["build_model"]).build_model(cfg["model"])
    val = T.validation_set(cfg, model, 1234, dataset_factory=SyntheticCleanCrops)
    before = T.validate(model, val, cfg, torch.device("cpu"))[0]
    after = T.train(cfg, tmp_path, dataset_factory=SyntheticCleanCrops, quiet=True)["val"][0]
    assert after["loss"] < before["loss"], (before, after)


def test_random_white_balance_covers_every_light():
    wb = T.random_wb(4000, torch.Generator().manual_seed(0))
    assert wb.shape == (4000, 3) and torch.all(wb[:, 1] == 1)
    lo, hi = T.WB_GAIN_RANGE
    assert wb[:, [0, 2]].min() >= lo and wb[:, [0, 2]].max() <= hi
    neutral = (wb == 1).all(1).float().mean().item()
    assert abs(neutral - T.NEUTRAL_FRACTION) < 0.03
    rest = wb[~(wb == 1).all(1)]
    # tungsten-like (blue gain > 2.5, red < 1.5) and daylight-like (red > 1.8, blue < 1.8) both occur
    assert ((rest[:, 2] > 2.5) & (rest[:, 0] < 1.5)).float().mean() > 0.03
    assert ((rest[:, 0] > 1.8) & (rest[:, 2] < 1.8)).float().mean() > 0.1


def test_random_camera_keeps_the_scene_and_clips_like_a_sensor():
    scene = torch.tensor([0.2, 0.5, 2.0]).reshape(1, 3, 1, 1).expand(2, 3, 4, 4)
    wb = torch.tensor([[2.0, 1.0, 1.6], [1.0, 1.0, 1.0]])
    cam = T.as_camera(scene, wb)
    assert torch.allclose(cam[0, :, 0, 0], torch.tensor([0.1, 0.5, 1.0]))     # blue clipped at white
    assert torch.allclose(cam[1, :, 0, 0], torch.tensor([0.2, 0.5, 1.0]))
    # balanced_rgb undoes the dataset's own camera: white balance and matrix
    rgb2cam = [[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.05, 0.15, 0.8]]
    lin = torch.rand(3, 5, 5, generator=torch.Generator().manual_seed(3))
    stored = torch.einsum("ij,jhw->ihw", torch.tensor(rgb2cam), lin) / torch.tensor([2.0, 1.0, 1.5]).reshape(3, 1, 1)
    back = T.balanced_rgb(stored, torch.tensor([2.0, 1.0, 1.5]), rgb2cam)
    assert torch.allclose(back, lin, atol=1e-5)


def test_domain_training_with_random_cameras_improves_on_the_input(tmp_path):
    """The default's recipe in small: white-balanced network, the sRGB-encoded pre-demosaic as input,
    dilations, random white balance and colour per crop, MS-SSIM + L1 white balanced."""
    torch.set_num_threads(1)
    cfg = tiny_config(steps=40)
    cfg["model"] = {"architecture": "half_res_residual", "domain": "linear_wb",
                    "params": {"channels": 12, "depth": 4, "dilations": [1, 2, 2, 1]}}
    cfg["data"].update(crop=162, batch=2, camera="random", pre_demosaic="srgb")
    cfg["loss"].update(alpha=0.84, domain="linear_wb", balance="log")
    cfg["validate"]["every"] = 40
    model = __import__("nnraw.models", fromlist=["build_model"]).build_model(cfg["model"])
    val = T.validation_set(cfg, model, 1234, dataset_factory=SyntheticCleanCrops)
    before = T.validate(model, val, cfg, torch.device("cpu"))[0]
    result = T.train(cfg, tmp_path, dataset_factory=SyntheticCleanCrops, quiet=True)
    after = result["val"][0]
    assert after["loss"] < 0.9 * before["loss"], (before, after)
    assert after["psnr_srgb"] > after["psnr_srgb_input"] + 0.2, after
    T.export(cfg, tmp_path, tmp_path / "weights")
    from nnraw.models import load_model

    assert load_model("tiny", weights_dir=tmp_path / "weights").domain == "linear_wb"


def test_mean_shift_prices_a_cast_and_only_a_cast():
    g = torch.Generator().manual_seed(0)
    t = torch.rand(2, 3, 16, 16, generator=g)
    noise = torch.randn(2, 3, 16, 16, generator=g) * 0.05
    noise -= noise.mean((-2, -1), keepdim=True)                 # zero-mean error: no shift
    assert T.mean_shift(t + noise, t).abs().max() < 1e-6
    cast = t + torch.tensor([0.0, 0.0, 0.03]).reshape(1, 3, 1, 1)
    assert torch.allclose(T.mean_shift(cast, t), torch.full((2,), 0.03 ** 2 / 3), atol=1e-7)


def test_relative_mean_shift_prices_a_relative_cast_whatever_the_exposure():
    g = torch.Generator().manual_seed(0)
    t = torch.rand(2, 3, 16, 16, generator=g) * 0.5 + 0.2
    noise = torch.randn(2, 3, 16, 16, generator=g) * 0.05
    noise -= noise.mean((-2, -1), keepdim=True)
    assert T.relative_mean_shift(t + noise, t).abs().max() < 1e-10
    gain = torch.tensor([1.0, 1.0, 1.01]).reshape(1, 3, 1, 1)   # +1 % blue
    bright, dark = T.relative_mean_shift(t * gain, t, floor=0.0), T.relative_mean_shift(0.1 * t * gain, 0.1 * t, floor=0.0)
    assert torch.allclose(bright, torch.full((2,), 0.01 ** 2 / 3), rtol=1e-4)
    assert torch.allclose(dark, bright, rtol=1e-4)                # relative: exposure does not matter
    assert (T.relative_mean_shift(0.01 * t * gain, 0.01 * t) < 0.1 * bright).all()   # the floor damps near-black crops


def test_a_bad_mean_domain_is_refused(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[loss]\nmean_domain = "srgb"\n')
    with pytest.raises(ValueError, match="loss.mean_domain must be 'loss' or 'relative_linear', got 'srgb'"):
        T.load_config(cfg)
