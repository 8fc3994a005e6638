"""Give a shipped network a noise blend with the published weights it was fine-tuned from
(nnraw.models.noise_blend): ``python -m nnraw.training.blend NAME NOISE:ALPHA ... [-w WEIGHTS_DIR]``.

Reads nnraw/weights/NAME.{safetensors,json}, maps the start named by its training config's
``model.init_from`` (demosaicnet's published weights: the demosaicnet package is a training-time
dependency, as for ``nnraw train``) and writes both back with ``noise_blend.anchors`` in the json
(temp names renamed). Run again with other anchors to change them; the fine-tuned weights stay as they are.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nnraw.models import WEIGHTS_DIR, load_model, save_model
from nnraw.models.bayer_joint import demosaicnet_state
from nnraw.models.noise_blend import alpha_for


def blend_shipped(name: str, anchors: list[list[float]], weights_dir: Path | None = None, note: str = "") -> Path:
    d = Path(weights_dir) if weights_dir else WEIGHTS_DIR
    config = json.loads((d / f"{name}.json").read_text())
    source = config.get("training", {}).get("config", {}).get("model", {}).get("init_from")
    if not source:
        raise ValueError(f"nnraw.training.blend: {name} was not fine-tuned from published weights "
                         "(no training.config.model.init_from in its json)")
    alpha_for(0.01, anchors)
    model = load_model(name, weights_dir=d)      # save_model writes a blended model's fine-tuned weights
    config["noise_blend"] = {"start": source, "anchors": [[float(n), float(a)] for n, a in anchors],
                             "note": note or "weights = start + alpha(noise at linear grey 0.18) x (fine-tuned - start)"}
    w, _ = save_model(model, config, name, d, start=demosaicnet_state(model, source))
    return w


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("name", help="a shipped model (default, xtrans)")
    p.add_argument("anchors", nargs="+", metavar="NOISE:ALPHA",
                   help="noise std at linear grey 0.18 and the blend factor there (1 = fine-tuned)")
    p.add_argument("-w", dest="weights_dir", type=Path, help="weights folder (default: the package's)")
    args = p.parse_args(argv)
    anchors = [[float(x) for x in a.split(":")] for a in args.anchors]
    print(f"wrote {blend_shipped(args.name, anchors, args.weights_dir)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
