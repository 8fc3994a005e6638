"""CPU precision "auto" (nnraw.infer.PRECISIONS): the joint default's half-resolution trunk (and the
X-Trans network's convolutions 2..11) run in bfloat16 where the CPU has AVX512_BF16, float32 elsewhere; issue #17 allows it only if the held-out
PSNR changes by <= 0.05 dB. (bench/cpu_bf16.py measures the speed: 2.5x on such a CPU.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nnraw import cfa
from nnraw.infer import cpu_has_fast_bfloat16, run_tiled
from nnraw.models import build_model, load_model
from nnraw.models.bayer_joint import bind_pattern
from nnraw.training import evaluate

MAX_PSNR_LOSS_DB = 0.05


def _small_net():
    net = build_model({"architecture": "bayer_joint", "params": {"width": 8, "depth": 3}, "domain": "srgb"})
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return bind_pattern(net, "RGGB")


def test_auto_precision_follows_the_cpu():
    """auto differs from float32 exactly when the CPU has AVX512_BF16; float32 is float32 throughout."""
    net = _small_net()
    rgb = torch.rand(1, 3, 40, 44, generator=torch.Generator().manual_seed(1))
    sigma = lambda x: torch.full_like(x, 0.02)  # noqa: E731
    f32 = run_tiled(net, rgb, sigma, tile=16, threads=1, precision="float32")
    assert not net.net.trunk_bfloat16
    auto = run_tiled(net, rgb, sigma, tile=16, threads=1, precision="auto")
    assert net.net.trunk_bfloat16 == cpu_has_fast_bfloat16()
    if cpu_has_fast_bfloat16():
        assert not torch.equal(auto, f32) and (auto - f32).abs().max() < 0.05
    else:
        assert torch.equal(auto, f32)
    assert torch.equal(run_tiled(net, rgb, sigma, tile=16, threads=1, precision="float32"), f32)


def test_cpu_flag_is_read_from_the_cpu():
    with open("/proc/cpuinfo") as f:
        flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    assert cpu_has_fast_bfloat16() == ("avx512_bf16" in flags)


@pytest.mark.parametrize("name", ["default", "xtrans"])
def test_auto_precision_keeps_the_held_out_psnr(name):
    """The shipped default and X-Trans networks, evaluate's protocol (X-Trans mosaics for ``xtrans``):
    auto vs float32, one pass, 2 crops per held-out source, neutral and tungsten camera, ISO 100 and the
    NVIDIA level: no cell loses more than 0.05 dB."""
    try:
        sources = {s: evaluate.scenes(s, 2, 128) for s in evaluate.HELD_OUT}
    except FileNotFoundError as exc:
        from conftest import SHARED, need_shared

        need_shared(SHARED, f"held-out photos ({exc})")
        raise
    torch.set_num_threads(2)
    model = load_model(name)
    pattern = cfa.shifted(cfa.XTRANS, 1, 2) if name == "xtrans" else "RGGB"
    worst = []
    for source, items in sources.items():
        for wb_name in ("neutral", "tungsten"):
            wb = evaluate.WB_CONDITIONS[wb_name]
            for li, level in enumerate(("iso100", "nvidia")):
                change = []
                for k, (_, scene) in enumerate(items):
                    cam = evaluate.camera_rgb(scene, wb)
                    truth = evaluate.render(cam, wb)
                    noisy = evaluate.noisy_mosaic(cam, level, 1000 * k + li, pattern)
                    pre = evaluate.pre_demosaic(noisy, wb, pattern=pattern)
                    a, b = (evaluate.psnr(evaluate.render(evaluate.network(model, pre, wb, level, pattern=pattern,
                                                                           precision=p, passes=1), wb), truth)
                            for p in ("float32", "auto"))
                    change.append(b - a)
                worst.append((float(np.mean(change)), f"{source}/{wb_name}/{level}"))
    print(f"{name}: auto - float32 PSNR (dB): " + ", ".join(f"{n} {c:+.3f}" for c, n in worst))
    c, cell = min(worst)
    assert c >= -MAX_PSNR_LOSS_DB, f"{name}: precision auto loses {-c:.3f} dB against float32 in {cell}"
