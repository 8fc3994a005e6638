"""The `nnraw` command line as a new user meets it (issue #19): each test runs the command as a
subprocess, as a shell or an adapter does, and checks what the user sees: exit codes, stdout, stderr."""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dng_fixtures import write_bayer_dng

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


def nnraw(*args, stdin=subprocess.DEVNULL, **kw) -> subprocess.CompletedProcess:
    """``python -m nnraw ARGS`` (this environment's nnraw), stdout and stderr captured as text."""
    return subprocess.run([sys.executable, "-m", "nnraw", *map(str, args)], capture_output=True, text=True,
                          env=ENV, stdin=stdin, timeout=600, **kw)


def all_options() -> set[str]:
    """Every --option of every `nnraw` sub-command."""
    import argparse

    from nnraw.cli import build_parser

    found: set[str] = set()

    def walk(parser: argparse.ArgumentParser) -> None:
        for action in parser._actions:
            found.update(action.option_strings)
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    walk(sub)

    walk(build_parser())
    return found


# --------------------------------------------------------------------------- 1. output into a closed pipe

@pytest.mark.parametrize("argv", [["info"], ["info", "--json"], ["convert", "--help"]])
def test_output_into_a_closed_pipe_ends_quietly(argv):
    """`nnraw info | head -3`: the reader goes away; nnraw must stop without a traceback (0 or 141)."""
    proc = subprocess.Popen([sys.executable, "-m", "nnraw", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=ENV)
    proc.stdout.close()                      # the reader has gone before nnraw writes a byte
    err = proc.stderr.read().decode()
    code = proc.wait(timeout=300)
    assert code in (0, 141), (code, err)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_a_shell_pipeline_into_head_is_clean():
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", f"{shlex.quote(sys.executable)} -m nnraw info | head -1"],
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.stdout.startswith("nnraw "), proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode in (0, 141), proc.stderr


# --------------------------------------------------------------------------- 2. `nnraw info` lists the models

def test_info_lists_every_shipped_model_and_the_default():
    from nnraw.models import available_models

    names = available_models()
    text = nnraw("info")
    assert text.returncode == 0, text.stderr
    lines = {line.split()[0]: line for line in text.stdout.splitlines()[1:] if line.startswith("  ") and line.split()}
    for name in names:
        assert name in lines, text.stdout
        sensor = "X-Trans" if name == "xtrans" else "Bayer"
        assert sensor in lines[name] and "kMAC/pixel" in lines[name], lines[name]
    assert "[default]" in lines["default"] and "any ISO" in lines["default"]
    assert "trained at ISO 1600 only" in lines["reference-iso1600"]
    for name in names:                       # the self-ensemble's passes (nnraw.infer.default_passes)
        assert ("2 passes on a GPU or a CPU with AVX512_BF16" in lines[name]) == (name in ("default", "xtrans")), lines[name]
    info = json.loads(nnraw("info", "--json").stdout)
    models = {m["name"]: m for m in info["models"]}
    assert sorted(models) == names
    assert [m["name"] for m in info["models"] if m["default"]] == ["default"]
    # the speed figure is the network's own: the default (joint, docs/MODELS.md) ~143 kMAC per pixel,
    # fast (the previous default) 35
    assert models["default"]["kmac_per_pixel"] == pytest.approx(143.3, rel=0.02)
    assert models["default"]["speed"] == "standard"
    assert models["fast"]["kmac_per_pixel"] == pytest.approx(35.0, rel=0.02)
    assert models["fast"]["speed"] == "fast"


def test_help_points_to_info_for_the_models():
    assert re.search(r"info\s+show the build: .*shipped\s+models", nnraw("--help").stdout)
    assert re.search(r"`nnraw\s+info`\s+lists\s+them", nnraw("convert", "--help").stdout)


# --------------------------------------------------------------------------- 3. every option a message names

#: Options of other programs that nnraw's messages and docstrings name.
FOREIGN_OPTIONS = {
    "--check",               # python -m nnraw.ops --check (the op library's own check)
    "--via", "--no-via",     # python -m nnraw.training.blend (a maintainer's tool that re-blends shipped weights)
    "--force",               # pipx install --force
    "--no-build-isolation",  # pip install --no-build-isolation
    "--user",                # pip install --user
}


def test_every_option_named_in_the_code_exists():
    """A message that tells the user to pass --X names an option some `nnraw` command has (or one of
    the few other programs' options listed above)."""
    known = all_options()
    missing = {}
    for path in sorted((REPO / "python" / "nnraw").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for opt in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]+", node.value):
                    if opt not in known and opt not in FOREIGN_OPTIONS:
                        missing.setdefault(opt, []).append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not missing, f"options named in messages that no nnraw command has: {missing}"


def test_convert_takes_a_noise_profile_file(tmp_path):
    from nnraw.noise.model import NoiseProfile

    src = write_bayer_dng(tmp_path / "a.dng", size=(64, 96)).path
    weak, strong = tmp_path / "weak.json", tmp_path / "strong.json"
    NoiseProfile(a=(1e-6,) * 3, b=(0.0,) * 3, name="weak").save(weak)
    NoiseProfile(a=(1e-2,) * 3, b=(1e-4,) * 3, name="strong").save(strong)
    outs = {}
    for prof in (weak, strong):
        out = tmp_path / f"{prof.stem}.dng"
        proc = nnraw("convert", src, "-o", out, "--profile", prof, "--json")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["results"][0]["ok"]
        import rawpy

        with rawpy.imread(str(out)) as r:
            outs[prof.stem] = r.raw_image_visible.astype(np.float64)
    # the network was told different noise levels, so it did different things
    assert np.abs(outs["weak"] - outs["strong"]).mean() > 1.0


@pytest.mark.parametrize("profile, message", [
    ("missing.json", r"--profile: .*missing\.json: No such file"),
    ("text.json", r"--profile: .*text\.json: "),
])
def test_a_bad_profile_is_a_usage_error_before_any_work(tmp_path, profile, message):
    src = write_bayer_dng(tmp_path / "a.dng").path
    (tmp_path / "text.json").write_text("not json")
    proc = nnraw("convert", src, "--profile", tmp_path / profile)
    assert proc.returncode == 2 and re.search(message, proc.stderr), proc.stderr
    assert not (tmp_path / "a-nnraw.dng").exists()


# --------------------------------------------------------------------------- 4. a batch names what it wrote

def test_a_batch_prints_each_written_file_and_each_failure_on_its_own_line(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_bayer_dng(inputs / "a.dng", pattern="BGGR")
    write_bayer_dng(inputs / "c.dng", pattern="GRBG")
    (inputs / "b.dng").write_bytes(b"\xff\xd8\xff\xe0" + bytes(200))       # a JPEG named .dng
    proc = nnraw("convert", inputs, "--model", "none")
    assert proc.returncode == 1
    out_lines = proc.stdout.splitlines()                                   # what was written, in order
    assert len(out_lines) == 2, proc.stdout
    for line, name in zip(out_lines, "ac"):
        assert re.fullmatch(re.escape(f"{inputs / name}.dng -> {inputs / name}-nnraw.dng (") + r"\d+\.\d s\)", line), line
    assert "\r" not in proc.stderr and "\x1b[" not in proc.stderr, repr(proc.stderr)   # no progress bar in a log
    err = proc.stderr.splitlines()
    assert err[0].startswith(f"failed: {inputs / 'b.dng'}: not a raw file: it is a JPEG image"), err
    assert err[-2:] == ["nnraw convert: 1 of 3 file(s) failed:", f"  {err[0][len('failed: '):]}"], err


# --------------------------------------------------------------------------- 5./6. -o and --output, bad values

def test_output_path_and_output_kind_are_two_options():
    text = nnraw("convert", "--help").stdout
    assert re.search(r"^  -o OUT\.dng\s+the DNG to write", text, re.M), text
    assert re.search(r"^  --output linear\|cfa\s+the kind of DNG", text, re.M), text


@pytest.mark.parametrize("argv, message", [
    (["--output", "tiff"], r"--output: .*must be linear or cfa, got 'tiff'"),
    (["--output", "x.dng"], r"--output: .*got 'x.dng'; name the output file with -o OUT\.dng"),
    (["-o", "x.tif"], r"-o: the output file must end in \.dng, got 'x\.tif'"),
    (["--output", "cfa", "--output", "linear"], r"--output: give one kind, linear or cfa"),
    (["--model", "no-such-net"], r"--model no-such-net: no such network; shipped: default"),
    (["--iso", "-100"], r"--iso must be a positive number"),
    (["--strength", "3"], r"--strength must be from 0"),
    (["--passes", "3"], r"--passes must be one of 1, 2, 4, 8"),
])
def test_a_bad_option_value_is_a_usage_error_before_any_work(tmp_path, argv, message):
    """Named, exit 2, and nothing read or written: the input does not even exist."""
    missing = tmp_path / "not-there.CR2"
    proc = nnraw("convert", missing, *argv)
    if proc.returncode != 2 and "not-there" in proc.stderr:
        pytest.fail(f"the option was checked only after reading the input: {proc.stderr}")
    assert proc.returncode == 2 and re.search(message, proc.stderr), proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_single_input_options_say_needs_in_good_grammar(tmp_path):
    a = write_bayer_dng(tmp_path / "a.dng").path
    b = write_bayer_dng(tmp_path / "b.dng").path
    assert "-o needs exactly one input, got 2" in nnraw("convert", a, b, "-o", tmp_path / "x.dng").stderr
    both = nnraw("convert", a, b, "-o", tmp_path / "x.dng", "--preview", tmp_path / "p.png").stderr
    assert "-o, --preview need exactly one input, got 2" in both


# --------------------------------------------------------------------------- friction

def test_a_png_named_png_is_not_said_to_be_misnamed(tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "photo.png")
    (tmp_path / "photo.CR2").write_bytes((tmp_path / "photo.png").read_bytes())
    named_png = nnraw("convert", tmp_path / "photo.png", "--model", "none")
    assert named_png.returncode == 1
    assert "not a raw file: it is a PNG image" in named_png.stderr
    assert "whatever its name says" not in named_png.stderr and "although" not in named_png.stderr
    named_raw = nnraw("convert", tmp_path / "photo.CR2", "--model", "none")
    assert "it is a PNG image" in named_raw.stderr and "although its name ends in .CR2" in named_raw.stderr


def test_convert_help_has_examples_and_plain_words():
    text = nnraw("convert", "--help").stdout
    examples = text.split("examples:", 1)[1].split("words:", 1)[0]
    assert len([line for line in examples.splitlines() if line.strip().startswith("nnraw convert")]) >= 2
    words = text.split("words:", 1)[1]
    for term, plain in (("LinearRaw", "already demosaiced"), ("pre-demosaic", "classic"),
                        ("noise level", "told how noisy")):
        assert term in words and plain in words, words


def test_out_dir_is_not_left_behind_when_every_input_failed(tmp_path):
    (tmp_path / "bad.dng").write_text("hello")
    out_dir = tmp_path / "new" / "folder"
    proc = nnraw("convert", tmp_path / "bad.dng", "--out-dir", out_dir)
    assert proc.returncode == 1 and "it is a text file" in proc.stderr
    assert not (tmp_path / "new").exists()
    # ... but a folder that was there before stays, and one with outputs stays
    out_dir.mkdir(parents=True)
    assert nnraw("convert", tmp_path / "bad.dng", "--out-dir", out_dir).returncode == 1 and out_dir.is_dir()
    good = write_bayer_dng(tmp_path / "good.dng").path
    fresh = tmp_path / "fresh"
    assert nnraw("convert", good, tmp_path / "bad.dng", "--out-dir", fresh, "--model", "none").returncode == 1
    assert [p.name for p in fresh.iterdir()] == ["good-nnraw.dng"]


def test_readme_tells_where_the_wheel_comes_from_and_what_make_test_does():
    readme = (REPO / "README.md").read_text()
    installs = re.findall(r"(?:pipx install|pip install --user)\s+(\S+\.whl)", readme)
    assert installs and all(p.startswith("dist/nnraw-") for p in installs), installs
    assert "make wheel" in readme and "prints the file it wrote" in readme
    make_test = readme.split("`make test` takes", 1)
    assert len(make_test) == 2 and "10 minutes" in make_test[1][:80], "README: how long make test takes"
    assert "root" in make_test[1][:300] and "1 GB" in make_test[1][:600]


def test_make_system_deps_prints_its_package_list_on_one_line():
    if not all(subprocess.run(["dpkg", "-s", p], capture_output=True).returncode == 0
               for p in ("libimage-exiftool-perl", "darktable", "xvfb", "xauth", "debootstrap")):
        pytest.skip("not Linux with the test packages installed (make test installs them first)")
    proc = subprocess.run(["make", "-s", "system-deps"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Debian packages for the tests: libimage-exiftool-perl"), lines
    assert lines[0].endswith("(all installed)")


def test_readme_use_examples_run(tmp_path):
    """Every `nnraw convert` line of the README's "Use" section runs as written, on a synthetic raw
    (the file and folder names replaced by real ones)."""
    from nnraw.noise.model import reference_profile

    readme = (REPO / "README.md").read_text()
    block = readme.split("## Use", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    lines = [line.split("#", 1)[0].strip() for line in block.splitlines() if "nnraw convert" in line]
    assert len(lines) >= 6, block
    night = tmp_path / "Pictures" / "night"
    night.mkdir(parents=True)
    write_bayer_dng(night / "a.dng")
    reference_profile(3200).save(tmp_path / "k3.json")
    for line in lines:
        argv = shlex.split(line)[2:]                             # drop ".venv/bin/nnraw convert"
        raw = write_bayer_dng(tmp_path / "IMG_1234.dng", size=(64, 96)).path
        for stale in tmp_path.glob("IMG_1234-nnraw.dng"):
            stale.unlink()
        argv = [str(raw) if a.startswith("IMG_1234.") else
                a.replace("~/Pictures", str(tmp_path / "Pictures")).replace("k3.json", str(tmp_path / "k3.json"))
                for a in argv]
        proc = nnraw("convert", *argv, "--overwrite", cwd=tmp_path)
        assert proc.returncode == 0, (line, proc.stderr)
