"""Errors that the command line reports as one line, without a traceback."""

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
