"""Whether other work already holds the cores a run is about to give its torch threads.

Two torch threads beside another CPU-bound process on two cores make every training step 20 to
30 times slower (docs/performance.md, "Two threads beside another process"): each operator
splits its work between the threads and waits for the one without a core. One thread fewer
costs a small fraction of that. So a run looks at the cores for a moment before it starts and
warns when fewer are idle than it has threads. It reads /proc/stat (Linux); elsewhere it says
nothing. The load average would not do: it still counts a run that ended a minute ago.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

PROC_STAT = Path("/proc/stat")
IDLE_FIELDS = (3, 4)  # idle, iowait; then irq, softirq, steal count as taken (guest is inside user)
COUNTED_FIELDS = 8  # user nice system idle iowait irq softirq steal


def cpu_times(text: str, cpus: set[int] | None = None) -> dict[int, tuple[int, int]]:
    """(busy, total) clock ticks since boot of each core in /proc/stat's ``text`` (``cpus``: only these)."""
    times = {}
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or not name[3:].isdigit():
            continue
        core = int(name[3:])
        if cpus is not None and core not in cpus:
            continue
        ticks = [int(v) for v in rest.split()[:COUNTED_FIELDS]]
        idle = sum(ticks[i] for i in IDLE_FIELDS if i < len(ticks))
        times[core] = (sum(ticks) - idle, sum(ticks))
    return times


def busy_cores(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]]) -> float:
    """How many cores' worth of time was taken between two ``cpu_times`` readings."""
    busy = 0.0
    for core, (busy_after, total_after) in after.items():
        if core in before:
            elapsed = total_after - before[core][1]
            busy += (busy_after - before[core][0]) / elapsed if elapsed > 0 else 0.0
    return busy


def sample_busy_cores(seconds: float = 0.15, stat: Path = PROC_STAT) -> tuple[float, int] | None:
    """(cores busy over the next ``seconds``, cores this process may use), or None where the OS
    does not say (no /proc/stat)."""
    cpus = set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    try:
        before = cpu_times(stat.read_text(), cpus)
        time.sleep(seconds)
        after = cpu_times(stat.read_text(), cpus)
    except (OSError, ValueError):
        return None
    return (busy_cores(before, after), len(after)) if after else None


def threads_that_fit(threads: int, busy: float, cores: int) -> int | None:
    """How many threads the idle cores hold when ``threads`` threads would wait on each other
    (``busy`` of ``cores`` cores taken); None when they fit, or when one thread waits on nothing."""
    idle = max(0.0, cores - busy)
    if threads < 2 or threads <= idle + 0.25:  # a quarter core of noise: a shell, a logger
        return None
    return max(1, int(idle + 0.5))


def busy_cores_warning(threads: int, remedy: Callable[[int], str]) -> str | None:
    """A one-line warning when other work holds the cores that ``threads`` torch threads are
    about to need (``remedy``: what to do, given the threads that fit), else None."""
    sample = sample_busy_cores()
    if sample is None:
        return None
    busy, cores = sample
    fits = threads_that_fit(threads, busy, cores)
    if fits is None:
        return None
    return (f"{threads} torch threads, but only {max(0.0, cores - busy):.1f} of the {cores} cores are idle; threads "
            f"that wait for a core can make every step 20 to 30 times slower (docs/performance.md): {remedy(fits)}")
