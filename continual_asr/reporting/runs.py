"""Run folders: reading a run's results.json, and the reference runs of a stream.

A reference run is a run of the same stream (same task columns) whose diagonal W[k, k] serves
as the reference WER on task k. Its role comes from its strategy: ``adapter-oracle`` routes
each test set through the adapter trained on that task alone from the base model (the
single-task reference, as in the A-AF paper); ``joint`` trains on all data of every task so far.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import ResultsError

REFERENCE_ROLES = {"adapter-oracle": "single-task", "joint": "joint"}
REQUIRED = ("stream", "strategy", "columns", "tasks", "base_wer", "wer_matrix", "steps", "base_model")


def load_results(run_dir: Path | str) -> dict:
    """The results.json of ``run_dir``; a one-line error naming the folder when it is not a run."""
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        raise ResultsError(f"{run_dir}: no results.json (not a casr run folder)")
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{path}: not valid JSON ({exc.__class__.__name__})") from None
    missing = [key for key in REQUIRED if not isinstance(results, dict) or key not in results]
    if missing:
        raise ResultsError(f"{path}: not a casr results.json (missing {', '.join(missing)})")
    return results


def reference_wers(run_dirs: Iterable[Path | str], results: dict) -> dict:
    """``{role: {"runs": [folders], "wer": {task: mean reference WER}}}`` for ``results``' stream,
    each task's WER averaged over the reference runs of that role that reached it."""
    columns = results["columns"]
    found: dict[str, dict] = {}
    for run_dir in run_dirs:
        reference = load_results(run_dir)
        role = REFERENCE_ROLES.get(reference["strategy"])
        if role is None:
            valid = "; ".join(f"{r}: {s}" for s, r in REFERENCE_ROLES.items())
            raise ResultsError(f"{run_dir}: strategy '{reference['strategy']}' is not a reference run ({valid})")
        if reference["columns"] != columns:
            raise ResultsError(f"{run_dir}: a run of stream '{reference['stream']['name']}' with tasks "
                               f"{reference['columns']}; a reference must be a run of the same stream ({columns})")
        entry = found.setdefault(role, {"runs": [], "values": {}})
        entry["runs"].append(str(run_dir))
        for k, row in enumerate(reference["wer_matrix"], start=1):
            entry["values"].setdefault(columns[k], []).append(row[k])
    return {role: {"runs": entry["runs"],
                   "wer": {task: round(float(np.mean(v)), 4) for task, v in entry["values"].items()}}
            for role, entry in found.items()}
