"""What every ``casr`` command shares: one-line errors and the parsing of common options."""

from __future__ import annotations

import functools
import sys

import click

from .errors import STOPPED_HINT, CasrError


def one_line_errors(command):
    """User errors end as one line on stderr and exit status 2, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from . import distributed
        from .errors import TrainingError

        try:
            return command(*args, **kwargs)
        except CasrError as exc:
            # Several processes may meet the same bad input, or one may fail alone (a non-finite
            # loss on its part of a batch): the first to stop says it, once.
            if distributed.first_to_fail() and (distributed.is_active() or distributed.is_main()):
                where = f" (process {distributed.rank()})" if isinstance(exc, TrainingError) and \
                    distributed.is_active() else ""
                click.echo(f"casr: error{where}: {exc}", err=True)
            sys.exit(2)
        except Exception:
            if distributed.peer_failed():  # our collective broke because another process stopped
                sys.exit(2)
            raise
        except KeyboardInterrupt:
            if distributed.is_main():  # Ctrl-C reaches every process: one says so
                click.echo(f"casr: interrupted; {STOPPED_HINT}", err=True)
            sys.exit(130)

    return wrapper


def parse_seeds(text: str) -> list[int]:
    from .errors import ConfigError

    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--seeds must be integers separated by commas, got '{text}'") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds must name distinct seeds, got '{text}'")
    return seeds
