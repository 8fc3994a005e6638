"""Shared fixtures: devices/dtypes (the same tests run on CUDA where a GPU exists) and data paths."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
RAW_DIR = SHARED_DATA / "raw"
TRAIN_DIR = SHARED_DATA / "train"

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param


def shared_file(name: str) -> Path:
    """A file from ../shared/data/raw, or skip the test with a message saying what is missing."""
    path = RAW_DIR / name
    if not path.exists():
        pytest.skip(f"real raw {name} not found in {RAW_DIR} (../shared/data is not beside this checkout)")
    return path


@pytest.fixture
def canon_dng() -> Path:
    return shared_file("tinydng_colorchart_Canon550D_MagicLantern.dng")
