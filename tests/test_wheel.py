"""The wheel a photographer installs (README, "For photographers"): `make wheel`, then a fresh virtual
environment outside the source tree installs it with nothing built on the way (pip --only-binary :all:),
and the installed `nnraw` lists its compiled kernels and converts the bundled sample raw."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "canon550d_colorchart_crop.dng"

pytestmark = pytest.mark.slow


def _run(argv: list, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, **kw)
    assert proc.returncode == 0, f"{' '.join(map(str, argv))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


def _env_outside_repo() -> dict[str, str]:
    """The environment without anything pointing into this checkout or its .venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = os.pathsep.join(d for d in env.get("PATH", "").split(os.pathsep)
                                  if d and not d.startswith((str(REPO), sys.prefix)))
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def test_wheel_installs_from_binaries_alone_and_converts(tmp_path):
    dist = tmp_path / "dist"
    _run(["make", "-C", REPO, "wheel", f"DIST={dist}", f"VENV={sys.prefix}"], timeout=1800)
    wheels = list(dist.glob("nnraw-*.whl"))
    assert len(wheels) == 1, wheels
    wheel = wheels[0]

    # what is inside: the compiled ops and their build record, the weights, the adapters; torch pinned
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        metadata = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        build = json.loads(zf.read("nnraw/_build_info.json"))
    assert any(re.fullmatch(r"nnraw/_C\..*\.so", n) for n in names), sorted(names)
    for required in ("nnraw/weights/default.safetensors", "nnraw/weights/default.json",
                     "nnraw/weights/fast.safetensors", "nnraw/weights/fast.json",
                     "nnraw/plugins/darktable/nnraw.lua", "nnraw/plugins/gimp/nnraw/nnraw.py", "nnraw/cli.py"):
        assert required in names, required
    torch_reqs = re.findall(r"^Requires-Dist: (torch\b.*)$", metadata, flags=re.M)
    assert torch_reqs == [f"torch=={torch.__version__.split('+')[0]}"], torch_reqs
    assert build["torch"] == torch.__version__

    # a fresh environment, outside the source tree, binaries only
    env = _env_outside_repo()
    venv = tmp_path / "photographer"
    _run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", venv], cwd=tmp_path, env=env, timeout=300)
    _run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--only-binary", ":all:", wheel],
         cwd=tmp_path, env=env, timeout=1800)
    nnraw = venv / "bin" / "nnraw"
    assert nnraw.is_file(), "the wheel installs the `nnraw` program"

    info = _run([nnraw, "info", "--json"], cwd=tmp_path, env=env, timeout=300)
    report = json.loads(info.stdout)
    assert report["compiled_library"] and Path(report["library_path"]).is_relative_to(venv), report
    assert report["torch_mismatch"] is None and report["built_for_torch"] == torch.__version__
    assert all("CPU" in keys for keys in report["kernels"].values()), report["kernels"]
    print(_run([nnraw, "info"], cwd=tmp_path, env=env, timeout=300).stdout)

    raw = tmp_path / "sample.dng"
    shutil.copyfile(SAMPLE, raw)
    out = tmp_path / "sample-nnraw.dng"
    _run([nnraw, "convert", raw, "-o", out], cwd=tmp_path, env=env, timeout=900)
    assert out.stat().st_size > 0
