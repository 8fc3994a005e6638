"""Tiled inference: run a valid-convolution network over an image of any size, tile by tile.

The whole-image computation that everything here reproduces is::

    forward_whole(model, rgb, sigma) = model(reflect_pad(rgb, halo), reflect_pad(sigma, halo))

i.e. mirror the image by ``halo = model.halo`` pixels at every border (reflection without repeating
the edge pixel, as ``F.pad(mode="reflect")``: pixel -k is pixel +k, which keeps the Bayer/CFA phase
because the halo is even), then one valid-convolution forward pass that shrinks H and W by 2*halo.
So no pixel of the image is lost and no black frame appears (the reference system left the outer
8 px black).

:func:`run_tiled` computes exactly the same numbers with memory bounded by the tile size:

* the image is cut into a grid of output tiles that all have the same size (at most ``tile``, even,
  chosen to balance the grid), each starting at even coordinates (CFA phase), or at multiples of 6
  for a network bound to one X-Trans pattern (``model.cfa_period``; its halo is a multiple of 6 too,
  so each tile, like the padded whole image, starts with the image's own pattern);
* every tile is read with its halo through mirrored indices (interior tiles are plain slices), and the
  tiles of the last row/column that reach past the image are completed by reflection too, so every
  tile the network sees has the same padded size: one convolution algorithm for all tiles;
* tiles are stacked in batches, run, and the valid part of each output is written into a
  preallocated float32 output. The input is never copied as a whole; the noise map can be given as
  a function of the tile (``sigma=callable``) so that it never exists at full size either.

On CPU in float32 the result is bit-identical to :func:`forward_whole` for any tile size (tested;
oneDNN's direct convolutions reduce each output pixel in the same order whatever the spatial size,
as long as the memory format is the same — channels_last here on both sides).

CUDA: channels_last, optional float16/bfloat16 autocast, optional ``torch.compile``; when the image
lies in host memory, tiles are gathered into pinned buffers and copied on a side stream with
``non_blocking=True`` (double buffered), so host<->device copies and the CPU's gathering/scattering
overlap the network on the compute stream.

The raw-domain entry point used by ``nnraw convert`` is :func:`denoise_camera_rgb`.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nnraw.models import noise_blend
from nnraw.noise.choose import CHECK_MAX_SIDE, ProfileScaledWarning, check_against_photo, choose_noise_profile
from nnraw.strength import blend_strength, check_strength, scale_noise_map

if TYPE_CHECKING:  # pragma: no cover
    from nnraw.noise.model import NoiseProfile

_OP = "nnraw.infer"

SigmaArg = Union[torch.Tensor, Callable[[torch.Tensor], torch.Tensor], None]
"""The noise map: None (model not noise-conditioned), a Tensor[N, 3, H, W] like the image, or a
function ``tile_rgb [B, 3, h, w] -> sigma [B, 3, h, w]`` evaluated on each padded tile (it must be
pointwise, or at least local, so that tiling does not change it)."""

DEFAULT_TILE = 1024
"""Output tile side. 1024 rather than the reference's 512: the halo's share of the work drops from
~13 % to ~6 % for the default model (halo 16) and 24 MP runs ~20 % faster on CPU; the default model's
activations for one tile stay ~53 MB each (half resolution, 48 channels)."""

PRECISIONS = {"auto": None, "float32": None, "float16": torch.float16, "bfloat16": torch.bfloat16}
"""``auto`` is float32, except on a CPU with AVX512_BF16 (:func:`cpu_has_fast_bfloat16`) for networks
with a ``trunk_bfloat16`` switch (nnraw.models.bayer_joint: its half-resolution trunk in bfloat16,
2.5x faster there; nnraw.models.xtrans_joint: convolutions 2..11; held-out PSNR within 0.05 dB,
docs/BENCHMARKS.md). Elsewhere bfloat16 convolutions
ran 9x slower than float32 (AVX2 only), so it stays off. ``float32`` is float32 throughout."""


def cpu_has_fast_bfloat16() -> bool:
    """Whether this CPU has AVX512_BF16 (Linux: /proc/cpuinfo's flags), read at run time: the wheels
    are the same on every machine, and the development CPUs differ."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            return any(line.startswith("flags") and " avx512_bf16" in line for line in f)
    except OSError:
        return False


def _set_trunk_precision(model: nn.Module, precision: str, dev: torch.device) -> None:
    """Switch the bfloat16 trunk of every submodule that has one on or off for this run."""
    on = precision == "auto" and dev.type == "cpu" and cpu_has_fast_bfloat16()
    for m in model.modules():
        if hasattr(m, "trunk_bfloat16"):
            m.trunk_bfloat16 = on


# --------------------------------------------------------------------------------------------------
# Model interface checks and the whole-image definition
# --------------------------------------------------------------------------------------------------

def model_halo(model: nn.Module) -> int:
    """The model's halo (pixels each side that the valid convolutions consume); checked to be even >= 0."""
    halo = getattr(model, "halo", None)
    if not isinstance(halo, int) or isinstance(halo, bool):
        raise TypeError(f"{_OP}: the model must have an integer attribute `halo`, got {halo!r} "
                        f"on {type(model).__name__}")
    if halo < 0 or halo % 2:
        raise ValueError(f"{_OP}: model.halo must be even and >= 0 (CFA phase), got {halo}")
    return halo


def _check_image(rgb: torch.Tensor, halo: int, name: str = "rgb") -> None:
    if not isinstance(rgb, torch.Tensor):
        raise TypeError(f"{_OP}: {name} must be a torch.Tensor, got {type(rgb).__name__}")
    if rgb.dim() != 4 or rgb.shape[1] != 3:
        raise ValueError(f"{_OP}: {name} must have shape [N, 3, H, W], got {list(rgb.shape)}")
    if rgb.dtype != torch.float32:
        raise TypeError(f"{_OP}: {name} must be float32, got {rgb.dtype}")
    h, w = rgb.shape[-2:]
    if h <= halo or w <= halo:
        raise ValueError(f"{_OP}: {name} of {h}x{w} is too small for a model with halo {halo}: "
                         f"height and width must be > {halo} (reflection padding)")


def _check_sigma(sigma: SigmaArg, rgb: torch.Tensor, model: nn.Module) -> None:
    conditioned = bool(getattr(model, "noise_conditioned", False))
    if conditioned and sigma is None:
        raise ValueError(f"{_OP}: model {type(model).__name__} is noise-conditioned: pass sigma "
                         "(a noise-std map or a function of the tile)")
    if isinstance(sigma, torch.Tensor) and sigma.shape != rgb.shape:
        raise ValueError(f"{_OP}: sigma must have the image's shape {list(rgb.shape)}, "
                         f"got {list(sigma.shape)}")


def mirrored_to(x: torch.Tensor, min_side: int) -> torch.Tensor:
    """``x`` [..., H, W] mirrored at its bottom and right edges (reflection without repeating the edge,
    again and again while the image is shorter than the padding; a side of 1 pixel is repeated) until
    both sides are at least ``min_side`` and even. Its top-left corner, and so its CFA phase, stays."""
    for dim in (-2, -1):
        target = max(x.shape[dim], min_side)
        target += target % 2
        if target > x.shape[dim]:
            x = x.index_select(dim, reflect_indices(0, target, x.shape[dim]).to(x.device))
    return x


def reflect_pad(x: torch.Tensor, halo: int) -> torch.Tensor:
    """Tensor[N, C, H, W] -> Tensor[N, C, H + 2 halo, W + 2 halo], mirrored without repeating the edge."""
    if halo == 0:
        return x
    return F.pad(x, (halo, halo, halo, halo), mode="reflect")


def _call_model(model: nn.Module, x: torch.Tensor, s: torch.Tensor | None, conditioned: bool | None = None) -> torch.Tensor:
    if conditioned is None:
        conditioned = bool(getattr(model, "noise_conditioned", False))
    return model(x, s if conditioned else None)


def forward_whole(model: nn.Module, rgb: torch.Tensor, sigma: SigmaArg = None, *,
                  channels_last: bool = True, precision: str = "auto") -> torch.Tensor:
    """The whole-image computation that :func:`run_tiled` reproduces (needs memory for the whole image).

    Args:
        model: valid-convolution network with ``halo`` (see module docstring).
        rgb: Tensor[N, 3, H, W] float32.
        sigma: None, Tensor[N, 3, H, W], or a pointwise function of the padded image.
        channels_last: run in channels_last memory format (as run_tiled does by default).
        precision: "auto" or "float32" (:data:`PRECISIONS`; the CPU's, as run_tiled decides it).

    Returns:
        Tensor[N, 3, H, W] float32.
    """
    halo = model_halo(model)
    _check_image(rgb, halo)
    _check_sigma(sigma, rgb, model)
    if precision not in ("auto", "float32"):
        raise ValueError(f"forward_whole: precision must be auto or float32, got {precision!r}")
    _set_trunk_precision(model, precision, rgb.device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    with torch.inference_mode():
        x = reflect_pad(rgb, halo).contiguous(memory_format=fmt)
        if callable(sigma):
            s = sigma(x).contiguous(memory_format=fmt)
        elif sigma is not None:
            s = reflect_pad(sigma, halo).contiguous(memory_format=fmt)
        else:
            s = None
        return _call_model(model, x, s).float().contiguous()


# --------------------------------------------------------------------------------------------------
# Tile geometry
# --------------------------------------------------------------------------------------------------

def reflect_indices(start: int, stop: int, n: int) -> torch.Tensor:
    """Indices into a length-``n`` axis for positions ``start..stop-1`` of its endless mirror image.

    Position -k maps to k and n-1+k to n-1-k (like ``F.pad(mode="reflect")``); positions further out
    keep mirroring (period 2(n-1)), which only ever feeds outputs that are thrown away.
    """
    i = torch.arange(start, stop)
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    i = torch.remainder(i, period)
    return torch.where(i >= n, period - i, i)


def tile_size(extent: int, tile: int, period: int = 2) -> int:
    """Output tile length along one axis: a multiple of ``period`` (2; 6 for X-Trans networks),
    <= max(tile, period), and balanced over the grid."""
    tile = max(period, tile - tile % period)
    count = math.ceil(extent / tile)
    return -(-math.ceil(extent / count) // period) * period


@dataclass(frozen=True)
class TileGrid:
    """All output tiles of one image: same size ``th x tw``, origins on even coordinates. ``add``: tiles
    are added into the output instead of copied (the passes of :func:`self_ensemble` sum there)."""

    height: int
    width: int
    th: int
    tw: int
    halo: int
    add: bool = False

    @classmethod
    def plan(cls, height: int, width: int, tile: int, halo: int, period: int = 2, add: bool = False) -> "TileGrid":
        """``period``: the CFA period the tiles' origins keep (2; 6 for a network bound to one X-Trans
        pattern, ``model.cfa_period``: every tile then starts with the image's own pattern)."""
        if tile < 2:
            raise ValueError(f"{_OP}: tile must be >= 2, got {tile}")
        tile -= tile % 2
        return cls(height, width, tile_size(height, tile, period), tile_size(width, tile, period), halo, add)

    @property
    def origins(self) -> list[tuple[int, int]]:
        return [(y, x) for y in range(0, self.height, self.th) for x in range(0, self.width, self.tw)]

    @property
    def padded_shape(self) -> tuple[int, int]:
        return self.th + 2 * self.halo, self.tw + 2 * self.halo

    def read(self, img: torch.Tensor, y0: int, x0: int) -> torch.Tensor:
        """The padded tile [N, C, th + 2h, tw + 2h] whose output starts at (y0, x0); a view when interior."""
        h = self.halo
        ys, ye, xs, xe = y0 - h, y0 + self.th + h, x0 - h, x0 + self.tw + h
        if ys >= 0 and xs >= 0 and ye <= self.height and xe <= self.width:
            return img[:, :, ys:ye, xs:xe]
        # Border tile: the part inside the image, mirrored at the image's own edges. F.pad(reflect)
        # is exact here (the part's edges that get padded are the image's edges) and fast.
        r0, r1, c0, c1 = max(ys, 0), min(ye, self.height), max(xs, 0), min(xe, self.width)
        pads = (c0 - xs, xe - c1, r0 - ys, ye - r1)
        if pads[0] < c1 - c0 and pads[1] < c1 - c0 and pads[2] < r1 - r0 and pads[3] < r1 - r0:
            return F.pad(img[:, :, r0:r1, c0:c1], pads, mode="reflect")
        # Tiles reaching further than one mirror image (tiny images): gather by mirrored indices.
        rows = reflect_indices(ys, ye, self.height)
        cols = reflect_indices(xs, xe, self.width)
        r0, r1, c0, c1 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
        part = img[:, :, r0:r1, c0:c1]  # bounded by the tile, so the gather never touches the whole image
        return part.index_select(2, (rows - r0).to(img.device)).index_select(3, (cols - c0).to(img.device))

    def write(self, out: torch.Tensor, tile_out: torch.Tensor, y0: int, x0: int) -> None:
        """Copy the part of an output tile [N, 3, th, tw] that lies inside the image."""
        hh, ww = min(self.th, self.height - y0), min(self.tw, self.width - x0)
        dst = out[:, :, y0:y0 + hh, x0:x0 + ww]
        (dst.add_ if self.add else dst.copy_)(tile_out[:, :, :hh, :ww])


# --------------------------------------------------------------------------------------------------
# run_tiled
# --------------------------------------------------------------------------------------------------

def cpu_threads() -> int:
    """The CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _resolve_device(device: str | torch.device | None, rgb: torch.Tensor) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"{_OP}: device {str(device)!r} requested but CUDA is not available "
                           f"(torch {torch.__version__}, built with CUDA {torch.version.cuda})")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"{_OP}: device must be 'cpu', 'cuda[:k]' or 'auto', got {str(device)!r}")
    return dev


def run_tiled(
    model: nn.Module,
    rgb: torch.Tensor,
    sigma: SigmaArg = None,
    *,
    tile: int = DEFAULT_TILE,
    batch: int | None = None,
    device: str | torch.device | None = None,
    out: torch.Tensor | None = None,
    precision: str = "auto",
    compile: bool = False,
    channels_last: bool = True,
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    add: bool = False,
) -> torch.Tensor:
    """Run ``model`` over ``rgb`` tile by tile; equals :func:`forward_whole` (bit-exact on CPU float32).

    Args:
        model: network with ``halo`` (even), ``noise_conditioned`` and
            ``forward(rgb [B, 3, h + 2 halo, w + 2 halo], sigma | None) -> [B, 3, h, w]``.
            Its parameters are moved to ``device`` and to the chosen memory format in place.
        rgb: Tensor[N, 3, H, W] float32 (CPU or CUDA); H, W > halo. Never copied as a whole.
        sigma: see :data:`SigmaArg`.
        tile: largest output tile side (even; the grid is balanced so all tiles have the same size).
        batch: tiles per forward pass (default 1 on CPU, 4 on CUDA).
        device: "cpu", "cuda[:k]", or None/"auto" (CUDA when available).
        out: optional preallocated Tensor[N, 3, H, W] float32 on ``rgb``'s device to write into.
        precision: "auto" (float32, with the bfloat16 trunk of :data:`PRECISIONS` where the CPU has
            AVX512_BF16), "float32", or on CUDA "float16"/"bfloat16" (autocast; output stays float32).
        compile: wrap the model in ``torch.compile`` (all tiles have one shape, so it compiles once).
        channels_last: run in channels_last memory format.
        threads: CPU threads for torch (default: all cores of this process's affinity mask).
        progress: called as ``progress(done_tiles, total_tiles)`` after each batch.
        add: add the result into ``out`` (which must be given) instead of overwriting it.

    Returns:
        Tensor[N, 3, H, W] float32 on ``rgb``'s device (``out`` when given).
    """
    halo = model_halo(model)
    _check_image(rgb, halo)
    _check_sigma(sigma, rgb, model)
    dev = _resolve_device(device, rgb)
    if precision not in PRECISIONS:
        raise ValueError(f"{_OP}: precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if PRECISIONS[precision] is not None and dev.type != "cuda":
        raise ValueError(f"{_OP}: precision {precision!r} is only offered on CUDA; on {dev} use auto or float32")
    _set_trunk_precision(model, precision, dev)
    if batch is None:
        batch = 4 if dev.type == "cuda" else 1
    if batch < 1:
        raise ValueError(f"{_OP}: batch must be >= 1, got {batch}")
    n, _, height, width = rgb.shape
    if add and out is None:
        raise ValueError(f"{_OP}: add=True needs the output to add into (out=...)")
    if out is None:
        out = torch.empty((n, 3, height, width), dtype=torch.float32, device=rgb.device)
    elif out.shape != rgb.shape or out.dtype != torch.float32 or out.device != rgb.device:
        raise ValueError(f"{_OP}: out must be float32 {list(rgb.shape)} on {rgb.device}, got "
                         f"{out.dtype} {list(out.shape)} on {out.device}")
    if dev.type == "cpu":
        torch.set_num_threads(threads or cpu_threads())

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.eval()
    model.to(device=dev, memory_format=fmt)
    runner = torch.compile(model, dynamic=False) if compile else model
    period = int(getattr(model, "cfa_period", 2))
    if halo % period:
        raise ValueError(f"{_OP}: model.halo {halo} must be a multiple of its cfa_period {period} (CFA phase)")
    grid = TileGrid.plan(height, width, tile, halo, period, add=add)
    origins = grid.origins
    total = n * len(origins)
    jobs = [(i, y, x) for i in range(n) for (y, x) in origins]
    batches = [jobs[k:k + batch] for k in range(0, total, batch)]
    amp = PRECISIONS[precision]

    with torch.inference_mode():
        if dev.type == "cuda" and rgb.device.type == "cpu":
            _run_cuda_pipelined(runner, model, rgb, sigma, out, grid, batches, batch, dev, amp, fmt, progress, total)
        else:
            _run_simple(runner, model, rgb, sigma, out, grid, batches, dev, amp, fmt, progress, total)
    return out


def _alloc(n: int, h: int, w: int, fmt, **kw) -> torch.Tensor:
    """An empty float32 [n, 3, h, w] in the memory format ``fmt`` (pinned allocations keep it too)."""
    if fmt == torch.channels_last:
        return torch.empty((n, h, w, 3), dtype=torch.float32, **kw).permute(0, 3, 1, 2)
    return torch.empty((n, 3, h, w), dtype=torch.float32, **kw)


def _gather(img: torch.Tensor, grid: TileGrid, jobs, dst: torch.Tensor) -> torch.Tensor:
    for k, (i, y, x) in enumerate(jobs):
        dst[k].copy_(grid.read(img[i:i + 1], y, x)[0])
    return dst[: len(jobs)]


def _sigma_for(sigma: SigmaArg, x: torch.Tensor, fmt) -> torch.Tensor | None:
    if callable(sigma) and not isinstance(sigma, torch.Tensor):
        s = sigma(x)
        if s.shape != x.shape:
            raise ValueError(f"{_OP}: the sigma function must return the tile's shape {list(x.shape)}, "
                             f"got {list(s.shape)}")
        return s.contiguous(memory_format=fmt)
    return None


def _autocast(dev: torch.device, amp):
    if amp is None:
        return torch.autocast(dev.type, enabled=False)
    return torch.autocast(dev.type, dtype=amp)


def _check_output(o: torch.Tensor, b: int, grid: TileGrid, model: nn.Module) -> None:
    want = (b, 3, grid.th, grid.tw)
    if tuple(o.shape) != want:
        raise ValueError(f"{_OP}: {type(model).__name__} returned {list(o.shape)} for a padded tile batch "
                         f"{[b, 3, *grid.padded_shape]}; expected {list(want)} (valid convolutions that "
                         f"consume model.halo = {grid.halo} px per side)")


def _run_simple(runner, model, rgb, sigma, out, grid, batches, dev, amp, fmt, progress, total) -> None:
    """Tiles gathered on the image's device, run on ``dev``, written into ``out`` (same device as rgb)."""
    ph, pw = grid.padded_shape
    bmax = max(len(b) for b in batches)
    buf = _alloc(bmax, ph, pw, fmt, device=rgb.device)
    sbuf = _alloc(bmax, ph, pw, fmt, device=rgb.device) if isinstance(sigma, torch.Tensor) else None
    # PyTorch runs a CPU convolution with kernel <= 3 on oneDNN only when N > 1 or the input has more
    # than 20480 elements (ConvParams::use_mkldnn), otherwise on its native kernel, whose sums are
    # ordered differently. Whole images are large, so small tiles go in pairs (a duplicate if need be)
    # to stay on oneDNN too: same backend, same per-pixel sums, bit-identical results.
    pair_small = dev.type == "cpu" and 3 * ph * pw <= 20480
    if pair_small and bmax < 2:
        buf = _alloc(2, ph, pw, fmt, device=rgb.device)
        sbuf = _alloc(2, ph, pw, fmt, device=rgb.device) if sbuf is not None else None
    done = 0
    for jobs in batches:
        run_jobs = jobs * 2 if (pair_small and len(jobs) == 1) else jobs
        x = _gather(rgb, grid, run_jobs, buf).to(dev)
        if sbuf is not None:
            s = _gather(sigma, grid, run_jobs, sbuf).to(dev)
        else:
            s = _sigma_for(sigma, x, fmt)
        with _autocast(dev, amp):
            o = _call_model(runner, x, s, bool(getattr(model, "noise_conditioned", False)))
        _check_output(o, len(run_jobs), grid, model)
        o = o.float().to(out.device)
        for k, (i, y, xx) in enumerate(jobs):
            grid.write(out[i:i + 1], o[k:k + 1], y, xx)
        done += len(jobs)
        if progress:
            progress(done, total)


def _run_cuda_pipelined(runner, model, rgb, sigma, out, grid, batches, bmax, dev, amp, fmt, progress, total) -> None:
    """Host image, CUDA network: two pinned slots; copies on a side stream overlap compute and the CPU.

    Per batch j (slot j % 2): gather tiles into the slot's pinned input (CPU, while the GPU runs
    batch j-1) -> H2D on the copy stream -> forward on the compute stream -> D2H on the copy stream;
    then wait for batch j-1's D2H and scatter it into ``out`` (CPU, while the GPU runs batch j).
    """
    ph, pw = grid.padded_shape
    compute = torch.cuda.current_stream(dev)
    copier = torch.cuda.Stream(dev)
    tensor_sigma = isinstance(sigma, torch.Tensor)

    def slot():
        return {
            "in_host": _alloc(bmax, ph, pw, fmt, pin_memory=True),
            "sig_host": _alloc(bmax, ph, pw, fmt, pin_memory=True) if tensor_sigma else None,
            "out_host": _alloc(bmax, grid.th, grid.tw, torch.contiguous_format, pin_memory=True),
            "in_dev": _alloc(bmax, ph, pw, fmt, device=dev),
            "sig_dev": _alloc(bmax, ph, pw, fmt, device=dev) if tensor_sigma else None,
            "h2d": torch.cuda.Event(), "computed": torch.cuda.Event(), "d2h": torch.cuda.Event(),
            "jobs": None,
        }

    slots = [slot(), slot()]

    def finish(sl) -> int:
        sl["d2h"].synchronize()
        jobs = sl["jobs"]
        for k, (i, y, x) in enumerate(jobs):
            grid.write(out[i:i + 1], sl["out_host"][k:k + 1], y, x)
        sl["jobs"] = None
        return len(jobs)

    done = 0
    for j, jobs in enumerate(batches):
        sl = slots[j % 2]
        if sl["jobs"] is not None:  # normally finished already in the previous iteration
            done += finish(sl)
        b = len(jobs)
        _gather(rgb, grid, jobs, sl["in_host"])
        if tensor_sigma:
            _gather(sigma, grid, jobs, sl["sig_host"])
        with torch.cuda.stream(copier):
            # the copy stream is in order: this H2D comes after the D2H of batch j-2, which waited
            # for batch j-2's forward, so in_dev is no longer being read.
            sl["in_dev"].copy_(sl["in_host"], non_blocking=True)
            if tensor_sigma:
                sl["sig_dev"].copy_(sl["sig_host"], non_blocking=True)
            sl["h2d"].record(copier)
        compute.wait_event(sl["h2d"])
        x = sl["in_dev"][:b]
        s = sl["sig_dev"][:b] if tensor_sigma else _sigma_for(sigma, x, fmt)
        with _autocast(dev, amp):
            o = _call_model(runner, x, s, bool(getattr(model, "noise_conditioned", False)))
        _check_output(o, b, grid, model)
        o = o.float().contiguous()
        sl["computed"].record(compute)
        with torch.cuda.stream(copier):
            copier.wait_event(sl["computed"])
            o.record_stream(copier)  # o was allocated on the compute stream and is read by the copier
            sl["out_host"][:b].copy_(o, non_blocking=True)
            sl["d2h"].record(copier)
        sl["jobs"] = jobs
        prev = slots[(j + 1) % 2]
        if prev["jobs"] is not None:
            done += finish(prev)
            if progress:
                progress(done, total)
    for sl in slots:
        if sl["jobs"] is not None:
            done += finish(sl)
    if progress:
        progress(done, total)


# --------------------------------------------------------------------------------------------------
# Self-ensemble: the mean over orientations of the image
# --------------------------------------------------------------------------------------------------

DIHEDRAL = ((False, False, False), (True, False, False), (False, True, False), (False, False, True),
            (False, True, True), (True, True, False), (True, False, True), (True, True, True))
"""The 8 orientations of an image as (transpose, flip left-right, flip upside down), in the order the
passes of :func:`self_ensemble` take them: 2 passes are the image and its transpose (a view: no copy
of the image), 4 add the two flips (each a copy of the image and of its result), 8 take all."""

PASSES = (1, 2, 4, 8)     # (nnraw.convert.PASSES checks --passes with the same values, without torch)


def default_passes(model: nn.Module, device: torch.device, precision: str = "auto") -> int:
    """The self-ensemble's passes when none are asked for: the network's ``default_passes`` (2 for the
    joint Bayer and X-Trans networks) where it runs fast, on CUDA or on a CPU whose bfloat16 trunk
    precision "auto" switches on (:func:`cpu_has_fast_bfloat16`): the time the trunk saves pays for
    the second pass. 1 elsewhere, so that float32 CPUs keep their speed (docs/BENCHMARKS.md: 24 MP in
    58 s with 2 passes under auto, 61 s with 1 in float32, 104 s with 2 in float32)."""
    fast = torch.device(device).type == "cuda" or (precision == "auto" and cpu_has_fast_bfloat16())
    return int(getattr(model, "default_passes", 1)) if fast else 1


def _orient(x: torch.Tensor, transpose: bool, flip_h: bool, flip_v: bool) -> torch.Tensor:
    x = x.transpose(-1, -2) if transpose else x
    dims = [d for d, on in ((-1, flip_h), (-2, flip_v)) if on]
    return x.flip(dims) if dims else x


def _unorient(x: torch.Tensor, transpose: bool, flip_h: bool, flip_v: bool) -> torch.Tensor:
    dims = [d for d, on in ((-1, flip_h), (-2, flip_v)) if on]
    x = x.flip(dims) if dims else x
    return x.transpose(-1, -2) if transpose else x


def self_ensemble(prepare: Callable[[str | None], nn.Module], rgb: torch.Tensor, sigma: SigmaArg = None, *,
                  passes: int = 2, pattern: str | None = None,
                  progress: Callable[[int, int], None] | None = None, **run_kw) -> torch.Tensor:
    """The mean of a network's results over ``passes`` orientations of the image (:data:`DIHEDRAL`),
    each pass run by :func:`run_tiled` (exact: tiled == whole) and turned back.

    A network's errors that depend on the direction (zipper and maze residues of a demosaic, the grain
    of the noise it leaves) differ between orientations and partly cancel (Timofte et al. 2016's
    "self-ensemble"); on held-out photos 2 passes gained ~0.1 dB at every noise level
    (docs/BENCHMARKS.md). A residue tied to the CFA grid itself, such as the default's green
    checkerboard (tests/test_artifacts.py), turns with the pattern and does not cancel. Each pass costs
    one network run.

    Args:
        prepare: ``prepare(pattern)`` -> the module for an orientation whose top-left CFA pattern is
            ``pattern`` (None when ``pattern`` is None).
        rgb, sigma: as :func:`run_tiled` (``sigma`` a tensor or a pointwise function of the tile).
        passes: 1, 2, 4 or 8 (:data:`PASSES`).
        pattern: the CFA pattern of ``rgb[..., :n, :n]``; each orientation's is derived from it
            (:func:`nnraw.cfa.transformed`). None for networks that need none.
        progress: ``progress(done, total)`` over all passes' tiles.
        run_kw: the other arguments of :func:`run_tiled`.
    """
    from nnraw import cfa

    if passes not in PASSES:
        raise ValueError(f"{_OP}: passes must be one of {', '.join(map(str, PASSES))}, got {passes!r}")
    if passes == 1:
        return run_tiled(prepare(pattern), rgb, sigma, progress=progress, **run_kw)
    if isinstance(sigma, torch.Tensor) and sigma.shape != rgb.shape:
        raise ValueError(f"{_OP}: sigma must have the image's shape {list(rgb.shape)}, got {list(sigma.shape)}")
    h, w = rgb.shape[-2:]
    out = torch.zeros(rgb.shape, dtype=torch.float32, device=rgb.device)
    for k, (t, fh, fv) in enumerate(DIHEDRAL[:passes]):
        pat = cfa.transformed(pattern, h, w, transpose=t, flip_h=fh, flip_v=fv) if pattern is not None else None
        net = prepare(pat)
        x = _orient(rgb, t, fh, fv)
        s = _orient(sigma, t, fh, fv) if isinstance(sigma, torch.Tensor) else sigma
        step = (lambda d, n, k=k: progress(k * n + d, passes * n)) if progress else None
        if fh or fv:                                 # flips copy: run, then add the result turned back
            out.add_(_unorient(run_tiled(net, x, s, progress=step, **run_kw), t, fh, fv))
        else:                                        # the image or its transpose: add in place, through a view
            run_tiled(net, x, s, out=_orient(out, t, False, False), add=True, progress=step, **run_kw)
    return out.mul_(1.0 / passes)


# --------------------------------------------------------------------------------------------------
# Raw-domain entry point (called by nnraw.convert)
# --------------------------------------------------------------------------------------------------

def resolve_model(model: str | nn.Module, device: torch.device, iso: float | None = None) -> nn.Module:
    """A model name (see ``nnraw.models.available_models()``) or an nn.Module -> the module.

    ``"reference"`` picks the seed network trained for the ISO nearest (in log) to ``iso``.
    """
    if isinstance(model, nn.Module):
        return model
    try:
        from nnraw.models import available_models, load_model
    except ImportError as exc:
        raise RuntimeError(f"{_OP}: model {model!r} is not available: this build has no trained "
                           f"networks (nnraw.models: {exc})") from exc

    if model == "reference":
        if not iso:
            raise ValueError(f"{_OP}: model 'reference' needs the ISO to choose among the per-ISO networks "
                             "(pass --iso N)")
        choices = [int(m.split("iso")[1]) for m in available_models() if m.startswith("reference-iso")]
        if not choices:
            raise ValueError(f"{_OP}: no reference-iso* models are available; have: {', '.join(available_models())}")
        model = f"reference-iso{min(choices, key=lambda c: abs(math.log(c / iso)))}"
    return load_model(model, device)


def _checked_profile(prof: "NoiseProfile", rgb: torch.Tensor, pattern: str | None) -> "NoiseProfile":
    """``prof`` checked against the photo's flat areas (:func:`nnraw.noise.choose.check_against_photo`,
    on the CFA samples of the centre crop it measures, cut here so that no full-size mosaic is built;
    the pre-demosaic keeps the samples exactly); a
    :class:`~nnraw.noise.choose.ProfileScaledWarning` says when it was scaled down."""
    if pattern is None or rgb.shape[0] != 1:
        return prof
    from nnraw import cfa
    from nnraw.noise.profile import centre_window

    crop = rgb[(0, slice(None)) + centre_window(*rgb.shape[-2:], pattern, CHECK_MAX_SIDE)].float().cpu()
    masks = torch.from_numpy(cfa.masks(pattern, crop.shape[-2], crop.shape[-1]))
    mosaic = (crop * masks).sum(0).numpy()
    checked, k = check_against_photo(prof, mosaic, pattern)
    if k != 1.0:
        warnings.warn(f"the noise profile ({prof.name or 'unnamed'}) claims more noise than the photo's flat areas "
                      f"show: the network is told {k:.2f} x its noise (a wrong camera, ISO or profile?)",
                      ProfileScaledWarning, stacklevel=3)
    return checked


def denoise_camera_rgb(
    rgb: torch.Tensor,
    *,
    raw: Any = None,
    model: str | nn.Module = "default",
    iso: float | None = None,
    device: str | torch.device | None = None,
    profile: "str | Path | NoiseProfile | None" = None,
    sigma: float | None = None,
    wb: Any = None,
    strength: float = 1.0,
    tile: int = DEFAULT_TILE,
    batch: int | None = None,
    precision: str = "auto",
    compile: bool = False,
    progress: Callable[[int, int], None] | None = None,
    pattern: str | None = None,
    passes: int | None = None,
) -> torch.Tensor:
    """Denoise + demosaic-refine a pre-demosaiced camera-RGB image with a network, in tiles.

    Args:
        rgb: Tensor[1, 3, H, W] float32, camera RGB normalised to [0, 1] (not white balanced): the
            output of the pre-demosaic. Values outside [0, 1] are passed to the network as they are;
            the noise map is computed from the image clipped to [0, 1].
        raw: the RawImage it came from (for make/model/iso), or None.
        model: a model name (``nnraw.models.available_models()``, or "reference" = the per-ISO
            seed network nearest the ISO) or an nn.Module.
        iso: overrides the raw's ISO.
        device: "cpu", "cuda[:k]", or None/"auto".
        profile: a NoiseProfile or a profile file; overrides the camera/reference profile.
        sigma: a constant noise std (in [0, 1] units) instead of a profile (used by denoise-rgb).
        wb: as-shot white-balance gains [3] (default: ``raw.wb``, else 1): networks trained in the
            white-balanced encoded domain (:mod:`nnraw.encoding`) need them.
        strength: 0..2, the photographer's control. The network is conditioned on the noise map
            times ``strength`` and the result is blended ``rgb + min(strength, 1) * (net - rgb)``:
            0 returns ``rgb`` itself without running the network (bit for bit the pre-demosaic),
            1 is the network as trained, 2 denoises as if the noise were twice the measured one.
            Models without a noise input only get the blend (values above 1 act as 1).
        tile, batch, precision, compile, progress: see :func:`run_tiled`.
        pattern: the CFA pattern of ``rgb[..., :2, :2]`` (default ``raw.pattern``), for networks that
            re-sample the mosaic from the pre-demosaic (``needs_pattern``: nnraw.models.bayer_joint).
        passes: the self-ensemble's orientations (:func:`self_ensemble`: 1, 2, 4 or 8; each one
            network run); default: :func:`default_passes` (2 for the joint Bayer and X-Trans networks
            on CUDA and on CPUs with AVX512_BF16, 1 otherwise).

    Returns:
        Tensor[1, 3, H, W] float32 on rgb's device (``rgb`` itself when ``strength`` is 0).
    """
    from nnraw.encoding import in_domain

    strength = check_strength(strength, f"{_OP}: strength")
    if strength == 0.0:
        return rgb
    dev = _resolve_device(device, rgb)
    net = resolve_model(model, dev, iso or (getattr(raw, "iso", None) if raw is not None else None))
    h, w = rgb.shape[-2:]
    if rgb.dim() == 4 and min(h, w) <= model_halo(net):
        # A photo smaller than the network's halo (LibRaw reads raws from ~22 px): mirrored at its bottom
        # and right edges, where the CFA phase of [0, 0] stays, until the halo fits; then cropped back.
        grown = mirrored_to(rgb, model_halo(net) + 1)
        return denoise_camera_rgb(grown, raw=raw, model=net, iso=iso, device=device, profile=profile, sigma=sigma,
                                  wb=wb, strength=strength, tile=tile, batch=batch, precision=precision,
                                  compile=compile, progress=progress, pattern=pattern,
                                  passes=passes)[..., :h, :w].contiguous()
    blended = net
    passes = default_passes(net, dev, precision) if passes is None else passes
    needs_pattern = getattr(net, "needs_pattern", False)
    if needs_pattern:               # one CFA phase per image: tiles start at multiples of its period
        from nnraw.models.bayer_joint import bind_pattern

        pattern = pattern or getattr(raw, "pattern", None)
        if pattern is None:
            bind_pattern(net, None)                   # its error: the network needs the CFA pattern
    # Networks trained white balanced and encoded run in that domain, pointwise around them.
    wb = wb if wb is not None else (getattr(raw, "wb", None) if raw is not None else None)
    wb_t = torch.as_tensor(np.asarray(wb, dtype=np.float32)) if wb is not None else None
    prepare = lambda pat: in_domain(bind_pattern(net, pat) if needs_pattern else net, wb_t)  # noqa: E731
    sigma_fn = None
    if getattr(net, "noise_conditioned", False):
        if sigma is not None:
            const = float(sigma)
            if not (const >= 0 and math.isfinite(const)):
                raise ValueError(f"{_OP}: sigma must be a finite noise std >= 0, got {sigma}")
            sigma_fn = lambda x: torch.full_like(x, const)  # noqa: E731
        else:
            prof, _ = choose_noise_profile(profile=profile, raw=raw, iso=iso)
            prof = _checked_profile(prof, rgb, pattern or getattr(raw, "pattern", None))
            sigma_fn = lambda x: prof.sigma_map(x.clamp(0.0, 1.0))  # noqa: E731
        if strength != 1.0:
            sigma_fn = scale_noise_map(sigma_fn, strength)
        noise_blend.apply(blended, sigma_fn)      # a blended network's weights for this photo's noise
    out = self_ensemble(prepare, rgb, sigma_fn, passes=passes, pattern=pattern if needs_pattern else None,
                        tile=tile, batch=batch, device=dev, precision=precision, compile=compile, progress=progress)
    return blend_strength(rgb, out, strength)
