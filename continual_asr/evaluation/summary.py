"""The metrics of a run, from its results.json alone: a ``metrics`` block per step and a summary.

Everything here is recomputed from ``base_wer``, ``wer_matrix``, ``steps`` and (when present)
``references`` and ``test_audio_seconds``, so an old results.json gets the same numbers as a
new one, and ``casr plot`` needs neither model nor data.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import metric_registry as registry
from .metrics import real_time_factor

ROLES = ("single-task", "joint")


def wer_rows(results: dict) -> np.ndarray:
    """The WER matrix extended by the base model: row 0 = ``base_wer``, row k = after task k;
    every column (base task, stream tasks, zero-shot)."""
    columns = results["columns"]
    return np.array([[results["base_wer"][c] for c in columns]] + list(results["wer_matrix"]), dtype=float)


def reference_columns(results: dict) -> dict[str, dict[int, float]]:
    """role -> {learned column k: reference WER on task k} from the stored ``references``."""
    columns = results["columns"]
    found: dict[str, dict[int, float]] = {}
    for role in ROLES:
        wers = results.get("references", {}).get(role, {}).get("wer", {})
        found[role] = {columns.index(task): value for task, value in wers.items() if task in columns}
    return found


def compute_metrics(results: dict) -> dict[str, Any]:
    """``{"per_step": [metrics after step 0 (base model), 1, ...], "summary": {...}}``: every
    metric of the registry (evaluation/metric_registry.py)."""
    rows = wer_rows(results)
    learned, zero_shot = rows[:, :-1], rows[:, -1]
    names = results["columns"][:-1]
    refs = reference_columns(results)
    audio = sum(results.get("test_audio_seconds", {}).values())
    eval_seconds = [results["base_model"]["eval_seconds"]] + [s["eval_seconds"] for s in results["steps"]]
    per_step = []
    for k in range(len(rows)):
        inputs = registry.StepInputs(learned, zero_shot, k, names, refs, real_time_factor(eval_seconds[k], audio))
        per_step.append({m.key: m.compute(inputs) for m in registry.STEP_METRICS})
    inputs = registry.SummaryInputs(results, per_step, eval_seconds, audio)
    summary: dict[str, Any] = {}
    for metric in registry.SUMMARY_METRICS:
        *parents, name = metric.key.split(".")
        block = summary
        for part in parents:
            block = block.setdefault(part, {})
        block[name] = metric.compute(inputs)
    return {"per_step": per_step, "summary": summary}


def attach_metrics(results: dict) -> dict:
    """Store the metrics in ``results`` (only adds keys): ``base_model.metrics``,
    ``steps[k].metrics`` and ``summary``. Returns ``results``."""
    metrics = compute_metrics(results)
    results["base_model"]["metrics"] = metrics["per_step"][0]
    for step, block in zip(results["steps"], metrics["per_step"][1:]):
        step["metrics"] = block
    results["summary"] = metrics["summary"]
    return results
