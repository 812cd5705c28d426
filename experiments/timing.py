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
    hold where back-to-back blocks of one call each would not. The order rotates from round to
    round, so each call follows each other equally often: what one call leaves behind (freed
    memory, a warm cache) does not always help or hinder the same one, which moved two
    training steps' ratio by up to 5 % when the order was fixed."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    names = list(calls)
    times: dict[str, list[float]] = {name: [] for name in calls}
    for round_index in range(reps):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            began = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - began)
    return {name: statistics.median(taken) for name, taken in times.items()}
