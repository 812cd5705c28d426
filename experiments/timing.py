"""The one timing loop of the benchmarks: warm-up calls, then the median of timed calls."""

from __future__ import annotations

import statistics
import time
from typing import Callable


def median_seconds(call: Callable[[], object], reps: int, warmup: int = 2) -> float:
    """Median wall time of ``call()`` over ``reps`` calls, after ``warmup`` untimed ones (lazy
    initialisation, allocator and cache warm-up)."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(reps):
        began = time.perf_counter()
        call()
        times.append(time.perf_counter() - began)
    return statistics.median(times)
