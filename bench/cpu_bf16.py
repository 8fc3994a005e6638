"""bfloat16 inference on the CPU for the joint default (issue #17: "bfloat16 only where the CPU has
AVX512_BF16, detected at run time, and only if the PSNR change is <= 0.05 dB; float32 elsewhere").

Two figures, side by side in one run:
- speed: the network on one tile (``--tile`` px plus its halo), float32 channels_last against
  bfloat16 autocast (channels_last), interleaved, best of ``--repeats``;
- quality: nnraw.training.evaluate's protocol (held-out crops, neutral and tungsten camera, ISO 100 and
  the NVIDIA level), the same network in float32 and under bfloat16 autocast: the sRGB PSNR change.

    .venv/bin/python bench/cpu_bf16.py --threads 2
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn


class Autocast(nn.Module):
    """``net`` run under CPU bfloat16 autocast; output float32; the attributes nnraw.infer reads."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.halo, self.noise_conditioned = net.halo, net.noise_conditioned
        self.domain = getattr(net, "domain", "linear")

    def forward(self, rgb, sigma=None):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.net(rgb, sigma).float()


def cpu_has_avx512_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return "avx512_bf16" in f.read()
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--crops", type=int, default=2, help="held-out crops per source")
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)

    from nnraw.models import load_model
    from nnraw.models.bayer_joint import bind_pattern
    from nnraw.training import evaluate

    torch.set_num_threads(args.threads)
    net = bind_pattern(load_model("default"), "RGGB").eval()
    net = net.to(memory_format=torch.channels_last)
    half = Autocast(net)
    print(f"CPU avx512_bf16: {cpu_has_avx512_bf16()}; torch {torch.__version__}; threads {args.threads}")

    s = args.tile + 2 * net.halo
    x = torch.rand(1, 3, s, s).contiguous(memory_format=torch.channels_last)
    sig = (x * 0.02).contiguous(memory_format=torch.channels_last)
    best = {"float32": float("inf"), "bfloat16": float("inf")}
    with torch.inference_mode():
        net(x, sig), half(x, sig)                                   # warm-up
        for _ in range(args.repeats):
            for name, fn in (("float32", net), ("bfloat16", half)):
                t = time.perf_counter()
                fn(x, sig)
                best[name] = min(best[name], time.perf_counter() - t)
    mp = args.tile * args.tile / 1e6
    for name, t in best.items():
        print(f"{name:8s}: {t:.2f} s per {args.tile}x{args.tile} tile = {t / mp:.2f} s/MP -> {24 * t / mp:.0f} s per 24 MP")
    print(f"bfloat16 / float32 time ratio: {best['bfloat16'] / best['float32']:.3f}")

    rows = []
    for source in evaluate.HELD_OUT:
        for k, (_, scene) in enumerate(evaluate.scenes(source, args.crops, args.crop)):
            for wb_name in ("neutral", "tungsten"):
                wb = evaluate.WB_CONDITIONS[wb_name]
                cam = evaluate.camera_rgb(scene, wb)
                truth = evaluate.render(cam, wb)
                for li, level in enumerate(("iso100", "nvidia")):
                    pre = evaluate.pre_demosaic(evaluate.noisy_mosaic(cam, level, seed=1000 * k + li), wb)
                    with torch.inference_mode():
                        a = evaluate.psnr(evaluate.render(evaluate.network(net, pre, wb, level), wb), truth)
                        b = evaluate.psnr(evaluate.render(evaluate.network(half, pre, wb, level), wb), truth)
                    rows.append((source, wb_name, level, a, b))
    print("| source | white balance | level | float32 dB | bfloat16 dB | change |")
    print("|---|---|---|---:|---:|---:|")
    cells = {}
    for source, wb_name, level, a, b in rows:
        cells.setdefault((source, wb_name, level), []).append((a, b))
    for (source, wb_name, level), v in cells.items():
        a, b = float(np.mean([x[0] for x in v])), float(np.mean([x[1] for x in v]))
        print(f"| {source} | {wb_name} | {level} | {a:.2f} | {b:.2f} | {b - a:+.3f} |")
    worst = min(float(np.mean([x[1] - x[0] for x in v])) for v in cells.values())
    print(f"worst PSNR change under bfloat16: {worst:+.3f} dB (issue #17 allows -0.05)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
