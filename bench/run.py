#!/usr/bin/env python3
"""Run the conversion benchmark (same as `pyloader bench`): python bench/run.py [--small] [--repeat N] [FILES].

The benchmark is the package bench/pyloader_bench, installed with pyloader (`python -m pyloader_bench` there)."""

import sys

from pyloader_bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
