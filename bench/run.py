#!/usr/bin/env python3
"""Clarion's benchmark: measures Clarion and its peers on this machine, in one run, and writes a
report (bench/results/<stamp>.json and .md). The driver lives in bench/clarion_bench (see
clarion_bench/driver.py); this file is the entry point `make bench` runs.

    python bench/run.py              # everything (about 10-15 minutes)
    python bench/run.py --quick      # a smaller version, under 2 minutes
"""

from __future__ import annotations

import sys

from clarion_bench.driver import cli

if __name__ == "__main__":
    sys.exit(cli())
