"""Processes that share the preparation of a cold cache: synthesis, then features.

One pool serves a whole stream: it starts on first use (a warm cache starts none) and stays for
every task after it, so a task does not pay again for fresh interpreters that import casr (about a
second each). A job's items are cut into chunks whose results come back in item order, and each
result depends only on its own item, so any number of processes gives the same data (the tests
compare them).
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Sequence, TypeVar

from tqdm import tqdm

from ..errors import DataError
from ..results import usable_cores

Item = TypeVar("Item")
Result = TypeVar("Result")
# job(chunk, index of its first item, progress bar or None) -> one result per item of the chunk
Job = Callable[[Sequence[Item], int, "tqdm | None"], list[Result]]

# While no worker runs, a job of fewer items runs in this process: starting the workers costs more
# than they would save on it.
MIN_PARALLEL = 256


def data_processes(requested: int) -> int:
    """``requested``, or with 0 one per CPU core this process may use."""
    return requested or usable_cores()


class DataWorkers:
    """``processes`` spawned worker processes, started on first use; a context manager.

    With one process, or for a small job while none has started, jobs run in this process.
    """

    def __init__(self, processes: int = 1) -> None:
        self.processes = max(1, processes)
        self._pool: ProcessPoolExecutor | None = None

    def map(self, job: Job, items: Sequence[Item], bar: tqdm | None = None) -> list[Result]:
        """``job`` over ``items`` in chunks, its results in item order; ``job`` and the items must
        pickle (a module-level function or a dataclass instance) when workers run it."""
        small = len(items) < (2 * self.processes if self._pool else MIN_PARALLEL)
        if self.processes == 1 or small:
            return job(items, 0, bar)
        if self._pool is None:
            # spawn, not fork: a forked copy of a process holding torch's threads and a loaded espeak is unsafe
            self._pool = ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("spawn"))
        size = max(8, -(-len(items) // (4 * self.processes)))  # a few chunks per process balance the load
        futures = {self._pool.submit(job, items[start:start + size], start): start
                   for start in range(0, len(items), size)}
        done: dict[int, list[Result]] = {}
        try:
            for future in as_completed(futures):
                done[futures[future]] = future.result()
                if bar is not None:
                    bar.update(len(done[futures[future]]))
        except BrokenProcessPool:
            self.close()
            raise DataError(f"a data preparation worker process died (one of {self.processes}; out of memory?): "
                            "what finished is cached; rerun, or prepare in one process with --set "
                            "synthesis_processes=1") from None
        return [result for start in sorted(done) for result in done[start]]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def __enter__(self) -> "DataWorkers":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
