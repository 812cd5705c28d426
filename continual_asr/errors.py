"""Errors that the command line reports as one line, without a traceback."""

from pathlib import Path
from typing import Any

# What a stopped command says after "interrupted" or "stopped by SIGTERM".
STOPPED_HINT = "what finished is kept (steps, pretraining and adapter epochs, sweep runs): the same command resumes"


class CasrError(Exception):
    """A problem with the user's input: reported as one line, exit status 2."""


class ConfigError(CasrError):
    """An invalid preset, config field or value."""


class StreamError(CasrError):
    """An unknown stream name or an invalid stream YAML field."""


class DataError(CasrError):
    """Missing, corrupt or unusable audio or transcripts."""


class TrainingError(CasrError):
    """Training cannot go on (for example a non-finite loss)."""


class ResultsError(CasrError):
    """A run folder without a usable results.json, or runs that cannot be compared."""


def read_yaml(path: Path, label: str, error: type[CasrError] = CasrError) -> Any:
    """``path`` parsed as YAML, or ``error`` with one line naming ``label`` and, for a syntax
    error, its line and problem (the config, stream and sweep files all read through here)."""
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise error(f"{label}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise error(f"{label}: not UTF-8 text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise error(f"{label}: not valid YAML{where} ({problem})") from None
