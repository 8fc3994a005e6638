"""`nnraw install-plugin darktable|gimp`: copy an adapter into the program's user configuration folder.

The adapters are plain files (plugins/darktable/nnraw.lua, plugins/gimp/nnraw/nnraw.py) that only run
the `nnraw` command line. They ship inside the package as ``nnraw/plugins`` (CMakeLists.txt installs
the top-level plugins/ folder there); in a source checkout they are read from plugins/ directly.

Where they go (``--dest`` replaces the configuration folder):

=========  ========================================  ==========================================
program    configuration folder (default)            installed file
=========  ========================================  ==========================================
darktable  $XDG_CONFIG_HOME/darktable                lua/contrib/nnraw.lua,
           (Windows: %LOCALAPPDATA%\\darktable)           lua/contrib/nnraw-program.txt and
                                                     the line ``require "contrib/nnraw"`` in luarc
GIMP 3     $XDG_CONFIG_HOME/GIMP/3.0                 plug-ins/nnraw/nnraw.py (executable) and
           (Windows: %APPDATA%\\GIMP\\3.0,             plug-ins/nnraw/nnraw-command.json
           macOS: ~/Library/Application Support/...)
=========  ========================================  ==========================================

GIMP starts plug-ins with its own Python, where this environment's nnraw may not be on PATH: the
installer writes ``nnraw-command.json`` beside the plug-in with the exact command that runs this nnraw
(``[python, "-m", "nnraw"]`` and the PYTHONPATH that finds it).

darktable: the installer records the absolute path of the ``nnraw`` program it was run from in
``nnraw-program.txt`` beside the script, which the script runs unless the darktable preference
"nnraw: program" (lua options) names another. It enables the script by adding one marked line to
``luarc`` (creating the file if needed; the previous file is kept as ``luarc.nnraw-backup``); a
second install changes nothing, and ``--uninstall`` takes back exactly what was added (the backup is
restored byte for byte when luarc was not edited since). Where lua-scripts' script manager runs
(``lua/tools/script_manager.lua``, required from luarc), luarc is left alone: the script is started
there, as the installer says, since loading it from both would register it twice.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

PROGRAMS = ("darktable", "gimp")
COMMAND_FILE = "nnraw-command.json"
PROGRAM_FILE = "nnraw-program.txt"          # darktable: the nnraw program the script runs (beside it)
LUARC_LINE = 'require "contrib/nnraw"'
LUARC_MARKED = LUARC_LINE + "  -- added by `nnraw install-plugin darktable`; its --uninstall removes this line"
LUARC_BACKUP = "luarc.nnraw-backup"


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


def nnraw_program() -> Path | None:
    """The absolute path of the ``nnraw`` program this process runs from, or None (e.g. ``python -m nnraw``
    from a source tree). The console script that started us comes first (pipx, ``pip install --user``),
    then the one beside this Python (a virtual environment's bin/)."""
    names = ("nnraw.exe", "nnraw") if sys.platform == "win32" else ("nnraw",)
    candidates = []
    if sys.argv and sys.argv[0] and Path(sys.argv[0]).name in names:
        candidates.append(Path(sys.argv[0]))
    candidates += [Path(sys.executable).with_name(name) for name in names]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate.absolute()
    return None


def _write_atomic(path: Path, data: bytes, executable: bool = False, mode: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".nnraw-tmp")
    tmp.write_bytes(data)
    tmp.chmod(mode if mode is not None else 0o755 if executable else 0o644)
    os.replace(tmp, path)


# ---- darktable's luarc -------------------------------------------------------------------------------

def _requires(text: str, module: str) -> bool:
    """Whether Lua ``text`` has an active (not commented-out) line ``require "module"``."""
    pattern = r"""^[ \t]*require[ \t]*\(?[ \t]*(["'])""" + re.escape(module) + r"\1"
    return re.search(pattern, text, flags=re.M) is not None


def _read_text(path: Path) -> str:
    return path.read_bytes().decode("utf-8", errors="replace") if path.is_file() else ""


def script_manager_active(config: Path) -> bool:
    """lua-scripts' script manager is installed in ``config/lua`` and started from luarc."""
    return ((config / "lua" / "tools" / "script_manager.lua").is_file()
            and _requires(_read_text(config / "luarc"), "tools/script_manager"))


def enable_in_luarc(config: Path) -> tuple[str, list[Path]]:
    """Add the marked ``require "contrib/nnraw"`` line to ``config/luarc``, keeping every other byte.

    Returns (what happened, files written): "added" (the previous luarc saved as luarc.nnraw-backup,
    none when there was no luarc), "present" (luarc already requires it: nothing changed) or
    "script_manager" (lua-scripts' script manager runs: luarc left alone).
    """
    luarc = config / "luarc"
    if script_manager_active(config):
        return "script_manager", []
    original = luarc.read_bytes() if luarc.exists() else None
    if original is not None and _requires(original.decode("utf-8", errors="replace"), "contrib/nnraw"):
        return "present", []
    written = []
    mode = None
    if original is not None:
        mode = luarc.stat().st_mode & 0o7777
        _write_atomic(config / LUARC_BACKUP, original, mode=mode)
        written.append(config / LUARC_BACKUP)
    separator = b"\n" if original and not original.endswith(b"\n") else b""
    _write_atomic(luarc, (original or b"") + separator + LUARC_MARKED.encode() + b"\n", mode=mode)
    written.append(luarc)
    return "added", written


def disable_in_luarc(config: Path) -> tuple[str, list[Path]]:
    """Take back what :func:`enable_in_luarc` added. Returns (what happened, files removed).

    "restored": luarc was not edited since, it is now the backup again, byte for byte (the backup is
    removed); "removed": the installer had created luarc, it is removed; "line removed": luarc was edited
    since, only the marked line was taken out (the backup stays); "untouched": no marked line.
    """
    luarc, backup = config / "luarc", config / LUARC_BACKUP
    if not luarc.is_file():
        return "untouched", []
    current = luarc.read_bytes()
    marked = LUARC_MARKED.encode()
    lines = current.splitlines(keepends=True)
    if not any(line.rstrip(b"\r\n") == marked for line in lines):
        return "untouched", []
    if backup.is_file():
        before = backup.read_bytes()
        separator = b"\n" if before and not before.endswith(b"\n") else b""
        if current == before + separator + marked + b"\n":
            _write_atomic(luarc, before, mode=backup.stat().st_mode & 0o7777)
            backup.unlink()
            return "restored", [backup]
    elif current == marked + b"\n":
        luarc.unlink()
        return "removed", [luarc]
    kept = b"".join(line for line in lines if line.rstrip(b"\r\n") != marked)
    _write_atomic(luarc, kept, mode=luarc.stat().st_mode & 0o7777)
    return "line removed", []


def install(program: str, dest: Path | None = None) -> list[Path]:
    """Copy ``program``'s adapter into its configuration folder (``dest`` or the default) and record which
    nnraw it runs; for darktable also enable it in luarc. Returns the files written."""
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
    if program == "darktable":
        target = config / "lua" / "contrib" / PROGRAM_FILE
        exe = nnraw_program()
        if exe is not None:
            _write_atomic(target, (str(exe) + "\n").encode())
            written.append(target)
        elif target.exists():   # a record of another nnraw would be wrong now
            target.unlink()
        written += enable_in_luarc(config)[1]
    return written


def uninstall(program: str, dest: Path | None = None) -> list[Path]:
    """Remove what :func:`install` wrote; returns the files removed (empty when nothing was installed)."""
    config = Path(dest) if dest is not None else default_config_dir(program)
    targets = [config / item.target for item in PLUGIN_FILES[program]]
    if program == "gimp":
        targets.append(config / "plug-ins" / "nnraw" / COMMAND_FILE)
    if program == "darktable":
        targets.append(config / "lua" / "contrib" / PROGRAM_FILE)
    removed = []
    for target in targets:
        if target.exists():
            target.unlink()
            removed.append(target)
    if program == "darktable":
        removed += disable_in_luarc(config)[1]
        for folder in (config / "lua" / "contrib", config / "lua"):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
    if program == "gimp":
        folder = config / "plug-ins" / "nnraw"
        pycache = folder / "__pycache__"
        if pycache.is_dir():
            shutil.rmtree(pycache)
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    return removed


def how_to_enable(program: str, config: Path) -> str:
    """The steps a photographer takes after installing (none for darktable but a restart), as text."""
    if program == "darktable":
        luarc = config / "luarc"
        text = _read_text(luarc)
        if script_manager_active(config):
            lines = [
                "darktable: lua-scripts' script manager runs here, so luarc was left alone. Restart darktable,",
                'open "scripts" in the lighttable\'s left panel, choose the folder "contrib" and start "nnraw".',
            ]
        elif LUARC_MARKED in text:
            backup = config / LUARC_BACKUP
            lines = [f'darktable: added  {LUARC_LINE}  to {luarc}'
                     + (f' (your previous luarc is kept as {backup})' if backup.exists() else ' (created it)')
                     + '; restart darktable.']
        else:
            lines = [f'darktable: {luarc} already loads the script; restart darktable.']
        lines.append('The "nnraw" module then appears in the lighttable\'s right panel, with a strength slider '
                     '(0 = no denoising, 1 = default, 2 = twice as hard) and the output: linear (a demosaiced DNG) '
                     'or cfa (a denoised Bayer DNG that darktable demosaics itself); the other settings are in '
                     'preferences > lua options.')
        recorded = config / "lua" / "contrib" / PROGRAM_FILE
        if recorded.is_file():
            lines.append(f'The script runs {recorded.read_text().strip()} (recorded in {recorded}); '
                         'the preference "nnraw: program" overrides it.')
        else:
            lines.append('No `nnraw` program was found beside this Python: the script runs `nnraw` from PATH, '
                         'or set "nnraw: program" in lua options to its full path.')
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
    p.add_argument("--uninstall", action="store_true",
                   help="remove the adapter instead (darktable: and take back the line added to luarc)")


def run(args: argparse.Namespace) -> int:
    config = args.dest if args.dest is not None else default_config_dir(args.program)
    try:
        if args.uninstall:
            luarc_before = _read_text(config / "luarc") if args.program == "darktable" else ""
            removed = uninstall(args.program, config)
            luarc_after = _read_text(config / "luarc") if args.program == "darktable" else ""
            if not removed and luarc_before == luarc_after:
                print(f"nnraw install-plugin: no {args.program} adapter installed in {config}")
            for path in removed:
                if path.name not in ("luarc", LUARC_BACKUP):   # said below
                    print(f"removed {path}")
            if luarc_before != luarc_after:
                restored = any(path.name == LUARC_BACKUP for path in removed)
                print(f'took the line  {LUARC_LINE}  out of {config / "luarc"}'
                      + (" (restored from its backup, which is removed)" if restored else "")
                      + ("" if (config / "luarc").exists() else " (and removed the file, which it had created)"))
            elif args.program == "darktable" and _requires(luarc_after, "contrib/nnraw"):
                print(f'{config / "luarc"} still has a  {LUARC_LINE}  line that nnraw did not add: remove it yourself')
            return 0
        for path in install(args.program, config):
            if path.name not in ("luarc", LUARC_BACKUP):   # how_to_enable says what happened to luarc
                print(f"installed {path}")
    except OSError as exc:
        print(f"nnraw install-plugin {args.program}: {exc}", file=sys.stderr)
        return 1
    print(how_to_enable(args.program, config))
    return 0
