"""nnraw: joint demosaicing and denoising of camera raw files with a convolutional network.

The pipeline, one module per step::

    raw.py (read raw) -> ops.edge_aware_demosaic (pre-demosaic) -> models/ + infer.py (network)
    -> dng.py (write linear DNG)

The command line lives in cli.py; the darktable and GIMP adapters in plugins/ only call it.
"""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("nnraw")
except PackageNotFoundError:  # running from a source tree (PYTHONPATH=python)
    __version__ = "0.1.0+dev"

__all__ = ["__version__"]
