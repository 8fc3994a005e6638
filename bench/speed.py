"""End-to-end speed and memory of `nnraw convert` on a synthetic raw, per stage, next to demosaicnet.

    PYTHONPATH=python python bench/speed.py                 # 24 MP (4000 x 6000), default model, CPU
    PYTHONPATH=python python bench/speed.py --size 1000x1500 --skip-demosaicnet   # quick look

What it does, in one process (the synthetic DNG is written by a child process first, so its memory
does not count):

1. the stages of nnraw.convert (read, normalise, pre_demosaic + highlights, network, render,
   write_dng, copy_metadata), each timed, with the process's peak RSS (ru_maxrss) after all of them;
   the network stage runs the model's self-ensemble passes as `nnraw convert` does (``--passes``);
2. the network's achieved FLOP/s: 2 x the convolutions' multiply-adds (counted with hooks on one
   tile, times the number of tiles) over the network stage's time, next to the machine's float32
   matmul FLOP/s measured here (torch.mm of 4096 x 4096 matrices);
3. demosaicnet (Gharbi et al. 2016, pip `demosaicnet`, pretrained Bayer model, valid convolutions)
   on the same image and device in tiles of the same size (with the 32-px halo it needs) and the time ratio.

When the model's weights are not available, the same architecture (configs/<name>.toml) runs with
untrained weights (same cost), or else the reference system's 9-5-5 shape; the report says which.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# as `nnraw` itself does (cli.py): transparent huge pages for the allocator, set before torch loads
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
try:                                   # the installed package (`make install`: with its compiled ops) ...
    import nnraw._C  # noqa: E402,F401
except ImportError:                    # ... else the checkout's python/ (the ops' pure-PyTorch references)
    sys.path.insert(0, str(REPO / "python"))

from nnraw import convert  # noqa: E402
from nnraw.highlights import recover_highlights  # noqa: E402
from nnraw.infer import TileGrid, cpu_threads, default_passes, resolve_model, run_tiled, self_ensemble  # noqa: E402
from nnraw.ops import HAVE_COMPILED  # noqa: E402  (False: the ops run their pure-PyTorch references)


def rss_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def write_synthetic_raw(path: Path, h: int, w: int, cfa: str = "bayer") -> None:
    """A Bayer (or X-Trans) DNG of h x w from tests/dng_fixtures.py, written by a child process."""
    call = ("write_bayer_dng(__import__('pathlib').Path(sys.argv[2]), size=(int(sys.argv[3]), int(sys.argv[4])),"
            " make='Pentax', model='K-3', seed=1)" if cfa == "bayer" else
            "write_xtrans_dng(__import__('pathlib').Path(sys.argv[2]), size=(int(sys.argv[3]), int(sys.argv[4])),"
            " seed=1)")
    code = f"import sys; sys.path.insert(0, sys.argv[1]); from dng_fixtures import write_{cfa}_dng; {call}"
    subprocess.run([sys.executable, "-c", code, str(REPO / "tests"), str(path), str(h), str(w)], check=True)


class SeedArchitecture(nn.Module):
    """The reference system's network shape (random weights): the stand-in when `default` is missing."""

    halo = 8
    noise_conditioned = False

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 64, 9), nn.PReLU(64, 0.1), nn.Conv2d(64, 64, 5),
                                  nn.PReLU(64, 0.1), nn.Conv2d(64, 3, 5))

    def forward(self, rgb, sigma=None):
        return self.body(rgb - 0.5) + 0.5


def stand_in(name: str, why: Exception) -> tuple[nn.Module, str]:
    """Untrained network of ``name``'s architecture (configs/<name>.toml), else the seed's 9-5-5 shape."""
    import tomllib

    cfg = REPO / "configs" / f"{name}.toml"
    try:
        from nnraw.models import build_model

        model = build_model(tomllib.loads(cfg.read_text())["model"]).eval()
        return model, f"STAND-IN: {name!r} architecture from {cfg.name} with untrained weights (timing only); weights unavailable: {why}"
    except Exception as exc:  # noqa: BLE001
        return SeedArchitecture().eval(), (f"STAND-IN: seed architecture 9-5-5 (random weights); {name!r} "
                                           f"unavailable: {why}; no config: {exc}")


def conv_macs(model: nn.Module, example: tuple) -> int:
    """Multiply-adds of every Conv2d / ConvTranspose2d in one forward pass on ``example``."""
    total = 0

    def hook(mod, inp, out):
        nonlocal total
        k = mod.weight.shape[2] * mod.weight.shape[3]
        if isinstance(mod, nn.ConvTranspose2d):
            total += inp[0].numel() // inp[0].shape[0] * inp[0].shape[0] * (mod.out_channels // mod.groups) * k
        else:
            total += out.numel() * (mod.in_channels // mod.groups) * k

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    with torch.inference_mode():
        model(*example)
    for h in handles:
        h.remove()
    return total


def matmul_flops(n: int = 4096, reps: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    t0 = time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b)
    return 2 * n ** 3 * reps / (time.perf_counter() - t0)


def time_demosaicnet(h: int, w: int, tile: int, device: torch.device) -> tuple[float, int]:
    """Seconds for demosaicnet over an h x w Bayer image in tile x tile outputs on ``device``, and its MACs."""
    import demosaicnet

    net = demosaicnet.BayerDemosaick(pretrained=True).eval().to(device, memory_format=torch.channels_last)
    halo = 32  # 15 valid 3x3 convs at half resolution + 1 at full: 31 px, rounded up to even
    grid = TileGrid.plan(h, w, tile, halo)
    x = torch.rand(1, 3, grid.th + 2 * halo, grid.tw + 2 * halo, device=device)
    x = x.contiguous(memory_format=torch.channels_last)
    macs_per_tile = conv_macs(net, (x,))
    n = len(grid.origins)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    with torch.inference_mode():
        for _ in range(n):
            net(x)
    sync()
    return time.perf_counter() - t0, macs_per_tile * n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="4000x6000", help="H x W of the synthetic raw (default 24 MP: 4000x6000)")
    ap.add_argument("--model", default="default")
    ap.add_argument("--tile", type=int, default=1024)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    ap.add_argument("--skip-demosaicnet", action="store_true")
    ap.add_argument("--cfa", choices=("bayer", "xtrans"), default="bayer",
                    help="the synthetic raw's CFA (xtrans: run with --model xtrans and --size 4160x6240, 26 MP)")
    ap.add_argument("--precision", choices=("auto", "float32"), default="auto",
                    help="the network's precision (nnraw.infer.PRECISIONS; auto = bfloat16 trunk on AVX512_BF16 CPUs)")
    ap.add_argument("--passes", type=int, default=None,
                    help="self-ensemble passes of the network stage (default: nnraw.infer.default_passes, as nnraw convert)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    h, w = (int(v) for v in args.size.lower().split("x"))
    threads = args.threads or cpu_threads()
    torch.set_num_threads(threads)
    dev = torch.device(args.device)

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "synthetic.dng", Path(tmp) / "out.dng"
        t0 = time.perf_counter()
        write_synthetic_raw(src, h, w, args.cfa)
        print(f"synthetic {h}x{w} raw written in {time.perf_counter() - t0:.1f} s (child process)", flush=True)
        rss_start = rss_peak_mb()

        try:
            model = resolve_model(args.model, dev, 800)
            model_label = args.model
        except Exception as exc:  # noqa: BLE001 - report and use the stand-in
            model, model_label = stand_in(args.model, exc)
        stages: dict[str, float] = {}

        def stage(name, fn, *a, **k):
            t = time.perf_counter()
            out = fn(*a, **k)
            stages[name] = time.perf_counter() - t
            print(f"  {name:14s} {stages[name]:7.2f} s   peak RSS {rss_peak_mb():7.0f} MB", flush=True)
            return out

        raw = stage("read", convert.read, src)
        passes = args.passes or default_passes(model, dev, args.precision)
        unbound = model
        if getattr(model, "needs_pattern", False):   # the joint default re-samples the mosaic: bind its phase
            from nnraw.models.bayer_joint import bind_pattern

            model = bind_pattern(model, raw.pattern)
        mosaic = stage("normalise", convert.normalise_mosaic, raw)
        plain = stage("pre_demosaic", convert.pre_demosaic, mosaic, raw.pattern, raw.wb, device=str(dev))
        del mosaic
        plain = stage("highlights", recover_highlights, plain, raw.wb, inplace=True)
        pattern_bound = model is not unbound
        sigma = None
        if getattr(model, "noise_conditioned", False):
            from nnraw.noise.choose import choose_noise_profile

            prof, _ = choose_noise_profile(raw=raw, iso=800)
            sigma = lambda t: prof.sigma_map(t.clamp(0.0, 1.0))  # noqa: E731
        prepare = (lambda pat: bind_pattern(unbound, pat)) if pattern_bound else (lambda pat: model)  # noqa: E731
        rgb = stage("network", self_ensemble, prepare, plain, sigma, passes=passes,
                    pattern=raw.pattern if pattern_bound else None, tile=args.tile, device=dev, precision=args.precision)
        crop = plain[..., :2048, :2048].clone() if dev.type == "cuda" else None
        del plain
        embedded = stage("render", convert.render_preview, rgb, raw, orient=False, max_size=convert.PREVIEW_MAX_SIZE)
        stage("write_dng", convert.write_dng, dst, rgb, raw, embedded)
        stage("copy_metadata", convert.copy_source_metadata, src, dst)
        rss_peak = rss_peak_mb()

    grid = TileGrid.plan(h, w, args.tile, model.halo, int(getattr(model, "cfa_period", 2)))
    example = torch.rand(1, 3, *grid.padded_shape)
    example_sigma = torch.full_like(example, 0.01) if getattr(model, "noise_conditioned", False) else None
    macs = conv_macs(model, (example.to(dev), None if example_sigma is None else example_sigma.to(dev))) * len(grid.origins) * passes
    net_flops = 2 * macs / stages["network"]
    mm = matmul_flops()
    total = sum(stages.values())
    report = {
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "machine": f"{platform.processor() or platform.machine()}, {cpu_threads()} cores visible, torch {torch.__version__}",
        "threads": threads, "device": str(dev), "image": f"{h}x{w} ({h * w / 1e6:.1f} MP)",
        "model": model_label, "passes": passes, "tile": args.tile, "compiled_ops": HAVE_COMPILED, "precision": args.precision,
        "bfloat16_trunk": any(getattr(m, "trunk_bfloat16", False) for m in model.modules()),
        "stages_s": {k: round(v, 3) for k, v in stages.items()}, "end_to_end_s": round(total, 2),
        "peak_rss_mb": round(rss_peak), "rss_before_pipeline_mb": round(rss_start),
        "network_gmac": round(macs / 1e9, 1), "network_gflops": round(net_flops / 1e9, 1),
        "matmul_gflops": round(mm / 1e9, 1), "network_vs_matmul": round(net_flops / mm, 3),
    }
    if crop is not None:  # reduced precision: PSNR against float32 on a 2048x2048 crop of the image
        ref = run_tiled(model, crop, sigma, tile=args.tile, device=dev, precision="float32")
        for precision in ("float16", "bfloat16"):
            torch.cuda.synchronize()
            t = time.perf_counter()
            low = run_tiled(model, crop, sigma, tile=args.tile, device=dev, precision=precision)
            torch.cuda.synchronize()
            mse = float(((low - ref) ** 2).mean())
            report[f"{precision}_psnr_vs_float32_db"] = round(10 * math.log10(1 / max(mse, 1e-20)), 2)
            report[f"{precision}_crop_s"] = round(time.perf_counter() - t, 3)
    if not args.skip_demosaicnet:
        print("demosaicnet ...", flush=True)
        dn_s, dn_macs = time_demosaicnet(h, w, args.tile, dev)
        report.update({"demosaicnet_s": round(dn_s, 2), "demosaicnet_gmac": round(dn_macs / 1e9, 1),
                       "network_over_demosaicnet_time": round(stages["network"] / dn_s, 3),
                       "end_to_end_over_demosaicnet_time": round(total / dn_s, 3)})
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
