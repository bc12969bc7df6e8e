"""`python -m pyloader_bench [options]`: the same as `pyloader bench`."""

import sys

from pyloader_bench.cli import main

sys.exit(main())
