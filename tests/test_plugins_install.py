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
from nnraw.install_plugin import (LUARC_BACKUP, LUARC_LINE, LUARC_MARKED, default_config_dir, install, plugins_dir,
                                  uninstall)

REPO = Path(__file__).resolve().parents[1]


def test_plugins_dir_finds_the_adapters_of_this_checkout():
    # From a source tree (PYTHONPATH=python) it is <repo>/plugins; from an installed wheel, the copy
    # CMake installed into nnraw/plugins: either way the same files as this checkout's.
    found = plugins_dir()
    for rel in ("darktable/nnraw.lua", "gimp/nnraw/nnraw.py"):
        assert (found / rel).read_bytes() == (REPO / "plugins" / rel).read_bytes(), rel


def test_default_folders_follow_xdg_config_home(monkeypatch, tmp_path):
    if sys.platform in ("win32", "darwin"):
        pytest.skip("not Linux: XDG_CONFIG_HOME applies to Linux and BSD")
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
    config = tmp_path / "darktable"
    assert main(["install-plugin", "darktable"]) == 0
    target = config / "lua" / "contrib" / "nnraw.lua"
    assert target.read_bytes() == (REPO / "plugins" / "darktable" / "nnraw.lua").read_bytes()
    # the nnraw that ran the installer (this environment's console script) is what the script will run
    recorded = target.with_name("nnraw-program.txt").read_text().strip()
    assert recorded == str(Path(sys.executable).with_name("nnraw").absolute()) and os.access(recorded, os.X_OK)
    # no luarc before: created, holding just the marked line
    assert (config / "luarc").read_text() == LUARC_MARKED + "\n" and LUARC_MARKED.startswith('require "contrib/nnraw"')
    assert not (config / LUARC_BACKUP).exists()
    out = capsys.readouterr().out
    assert f"installed {target}" in out and f"added  {LUARC_LINE}  to {config / 'luarc'} (created it)" in out
    assert f"runs {recorded}" in out, out

    assert main(["install-plugin", "darktable", "--uninstall"]) == 0
    assert not config.exists() or not any(config.iterdir()), "everything the installer created is gone"
    out = capsys.readouterr().out
    assert f"removed {target}" in out and "took the line" in out and "removed the file" in out
    assert main(["install-plugin", "darktable", "--uninstall"]) == 0
    assert "no darktable adapter installed" in capsys.readouterr().out


LUARC_ORIGINAL = b'-- my darktable settings\r\nrequire "contrib/gimp"\n-- require "contrib/nnraw"\nrequire "official/selection_to_pdf"'


def test_darktable_luarc_edit_is_idempotent_and_undone_byte_for_byte(tmp_path):
    config = tmp_path / "dt"
    config.mkdir()
    luarc = config / "luarc"
    luarc.write_bytes(LUARC_ORIGINAL)     # no final newline, a CRLF line, a commented-out require
    luarc.chmod(0o600)
    install("darktable", config)
    first = luarc.read_bytes()
    assert first == LUARC_ORIGINAL + b"\n" + LUARC_MARKED.encode() + b"\n", "appended on its own line, rest kept"
    assert (config / LUARC_BACKUP).read_bytes() == LUARC_ORIGINAL
    install("darktable", config)          # again: nothing more added, the first backup kept
    assert luarc.read_bytes() == first
    assert (config / LUARC_BACKUP).read_bytes() == LUARC_ORIGINAL
    uninstall("darktable", config)
    assert luarc.read_bytes() == LUARC_ORIGINAL
    assert stat.S_IMODE(luarc.stat().st_mode) == 0o600
    assert sorted(p.name for p in config.iterdir()) == ["luarc"], "backup, script and its folders removed"


def test_darktable_luarc_edited_after_install_loses_only_the_added_line(tmp_path):
    config = tmp_path / "dt"
    config.mkdir()
    (config / "luarc").write_text('require "contrib/gimp"\n')
    install("darktable", config)
    with open(config / "luarc", "a") as f:
        f.write('require "contrib/hugin"\n')
    uninstall("darktable", config)
    assert (config / "luarc").read_text() == 'require "contrib/gimp"\nrequire "contrib/hugin"\n'


def test_darktable_luarc_already_requiring_the_script_is_left_alone(tmp_path, capsys):
    config = tmp_path / "dt"
    config.mkdir()
    (config / "luarc").write_bytes(b"require('contrib/nnraw')\n")
    assert main(["install-plugin", "darktable", "--dest", str(config)]) == 0
    assert (config / "luarc").read_bytes() == b"require('contrib/nnraw')\n"
    assert not (config / LUARC_BACKUP).exists()
    assert "already loads the script" in capsys.readouterr().out
    assert main(["install-plugin", "darktable", "--dest", str(config), "--uninstall"]) == 0
    assert (config / "luarc").read_bytes() == b"require('contrib/nnraw')\n", "a line nnraw did not add stays"
    assert "did not add: remove it yourself" in capsys.readouterr().out


def test_darktable_with_script_manager_is_enabled_there_not_in_luarc(tmp_path, capsys):
    config = tmp_path / "dt"
    (config / "lua" / "tools").mkdir(parents=True)
    (config / "lua" / "tools" / "script_manager.lua").write_text("-- lua-scripts' script manager\n")
    (config / "luarc").write_text('require "tools/script_manager"\n')
    assert main(["install-plugin", "darktable", "--dest", str(config)]) == 0
    assert (config / "luarc").read_text() == 'require "tools/script_manager"\n'
    out = capsys.readouterr().out
    assert "script manager" in out and 'start "nnraw"' in out and "contrib" in out
    assert (config / "lua" / "contrib" / "nnraw.lua").is_file()
    uninstall("darktable", config)
    assert not (config / "lua" / "contrib").exists()
    assert (config / "lua" / "tools" / "script_manager.lua").is_file()


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
