"""The noise blend (nnraw.models.noise_blend): the shipped default's weights move from demosaicnet's
published ones (low noise) to the fine-tuned ones (high noise), once per photo, by the noise it is told."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from nnraw.models import WEIGHTS_DIR, load_model, save_model
from nnraw.models import noise_blend as nb
from nnraw.training import evaluate as ev


def test_alpha_is_piecewise_linear_in_log_noise_and_clamped():
    anchors = [[0.001, 0.2], [0.004, 0.6], [0.016, 1.0]]
    assert nb.alpha_for(1e-5, anchors) == pytest.approx(0.2)
    assert nb.alpha_for(0.0, anchors) == pytest.approx(0.2)
    assert nb.alpha_for(0.002, anchors) == pytest.approx(0.4)      # halfway in log between 0.001 and 0.004
    assert nb.alpha_for(0.008, anchors) == pytest.approx(0.8)
    assert nb.alpha_for(1.0, anchors) == pytest.approx(1.0)
    grid = np.geomspace(1e-4, 0.1, 50)
    assert np.all(np.diff([nb.alpha_for(n, anchors) for n in grid]) >= 0)
    with pytest.raises(ValueError, match="noise > 0"):
        nb.alpha_for(0.01, [[0.0, 0.5]])


def test_the_default_blends_from_demosaicnet_to_its_fine_tuned_weights():
    from nnraw.models.bayer_joint import demosaicnet_state

    net = load_model("default")
    blend = nb.blend_of(net)
    assert blend is not None, "the shipped default has no noise blend"
    start = demosaicnet_state(net, json.loads((WEIGHTS_DIR / "default.json").read_text())["noise_blend"]["start"])
    nb.set_alpha(net, 0.0)
    for k, v in net.state_dict().items():     # the published weights, as stored in float16
        torch.testing.assert_close(v, start[k].to(torch.float16).float(), rtol=0, atol=0)
    nb.set_alpha(net, 1.0)
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, blend["tuned"][k], rtol=0, atol=0)
    # halfway to the first point of the path (a via point, or the fine-tuned weights): their mean
    first_alpha, first = (blend["via"][0] if blend["via"] else (1.0, blend["tuned"]))
    nb.set_alpha(net, first_alpha / 2)
    k = next(k for k in first if first[k].is_floating_point() and not torch.equal(first[k], blend["start"][k]))
    torch.testing.assert_close(net.state_dict()[k], (blend["start"][k] + first[k]) / 2)
    for alpha, weights in blend["via"]:           # the via points the default passes through, as stored
        nb.set_alpha(net, alpha)
        for k, v in net.state_dict().items():
            torch.testing.assert_close(v, weights[k], rtol=0, atol=0)


def test_denoising_sets_the_blend_by_the_noise_it_is_told():
    """Through nnraw.infer as `nnraw convert` runs it: more noise (a noisier level, or a higher
    strength, which tells the network more noise) -> more of the fine-tuned weights."""
    net = load_model("default")
    cam = ev.camera_rgb(torch.rand(3, 64, 64) * 0.5, (1.0, 1.0, 1.0))
    alphas = {}
    for level in ("iso100", "iso1600", "nvidia"):
        pre = ev.pre_demosaic(ev.noisy_mosaic(cam, level, seed=1), (1.0, 1.0, 1.0))
        ev.network(net, pre, (1.0, 1.0, 1.0), level)
        alphas[level] = nb.blend_of(net)["alpha"]
    anchors = nb.blend_of(net)["anchors"]
    assert alphas["iso100"] < alphas["iso1600"] < alphas["nvidia"], alphas
    assert alphas["nvidia"] == pytest.approx(1.0), alphas
    assert alphas["iso100"] == pytest.approx(nb.alpha_for(0.0034641, anchors), abs=1e-3), alphas
    pre = ev.pre_demosaic(ev.noisy_mosaic(cam, "iso1600", seed=1), (1.0, 1.0, 1.0))
    ev.network(net, pre, (1.0, 1.0, 1.0), "iso1600", strength=2.0)
    assert nb.blend_of(net)["alpha"] > alphas["iso1600"]


def test_a_blend_without_its_start_weights_is_refused(tmp_path):
    shutil.copy(WEIGHTS_DIR / "default.json", tmp_path / "default.json")
    net = load_model("default")
    nb.set_alpha(net, 1.0)
    config = json.loads((WEIGHTS_DIR / "default.json").read_text())
    with pytest.raises(ValueError, match="needs both"):
        save_model(net, config, "broken", tmp_path)
    config.pop("noise_blend")
    save_model(net, config, "broken", tmp_path)          # the fine-tuned weights alone ...
    config["noise_blend"] = {"anchors": [[0.01, 1.0]]}
    (tmp_path / "broken.json").write_text(json.dumps(config))   # ... but a json that blends
    with pytest.raises(ValueError, match="lacks the start weights"):
        load_model("broken", weights_dir=tmp_path)


def _tiny_blend(via_alphas=(0.5,)):
    """A 1x1 conv with a blend: start 0, via points at ``via_alphas`` holding 10 * (i + 1), fine-tuned 100."""
    net = torch.nn.Conv2d(1, 1, 1)
    with torch.no_grad():
        net.weight.fill_(100.0)
        net.bias.fill_(100.0)
    zeros = {k: torch.zeros_like(v) for k, v in net.state_dict().items()}
    via = [(a, {k: torch.full_like(v, 10.0 * (i + 1)) for k, v in zeros.items()}) for i, a in enumerate(via_alphas)]
    return nb.attach(net, zeros, [[0.01, 1.0]], via)


def test_a_via_point_bends_the_path_through_its_weights():
    net = _tiny_blend((0.5,))
    for alpha, want in [(0.0, 0.0), (0.25, 5.0), (0.5, 10.0), (0.75, 55.0), (1.0, 100.0), (1.5, 100.0), (-1.0, 0.0)]:
        nb.set_alpha(net, alpha)
        assert net.weight.item() == pytest.approx(want) and net.bias.item() == pytest.approx(want), alpha
    net = _tiny_blend((0.2, 0.6))                    # two via points: 0 -> 10 -> 20 -> 100
    nb.set_alpha(net, 0.4)
    assert net.weight.item() == pytest.approx(15.0)
    nb.set_alpha(net, 0.8)
    assert net.weight.item() == pytest.approx(60.0)


@pytest.mark.parametrize("alphas", [(0.0,), (1.0,), (0.6, 0.3), (0.5, 0.5)])
def test_via_points_outside_the_path_or_out_of_order_are_refused(alphas):
    with pytest.raises(ValueError, match="increasing alphas in"):
        _tiny_blend(alphas)


def test_blend_through_an_export_writes_and_loads_its_via_point(tmp_path):
    """nnraw.training.blend --via: the via weights travel in the safetensors (via0.*), their alpha and
    source in the json; a re-blend without --via keeps them, --no-via drops them; a blended export is
    refused as a via point, and a json that names a via point its safetensors lacks is refused."""
    from safetensors.torch import save_file

    from nnraw.training.blend import blend_shipped

    for suffix in (".json", ".safetensors"):
        shutil.copy(WEIGHTS_DIR / f"default{suffix}", tmp_path / f"default{suffix}")
    net = load_model("default")
    plain = {k: v.detach() + 0.01 for k, v in nb.blend_of(net)["tuned"].items()}
    config = json.loads((WEIGHTS_DIR / "default.json").read_text())
    config.pop("noise_blend")
    save_file({k: v.half() for k, v in plain.items()}, str(tmp_path / "expert.safetensors"))
    (tmp_path / "expert.json").write_text(json.dumps(config))
    anchors = [[0.00346, 0.25], [0.0212, 1.0]]
    blend_shipped("default", anchors, tmp_path, via=[(0.5, tmp_path / "expert.safetensors")])
    got = load_model("default", weights_dir=tmp_path)
    written = json.loads((tmp_path / "default.json").read_text())["noise_blend"]
    assert [v["alpha"] for v in written["via"]] == [0.5] and written["via"][0]["source"] == "expert.safetensors"
    nb.set_alpha(got, 0.5)
    for k, v in got.state_dict().items():
        torch.testing.assert_close(v, plain[k].half().float(), rtol=0, atol=0)
    nb.set_alpha(got, 1.0)                               # the fine-tuned end is unchanged
    for k, v in got.state_dict().items():
        torch.testing.assert_close(v, nb.blend_of(net)["tuned"][k], rtol=0, atol=0)
    blend_shipped("default", anchors, tmp_path, via=[(0.5, tmp_path / "expert.safetensors"), (0.75, 0.75)])
    mixed = load_model("default", weights_dir=tmp_path)     # a point of the straight path as a second via point
    b = nb.blend_of(mixed)
    assert [a for a, _ in b["via"]] == [0.5, 0.75]
    nb.set_alpha(mixed, 0.75)
    k = next(k for k in b["tuned"] if b["tuned"][k].is_floating_point() and not torch.equal(b["tuned"][k], b["start"][k]))
    torch.testing.assert_close(mixed.state_dict()[k], b["start"][k] + 0.75 * (b["tuned"][k] - b["start"][k]),
                               rtol=0, atol=2e-3)                  # float16 storage
    blend_shipped("default", anchors, tmp_path, via=[(0.5, tmp_path / "expert.safetensors")])
    blend_shipped("default", anchors, tmp_path)          # re-blend: the via point stays
    assert len(nb.blend_of(load_model("default", weights_dir=tmp_path))["via"]) == 1
    with pytest.raises(ValueError, match="has a noise blend of its own"):
        blend_shipped("default", anchors, tmp_path, via=[(0.5, tmp_path / "default.safetensors")])
    blend_shipped("default", anchors, tmp_path, via=[])  # --no-via
    assert nb.blend_of(load_model("default", weights_dir=tmp_path))["via"] == []
    broken = json.loads((tmp_path / "default.json").read_text())
    broken["noise_blend"]["via"] = [{"alpha": 0.5, "source": "expert.safetensors"}]
    (tmp_path / "default.json").write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="lacks the weights of via point 0"):
        load_model("default", weights_dir=tmp_path)
