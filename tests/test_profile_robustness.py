"""Robust to a wrong noise profile (issue #17 acceptance): with the profile's noise std scaled by 0.5
and by 3 (a and b x 0.25 and x 9), the default network on held-out photos is, in every (source, white
balance, level) cell, never below its input (sRGB PSNR, NOT_WORSE_DB) and adds no colour cast over
0.5 % (a channel mean further from the truth's than the input's), the protocol of
tests/test_quality_guards.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nnraw.training import evaluate

NOT_WORSE_DB = 0.05
MAX_MEAN_SHIFT = 0.005
LEVELS = ("iso100", "iso1600", "iso6400", "nvidia")
CROP = 128
CROPS_PER_SOURCE = 2


@pytest.fixture(scope="module")
def scenes():
    try:
        return {s: evaluate.scenes(s, CROPS_PER_SOURCE, CROP) for s in evaluate.HELD_OUT}
    except FileNotFoundError as exc:
        pytest.skip(f"held-out photos not available ({exc}); ../shared/data must be beside the checkout")


@pytest.mark.xfail(strict=True, reason="not met by the noise-blended default (2 passes, precision auto, 2026-12-07): "
                   "x0.5 never below its input but adds casts to +0.74 % (wikipedia/neutral/ISO 100); x3 oversmooths: "
                   "below its input at ISO 1600 and 6400 on wikipedia (32.08 vs 33.21 dB, neutral/ISO 1600) and adds casts "
                   "up to +13.0 % (skimage/tungsten/NVIDIA). The step-31000 checkpoint, trained with jittered noise maps, "
                   "cut the x3 casts to +4.5 % but was not shipped (docs/BENCHMARKS.md)")
@pytest.mark.parametrize("scale", [0.5, 3.0])
def test_a_wrong_profile_never_makes_it_worse_nor_casts(scenes, scale):
    from nnraw.models import load_model

    torch.set_num_threads(2)
    model = load_model("default")
    bad = []
    for source, items in scenes.items():
        for wb_name, wb in evaluate.WB_CONDITIONS.items():
            for li, level in enumerate(LEVELS):
                psnr, psnr_in, shift, shift_in = [], [], [], []
                for k, (_, scene) in enumerate(items):
                    cam = evaluate.camera_rgb(scene, wb)
                    truth = evaluate.render(cam, wb)
                    pre = evaluate.pre_demosaic(evaluate.noisy_mosaic(cam, level, seed=1000 * k + li), wb)
                    den = evaluate.network(model, pre, wb, level, profile_scale=scale)
                    psnr.append(evaluate.psnr(evaluate.render(den, wb), truth))
                    psnr_in.append(evaluate.psnr(evaluate.render(pre, wb), truth))
                    shift.append(evaluate.channel_mean_shift(den, cam))
                    shift_in.append(evaluate.channel_mean_shift(pre, cam))
                d, i = float(np.mean(psnr)), float(np.mean(psnr_in))
                out, inp = torch.stack(shift).mean(0), torch.stack(shift_in).mean(0)
                print(f"x{scale:g} {source:9s} {wb_name:8s} {level:7s} default {d:6.2f} input {i:6.2f} "
                      f"gain {d - i:+.2f} dB; added shift {100 * (out.abs() - inp.abs()).max():+.2f} %")
                if d < i - NOT_WORSE_DB:
                    bad.append(f"{source}/{wb_name}/{level}: {d:.2f} dB < input {i:.2f}")
                if (out.abs() > inp.abs() + MAX_MEAN_SHIFT).any():
                    bad.append(f"{source}/{wb_name}/{level}: channel means shifted by "
                               + ", ".join(f"{c} {100 * v:+.2f} % (input {100 * u:+.2f} %)"
                                           for c, v, u in zip("RGB", out.tolist(), inp.tolist())))
    assert not bad, f"profile noise x{scale:g}: " + "; ".join(bad)
