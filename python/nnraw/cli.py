"""The `nnraw` command line: the one interface that the darktable and GIMP adapters use.

Each sub-command is declared here and carried out by the module that owns that step of the
pipeline (imported lazily, so `nnraw --version` stays fast).
"""

from __future__ import annotations

import argparse
import os
import sys

# Large-page allocations for torch's CPU allocator: read once when torch loads; makes faulting in a
# 24 MP float image several times cheaper (measured in bench/ops_demosaic.py, see docs/BENCHMARKS.md).
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import nnraw


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="show the build: torch, CUDA, compiled kernels, shipped models")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_run_info)


def _run_info(args: argparse.Namespace) -> int:
    import json

    try:
        import torch  # noqa: F401
    except ImportError as exc:
        from nnraw._build import recorded_build

        built = (recorded_build() or {}).get("torch")
        need = f"torch=={built.split('+')[0]}" if built else "torch"
        print(f"nnraw {nnraw.__version__}: torch cannot be imported ({exc}); this nnraw needs {need}: "
              f"`pip install {need}` into the environment that runs nnraw", file=sys.stderr)
        return 1
    from nnraw.models import describe_models, format_models
    from nnraw.ops._library import build_info, format_build_info

    info = build_info()
    info["models"] = describe_models()
    print(json.dumps(info, indent=2) if args.json else format_build_info(info) + "\n" + format_models(info["models"]))
    # exit status 1 when the compiled ops were built for another torch (they cannot load)
    return 1 if info["torch_mismatch"] else 0


def _add_convert(sub: argparse._SubParsersAction) -> None:
    from nnraw.convert import add_arguments, run

    p = sub.add_parser("convert", help="raw file(s) -> demosaiced, denoised linear DNG")
    add_arguments(p)
    p.set_defaults(func=run)


def _add_train(sub: argparse._SubParsersAction) -> None:
    from nnraw.training.train import add_arguments, run

    p = sub.add_parser("train", help="train a network from a TOML config (see configs/); torchrun for DDP")
    add_arguments(p)
    p.set_defaults(func=run)


def _add_profile(sub: argparse._SubParsersAction) -> None:
    from nnraw.noise.profile import add_arguments, run

    p = sub.add_parser("profile", help="fit a noise profile (var = a*x + b) from flat-field raws")
    add_arguments(p)
    p.set_defaults(func=run)


def _add_dataset(sub: argparse._SubParsersAction) -> None:
    from nnraw.training.dataset import add_arguments, run

    p = sub.add_parser("dataset", help="build training data (clean linear camera RGB) from raws and photos")
    add_arguments(p)
    p.set_defaults(func=run)


def _add_install_plugin(sub: argparse._SubParsersAction) -> None:
    from nnraw.install_plugin import add_arguments, run

    p = sub.add_parser("install-plugin", help="install the darktable or GIMP adapter into your configuration")
    add_arguments(p)
    p.set_defaults(func=run)


def _add_dng_to_tiff(sub: argparse._SubParsersAction) -> None:
    from nnraw.io.export_tiff import add_arguments, run

    p = sub.add_parser("dng-to-tiff", help="a linear DNG written by nnraw -> linear float32 RGB TIFF (GIMP loader)")
    add_arguments(p)
    p.set_defaults(func=run)


def _add_denoise_rgb(sub: argparse._SubParsersAction) -> None:
    from nnraw.denoise_rgb import add_arguments, run

    p = sub.add_parser("denoise-rgb", help="denoise an already-demosaiced RGB image (PNG/TIFF)")
    add_arguments(p)
    p.set_defaults(func=run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnraw",
        description="Joint demosaicing and denoising of camera raw files; writes linear DNG.",
    )
    parser.add_argument("--version", action="version", version=f"nnraw {nnraw.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_info(sub)
    _add_convert(sub)
    _add_profile(sub)
    _add_dataset(sub)
    _add_denoise_rgb(sub)
    _add_train(sub)
    _add_install_plugin(sub)
    _add_dng_to_tiff(sub)
    return parser


#: Exit status when the reader of our output went away (`nnraw info | head -3`): 128 + SIGPIPE, as a
#: program killed by the signal reports it in a shell.
EXIT_BROKEN_PIPE = 141


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)   # usage errors: argparse prints them and exits with 2
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # here, not at exit, so that a closed pipe is caught below
        return code
    except KeyboardInterrupt:
        print("nnraw: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into `head`, `less` or `grep -m1` that stopped reading: end quietly. Python
        # would flush stdout again at exit and print a traceback; point it at /dev/null first.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
