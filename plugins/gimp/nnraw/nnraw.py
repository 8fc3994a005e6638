#!/usr/bin/env python3
"""nnraw for GIMP 3: a denoise filter and a raw loader, both running the `nnraw` command line.

* Filters > Enhance > Noise > nnraw Denoise...  (procedure ``plug-in-nnraw-denoise``)
  Denoises the active RGB layer (within the selection, if any) as ONE undo step. The layer's pixels are
  read as linear float RGB (GIMP converts from whatever precision the image has), written to a
  float32 TIFF, denoised by ``nnraw denoise-rgb IN.tif OUT.tif --linear (--noise-std N | --iso N)
  --strength S`` and
  written back through the shadow buffer (merge_shadow keeps the selection's soft edges).
* Raw loader (procedure ``file-nnraw-raw-load``; choose it in Edit > Preferences > Image Import &
  Export > Raw Image Importer): ``nnraw convert RAW -o tmp.dng --json`` then
  ``nnraw dng-to-tiff tmp.dng tmp.tif``; the result opens as a 32-bit float LINEAR image in linear sRGB.

Why the TIFFs are read and written here with the standard library (struct/array) rather than with
GIMP's TIFF export or tifffile: GIMP's own Python (Windows installer, flatpak) has neither numpy nor
tifffile; GIMP's TIFF loader treats a float TIFF as non-linear (sRGB), which would silently change
the pixels; and an uncompressed interleaved float32 TIFF is a fixed ~150-byte header plus the raw
samples, so writing it and reading nnraw's (also uncompressed) output is exact and needs no codec.

Which nnraw runs: $NNRAW_COMMAND (a command line, e.g. "/path/venv/bin/python -m nnraw"), else
nnraw-command.json beside this file (written by ``nnraw install-plugin gimp``), else ``nnraw`` on PATH.
The plug-in contains no image processing of its own.
"""

import array
import json
import os
import shlex
import shutil
import struct
import subprocess
import sys
import tempfile
import time

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, GLib, GObject  # noqa: E402

DENOISE_PROC = "plug-in-nnraw-denoise"
LOAD_PROC = "file-nnraw-raw-load"
COMMAND_FILE = "nnraw-command.json"

RAW_EXTENSIONS = ("3fr,ari,arw,bay,cr2,cr3,crw,dcr,dcs,dng,drf,eip,erf,fff,iiq,k25,kdc,mdc,mef,mos,mrw,"
                  "nef,nrw,orf,ori,pef,ptx,pxn,r3d,raf,raw,rw2,rwl,rwz,sr2,srf,srw,x3f")
# Formats with a signature of their own; TIFF-based raws (DNG, NEF, PEF, ARW...) are matched by extension
# only, so ordinary TIFF files keep opening with GIMP's TIFF loader.
RAW_MAGICS = ",".join([
    "0,string,II*\\0\\020\\0\\0\\0CR",      # Canon CR2
    "4,string,ftypcrx",                      # Canon CR3
    "0,string,FUJIFILMCCD-RAW",              # Fujifilm RAF
    "0,string,IIRO,0,string,IIRS,0,string,MMOR",  # Olympus ORF
    "0,string,IIU\\0",                       # Panasonic RW2
])


class NnrawError(Exception):
    """nnraw could not be run, or reported a failure (the message is nnraw's own)."""


# -------------------------------------------------------------------------------------------------
# running nnraw
# -------------------------------------------------------------------------------------------------

def nnraw_command():
    """(argv prefix, environment) that run nnraw."""
    env = dict(os.environ)
    if os.environ.get("NNRAW_COMMAND"):
        return shlex.split(os.environ["NNRAW_COMMAND"]), env
    config = os.path.join(os.path.dirname(os.path.abspath(__file__)), COMMAND_FILE)
    if os.path.isfile(config):
        with open(config, encoding="utf-8") as f:
            spec = json.load(f)
        env.pop("PYTHONHOME", None)   # GIMP's bundled Python must not leak into nnraw's interpreter
        for key, value in (spec.get("env") or {}).items():
            if key == "PYTHONPATH" and env.get("PYTHONPATH"):
                value = value + os.pathsep + env["PYTHONPATH"]
            env[key] = value
        return list(spec["command"]), env
    exe = shutil.which("nnraw")
    if exe is None:
        raise NnrawError("the nnraw program was not found: install nnraw and run `nnraw install-plugin gimp`, "
                         "or set NNRAW_COMMAND")
    return [exe], env


def run_nnraw(args, what):
    """Run ``nnraw ARGS`` (an argument list: no shell), pulsing GIMP's progress bar; returns stdout.

    Raises NnrawError with nnraw's last error line when it fails."""
    prefix, env = nnraw_command()
    argv = prefix + list(args)
    Gimp.progress_set_text(what)
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    except OSError as exc:
        raise NnrawError("cannot run {}: {}".format(argv[0], exc)) from exc
    out_chunks, err_chunks = [], []
    # poll so that the progress bar shows life; communicate() with a timeout keeps reading both pipes
    while True:
        try:
            out, err = proc.communicate(timeout=0.25)
            out_chunks.append(out)
            err_chunks.append(err)
            break
        except subprocess.TimeoutExpired:
            Gimp.progress_pulse()
    stdout = b"".join(c for c in out_chunks if c).decode("utf-8", "replace")
    stderr = b"".join(c for c in err_chunks if c).decode("utf-8", "replace")
    if proc.returncode != 0:
        lines = [line for line in stderr.splitlines() if line.strip() and "Warning" not in line]
        message = lines[-1].strip() if lines else "nnraw exited with status {}".format(proc.returncode)
        raise NnrawError(message)
    return stdout


# -------------------------------------------------------------------------------------------------
# float32 RGB TIFF, uncompressed (stdlib only)
# -------------------------------------------------------------------------------------------------

_SHORT, _LONG = 3, 4


def write_float_tiff(path, width, height, rgb_bytes):
    """Write interleaved float32 RGB (native byte order, as GEGL gives it) as an uncompressed TIFF."""
    if len(rgb_bytes) != width * height * 12:
        raise ValueError("write_float_tiff: expected {} bytes for {}x{} RGB float32, got {}".format(
            width * height * 12, width, height, len(rgb_bytes)))
    order = "<" if sys.byteorder == "little" else ">"
    n_tags = 11
    extra = 8 + 2 + n_tags * 12 + 4          # BitsPerSample and SampleFormat values follow the IFD
    data_offset = extra + 12
    tags = [
        (256, _LONG, 1, width), (257, _LONG, 1, height), (258, _SHORT, 3, extra), (259, _SHORT, 1, 1),
        (262, _SHORT, 1, 2), (273, _LONG, 1, data_offset), (277, _SHORT, 1, 3), (278, _LONG, 1, height),
        (279, _LONG, 1, len(rgb_bytes)), (284, _SHORT, 1, 1), (339, _SHORT, 3, extra + 6),
    ]
    head = (b"II" if order == "<" else b"MM") + struct.pack(order + "HI", 42, 8)
    ifd = struct.pack(order + "H", n_tags)
    for tag, typ, count, value in tags:
        if typ == _SHORT and count == 1:
            ifd += struct.pack(order + "HHIHH", tag, typ, count, value, 0)
        else:
            ifd += struct.pack(order + "HHII", tag, typ, count, value)
    ifd += struct.pack(order + "I", 0)
    values = struct.pack(order + "6H", 32, 32, 32, 3, 3, 3)
    with open(path, "wb") as f:
        f.write(head + ifd + values)
        f.write(rgb_bytes)


def read_float_tiff(path):
    """Read an uncompressed, interleaved float32 RGB(A) TIFF; returns (width, height, RGB float32 bytes).

    Raises ValueError naming the file for anything else (compressed, tiled, planar, not float)."""
    with open(path, "rb") as f:
        blob = f.read()
    if blob[:4] not in (b"II*\0", b"MM\0*"):
        raise ValueError("{}: not a TIFF file".format(path))
    order = "<" if blob[:2] == b"II" else ">"
    (ifd,) = struct.unpack_from(order + "I", blob, 4)
    (count,) = struct.unpack_from(order + "H", blob, ifd)
    sizes = {1: 1, 2: 1, 3: 2, 4: 4, 16: 8}
    fmt = {1: "B", 2: "B", 3: "H", 4: "I", 16: "Q"}
    tags = {}
    for i in range(count):
        tag, typ, n, raw = struct.unpack_from(order + "HHI4s", blob, ifd + 2 + 12 * i)
        if typ not in sizes:
            continue
        size = sizes[typ] * n
        where = ifd + 2 + 12 * i + 8 if size <= 4 else struct.unpack(order + "I", raw)[0]
        tags[tag] = list(struct.unpack_from(order + fmt[typ] * n, blob, where))
    need = {256: "ImageWidth", 257: "ImageLength", 273: "StripOffsets", 279: "StripByteCounts"}
    for tag, name in need.items():
        if tag not in tags:
            raise ValueError("{}: TIFF has no {} (tiled TIFFs are not supported)".format(path, name))
    width, height = tags[256][0], tags[257][0]
    spp = tags.get(277, [1])[0]
    bits = tags.get(258, [1])
    checks = [
        (tags.get(259, [1])[0] == 1, "compressed"),
        (tags.get(284, [1])[0] == 1, "planar (not interleaved)"),
        (spp in (3, 4), "{} samples per pixel".format(spp)),
        (all(b == 32 for b in bits), "{} bits per sample".format(bits)),
        (all(s == 3 for s in tags.get(339, [1])), "not floating point"),
    ]
    for ok, what in checks:
        if not ok:
            raise ValueError("{}: expected an uncompressed float32 RGB TIFF, got {}".format(path, what))
    data = b"".join(blob[o:o + n] for o, n in zip(tags[273], tags[279]))
    if len(data) != width * height * spp * 4:
        raise ValueError("{}: TIFF strips hold {} bytes, expected {}".format(path, len(data), width * height * spp * 4))
    samples = array.array("f")
    samples.frombytes(data)
    if (order == "<") != (sys.byteorder == "little"):
        samples.byteswap()
    if spp == 4:
        rgb = array.array("f", bytes(4 * 3 * width * height))
        for c in range(3):
            rgb[c::3] = samples[c::4]
        samples = rgb
    return width, height, samples.tobytes()


# -------------------------------------------------------------------------------------------------
# pixels in and out of GIMP
# -------------------------------------------------------------------------------------------------

def read_rgb(drawable, x, y, w, h):
    """Linear float32 RGB bytes of a rectangle, and the alpha samples (array) or None."""
    rect = Gegl.Rectangle.new(x, y, w, h)
    buf = drawable.get_buffer()
    if not drawable.has_alpha():
        return bytes(buf.get(rect, 1.0, "RGB float", Gegl.AbyssPolicy.CLAMP)), None
    rgba = array.array("f")
    rgba.frombytes(bytes(buf.get(rect, 1.0, "RGBA float", Gegl.AbyssPolicy.CLAMP)))
    rgb = array.array("f", bytes(12 * w * h))
    for c in range(3):
        rgb[c::3] = rgba[c::4]
    return rgb.tobytes(), rgba[3::4]


def write_rgb(drawable, x, y, w, h, rgb_bytes, alpha):
    """Write linear float32 RGB (and the untouched alpha) through the shadow buffer and merge it."""
    rect = Gegl.Rectangle.new(x, y, w, h)
    shadow = drawable.get_shadow_buffer()
    if alpha is None:
        shadow.set(rect, "RGB float", rgb_bytes)
    else:
        rgb = array.array("f")
        rgb.frombytes(rgb_bytes)
        rgba = array.array("f", bytes(16 * w * h))
        for c in range(3):
            rgba[c::4] = rgb[c::3]
        rgba[3::4] = alpha
        shadow.set(rect, "RGBA float", rgba.tobytes())
    shadow.flush()
    drawable.merge_shadow(True)
    drawable.update(x, y, w, h)


def _error(procedure, message, status=Gimp.PDBStatusType.EXECUTION_ERROR):
    return procedure.new_return_values(status, GLib.Error("nnraw: " + message))


# -------------------------------------------------------------------------------------------------
# the denoise filter
# -------------------------------------------------------------------------------------------------

def denoise(procedure, run_mode, image, drawables, config, data):
    if len(drawables) != 1:
        return _error(procedure, "select exactly one layer to denoise", Gimp.PDBStatusType.CALLING_ERROR)
    drawable = drawables[0]
    if not drawable.is_rgb():
        return _error(procedure, "nnraw Denoise works on RGB layers", Gimp.PDBStatusType.CALLING_ERROR)

    if run_mode == Gimp.RunMode.INTERACTIVE:
        gi.require_version("GimpUi", "3.0")
        from gi.repository import GimpUi

        GimpUi.init(DENOISE_PROC)
        dialog = GimpUi.ProcedureDialog.new(procedure, config, "nnraw Denoise")
        dialog.fill(None)
        if not dialog.run():
            dialog.destroy()
            return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())
        dialog.destroy()

    strength = config.get_property("strength")
    noise_level = config.get_property("noise-level")
    iso = config.get_property("iso")
    found, x, y, w, h = drawable.mask_intersect()
    if not found or w == 0 or h == 0:
        return _error(procedure, "the selection does not touch this layer", Gimp.PDBStatusType.CALLING_ERROR)

    Gimp.progress_init("nnraw: denoising")
    workdir = tempfile.mkdtemp(prefix="gimp-nnraw-")
    try:
        rgb, alpha = read_rgb(drawable, x, y, w, h)
        src, dst = os.path.join(workdir, "in.tif"), os.path.join(workdir, "out.tif")
        write_float_tiff(src, w, h, rgb)
        noise = ["--iso", str(iso)] if iso > 0 else ["--noise-std", repr(float(noise_level))]
        noise += ["--strength", repr(float(strength))]
        run_nnraw(["denoise-rgb", src, dst, "--linear"] + noise, "nnraw: denoising {}x{} pixels".format(w, h))
        out_w, out_h, out = read_float_tiff(dst)
        if (out_w, out_h) != (w, h):
            raise NnrawError("denoise-rgb returned {}x{} pixels for a {}x{} input".format(out_w, out_h, w, h))
        image.undo_group_start()
        try:
            write_rgb(drawable, x, y, w, h, out, alpha)
        finally:
            image.undo_group_end()
    except (NnrawError, ValueError, OSError) as exc:
        return _error(procedure, str(exc))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        Gimp.progress_end()
    Gimp.displays_flush()
    return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())


# -------------------------------------------------------------------------------------------------
# the raw loader
# -------------------------------------------------------------------------------------------------

def load_raw(procedure, run_mode, file, metadata, flags, config, data):
    path = file.get_path()
    if path is None:
        return _error(procedure, "{}: only local files can be opened".format(file.get_uri())), flags
    Gimp.progress_init("nnraw: opening {}".format(os.path.basename(path)))
    workdir = tempfile.mkdtemp(prefix="gimp-nnraw-")
    started = time.time()
    try:
        dng, tif = os.path.join(workdir, "image.dng"), os.path.join(workdir, "image.tif")
        report = run_nnraw(["convert", path, "-o", dng, "--json", "--quiet", "--overwrite"],
                           "nnraw: demosaicing and denoising {}".format(os.path.basename(path)))
        try:
            result = json.loads(report)["results"][0]
        except (ValueError, KeyError, IndexError) as exc:
            raise NnrawError("unexpected report from nnraw convert: {!r}".format(report[:200])) from exc
        if not result.get("ok"):
            raise NnrawError(result.get("error") or "nnraw convert failed on {}".format(path))
        for note in result.get("notes") or []:      # what nnraw assumed about the photo (e.g. its noise)
            Gimp.message("nnraw: {}".format(note))
        run_nnraw(["dng-to-tiff", dng, tif], "nnraw: reading the linear DNG")
        w, h, rgb = read_float_tiff(tif)
        image = Gimp.Image.new_with_precision(w, h, Gimp.ImageBaseType.RGB, Gimp.Precision.FLOAT_LINEAR)
        layer = Gimp.Layer.new(image, os.path.basename(path), w, h, Gimp.ImageType.RGB_IMAGE, 100.0,
                               Gimp.LayerMode.NORMAL)
        image.insert_layer(layer, None, 0)
        buf = layer.get_buffer()
        buf.set(Gegl.Rectangle.new(0, 0, w, h), "RGB float", rgb)
        buf.flush()
    except (NnrawError, ValueError, OSError) as exc:
        return _error(procedure, str(exc)), flags
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        Gimp.progress_end()
    print("nnraw: opened {} ({}x{}) in {:.1f} s".format(path, w, h, time.time() - started))
    return Gimp.ValueArray.new_from_values([
        GObject.Value(Gimp.PDBStatusType, Gimp.PDBStatusType.SUCCESS),
        GObject.Value(Gimp.Image, image),
    ]), flags


class Nnraw(Gimp.PlugIn):
    def do_set_i18n(self, name):
        return False

    def do_query_procedures(self):
        return [DENOISE_PROC, LOAD_PROC]

    def do_create_procedure(self, name):
        if name == DENOISE_PROC:
            procedure = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, denoise, None)
            procedure.set_image_types("RGB*")
            procedure.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE)
            procedure.set_menu_label("nnraw _Denoise...")
            procedure.add_menu_path("<Image>/Filters/Enhance/Noise")
            procedure.set_documentation(
                "Denoise with nnraw's network",
                "Denoises the active RGB layer (within the selection) in linear light with "
                "`nnraw denoise-rgb`. Strength (0 to 2) is how hard to denoise, as nnraw's --strength: "
                "0 leaves the layer unchanged, 1 removes the noise level given, 2 denoises twice as hard. "
                "The noise level is the noise standard deviation in linear [0, 1] units; an ISO > 0 uses "
                "nnraw's reference camera noise profile at that ISO instead.",
                name)
            procedure.add_double_argument("strength", "_Strength",
                                          "How hard to denoise: 0 = unchanged, 1 = the noise level given, 2 = twice as hard",
                                          0.0, 2.0, 1.0, GObject.ParamFlags.READWRITE)
            procedure.add_double_argument("noise-level", "_Noise level (std, linear)",
                                          "Noise standard deviation in linear [0, 1] units",
                                          0.0005, 0.5, 0.02, GObject.ParamFlags.READWRITE)
            procedure.add_int_argument("iso", "_ISO (0: use the noise level)",
                                       "ISO of the reference camera noise profile; 0 uses the noise level",
                                       0, 409600, 0, GObject.ParamFlags.READWRITE)
        else:
            procedure = Gimp.LoadProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, load_raw, None)
            procedure.set_menu_label("nnraw raw image")
            procedure.set_documentation(
                "Open a camera raw with nnraw",
                "Demosaics and denoises the raw with `nnraw convert` and opens it as a 32-bit float "
                "linear image in linear sRGB (as-shot white balance, unclipped).",
                name)
            procedure.set_handles_raw(True)
            procedure.set_extensions(RAW_EXTENSIONS)
            procedure.set_magics(RAW_MAGICS)
            procedure.set_mime_types("image/x-dcraw,image/x-adobe-dng")
        procedure.set_attribution("nnraw authors", "nnraw authors (MIT)", "2026")
        return procedure


Gimp.main(Nnraw.__gtype__, sys.argv)
