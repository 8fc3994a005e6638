"""Training of nnraw's networks: ``nnraw train CONFIG.toml``.

One loop for both kinds of network:

* ``reference``: the seed's per-ISO network, trained as the reference system was: 66x66 tiles
  (plus the 8 px halo the valid convolutions need) cut into four 31x31 patches whose centres lie
  on the four CFA sites, central-pixel mixed MS-SSIM + L1 loss (``nnraw.ops.center_ms_ssim_l1``),
  fixed noise profile (the Pentax K-3 table at the configured ISO);
* ``half_res_residual`` (the default model): noise-conditioned, random realistic noise profiles
  and random Bayer patterns per sample, whole-crop mixed loss (``nnraw.ops.ms_ssim_l1_loss``).

Adam, linear warm-up then cosine decay, AMP on CUDA, validation every N steps on the held-out
split (fixed crops and noise), CSV logs and PNG curves, checkpoints that resume bit-exactly (model,
optimiser, scheduler, AMP scaler and every RNG state, including the data generator, per rank),
multi-GPU/CPU data parallel through ``torchrun`` (DDP; NCCL on CUDA, gloo on CPU).

Outputs in the run folder: ``train.csv`` (step, lr, loss, l1, l2, seconds), ``val.csv`` (step,
level, loss, l1, l2, psnr, psnr_input, psnr_srgb, psnr_srgb_input: linear camera RGB and
the sRGB rendering bench/quality.py scores), ``curves.png``, ``checkpoint.pt`` (torch.load with
weights_only=True), and with ``--export`` the shipped weights in ``nnraw/weights``.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import os
import random
import time
import tomllib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nnraw.training.evaluate import WB_CONDITIONS, level_profile, render_srgb

DEFAULTS: dict = {
    "name": "model",
    "seed": 0,
    "model": {"architecture": "half_res_residual", "params": {}},
    "data": {"dir": "/work/cache/dataset", "crop": 96, "batch": 16, "noise": "random", "pattern": "random",
             "iso": 1600, "camera": "dataset", "pre_demosaic": "linear"},
    "optim": {"lr": 1e-3, "betas": [0.9, 0.999], "weight_decay": 0.0, "grad_clip": 1.0},
    "schedule": {"steps": 1000, "warmup": 50, "final_lr_fraction": 0.02},
    "loss": {"alpha": 0.84, "mode": "whole", "domain": "linear", "balance": "none", "mean_weight": 0.0,
             "mean_domain": "loss"},
    "validate": {"every": 100, "crops": 16, "levels": ["iso1600"], "seed": 1234},
    "checkpoint": {"every": 100},
    "amp": True,
}


# --- configuration --------------------------------------------------------------------------------
def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in override.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(path: str | Path) -> dict:
    """A TOML training config merged over :data:`DEFAULTS`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"nnraw train: config {path} does not exist")
    with path.open("rb") as f:
        cfg = _merge(DEFAULTS, tomllib.load(f))
    mode = cfg["loss"]["mode"]
    if mode not in ("center", "whole"):
        raise ValueError(f"nnraw train: {path}: loss.mode must be 'center' or 'whole', got {mode!r}")
    domain = cfg["loss"]["domain"]
    if domain not in LOSS_DOMAINS:
        raise ValueError(f"nnraw train: {path}: loss.domain must be 'linear', 'linear_wb' or 'srgb', got {domain!r}")
    balance = cfg["loss"]["balance"]
    if balance not in ("none", "log"):
        raise ValueError(f"nnraw train: {path}: loss.balance must be 'none' or 'log', got {balance!r}")
    if cfg["loss"]["mean_domain"] not in ("loss", "relative_linear"):
        raise ValueError(f"nnraw train: {path}: loss.mean_domain must be 'loss' or 'relative_linear', "
                         f"got {cfg['loss']['mean_domain']!r}")
    camera = cfg["data"]["camera"]
    if camera not in ("dataset", "random"):
        raise ValueError(f"nnraw train: {path}: data.camera must be 'dataset' or 'random', got {camera!r}")
    from nnraw.encoding import ENCODINGS, NETWORK_DOMAINS

    if cfg["model"].get("domain", "linear") not in NETWORK_DOMAINS:
        raise ValueError(f"nnraw train: {path}: model.domain must be one of {NETWORK_DOMAINS}, "
                         f"got {cfg['model']['domain']!r}")
    if cfg["data"]["pre_demosaic"] not in ENCODINGS:
        raise ValueError(f"nnraw train: {path}: data.pre_demosaic must be one of {ENCODINGS}, "
                         f"got {cfg['data']['pre_demosaic']!r}")
    return cfg


# --- losses ---------------------------------------------------------------------------------------
def srgb_curve_extended(x: torch.Tensor) -> torch.Tensor:
    """The sRGB transfer curve, continued by its tangent lines below 0 (slope 12.92) and above 1
    (slope 1.055 / 2.4): equal to it on [0, 1], continuous with a continuous slope, never flat.

    A clamp to [0, 1] before the curve (as a renderer does) has no gradient outside that range: a
    prediction that once falls below 0 or above white is then never pulled back. Trained that way, the
    network drifted to large errors in shadows and highlights that the clamped loss could not see
    (linear-domain PSNR at the NVIDIA level fell from 31.5 dB to 26.9 dB in 600 steps while the
    clamped loss improved), hence this extension.
    """
    from nnraw.encoding import encode

    return encode(x, "srgb")


LOSS_DOMAINS = ("linear", "linear_wb", "srgb")


def to_loss_domain(x: torch.Tensor, wb: torch.Tensor, domain: str) -> torch.Tensor:
    """The image domain the loss is computed in.

    'linear': camera RGB as is (the seed system). 'linear_wb': white balanced (x wb), still linear:
    every channel's error weighs as the photographer sees it after white balance (a tungsten shot's
    blue has 3x the gain), and MS-SSIM cannot be gamed by brightening as in a concave domain. 'srgb': white balanced (x wb) and sRGB-encoded
    (:func:`srgb_curve_extended`, unclipped), so errors weigh as a photographer sees them (dark tones
    and the white-balance gains of R and B count), as Brooks et al. 2019 train after their processing.
    """
    if domain == "linear":
        return x
    if domain == "linear_wb":
        return x * wb.reshape(-1, 3, 1, 1)
    return srgb_curve_extended(x * wb.reshape(-1, 3, 1, 1))


def mixed_loss(pred: torch.Tensor, target: torch.Tensor, alpha: float, mode: str) -> torch.Tensor:
    """alpha (1 - MS-SSIM) + (1 - alpha) L1 through nnraw's compiled ops, one value per sample: Tensor[N].

    mode 'center': Tensor[N, 3, 31, 31] patches, the reference system's central-pixel form (mean over
    channels); mode 'whole': whole crops (data range 1).
    """
    from nnraw import ops

    if mode == "center":
        return ops.center_ms_ssim_l1(pred, target, alpha).mean(1)
    if alpha == 0:      # plain L1: any crop size (MS-SSIM's five scales need crops > 160 px)
        return (pred - target).abs().flatten(1).mean(1)
    return ops.ms_ssim_l1_loss(pred, target, alpha, 1.0, reduction="none")


def mean_shift(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per sample: the mean over channels of (mean(pred) - mean(target))^2 over the crop: Tensor[N].

    MS-SSIM's contrast and structure terms ignore the mean, and in a concave domain (sRGB-encoded)
    brightening the output shrinks the residual noise it sees: trained on MS-SSIM + L1 alone there,
    a network learnt a +0.02..0.04 bias (docs/MODELS.md). This term (``loss.mean_weight``) prices any
    shift of a crop's channel means directly: a colour cast or an exposure shift is what
    photographers complain about most. Squared, not absolute: |shift| sends a full-size gradient of
    flipping sign at its optimum, which swamped Adam's step sizes and stalled training (tests/test_train.py).
    """
    return (pred.mean((-2, -1)) - target.mean((-2, -1))).square().mean(1)


def relative_mean_shift(pred: torch.Tensor, target: torch.Tensor, floor: float = 0.01) -> torch.Tensor:
    """Per sample: the mean over channels of ((mean(pred) - mean(target)) / (mean(target) + floor))^2,
    on linear camera RGB: Tensor[N]. The cast as the quality guards measure it (a channel mean's
    relative shift, whatever the white balance and exposure), where :func:`mean_shift` in sRGB prices
    a 1 % linear cast at mid grey ~10x less than a 1 % shift here (``loss.mean_domain``). ``floor``
    keeps dark crops from dominating."""
    m, t = pred.mean((-2, -1)), target.mean((-2, -1))
    return ((m - t) / (t.abs() + floor)).square().mean(1)


def training_objective(per_sample: torch.Tensor, balance: str) -> torch.Tensor:
    """What the optimiser minimises, from the per-sample mixed losses.

    'none': their mean (the seed). 'log': the mean of their logarithms, so that every sample's gradient
    is divided by its own loss: a crop at ISO 100 (loss ~0.005) weighs as much as one at the NVIDIA level
    (~0.08), in relative terms, as a mean of PSNRs does. With random noise levels per sample the plain
    mean is ruled by the noisiest crops and the network learns little demosaicking.
    """
    if balance == "log":
        return per_sample.clamp_min(1e-8).log().mean()
    return per_sample.mean()


# --- data -----------------------------------------------------------------------------------------
WB_GAIN_RANGE = (1.0, 3.5)
NEUTRAL_FRACTION = 0.15


def balanced_rgb(clean: torch.Tensor, wb: torch.Tensor, rgb2cam: list | None) -> torch.Tensor:
    """A dataset crop (camera RGB, its gains, its sRGB -> camera matrix or None) -> white-balanced
    linear RGB in sRGB primaries (the matrix undone), >= 0: the scene without its synthetic camera."""
    x = clean * wb.reshape(3, 1, 1)
    if rgb2cam is not None:
        cam2rgb = torch.linalg.inv(torch.tensor(rgb2cam, dtype=torch.float64)).float()
        x = torch.einsum("ij,jhw->ihw", cam2rgb, x)
    return x.clamp_min(0)


def random_wb(n: int, generator: torch.Generator) -> torch.Tensor:
    """Tensor[N, 3] as-shot gains: R and B each log-uniform over WB_GAIN_RANGE (tungsten, daylight,
    LED, shade, and everything between), and NEUTRAL_FRACTION of them (1, 1, 1) (a camera balanced
    for the light, or a monochromatic-sensitivity camera)."""
    lo, hi = math.log(WB_GAIN_RANGE[0]), math.log(WB_GAIN_RANGE[1])
    rb = torch.exp(lo + (hi - lo) * torch.rand(n, 2, generator=generator))
    neutral = torch.rand(n, generator=generator) < NEUTRAL_FRACTION
    rb[neutral] = 1.0
    return torch.stack([rb[:, 0], torch.ones(n), rb[:, 1]], 1)


def as_camera(balanced: torch.Tensor, wb: torch.Tensor) -> torch.Tensor:
    """White-balanced linear RGB [N, 3, H, W] and gains [N, 3] -> camera RGB clipped like a sensor."""
    return (balanced / wb.reshape(-1, 3, 1, 1)).clamp(0, 1)


class BatchSource:
    """Draws training batches reproducibly from a clean-crop dataset with one torch.Generator.

    Every random choice (which images, crops inside the dataset, noise, Bayer pattern) comes from
    ``self.generator`` or the global RNGs, all of which the checkpoint saves.
    """

    def __init__(self, cfg: dict, model: nn.Module, split: str, seed: int, data_dir: str | None = None,
                 dataset_factory=None):
        self.cfg = cfg
        self.halo = model.halo
        self.center = cfg["loss"]["mode"] == "center"
        d = cfg["data"]
        # Reference layout: a 66x66 tile (four 31x31 patches) plus the halo on each side.
        self.crop = 66 + 2 * self.halo if self.center else int(d["crop"]) + 2 * self.halo
        self.batch = int(d["batch"]) // 4 if self.center else int(d["batch"])
        if dataset_factory is None:
            from nnraw.training.dataset import CleanCropDataset

            dataset = CleanCropDataset(data_dir or d["dir"], split, self.crop)
        else:
            dataset = dataset_factory(split, self.crop)
        self.dataset = dataset
        if len(self.dataset) == 0:
            raise ValueError(f"nnraw train: no {split} images in {data_dir or d['dir']}")
        self.generator = torch.Generator().manual_seed(seed)

    def clean_crops(self) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(len(self.dataset), (self.batch,), generator=self.generator).tolist()
        items = [self.dataset[i] for i in idx]
        clean, wb = torch.stack([it["clean"] for it in items]), torch.stack([torch.as_tensor(it["wb"]) for it in items])
        if self.cfg["data"]["camera"] == "random":
            clean, wb = self.random_camera(items)
        return clean, wb

    def rgb2cam(self, item: dict) -> list | None:
        """The sRGB -> camera matrix the dataset unprocessed the item's image with (None: a raw source,
        or a dataset without that metadata)."""
        images = getattr(self.dataset, "images", None)
        if "image" not in item or not isinstance(images, list) or not isinstance(images[item["image"]], dict):
            return None
        return images[item["image"]].get("rgb2cam")

    def random_camera(self, items: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        """Each crop under a new camera: its scene (white-balanced, in sRGB primaries), half of them
        through a random camera matrix (Brooks et al. 2019), seen with random as-shot gains
        (:func:`random_wb`) and clipped at the sensor's white. The network, working white balanced,
        then sees every light's per-channel noise and no fixed colour distribution."""
        from nnraw.training.unprocess import random_ccm

        n = len(items)
        scenes = torch.stack([balanced_rgb(it["clean"], torch.as_tensor(it["wb"]), self.rgb2cam(it)) for it in items])
        mix = torch.rand(n, generator=self.generator) < 0.5
        ccm = random_ccm(n, self.generator)
        mixed = torch.einsum("nij,njhw->nihw", ccm, scenes)
        scenes = torch.where(mix[:, None, None, None], mixed, scenes)
        wb = random_wb(n, self.generator)
        return as_camera(scenes, wb), wb

    def make(self, clean: torch.Tensor, wb: torch.Tensor, profiles, pattern) -> dict:
        """Noisy inputs, noise map and targets for the network: dict(rgb, sigma, target)."""
        from nnraw.training.dataset import make_training_batch
        from nnraw.noise.model import sigma_map

        b = make_training_batch(clean.float(), wb.float(), profiles, pattern, self.generator,
                                encoding=self.cfg["data"]["pre_demosaic"])
        # The noise map the network sees is computed from the noisy input, as at inference.
        sigma = sigma_map(b["predemosaic"], b["a"], b["b"])
        rgb, h = b["predemosaic"], self.halo
        if not self.center:
            return {"rgb": rgb, "sigma": sigma, "target": b["clean"][..., h:-h, h:-h], "wb": b["wb"],
                    "pattern": b["pattern"]}
        from nnraw.training.dataset import REFERENCE_OFFSETS, REFERENCE_PATCH

        p = REFERENCE_PATCH
        cut = lambda t, m: torch.stack([t[:, :, y + h - m:y + h + p + m, x + h - m:x + h + p + m]
                                        for y, x in REFERENCE_OFFSETS], 1).flatten(0, 1)
        return {"rgb": cut(rgb, h), "sigma": cut(sigma, h), "target": cut(b["clean"], 0),
                "wb": b["wb"].repeat_interleave(len(REFERENCE_OFFSETS), 0)}

    def next(self) -> dict:
        d = self.cfg["data"]
        clean, wb = self.clean_crops()
        if d.get("hard_per_batch"):          # configs/joint.toml: moire-prone / saturated crops in every batch
            from nnraw.training.finetune import hardness_pattern, with_hard_crops

            clean, wb = with_hard_crops(self, clean, wb, d["hard_per_batch"], d.get("hard_candidates", 4),
                                        hardness_pattern(d["pattern"]))
        if d["noise"] == "mix":             # configs/joint.toml: nnraw.training.finetune.draw_noise_mix
            from nnraw.training.finetune import draw_noise_mix

            profiles = draw_noise_mix(self.batch, self.generator, d.get("noise_mix", {}))
        else:
            profiles = "random" if d["noise"] == "random" else level_profile(d["noise"])
        if d.get("dark_fraction"):          # configs/joint.toml from step 23400: under-exposed crops
            from nnraw.training.finetune import darken

            clean = darken(clean, self.generator, d["dark_fraction"], *d.get("dark_range", [1 / 16, 1]))
        batch = self.make(clean, wb, profiles, d["pattern"])
        if d.get("sigma_jitter_fraction"):  # a wrong profile's noise map (the noise itself as drawn)
            from nnraw.training.finetune import jitter_sigma

            batch["sigma"] = jitter_sigma(batch["sigma"], self.generator, d["sigma_jitter_fraction"],
                                          *d.get("sigma_jitter_range", [0.5, 3.0]))
        return batch


def validation_set(cfg: dict, model: nn.Module, seed: int, data_dir: str | None = None,
                   dataset_factory=None) -> dict[str, dict]:
    """Fixed validation batches per noise level (held-out split, fixed crops, noise and patterns)."""
    src = BatchSource(cfg, model, "val", seed, data_dir, dataset_factory)
    n = min(int(cfg["validate"]["crops"]), len(src.dataset))
    # Evenly spread over the split's crops (so over its images), the same every run.
    items = [src.dataset[int(i)] for i in np.linspace(0, len(src.dataset) - 1, n).round()]
    clean = torch.stack([it["clean"] for it in items])
    wb = torch.stack([torch.as_tensor(it["wb"]) for it in items])
    if cfg["data"]["camera"] == "random":
        # The held-out scenes under the three lights in turn (crop k: WB_CONDITIONS[k % 3]).
        scenes = torch.stack([balanced_rgb(it["clean"], torch.as_tensor(it["wb"]), src.rgb2cam(it)) for it in items])
        conds = list(WB_CONDITIONS.values())
        wb = torch.tensor([conds[k % len(conds)] for k in range(len(items))])
        clean = as_camera(scenes, wb)
    out = {}
    for level in cfg["validate"]["levels"]:
        src.generator.manual_seed(seed)
        # X-Trans training validates X-Trans-mosaicked (a fixed, seeded phase per crop)
        family = "xtrans" if cfg["data"].get("pattern") == "xtrans" else "random"
        out[level] = src.make(clean, wb, level_profile(level), "RGGB" if src.center else family)
    return out


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    mse = F.mse_loss(pred.float().clamp(0, 1), target.float()).item()
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def psnr_srgb(pred: torch.Tensor, target: torch.Tensor, wb: torch.Tensor) -> float:
    """PSNR of :func:`render_srgb` of both."""
    wb = wb.reshape(-1, 3)
    return psnr(render_srgb(pred, wb), render_srgb(target, wb))


@torch.no_grad()
def validate(model: nn.Module, val: dict[str, dict], cfg: dict, device) -> list[dict]:
    from nnraw.encoding import in_domain
    from nnraw.models.bayer_joint import bind_pattern

    model.eval()
    rows = []
    for level, b in val.items():
        rgb, sigma, target, wb = (b[k].to(device) for k in ("rgb", "sigma", "target", "wb"))
        pats = b.get("pattern") or ["RGGB"] * len(rgb)
        pred = torch.cat([in_domain(bind_pattern(model, pats[i:i + 8]), wb[i:i + 8])(rgb[i:i + 8], sigma[i:i + 8])
                          for i in range(0, len(rgb), 8)])
        h = model.halo
        dom = cfg["loss"]["domain"]
        loss = mixed_loss(to_loss_domain(pred, wb, dom), to_loss_domain(target, wb, dom),
                          cfg["loss"]["alpha"], cfg["loss"]["mode"]).mean()
        rows.append({"level": level, "loss": loss.item(),
                     "l1": F.l1_loss(pred, target).item(), "l2": F.mse_loss(pred, target).item(),
                     "psnr": psnr(pred, target), "psnr_input": psnr(rgb[..., h:-h, h:-h], target),
                     "psnr_srgb": psnr_srgb(pred, target, wb),
                     "psnr_srgb_input": psnr_srgb(rgb[..., h:-h, h:-h], target, wb)})
    model.train()
    return rows


# --- optimisation ---------------------------------------------------------------------------------
def lr_factor(step: int, cfg: dict) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``final_lr_fraction``."""
    s = cfg["schedule"]
    warm, total, floor = int(s["warmup"]), int(s["steps"]), float(s["final_lr_fraction"])
    if step < warm:
        return (step + 1) / warm
    t = min(1.0, (step - warm) / max(1, total - warm))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))


# --- RNG state ------------------------------------------------------------------------------------
def rng_state(generator: torch.Generator) -> dict:
    st = {"torch": torch.get_rng_state(), "generator": generator.get_state(),
          "numpy": torch.from_numpy(np.frombuffer(json.dumps(_np_state()).encode(), dtype=np.uint8).copy()),
          "python": torch.from_numpy(np.frombuffer(json.dumps(_py_state()).encode(), dtype=np.uint8).copy())}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state()
    return st


def _np_state() -> list:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def _py_state() -> list:
    v, state, gauss = random.getstate()
    return [v, list(state), gauss]


def set_rng_state(st: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(st["torch"])
    generator.set_state(st["generator"])
    name, keys, pos, has_gauss, cached = json.loads(bytes(st["numpy"].tolist()).decode())
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    v, state, gauss = json.loads(bytes(st["python"].tolist()).decode())
    random.setstate((v, tuple(state), gauss))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state(st["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --- logs and plots -------------------------------------------------------------------------------
TRAIN_FIELDS = ["step", "lr", "loss", "l1", "l2", "seconds"]
VAL_FIELDS = ["step", "level", "loss", "l1", "l2", "psnr", "psnr_input", "psnr_srgb", "psnr_srgb_input"]


def _append_csv(path: Path, fields: list[str], rows: list[dict]) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, fields)
        if new:
            w.writeheader()
        w.writerows({k: r[k] for k in fields} for r in rows)


def _truncate_csv(path: Path, fields: list[str], last_step: int) -> None:
    """Drop rows logged after the checkpoint we resume from (they will be logged again)."""
    if not path.exists():
        return
    with path.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(r["step"]) <= last_step]
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fields)
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)


def plot_curves(run_dir: Path, title: str) -> Path | None:
    """curves.png: training (smoothed) and validation mixed loss, L1 and L2 against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tr_path, va_path = run_dir / "train.csv", run_dir / "val.csv"
    if not tr_path.exists():
        return None
    with tr_path.open(newline="") as f:
        tr = list(csv.DictReader(f))
    va = []
    if va_path.exists():
        with va_path.open(newline="") as f:
            va = list(csv.DictReader(f))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    steps = np.array([int(r["step"]) for r in tr])
    for ax, key, label in zip(axes, ("loss", "l1", "l2"), ("mixed MS-SSIM + L1", "L1", "L2 (MSE)")):
        y = np.array([float(r[key]) for r in tr])
        k = max(1, len(y) // 50)
        smooth = np.convolve(y, np.ones(k) / k, mode="valid")
        ax.plot(steps, y, color="0.8", lw=0.6, label="training (per step)")
        ax.plot(steps[k - 1:], smooth, color="C0", lw=1.5, label=f"training ({k}-step mean)")
        for i, level in enumerate(dict.fromkeys(r["level"] for r in va)):
            rows = [r for r in va if r["level"] == level]
            ax.plot([int(r["step"]) for r in rows], [float(r[key]) for r in rows], "o-", ms=3,
                    color=f"C{i + 1}", label=f"validation {level}")
        ax.set_title(label)
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    out = run_dir / "curves.png"
    tmp = run_dir / "curves.tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(out)
    return out


# --- distributed ----------------------------------------------------------------------------------
def init_distributed() -> tuple[int, int, torch.device]:
    """(rank, world size, device); initialises the process group under torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def initial_weights(source: str, model: nn.Module | None = None) -> dict:
    """Start weights: a run's checkpoint.pt (path), a shipped model's name (fine-tuning), or
    "demosaicnet:bayer" (demosaicnet's published weights mapped into ``model``, a bayer_joint network)."""
    if source.startswith("demosaicnet:"):
        from nnraw.models.bayer_joint import demosaicnet_state

        return demosaicnet_state(model, source)
    path = Path(source)
    if path.suffix == ".pt" or path.is_dir():
        path = path / "checkpoint.pt" if path.is_dir() else path
        if not path.exists():
            raise FileNotFoundError(f"nnraw train: model.init_from checkpoint {path} does not exist")
        return torch.load(path, map_location="cpu", weights_only=True)["model"]
    from nnraw.models import load_model

    return load_model(source).state_dict()


# --- the loop -------------------------------------------------------------------------------------
def train(cfg: dict, run_dir: str | Path, *, steps: int | None = None, max_minutes: float | None = None,
          resume: bool = True, data_dir: str | None = None, log_every: int = 10, quiet: bool = False,
          dataset_factory=None) -> dict:
    """Train (or continue training) the network of ``cfg`` in ``run_dir``.

    Args:
        steps: stop after this global step (default: the schedule's ``steps``); the schedule is
            always that of ``cfg``, so a run split into pieces equals one straight run.
        max_minutes: stop (with a checkpoint) once this wall time is used.
        resume: continue from ``run_dir/checkpoint.pt`` when it exists.
        dataset_factory: ``f(split, crop) -> dataset`` used instead of ``CleanCropDataset`` (tests,
            custom data); a dataset yields dict(clean Tensor[3, crop, crop], wb Tensor[3]).
    Returns:
        dict(step, seconds, val) with the last validation rows.
    """
    from nnraw.models import build_model

    run_dir = Path(run_dir)
    rank, world, device = init_distributed()
    main = rank == 0
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
    seed = int(cfg["seed"])
    seed_everything(seed + rank)
    model = build_model(cfg["model"]).to(device)
    if cfg["model"].get("init_from"):
        model.load_state_dict(initial_weights(cfg["model"]["init_from"], model))
    data = BatchSource(cfg, model, "train", seed * 1000 + rank, data_dir, dataset_factory)
    opt = torch.optim.Adam(model.parameters(), lr=cfg["optim"]["lr"], betas=tuple(cfg["optim"]["betas"]),
                           weight_decay=cfg["optim"]["weight_decay"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))
    use_amp = bool(cfg["amp"]) and device.type == "cuda"
    # bfloat16 autocast on CPU (amp_cpu = "bfloat16"; only where the CPU has AVX512_BF16 it pays)
    cpu_bf16 = device.type == "cpu" and cfg.get("amp_cpu") == "bfloat16"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model

    step, seconds = 0, 0.0
    ckpt_path = run_dir / "checkpoint.pt"
    if resume and ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if ck["world"] != world:
            raise ValueError(f"nnraw train: {ckpt_path} was written by {ck['world']} processes, "
                             f"resuming with {world} would change the data order")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck["scaler"])
        set_rng_state(ck["rng"][rank], data.generator)
        step, seconds = int(ck["step"]), float(ck["seconds"])
        if main:
            _truncate_csv(run_dir / "train.csv", TRAIN_FIELDS, step)
            _truncate_csv(run_dir / "val.csv", VAL_FIELDS, step)
    elif main:
        for name in ("train.csv", "val.csv"):
            (run_dir / name).unlink(missing_ok=True)

    val = validation_set(cfg, model, int(cfg["validate"]["seed"]), data_dir, dataset_factory) if main else None
    last_step = int(steps if steps is not None else cfg["schedule"]["steps"])
    alpha, mode, domain = float(cfg["loss"]["alpha"]), cfg["loss"]["mode"], cfg["loss"]["domain"]
    balance = cfg["loss"]["balance"]
    mean_weight = float(cfg["loss"]["mean_weight"])
    mean_relative = cfg["loss"]["mean_domain"] == "relative_linear"
    domain_net = cfg["model"].get("domain", "linear") != "linear"
    if domain_net:
        from nnraw.encoding import in_domain

        ddp.domain, ddp.halo, ddp.noise_conditioned = model.domain, model.halo, model.noise_conditioned
    val_every, ck_every = int(cfg["validate"]["every"]), int(cfg["checkpoint"]["every"])
    started = time.perf_counter()
    base_seconds = seconds
    buffer: list[dict] = []
    val_rows: list[dict] = []

    def save() -> None:
        states = [rng_state(data.generator)]
        if world > 1:
            gathered: list = [None] * world
            torch.distributed.all_gather_object(gathered, states[0])
            states = gathered
        if main:
            ck = {"step": step, "seconds": seconds, "world": world, "model": model.state_dict(),
                  "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
                  "rng": states, "config": json.dumps(cfg)}
            tmp = ckpt_path.with_suffix(".tmp")
            torch.save(ck, tmp)
            tmp.replace(ckpt_path)

    if main and step == 0:          # the starting point (the untrained model ~ its input)
        _append_csv(run_dir / "val.csv", VAL_FIELDS, [{"step": 0, **r} for r in validate(model, val, cfg, device)])
    model.train()
    while step < last_step:
        batch = data.next()
        rgb, sigma, target, wb = (batch[k].to(device, non_blocking=True) for k in ("rgb", "sigma", "target", "wb"))
        net = ddp
        if getattr(model, "needs_pattern", False):       # bayer_joint: one CFA pattern per crop
            from nnraw.models.bayer_joint import PatternBound

            net = PatternBound(model, batch["pattern"], call=ddp)
        with torch.autocast(device.type, dtype=torch.bfloat16 if cpu_bf16 else torch.float16,
                            enabled=use_amp or cpu_bf16):
            pred = in_domain(net, wb)(rgb, sigma) if domain_net else net(rgb, sigma)
        pred = pred.float()
        p_dom, t_dom = to_loss_domain(pred, wb, domain), to_loss_domain(target, wb, domain)
        per_sample = mixed_loss(p_dom, t_dom, alpha, mode)
        if mean_weight:
            shift = relative_mean_shift(pred, target) if mean_relative else mean_shift(p_dom, t_dom)
            per_sample = per_sample + mean_weight * shift
        loss = per_sample.mean().detach()        # logged; the objective may weigh the samples differently
        opt.zero_grad(set_to_none=True)
        scaler.scale(training_objective(per_sample, balance)).backward()
        if cfg["optim"]["grad_clip"]:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), float(cfg["optim"]["grad_clip"]))
        scaler.step(opt)
        scaler.update()
        lr = opt.param_groups[0]["lr"]
        sched.step()
        step += 1
        seconds = base_seconds + time.perf_counter() - started
        with torch.no_grad():
            buffer.append({"step": step, "lr": lr, "loss": loss.item(), "l1": F.l1_loss(pred, target).item(),
                           "l2": F.mse_loss(pred, target).item(), "seconds": round(seconds, 2)})
        out_of_time = max_minutes is not None and (time.perf_counter() - started) > 60 * max_minutes
        if world > 1 and max_minutes is not None:   # every rank must stop at the same step
            flag = torch.tensor([float(out_of_time)], device=device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            out_of_time = bool(flag.item())
        boundary = step % ck_every == 0 or step == last_step or out_of_time
        if main and (step % val_every == 0 or step == last_step or out_of_time):
            val_rows = [{"step": step, **r} for r in validate(model, val, cfg, device)]
            _append_csv(run_dir / "val.csv", VAL_FIELDS, val_rows)
            if not quiet:
                print("step %d  %s" % (step, "  ".join(f"{r['level']}: {r['psnr_srgb']:.2f} dB sRGB (input "
                                                       f"{r['psnr_srgb_input']:.2f}), {r['psnr']:.2f} linear"
                                                       for r in val_rows)), flush=True)
        if main and (step % log_every == 0 or boundary):
            _append_csv(run_dir / "train.csv", TRAIN_FIELDS, buffer)
            if not quiet:
                print(f"step {step}/{last_step}  loss {buffer[-1]['loss']:.5f}  lr {lr:.2e}  {seconds:.0f}s", flush=True)
            buffer = []
        if boundary:
            save()
            if main:
                plot_curves(run_dir, f"{cfg['name']} ({cfg['model']['architecture']})")
        if out_of_time:
            break
    if world > 1:
        torch.distributed.barrier()
    return {"step": step, "seconds": seconds, "val": val_rows, "model": model}


def export(cfg: dict, run_dir: str | Path, weights_dir: str | Path | None = None,
           name: str | None = None) -> tuple[Path, Path]:
    """Write the run's checkpoint as shipped weights: <name>.safetensors (float16) + <name>.json;
    ``name`` defaults to the config's ``name`` (``--export-name default`` ships it as the default)."""
    from nnraw.models import build_model, save_model

    run_dir = Path(run_dir)
    ck = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)
    cfg = json.loads(ck["config"]) if "config" in ck else cfg     # the config the run last trained with
    model = build_model(cfg["model"])
    model.load_state_dict(ck["model"])
    last_val = []
    if (run_dir / "val.csv").exists():
        with (run_dir / "val.csv").open(newline="") as f:
            rows = list(csv.DictReader(f))
        keys = [k for k in ("level", "psnr", "psnr_input", "psnr_srgb", "psnr_srgb_input") if rows and k in rows[0]]
        last_val = [{k: (r[k] if k == "level" else float(r[k])) for k in keys}
                    for r in rows if int(r["step"]) == int(ck["step"])]
    config = {"architecture": cfg["model"]["architecture"], "params": cfg["model"].get("params", {}),
              "domain": cfg["model"].get("domain", "linear"),
              "halo": model.halo, "noise_conditioned": model.noise_conditioned,
              "training": {"config": cfg, "steps": int(ck["step"]), "seconds": round(float(ck["seconds"]), 1),
                           "world_size": int(ck["world"]), "validation": last_val}}
    if cfg["model"]["architecture"] == "reference":
        config["iso"] = cfg["data"]["iso"]
    if cfg["model"]["architecture"] == "bayer_joint":
        config["summary"] = ("demosaicnet's Bayer network (Gharbi et al. 2016, MIT) fine-tuned noise-aware: "
                             "joint demosaic + denoise; best quality")
    if cfg["model"]["architecture"] == "xtrans_joint":
        config["sensor"] = "X-Trans"
        config["summary"] = ("demosaicnet's X-Trans network (Gharbi et al. 2016, MIT) fine-tuned noise-aware: "
                             "joint demosaic + denoise of Fujifilm X-Trans raws")
    return save_model(model, config, name or cfg["name"], Path(weights_dir) if weights_dir else None)


# --- command line ---------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="training config (TOML, see configs/)")
    p.add_argument("--run-dir", help="where checkpoints, logs and plots go (default runs/<name>)")
    p.add_argument("--data", help="dataset folder built by `nnraw dataset build` (overrides data.dir)")
    p.add_argument("--steps", type=int, help="stop after this global step (default: schedule.steps)")
    p.add_argument("--max-minutes", type=float, help="stop with a checkpoint after this much wall time")
    p.add_argument("--no-resume", action="store_true", help="start afresh even if a checkpoint exists")
    p.add_argument("--export", action="store_true", help="write the weights into nnraw/weights afterwards")
    p.add_argument("--weights-dir", help="export here instead of nnraw/weights")
    p.add_argument("--export-name", metavar="NAME", help="file name of the exported weights (default: the config's name)")
    p.add_argument("--export-only", action="store_true",
                   help="do not train: export the run directory's checkpoint.pt and stop (implies --export)")
    p.add_argument("--threads", type=int, help="torch CPU threads")


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    if args.threads:
        torch.set_num_threads(args.threads)
    run_dir = Path(args.run_dir or Path("runs") / cfg["name"])
    if args.export_only:
        w, c = export(cfg, run_dir, args.weights_dir, name=args.export_name)
        print(f"wrote {w} and {c}")
        return 0
    result = train(cfg, run_dir, steps=args.steps, max_minutes=args.max_minutes, resume=not args.no_resume,
                   data_dir=args.data)
    rank = int(os.environ.get("RANK", "0"))
    if args.export and rank == 0:
        w, c = export(cfg, run_dir, args.weights_dir, name=args.export_name)
        print(f"wrote {w} and {c}")
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    print(f"stopped at step {result['step']} after {result['seconds']:.0f} s of training") if rank == 0 else None
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m nnraw.training.train CONFIG ...`` (what ``nnraw train`` runs; handy under torchrun)."""
    p = argparse.ArgumentParser(prog="nnraw train", description=__doc__.split("\n")[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
