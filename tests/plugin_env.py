"""What the adapter tests share: the `nnraw` command of the tests' own environment, Lua string literals.

The darktable and GIMP adapters run `nnraw` as an external program. The tests give them the nnraw of
the environment running pytest (an installed package, or `PYTHONPATH=python` during development):
a small shell script that runs ``sys.executable -m nnraw`` with the PYTHONPATH that finds this very
package, so it also works inside the Debian 13 chroot when the same paths are bind-mounted there.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import nnraw

REPO = Path(__file__).resolve().parents[1]
PACKAGE_PARENT = Path(nnraw.__file__).resolve().parents[1]   # the folder that holds the nnraw package


def write_nnraw_command(folder: Path) -> Path:
    """Write ``folder/nnraw``: runs this environment's nnraw with any arguments; returns its path."""
    script = folder / "nnraw"
    script.write_text(
        "#!/bin/sh\n"
        f"PYTHONPATH={shlex.quote(str(PACKAGE_PARENT))}${{PYTHONPATH:+:$PYTHONPATH}}; export PYTHONPATH\n"
        f"exec {shlex.quote(sys.executable)} -m nnraw \"$@\"\n"
    )
    script.chmod(0o755)
    return script


def require_subcommand(nnraw_command: Path, name: str) -> None:
    """Fail the test (never skip) when the adapters' command ``nnraw NAME --help`` does not run: it ships
    with this checkout, so a broken command line is a regression (tests/test_adapter_commands.py too)."""
    proc = subprocess.run([str(nnraw_command), name, "--help"], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        pytest.fail(f"`nnraw {name} --help` exited {proc.returncode}: {proc.stderr.strip().splitlines()[-3:]}")


def python_binds() -> list[Path]:
    """Paths to bind-mount into a chroot so that ``sys.executable -m nnraw`` runs there unchanged."""
    from chroot import python_bind_paths

    return sorted({*python_bind_paths(sys.executable), PACKAGE_PARENT, REPO})


def lua_string(text: str) -> str:
    """A Lua string literal for ``text``: every byte outside [A-Za-z0-9 ./_-] as a 3-digit decimal escape."""
    out = []
    for byte in text.encode("utf-8"):
        ch = chr(byte)
        out.append(ch if (ch.isascii() and (ch.isalnum() or ch in " ./_-")) else f"\\{byte:03d}")
    return '"' + "".join(out) + '"'


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment with a UTF-8 locale (file names with non-ASCII characters)."""
    env = dict(os.environ)
    env.update(LANG="C.UTF-8", LC_ALL="C.UTF-8", **extra)
    return env
