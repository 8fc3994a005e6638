"""Edge-aware pre-demosaic: the compiled op against the vectorised pure-PyTorch reference.

    PYTHONPATH=python python bench/ops_demosaic.py [--device cpu|cuda] [--min-run-time 1.0]

`cases(device)` feeds bench/ops.py; run alone, this prints the same cases side by side with the
speed-up (reference time / nnraw time) and throughput in gigapixels/s (mosaic pixels per second).
Cases: one 24 MP (6000 x 4000) float32 mosaic, the size of a photographer's raw; and a training-like
batch of 64 tiles of 66 x 66 (the seed's tile size) with per-tile white balance.
"""

from __future__ import annotations

import argparse
import datetime
import platform

import torch
import torch.utils.benchmark as tb

OP = "edge_aware_demosaic"
BASELINE = "reference (vectorised torch)"


def _inputs(n: int, h: int, w: int, device: str, per_sample_wb: bool):
    gen = torch.Generator().manual_seed(0)
    mosaic = torch.rand(n, 1, h, w, generator=gen).to(device)
    wb = (0.8 + 1.6 * torch.rand(n if per_sample_wb else 1, 3, generator=gen)).to(device)
    return mosaic, (wb if per_sample_wb else wb[0])


def cases(device: str) -> list[dict]:
    """Benchmark cases: dicts with op, case, size, pixels, baseline_name, baseline(), nnraw()."""
    from nnraw.ops.demosaic import edge_aware_demosaic_reference

    out = []
    for size, (n, h, w), per_sample in (("24MP", (1, 4000, 6000), False), ("64x66x66", (64, 66, 66), True)):
        mosaic, wb = _inputs(n, h, w, device, per_sample)
        out.append({
            "op": OP, "case": "fwd", "size": size, "pixels": n * h * w, "baseline_name": BASELINE,
            "baseline": lambda m=mosaic, g=wb: edge_aware_demosaic_reference(m, "RGGB", g),
            "nnraw": lambda m=mosaic, g=wb: torch.ops.nnraw.edge_aware_demosaic(m, "RGGB", g),
        })
    return out


def _time(fn, device: str, min_run_time: float) -> float:
    def run():
        fn()
        if device == "cuda":
            torch.cuda.synchronize()

    run()  # warm-up
    return tb.Timer(stmt="run()", globals={"run": run}).blocked_autorange(min_run_time=min_run_time).median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--min-run-time", type=float, default=1.0, help="seconds per measurement")
    parser.add_argument("--size", default="", help="only this case size (24MP or 64x66x66)")
    args = parser.parse_args()

    import nnraw.ops  # noqa: F401  (loads the compiled op library)

    print(f"# {OP}, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
          f"{platform.processor() or platform.machine()}, device {args.device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads" + (f", {torch.cuda.get_device_name()}" if args.device == "cuda" else ""))
    print("| case | size | reference ms | nnraw ms | speed-up | nnraw GP/s | reference GP/s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for case in cases(args.device):
        if args.size and case["size"] != args.size:
            continue
        t_ref = _time(case["baseline"], args.device, args.min_run_time)
        t_ours = _time(case["nnraw"], args.device, args.min_run_time)
        print(f"| {case['case']} | {case['size']} | {t_ref * 1e3:.1f} | {t_ours * 1e3:.2f} | {t_ref / t_ours:.1f}x | "
              f"{case['pixels'] / t_ours / 1e9:.3f} | {case['pixels'] / t_ref / 1e9:.4f} |", flush=True)


if __name__ == "__main__":
    main()
