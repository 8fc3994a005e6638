"""`python -m nnraw.ops`: print what the compiled op library holds."""

from nnraw.ops._library import format_build_info

print(format_build_info())
