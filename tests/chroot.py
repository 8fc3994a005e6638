"""A Debian 13 ("trixie") chroot with GIMP 3.0 and darktable 5.0, for the adapter tests.

Debian 12 hosts ship darktable 4.2 and GIMP 2.10 (no Python 3 plug-ins); the tests of the GIMP 3 plug-in
and of the darktable 5.0 Lua API run inside this chroot. It is built ONCE per machine (~2 min, 1.1 GB)
and cached outside the repository, in ``$NNRAW_CHROOT_CACHE`` or ``~/.cache/nnraw/trixie``:

* a lock file (``trixie.lock``, ``fcntl.flock``) makes concurrent test runs wait for one build;
* a second lock file (``trixie-use.lock``) is held from mount to unmount of every command run inside,
  so concurrent test runs take turns (one run's unmount would otherwise pull /proc, /dev and the binds
  from under the other's command);
* the marker ``ROOT/.nnraw-complete`` is written last, so a half-built tree is never used: it is
  unmounted and removed and the build starts again.

Running a command inside mounts /proc, /dev, /sys and bind-mounts the paths the caller names (the
repository, the virtual environment and its base Python install, a temp dir) at the SAME paths, so
``nnraw`` from the host's environment runs unchanged inside. Everything is unmounted afterwards (always
before a tree is removed). Needs root (mount, chroot) and ``debootstrap``.

Command line (used to build the cache ahead of a test run)::

    python tests/chroot.py build          # build if missing, print the root
    python tests/chroot.py run -- CMD...  # run a command inside (binds the repo and the venv)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator, Sequence
from pathlib import Path

SUITE = "trixie"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ["gimp", "python3-gi", "gir1.2-gimp-3.0", "xvfb", "xauth", "darktable"]
COMPLETE_MARKER = ".nnraw-complete"


class ChrootUnavailable(RuntimeError):
    """The chroot cannot be built on this machine (not root, no debootstrap, no network...)."""


def cache_dir() -> Path:
    return Path(os.environ.get("NNRAW_CHROOT_CACHE", Path.home() / ".cache" / "nnraw"))


def chroot_root() -> Path:
    return cache_dir() / SUITE


def _run(cmd: Sequence[str], log, **kw) -> None:
    log.write(f"$ {' '.join(cmd)}\n")
    log.flush()
    proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, **kw)
    if proc.returncode != 0:
        raise ChrootUnavailable(f"chroot build: {' '.join(cmd)!r} failed with exit code {proc.returncode} (log: {log.name})")


def _mountpoints_under(root: Path) -> list[str]:
    """Mount points at or below ``root``, deepest first (for unmounting)."""
    prefix = str(root.resolve())
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if mp == prefix or mp.startswith(prefix + "/"):
                points.append(mp)
    return sorted(set(points), key=len, reverse=True)


def unmount_all(root: Path) -> None:
    """Unmount everything mounted below ``root`` (lazily as a last resort). Safe to call twice."""
    for mp in _mountpoints_under(root):
        if subprocess.run(["umount", "-R", mp], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-R", "-l", mp], capture_output=True)


def _remove_tree(root: Path) -> None:
    unmount_all(root)
    if _mountpoints_under(root):
        raise ChrootUnavailable(f"chroot: {root} still has mounts {_mountpoints_under(root)}; not removing it")
    shutil.rmtree(root, ignore_errors=True)


def ensure_chroot() -> Path:
    """Return the root of a complete chroot, building it first if needed (waits for a concurrent build)."""
    root = chroot_root()
    if (root / COMPLETE_MARKER).exists():
        return root
    if os.geteuid() != 0:
        raise ChrootUnavailable("chroot: building the Debian 13 chroot needs root (mount, chroot)")
    if shutil.which("debootstrap") is None:
        raise ChrootUnavailable("chroot: debootstrap is not installed (apt-get install debootstrap; `make system-deps`)")
    cache_dir().mkdir(parents=True, exist_ok=True)
    with open(cache_dir() / f"{SUITE}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building: wait for it
        if (root / COMPLETE_MARKER).exists():
            return root
        log_path = cache_dir() / f"{SUITE}-build.log"
        with open(log_path, "w") as log:
            if root.exists():
                log.write(f"removing incomplete {root}\n")
                _remove_tree(root)
            _run(["debootstrap", "--variant=minbase", SUITE, str(root), MIRROR], log)
            try:
                _mount_system(root)
                env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "HOME": "/root"}
                _run(["chroot", str(root), "apt-get", "update", "-qq"], log, env=env)
                _run(["chroot", str(root), "apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES], log, env=env)
                _run(["chroot", str(root), "apt-get", "clean"], log, env=env)
            finally:
                unmount_all(root)
        (root / COMPLETE_MARKER).write_text("built by tests/chroot.py\n")
    return root


def _mount_system(root: Path) -> None:
    for sub, cmd in (
        ("proc", ["mount", "-t", "proc", "proc"]),
        ("dev", ["mount", "--rbind", "/dev"]),
        ("sys", ["mount", "--rbind", "/sys"]),
    ):
        target = root / sub
        target.mkdir(exist_ok=True)
        if str(target.resolve()) not in _mountpoints_under(target):
            subprocess.run([*cmd, str(target)], check=True, capture_output=True)
            if sub != "proc":
                subprocess.run(["mount", "--make-rslave", str(target)], capture_output=True)


def python_bind_paths(python: str = sys.executable) -> list[Path]:
    """The paths that make ``python`` (a venv's interpreter) run inside the chroot: the venv and its base install."""
    exe = Path(python)
    paths = {Path(sys.prefix), Path(sys.base_prefix), Path(os.path.realpath(exe)).parents[1]}
    paths.add(Path(sysconfig.get_paths()["purelib"]).resolve())
    return sorted(p for p in paths if p.exists() and p != Path("/") and not str(p).startswith("/usr"))


@contextlib.contextmanager
def use_lock() -> Iterator[None]:
    """Hold ``trixie-use.lock`` (exclusive ``fcntl.flock``): one mount..unmount inside the chroot at a time."""
    cache_dir().mkdir(parents=True, exist_ok=True)
    with open(cache_dir() / f"{SUITE}-use.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test run has the chroot mounted: wait for its unmount
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextlib.contextmanager
def mounted(root: Path, binds: Sequence[Path]) -> Iterator[Path]:
    """Mount /proc, /dev, /sys and bind ``binds`` at the same paths inside ``root``; unmount afterwards.

    Holds the use lock throughout, so a concurrent run waits instead of losing its mounts."""
    done: list[Path] = []
    with use_lock():
        try:
            _mount_system(root)
            for src in binds:
                src = Path(src).resolve()
                target = root / str(src).lstrip("/")
                if src.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.touch(exist_ok=True)
                subprocess.run(["mount", "--bind", str(src), str(target)], check=True, capture_output=True)
                done.append(target)
            yield root
        finally:
            unmount_all(root)


def run_in_chroot(root: Path, argv: Sequence[str], *, binds: Sequence[Path] = (), env: dict | None = None,
                  timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``argv`` inside the chroot with ``binds`` mounted; returns the completed process (text output)."""
    full_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    full_env.update(env or {})
    with mounted(root, binds):
        return subprocess.run(["chroot", str(root), *argv], env=full_env, capture_output=True, text=True,
                              timeout=timeout)


def chroot_for_tests() -> Path:
    """ensure_chroot() for a test: skips (tests/skip_policy.py's "no root for the chroot") only where this
    process is not root; any other failure to build the chroot (no debootstrap, no network) fails the test."""
    import pytest

    from skip_policy import NO_CHROOT_ROOT

    if os.geteuid() != 0:
        pytest.skip(f"{NO_CHROOT_ROOT}: building, mounting and entering the Debian 13 chroot need root")
    return ensure_chroot()


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("build", "run"):
        print(__doc__)
        return 2
    root = ensure_chroot()
    if argv[0] == "build":
        print(root)
        return 0
    cmd = argv[2:] if argv[1:2] == ["--"] else argv[1:]
    repo = Path(__file__).resolve().parents[1]
    proc = run_in_chroot(root, cmd, binds=[repo, *python_bind_paths()])
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
