"""The darktable adapter (plugins/darktable/nnraw.lua) in real darktable: 4.2 on the host, 5.0 in a
Debian 13 chroot (tests/chroot.py), headless (`darktable-cli --core --luacmd`).

A Lua driver loads nnraw.lua, imports raws (one named with a space, a quote and a non-ASCII letter),
calls the script's `convert_images` (what the lighttable button runs, minus the GUI job) with the
nnraw of this environment, and writes what darktable's library then holds: for each source image its
group leader and group members. Failures (a non-raw input, a missing nnraw program) must come back
with nnraw's or the shell's message, never be dropped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nnraw.install_plugin import LUARC_MARKED
from dng_fixtures import write_bayer_dng
from test_dng import exiftool_tags

from plugin_env import REPO, clean_env, lua_string, python_binds, require_subcommand, write_nnraw_command

SCRIPT = REPO / "plugins" / "darktable" / "nnraw.lua"
RAW_NAME = "tinydng_colorchart_Canon550D_MagicLantern.dng"
ODD_NAME = "it's a test ü.dng"

pytestmark = pytest.mark.slow

DRIVER = """
local dt = require "darktable"
local report = assert(io.open({report}, "w"))
local nnraw
local function run(tag, paths)
  local images = {{}}
  for _, p in ipairs(paths) do images[#images + 1] = assert(dt.database.import(p), "import " .. p) end
  for _, r in ipairs(nnraw.convert_images(images)) do
    local members = {{}}
    for _, m in ipairs(r.source:get_group_members()) do members[#members + 1] = m.filename end
    table.sort(members)
    report:write(table.concat({{tag, tostring(r.ok), r.source.filename, r.output or "",
      r.image and r.image.filename or "", r.source.group_leader.filename, table.concat(members, "|"),
      ((tostring(r.error or "")):gsub("[\\t\\n]", " ")),
      ((table.concat(r.notes or {{}}, " | ")):gsub("[\\t\\n]", " "))}}, "\\t"), "\\n")
  end
end
local ok, err = pcall(function()
  nnraw = dofile({script})
  dt.preferences.write("nnraw", "executable", "string", {nnraw})
  run("raws", {{{raws}}})
  run("not-a-raw", {{{not_raw}}})
  dt.preferences.write("nnraw", "executable", "string", {missing})
  run("no-program", {{{again}}})
  dt.preferences.write("nnraw", "executable", "string", {nnraw})
  dt.preferences.write("nnraw", "raw_leads_group", "bool", true)
  run("raw-leads", {{{again}}})
  dt.preferences.write("nnraw", "raw_leads_group", "bool", false)
  dt.preferences.write("nnraw", "strength", "string", "0.5")
  dt.preferences.write("nnraw", "output_kind", "string", "cfa")
  report:write("command\\t", nnraw.convert_command("x.dng"), "\\n")
  run("cfa", {{{cfa}}})
  run("guessed", {{{busy}}})
end)
if not ok then report:write("lua-error\\t", tostring(err), "\\n") end
report:close()
"""


def _prepare(tmp_path: Path, canon_dng: Path) -> tuple[Path, list[Path], Path]:
    """Copy the raw twice (plain and odd name) and a non-raw into tmp_path; write the Lua driver."""
    photos = tmp_path / "photos dir"
    photos.mkdir()
    raws = [photos / "canon.dng", photos / ODD_NAME]
    for raw in raws:
        shutil.copyfile(canon_dng, raw)
    not_raw = photos / "notes.png"
    shutil.copyfile(canon_dng.parent / "halide_bayer_small.png", not_raw)
    again = photos / "again.dng"
    shutil.copyfile(canon_dng, again)
    shutil.copyfile(canon_dng, photos / "bayer.dng")
    busy = write_bayer_dng(photos / "busy.dng").path     # no ISO and nothing flat: nnraw assumes ISO 100
    nnraw_command = write_nnraw_command(tmp_path)
    require_subcommand(nnraw_command, "convert")
    report = tmp_path / "report.tsv"
    driver = tmp_path / "driver.lua"
    driver.write_text(DRIVER.format(
        script=lua_string(str(SCRIPT)), report=lua_string(str(report)), nnraw=lua_string(str(nnraw_command)),
        raws=", ".join(lua_string(str(r)) for r in raws), not_raw=lua_string(str(not_raw)),
        missing=lua_string(str(tmp_path / "no such dir" / "nnraw")), again=lua_string(str(again)),
        cfa=lua_string(str(photos / "bayer.dng")), busy=lua_string(str(busy)),
    ))
    return driver, raws, report


def _darktable_cli(driver: Path, tmp_path: Path, raw: Path) -> list[str]:
    return ["timeout", "600", "darktable-cli", str(raw), str(tmp_path / "export.jpg"), "--core",
            "--library", ":memory:", "--configdir", str(tmp_path / "dt-config"),
            "--cachedir", str(tmp_path / "dt-cache"), "--conf", "write_sidecar_files=never",
            "--luacmd", f"dofile({lua_string(str(driver))})"]


def _check_report(report: Path, raws: list[Path], proc: subprocess.CompletedProcess) -> None:
    assert report.exists(), f"the Lua driver wrote no report; darktable said:\n{proc.stdout}\n{proc.stderr}"
    rows = [line.split("\t") for line in report.read_text(encoding="utf-8").splitlines()]
    print("\n".join("\t".join(r) for r in rows))
    by_tag: dict[str, list[list[str]]] = {}
    for row in rows:
        by_tag.setdefault(row[0], []).append(row)
    assert "lua-error" not in by_tag, f"Lua error: {by_tag.get('lua-error')}"

    converted = by_tag["raws"]
    assert [r[2] for r in converted] == [p.name for p in raws]
    for (_, ok, source, output, dng_name, leader, members, error, notes), raw in zip(converted, raws):
        expected = raw.with_name(raw.stem + "-nnraw.dng")
        assert ok == "true", f"{source}: {error}"
        assert output == str(expected) and expected.exists()
        assert dng_name == expected.name
        assert leader == expected.name, "the DNG leads the group by default"
        assert members.split("|") == sorted([raw.name, expected.name])
        assert notes == "", f"{source}: nnraw had nothing to note on the Canon raw: {notes!r}"
    assert raws[0].read_bytes() == raws[1].read_bytes(), "originals are never modified"

    (_, ok, source, output, dng_name, leader, members, error, _notes), = by_tag["not-a-raw"]
    assert ok == "false" and source == "notes.png" and not dng_name
    assert "notes.png" in error, f"nnraw's message should name the file: {error!r}"
    assert members == "notes.png", "nothing grouped on failure"

    (_, ok, source, output, dng_name, leader, members, error, _notes), = by_tag["no-program"]
    assert ok == "false" and "not found" in error, f"a missing nnraw program must be reported: {error!r}"
    assert "nnraw: again.dng failed" in proc.stdout + proc.stderr, "failures are printed (dt.print)"

    (_, ok, source, output, dng_name, leader, members, error, _notes), = by_tag["raw-leads"]
    assert ok == "true", error
    assert leader == "again.dng", "with 'keep the raw as group leader' the group keeps its leader"
    assert members.split("|") == ["again-nnraw.dng", "again.dng"]

    # the strength and output preferences reach the command line and the DNG
    (_, command), = by_tag["command"]
    assert "--strength 0.50" in command and "--output cfa" in command, command
    (_, ok, source, output, dng_name, leader, members, error, _notes), = by_tag["cfa"]
    assert ok == "true", error
    tags = exiftool_tags(Path(output))
    assert tags["SubIFD:PhotometricInterpretation"] == 32803, "a Bayer (CFA) DNG"
    assert tags["IFD0:Software"].endswith("(model default, strength 0.5, output cfa)"), tags["IFD0:Software"]

    # nnraw's notes on a photo (here: no ISO, nothing flat to measure) reach the photographer
    (_, ok, source, output, dng_name, leader, members, error, notes), = by_tag["guessed"]
    assert ok == "true", error
    assert "busy.dng" in notes and "assuming ISO 100" in notes, notes
    assert "assuming ISO 100" in proc.stdout + proc.stderr, "notes are printed (dt.print)"


def test_darktable_42_host_converts_imports_and_groups(tmp_path, canon_dng):
    if shutil.which("darktable-cli") is None:
        pytest.skip("darktable-cli is not installed on this host (`make system-deps` installs darktable 4.2)")
    driver, raws, report = _prepare(tmp_path, canon_dng)
    proc = subprocess.run(_darktable_cli(driver, tmp_path, raws[0]), capture_output=True, text=True,
                          env=clean_env(), timeout=660)
    _check_report(report, raws, proc)


def test_darktable_50_chroot_converts_imports_and_groups(tmp_path, canon_dng):
    from chroot import chroot_for_tests, run_in_chroot

    root = chroot_for_tests()
    driver, raws, report = _prepare(tmp_path, canon_dng)
    version = run_in_chroot(root, ["darktable-cli", "--version"], timeout=120)
    assert "darktable 5." in version.stdout, version.stdout + version.stderr
    proc = run_in_chroot(root, _darktable_cli(driver, tmp_path, raws[0]), binds=[tmp_path, *python_binds()],
                         timeout=660)
    _check_report(report, raws, proc)


GUI_CHECK = """
local dt = require "darktable"
local f = assert(io.open({report}, "w"))
local lib = dt.gui.libs["nnraw"]     -- loaded by luarc, as darktable starts: nothing else was done
-- the module's strength slider and output box are what a conversion saves and uses
dt.preferences.write("nnraw", "strength", "float", 0.3)
package.loaded["contrib/nnraw"].save_module_settings()
f:write(table.concat({{tostring(lib ~= nil), lib and lib.name or "", tostring(lib and lib.visible),
  dt.gui.current_view().id, dt.preferences.read("nnraw", "executable", "string"),
  string.format("%.2f", dt.preferences.read("nnraw", "strength", "float")),
  dt.preferences.read("nnraw", "output_kind", "enum")}}, "\\t"), "\\n")
local ok, err = pcall(function()
  local nnraw = require "contrib/nnraw"    -- the script luarc loaded (package.loaded)
  f:write("program\\t", nnraw.program(), "\\n")
  local image = assert(dt.database.import({raw}), "import")
  for _, r in ipairs(nnraw.convert_images({{image}})) do
    f:write("convert\\t", tostring(r.ok), "\\t", r.output or "", "\\t", r.image and r.image.filename or "", "\\t",
      ((tostring(r.error or "")):gsub("[\\t\\n]", " ")), "\\n")
  end
end)
if not ok then f:write("lua-error\\t", tostring(err), "\\n") end
f:close()
dt.gui.action("global/quit", 0, "", "", 1.0)
"""


def _nnraw_program() -> Path:
    """This environment's `nnraw` console script (what a photographer runs)."""
    exe = Path(sys.executable).with_name("nnraw")
    if not exe.is_file():
        pytest.skip(f"no `nnraw` program beside {sys.executable} (nnraw is not installed in this environment)")
    return exe


def _path_without_nnraw() -> str:
    """PATH minus every folder holding an `nnraw`: the script must find nnraw without it."""
    folders = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d and not (Path(d) / "nnraw").exists()]
    path = os.pathsep.join(folders)
    assert shutil.which("nnraw", path=path) is None
    return path


def _install_cli(config: Path, *extra: str) -> subprocess.CompletedProcess:
    """`nnraw install-plugin darktable --dest CONFIG`, run as a photographer would, nnraw not on PATH."""
    proc = subprocess.run([str(_nnraw_program()), "install-plugin", "darktable", "--dest", str(config), *extra],
                          capture_output=True, text=True, env=clean_env(PATH=_path_without_nnraw()), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _gui_command(tmp_path: Path, canon_dng: Path) -> list[str]:
    """darktable with a GUI under Xvfb, on a fresh config folder where `nnraw install-plugin darktable`
    (and nothing else) set the adapter up; a --luacmd check then converts a raw with it."""
    config = tmp_path / "dt-config"
    proc = _install_cli(config)
    print(proc.stdout)
    assert (config / "luarc").read_text() == LUARC_MARKED + "\n", "luarc created, enabling the script"
    photos = tmp_path / "photos"
    photos.mkdir()
    raw = photos / "canon.dng"
    shutil.copyfile(canon_dng, raw)
    check = tmp_path / "gui_check.lua"
    check.write_text(GUI_CHECK.format(report=lua_string(str(tmp_path / "gui.tsv")), raw=lua_string(str(raw))))
    # timeout inside xvfb-run: it then stops darktable itself (outside, it would stop xvfb-run alone and
    # leave darktable running)
    return ["xvfb-run", "-a", "timeout", "-k", "10", "300", "darktable", "--configdir", str(config),
            "--cachedir", str(tmp_path / "dt-cache"), "--library", ":memory:", "--conf", "write_sidecar_files=never",
            "--luacmd", f"dofile({lua_string(str(check))})"]


def _check_gui(tmp_path: Path, proc: subprocess.CompletedProcess) -> None:
    report = tmp_path / "gui.tsv"
    assert report.exists(), f"darktable ran no Lua check:\n{proc.stdout}\n{proc.stderr}"
    rows = [line.split("\t") for line in report.read_text().splitlines()]
    print(rows)
    assert rows[0][:5] == ["true", "nnraw", "true", "lighttable", ""], \
        "module loaded from luarc and shown in the lighttable, preferences registered (program not set)"
    assert rows[0][5].replace(",", ".") == "1.00" and rows[0][6] == "linear", \
        "the module shows strength 1 and linear output"
    assert rows[1] == ["program", str(_nnraw_program().absolute())], "the script runs the nnraw that installed it"
    raw_dng = tmp_path / "photos" / "canon-nnraw.dng"
    assert rows[2] == ["convert", "true", str(raw_dng), raw_dng.name, ""], rows[2]
    assert raw_dng.stat().st_size > 0
    assert "LUA ERROR" not in proc.stdout + proc.stderr

    config = tmp_path / "dt-config"
    out = _install_cli(config, "--uninstall").stdout
    assert not (config / "luarc").exists(), f"luarc did not exist before: it is removed again\n{out}"
    assert not (config / "lua").exists(), out


def test_darktable_42_host_install_plugin_then_start_converts(tmp_path, canon_dng):
    if shutil.which("darktable") is None or shutil.which("xvfb-run") is None:
        pytest.skip("darktable or xvfb-run is not installed on this host (`make system-deps`)")
    argv = _gui_command(tmp_path, canon_dng)
    proc = subprocess.run(argv, capture_output=True, text=True, env=clean_env(PATH=_path_without_nnraw()),
                          timeout=360)
    _check_gui(tmp_path, proc)


def test_darktable_50_chroot_install_plugin_then_start_converts(tmp_path, canon_dng):
    from chroot import chroot_for_tests, run_in_chroot

    root = chroot_for_tests()
    argv = _gui_command(tmp_path, canon_dng)
    # the chroot's PATH (/usr/sbin:/usr/bin:/sbin:/bin) has no nnraw; the recorded one runs through the binds
    proc = run_in_chroot(root, argv, binds=[tmp_path, *python_binds()], timeout=360)
    _check_gui(tmp_path, proc)
