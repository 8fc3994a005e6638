"""Quality guards for the shipped default network, on photos it never trained on.

Two held-out image sources (nnraw.training.evaluate.HELD_OUT), three white balances (neutral, daylight,
tungsten), four noise levels (ISO 100, 1600, 6400, the NVIDIA paper's): the protocol of
bench/quality.py on a few small crops, so it runs in seconds.

1. Never worse than its input: in every (source, white balance, level) cell the default's sRGB
   PSNR is at least its own input's (the encoded pre-demosaic, ``--model none``) - NOT_WORSE_DB.
   Issue #10 asks for input + MARGIN_DB in every cell: that test is kept as a strict xfail with the
   figures measured (it fails CI the day it passes, so the xfail gets removed).
2. No colour cast: in every cell, no channel mean of the output is further from the truth's than
   the input's is, by more than MAX_MEAN_SHIFT of the truth's mean. (The input itself is off by up to
   1.2 %: an interpolation in a concave domain lowers means, and noise clipped at black raises a dark
   channel's. The cast is what the network must not add.) The joint default misses this in blue below the
   NVIDIA level (a strict xfail below, with the figures).
3. White-balance invariance: at ISO 100, where the three lights' different noise hardly matters, the
   same scenes give PSNRs within MAX_WB_SPREAD_DB of each other. (At high ISO the lights differ in
   information, not only in rendering: tungsten's blue has 3x fewer photons, so its PSNR is lower for
   any method.)
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nnraw.training import evaluate

MARGIN_DB = 0.3
GUARD_GAIN_DB = 1.5
NOT_WORSE_DB = 0.05
MAX_WB_SPREAD_DB = 0.25        # the guard: the joint default measured 0.16 dB (wikipedia, step 23400)
WB_SPREAD_AIM_DB = 0.1         # issue #17's target: a strict xfail below
MAX_MEAN_SHIFT = 0.005
LEVELS = ("iso100", "iso1600", "iso6400", "nvidia")
CROP = 128
CROPS_PER_SOURCE = 3


@pytest.fixture(scope="module")
def results() -> dict:
    """{(source, wb, level): dict(default=[psnr...], input=[psnr...], shift=[Tensor[3]...])}."""
    from nnraw.models import load_model

    try:
        sources = {s: evaluate.scenes(s, CROPS_PER_SOURCE, CROP) for s in evaluate.HELD_OUT}
    except FileNotFoundError as exc:
        from conftest import SHARED, need_shared

        need_shared(SHARED, f"held-out photos ({exc})")  # skips only where ../shared is absent
        raise
    torch.set_num_threads(2)
    model = load_model("default")
    out: dict = {}
    for source, items in sources.items():
        for k, (name, scene) in enumerate(items):
            for wb_name, wb in evaluate.WB_CONDITIONS.items():
                cam = evaluate.camera_rgb(scene, wb)
                truth = evaluate.render(cam, wb)
                for li, level in enumerate(LEVELS):
                    noisy = evaluate.noisy_mosaic(cam, level, seed=1000 * k + li)   # same noise draw per WB
                    pre = evaluate.pre_demosaic(noisy, wb)
                    den = evaluate.network(model, pre, wb, level)
                    cell = out.setdefault((source, wb_name, level),
                                          {"default": [], "input": [], "shift": [], "shift_input": []})
                    cell["default"].append(evaluate.psnr(evaluate.render(den, wb), truth))
                    cell["input"].append(evaluate.psnr(evaluate.render(pre, wb), truth))
                    cell["shift"].append(evaluate.channel_mean_shift(den, cam))
                    cell["shift_input"].append(evaluate.channel_mean_shift(pre, cam))
    return out


def _gains(results) -> dict:
    return {key: float(np.mean(c["default"])) - float(np.mean(c["input"])) for key, c in results.items()}


def test_default_is_never_worse_than_its_input(results, record_property):
    worse = []
    for (source, wb, level), cell in results.items():
        d, i = float(np.mean(cell["default"])), float(np.mean(cell["input"]))
        record_property(f"{source}/{wb}/{level}", f"default {d:.2f} dB, input {i:.2f} dB")
        print(f"{source:9s} {wb:8s} {level:7s} default {d:6.2f}  input {i:6.2f}  gain {d - i:+.2f} dB")
        if d < i - NOT_WORSE_DB:
            worse.append(f"{source}/{wb}/{level}: default {d:.2f} dB < input {i:.2f} - {NOT_WORSE_DB}")
    assert not worse, "the default network makes photos worse than its input in: " + "; ".join(worse)


def test_default_beats_its_input_by_the_margin_in_every_cell(results):
    """Issue #10's margin, and the joint default's guard: measured (runs/joint step 17400, 2026-12-03; step 23400 is within the guard)
    gains over the input +2.94..+3.04 dB at ISO 100, +2.32..+3.24 at 1600, +2.40..+3.73 at 6400,
    +2.85..+4.54 at the NVIDIA level; GUARD_GAIN_DB leaves ~0.8 dB for the crops' chance."""
    short = [f"{'/'.join(k)}: {g:+.2f} dB" for k, g in _gains(results).items() if g < max(MARGIN_DB, GUARD_GAIN_DB)]
    assert not short, f"gain over the input below {GUARD_GAIN_DB} dB in: " + "; ".join(short)


def _casts(results, levels) -> list[str]:
    bad = []
    for (source, wb, level), cell in results.items():
        if level not in levels:
            continue
        out = torch.stack(cell["shift"]).mean(0)
        inp = torch.stack(cell["shift_input"]).mean(0)
        if (out.abs() > inp.abs() + MAX_MEAN_SHIFT).any():
            bad.append(f"{source}/{wb}/{level}: channel means shifted by "
                       + ", ".join(f"{c} {100 * v:+.2f} % (input {100 * u:+.2f} %)"
                                   for c, v, u in zip("RGB", out.tolist(), inp.tolist())))
    return bad


@pytest.mark.xfail(strict=True, reason="the noise-blended default (demosaicnet's weights, the low-noise expert runs/joint-low "
                   "step 4400 and the old ISO 1600 mix as via points, step 23400; 2 passes, precision auto, 2026-12-07) adds a cast "
                   "in 1 of 24 cells: wikipedia/tungsten/ISO 1600 B +0.81 % vs the input's -0.23 %; the ISO 100 blue cast of "
                   "the previous blend (B -0.81..-1.12 % in all six ISO 100 cells) is gone; issue #17 asks for none > 0.5 %")
def test_network_adds_no_colour_cast(results):
    bad = _casts(results, [lv for lv in LEVELS if lv != "nvidia"])
    assert not bad, "colour cast added (a channel mean > 0.5 % further from the truth than the input's): " + \
        "; ".join(bad)


def test_network_adds_no_colour_cast_at_the_nvidia_level(results):
    """Held since the joint default (runs/joint step 23400): the fast network lifted dark blue here by
    +1.6..+3.3 % over its input's shift (2026-12-02)."""
    bad = _casts(results, ["nvidia"])
    assert not bad, "colour cast added at the NVIDIA level: " + "; ".join(bad)


def _check_wb_spread(results, limit: float) -> None:
    for source in evaluate.HELD_OUT:
        scores = {wb: float(np.mean(results[(source, wb, "iso100")]["default"])) for wb in evaluate.WB_CONDITIONS}
        spread = max(scores.values()) - min(scores.values())
        print(f"{source}: ISO 100 PSNR by white balance " + ", ".join(f"{k} {v:.2f}" for k, v in scores.items())
              + f" (spread {spread:.2f} dB)")
        assert spread <= limit, f"{source}: ISO 100 PSNRs under {scores} differ by {spread:.2f} dB"


def test_white_balance_invariance_at_low_iso(results):
    _check_wb_spread(results, MAX_WB_SPREAD_DB)


@pytest.mark.xfail(strict=True, reason="the noise-blended default with the low-noise via point (2 passes, precision auto, "
                   "2026-12-07, seventh session) spreads 0.21 dB over the three lights on wikipedia at ISO 100 (neutral 36.48, "
                   "daylight 36.33, tungsten 36.28 dB; 0.11 on skimage; the previous blend 0.23 / 0.13); demosaicnet spreads "
                   "0.27 dB in bench/quality.py's cells (R and B carry ~1.4x the noise under daylight and tungsten gains); "
                   "issue #17 asks <= 0.1")
def test_white_balance_invariance_at_low_iso_aim(results):
    _check_wb_spread(results, WB_SPREAD_AIM_DB)


def test_guard_detects_a_colour_cast():
    """The guard's measure sees a +1 % blue cast that a network might add (so the test above can fail)."""
    g = torch.Generator().manual_seed(0)
    truth = torch.rand(3, 64, 64, generator=g) * 0.5 + 0.1
    cast = truth * torch.tensor([1.0, 1.0, 1.01]).reshape(3, 1, 1)
    shift = evaluate.channel_mean_shift(cast, truth)
    assert shift[2] == pytest.approx(0.01, rel=1e-3) and shift[:2].abs().max() < 1e-9
    assert shift.abs().max() > MAX_MEAN_SHIFT
