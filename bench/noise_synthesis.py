"""Cost of on-the-fly batch synthesis (make_training_batch) against the pre-demosaic alone.

Run: PYTHONPATH=python python bench/noise_synthesis.py [--n 16] [--size 128] [--repeats 5]
Prints per-batch milliseconds of: mosaic + Poisson-Gaussian noise, the edge-aware pre-demosaic,
and the whole make_training_batch (random profiles, random CFA per sample), as ratios.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

from nnraw.training.dataset import make_training_batch, mosaic
from nnraw.noise.model import add_noise, random_noise_params


def best_of(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", RuntimeWarning)
    from nnraw.ops import HAVE_COMPILED, edge_aware_demosaic

    g = torch.Generator(device=args.device).manual_seed(0)
    clean = torch.rand(args.n, 3, args.size, args.size, generator=g, device=args.device) * 0.9
    wb = torch.tensor([2.0, 1.0, 1.6], device=args.device).expand(args.n, 3).contiguous()
    a, b = random_noise_params(args.n, g, device=args.device)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)

    def noise():
        add_noise(mosaic(clean, "RGGB"), (a, b), g, pattern="RGGB")
        sync()

    m = add_noise(mosaic(clean, "RGGB"), (a, b), g, pattern="RGGB")

    def demosaic():
        edge_aware_demosaic(m, "RGGB", wb)
        sync()

    def batch():
        make_training_batch(clean, wb, "random", "random", g)
        sync()

    t_noise, t_dem, t_batch = (best_of(f, args.repeats) for f in (noise, demosaic, batch))
    print(f"device {args.device}, threads {torch.get_num_threads()}, compiled ops {HAVE_COMPILED}, "
          f"batch {args.n}x3x{args.size}x{args.size}")
    print(f"mosaic + noise        {t_noise:8.1f} ms  ({t_noise / t_dem:.2f} x demosaic)")
    print(f"pre-demosaic          {t_dem:8.1f} ms  (1.00)")
    print(f"make_training_batch   {t_batch:8.1f} ms  ({t_batch / t_dem:.2f} x demosaic; "
          f"{args.n * args.size * args.size / t_batch / 1e3:.2f} Mpixel/s)")


if __name__ == "__main__":
    main()
