"""The cache folder: every entry built once, whoever asks for it and however many ask at once.

Every kind of entry (synthesized audio with its manifests, features, tokenizers, base models,
single-task adapters) is built the same way, by :func:`cached` or, where the building spans
more than one call, :class:`EntryLock`:

- an inter-process lock per entry (``filelock``: ``flock`` on a hidden ``.NAME.lock`` beside
  the entry, released by the operating system when its holder dies, so a killed process never
  blocks the next one);
- the entry is built into a private temporary path (host, process and a random part in its
  name) and published with one rename, so readers never see part of an entry;
- a process that finds the entry being built waits for the lock, then reads what was built;
- an entry that fails to load (truncated, corrupt, of another format) costs one log line: it
  is moved aside (``NAME.damaged-TIME``) and built again.

Loading a sound entry through :func:`cached` takes no lock. Who may share one cache folder: docs/usage.md, "Sharing a cache folder".
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import Callable, TypeVar

from filelock import FileLock, Timeout

log = logging.getLogger("continual_asr")
T = TypeVar("T")
COMPLETE = "complete.json"  # a folder entry's list of files and sizes, written last
WAIT_NOTICE_SECONDS = 2.0  # how long to wait for a lock before saying so in the log


def lock_path(entry: Path) -> Path:
    return entry.with_name(f".{entry.name}.lock")


def private_path(entry: Path) -> Path:
    """A temporary path beside ``entry`` that no other process (on any machine) will use."""
    tag = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    return entry.with_name(f".{entry.name}.tmp-{tag}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


class EntryLock:
    """The lock of one cache entry, for building that spans several calls (base-model
    pretraining, adapter extraction): ``acquire``, :meth:`load` (healing a damaged entry),
    :meth:`build` (into a temporary path, then published), ``release``. Also a context manager."""

    def __init__(self, entry: Path, what: str) -> None:
        self.entry = Path(entry)
        self.what = what
        self.entry.parent.mkdir(parents=True, exist_ok=True)
        # Group-writable, so users who share the folder through a group can take each other's locks.
        self._lock = FileLock(str(lock_path(self.entry)), mode=0o664, thread_local=False)

    def acquire(self) -> "EntryLock":
        try:
            self._lock.acquire(timeout=WAIT_NOTICE_SECONDS)
        except Timeout:
            log.info("%s %s: another process is building it; waiting", self.what, self.entry.name)
            self._lock.acquire()
        # Leftovers of a builder that was killed: nobody else builds this entry while we hold the lock.
        for stale in self.entry.parent.glob(f".{self.entry.name}.tmp-*"):
            _remove(stale)
        return self

    def release(self) -> None:
        if self._lock.is_locked:
            self._lock.release()

    def __enter__(self) -> "EntryLock":
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()

    def load(self, load: Callable[[Path], T]) -> T | None:
        """The entry as ``load`` reads it; None when absent or damaged (then moved aside).
        Call it holding the lock: nobody can be publishing the entry meanwhile."""
        return load_entry(self.entry, load, self.what, heal=True)

    def temporary(self) -> Path:
        return private_path(self.entry)

    def build(self, build: Callable[[Path], T]) -> T:
        """``build(temporary path)``, then :meth:`publish`; the temporary path is removed if
        building fails. Call it holding the lock. Returns what ``build`` returns."""
        built = self.temporary()
        try:
            value = build(built)
            self.publish(built)
        finally:
            if built.exists():
                _remove(built)
        return value

    def publish(self, built: Path) -> None:
        """Rename ``built`` (from :meth:`temporary`) onto the entry, in one step (a file replaces
        a file atomically; a folder cannot replace a folder, but under the lock none is there
        unless it was found damaged and could not be moved)."""
        if self.entry.is_dir():
            _remove(self.entry)
        os.replace(built, self.entry)


def load_entry(entry: Path, load: Callable[[Path], T], what: str, heal: bool = False) -> T | None:
    """``load(entry)``; None when there is no entry. A damaged entry is None too and, with
    ``heal`` (only under the entry's lock), moved aside with one log line."""
    if not entry.exists():
        return None
    try:
        return load(entry)
    except Exception as exc:  # whatever a truncated or foreign file makes a reader raise
        if heal:
            reason = (str(exc).splitlines() or [""])[0].split(". ")[0]  # its first sentence
            set_aside(entry, f"{exc.__class__.__name__}: {reason}", what)
        return None


def set_aside(entry: Path, why: str, what: str) -> Path:
    aside = entry.with_name(f"{entry.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    os.replace(entry, aside)
    log.warning("%s %s is damaged (%s); moved aside to %s and built again", what, entry, why, aside.name)
    return aside


def cached(entry: Path, load: Callable[[Path], T], build: Callable[[Path], T], what: str) -> T:
    """The cache entry at ``entry``: ``load(entry)`` if it is there and sound, else
    ``build(temporary_path)`` (which writes the entry there and returns its value), published
    atomically. Any number of processes may call this for one entry at once: one builds, the
    others wait and load."""
    entry = Path(entry)
    found = load_entry(entry, load, what)
    if found is not None:
        return found
    with EntryLock(entry, what) as lock:
        found = lock.load(load)
        return found if found is not None else lock.build(build)


# ---- folder entries ----------------------------------------------------------------------------
def seal_folder(folder: Path) -> None:
    """Write ``complete.json`` (every file's size) into a folder entry, last, before publishing."""
    sizes = {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}
    (folder / COMPLETE).write_text(json.dumps(sizes, indent=0), encoding="utf-8")


def check_folder(folder: Path) -> Path:
    """``folder`` if every file its ``complete.json`` lists is there with its size; else an error."""
    sizes = json.loads((folder / COMPLETE).read_text(encoding="utf-8"))
    for name, size in sizes.items():
        actual = (folder / name).stat().st_size
        if actual != size:
            raise OSError(f"{name} has {actual} bytes, {size} were written")
    return folder
