"""nnraw: joint demosaicing and denoising of camera raw files with a convolutional network.

The pipeline, one module per step::

    io/raw.py (read raw) -> encoding.py + ops.edge_aware_demosaic (pre-demosaic)
    -> noise/choose.py (the photo's noise profile) -> models/ + infer.py (network) + strength.py
    -> io/dng.py (write linear DNG)

convert.py runs these steps for ``nnraw convert``; training/ holds what only training needs. The
command line lives in cli.py; the darktable and GIMP adapters in plugins/ only call it.
"""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("nnraw")
except PackageNotFoundError:  # running from a source tree (PYTHONPATH=python)
    __version__ = "0.1.0+dev"

__all__ = ["__version__"]
