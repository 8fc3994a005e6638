"""`python -m nnraw.ops [--check]`: print what the compiled op library holds.

With --check, exit with status 1 when the compiled library is missing (used by `make install`).
"""

import sys

from nnraw.ops._library import HAVE_COMPILED, format_build_info

print(format_build_info())
if "--check" in sys.argv[1:] and not HAVE_COMPILED:
    print("nnraw: the compiled op library was not built or cannot be loaded", file=sys.stderr)
    sys.exit(1)
