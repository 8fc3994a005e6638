"""`nnraw install-plugin`: files land where darktable and GIMP look, XDG_CONFIG_HOME is honoured,
--uninstall removes them; plus the adapters' own safety properties that need no darktable/GIMP."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from nnraw.cli import main
from nnraw.install_plugin import default_config_dir, install, plugins_dir, uninstall

REPO = Path(__file__).resolve().parents[1]


def test_plugins_dir_finds_the_adapters_of_this_checkout():
    # From a source tree (PYTHONPATH=python) it is <repo>/plugins; from an installed wheel, the copy
    # CMake installed into nnraw/plugins: either way the same files as this checkout's.
    found = plugins_dir()
    for rel in ("darktable/nnraw.lua", "gimp/nnraw/nnraw.py"):
        assert (found / rel).read_bytes() == (REPO / "plugins" / rel).read_bytes(), rel


def test_default_folders_follow_xdg_config_home(monkeypatch, tmp_path):
    if sys.platform in ("win32", "darwin"):
        pytest.skip("XDG_CONFIG_HOME applies to Linux and BSD")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert default_config_dir("darktable") == tmp_path / "cfg" / "darktable"
    assert default_config_dir("gimp") == tmp_path / "cfg" / "GIMP" / "3.0"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_config_dir("darktable") == tmp_path / "home" / ".config" / "darktable"
    with pytest.raises(ValueError, match="unknown program 'lightroom'"):
        default_config_dir("lightroom")


def test_darktable_install_and_uninstall_via_cli(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert main(["install-plugin", "darktable"]) == 0
    target = tmp_path / "darktable" / "lua" / "contrib" / "nnraw.lua"
    assert target.read_bytes() == (REPO / "plugins" / "darktable" / "nnraw.lua").read_bytes()
    out = capsys.readouterr().out
    assert f"installed {target}" in out and 'require "contrib/nnraw"' in out and str(tmp_path / "darktable" / "luarc") in out

    assert main(["install-plugin", "darktable", "--uninstall"]) == 0
    assert not target.exists()
    assert f"removed {target}" in capsys.readouterr().out
    assert main(["install-plugin", "darktable", "--uninstall"]) == 0
    assert "no darktable adapter installed" in capsys.readouterr().out


def test_gimp_install_is_executable_and_names_this_nnraw(tmp_path):
    written = install("gimp", tmp_path / "GIMP")
    plugin = tmp_path / "GIMP" / "plug-ins" / "nnraw" / "nnraw.py"
    command_file = plugin.with_name("nnraw-command.json")
    assert written == [plugin, command_file]
    assert plugin.stat().st_mode & stat.S_IXUSR, "GIMP runs only executable plug-ins"
    assert plugin.read_text().startswith("#!/usr/bin/env python3")
    spec = json.loads(command_file.read_text())
    assert spec["command"] == [sys.executable, "-m", "nnraw"]
    # the recorded command really runs this nnraw, with a clean environment but for what it records
    env = {"PATH": os.environ.get("PATH", ""), **spec["env"]}
    proc = subprocess.run(spec["command"] + ["install-plugin", "--help"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "darktable" in proc.stdout, proc.stderr

    install("gimp", tmp_path / "GIMP")   # reinstalling replaces in place
    removed = uninstall("gimp", tmp_path / "GIMP")
    assert sorted(removed) == sorted(written)
    assert not (tmp_path / "GIMP" / "plug-ins" / "nnraw").exists(), "the plug-in folder is removed when empty"


def test_install_plugin_rejects_unknown_program(capsys):
    with pytest.raises(SystemExit):
        main(["install-plugin", "lightroom"])
    assert "invalid choice: 'lightroom'" in capsys.readouterr().err


def test_install_reports_unwritable_destination(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["install-plugin", "darktable", "--dest", str(blocker)]) == 1
    assert "nnraw install-plugin darktable:" in capsys.readouterr().err


def test_adapters_do_not_import_torch_or_nnraw():
    """The adapters are thin: they run the command line and never import the core."""
    gimp = (REPO / "plugins" / "gimp" / "nnraw" / "nnraw.py").read_text()
    imports = re.findall(r"^\s*(?:import|from)\s+([\w.]+)", gimp, flags=re.M)
    assert {"gi", "subprocess", "struct"} <= set(imports)
    assert not {"torch", "numpy", "nnraw", "tifffile"} & {name.split(".")[0] for name in imports}, imports
    lua = (REPO / "plugins" / "darktable" / "nnraw.lua").read_text()
    assert "dt.control.execute" in lua and "io.popen" not in lua
