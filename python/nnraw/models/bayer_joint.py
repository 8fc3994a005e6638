"""Noise-aware joint demosaicker and denoiser on demosaicnet's Bayer layout (issue #17).

The layout of Gharbi et al. 2016, "Deep Joint Demosaicking and Denoising" (SIGGRAPH Asia), as its
published Bayer weights have it (``demosaicnet.BayerDemosaick``), so that those weights are the start
of nnraw's fine-tuning (``model.init_from = "demosaicnet:bayer"``, :func:`demosaicnet_state`):

    mosaic [3, H, W] (each site's own colour, 0 elsewhere), in demosaicnet's phase G R / B G
      -> pack: conv 2x2 stride 2, 3 -> 4                                      (half resolution)
      -> conv1: 3x3, 4 + 4 -> 64    (+ the packed noise-std mosaic, zero-initialised weights)
      -> 13 x (3x3, 64 -> 64) -> 3x3, 64 -> 128; each followed by PReLU (fused op, slope 0 = ReLU)
      -> filters x masks (channels 0..63 x 64..127) -> 1x1, 64 -> 12 (the residual)
      -> grouped transposed conv 2x2 stride 2, 12 -> 3                        (full resolution)
      -> cat(mosaic, upsampled) -> 3x3, 6 -> 64, PReLU -> 1x1, 64 -> 3

All convolutions are valid. With PReLU slopes 0 and the noise weights 0 the network is demosaicnet
exactly (tested against ``demosaicnet.BayerDemosaick(pretrained=True)``).

The model interface (nnraw.models): ``forward(rgb, sigma, pattern)`` with rgb the pre-demosaic in the
network's domain (``domain = "srgb"``: white balanced and sRGB-encoded, which is what demosaicnet was
trained on) and sigma its per-pixel noise std in that domain. The network needs the mosaic, not a
demosaic: the pre-demosaic keeps every sampled value (nnraw.encoding.pre_demosaic), so the mosaic is
re-sampled from it inside the network with the CFA ``pattern`` of the tile's top-left pixel. Tiles
start at even coordinates and reflection padding keeps the phase, so that pattern is the image's own,
one per image (per batch item in training). It reaches the model either as the ``pattern`` argument
(training: a list, one per crop) or through :meth:`BayerJointDenoiser.for_pattern`, which returns a
two-argument module with the usual interface for nnraw.infer (``denoise_camera_rgb`` does that with
the raw's pattern).

Phases: a window that starts one row (column) further down (right) turns BGGR, GBRG and RGGB into
demosaicnet's GRBG: shifts (dy, dx) = GRBG (0, 0), RGGB (0, 1), BGGR (1, 0), GBRG (1, 1). The core
maps a window of S x S to S - 62 at offset 31; the tile is T = H + 64 (halo 32, even); each item's
window is [d, d + T) (one zero row/column appended for d = 1) and its output [1 - d, 1 - d + H) of
the core's H + 2 rows lies at tile offset 32. The appended zero row never reaches the kept output
(the core's receptive field is 63 wide plus the 2x2 alignment), which tiled == whole checks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nnraw.models.layers import check_forward_input, make_prelu

#: Window shift (rows, columns) that maps each Bayer pattern onto demosaicnet's G R / B G.
PHASE_SHIFT = {"GRBG": (0, 0), "RGGB": (0, 1), "BGGR": (1, 0), "GBRG": (1, 1)}
CORE_HALO = 31          # demosaicnet's valid-convolution margin (output offset in its window)


def _cfa_masks(pattern: str, h: int, w: int, device, dtype) -> torch.Tensor:
    from nnraw.ops.demosaic import cfa_masks

    return cfa_masks(pattern, h, w, device, dtype)


def _prelu(act: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The fused PReLU op; torch's for dtypes the op does not take on this device (bfloat16 on CPU)."""
    if x.dtype in (torch.float32, torch.float64) or x.is_cuda:
        return act(x)
    return F.prelu(x, act.weight.to(x.dtype))


class BayerJointDenoiser(nn.Module):
    """forward(rgb [N, 3, H+64, W+64], sigma [N, 3, H+64, W+64], pattern) -> [N, 3, H, W].

    Args:
        width: feature channels (demosaicnet: 64).
        depth: 3x3 convolutions at half resolution (demosaicnet: 15).
        sigma_scale: the noise std is multiplied by this before conv1 (sigma ~ 0.003-0.1 in sRGB).
        prelu_init: initial PReLU slope (0: the ReLU network the weights were trained as).
    """

    noise_conditioned = True
    needs_pattern = True
    default_passes = 2            # nnraw.infer.self_ensemble: the image and its transpose (docs/BENCHMARKS.md)

    def __init__(self, width: int = 64, depth: int = 15, sigma_scale: float = 10.0, prelu_init: float = 0.0):
        super().__init__()
        if depth < 2:
            raise ValueError(f"BayerJointDenoiser: depth must be >= 2, got {depth}")
        self.width, self.depth = int(width), int(depth)
        self.sigma_scale = float(sigma_scale)
        self.halo = 2 * (depth + 1)           # 32 for depth 15: the core's 31, rounded up to even
        self.pattern: str | Sequence[str] | None = None
        self.pack = nn.Conv2d(3, 4, 2, stride=2)
        convs = [nn.Conv2d(8, width, 3)]
        convs += [nn.Conv2d(width, width, 3) for _ in range(depth - 2)]
        convs.append(nn.Conv2d(width, 2 * width, 3))
        self.convs = nn.ModuleList(convs)
        self.prelus = nn.ModuleList([make_prelu(c.out_channels, prelu_init) for c in convs])
        with torch.no_grad():
            self.convs[0].weight[:, 4:].zero_()       # the noise input starts switched off
        self.residual_predictor = nn.Conv2d(width, 12, 1)
        self.upsampler = nn.ConvTranspose2d(12, 3, 2, stride=2, groups=3)
        self.post_conv = nn.Conv2d(6, width, 3)
        self.post_prelu = make_prelu(width, prelu_init)
        self.output = nn.Conv2d(width, 3, 1)
        # The 15 half-resolution convolutions (97 % of the MACs) under CPU bfloat16 autocast; the pack,
        # the residual and the full-resolution head stay float32. nnraw.infer sets it (precision "auto",
        # on CPUs with AVX512_BF16); training never does. Measured (bench/cpu_bf16.py): 2.5x faster on
        # such a CPU, held-out sRGB PSNR within 0.035 dB (all of it in bfloat16: 2.8x, but -0.21 dB).
        self.trunk_bfloat16 = False

    def for_pattern(self, pattern: str | Sequence[str]) -> "PatternBound":
        """This network with ``pattern`` fixed: the two-argument module nnraw.infer runs."""
        return PatternBound(self, pattern)

    def _patterns(self, pattern, n: int) -> list[str]:
        pattern = self.pattern if pattern is None else pattern
        if pattern is None:
            raise ValueError("nnraw.models.BayerJointDenoiser: this network needs the CFA pattern of the "
                             "image's top-left pixel (pattern=..., or model.for_pattern(p))")
        pats = [pattern] * n if isinstance(pattern, str) else list(pattern)
        if len(pats) != n or any(p not in PHASE_SHIFT for p in pats):
            raise ValueError(f"nnraw.models.BayerJointDenoiser: pattern must be one of {tuple(PHASE_SHIFT)} "
                             f"or a list of {n} of them, got {pattern!r}")
        return pats

    def core(self, mosaic: torch.Tensor, sigma_mosaic: torch.Tensor | None) -> torch.Tensor:
        """demosaicnet's forward on a GRBG window: mosaic [N, 3, S, S], sigma_mosaic [N, 1, S, S]
        (already scaled) or None -> [N, 3, S - 62, S - 62] at offset 31."""
        x = self.pack(mosaic)
        if sigma_mosaic is None:
            sigma_mosaic = mosaic.new_zeros(mosaic.shape[0], 1, *mosaic.shape[-2:])
        x = torch.cat([x, F.pixel_unshuffle(sigma_mosaic, 2)], 1)
        bf16 = self.trunk_bfloat16 and x.device.type == "cpu" and x.dtype == torch.float32
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            for conv, act in zip(self.convs, self.prelus):
                x = _prelu(act, conv(x))
        x = x.float()
        filtered = x[:, :self.width] * x[:, self.width:]
        up = self.upsampler(self.residual_predictor(filtered))
        c = (mosaic.shape[-1] - up.shape[-1]) // 2
        skip = mosaic[..., c:c + up.shape[-2], c:c + up.shape[-1]]
        return self.output(_prelu(self.post_prelu, self.post_conv(torch.cat([skip, up], 1))))

    def forward(self, rgb: torch.Tensor, sigma: torch.Tensor | None = None,
                pattern: str | Sequence[str] | None = None) -> torch.Tensor:
        check_forward_input("BayerJointDenoiser", rgb, sigma, self.halo, needs_sigma=True, even=True)
        n, _, th, tw = rgb.shape
        pats = self._patterns(pattern, n)
        h, w = th - 2 * self.halo, tw - 2 * self.halo
        masks = {p: _cfa_masks(p, th, tw, rgb.device, rgb.dtype) for p in dict.fromkeys(pats)}
        m = torch.stack([masks[p] for p in pats]) if len(masks) > 1 else masks[pats[0]][None]
        mos = rgb * m
        sig = (sigma * m).sum(1, keepdim=True) * self.sigma_scale
        x = F.pad(torch.cat([mos, sig], 1), (0, 1, 0, 1))
        if len(masks) == 1:
            dy, dx = PHASE_SHIFT[pats[0]]
            x = x[..., dy:dy + th, dx:dx + tw]
        else:
            x = torch.stack([x[i, :, dy:dy + th, dx:dx + tw] for i, (dy, dx) in
                             enumerate(PHASE_SHIFT[p] for p in pats)])
        y = self.core(x[:, :3], x[:, 3:])                       # [N, 3, H + 2, W + 2] at 31 + (dy, dx)
        if len(masks) == 1:
            dy, dx = PHASE_SHIFT[pats[0]]
            return y[..., 1 - dy:1 - dy + h, 1 - dx:1 - dx + w]
        return torch.stack([y[i, :, 1 - dy:1 - dy + h, 1 - dx:1 - dx + w] for i, (dy, dx) in
                            enumerate(PHASE_SHIFT[p] for p in pats)])


class PatternBound(nn.Module):
    """A :class:`BayerJointDenoiser` with its CFA pattern fixed: ``forward(rgb, sigma)``, with the
    network's ``halo``, ``noise_conditioned`` and ``domain``, for :func:`nnraw.infer.run_tiled`."""

    def __init__(self, net: BayerJointDenoiser, pattern: str | Sequence[str], call: nn.Module | None = None):
        super().__init__()
        self.net = net
        # ``call``: what to run instead of ``net`` itself (its DistributedDataParallel wrapper in
        # training, so that gradients are averaged); not registered as a submodule.
        self._call = [call] if call is not None else None
        self.pattern = pattern if isinstance(pattern, str) else list(pattern)
        net._patterns(self.pattern, 1 if isinstance(self.pattern, str) else len(self.pattern))
        self.halo, self.noise_conditioned = net.halo, net.noise_conditioned
        self.domain = getattr(net, "domain", "linear")

    def forward(self, rgb: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
        return (self._call[0] if self._call else self.net)(rgb, sigma, self.pattern)


def bind_pattern(net: nn.Module, pattern) -> nn.Module:
    """``net.for_pattern(pattern)`` for networks that need the CFA pattern, else ``net`` itself."""
    if getattr(net, "needs_pattern", False):
        if pattern is None:
            raise ValueError(f"nnraw: model {type(net).__name__} re-samples the mosaic from the pre-demosaic "
                             "and needs its CFA pattern (pass pattern=..., or the raw image)")
        return net.for_pattern(pattern)
    return net


# --- demosaicnet's published weights (training-time only) -----------------------------------------

DEMOSAICNET_WEIGHTS = {"bayer": "bayer.pth", "xtrans": "xtrans.pth"}


def demosaicnet_weights_path(variant: str = "bayer"):
    """The .pth file shipped inside the installed demosaicnet package (no import of it: its
    ``__init__`` needs pkg_resources)."""
    import importlib.util
    from pathlib import Path

    if variant not in DEMOSAICNET_WEIGHTS:
        raise ValueError(f"nnraw: demosaicnet weights must be one of {sorted(DEMOSAICNET_WEIGHTS)}, got {variant!r}")
    spec = importlib.util.find_spec("demosaicnet")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("nnraw: init_from 'demosaicnet:...' needs the demosaicnet package "
                                  "(a training-time dependency: pip install demosaicnet==0.0.14)")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / DEMOSAICNET_WEIGHTS[variant]
    if not path.is_file():
        raise FileNotFoundError(f"nnraw: {path} is missing from the installed demosaicnet package")
    return path


def bayer_demosaicnet_names(depth: int) -> dict[str, str]:
    """demosaicnet.BayerDemosaick's parameter prefixes -> a BayerJointDenoiser's."""
    names = {"main_processor.pack_mosaic": "pack", "residual_predictor": "residual_predictor",
             "upsampler": "upsampler", "fullres_processor.post_conv": "post_conv",
             "fullres_processor.output": "output"}
    names.update({f"main_processor.conv{i + 1}": f"convs.{i}" for i in range(depth)})
    return names


BayerJointDenoiser.demosaicnet_names = staticmethod(bayer_demosaicnet_names)


def map_demosaicnet_state(dmn: dict, target: dict, names=None) -> dict:
    """demosaicnet's state dict -> a BayerJointDenoiser's (or, with ``names`` =
    ``XTransJointDenoiser.demosaicnet_names``, an XTransJointDenoiser's from XTransDemosaick's).

    ``target`` is the new network's own state dict: the parameters demosaicnet has no counterpart for
    (the noise part of conv1's weights; the PReLU slopes) keep its values (zero / prelu_init).
    """
    out = {k: v.clone() for k, v in target.items()}
    depth = sum(1 for k in out if k.startswith("convs.") and k.endswith(".weight"))
    names = (names or bayer_demosaicnet_names)(depth)
    used = set()
    for src, dst in names.items():
        for kind in ("weight", "bias"):
            s, d = f"{src}.{kind}", f"{dst}.{kind}"
            if s not in dmn:
                raise KeyError(f"nnraw: demosaicnet weights lack {s} (are they for another network: "
                               "demosaicnet:bayer for bayer_joint, demosaicnet:xtrans for xtrans_joint?)")
            v = dmn[s].to(out[d].dtype)
            if d == "convs.0.weight":
                out[d][:, :v.shape[1]] = v          # the mosaic half; the noise half stays as it is
            elif v.shape != out[d].shape:
                raise ValueError(f"nnraw: demosaicnet {s} has shape {list(v.shape)}, the network's {d} "
                                 f"{list(out[d].shape)}")
            else:
                out[d] = v.clone()
            used.add(s)
    unused = sorted(set(dmn) - used)
    if unused:
        raise KeyError(f"nnraw: demosaicnet weights have keys the network does not take: {unused}")
    return out


def demosaicnet_state(model: nn.Module, source: str = "demosaicnet:bayer") -> dict:
    """``model``'s state dict with demosaicnet's published weights in place: "demosaicnet:bayer" for a
    bayer_joint network, "demosaicnet:xtrans" for an xtrans_joint one (the model's
    ``demosaicnet_names`` says how the keys map)."""
    variant = source.split(":", 1)[1] if ":" in source else "bayer"
    path = demosaicnet_weights_path(variant)
    dmn = torch.load(path, map_location="cpu", weights_only=True)
    try:
        return map_demosaicnet_state(dmn, model.state_dict(), getattr(model, "demosaicnet_names", None))
    except (KeyError, ValueError) as e:
        raise ValueError(f"nnraw: {path} ({source}) does not fit {type(model).__name__}: {e}") from e
