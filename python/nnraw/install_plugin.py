"""`nnraw install-plugin darktable|gimp`: copy an adapter into the program's user configuration folder.

The adapters are plain files (plugins/darktable/nnraw.lua, plugins/gimp/nnraw/nnraw.py) that only run
the `nnraw` command line. They ship inside the package as ``nnraw/plugins`` (CMakeLists.txt installs
the top-level plugins/ folder there); in a source checkout they are read from plugins/ directly.

Where they go (``--dest`` replaces the configuration folder):

=========  ========================================  ==========================================
program    configuration folder (default)            installed file
=========  ========================================  ==========================================
darktable  $XDG_CONFIG_HOME/darktable                lua/contrib/nnraw.lua
           (Windows: %LOCALAPPDATA%\\darktable)
GIMP 3     $XDG_CONFIG_HOME/GIMP/3.0                 plug-ins/nnraw/nnraw.py (executable) and
           (Windows: %APPDATA%\\GIMP\\3.0,             plug-ins/nnraw/nnraw-command.json
           macOS: ~/Library/Application Support/...)
=========  ========================================  ==========================================

GIMP starts plug-ins with its own Python, where this environment's nnraw may not be on PATH: the
installer writes ``nnraw-command.json`` beside the plug-in with the exact command that runs this nnraw
(``[python, "-m", "nnraw"]`` and the PYTHONPATH that finds it). darktable reads the program from its
own preference (lua options > nnraw: program); the installer prints the path to put there when
``nnraw`` is not on PATH.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

PROGRAMS = ("darktable", "gimp")
COMMAND_FILE = "nnraw-command.json"


@dataclass(frozen=True)
class PluginFile:
    """One adapter file: where it lies in plugins/ and where it goes below the configuration folder."""

    source: str            # relative to the plugins folder
    target: str            # relative to the program's configuration folder
    executable: bool = False


PLUGIN_FILES = {
    "darktable": [PluginFile("darktable/nnraw.lua", "lua/contrib/nnraw.lua")],
    "gimp": [PluginFile("gimp/nnraw/nnraw.py", "plug-ins/nnraw/nnraw.py", executable=True)],
}


def plugins_dir() -> Path:
    """The folder holding the adapters: ``nnraw/plugins`` in an installed package, else ``<repo>/plugins``."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "plugins", package.parents[1] / "plugins"):
        if (candidate / "darktable" / "nnraw.lua").is_file():
            return candidate
    raise FileNotFoundError(
        f"nnraw install-plugin: the adapter files are missing: looked in {package / 'plugins'} "
        f"and {package.parents[1] / 'plugins'}; reinstall nnraw")


def _config_home() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")


def default_config_dir(program: str) -> Path:
    """The user configuration folder of ``program`` on this platform (XDG_CONFIG_HOME aware)."""
    if program == "darktable":
        if sys.platform == "win32":
            return Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "darktable"
        return _config_home() / "darktable"
    if program == "gimp":
        if sys.platform == "win32":
            return Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming")) / "GIMP" / "3.0"
        if sys.platform == "darwin":
            return Path.home() / "Library" / "Application Support" / "GIMP" / "3.0"
        return _config_home() / "GIMP" / "3.0"
    raise ValueError(f"nnraw install-plugin: unknown program {program!r}, expected one of {PROGRAMS}")


def nnraw_command() -> dict:
    """How to run this environment's nnraw from another program: argv prefix and extra environment."""
    package_parent = Path(__file__).resolve().parents[1]
    return {"command": [sys.executable, "-m", "nnraw"], "env": {"PYTHONPATH": str(package_parent)}}


def _write_atomic(path: Path, data: bytes, executable: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".nnraw-tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o755 if executable else 0o644)
    os.replace(tmp, path)


def install(program: str, dest: Path | None = None) -> list[Path]:
    """Copy ``program``'s adapter into its configuration folder (``dest`` or the default); returns the files written."""
    config = Path(dest) if dest is not None else default_config_dir(program)
    source_dir = plugins_dir()
    written = []
    for item in PLUGIN_FILES[program]:
        target = config / item.target
        _write_atomic(target, (source_dir / item.source).read_bytes(), item.executable)
        written.append(target)
    if program == "gimp":
        target = config / "plug-ins" / "nnraw" / COMMAND_FILE
        _write_atomic(target, (json.dumps(nnraw_command(), indent=2) + "\n").encode(), False)
        written.append(target)
    return written


def uninstall(program: str, dest: Path | None = None) -> list[Path]:
    """Remove what :func:`install` wrote; returns the files removed (empty when nothing was installed)."""
    config = Path(dest) if dest is not None else default_config_dir(program)
    targets = [config / item.target for item in PLUGIN_FILES[program]]
    if program == "gimp":
        targets.append(config / "plug-ins" / "nnraw" / COMMAND_FILE)
    removed = []
    for target in targets:
        if target.exists():
            target.unlink()
            removed.append(target)
    if program == "gimp":
        folder = config / "plug-ins" / "nnraw"
        pycache = folder / "__pycache__"
        if pycache.is_dir():
            shutil.rmtree(pycache)
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    return removed


def how_to_enable(program: str, config: Path) -> str:
    """The steps a photographer takes after installing, as text."""
    if program == "darktable":
        luarc = config / "luarc"
        exe = shutil.which("nnraw")
        lines = [
            f'darktable: add this line to {luarc} (create the file if needed), then restart darktable:',
            '    require "contrib/nnraw"',
            'The "nnraw" module then appears in the lighttable\'s right panel, with a strength slider',
            '(0 = no denoising, 1 = default, 2 = twice as hard) and the output: linear (a demosaiced DNG)',
            'or cfa (a denoised Bayer DNG that darktable demosaics itself); the other settings are in',
            'preferences > lua options.',
        ]
        if exe is None:
            here = Path(sys.executable).with_name("nnraw.exe" if sys.platform == "win32" else "nnraw")
            if here.exists():
                lines.append(f'nnraw is not on PATH: set "nnraw: program" in lua options to {here}')
            else:
                lines.append('the `nnraw` program was not found: install nnraw with pip (it creates the command), '
                             'then set "nnraw: program" in lua options to its full path')
        return "\n".join(lines)
    return "\n".join([
        "GIMP 3: restart GIMP. Then:",
        "  - denoise a layer: Filters > Enhance > Noise > nnraw Denoise... (Strength 0-2, as nnraw's --strength)",
        "  - open raws with nnraw: Edit > Preferences > Image Import & Export > Raw Image Importer: nnraw",
        f"The plug-in runs: {' '.join(nnraw_command()['command'])} (see {COMMAND_FILE} beside it).",
    ])


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("program", choices=PROGRAMS, help="which adapter to install")
    p.add_argument("--dest", type=Path, metavar="DIR",
                   help="the program's configuration folder (default: darktable ~/.config/darktable, "
                        "GIMP ~/.config/GIMP/3.0; XDG_CONFIG_HOME is honoured)")
    p.add_argument("--uninstall", action="store_true", help="remove the adapter instead")


def run(args: argparse.Namespace) -> int:
    config = args.dest if args.dest is not None else default_config_dir(args.program)
    try:
        if args.uninstall:
            removed = uninstall(args.program, config)
            if not removed:
                print(f"nnraw install-plugin: no {args.program} adapter installed in {config}")
            for path in removed:
                print(f"removed {path}")
            if removed and args.program == "darktable":
                print(f'remove the line  require "contrib/nnraw"  from {config / "luarc"}')
            return 0
        for path in install(args.program, config):
            print(f"installed {path}")
    except OSError as exc:
        print(f"nnraw install-plugin {args.program}: {exc}", file=sys.stderr)
        return 1
    print(how_to_enable(args.program, config))
    return 0
