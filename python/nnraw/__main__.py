import sys

from nnraw.cli import main

sys.exit(main())
