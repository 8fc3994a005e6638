"""The command lines the darktable and GIMP adapters run, run directly: a broken one fails here loudly,
even where the adapter tests themselves cannot run (no root for the chroot)."""

from __future__ import annotations

import subprocess

from plugin_env import write_nnraw_command


def test_nnraw_convert_help_runs(tmp_path):
    proc = subprocess.run([str(write_nnraw_command(tmp_path)), "convert", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--model" in proc.stdout and "--strength" in proc.stdout


def test_nnraw_info_lists_the_default_model(tmp_path):
    proc = subprocess.run([str(write_nnraw_command(tmp_path)), "info"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "default" in proc.stdout
