"""scikit-build-core metadata provider: nnraw's dependencies, with torch pinned to the torch it is built against.

A torch C++ extension only loads into the torch whose headers and libraries it was compiled with, so the
wheel must require exactly that version: ``torch==<torch.__version__ without its local part>`` (a
``+cpu``/``+cu130`` suffix names the variant, which a requirement cannot select). The build imports the
torch of the building Python (``pip install --no-build-isolation``; the Makefile does), the same one
CMakeLists.txt compiles against. The other dependencies are listed in pyproject.toml, in this provider's
``base`` setting.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any


def torch_requirement() -> str:
    try:
        import torch
    except ImportError as exc:  # an isolated build: no torch there, and it must not download one
        raise RuntimeError(
            "nnraw: cannot import torch while building; install torch first and build with "
            "`pip install --no-build-isolation` (or `make install` / `make wheel`)") from exc
    return f"torch=={torch.__version__.split('+')[0]}"


def dynamic_metadata(field: str, settings: Mapping[str, Any]) -> list[str]:
    if field != "dependencies":
        raise RuntimeError(f"nnraw_torch_pin provides only 'dependencies', not {field!r}")
    base = list(settings.get("base", []))
    if any(re.match(r"\s*torch\s*([<>=!~;\[]|$)", req, flags=re.I) for req in base):
        raise RuntimeError("nnraw_torch_pin: list torch nowhere in 'base'; the provider adds the pinned torch")
    return [torch_requirement(), *base]
