"""nnraw's compiled torch ops, with their pure-PyTorch references.

Each public function runs the C++/CUDA kernel registered under ``torch.ops.nnraw`` and is usable
with autograd, ``torch.compile(fullgraph=True)`` and ``torch.library.opcheck``. Each op module also
holds a ``*_reference`` function in plain PyTorch: the test oracle, and the fallback (with a
warning) when the compiled library is missing.

    prelu.py     prelu, PReLU, prelu_reference
    ms_ssim.py   center_ms_ssim_l1, ms_ssim, ms_ssim_l1_loss and their references
    demosaic.py  edge_aware_demosaic, edge_aware_demosaic_reference, BAYER_PATTERNS
"""

from importlib import import_module

from nnraw.ops._library import HAVE_COMPILED, build_info, format_build_info

_WHERE = {
    "prelu": "prelu", "PReLU": "prelu", "prelu_reference": "prelu",
    "center_ms_ssim_l1": "ms_ssim", "center_ms_ssim_l1_reference": "ms_ssim",
    "ms_ssim": "ms_ssim", "ms_ssim_reference": "ms_ssim", "ms_ssim_l1_loss": "ms_ssim",
    "edge_aware_demosaic": "demosaic", "edge_aware_demosaic_reference": "demosaic",
    "BAYER_PATTERNS": "demosaic",
}

__all__ = ["HAVE_COMPILED", "build_info", "format_build_info", *_WHERE]


def __getattr__(name: str):
    # Lazy: `import nnraw.ops` stays cheap and each op module loads on first use.
    if name in _WHERE:
        return getattr(import_module(f"nnraw.ops.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'nnraw.ops' has no attribute {name!r}")
