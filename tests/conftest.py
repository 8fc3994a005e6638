"""Shared fixtures: devices/dtypes (the same tests run on CUDA where a GPU exists) and data paths."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# torch.compile's C++ cache in a fresh folder per test run: a shared /tmp/torchinductor_<user> kept
# kernels and headers of other checkouts' virtual environments, and once failed the inductor tests
# ("'at::vec' has not been declared") in a fresh clone on a machine that had run them elsewhere.
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="nnraw-tests-inductor-"))

import pytest  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
RAW_DIR = SHARED_DATA / "raw"
TRAIN_DIR = SHARED_DATA / "train"

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param


SHARED = REPO.parent / "shared"


def need_shared(path: Path, what: str = "") -> Path:
    """``path`` (under ../shared), checked: skip when ../shared is not beside this checkout at all (the one
    data reason tests/skip_policy.py allows), FAIL when ../shared is there but lacks the file."""
    from skip_policy import NO_SHARED

    if not SHARED.is_dir():
        pytest.skip(f"{NO_SHARED}: {SHARED} is not beside this checkout (needed: {what or path})")
    if not path.exists():
        pytest.fail(f"{SHARED} is there but lacks {what or path} ({path})")
    return path


def shared_file(name: str) -> Path:
    """A file from ../shared/data/raw (see need_shared: a skip only when ../shared is absent)."""
    return need_shared(RAW_DIR / name, f"real raw {name}")


@pytest.fixture
def canon_dng() -> Path:
    return shared_file("tinydng_colorchart_Canon550D_MagicLantern.dng")
