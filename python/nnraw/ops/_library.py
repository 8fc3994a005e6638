"""Loads the compiled op library (nnraw._C) once and reports what it holds.

Importing the extension registers every kernel under ``torch.ops.nnraw``. When the compiled
library is absent (a source checkout that was never built), the public functions in
:mod:`nnraw.ops` fall back to their pure-PyTorch references and warn once.
"""

from __future__ import annotations

import warnings

import torch

from nnraw._build import recorded_build, torch_mismatch

# Checked before the import: a library built for another torch fails to load with undefined symbols
# at best; say which torch it needs instead.
BUILD = recorded_build()
TORCH_MISMATCH = torch_mismatch(BUILD, torch.__version__, torch.version.cuda)
_C = None
HAVE_COMPILED = False
BUILT_WITH_CUDA = False
_IMPORT_ERROR: str | None = TORCH_MISMATCH
if TORCH_MISMATCH is None:
    try:
        from nnraw import _C  # noqa: F401  (registers torch.ops.nnraw.*)

        HAVE_COMPILED = True
        BUILT_WITH_CUDA = bool(_C.built_with_cuda())  # a constant: torch.compile can't trace pybind11 calls
    except ImportError as exc:  # pragma: no cover - exercised only without a build
        _IMPORT_ERROR = str(exc)

_warned = False

OPS = ("prelu", "prelu_backward", "center_ms_ssim_l1", "center_ms_ssim_l1_backward",
       "ms_ssim", "ms_ssim_backward", "edge_aware_demosaic")


def warn_fallback(op: str) -> None:
    """Warn (once per process) that ``op`` runs on its pure-PyTorch reference."""
    global _warned
    if not _warned:
        warnings.warn(
            f"nnraw: the compiled op library is not available ({_IMPORT_ERROR}); "
            f"nnraw.ops.{op} and the other ops run on their slower pure-PyTorch references. "
            "Build it with `make install` (or `pip install --no-build-isolation .`).",
            RuntimeWarning,
            stacklevel=3,
        )
        _warned = True


def use_compiled(*tensors: torch.Tensor) -> bool:
    """True when the compiled kernels can handle these tensors (library present, device supported)."""
    if not HAVE_COMPILED:
        return False
    for t in tensors:
        if t.device.type == "cuda" and not BUILT_WITH_CUDA:
            return False
        if t.device.type not in ("cpu", "cuda", "meta"):
            return False
    return True


def _has_kernel(op: str, key: str) -> bool:
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key(f"nnraw::{op}", key)
    except RuntimeError:
        return False


def build_info() -> dict:
    """What this installation of nnraw can run: versions, devices and compiled kernels."""
    import nnraw

    info = {
        "nnraw": nnraw.__version__,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "compiled_library": HAVE_COMPILED,
        "built_for_torch": BUILD.get("torch") if BUILD else None,
        "torch_mismatch": TORCH_MISMATCH,
        "library_path": getattr(_C, "__file__", None),
        "built_with_cuda": BUILT_WITH_CUDA,
        "cuda_available": torch.cuda.is_available(),
        "cpu_threads": torch.get_num_threads(),
        "kernels": {},
    }
    if not HAVE_COMPILED:
        info["import_error"] = _IMPORT_ERROR
    for op in OPS:
        info["kernels"][op] = [k for k in ("CPU", "CUDA") if HAVE_COMPILED and _has_kernel(op, k)]
    return info


def format_build_info(info: dict | None = None) -> str:
    info = info or build_info()
    lines = [
        f"nnraw {info['nnraw']}  (torch {info['torch']}, torch CUDA {info['torch_cuda'] or 'none'};"
        f" built for torch {info.get('built_for_torch') or 'unknown'})",
        f"compiled library: {info['library_path'] if info['compiled_library'] else 'MISSING - ' + str(info.get('import_error'))}",
        f"CUDA kernels compiled: {'yes' if info['built_with_cuda'] else 'no'};  CUDA device available: "
        f"{'yes' if info['cuda_available'] else 'no'};  CPU threads: {info['cpu_threads']}",
        "kernels:",
    ]
    for op, keys in info["kernels"].items():
        lines.append(f"  {op:28s} {', '.join(keys) if keys else '(reference fallback)'}")
    if info.get("torch_mismatch"):
        lines.append(f"PROBLEM: {info['torch_mismatch']}")
        lines.append("(until then nnraw runs, slower, on the pure-PyTorch references of its ops)")
    return "\n".join(lines)
