"""A training run's held-out validation, step 0 against the latest step (and the best), per level.

    python bench/run_progress.py /work/cache/runs/joint [--markdown]

Reads RUN_DIR/val.csv (written by `nnraw train`) and train.csv (for steps/s). For a run started from
published weights (configs/joint.toml: demosaicnet) step 0 is that network zero-shot, so "gain" is
what the fine-tuning added on the held-out sources.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path


def summary(run_dir: Path) -> tuple[list[dict], dict]:
    with (run_dir / "val.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    levels = list(dict.fromkeys(r["level"] for r in rows))
    last = max(int(r["step"]) for r in rows)
    out = []
    for level in levels:
        rs = [r for r in rows if r["level"] == level]
        at = {int(r["step"]): r for r in rs}
        first, latest = at[min(at)], at[last]
        best = max(rs, key=lambda r: float(r["psnr_srgb"]))
        out.append({"level": level, "input": float(first["psnr_srgb_input"]), "step0": float(first["psnr_srgb"]),
                    "latest": float(latest["psnr_srgb"]), "gain": float(latest["psnr_srgb"]) - float(first["psnr_srgb"]),
                    "best": float(best["psnr_srgb"]), "best_step": int(best["step"]),
                    "linear0": float(first["psnr"]), "linear": float(latest["psnr"])})
    info = {"step": last}
    tr = run_dir / "train.csv"
    if tr.exists():
        with tr.open(newline="") as f:
            t = list(csv.DictReader(f))
        if len(t) > 1:
            s0, s1 = int(t[0]["step"]), int(t[-1]["step"])
            dt = float(t[-1]["seconds"]) - float(t[0]["seconds"])
            info.update(train_step=s1, seconds=float(t[-1]["seconds"]), steps_per_s=(s1 - s0) / dt if dt > 0 else 0.0)
    return out, info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--markdown", action="store_true")
    a = p.parse_args(argv)
    rows, info = summary(a.run_dir)
    print(f"{a.run_dir}: validated at step {info['step']}"
          + (f"; trained to step {info['train_step']} in {info['seconds']:.0f} s ({info['steps_per_s']:.2f} steps/s)"
             if "train_step" in info else ""))
    if a.markdown:
        print(f"| level | input | step 0 | step {info['step']} | gain | best (step) |")
        print("|---|---:|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['level']} | {r['input']:.2f} | {r['step0']:.2f} | {r['latest']:.2f} | {r['gain']:+.2f} | "
                  f"{r['best']:.2f} ({r['best_step']}) |")
    else:
        print(f"{'level':8s} {'input':>7s} {'step 0':>7s} {'latest':>7s} {'gain':>6s} {'best':>7s} {'at':>6s}   (sRGB dB)")
        for r in rows:
            print(f"{r['level']:8s} {r['input']:7.2f} {r['step0']:7.2f} {r['latest']:7.2f} {r['gain']:+6.2f} "
                  f"{r['best']:7.2f} {r['best_step']:6d}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
