"""Speed of the MS-SSIM ops against their baselines, side by side in one run.

    PYTHONPATH=python python bench/ops_ms_ssim.py [--device cpu|cuda] [--threads N] [--min-time S] [--rounds R]

Cases: full-image MS-SSIM (8x3x256x256) against pytorch_msssim (+ autograd for fwd+bwd), and the
central-pixel mixed loss (64x3x31x31 patches) against its pure-PyTorch reference (+ autograd).
``cases(device)`` is also what a combined benchmark runner imports.
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.utils.benchmark as benchmark


def _inputs(shape, device, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=gen)
    y = (x + 0.05 * torch.randn(shape, generator=gen)).clamp(0, 1)
    return x.to(device), y.to(device)


def _fwd_bwd(fn, x, y):
    """A callable running fn(x', y).sum().backward() with x' a leaf that requires grad."""
    leaf = x.detach().clone().requires_grad_()

    def run():
        leaf.grad = None
        fn(leaf, y).sum().backward()
        return leaf.grad

    return run


def cases(device: str = "cpu") -> list[dict]:
    """Benchmark cases: dicts with op, case, size, baseline_name, baseline (callable), nnraw (callable)."""
    import pytorch_msssim

    from nnraw.ops import ms_ssim as mss

    out = []
    size = (8, 3, 256, 256)
    x, y = _inputs(size, device)

    def msssim_base(a, b):
        return pytorch_msssim.ms_ssim(a, b, data_range=1.0, size_average=False)

    def msssim_ours(a, b):
        return mss.ms_ssim(a, b, 1.0)

    tag = "x".join(map(str, size))
    out.append(dict(op="ms_ssim", case="fwd", size=tag, baseline_name="pytorch_msssim",
                    baseline=lambda: msssim_base(x, y), nnraw=lambda: msssim_ours(x, y)))
    out.append(dict(op="ms_ssim", case="fwd+bwd", size=tag, baseline_name="pytorch_msssim",
                    baseline=_fwd_bwd(msssim_base, x, y), nnraw=_fwd_bwd(msssim_ours, x, y)))

    size = (64, 3, 31, 31)
    a, b = _inputs(size, device, seed=1)
    tag = "x".join(map(str, size))

    def center_base(p, t):
        return mss.center_ms_ssim_l1_reference(p, t, 0.84)

    def center_ours(p, t):
        return mss.center_ms_ssim_l1(p, t, 0.84)

    out.append(dict(op="center_ms_ssim_l1", case="fwd", size=tag, baseline_name="pure-torch reference",
                    baseline=lambda: center_base(a, b), nnraw=lambda: center_ours(a, b)))
    out.append(dict(op="center_ms_ssim_l1", case="fwd+bwd", size=tag, baseline_name="pure-torch reference",
                    baseline=_fwd_bwd(center_base, a, b), nnraw=_fwd_bwd(center_ours, a, b)))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--min-time", type=float, default=2.0, help="seconds of timing per op and case")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per case")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from nnraw.ops import format_build_info

    print(format_build_info().splitlines()[0])
    print(f"device {args.device}, {args.threads} thread(s), torch {torch.__version__}")
    header = f"{'op':18s} {'case':8s} {'size':14s} {'baseline':22s} {'baseline ms':>11s} {'nnraw ms':>9s} {'speed-up':>8s}"
    print(header)
    print("-" * len(header))
    for c in cases(args.device):
        # Interleaved rounds (baseline, nnraw, baseline, ...) so that a busy machine slows both alike;
        # the speed-up is the median of the per-round ratios.
        times = {"baseline": [], "nnraw": []}
        for who in times:
            c[who]()  # warm-up (first-call allocations)
        for _ in range(args.rounds):
            for who in times:
                timer = benchmark.Timer(stmt="fn()", globals={"fn": c[who]}, num_threads=args.threads)
                times[who].append(timer.blocked_autorange(min_run_time=args.min_time / args.rounds).median * 1e3)
        ratio = statistics.median(b / n for b, n in zip(times["baseline"], times["nnraw"]))
        print(f"{c['op']:18s} {c['case']:8s} {c['size']:14s} {c['baseline_name']:22s} "
              f"{statistics.median(times['baseline']):11.2f} {statistics.median(times['nnraw']):9.2f} {ratio:7.2f}x")

if __name__ == "__main__":
    main()
