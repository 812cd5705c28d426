"""The timing loops of the benchmarks: warm-up calls, then the median of timed calls."""

from __future__ import annotations

import statistics
import time
from typing import Callable


def median_seconds(call: Callable[[], object], reps: int, warmup: int = 2) -> float:
    """Median wall time of ``call()`` over ``reps`` calls, after ``warmup`` untimed ones (lazy
    initialisation, allocator and cache warm-up)."""
    return interleaved_medians({"call": call}, reps, warmup)["call"]


def interleaved_medians(calls: dict[str, Callable[[], object]], reps: int, warmup: int = 2) -> dict[str, float]:
    """Median wall time of each call, timed in turn within every round: slow drift of the
    machine (clock speed, a neighbour's load) then moves all of them alike, so their ratios
    hold where back-to-back blocks of one call each would not."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(reps):
        for name, call in calls.items():
            began = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - began)
    return {name: statistics.median(taken) for name, taken in times.items()}
