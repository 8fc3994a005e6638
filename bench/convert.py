"""Time the stages of `nnraw convert --model none` on a synthetic 24 MP Bayer DNG and report peak memory.

    PYTHONPATH=python python bench/convert.py [--height 4000 --width 6000] [--keep DIR]

The raw is the tests' synthetic scene (tests/dng_fixtures.py) tiled to the requested size, RGGB, 14-bit.
The conversion runs in a child process (`python -m nnraw convert ... --json`), so its peak resident
set size (RSS, from getrusage of the child) includes everything it allocated, imports included.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from dng_fixtures import write_bayer_dng  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=4000)
    parser.add_argument("--width", type=int, default=6000)
    parser.add_argument("--keep", type=Path, help="write the raw and the DNG here (default: a temporary folder)")
    args = parser.parse_args()
    tile_h, tile_w = 500, 600
    if args.height % tile_h or args.width % tile_w:
        raise SystemExit(f"--height must be a multiple of {tile_h} and --width of {tile_w}")

    with tempfile.TemporaryDirectory(prefix="nnraw-bench-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        src = folder / "synthetic-24mp.dng"
        t0 = time.perf_counter()
        write_bayer_dng(src, pattern="RGGB", size=(tile_h, tile_w), black=(2048,) * 4, white=16383,
                        repeat=(args.height // tile_h, args.width // tile_w))
        made = time.perf_counter() - t0
        out = folder / "synthetic-24mp-nnraw.dng"
        cmd = [sys.executable, "-m", "nnraw", "convert", str(src), "-o", str(out), "--model", "none",
               "--device", "cpu", "--overwrite", "--json"]
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
        peak_rss_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        if proc.returncode != 0:
            raise SystemExit(f"convert failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        result = json.loads(proc.stdout)["results"][0]
        from nnraw.ops import HAVE_COMPILED

        mp = args.height * args.width / 1e6
        print(f"# nnraw convert --model none, synthetic {args.width}x{args.height} ({mp:.1f} MP) RGGB DNG")
        print(f"# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} CPU(s), torch threads {os.environ.get('OMP_NUM_THREADS', 'default')}, "
              f"compiled ops: {HAVE_COMPILED}")
        print(f"# input {src.stat().st_size / 2**20:.1f} MiB (made in {made:.1f} s), output {out.stat().st_size / 2**20:.1f} MiB")
        print("| stage | seconds | share |")
        print("|---|---:|---:|")
        total = result["seconds"]
        for stage, seconds in result["stages"].items():
            print(f"| {stage} | {seconds:.3f} | {seconds / total:.0%} |")
        print(f"| convert_file total | {total:.3f} | 100% |")
        print(f"| process wall (incl. imports) | {wall:.3f} | |")
        print(f"peak RSS of the convert process: {peak_rss_mib:.0f} MiB "
              f"({peak_rss_mib / mp:.0f} MiB per MP)")


if __name__ == "__main__":
    main()
