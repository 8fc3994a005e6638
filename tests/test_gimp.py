"""The GIMP 3 plug-in (plugins/gimp/nnraw/nnraw.py) in real GIMP 3.0 (gimp-console-3.0 in the Debian 13
chroot of tests/chroot.py), installed with `nnraw install-plugin gimp` into a fresh GIMP profile.

One GIMP run (module fixture) does everything through the PDB, as a user's batch script would:
  * the filter `plug-in-nnraw-denoise` on a noisy float image (two flat areas and a sharp edge);
  * the raw loader `file-nnraw-raw-load` on a real DNG, on a copy named with a quote and a non-ASCII
    letter, and on a PNG (must fail with nnraw's message);
(Gimp.file_load is not tested on the DNG: GIMP 3.0 gives any file with TIFF magic, DNG included, to its
own TIFF loader first, whatever the Raw Image Importer setting; see docs/PLUGINS.md.)
The pixels come back to pytest as raw float32 files and are checked with numpy here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from dng_fixtures import write_bayer_dng

from plugin_env import REPO, python_binds, require_subcommand, write_nnraw_command

pytestmark = pytest.mark.slow

SIZE = 96
EDGE = 48          # column of the vertical step edge
LEVELS = (0.2, 0.5)
NOISE = 0.03

BATCH = r'''
import json, traceback
from gi.repository import Gimp, Gio, Gegl

HERE = {here!r}
report = {{}}
pdb = Gimp.get_pdb()

def pixels(drawable):
    w, h = drawable.get_width(), drawable.get_height()
    rect = Gegl.Rectangle.new(0, 0, w, h)
    return bytes(drawable.get_buffer().get(rect, 1.0, "RGB float", Gegl.AbyssPolicy.CLAMP))

def load_raw(path):
    proc = pdb.lookup_procedure("file-nnraw-raw-load")
    cfg = proc.create_config()
    cfg.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
    cfg.set_property("file", Gio.File.new_for_path(path))
    res = proc.run(cfg)
    entry = {{"status": res.index(0).value_nick}}
    if res.index(0) == Gimp.PDBStatusType.SUCCESS:
        img = res.index(1)
        layers = img.get_layers()
        entry.update(width=img.get_width(), height=img.get_height(),
                     precision=img.get_precision().value_nick, base=img.get_base_type().value_nick,
                     layers=len(layers))
        with open(path + ".gimp.f32", "wb") as f:
            f.write(pixels(layers[0]))
    else:
        entry["error"] = pdb.get_last_error()
    return entry

try:
    # 1. the denoise filter on a float linear image
    w = h = {size}
    img = Gimp.Image.new_with_precision(w, h, Gimp.ImageBaseType.RGB, Gimp.Precision.FLOAT_LINEAR)
    layer = Gimp.Layer.new(img, "noisy", w, h, Gimp.ImageType.RGB_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
    img.insert_layer(layer, None, 0)
    buf = layer.get_buffer()
    buf.set(Gegl.Rectangle.new(0, 0, w, h), "RGB float", open(HERE + "/noisy.f32", "rb").read())
    buf.flush()
    proc = pdb.lookup_procedure("plug-in-nnraw-denoise")
    cfg = proc.create_config()
    cfg.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
    cfg.set_property("image", img)
    cfg.set_core_object_array("drawables", [layer])
    cfg.set_property("noise-level", {noise})
    res = proc.run(cfg)
    report["filter"] = {{"status": res.index(0).value_nick, "error": pdb.get_last_error()}}
    with open(HERE + "/denoised.f32", "wb") as f:
        f.write(pixels(layer))

    # 1b. strength 0 (nnraw's --strength): the layer comes back unchanged
    layer0 = Gimp.Layer.new(img, "strength 0", w, h, Gimp.ImageType.RGB_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
    img.insert_layer(layer0, None, 0)
    buf = layer0.get_buffer()
    buf.set(Gegl.Rectangle.new(0, 0, w, h), "RGB float", open(HERE + "/noisy.f32", "rb").read())
    buf.flush()
    cfg = proc.create_config()
    cfg.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
    cfg.set_property("image", img)
    cfg.set_core_object_array("drawables", [layer0])
    cfg.set_property("noise-level", {noise})
    cfg.set_property("strength", 0.0)
    res = proc.run(cfg)
    report["filter0"] = {{"status": res.index(0).value_nick, "error": pdb.get_last_error()}}
    with open(HERE + "/strength0.f32", "wb") as f:
        f.write(pixels(layer0))

    # 2. the raw loader through the PDB
    report["load"] = {{name: load_raw(HERE + "/" + name) for name in {raw_names!r}}}

except Exception:
    report["python-error"] = traceback.format_exc()
with open(HERE + "/report.json", "w") as f:
    json.dump(report, f)
'''


def _noisy_image(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    clean = np.empty((SIZE, SIZE, 3), np.float32)
    clean[:, :EDGE] = LEVELS[0]
    clean[:, EDGE:] = LEVELS[1]
    clean *= np.array([1.0, 0.9, 1.1], np.float32)     # a colour cast: channels differ
    noisy = clean + rng.normal(0.0, NOISE, clean.shape).astype(np.float32)
    return clean, noisy


@pytest.fixture(scope="module")
def gimp_run(tmp_path_factory):
    """Install the plug-in into a fresh profile, run gimp-console-3.0 once; returns (folder, report, clean, noisy)."""
    from chroot import chroot_for_tests, run_in_chroot

    from nnraw.install_plugin import install

    from conftest import shared_file

    raw = shared_file("tinydng_colorchart_Canon550D_MagicLantern.dng")
    root = chroot_for_tests()
    here = tmp_path_factory.mktemp("gimp")
    require_subcommand(write_nnraw_command(here), "convert")
    profile = here / "profile"
    install("gimp", profile)
    raw_names = ["canon.dng", "it's a test ü.dng", "notes.png", "busy.dng"]
    shutil.copyfile(raw, here / raw_names[0])
    shutil.copyfile(raw, here / raw_names[1])
    shutil.copyfile(raw.parent / "halide_bayer_small.png", here / raw_names[2])
    write_bayer_dng(here / raw_names[3])            # no ISO, nothing flat: nnraw notes that it assumes ISO 100
    clean, noisy = _noisy_image(np.random.default_rng(7))
    (here / "noisy.f32").write_bytes(noisy.tobytes())
    batch = here / "batch.py"
    batch.write_text(BATCH.format(here=str(here), size=SIZE, noise=NOISE, raw_names=raw_names))
    proc = run_in_chroot(
        root, ["gimp-console-3.0", "-i", "--batch-interpreter=python-fu-eval",
               "-b", f"exec(open({str(batch)!r}).read())", "--quit"],
        binds=[here, *python_binds()], env={"GIMP3_DIRECTORY": str(profile), "HOME": str(here)}, timeout=900)
    report_path = here / "report.json"
    assert report_path.exists(), f"GIMP wrote no report (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    report = json.loads(report_path.read_text())
    report["console"] = proc.stdout + proc.stderr
    print(json.dumps(report, indent=1))
    assert "python-error" not in report, report["python-error"] + proc.stderr
    return here, report, clean, noisy


def test_gimp_filter_reduces_noise_keeps_mean_and_edges(gimp_run):
    here, report, clean, noisy = gimp_run
    out = np.frombuffer((here / "denoised.f32").read_bytes(), np.float32).reshape(noisy.shape)
    if report["filter"]["status"] != "success":
        np.testing.assert_array_equal(out, noisy, err_msg="a failed filter must leave the layer unchanged")
        error = str(report["filter"]["error"])
        assert error.startswith("nnraw: "), error
        pytest.fail(f"the filter failed: {error}")
    flat = np.r_[4:EDGE - 8, EDGE + 8:SIZE - 4]
    noise_before = (noisy - clean)[4:-4, flat].std()
    noise_after = (out - clean)[4:-4, flat].std()
    print(f"noise std before {noise_before:.4f}, after {noise_after:.4f}")
    assert noise_after < 0.6 * noise_before
    np.testing.assert_allclose(out.mean(axis=(0, 1)), noisy.mean(axis=(0, 1)), atol=0.01)
    step_true = (clean[:, EDGE + 2:EDGE + 6] - clean[:, EDGE - 6:EDGE - 2]).mean()
    step_out = (out[:, EDGE + 2:EDGE + 6] - out[:, EDGE - 6:EDGE - 2]).mean()
    assert abs(step_out - step_true) < 0.1 * step_true, (step_out, step_true)
    # the edge stays sharp: 90 % of the step happens within 3 pixels
    profile = out[8:-8].mean(axis=(0, 2))
    lo, hi = profile[EDGE - 6], profile[EDGE + 5]
    assert abs(profile[EDGE + 1] - profile[EDGE - 2]) > 0.9 * (hi - lo)


def test_gimp_strength_zero_leaves_the_layer_unchanged(gimp_run):
    """The filter's Strength maps to nnraw's --strength: 0 gives the layer back bit for bit."""
    here, report, clean, noisy = gimp_run
    assert report["filter0"]["status"] == "success", report["filter0"]
    out = np.frombuffer((here / "strength0.f32").read_bytes(), np.float32).reshape(noisy.shape)
    np.testing.assert_array_equal(out, noisy)


def test_gimp_loader_opens_raw_as_linear_float(gimp_run):
    import rawpy

    here, report, _, _ = gimp_run
    with rawpy.imread(str(here / "canon.dng")) as raw:
        width, height = raw.sizes.width, raw.sizes.height
        if raw.sizes.flip in (5, 6):
            width, height = height, width
    for name in ("canon.dng", "it's a test ü.dng"):
        entry = report["load"][name]
        assert entry["status"] == "success", entry
        assert (entry["width"], entry["height"]) == (width, height)
        assert entry["precision"] == "float-linear" and entry["base"] == "rgb" and entry["layers"] == 1
        pixels = np.frombuffer((here / f"{name}.gimp.f32").read_bytes(), np.float32).reshape(height, width, 3)
        assert np.isfinite(pixels).all()
        means = pixels.mean(axis=(0, 1))
        assert (0.01 < means).all() and (means < 1.0).all(), means
        assert pixels.max() > 2 * means.max(), "a colour chart has bright patches"
    a = np.frombuffer((here / "canon.dng.gimp.f32").read_bytes(), np.float32)
    b = np.frombuffer((here / "it's a test ü.dng.gimp.f32").read_bytes(), np.float32)
    np.testing.assert_array_equal(a, b)


def test_gimp_loader_shows_nnraw_notes(gimp_run):
    """nnraw's notes on a photo (here: it had to assume ISO 100) reach the photographer as GIMP messages."""
    _, report, _, _ = gimp_run
    entry = report["load"]["busy.dng"]
    assert entry["status"] == "success", entry
    assert "busy.dng" in report["console"] and "assuming ISO 100" in report["console"], report["console"][-2000:]


def test_gimp_loader_reports_nnraw_errors(gimp_run):
    _, report, _, _ = gimp_run
    entry = report["load"]["notes.png"]
    assert entry["status"] == "execution-error", entry
    assert "notes.png" in str(entry["error"]) and "not a raw" in str(entry["error"]), entry

