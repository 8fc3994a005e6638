"""Speed of nnraw's fused PReLU against torch.nn.functional.prelu (+ autograd), side by side.

The size is the reference system's training batch: 64 patches of 31x31 with 64 channels (the output
of the first conv layer). ``cases(device)`` is imported by bench/ops.py; run this file alone with

    PYTHONPATH=python python bench/ops_prelu.py [--device cpu|cuda] [--dtype float32|float16|bfloat16]
                                                [--threads N]
"""

from __future__ import annotations

import argparse
import statistics

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
    if channels_last:  # a channels_last network also back-propagates channels_last gradients
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.full((SIZE[1],), 0.1, device=device, dtype=dtype)
    grad = torch.randn(SIZE, generator=gen).to(device=device, dtype=dtype)
    if channels_last:
        grad = grad.contiguous(memory_format=torch.channels_last)
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


def compare(case: dict, device: str, min_run_time: float = 1.0, rounds: int = 5) -> tuple[float, float]:
    """Median seconds per iteration of the baseline and of nnraw, measured in alternating rounds.

    Alternating keeps a busy machine's drifting load from favouring whichever side ran first.
    """
    from torch.utils import benchmark

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    samples = {"baseline": [], "nnraw": []}
    for name in samples:
        case[name]()  # warm up
    sync()
    for _ in range(rounds):
        for name in samples:
            timer = benchmark.Timer(stmt="fn(); sync()", globals={"fn": case[name], "sync": sync})
            samples[name].append(timer.blocked_autorange(min_run_time=min_run_time / rounds).median)
    return statistics.median(samples["baseline"]), statistics.median(samples["nnraw"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--min-run-time", type=float, default=2.0, help="seconds per measurement and side")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"{torch.get_num_threads()} CPU threads"
    print(f"torch {torch.__version__}, {where}, dtype {args.dtype}")
    print(f"{'case':8s} {'size':26s} {'baseline':>10s} {'ms':>9s} {'nnraw ms':>9s} {'speed-up':>9s}")
    for channels_last in (False, True):
        for case in cases(args.device, dtype, channels_last):
            base, ours = compare(case, args.device, args.min_run_time)
            print(f"{case['case']:8s} {case['size']:26s} {case['baseline_name']:>10s} {base * 1e3:9.3f} "
                  f"{ours * 1e3:9.3f} {base / ours:8.2f}x")


if __name__ == "__main__":
    main()
