"""Judging a demosaicer/denoiser the way photographers' photos arrive: held-out photos from several
sources, under several white balances and noise levels, scored in sRGB.

The protocol (bench/quality.py and the CI quality guards in tests/test_quality_guards.py):

    clean sRGB photo -> area downscale by 2 (removes JPEG and demosaicing traces) -> linear
    -> camera RGB = linear / wb (clipped to [0, 1] like a sensor) -> RGGB mosaic
    -> Poisson-Gaussian noise of a level (Pentax K-3 ISO N, or the NVIDIA paper's level)
    -> the method -> camera RGB x wb, clipped, sRGB curve -> PSNR against the clean photo's rendering

No colour matrix: the white-balanced scene is the photo itself, so a method's colour cast shows as
it is. White balances (:data:`WB_CONDITIONS`): a neutral camera (1, 1, 1), daylight (2.0, 1, 1.6) and
tungsten (1.3, 1, 3.0): under tungsten the blue channel gets 3x the gain, so 3x fewer photons and
sqrt(3) more noise after white balance; a network that learnt one camera's colours breaks there.

Sources: images of ``../shared/data/train`` folders the shipped networks never trained on
(:data:`HELD_OUT`; training holds them out with ``nnraw dataset build --hold-out``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

WB_CONDITIONS: dict[str, tuple[float, float, float]] = {
    "neutral": (1.0, 1.0, 1.0),
    "daylight": (2.0, 1.0, 1.6),
    "tungsten": (1.3, 1.0, 3.0),
}
LEVELS = ("iso100", "iso400", "iso1600", "iso3200", "iso6400", "nvidia")
BORDER = 10

#: Held-out image sources: folder name under shared/data/train -> the files used (None: every image).
#: scikit-image's set: its four photographs (hubble_deep_field and retina are not photographs of the
#: kind a camera takes; chelsea is too small at half size).
HELD_OUT: dict[str, tuple[str, ...] | None] = {
    "wikipedia": None,
    "skimage": ("astronaut.png", "coffee.png", "motorcycle_left.png", "rocket.jpg"),
}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}


def shared_train_dir() -> Path:
    """``shared/data/train`` beside the repository (where CI and the sessions have it): from
    ``$NNRAW_TRAIN_DIR``, else beside the source checkout this module lies in, else beside the current
    folder's repository (an installed nnraw run from the checkout, as ``make test`` does)."""
    import os

    env = os.environ.get("NNRAW_TRAIN_DIR")
    candidates = [Path(env)] if env else []
    candidates += [Path(__file__).resolve().parents[4] / "shared" / "data" / "train",
                   Path.cwd().resolve().parent / "shared" / "data" / "train"]
    for c in candidates:
        if c.is_dir():
            return c
    return candidates[0]


def source_files(source: str, root: Path | None = None) -> list[Path]:
    """The image files of a held-out source, sorted by name."""
    folder = (root or shared_train_dir()) / source
    if not folder.is_dir():
        raise FileNotFoundError(f"nnraw.training.evaluate: image source {folder} not found")
    names = HELD_OUT.get(source)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if names is not None:
        files = [p for p in files if p.name in names]
    return files


def load_scene(path: Path, crop: int, position: str = "center") -> torch.Tensor:
    """A photo -> Tensor[3, crop, crop] linear sRGB (the white-balanced scene), area-downscaled by 2.

    ``position``: "center", or "detail" (the crop among a 3x3 grid with the most fine detail: demosaicing
    and denoising differ most there).
    """
    from PIL import Image

    from nnraw.training.dataset import area_downscale
    from nnraw.training.unprocess import srgb_to_linear

    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.float64) / 255.0
    small = area_downscale(arr, 2)
    h, w = small.shape[:2]
    if h < crop or w < crop:
        raise ValueError(f"nnraw.training.evaluate: {path} is {w}x{h} at half size, smaller than the crop {crop}")
    x = torch.from_numpy(small).permute(2, 0, 1).float()
    if position == "center":
        y0, x0 = ((h - crop) // 2) & ~1, ((w - crop) // 2) & ~1
    else:
        best = None
        for fy in (0.15, 0.5, 0.85):
            for fx in (0.15, 0.5, 0.85):
                yy, xx = int((h - crop) * fy) & ~1, int((w - crop) * fx) & ~1
                patch = x[1, yy:yy + crop, xx:xx + crop]
                detail = (patch[:, 1:] - patch[:, :-1]).abs().mean() + (patch[1:] - patch[:-1]).abs().mean()
                if best is None or detail > best[0]:
                    best = (float(detail), yy, xx)
        _, y0, x0 = best
    return srgb_to_linear(x[:, y0:y0 + crop, x0:x0 + crop].clamp(0, 1))


def scenes(source: str, n: int, crop: int, root: Path | None = None) -> list[tuple[str, torch.Tensor]]:
    """Up to ``n`` (name, scene) of a held-out source, spread over its images, each at its most detailed
    3x3-grid position."""
    files = [p for p in source_files(source, root)]
    picks = [files[int(k)] for k in np.linspace(0, len(files) - 1, min(n, len(files))).round()]
    out = []
    for p in picks:
        try:
            out.append((p.name, load_scene(p, crop, "detail")))
        except ValueError:
            continue
    return out


def camera_rgb(scene: torch.Tensor, wb) -> torch.Tensor:
    """The scene [3, H, W] as a camera with as-shot gains ``wb`` records it: scene / wb, clipped to [0, 1]."""
    g = torch.as_tensor(wb, dtype=scene.dtype).reshape(3, 1, 1)
    return (scene / g).clamp(0, 1)


def noisy_mosaic(cam: torch.Tensor, level: str, seed: int, pattern: str = "RGGB") -> torch.Tensor:
    """Camera RGB [3, H, W] -> noisy CFA mosaic Tensor[1, 1, H, W] at ``level`` (fixed seed). Bayer:
    noise per site; X-Trans (a 36-letter phase): noise per pixel and channel, then sampled (the same
    statistics: the noise is independent per pixel)."""
    from nnraw.training.dataset import mosaic
    from nnraw.noise.model import add_noise

    g = torch.Generator().manual_seed(seed)
    if len(pattern) == 36:
        return mosaic(add_noise(cam[None], level_profile(level), generator=g), pattern)
    return add_noise(mosaic(cam[None], pattern), level_profile(level), generator=g, pattern=pattern)


def level_profile(level: str):
    """'iso1600' -> the K-3 reference profile at ISO 1600; 'nvidia' -> the NVIDIA paper's level."""
    from nnraw.noise.model import NVIDIA_PROFILE, reference_profile

    if level == "nvidia":
        return NVIDIA_PROFILE
    if level.startswith("iso"):
        return reference_profile(float(level[3:]))
    raise ValueError(f"nnraw train: noise level must be 'isoN' or 'nvidia', got {level!r}")


def render_srgb(cam: torch.Tensor, wb: torch.Tensor) -> torch.Tensor:
    """The rendering that validation and bench/quality.py score: camera RGB x wb, clipped to [0, 1],
    sRGB curve. ``cam`` Tensor[..., 3, H, W], ``wb`` Tensor[..., 3] (one set of gains per image)."""
    from nnraw.training.unprocess import linear_to_srgb

    return linear_to_srgb((cam.float() * wb[..., None, None]).clamp(0, 1))


def render(cam: torch.Tensor, wb) -> torch.Tensor:
    """Camera RGB [..., 3, H, W] -> sRGB: x wb, clipped to [0, 1], sRGB curve (no colour matrix)."""
    return render_srgb(cam, torch.as_tensor(wb, dtype=torch.float32))


def psnr(a: torch.Tensor, b: torch.Tensor, border: int = BORDER) -> float:
    """PSNR (dB, peak 1) of two sRGB images [3, H, W], ``border`` px cropped."""
    if border:
        a, b = a[..., border:-border, border:-border], b[..., border:-border, border:-border]
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    return 10 * math.log10(1 / max(mse, 1e-12))


def channel_mean_shift(cam: torch.Tensor, truth: torch.Tensor, border: int = BORDER) -> torch.Tensor:
    """Per channel: (mean(cam) - mean(truth)) / mean(truth), in camera RGB (= after WB, the gains cancel)."""
    if border:
        cam, truth = cam[..., border:-border, border:-border], truth[..., border:-border, border:-border]
    m, t = cam.double().mean((-2, -1)), truth.double().mean((-2, -1))
    return (m - t) / t.clamp_min(1e-6)


def pre_demosaic(noisy: torch.Tensor, wb, encoding: str = "srgb", pattern: str = "RGGB") -> torch.Tensor:
    """nnraw's classic pre-demosaic (``nnraw convert --model none``) -> camera RGB [3, H, W]."""
    from nnraw.encoding import pre_demosaic as demosaic

    return demosaic(noisy, pattern, torch.tensor(wb, dtype=torch.float32), encoding)[0]


def network(model, pre: torch.Tensor, wb, level: str, *, pattern: str = "RGGB", profile_scale: float = 1.0,
            **kw) -> torch.Tensor:
    """A shipped network (name or module) on a pre-demosaic, as ``nnraw convert`` runs it (the level's
    noise profile, the image's white balance and CFA pattern, reflect-padded tiles) -> camera RGB [3, H, W].
    ``profile_scale`` k tells the network a wrong profile: noise std x k (a and b x k^2), as a
    mis-calibrated camera profile would."""
    from nnraw.infer import denoise_camera_rgb

    prof = level_profile(level)
    if profile_scale != 1.0:
        prof = prof.noise_times(profile_scale)
    out = denoise_camera_rgb(pre[None].contiguous(), model=model, profile=prof, pattern=pattern,
                             wb=np.asarray(wb, dtype=np.float32), device="cpu", **kw)
    return out[0]
