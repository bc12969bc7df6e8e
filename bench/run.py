#!/usr/bin/env python3
"""Run the conversion benchmark (same as `pyloader bench`): python bench/run.py [--small] [--repeat N] [FILES]."""

import sys

from pyloader.bench import main

if __name__ == "__main__":
    sys.exit(main())
