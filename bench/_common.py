"""Helpers shared by the benchmarks: medians, ratios, peak memory. Benchmarks print; they never
assert on time (these machines are noisy)."""

from __future__ import annotations

import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def median_time(fn: Callable[[], object], repeat: int = 5) -> float:
    """Median wall time of ``fn()`` over ``repeat`` runs, in seconds."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_rss_mb(children: bool = False) -> float:
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / 1024.0


def report(name: str, value: float, anchor_name: str, anchor: float, unit: str = "s",
           target: str = "") -> None:
    """Print one benchmark line: value, anchor and the ratio value/anchor."""
    ratio = value / anchor if anchor else float("inf")
    extra = f"   target: {target}" if target else ""
    print(f"{name:<38} {value:10.4f} {unit}   {anchor_name:<28} {anchor:10.4f} {unit}   "
          f"ratio {ratio:7.2f}x{extra}", flush=True)
