"""What the compiled op library (nnraw._C) was built against, and whether the running torch matches.

A torch C++ extension loads only into the torch it was compiled with. CMakeLists.txt records that
torch in ``nnraw/_build_info.json`` beside the library; the loader (nnraw.ops._library) reads it
BEFORE importing the library, so a mismatch is reported in plain words instead of an ImportError
with undefined symbols (or an abort). This module imports no torch: `nnraw info` uses it to explain
a missing torch too.
"""

from __future__ import annotations

import json
from pathlib import Path

BUILD_INFO = Path(__file__).resolve().parent / "_build_info.json"


def recorded_build(path: Path = BUILD_INFO) -> dict | None:
    """The recorded build (``{"torch": "2.13.0+cpu", "torch_cuda": None, "cuda_kernels": False}``), or None."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _public(version: str) -> str:
    return version.split("+")[0]


def reinstall_hint(built_for: str) -> str:
    return (f"reinstall: either `pip install torch=={_public(built_for)}` into this environment, or "
            f"reinstall nnraw from a wheel built for your torch (`make wheel` in nnraw's sources, "
            f"then `pipx install --force dist/nnraw-*.whl`; or `make install` in a source checkout)")


def torch_mismatch(build: dict | None, torch_version: str, torch_cuda: str | None) -> str | None:
    """A sentence saying why the library cannot load into this torch, or None when it can (or nothing is recorded)."""
    if not build or not build.get("torch"):
        return None
    built = build["torch"]
    if _public(built) != _public(torch_version):
        return f"this nnraw was built for torch {built}, you have torch {torch_version}; {reinstall_hint(built)}"
    if build.get("cuda_kernels") and not torch_cuda:
        return (f"this nnraw was built with CUDA kernels for torch {built}, you have torch {torch_version} "
                f"without CUDA; {reinstall_hint(built)}")
    return None
