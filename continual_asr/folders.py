"""Output folders, checked before anything long runs (light: no torch, so `casr plot` stays fast)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from .errors import CasrError


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
