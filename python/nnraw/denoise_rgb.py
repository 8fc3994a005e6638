"""`nnraw denoise-rgb IN OUT`: denoise an already-demosaiced RGB image with the network.

Formats (the output keeps the input's sample format and bit depth; its container follows OUT's suffix):

* float TIFF (float16/32/64): linear RGB, written back as float32 TIFF; values are not clipped
  (the network sees them as they are; the noise map uses them clipped to [0, 1]).
* 8/16-bit PNG or TIFF: sRGB-encoded unless ``--linear``; decoded to linear (IEC 61966-2-1),
  denoised, re-encoded, clipped to [0, 1] and rounded to the same bit depth.
* Grey images are denoised as R = G = B and written back as grey (mean of the three outputs);
  an alpha channel is passed through untouched. Metadata and ICC profiles are not copied.

How the network sees an RGB image (``resample_bayer=True``, what the command does): the network was
trained on one thing only, the edge-aware pre-demosaic of a noisy Bayer mosaic in camera RGB. An
already-demosaiced image is therefore brought into exactly that form, four times: divided by typical
camera white-balance gains (:data:`CAMERA_WB`, the middle of the training data's range, so neutral
greys look like they do in camera RGB), Bayer-sampled with each of the four CFA phases (RGGB, BGGR,
GRBG, GBRG), pre-demosaiced with those gains and run through the network; the four results are
averaged and the gains multiplied back. Together the four mosaics hold every sample of the image (R
and B once, G twice), so no pixel's data is dropped, and the noise each network pass sees is i.i.d.
per sample with a known std, as in a raw file. Fed the RGB image directly (``resample_bayer=False``),
a network trained on raw data removes almost none of the i.i.d. noise of every channel at every pixel:
that noise is not what it learnt. The price is four network passes, and at very low strengths a
clean image comes back slightly softened in fine colour detail (docs/INFERENCE.md has the figures).

Noise level (one of them for noise-conditioned models):

* ``--noise-std N``: the noise standard deviation in the file's own values scaled to [0, 1]. For
  linear files it is the constant std of the noise map; for sRGB-encoded files it is carried through
  the slope of the sRGB decoding curve to a per-pixel std in the linear domain the network sees. For
  the per-ISO reference networks (not noise-conditioned) N picks the network: the ISO whose reference
  (Pentax K-3) profile has std N at 18 % grey, nearest in log ISO.
* ``--iso N``: the reference (Pentax K-3) Poisson-Gaussian profile at ISO N, on the linear values.

``--strength S`` (0..2, default 1), as in ``nnraw convert``: the noise map is scaled by S and the
result blended ``input + min(S, 1) * (denoised - input)``; 0 gives the input back unchanged.

The GIMP plug-in calls exactly ``nnraw denoise-rgb in.tif out.tif --linear --noise-std N --strength S``
(or ``--iso N``) with float32 RGB TIFFs (no alpha). Output is written to a temporary name beside OUT
and renamed.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

_CMD = "nnraw denoise-rgb"
SUFFIXES = {".tif": "tiff", ".tiff": "tiff", ".png": "png"}


class DenoiseRGBError(ValueError):
    """Bad input for denoise-rgb; the message names the file and the problem."""


# --------------------------------------------------------------------------------------------------
# sRGB transfer curve (IEC 61966-2-1)
# --------------------------------------------------------------------------------------------------

def srgb_to_linear(v: torch.Tensor) -> torch.Tensor:
    """Encoded sRGB in [0, 1] -> linear."""
    return torch.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    """Linear -> encoded sRGB (input clipped to [0, 1])."""
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.0031308, x * 12.92, 1.055 * x ** (1 / 2.4) - 0.055)


def srgb_decoding_slope(x_linear: torch.Tensor) -> torch.Tensor:
    """d(linear)/d(encoded) at the encoded value of ``x_linear``: maps an encoded-domain std to linear."""
    v = linear_to_srgb(x_linear)
    return torch.where(v <= 0.04045, torch.full_like(v, 1 / 12.92), (2.4 / 1.055) * ((v + 0.055) / 1.055) ** 1.4)


# --------------------------------------------------------------------------------------------------
# Reading and writing
# --------------------------------------------------------------------------------------------------

@dataclass
class RGBImage:
    """An image as read: linear RGB for the network, plus what is needed to write it back."""

    rgb: np.ndarray          # float32 [H, W, 3], the file's values scaled to [0, 1] (still encoded if srgb)
    alpha: np.ndarray | None  # [H, W] in the file's own dtype, passed through
    grey: bool
    dtype: np.dtype           # the file's sample type
    srgb: bool                # integer samples that are sRGB-encoded


def _png_bit_depth(path: Path) -> int:
    with open(path, "rb") as f:
        head = f.read(25)
    if len(head) < 25 or head[:8] != b"\x89PNG\r\n\x1a\n":
        raise DenoiseRGBError(f"{_CMD}: {path}: not a PNG file (bad signature)")
    return head[24]


def _read_array(path: Path) -> np.ndarray:
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DenoiseRGBError(f"{_CMD}: {path}: unsupported format {path.suffix!r}; expected .tif, .tiff or .png")
    if not path.is_file():
        raise DenoiseRGBError(f"{_CMD}: {path}: no such file")
    try:
        if kind == "tiff":
            import tifffile

            with tifffile.TiffFile(path) as tif:
                page = tif.pages[0]
                arr = page.asarray()
                if page.planarconfig == tifffile.PLANARCONFIG.SEPARATE and arr.ndim == 3:
                    arr = np.moveaxis(arr, 0, -1)
            return arr
        if _png_bit_depth(path) == 16:  # Pillow reads 16-bit RGB PNGs as 8-bit; imagecodecs does not
            import imagecodecs

            return imagecodecs.png_decode(path.read_bytes())
        from PIL import Image

        with Image.open(path) as im:
            if im.mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            return np.asarray(im)
    except DenoiseRGBError:
        raise
    except Exception as exc:  # the decoders' own errors, with the file named
        raise DenoiseRGBError(f"{_CMD}: {path}: cannot read image: {exc}") from exc


def read_rgb(path: str | Path, *, linear: bool = False) -> RGBImage:
    """Read a PNG/TIFF into :class:`RGBImage` (see the module docstring for the conventions)."""
    path = Path(path)
    arr = _read_array(path)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise DenoiseRGBError(f"{_CMD}: {path}: expected a grey, grey+alpha, RGB or RGBA image, "
                              f"got samples of shape {list(arr.shape)}")
    channels = arr.shape[2]
    grey = channels <= 2
    colour = arr[..., :1].repeat(3, axis=2) if grey else arr[..., :3]
    alpha = arr[..., -1] if channels in (2, 4) else None
    dtype = arr.dtype
    if np.issubdtype(dtype, np.floating):
        rgb = colour.astype(np.float32)
        if not np.isfinite(rgb).all():
            raise DenoiseRGBError(f"{_CMD}: {path}: the image holds NaN or infinite values")
        srgb = False
    elif dtype in (np.uint8, np.uint16):
        rgb = colour.astype(np.float32) / np.float32(np.iinfo(dtype).max)
        srgb = not linear
    else:
        raise DenoiseRGBError(f"{_CMD}: {path}: unsupported sample type {dtype}; expected uint8, uint16 or float")
    if min(rgb.shape[:2]) < 2:
        raise DenoiseRGBError(f"{_CMD}: {path}: image of {rgb.shape[0]}x{rgb.shape[1]} is too small")
    return RGBImage(np.ascontiguousarray(rgb), alpha, grey, np.dtype(dtype), srgb)


def _write_array(path: Path, arr: np.ndarray, *, alpha: bool) -> None:
    kind = SUFFIXES[path.suffix.lower()]
    if kind == "tiff":
        import tifffile

        grey = arr.ndim == 2 or arr.shape[2] <= 2
        tifffile.imwrite(path, arr, photometric="minisblack" if grey else "rgb",
                         extrasamples=["unassalpha"] if alpha else None)
        return
    if arr.dtype == np.uint16:
        import imagecodecs

        path.write_bytes(imagecodecs.png_encode(np.ascontiguousarray(arr)))
        return
    from PIL import Image

    Image.fromarray(arr).save(path, format="PNG")


def write_rgb(path: str | Path, img: RGBImage, rgb_linear: np.ndarray) -> None:
    """Encode denoised linear RGB [H, W, 3] like ``img`` was encoded and write it to ``path`` atomically."""
    path = Path(path)
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DenoiseRGBError(f"{_CMD}: {path}: unsupported output format {path.suffix!r}; expected .tif, .tiff or .png")
    if kind == "png" and not np.issubdtype(img.dtype, np.integer):
        raise DenoiseRGBError(f"{_CMD}: {path}: PNG cannot hold float samples; write a .tif")
    colour = rgb_linear.mean(axis=2, keepdims=True) if img.grey else rgb_linear
    if np.issubdtype(img.dtype, np.floating):
        samples = colour.astype(np.float32)
        alpha = None if img.alpha is None else img.alpha.astype(np.float32)
    else:
        enc = linear_to_srgb(torch.from_numpy(colour)).numpy() if img.srgb else np.clip(colour, 0.0, 1.0)
        top = np.iinfo(img.dtype).max
        samples = np.rint(enc * top).astype(img.dtype)
        alpha = img.alpha
    if alpha is not None:
        samples = np.concatenate([samples, alpha[..., None].astype(samples.dtype)], axis=2)
    if samples.shape[2] == 1:
        samples = samples[..., 0]
    tmp = path.with_name(f".{path.stem}.nnraw-tmp-{os.getpid()}{path.suffix}")
    try:
        _write_array(tmp, samples, alpha=alpha is not None)
        os.replace(tmp, path)
    except DenoiseRGBError:
        raise
    except Exception as exc:
        raise DenoiseRGBError(f"{_CMD}: {path}: cannot write image: {exc}") from exc
    finally:
        if tmp.exists():
            tmp.unlink()


# --------------------------------------------------------------------------------------------------
# Denoising
# --------------------------------------------------------------------------------------------------

def iso_for_strength(strength: float, grey: float = 0.18) -> float:
    """The ISO whose reference (K-3) profile has noise std ``strength`` at signal ``grey`` (log-log)."""
    from nnraw.noise.model import reference_profile

    def std(iso: float) -> float:
        return float(reference_profile(iso).sigma_map(torch.full((1, 3, 1, 1), grey)).mean())

    lo, hi = math.log(25.0), math.log(409600.0)
    if strength <= std(math.exp(lo)):
        return math.exp(lo)
    if strength >= std(math.exp(hi)):
        return math.exp(hi)
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if std(math.exp(mid)) < strength else (lo, mid)
    return math.exp((lo + hi) / 2)


RGB_DEFAULT_MODEL = "fast"


def rgb_model_name(model: str | torch.nn.Module) -> str | torch.nn.Module:
    """The network denoise-rgb runs for ``model``: the default network (bayer_joint) re-samples the
    raw's mosaic, which an RGB image does not have, so "default" means ``fast`` (half_res_residual)
    here, and in the GIMP filter that calls this command. Any other name is taken as given."""
    return RGB_DEFAULT_MODEL if isinstance(model, str) and model == "default" else model


def denoise_rgb_array(rgb_linear: np.ndarray, *, iso: float | None = None, noise_std: float | None = None,
                      strength: float = 1.0, srgb: bool = False, model: str | torch.nn.Module = "default",
                      device: str | None = None, tile: int = 1024, resample_bayer: bool = True) -> np.ndarray:
    """Denoise linear RGB float32 [H, W, 3] -> float32 [H, W, 3] (see the module docstring for
    iso/noise_std/strength, and for ``resample_bayer``: True feeds the network the pre-demosaics of
    the image's four Bayer samplings, as it was trained; False feeds it the image itself)."""
    from nnraw.encoding import in_domain
    from nnraw.infer import _resolve_device, resolve_model, run_tiled
    from nnraw.strength import blend_strength, check_strength

    if iso is not None and noise_std is not None:
        raise DenoiseRGBError(f"{_CMD}: give --iso or --noise-std, not both")
    if noise_std is not None and not (math.isfinite(noise_std) and 0 <= noise_std <= 1):
        raise DenoiseRGBError(f"{_CMD}: --noise-std must be a noise std in [0, 1], got {noise_std}")
    if iso is not None and not (math.isfinite(iso) and iso > 0):
        raise DenoiseRGBError(f"{_CMD}: --iso must be > 0, got {iso}")
    try:
        strength = check_strength(strength, "--strength")
    except ValueError as exc:
        raise DenoiseRGBError(f"{_CMD}: {exc}") from None
    if strength == 0.0:
        return rgb_linear
    x = torch.from_numpy(np.ascontiguousarray(rgb_linear.transpose(2, 0, 1)))[None]
    if resample_bayer and min(x.shape[-2:]) < 4:
        raise DenoiseRGBError(f"{_CMD}: the image of {x.shape[-2]}x{x.shape[-1]} is too small (at least 4x4)")
    dev = _resolve_device(device, x)
    if isinstance(model, str) and model == "reference" and iso is None:
        if noise_std is None:
            raise DenoiseRGBError(f"{_CMD}: model 'reference' needs --iso N or --noise-std N to choose the network")
        iso = iso_for_strength(noise_std)
    model = rgb_model_name(model)
    net = resolve_model(model, dev, iso)
    if getattr(net, "needs_pattern", False):
        raise DenoiseRGBError(f"{_CMD}: model {getattr(net, 'name', model)!r} re-samples a camera mosaic "
                              f"(needs_pattern) and an RGB image has none: use --model {RGB_DEFAULT_MODEL} "
                              "(the default here) or another RGB denoiser from `nnraw info`")
    # The image is already white balanced: networks of the encoded domain see it with gains 1; the
    # linear-domain ones were trained on camera RGB, so their resampled mosaics are divided by CAMERA_WB.
    domain = getattr(net, "domain", "linear")
    wb = CAMERA_WB if resample_bayer and domain == "linear" else torch.ones(3)
    net = in_domain(net, wb)
    sigma = None
    if getattr(net, "noise_conditioned", False):
        # The map is evaluated on the network's input tiles, in the image's own (balanced) units: with
        # resampling the tiles are divided by the gains, so values and std are taken back first.
        gains = lambda t: wb.to(t.device, t.dtype).reshape(1, 3, 1, 1)  # noqa: E731
        if noise_std is not None:
            s = float(noise_std) * strength
            if srgb:
                sigma = lambda t: s * srgb_decoding_slope(t * gains(t)) / gains(t)  # noqa: E731
            else:
                sigma = lambda t: torch.full_like(t, s) / gains(t)  # noqa: E731
        elif iso is not None:
            from nnraw.noise.model import reference_profile

            prof = reference_profile(iso)
            sigma = lambda t: prof.sigma_map((t * gains(t)).clamp(0.0, 1.0)) * (strength / gains(t))  # noqa: E731
        else:
            raise DenoiseRGBError(f"{_CMD}: the model is noise-conditioned: pass --noise-std N (noise std in "
                                  "[0, 1]) or --iso N")
    if not resample_bayer:
        out = run_tiled(net, x, sigma, tile=tile, device=dev)
    else:
        # the pre-demosaic the network was trained on: encoded for the white-balanced networks, linear for the seed's
        pre_domain = "linear" if domain == "linear" else "srgb"
        out = _denoise_bayer_resampled(net, x, sigma, tile, dev, wb, pre_domain)
    return blend_strength(x, out, strength)[0].numpy().transpose(1, 2, 0)


#: Typical as-shot white-balance gains (R, G, B) of camera RGB: the middle of the training data's range
#: (Brooks et al. 2019: red U(1.9, 2.4), blue U(1.5, 1.9); see nnraw.training.unprocess).
CAMERA_WB = torch.tensor([2.15, 1.0, 1.7])


def _denoise_bayer_resampled(net: torch.nn.Module, x: torch.Tensor, sigma, tile: int,
                             dev: torch.device, wb: torch.Tensor = CAMERA_WB, domain: str = "linear") -> torch.Tensor:
    """Tensor[1, 3, H, W] balanced linear RGB -> the mean of the network's results on the pre-demosaics
    of its four Bayer samplings (see the module docstring). Odd sizes are mirrored to even and cropped."""
    from nnraw.training.dataset import BAYER_PATTERNS, mosaic
    from nnraw.encoding import pre_demosaic
    from nnraw.infer import run_tiled

    h, w = x.shape[-2:]
    pad_h, pad_w = h % 2, w % 2
    cam = x / wb.reshape(1, 3, 1, 1)
    if pad_h or pad_w:
        cam = torch.nn.functional.pad(cam, (0, pad_w, 0, pad_h), mode="reflect")
    total = torch.zeros_like(cam)
    out = torch.empty_like(cam)
    for pattern in BAYER_PATTERNS:
        pre = pre_demosaic(mosaic(cam, pattern), pattern, wb, domain)
        total += run_tiled(net, pre, sigma, tile=tile, device=dev, out=out)
        del pre
    total *= wb.reshape(1, 3, 1, 1) / len(BAYER_PATTERNS)
    return total[..., :h, :w]


def denoise_rgb_file(src: str | Path, dst: str | Path, *, iso: float | None = None,
                     noise_std: float | None = None, strength: float = 1.0, linear: bool = False,
                     model: str | torch.nn.Module = "default", device: str | None = None,
                     tile: int = 1024, resample_bayer: bool = True) -> None:
    """Read ``src``, denoise, write ``dst`` in the same sample format (atomically)."""
    src, dst = Path(src), Path(dst)
    if SUFFIXES.get(dst.suffix.lower()) is None:
        raise DenoiseRGBError(f"{_CMD}: {dst}: unsupported output format {dst.suffix!r}; expected .tif, .tiff or .png")
    if dst.exists() and src.exists() and dst.resolve() == src.resolve():
        raise DenoiseRGBError(f"{_CMD}: {dst}: the output would overwrite the input; choose another name")
    if not dst.parent.is_dir():
        raise DenoiseRGBError(f"{_CMD}: {dst}: the folder {dst.parent} does not exist")
    img = read_rgb(src, linear=linear)
    lin = srgb_to_linear(torch.from_numpy(img.rgb)).numpy() if img.srgb else img.rgb
    out = denoise_rgb_array(lin, iso=iso, noise_std=noise_std, strength=strength, srgb=img.srgb, model=model,
                            device=device, tile=tile, resample_bayer=resample_bayer)
    write_rgb(dst, img, out)


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", type=Path, metavar="IN", help="RGB image: PNG (8/16-bit) or TIFF (8/16-bit or float)")
    p.add_argument("output", type=Path, metavar="OUT", help="output .png/.tif (same sample format as IN)")
    level = p.add_mutually_exclusive_group()
    level.add_argument("--iso", type=float, help="noise of the reference camera profile at this ISO")
    level.add_argument("--noise-std", type=float, metavar="N",
                       help="noise std in the file's values scaled to [0, 1] (e.g. 0.02)")
    p.add_argument("--strength", type=float, default=1.0, metavar="S",
                   help="how hard to denoise, 0 to 2 (default 1.0): scales the noise level; 0 returns the input")
    p.add_argument("--linear", action="store_true",
                   help="8/16-bit input is linear, not sRGB (float TIFFs are always linear)")
    p.add_argument("--model", default="default", help="network name (see `nnraw info`); default: fast. The default raw network "
                   "(`default`, demosaic + denoise of a mosaic) needs a raw file, so `default` means fast here")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--tile", type=int, default=1024, help="tile size in pixels (bounds memory), default 1024")


def run(args: argparse.Namespace) -> int:
    try:
        denoise_rgb_file(args.input, args.output, iso=args.iso, noise_std=args.noise_std, strength=args.strength,
                         linear=args.linear,
                         model=args.model, device=args.device, tile=args.tile)
    except (DenoiseRGBError, ValueError, TypeError, RuntimeError, KeyError) as exc:
        print(f"nnraw denoise-rgb: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}")
    return 0
