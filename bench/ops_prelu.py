"""Speed of nnraw's fused PReLU against torch.nn.functional.prelu (+ autograd), side by side.

The size is the reference system's training batch: 64 patches of 31x31 with 64 channels (the output
of the first conv layer). ``cases(device)`` is imported by bench/ops.py; run this file alone with

    PYTHONPATH=python python bench/ops_prelu.py [--device cpu|cuda] [--dtype float32|float16|bfloat16]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from nnraw.ops.prelu import prelu

SIZE = (64, 64, 31, 31)


def cases(device: str, dtype: torch.dtype = torch.float32, channels_last: bool = False) -> list[dict]:
    """Benchmark cases: forward, and forward + backward, for F.prelu and nnraw's prelu.

    Each callable runs one iteration (including the backward for "fwd+bwd") on tensors made here.
    """
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(SIZE, generator=gen).to(device=device, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.full((SIZE[1],), 0.1, device=device, dtype=dtype)
    grad = torch.randn(SIZE, generator=gen).to(device=device, dtype=dtype)
    x_req = x.detach().requires_grad_()
    w_req = weight.detach().requires_grad_()
    size = "x".join(map(str, SIZE)) + (" channels_last" if channels_last else "")

    def fwd(fn):
        def run():
            with torch.no_grad():
                fn(x, weight)
        return run

    def fwd_bwd(fn):
        def run():
            y = fn(x_req, w_req)
            torch.autograd.grad(y, (x_req, w_req), grad)
        return run

    return [
        {"op": "prelu", "case": "fwd", "size": size, "baseline_name": "F.prelu",
         "baseline": fwd(F.prelu), "nnraw": fwd(prelu)},
        {"op": "prelu", "case": "fwd+bwd", "size": size, "baseline_name": "F.prelu",
         "baseline": fwd_bwd(F.prelu), "nnraw": fwd_bwd(prelu)},
    ]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    from torch.utils import benchmark

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--min-run-time", type=float, default=1.0, help="seconds per measurement")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    print(f"torch {torch.__version__}, device {args.device}, dtype {args.dtype}, threads {torch.get_num_threads()}")
    print(f"{'case':8s} {'size':26s} {'baseline ms':>12s} {'nnraw ms':>9s} {'speed-up':>9s}")
    for channels_last in (False, True):
        for case in cases(args.device, dtype, channels_last):
            times = {}
            for name in ("baseline", "nnraw"):
                fn = case[name]
                fn()  # warm up (and compile-free first call)
                _sync(args.device)
                timer = benchmark.Timer(stmt="fn(); sync()", globals={"fn": fn, "sync": lambda: _sync(args.device)})
                times[name] = timer.blocked_autorange(min_run_time=args.min_run_time).median
            print(f"{case['case']:8s} {case['size']:26s} {times['baseline'] * 1e3:12.3f} {times['nnraw'] * 1e3:9.3f} "
                  f"{times['baseline'] / times['nnraw']:8.2f}x")


if __name__ == "__main__":
    main()
