"""nnraw's networks and their shipped weights.

    load_model(name, device="cpu") -> nn.Module   eval mode, weights from nnraw/weights/<name>.*
    available_models() -> list[str]               names of the shipped weight files
    build_model(config) -> nn.Module              an untrained network from a config dict

Every model has ``halo`` (even; forward shrinks H and W by 2*halo, valid convolutions only) and
``noise_conditioned``; ``forward(rgb [N,3,H+2h,W+2h], sigma [N,3,H+2h,W+2h] | None) -> [N,3,H,W]``.
rgb is pre-demosaiced camera RGB in [0, 1] (not white balanced), sigma the per-pixel noise std.

Weights are safetensors (no pickle) beside a JSON config: {"architecture": ..., "params": {...}, ...}.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from nnraw.models.bayer_joint import BayerJointDenoiser
from nnraw.models.half_res_residual import HalfResResidualDenoiser
from nnraw.models.reference import ReferenceDenoiser
from nnraw.models.xtrans_joint import XTransJointDenoiser

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
DEFAULT_MODEL = "default"
XTRANS_MODEL = "xtrans"      # what ``--model default`` runs on X-Trans raws, when it is shipped
ARCHITECTURES: dict[str, type[nn.Module]] = {
    "reference": ReferenceDenoiser,
    "half_res_residual": HalfResResidualDenoiser,
    "bayer_joint": BayerJointDenoiser,
    "xtrans_joint": XTransJointDenoiser,
}

__all__ = ["ARCHITECTURES", "DEFAULT_MODEL", "WEIGHTS_DIR", "BayerJointDenoiser", "HalfResResidualDenoiser",
           "ReferenceDenoiser", "XTRANS_MODEL", "XTransJointDenoiser", "available_models", "build_model", "load_model", "save_model"]


def build_model(config: dict) -> nn.Module:
    """An untrained network from {"architecture": name, "params": {...}, "domain": encoding}.

    ``domain`` (default "linear") is the image domain the network works in: "srgb" networks see
    white-balanced, sRGB-encoded camera RGB (:mod:`nnraw.encoding`; run them through
    :func:`nnraw.encoding.in_domain`). The module gets it as its ``domain`` attribute.
    """
    from nnraw.encoding import NETWORK_DOMAINS as ENCODINGS

    arch = config.get("architecture")
    if arch not in ARCHITECTURES:
        raise ValueError(f"nnraw.models.build_model: architecture must be one of {sorted(ARCHITECTURES)}, "
                         f"got {arch!r}")
    domain = config.get("domain", "linear")
    if domain not in ENCODINGS:
        raise ValueError(f"nnraw.models.build_model: domain must be one of {ENCODINGS}, got {domain!r}")
    model = ARCHITECTURES[arch](**config.get("params", {}))
    model.domain = domain
    return model


def available_models(weights_dir: Path | None = None) -> list[str]:
    """Names with both <name>.safetensors and <name>.json in the weights folder, sorted."""
    d = Path(weights_dir) if weights_dir else WEIGHTS_DIR
    return sorted(p.stem for p in d.glob("*.safetensors") if p.with_suffix(".json").exists())


def config_sensor(config: dict) -> str:
    """"X-Trans" or "Bayer": the CFA a network's JSON config is for (its ``sensor``, else its
    architecture: only xtrans_joint takes X-Trans mosaics)."""
    return config.get("sensor") or ("X-Trans" if config.get("architecture") == "xtrans_joint" else "Bayer")


def model_sensor(name: str, weights_dir: Path | None = None) -> tuple[str, Path]:
    """(sensor, JSON path) of the shipped network ``name`` (see :func:`config_sensor`)."""
    d = Path(weights_dir) if weights_dir else WEIGHTS_DIR
    cfg_path = d / f"{name}.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"nnraw.models: no model {name!r} in {d} (expected {cfg_path.name}); "
                                f"available: {available_models(d)}")
    return config_sensor(json.loads(cfg_path.read_text())), cfg_path


def load_model(name: str, device: str | torch.device = "cpu", weights_dir: Path | None = None) -> nn.Module:
    """The shipped network ``name`` in eval mode on ``device`` (float32)."""
    from safetensors.torch import load_file

    d = Path(weights_dir) if weights_dir else WEIGHTS_DIR
    cfg_path, w_path = d / f"{name}.json", d / f"{name}.safetensors"
    if not cfg_path.exists() or not w_path.exists():
        raise FileNotFoundError(f"nnraw.models.load_model: no model {name!r} in {d} "
                                f"(expected {w_path.name} and {cfg_path.name}); available: {available_models(d)}")
    config = json.loads(cfg_path.read_text())
    model = build_model(config)
    state = {k: v.float() for k, v in load_file(str(w_path)).items()}
    from nnraw.models import noise_blend

    start = {k[len(noise_blend.START_PREFIX):]: state.pop(k) for k in list(state)
             if k.startswith(noise_blend.START_PREFIX)}
    via_spec = config.get("noise_blend", {}).get("via", [])
    via = []
    for i, spec in enumerate(via_spec):
        prefix = f"{noise_blend.VIA_PREFIX}{i}."
        weights = {k[len(prefix):]: state.pop(k) for k in list(state) if k.startswith(prefix)}
        if not weights:
            raise ValueError(f"nnraw.models.load_model: {w_path} lacks the weights of via point {i} ({prefix}*) "
                             f"its {cfg_path.name} blends through")
        via.append((float(spec["alpha"]), weights))
    model.load_state_dict(state, strict=True)
    if "noise_blend" in config:
        if not start:
            raise ValueError(f"nnraw.models.load_model: {w_path} lacks the start weights ({noise_blend.START_PREFIX}*) "
                             f"its {cfg_path.name} blends with")
        noise_blend.attach(model, start, config["noise_blend"]["anchors"], via)
    return model.to(device).eval()


def save_model(model: nn.Module, config: dict, name: str, weights_dir: Path | None = None,
               dtype: torch.dtype = torch.float16, start: dict[str, torch.Tensor] | None = None,
               via: list[dict[str, torch.Tensor]] | tuple = ()) -> tuple[Path, Path]:
    """Write <name>.safetensors (``dtype`` storage) and <name>.json; temp names renamed at the end.
    ``start``: the weights a noise blend (``config["noise_blend"]``, nnraw.models.noise_blend) blends
    with, stored under ``start.``; ``via``: the weight sets of its via points (``config["noise_blend"]["via"]``,
    one each), stored under ``via0.``, ``via1.``, ... A model that has a blend is saved with its fine-tuned
    weights, not the blend of the last photo it ran."""
    from safetensors.torch import save_file

    from nnraw.models.noise_blend import START_PREFIX, VIA_PREFIX, blend_of

    d = Path(weights_dir) if weights_dir else WEIGHTS_DIR
    d.mkdir(parents=True, exist_ok=True)
    blend = blend_of(model)
    weights = blend["tuned"] if blend else model.state_dict()
    if ("noise_blend" in config) != (start is not None):
        raise ValueError("nnraw.models.save_model: a noise blend needs both config['noise_blend'] and start weights")
    state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in weights.items()}
    if len(via) != len(config.get("noise_blend", {}).get("via", [])):
        raise ValueError("nnraw.models.save_model: config['noise_blend']['via'] and the via weights differ in number")
    if start is not None:
        state.update({START_PREFIX + k: v.detach().to("cpu", dtype).contiguous() for k, v in start.items()})
    for i, weights in enumerate(via):
        state.update({f"{VIA_PREFIX}{i}." + k: v.detach().to("cpu", dtype).contiguous() for k, v in weights.items()})
    w_path, cfg_path = d / f"{name}.safetensors", d / f"{name}.json"
    w_tmp, cfg_tmp = w_path.with_suffix(".safetensors.tmp"), cfg_path.with_suffix(".json.tmp")
    save_file(state, str(w_tmp), metadata={"name": name, "architecture": config["architecture"]})
    cfg_tmp.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    w_tmp.chmod(0o644)
    w_tmp.replace(w_path)
    cfg_tmp.replace(cfg_path)
    return w_path, cfg_path


# ------------------------------------------------------------------------------------- `nnraw info`

def macs_per_pixel(model: nn.Module) -> float:
    """Multiply-accumulates per output pixel of a large image (convolutions and transposed ones): the
    figure that sets a model's speed. Counted with hooks on three small random inputs: every layer
    costs k * (n + c)^2 for an n x n output, so the second difference in n gives k summed over layers,
    without the halo's share that a small tile would add."""
    total = 0.0

    def count(module: nn.Module, inputs, output) -> None:
        nonlocal total
        k = module.kernel_size[0] * module.kernel_size[1]
        if isinstance(module, nn.ConvTranspose2d):
            total += inputs[0][0].numel() * (module.out_channels // module.groups) * k
        else:
            total += output[0].numel() * (module.in_channels // module.groups) * k

    def macs(n: int) -> float:
        nonlocal total
        total = 0.0
        x = torch.zeros(1, 3, n + 2 * halo, n + 2 * halo, device=device)
        sigma = torch.zeros_like(x) if getattr(model, "noise_conditioned", False) else None
        model(x, sigma)
        return total

    if getattr(model, "needs_pattern", False):   # re-samples the mosaic: any one CFA phase costs the same
        from nnraw.models.bayer_joint import bind_pattern

        model = bind_pattern(model, getattr(model, "example_pattern", "RGGB"))
    halo = int(getattr(model, "halo", 0))
    device = next(model.parameters()).device   # "meta" (shapes only, no arithmetic) is the quick way
    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    try:
        with torch.no_grad():
            d = 32
            return (macs(3 * d) - 2 * macs(2 * d) + macs(d)) / (2 * d * d)
    finally:
        for h in hooks:
            h.remove()


def describe_models(weights_dir: Path | None = None) -> list[dict]:
    """What each shipped network is for, from its JSON: name, whether it is the default, the noise it
    handles, the sensor, kMAC per pixel and a speed class. For ``nnraw info``."""
    d = Path(weights_dir) if weights_dir else WEIGHTS_DIR
    out = []
    for name in available_models(d):
        config = json.loads((d / f"{name}.json").read_text())
        conditioned = bool(config.get("noise_conditioned"))
        iso = config.get("iso") or config.get("training", {}).get("config", {}).get("data", {}).get("iso")
        try:
            with torch.device("meta"):
                model = build_model(config).eval()
            kmac = round(macs_per_pixel(model) / 1000, 1)
            passes = int(getattr(model, "default_passes", 1))
        except Exception:  # noqa: BLE001  (a listing must not fail on one odd model)
            kmac, passes = None, 1
        out.append({
            "name": name,
            "default": name == DEFAULT_MODEL,
            "architecture": config.get("architecture"),
            "noise": "any ISO: told the camera's noise level" if conditioned else f"trained at ISO {iso:g} only",
            "sensor": config_sensor(config),
            "kmac_per_pixel": kmac,
            "speed": None if kmac is None else ("fast" if kmac < 60 else "standard" if kmac < 250 else "slow"),
            "passes_where_fast": passes,      # nnraw.infer.default_passes: on CUDA or a CPU with AVX512_BF16
            "summary": config.get("summary", ""),
        })
    return out


def format_models(models: list[dict]) -> str:
    """The ``nnraw info`` lines for :func:`describe_models`."""
    lines = [f"models ({len(models)} shipped; `nnraw convert --model NAME`, `--model none` for no network):"]
    for m in models:
        cost = f"{m['kmac_per_pixel']:g} kMAC/pixel, {m['speed']}" if m["kmac_per_pixel"] is not None else "cost unknown"
        if m.get("passes_where_fast", 1) > 1:
            cost += f", {m['passes_where_fast']} passes on a GPU or a CPU with AVX512_BF16"
        mark = "  [default]" if m["default"] else ""
        lines.append(f"  {m['name']:20s} {m['sensor']}, {m['noise']}; {cost}{mark}")
        if m["summary"]:
            lines.append(f"  {'':20s} {m['summary']}")
    return "\n".join(lines)
