"""Utterance manifests: NeMo-style JSON Lines, CSV/TSV with a header, or lhotse manifests
(continual_asr/data/lhotse_manifests.py), read into checked rows.

JSON Lines (``.jsonl``/``.json``): one object per line with ``audio_filepath``, ``text`` and
optionally ``duration`` (seconds). CSV (``.csv``) and TSV (``.tsv``, read without quoting, as
Common Voice writes it): a header row naming an audio path column (one of ``PATH_COLUMNS``), a
transcript column (one of ``TEXT_COLUMNS``) and optionally ``duration``. Relative audio paths
are resolved against the manifest's folder.

Nothing here raises on bad data: every problem becomes a :class:`Problem` naming the file and
line, so that one pass can list them all (``casr data``) and the caller decides whether they
stop the run or are skipped (``--skip-bad``).
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .text import normalize_text, unsupported_characters

MANIFEST_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".jsonl.gz")  # .jsonl.gz (and lhotse .jsonl): lhotse
PATH_COLUMNS = ("audio_filepath", "path", "audio", "file", "filename")
TEXT_COLUMNS = ("text", "transcript", "sentence", "transcription")


def is_manifest_name(path: str | Path) -> bool:
    return str(path).lower().endswith(MANIFEST_SUFFIXES)


def display_path(path: str | Path) -> str:
    """``path`` relative to the working folder when it lies inside it (shorter messages), else absolute."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


@dataclass(frozen=True)
class Problem:
    """One bad utterance (or a bad manifest as a whole, ``line`` 0)."""

    file: str  # absolute path of the manifest
    line: int
    message: str

    def __str__(self) -> str:
        where = display_path(self.file) + (f":{self.line}" if self.line else "")
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class ManifestRow:
    line: int
    raw_path: str  # as written in the manifest: seeds conditions independently of where the corpus lives
    audio: Path  # resolved
    text: str  # normalised
    duration: float | None  # as declared, if declared
    # A stretch of a longer recording (lhotse): where it starts, in seconds; None: the whole file.
    offset: float | None = None


def read_manifest(path: Path, limit: int = 0) -> tuple[list[ManifestRow], list[Problem]]:
    """The first ``limit`` (0 = all) utterance lines of ``path``: the good rows and the problems.

    Bad lines count towards ``limit``, so a capped run reads the same lines whatever is wrong
    with them.
    """
    file = str(Path(path).resolve())
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return [], [Problem(file, 0, "manifest not found")]
    except IsADirectoryError:
        return [], [Problem(file, 0, "is a folder, not a manifest")]
    except OSError as exc:
        return [], [Problem(file, 0, f"manifest unreadable ({exc.strerror or exc})")]
    from .lhotse_manifests import is_lhotse_manifest, read_lhotse

    if is_lhotse_manifest(Path(file)):
        rows, problems, seen = read_lhotse(Path(file), limit)
    else:
        reader = _read_jsonl if is_jsonl_manifest(Path(path)) else _read_csv
        rows, problems, seen = reader(Path(file), data, limit)
    if not seen and not problems:
        problems.append(Problem(file, 0, "manifest has no utterances"))
    return rows, problems


def is_jsonl_manifest(path: Path) -> bool:
    """A NeMo-style JSON Lines manifest: neither lhotse's nor CSV/TSV."""
    from .lhotse_manifests import is_lhotse_manifest

    return not is_lhotse_manifest(Path(path)) and Path(path).suffix.lower() not in (".csv", ".tsv")


def manifest_field(path: Path, field: str) -> dict[int, str]:
    """Line number (as :func:`read_manifest` counts them) -> ``field`` of that row, for the rows
    of a JSON Lines manifest that have it (empty for CSV, TSV, lhotse or unreadable manifests)."""
    path = Path(path)
    if not is_jsonl_manifest(path):
        return {}
    try:
        data = path.read_bytes()
    except OSError:
        return {}
    values = {}
    for number, raw in enumerate(data.splitlines(), start=1):
        try:
            row = json.loads(raw.decode("utf-8").lstrip("\ufeff")) if raw.strip() else None
        except (UnicodeDecodeError, ValueError):
            continue
        if isinstance(row, dict) and field in row:
            values[number] = str(row[field])
    return values


def utterance_voices(manifest: str | Path, lines: list[int]) -> list[str] | None:
    """The ``voice`` of each of ``lines`` of ``manifest`` (synthesized speech names one per row),
    or None where the manifest is gone or some line has none."""
    voices = manifest_field(Path(manifest), "voice")
    if not voices or not all(line in voices for line in lines):
        return None
    return [voices[line] for line in lines]


def _read_jsonl(path: Path, data: bytes, limit: int) -> tuple[list[ManifestRow], list[Problem], int]:
    rows: list[ManifestRow] = []
    problems: list[Problem] = []
    seen = 0
    for number, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        if limit and seen >= limit:
            break
        seen += 1
        try:
            line = raw.decode("utf-8").lstrip("\ufeff")
        except UnicodeDecodeError as err:
            problems.append(Problem(str(path), number, f"not valid UTF-8 ({err.reason} at byte {err.start})"))
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            problems.append(Problem(str(path), number, f"not valid JSON ({err.msg} at column {err.colno})"))
            continue
        if not isinstance(record, dict):
            problems.append(Problem(str(path), number, f"not a JSON object (got {type(record).__name__})"))
            continue
        fields = {"audio_filepath": record.get("audio_filepath"), "text": record.get("text"),
                  "duration": record.get("duration")}
        offset, problem = _offset(record.get("offset"), fields["duration"])
        if problem:
            problems.append(Problem(str(path), number, problem))
            continue
        add_row(rows, problems, path, number, fields, offset=offset, utterance_id=f"line {number}")
    return rows, problems, seen


def _read_csv(path: Path, data: bytes, limit: int) -> tuple[list[ManifestRow], list[Problem], int]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        return [], [Problem(str(path), line, f"not valid UTF-8 ({err.reason} at byte {err.start})")], 0
    tsv = path.suffix.lower() == ".tsv"
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if tsv else ",",
                        quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL)
    header = [h.strip().lower() for h in next(reader, [])]
    columns = {}
    for role, names in (("audio_filepath", PATH_COLUMNS), ("text", TEXT_COLUMNS), ("duration", ("duration",))):
        found = next((n for n in names if n in header), None)
        if found is None and role != "duration":
            return [], [Problem(str(path), 1, f"header has no {role.replace('_filepath', ' path')} column "
                                               f"(one of: {', '.join(names)})")], 0
        if found is not None:
            columns[role] = (found, header.index(found))
    rows: list[ManifestRow] = []
    problems: list[Problem] = []
    seen = 0
    for record in reader:
        if not any(cell.strip() for cell in record):
            continue
        if limit and seen >= limit:
            break
        seen += 1
        fields = {role: (record[i] if i < len(record) else None) for role, (_, i) in columns.items()}
        add_row(rows, problems, path, reader.line_num, fields, {r: n for r, (n, _) in columns.items()})
    return rows, problems, seen


def add_row(rows: list[ManifestRow], problems: list[Problem], path: Path, number: int, fields: dict[str, Any],
            names: dict[str, str] | None = None, offset: float | None = None, utterance_id: str = "") -> None:
    """Check one record's fields; append a row or a problem. ``offset``: the utterance is the
    stretch of the file from ``offset`` lasting ``duration`` (``utterance_id`` names it)."""
    names = names or {}
    problem = None
    for role in ("audio_filepath", "text"):
        name = names.get(role, role)
        if fields.get(role) is None or (role == "audio_filepath" and fields[role] == ""):
            problem = f"missing field '{name}'"
        elif not isinstance(fields[role], str):
            problem = f"field '{name}' must be a string, got {fields[role]!r}"
        if problem:
            problems.append(Problem(str(path), number, problem))
            return
    duration, problem = _duration(fields.get("duration"))
    raw_text = fields["text"]
    text = normalize_text(raw_text)
    unsupported = unsupported_characters(raw_text)
    if problem is None and unsupported:
        problem = ("transcript has characters outside the tokenizer's alphabet (a-z, 0-9, '): "
                   + " ".join(repr(c) for c in unsupported[:10]))
    if problem is None and not text:
        problem = ("empty transcript" if not raw_text.strip()
                   else f"empty transcript after normalisation ({_short(raw_text)})")
    if problem:
        problems.append(Problem(str(path), number, problem))
        return
    audio = Path(fields["audio_filepath"])
    # raw_path seeds an utterance's noise and names it in messages: a stretch says which one.
    raw = fields["audio_filepath"] if offset is None else f"{fields['audio_filepath']} ({utterance_id}, from {offset:g} s)"
    rows.append(ManifestRow(number, raw, audio if audio.is_absolute() else path.parent / audio, text, duration,
                            offset))


def _offset(value: Any, duration: Any) -> tuple[float | None, str | None]:
    """NeMo's ``offset``: the utterance is the stretch of the file from there, lasting ``duration``
    (0: the whole file, whose length ``duration`` is checked against)."""
    if value is None or (value == 0 and not isinstance(value, bool)):
        return None, None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        return None, f"field 'offset' must be a number of seconds >= 0, got {value!r}"
    if duration is None:
        return None, "field 'offset' needs 'duration' (how long the stretch from the offset lasts)"
    return float(value), None


def _duration(value: Any) -> tuple[float | None, str | None]:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, None
    try:
        seconds = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        return None, f"field 'duration' must be a positive number of seconds, got {value!r}"
    return seconds, None


def _short(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")
