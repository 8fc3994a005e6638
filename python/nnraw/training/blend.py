"""Give a shipped network a noise blend with the published weights it was fine-tuned from
(nnraw.models.noise_blend): ``python -m nnraw.training.blend NAME NOISE:ALPHA ... [-w WEIGHTS_DIR]``.

Reads nnraw/weights/NAME.{safetensors,json}, maps the start named by its training config's
``model.init_from`` (demosaicnet's published weights: the demosaicnet package is a training-time
dependency, as for ``nnraw train``) and writes both back with ``noise_blend.anchors`` in the json
(temp names renamed). Run again with other anchors to change them; the fine-tuned weights stay as they are.

``--via ALPHA:EXPORT`` (repeatable) routes the path through another export of the same network (``nnraw train
... --export-only``, e.g. the low-noise expert of configs/joint-low.toml) at that alpha, ``--via ALPHA:mix=T``
through the point start + T x (fine-tuned - start) of the straight path; without ``--via``, the via points the
model already has are kept (``--no-via`` drops them).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nnraw.models import WEIGHTS_DIR, load_model, save_model
from nnraw.models.bayer_joint import demosaicnet_state
from nnraw.models.noise_blend import alpha_for, blend_of, path_weights


def read_via(path: Path) -> tuple[dict, dict]:
    """An export (``<name>.safetensors`` + ``<name>.json``, no blend of its own) -> (its weights, a json record)."""
    from safetensors.torch import load_file

    path = Path(path)
    config = json.loads(path.with_suffix(".json").read_text())
    if "noise_blend" in config:
        raise ValueError(f"nnraw.training.blend: {path} has a noise blend of its own; give a plain export")
    training = config.get("training", {})
    record = {"source": path.name, "steps": training.get("steps"),
              "config": training.get("config", {}).get("name")}
    return {k: v.float() for k, v in load_file(str(path)).items()}, record


def blend_shipped(name: str, anchors: list[list[float]], weights_dir: Path | None = None, note: str = "",
                  via: list[tuple[float, Path | float]] | None = None) -> Path:
    """Write ``name``'s blend: ``anchors`` [[noise, alpha], ...]; ``via`` [(alpha, an export's .safetensors, or a
    number t for the weights start + t x (fine-tuned - start)), ...], None to keep the model's via points."""
    d = Path(weights_dir) if weights_dir else WEIGHTS_DIR
    config = json.loads((d / f"{name}.json").read_text())
    source = config.get("training", {}).get("config", {}).get("model", {}).get("init_from")
    if not source:
        raise ValueError(f"nnraw.training.blend: {name} was not fine-tuned from published weights "
                         "(no training.config.model.init_from in its json)")
    alpha_for(0.01, anchors)
    model = load_model(name, weights_dir=d)      # save_model writes a blended model's fine-tuned weights
    start = demosaicnet_state(model, source)     # (loaded at alpha 1: its state is the fine-tuned weights)
    if via is None:                              # keep the via points it has
        records = config.get("noise_blend", {}).get("via", [])
        points = list(blend_of(model)["via"]) if blend_of(model) else []
    else:
        points, records = [], []
        for alpha, what in via:
            if isinstance(what, (int, float)):   # a point of the straight path: start + t (fine-tuned - start)
                weights = path_weights({"start": start, "tuned": model.state_dict()}, float(what))
                record = {"source": f"start + {float(what):g} x (fine-tuned - start)", "mix": float(what)}
            else:
                weights, record = read_via(what)
            points.append((float(alpha), weights))
            records.append({"alpha": float(alpha), **record})
    config["noise_blend"] = {"start": source, "anchors": [[float(n), float(a)] for n, a in anchors],
                             "note": note or ("weights = start + alpha(noise at linear grey 0.18) x (fine-tuned - start)"
                                              + (", through the via points" if points else ""))}
    if points:
        config["noise_blend"]["via"] = records
    w, _ = save_model(model, config, name, d, start=start, via=[w for _, w in points])
    load_model(name, weights_dir=d)              # what was written loads (key sets, via alphas)
    return w


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("name", help="a shipped model (default, xtrans)")
    p.add_argument("anchors", nargs="+", metavar="NOISE:ALPHA",
                   help="noise std at linear grey 0.18 and the blend factor there (1 = fine-tuned)")
    p.add_argument("-w", dest="weights_dir", type=Path, help="weights folder (default: the package's)")
    p.add_argument("--via", action="append", metavar="ALPHA:EXPORT.safetensors|ALPHA:mix=T", default=None,
                   help="route the path through this export at this alpha, or (mix=T) through start + T x (fine-tuned "
                        "- start) (repeatable; alphas increasing in (0, 1))")
    p.add_argument("--no-via", action="store_true", help="drop the via points the model has")
    args = p.parse_args(argv)
    anchors = [[float(x) for x in a.split(":")] for a in args.anchors]
    via = None
    if args.via:
        via = []
        for v in args.via:
            alpha, what = v.split(":", 1)
            via.append((float(alpha), float(what[4:]) if what.startswith("mix=") else Path(what)))
    elif args.no_via:
        via = []
    print(f"wrote {blend_shipped(args.name, anchors, args.weights_dir, via=via)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
