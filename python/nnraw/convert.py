"""`nnraw convert`: camera raw -> demosaiced (and, with a model, denoised) linear DNG.

The pipeline, one named and timed stage each (``ConvertResult.stages`` holds the seconds)::

    read          raw.read_raw: Bayer mosaic + metadata (rawpy/LibRaw)
    normalise     raw.normalise: black subtraction, scale to [0, 1]             -> Tensor[1, 1, H, W]
                  (the whole visible area; an odd height/width is mirrored to even here, keeping
                  the CFA phase, and cropped back after the network: every pixel is kept)
    pre_demosaic  encoding.pre_demosaic: white balanced, sRGB-encoded, edge-aware -> Tensor[1, 3, H, W]
                  (X-Trans: nnraw.cfa.colour_difference_demosaic, any size, no padding)
    network       infer.denoise_camera_rgb (skipped for --model none; on X-Trans raws ``default``
                  runs the shipped ``xtrans`` network, or none when it is not shipped, and the
                  result's ``notes`` say so)                                    -> Tensor[1, 3, H, W]
    render        preview.render_srgb: the DNG's sRGB preview (+ --preview/--compare)
    write_dng     dng.write_dng_file (linear) or dng.write_cfa_dng_file (--output cfa: Bayer, the
                  result sampled back at the source's CFA sites) into a temporary file beside the output
    copy_metadata dng.copy_metadata: Exif/XMP of the source (pyexiv2)
    (then the temporary file is fsynced and renamed: an output is complete or absent)

The original raw is only ever opened for reading.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from nnraw.noise.choose import ProfileWarning

if TYPE_CHECKING:  # pragma: no cover
    from nnraw.noise.model import NoiseProfile

__all__ = [
    "ConvertResult", "ModelUnavailableError", "convert_file", "default_output", "collect_inputs",
    "add_arguments", "run", "read", "normalise_mosaic", "pre_demosaic", "network", "render_preview",
    "write_dng", "copy_source_metadata", "PREVIEW_MAX_SIZE",
]

#: Longer side of the sRGB preview embedded in IFD0 (Adobe writes 256..1024).
PREVIEW_MAX_SIZE = 1024
#: Rows per strip of the pre-demosaic (bounds its memory; the result does not depend on it).
DEMOSAIC_ROWS_PER_STRIP = 512
PRE_DEMOSAIC_DOMAIN = "srgb"  # nnraw.encoding: the classic pre-demosaic runs white balanced and encoded
_HALO = 4  # rows of context each side of a strip; even, so every strip starts on the same CFA phase
OUTPUT_SUFFIX = "-nnraw.dng"
OUTPUT_KINDS = ("linear", "cfa")


class ModelUnavailableError(RuntimeError):
    """A --model other than "none" was asked for and this build cannot run it."""


@dataclasses.dataclass
class ConvertResult:
    """What happened to one input. ``stages`` maps stage name -> seconds."""

    input: str
    output: str | None
    ok: bool
    error: str | None = None
    seconds: float = 0.0
    stages: dict[str, float] = dataclasses.field(default_factory=dict)
    model: str = "default"
    strength: float = 1.0
    kind: str = "linear"
    notes: list[str] = dataclasses.field(default_factory=list)   # warnings for stderr (e.g. X-Trans without network)

    def as_json(self) -> dict:
        return {"input": self.input, "output": self.output, "ok": self.ok, "error": self.error,
                "model": self.model, "strength": self.strength, "kind": self.kind,
                "notes": self.notes, "seconds": round(self.seconds, 4), "stages": {k: round(v, 4) for k, v in self.stages.items()}}


# ----------------------------------------------------------------------------------------------- stages

def read(path: Path):
    """Stage `read`: :func:`nnraw.io.raw.read_raw`."""
    from nnraw.io.raw import read_raw

    return read_raw(path)


def normalise_mosaic(raw) -> torch.Tensor:
    """Stage `normalise`: Tensor[1, 1, H, W] float32, 0 = black, 1 = white level, H and W even.

    The whole visible area; an odd height or width gets one mirrored row/column at the bottom/right
    (``F.pad(mode="reflect")``: row H is row H-2, the same CFA colour), cropped off again by
    :func:`convert_file` after the network.
    """
    from nnraw.io.raw import normalise

    x = normalise(raw, whole=True)
    h, w = x.shape[-2:]
    if len(raw.pattern) == 2 * 2 and (h % 2 or w % 2):   # (X-Trans: any size, no padding)
        x = torch.nn.functional.pad(x, (0, w % 2, 0, h % 2), mode="reflect")
    return x


def pre_demosaic(mosaic: torch.Tensor, pattern: str, wb: np.ndarray, *, device: str = "cpu",
                 rows_per_strip: int = DEMOSAIC_ROWS_PER_STRIP) -> torch.Tensor:
    """Stage `pre_demosaic`: edge-aware demosaic, white balanced and sRGB-encoded
    (:func:`nnraw.encoding.pre_demosaic`: 2-4 dB better than in linear camera RGB), in strips of rows.

    Each strip carries ``_HALO`` (even) rows of context on each side, taken from the image (mirrored
    only at the image's own top and bottom), so the result equals a whole-image demosaic.

    Args:
        mosaic: Tensor[1, 1, H, W] float32.
        pattern: CFA pattern of ``mosaic[..., :2, :2]``.
        wb: [3] white-balance gains.

    Returns:
        Tensor[1, 3, H, W] float32 camera RGB on the CPU.
    """
    from nnraw import cfa
    from nnraw.encoding import pre_demosaic as demosaic_encoded

    h, w = mosaic.shape[-2:]
    gains = torch.as_tensor(np.asarray(wb, dtype=np.float32), device=device)
    rows_per_strip = max(2 * _HALO, rows_per_strip // 2 * 2)
    out = torch.empty(1, 3, h, w, dtype=torch.float32)
    for y0 in range(0, h, rows_per_strip):
        y1 = min(h, y0 + rows_per_strip)
        a, b = max(0, y0 - _HALO), min(h, y1 + _HALO)
        if b - a < 4:  # a sliver at the bottom: widen its context upwards
            a = max(0, b - 4)
        strip = mosaic[..., a:b, :].to(device)
        # the strip's own top-left block (the same as ``pattern`` for Bayer: a is even)
        rgb = demosaic_encoded(strip, cfa.shifted(pattern, a, 0), gains, PRE_DEMOSAIC_DOMAIN)
        out[..., y0:y1, :] = rgb[..., y0 - a:y1 - a, :].float().cpu()
    return out


def network(rgb: torch.Tensor, raw, *, model: str, iso: float | None, device: str,
            strength: float = 1.0, profile: str | Path | NoiseProfile | None = None,
            passes: int | None = None) -> torch.Tensor:
    """Stage `network`: denoise camera RGB with ``model`` (identity for "none" and for strength 0).

    Raises:
        ModelUnavailableError: nnraw.infer is missing from this build or cannot load ``model``.
    """
    if model == "none" or strength == 0:
        return rgb
    infer = _import_infer(model)
    out = infer.denoise_camera_rgb(rgb, raw=raw, model=model, iso=iso, device=device, strength=strength, pattern=raw.pattern,
                                   profile=profile, passes=passes)
    if out.shape != rgb.shape:
        raise RuntimeError(f"network: model {model!r} returned shape {list(out.shape)}, expected {list(rgb.shape)}")
    return out.float().cpu()


def _model_for_sensor(input_path: Path, raw, model: str, result: "ConvertResult") -> str:
    """The network to run on ``raw``: ``model`` itself, or for ``default`` on an X-Trans raw the shipped
    X-Trans network (``xtrans``); ``none`` (the classic X-Trans demosaic, with a note saying it is not
    denoised) when no X-Trans network is shipped. A named model for the other CFA is an error naming
    the raw and the model's file."""
    from nnraw import models

    sensor = "X-Trans" if len(raw.pattern) == 36 else "Bayer"
    if sensor == "X-Trans" and model == models.DEFAULT_MODEL:
        if models.XTRANS_MODEL not in models.available_models():
            result.notes.append(f"{input_path}: X-Trans raw: demosaiced with the classic X-Trans method, without "
                                f"the network (not denoised): no X-Trans network ({models.XTRANS_MODEL}.safetensors) "
                                f"is shipped in {models.WEIGHTS_DIR}")
            return "none"
        model = models.XTRANS_MODEL
    if model == "reference":            # the per-ISO seed networks: Bayer
        if sensor != "Bayer":
            raise ValueError(f"{input_path}: an X-Trans raw, but model 'reference' is for Bayer raws only")
        return model
    if (models.WEIGHTS_DIR / f"{model}.json").exists():
        wanted, cfg_path = models.model_sensor(model)
        if wanted != sensor:
            raise ValueError(f"{input_path}: a {sensor} raw (CFA pattern {raw.pattern}), but model {model!r} "
                             f"({cfg_path}) is for {wanted} raws; use --model default, which picks the network "
                             f"for the raw's CFA, or --model none")
    return model


def _import_infer(model: str):
    try:
        import nnraw.infer as infer
    except ImportError as exc:
        raise ModelUnavailableError(
            f"model {model!r} is not available: this build of nnraw has no network inference "
            f"(nnraw.infer: {exc}); use --model none"
        ) from exc
    if not hasattr(infer, "denoise_camera_rgb"):
        raise ModelUnavailableError(f"model {model!r} is not available: nnraw.infer has no denoise_camera_rgb")
    return infer


def render_preview(rgb: torch.Tensor, raw, *, orient: bool, max_size: int | None) -> np.ndarray:
    """Stage `render`: uint8 sRGB [h, w, 3] (see nnraw.io.preview.render_srgb)."""
    from nnraw.io.preview import render_srgb

    return render_srgb(rgb, raw, orient=orient, max_size=max_size)


def software_string(model: str, strength: float, kind: str = "linear") -> str:
    """What the DNG's Software tag and XMP CreatorTool say, e.g.
    ``nnraw 0.1.0 (model default, strength 1, output linear)``."""
    import nnraw

    if model == "none":
        return f"nnraw {nnraw.__version__} (model none, output {kind})"
    return f"nnraw {nnraw.__version__} (model {model}, strength {strength:g}, output {kind})"


def write_dng(path: Path, rgb: torch.Tensor, raw, preview: np.ndarray, *, software: str | None = None,
              kind: str = "linear") -> None:
    """Stage `write_dng`: the linear DNG (uint16), or with ``kind="cfa"`` a Bayer DNG in the source's
    layout (pattern, black/white levels, default crop), without the source's Exif/XMP."""
    from nnraw.io.dng import DngMetadata, write_cfa_dng_file, write_dng_file

    meta = DngMetadata.from_raw(raw)
    if software is not None:
        meta.software = software
    if kind == "cfa":
        write_cfa_dng_file(path, rgb, meta=meta, preview=preview, pattern=raw.pattern,
                           black_levels=raw.black_levels, white_level=raw.white_level, source=raw.visible)
    elif kind == "linear":
        write_dng_file(path, rgb, meta=meta, preview=preview)
    else:
        raise ValueError(f"output kind must be one of {', '.join(OUTPUT_KINDS)}, got {kind!r}")


def copy_source_metadata(source: Path, target: Path, *, software: str | None = None) -> dict[str, int]:
    """Stage `copy_metadata`: Exif/XMP from the raw into the DNG (and XMP CreatorTool = ``software``)."""
    from nnraw.io.dng import copy_metadata

    return copy_metadata(source, target, creator_tool=software)


# ----------------------------------------------------------------------------------------------- driver

def default_output(input_path: Path, out_dir: Path | None = None) -> Path:
    """``IMG_1234.PEF`` -> ``IMG_1234-nnraw.dng`` beside it (or in ``out_dir``)."""
    return (out_dir or input_path.parent) / f"{input_path.stem}{OUTPUT_SUFFIX}"


def _resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: CUDA is not available (this torch has no CUDA or no GPU is visible)")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    return device


class _Timer:
    def __init__(self, stages: dict[str, float]):
        self.stages = stages

    @contextlib.contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.stages[name] = self.stages.get(name, 0.0) + time.perf_counter() - t0


def convert_file(
    input: str | Path,  # noqa: A002 - the name the CLI and the docs use
    output: str | Path | None = None,
    *,
    model: str = "default",
    strength: float = 1.0,
    kind: str = "linear",
    iso: float | None = None,
    device: str = "auto",
    overwrite: bool = False,
    preview: str | Path | None = None,
    compare: str | Path | None = None,
    profile: str | Path | NoiseProfile | None = None,
    passes: int | None = None,
) -> ConvertResult:
    """Convert one raw file to a linear DNG. Never raises for a bad input: see ``ConvertResult.error``.

    Args:
        input: the raw file (read only).
        output: the DNG to write; default ``<stem>-nnraw.dng`` beside the input.
        model: network name, or "none" for the pre-demosaic alone.
        strength: 0..2, how hard to denoise (see :func:`nnraw.infer.denoise_camera_rgb`); 0 writes
            the pre-demosaic alone, as ``model="none"``.
        kind: "linear" (demosaiced LinearRaw DNG) or "cfa" (Bayer DNG: the result sampled back at
            the source's CFA sites, in its layout, for an editor's own demosaic).
        iso: ISO for the network (default: from the raw's metadata).
        device: "auto", "cpu" or "cuda".
        overwrite: replace existing outputs (DNG, preview, compare).
        preview: also write an sRGB PNG of the result here (orientation applied).
        compare: also write a 2-layer GIMP XCF here (plain pre-demosaic, nnraw result).
        profile: a noise profile (a NoiseProfile, or a file of ``nnraw profile``) to use instead of the
            camera's at its ISO.
        passes: the network's self-ensemble, 1, 2, 4 or 8 orientations (:func:`nnraw.infer.self_ensemble`);
            default: :func:`nnraw.infer.default_passes` (2 for the joint networks where they run fast).

    Returns:
        ConvertResult (``ok`` False and ``error`` naming the file and the reason on failure; no
        output or temporary file is left behind then).
    """
    from nnraw.io.dng import atomic_output
    from nnraw.highlights import recover_highlights
    from nnraw.io.preview import write_png, write_xcf

    input_path = Path(input)
    output_path = Path(output) if output is not None else default_output(input_path)
    result = ConvertResult(input=str(input_path), output=str(output_path), ok=False, model=model,
                           strength=float(strength) if isinstance(strength, (int, float)) else strength, kind=kind)
    timer = _Timer(result.stages)
    t0 = time.perf_counter()
    try:
        if output_path.suffix.lower() != ".dng":
            raise ValueError(f"{output_path}: output must end in .dng")
        if input_path.exists() and output_path.exists() and os.path.samefile(input_path, output_path):
            raise ValueError(f"{output_path}: output would replace the input")
        for extra in (preview, compare):
            if extra is not None and Path(extra).exists() and not overwrite:
                raise FileExistsError(f"{extra}: output exists (use --overwrite to replace it)")
        if output_path.exists() and not overwrite:
            raise FileExistsError(f"{output_path}: output exists (use --overwrite to replace it)")
        dev = _resolve_device(device)
        strength = _check_strength(strength)
        _check_passes(passes)
        if kind not in OUTPUT_KINDS:
            raise ValueError(f"output kind must be one of {', '.join(OUTPUT_KINDS)}, got {kind!r}")
        if model != "none" and strength != 0:
            _import_infer(model)  # fail before the slow stages
        software = software_string(model, strength, kind)

        with timer("read"):
            raw = read(input_path)
        if model != "none" and strength != 0:
            model = _model_for_sensor(input_path, raw, model, result)
            result.model = model
            software = software_string(model, strength, kind)
        with timer("normalise"):
            mosaic = normalise_mosaic(raw)
        with timer("pre_demosaic"):
            plain = pre_demosaic(mosaic, raw.pattern, raw.wb, device=dev)
            plain = recover_highlights(plain, raw.wb, inplace=True)  # clipped green from R and B (nnraw.highlights)
        del mosaic
        with timer("network"), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ProfileWarning)
            rgb = network(plain, raw, model=model, iso=iso if iso is not None else raw.iso, device=dev,
                          strength=strength, profile=profile, passes=passes)
        for w in caught:              # what the noise profile is based on: a note on the photo; others as they were
            if issubclass(w.category, ProfileWarning):
                result.notes.append(f"{input_path}: {w.message}")
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if tuple(rgb.shape[-2:]) != (raw.height, raw.width):  # odd sizes were mirrored to even: crop back
            rgb = rgb[..., :raw.height, :raw.width].contiguous()
            plain = plain[..., :raw.height, :raw.width]
        if compare is None:
            del plain
        with contextlib.ExitStack() as outputs:
            with timer("render"):
                embedded = render_preview(rgb, raw, orient=False, max_size=PREVIEW_MAX_SIZE)
            if preview is not None:
                tmp_png = outputs.enter_context(atomic_output(preview, overwrite=overwrite))
                with timer("render"):
                    write_png(tmp_png, render_preview(rgb, raw, orient=True, max_size=None))
            if compare is not None:
                tmp_xcf = outputs.enter_context(atomic_output(compare, overwrite=overwrite))
                with timer("render"):
                    write_xcf(tmp_xcf, [("pre-demosaic (plain)", render_preview(plain, raw, orient=True, max_size=None)),
                                        (f"nnraw ({model}, strength {strength:g})" if model != "none" else "nnraw (none)",
                                         render_preview(rgb, raw, orient=True, max_size=None))])
                del plain
            tmp_dng = outputs.enter_context(atomic_output(output_path, overwrite=overwrite))
            with timer("write_dng"):
                write_dng(tmp_dng, rgb, raw, embedded, software=software, kind=kind)
            with timer("copy_metadata"):
                copy_source_metadata(input_path, tmp_dng, software=software)
        result.ok = True
    except Exception as exc:  # one bad file must not stop a batch
        result.error = _describe(exc, input_path)
    finally:
        result.seconds = time.perf_counter() - t0
    return result


def _check_strength(strength) -> float:
    """The strength as a float in [0, 2]; ValueError in plain words otherwise (no torch import needed)."""
    try:
        s = float(strength)
    except (TypeError, ValueError):
        s = float("nan")
    if not (0.0 <= s <= 2.0):   # also false for NaN
        raise ValueError(f"--strength must be from 0 (no denoising) to 2 (twice the measured noise), got {strength!r}")
    return s


PASSES = (1, 2, 4, 8)   # nnraw.infer.PASSES (not imported: checking options needs no torch)


def _check_passes(passes) -> None:
    """None (the network's default) or one of :data:`PASSES`; ValueError in plain words otherwise."""
    if passes is not None and passes not in PASSES:
        raise ValueError(f"--passes must be one of {', '.join(map(str, PASSES))} (orientations the network "
                         f"runs on and averages), got {passes!r}")


def _describe(exc: Exception, input_path: Path) -> str:
    from nnraw.io.raw import RawReadError

    text = str(exc)
    if isinstance(exc, RawReadError) or str(input_path) in text:
        return text
    if isinstance(exc, (FileExistsError, FileNotFoundError, ValueError, ModelUnavailableError)) and text:
        return f"{input_path}: {text}"
    return f"{input_path}: {type(exc).__name__}: {text}"


def collect_inputs(paths: list[str], recursive: bool = False) -> list[Path]:
    """Files as given, plus the raw files in given directories (sorted; our own outputs skipped)."""
    from nnraw.io.raw import RAW_EXTENSIONS

    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            pattern = "**/*" if recursive else "*"
            found += sorted(
                f for f in p.glob(pattern)
                if f.is_file() and f.suffix.lower() in RAW_EXTENSIONS and not f.name.startswith(".")
                and not f.name.lower().endswith(OUTPUT_SUFFIX)
            )
        else:
            found.append(p)
    return found


# ------------------------------------------------------------------------------------------------- CLI

EXAMPLES = """\
examples:
  nnraw convert IMG_1234.CR2                    writes IMG_1234-nnraw.dng beside the raw
  nnraw convert ~/Pictures/night --out-dir ~/Pictures/night/nnraw --strength 0.5
  nnraw convert IMG_1234.NEF -o clean.dng --output cfa --preview look.png

words:
  linear DNG    a DNG whose pixels are already demosaiced (full RGB at every pixel, "LinearRaw") but
                still linear camera data: your raw editor develops it like a raw (white balance,
                exposure, colour), it only skips its own demosaicing
  CFA DNG       (--output cfa) a DNG with one colour per pixel in the raw's own Bayer layout, denoised:
                your editor demosaics it itself and keeps its raw-only modules
  pre-demosaic  the classic (not learned) edge-aware demosaic that nnraw runs first and the network
                then improves; --model none or --strength 0 writes it alone
  noise level   the network is told how noisy each pixel is, from your camera's noise profile at the
                photo's ISO (darktable's profiles), so one network serves every ISO; a profile
                that claims more noise than the photo's flat areas show is scaled down to them
                (and nnraw says so), so a wrong profile does not smear detail
"""


def _output_kind(value: str) -> str:
    """``--output`` values: the kind of DNG (a path there gets a hint towards ``-o``)."""
    if value in OUTPUT_KINDS:
        return value
    hint = "; name the output file with -o OUT.dng" if value.lower().endswith(".dng") or "/" in value else ""
    raise argparse.ArgumentTypeError(f"the kind of DNG must be {' or '.join(OUTPUT_KINDS)}, got {value!r}{hint}")


def _noise_profile(value: str):
    """``--profile`` values: a noise profile file, loaded (so that a bad one is a usage error)."""
    from nnraw.noise.model import NoiseProfile

    try:
        return NoiseProfile.load(value)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise argparse.ArgumentTypeError(f"{value}: {exc.strerror if isinstance(exc, OSError) else exc}") from None


def _dng_path(value: str) -> str:
    """``-o`` values: a path that ends in .dng."""
    if not value.lower().endswith(".dng"):
        raise argparse.ArgumentTypeError(f"the output file must end in .dng, got {value!r}")
    return value


class _Once(argparse.Action):
    """An option that may be repeated only with the same value (``--output cfa --output linear`` is
    a usage error rather than the last one silently winning)."""

    def __call__(self, parser, namespace, values, option_string=None):
        given = getattr(namespace, self.dest, None)
        if given is not None and given != values:
            what = "kind, linear or cfa" if self.dest == "kind" else "output file"
            parser.error(f"{option_string}: give one {what}, got {given!r} and {values!r}")
        setattr(namespace, self.dest, values)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the `nnraw convert` options on ``parser``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = ("Convert camera raw files into demosaiced, denoised linear DNGs (your original is "
                          "only read; an output appears only once it is complete).")
    parser.epilog = EXAMPLES
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="raw file(s) or folder(s) of raw files")
    parser.add_argument("-o", dest="output_path", metavar="OUT.dng", type=_dng_path, action=_Once,
                        help="the DNG to write (one input only; default: <name>-nnraw.dng beside the raw)")
    parser.add_argument("--output", dest="kind", metavar="linear|cfa", type=_output_kind, action=_Once,
                        help="the kind of DNG: linear (default: demosaiced and denoised) or cfa (denoised, "
                             "in the raw's own Bayer or X-Trans layout, for your editor's own demosaic)")
    parser.add_argument("--out-dir", metavar="DIR", help="folder for the outputs (default: beside each input)")
    parser.add_argument("-r", "--recursive", action="store_true", help="also look in sub-folders of folder inputs")
    parser.add_argument("--iso", type=float, metavar="N", help="ISO for the noise level (default: from the raw)")
    parser.add_argument("--profile", metavar="FILE", type=_noise_profile,
                        help="a noise profile (JSON from `nnraw profile`) to use instead of the camera's at its "
                             "ISO: for cameras darktable does not know, or raws without an ISO")
    parser.add_argument("--model", default="default", metavar="NAME|none",
                        help='the network (`nnraw info` lists them); "none" writes the pre-demosaic alone '
                             "(default: default)")
    parser.add_argument("--strength", type=float, default=1.0, metavar="S",
                        help="how hard to denoise, 0 to 2 (default 1): the noise level the network is told is "
                             "scaled by S; 0 writes the plain pre-demosaic, 2 denoises as for twice the "
                             "measured noise")
    parser.add_argument("--passes", type=int, metavar="N",
                        help="the network runs on N orientations of the photo (1, 2, 4 or 8) and averages them: "
                             "each pass costs one more network run and gains a little quality (default: 2 for "
                             "default and xtrans on a CPU with AVX512_BF16 or a GPU, else 1)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to compute (default: auto)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--preview", metavar="OUT.png", help="also write an sRGB PNG of the result (one input only)")
    parser.add_argument("--compare", metavar="OUT.xcf",
                        help="also write a 2-layer GIMP XCF: plain pre-demosaic and nnraw result (one input only)")
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")
    parser.add_argument("--json", action="store_true", help="print one JSON object with the results to stdout")


def _usage_error(args: argparse.Namespace, message: str) -> int:
    print(f"nnraw convert: error: {message}", file=sys.stderr)
    if args.json:
        print(json.dumps({"results": [], "succeeded": 0, "failed": 0, "error": message}))
    return 2


def _check_options(args: argparse.Namespace) -> None:
    """Option values that parse but cannot work: ValueError/RuntimeError in plain words, before any
    file is read (a usage error, exit 2)."""
    if args.iso is not None and not (args.iso > 0 and args.iso < float("inf")):
        raise ValueError(f"--iso must be a positive number, got {args.iso:g}")
    _resolve_device(args.device)
    _check_strength(args.strength)
    _check_passes(args.passes)
    if args.model != "none" and args.strength != 0:
        _import_infer(args.model)
        from nnraw.models import available_models

        names = available_models()
        if args.model != "reference" and args.model not in names:
            raise ValueError(f"--model {args.model}: no such network; shipped: {', '.join(names)} "
                             "(see `nnraw info`), or none")


class _Report:
    """What a run prints as it goes: each written file on stdout and, in a batch, each failure on
    stderr, one clean line each; a progress bar on stderr only when it is a terminal (no carriage
    returns in a log or a pipe). The failures are listed again at the end (:func:`run`)."""

    def __init__(self, total: int, show: bool):
        self.show = show
        self.batch = total > 1
        self.bar = None
        if show and total > 1 and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="file", file=sys.stderr, desc="nnraw convert", leave=False)

    def __call__(self, result: ConvertResult) -> None:
        for note in result.notes if self.show else ():
            if self.bar is not None:
                self.bar.write(note, file=sys.stderr)
            else:
                print(note, file=sys.stderr, flush=True)
        if result.ok and self.show:
            line, stream = f"{result.input} -> {result.output} ({result.seconds:.1f} s)", sys.stdout
        elif not result.ok and self.show and self.batch:
            line, stream = f"failed: {result.error}", sys.stderr
        else:
            line = stream = None
        if line is not None:
            if self.bar is not None:
                self.bar.write(line, file=stream)
            else:
                print(line, file=stream, flush=True)
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run(args: argparse.Namespace) -> int:
    """Carry out `nnraw convert`; returns the exit code (0 all converted, 1 some failed, 2 usage)."""
    kind = args.kind or "linear"
    if args.output_path and args.out_dir:
        return _usage_error(args, "-o OUT.dng and --out-dir exclude each other")
    inputs = collect_inputs(args.inputs, getattr(args, "recursive", False))
    if not inputs:
        return _usage_error(args, f"no raw files found in {', '.join(args.inputs)}")
    single_only = [flag for flag, value in (("-o", args.output_path), ("--preview", args.preview),
                                            ("--compare", args.compare)) if value]
    if single_only and len(inputs) != 1:
        verb = "needs" if len(single_only) == 1 else "need"
        return _usage_error(args, f"{', '.join(single_only)} {verb} exactly one input, got {len(inputs)}")
    try:
        _check_options(args)
    except (RuntimeError, ValueError) as exc:
        return _usage_error(args, str(exc))
    out_dir = Path(args.out_dir) if args.out_dir else None
    made: list[Path] = []   # the folders this run creates, deepest first (taken back if left empty)
    if out_dir is not None and not out_dir.is_dir():
        made = [d for d in (out_dir, *out_dir.parents) if not d.exists()]
        try:
            out_dir.mkdir(parents=True)
        except OSError as exc:
            return _usage_error(args, f"--out-dir {out_dir}: {exc.strerror}")

    report = _Report(len(inputs), show=not (args.quiet or args.json))
    results: list[ConvertResult] = []
    planned: dict[Path, Path] = {}
    try:
        for path in inputs:
            output = Path(args.output_path) if args.output_path else default_output(path, out_dir)
            key = output.resolve()
            if key in planned:
                result = ConvertResult(input=str(path), output=str(output), ok=False,
                                       error=f"{path}: output {output} would also be written from {planned[key]}")
            else:
                planned[key] = path
                result = convert_file(path, output, model=args.model, strength=args.strength, kind=kind,
                                      iso=args.iso, device=args.device, overwrite=args.overwrite,
                                      preview=args.preview, compare=args.compare, profile=args.profile,
                                      passes=args.passes)
            results.append(result)
            report(result)
    finally:
        report.close()
        for folder in made:   # nothing was written into the folders this run made: take them back
            if any(folder.iterdir()):
                break
            folder.rmdir()

    failed = [r for r in results if not r.ok]
    if args.json:
        print(json.dumps({"results": [r.as_json() for r in results],
                          "succeeded": len(results) - len(failed), "failed": len(failed)}, ensure_ascii=False))
    if failed:
        print(f"nnraw convert: {len(failed)} of {len(results)} file(s) failed:", file=sys.stderr)
        for r in failed:   # last, so that the adapters' "last line of stderr" names the problem
            print(f"  {r.error}", file=sys.stderr)
        return 1
    if report.show and len(results) > 1:
        print(f"converted {len(results)} files", file=sys.stderr)
    return 0
