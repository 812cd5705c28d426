"""Finished runs without their checkpoints: what a study keeps, commits or publishes.

A run folder's checkpoint.pt (the model's weights, hundreds of kB to MBs per run) is what makes
folders too heavy to keep; everything a table, an interval or a report is made from is in
results.json and edits.json. ``casr archive`` copies those (and run.log) of every finished run
under a folder, keeping the layout (and adding each utterance's voice to an older edits.json
whose manifests are still there, so speaker analyses need only the archive), so `casr compare`,
`casr plot` and `casr sweep --report-only` work on the copy, and a sweep or a rerun into an archived folder reads the run back instead of
training it again (continual_asr.run_state.archived_run).
"""

from __future__ import annotations

import json
from pathlib import Path

from .data.manifest import utterance_voices
from .errors import CasrError
from .reporting.intervals import EDITS
from .reporting.runs import load_results
from .results import write_bytes_atomic, write_json_atomic

KEPT = ("results.json", EDITS, "run.log")
# A sweep's own: how long it took, its table, and the comparison table and plot its report writes
SWEEP_FILES = ("sweep_history.jsonl", "results.md", "compare.csv", "compare.png")


def finished_runs(source: Path) -> tuple[list[Path], list[Path]]:
    """The run folders under ``source`` (itself included): (finished, unfinished)."""
    finished, unfinished = [], []
    for path in sorted(Path(source).rglob("results.json")):
        try:
            results = load_results(path.parent)
        except CasrError:
            continue  # not a run's results.json (a corrupt one is reported by compare, not copied)
        (finished if results.get("complete") else unfinished).append(path.parent)
    return finished, unfinished


def with_voices(edits: dict) -> dict:
    """``edits`` with each utterance's voice added where the run did not keep it (runs from
    before 2026-11-30) and its manifests are still here, so the archive groups by speaker alone."""
    for sets in edits.get("utterances", {}).values():
        for where in sets.values():
            if "voices" not in where:
                voices = utterance_voices(where["manifest"], where["lines"])
                if voices is not None:
                    where["voices"] = voices
    return edits


def merged_history(kept: bytes, new: bytes) -> bytes:
    """An archive's sweep history with the lines of another sweep's that it lacks appended:
    archiving a second sweep's runs into an archive keeps what the first recorded."""
    lines = kept.decode("utf-8").splitlines()
    known = set(lines)
    lines += [line for line in new.decode("utf-8").splitlines() if line not in known]
    return "".join(f"{line}\n" for line in lines).encode("utf-8")


def archive_runs(source: Path, dest: Path) -> tuple[list[Path], list[Path]]:
    """Copy every finished run under ``source`` into ``dest`` at the same relative path (its
    results.json, edits.json and run.log, each written atomically), and a sweep's own files (a
    history already in ``dest`` gains the lines it lacks); returns (archived runs in ``dest``,
    unfinished runs left out)."""
    source, dest = Path(source), Path(dest)
    if not source.is_dir():
        raise CasrError(f"{source}: not a folder")
    finished, unfinished = finished_runs(source)
    if not finished:
        raise CasrError(f"{source}: no finished run to archive")
    if dest.resolve() == source.resolve() or source.resolve() in dest.resolve().parents:
        raise CasrError(f"{dest}: the archive must lie outside {source}")
    archived = []
    for run in finished:
        target = dest / run.relative_to(source)
        target.mkdir(parents=True, exist_ok=True)
        for name in KEPT:
            if not (run / name).is_file():
                continue
            if name == EDITS:  # compact (older runs were not: a seventh of the size), voices filled in
                write_json_atomic(target / name, with_voices(json.loads((run / name).read_bytes())), compact=True)
            else:
                write_bytes_atomic(target / name, (run / name).read_bytes())
        archived.append(target)
    for path in sorted(p for name in SWEEP_FILES for p in source.rglob(name)):
        if not (path.parent / "results.json").is_file():  # a run's own results.md is not a sweep's
            target = dest / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            data = path.read_bytes()
            if path.name == "sweep_history.jsonl" and target.is_file():
                data = merged_history(target.read_bytes(), data)
            write_bytes_atomic(target, data)
    return archived, unfinished
