"""Each compiled op against its plain-PyTorch equivalent, side by side in one run.

    python bench/ops.py [--device cpu|cuda] [--min-run-time 1.0] [--only prelu,ms_ssim,edge_aware_demosaic]

The cases come from bench/ops_<op>.py (each `cases(device)` returns dicts with a baseline and the nnraw
callable). Ratios > 1 mean nnraw is faster. Figures go into docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import platform
from pathlib import Path

import torch
import torch.utils.benchmark as tb

HERE = Path(__file__).resolve().parent
OP_MODULES = ["ops_prelu", "ops_ms_ssim", "ops_demosaic"]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _time(fn, device: str, min_run_time: float) -> float:
    fn()  # warm-up (and torch.compile / allocator caches)
    if device == "cuda":
        torch.cuda.synchronize()

    def run():
        fn()
        if device == "cuda":
            torch.cuda.synchronize()

    return tb.Timer(stmt="run()", globals={"run": run}).blocked_autorange(min_run_time=min_run_time).median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--min-run-time", type=float, default=1.0)
    parser.add_argument("--only", default="", help="comma-separated op names")
    args = parser.parse_args()

    from nnraw.ops import build_info

    info = build_info()
    print(f"# nnraw ops benchmark, {datetime.date.today()}, {platform.node()}, device {args.device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.device == "cuda":
        print(f"# GPU: {torch.cuda.get_device_name()}")
    print(f"# compiled library: {info['compiled_library']}, CUDA kernels: {info['built_with_cuda']}\n")
    print("| op | case | size | baseline | baseline ms | nnraw ms | speed-up | throughput |")
    print("|---|---|---|---|---:|---:|---:|---|")
    only = {s for s in args.only.split(",") if s}
    for name in OP_MODULES:
        if not (HERE / f"{name}.py").exists():
            continue
        for case in _load(name).cases(args.device):
            if only and case["op"] not in only:
                continue
            t_base = _time(case["baseline"], args.device, args.min_run_time)
            t_ours = _time(case["nnraw"], args.device, args.min_run_time)
            throughput = ""
            if "pixels" in case:
                throughput = f"{case['pixels'] / t_ours / 1e9:.2f} GP/s (baseline {case['pixels'] / t_base / 1e9:.2f})"
            print(f"| {case['op']} | {case['case']} | {case['size']} | {case['baseline_name']} | "
                  f"{t_base * 1e3:.2f} | {t_ours * 1e3:.2f} | {t_base / t_ours:.2f}x | {throughput} |", flush=True)


if __name__ == "__main__":
    main()
