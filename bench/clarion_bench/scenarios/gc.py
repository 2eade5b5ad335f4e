"""The latency scenario again on a server with Python's default garbage collector settings
(`CLARION_GC_TUNING=0`), for a before/after of Clarion's GC tuning in the same run."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clarion_bench.scenarios.latency import personal_latency

DEFAULT_GC = {"CLARION_GC_TUNING": "0"}


def latency_gc_default(
    binary: Path, cfg: argparse.Namespace, node: str, note: Callable[[str], None]
) -> dict[str, Any]:
    return personal_latency(binary, cfg, node, note, env=DEFAULT_GC)
