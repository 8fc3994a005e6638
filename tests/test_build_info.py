"""A compiled op library built for another torch is reported in plain words, before it is loaded."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import nnraw
from nnraw._build import recorded_build, torch_mismatch

PACKAGE = Path(nnraw.__file__).resolve().parent


def test_torch_mismatch_names_both_versions_and_the_cure():
    build = {"torch": "2.12.0+cpu", "torch_cuda": None, "cuda_kernels": False}
    message = torch_mismatch(build, "2.13.0+cpu", None)
    assert message.startswith("this nnraw was built for torch 2.12.0+cpu, you have torch 2.13.0+cpu")
    assert "pip install torch==2.12.0" in message and "make wheel" in message
    assert torch_mismatch(build, "2.12.0", "13.0") is None, "the variant alone (CPU or CUDA wheel) does not matter"
    assert torch_mismatch(None, "2.13.0", None) is None, "nothing recorded (a build older than the record): try"
    cuda_build = {"torch": "2.11.0+cu130", "torch_cuda": "13.0", "cuda_kernels": True}
    assert "built with CUDA kernels for torch 2.11.0+cu130, you have torch 2.11.0+cpu without CUDA" in \
        torch_mismatch(cuda_build, "2.11.0+cpu", None)
    assert torch_mismatch(cuda_build, "2.11.0+cu130", "13.0") is None


def test_this_build_records_the_torch_it_runs_with():
    build = recorded_build()
    if build is None:
        pytest.skip(f"no compiled build recorded in {PACKAGE} (a source tree without `make dev`)")
    assert build["torch"] == torch.__version__
    assert torch_mismatch(build, torch.__version__, torch.version.cuda) is None


def test_nnraw_info_reports_a_library_built_for_another_torch(tmp_path):
    """The installed package, copied, with its record saying it was built for another torch."""
    if recorded_build() is None:
        pytest.skip(f"no compiled build recorded in {PACKAGE}")
    copy = tmp_path / "site" / "nnraw"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "weights"))
    other = "2.12.0" if not torch.__version__.startswith("2.12.") else "2.11.0"
    record = json.loads((copy / "_build_info.json").read_text())
    (copy / "_build_info.json").write_text(json.dumps({**record, "torch": other}))
    env = {**os.environ, "PYTHONPATH": str(copy.parent)}
    proc = subprocess.run([sys.executable, "-m", "nnraw", "info"], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)
    print(proc.stdout, proc.stderr)
    assert proc.returncode == 1, "a broken installation fails `nnraw info`"
    assert f"this nnraw was built for torch {other}, you have torch {torch.__version__}; reinstall" in proc.stdout
    assert f"pip install torch=={other}" in proc.stdout
    assert "Traceback" not in proc.stderr
    assert str(copy) in subprocess.run(
        [sys.executable, "-c", "import nnraw; print(nnraw.__file__)"], capture_output=True, text=True, env=env,
        cwd=tmp_path).stdout, "the copy, not the installed package, was tested"
