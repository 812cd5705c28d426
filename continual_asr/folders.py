"""Output folders, checked before anything long runs (light: no torch, so `casr plot` stays fast)."""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from .errors import CasrError

RUN_LOCK = ".casr-run.lock"  # held by the process writing a run folder


def ensure_writable(folder: Path, what: str) -> Path:
    """``folder``, created if needed; a one-line error naming ``what`` when it cannot be written."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # A probe of this process's own: any number of processes may check one folder at once.
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise CasrError(f"{what} {folder}: not writable ({exc.strerror or exc})") from None
    return folder


@contextmanager
def run_folder_lock(out_dir: Path) -> Iterator[Path]:
    """Hold ``out_dir`` for one writer: a second process running into the same folder (the same
    command in two terminals, two sweeps over one OUT) would interleave checkpoints and results,
    so it stops with a one-line error instead. The lock is released when the process dies."""
    out_dir = ensure_writable(out_dir, "output folder")
    lock = FileLock(str(out_dir / RUN_LOCK), thread_local=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise CasrError(f"{out_dir}: another casr process is writing this run folder; wait for it to end, "
                        f"or give this run another --out") from None
    try:
        yield out_dir
    finally:
        lock.release()
