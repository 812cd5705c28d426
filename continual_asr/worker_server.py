"""Where a local sweep's workers and ``--nproc`` processes come from: forked from a server that
imported casr once.

Each run of a ``--jobs N`` sweep gets a fresh process (its own threads, memory and CUDA state), and
``casr run --nproc N`` starts N of them. A spawned process spends its first seconds importing torch
and avalanche (about 15 s on a 2-core laptop), every time again. multiprocessing's "forkserver"
start method pays that once: a server process imports casr, and every worker is forked from it,
ready to run. ``start_early`` starts the server while the command itself is still importing, so
the two imports overlap on two cores.
Light on purpose: the commands import this module before anything heavy.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from multiprocessing.context import BaseContext

PRELOAD = ["continual_asr.sweep"]  # what every worker needs: the runner, the strategies, torch, avalanche


def worker_context() -> BaseContext:
    """The pool's start method: forkserver with casr preloaded where the platform has it, else spawn."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)  # no effect once the server runs: it already has them
    return context


def start_early() -> None:
    """Start the worker server now, so that its import overlaps whatever this process does next."""
    if worker_context().get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


def end_with_sweep(sweep: int) -> None:
    """The pool's initializer: end this worker once the sweep (process ``sweep``) or the worker's
    parent is gone (the forkserver exits with the sweep; spawned, the parent is the sweep), killed
    or ended by a signal that never reached its pool. A run left going would keep writing into a
    folder the next sweep resumes; its finished steps are safe (the checkpoint is written
    atomically). As the initializer it covers a worker still waiting for its run, which would
    otherwise wait forever."""
    parent = os.getppid()
    thread_lock_for_progress_bars()

    def watch() -> None:
        while os.getppid() == parent and _running(sweep):
            time.sleep(1.0)
        os._exit(143)

    threading.Thread(target=watch, name="end-with-sweep", daemon=True).start()


def thread_lock_for_progress_bars() -> None:
    """tqdm guards its bars with a multiprocessing lock by default: a semaphore that a process
    ended by a signal leaves behind, and that the resource tracker it shares with the server's
    other processes then reports as leaked. Each process draws its own bars: a thread lock serves."""
    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process under a reused id: treat as alive
        pass
    return True
