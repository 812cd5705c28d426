"""The metrics of a run, from its results.json alone: a ``metrics`` block per step and a summary.

Everything here is recomputed from ``base_wer``, ``wer_matrix``, ``steps`` and (when present)
``references`` and ``test_audio_seconds``, so an old results.json gets the same numbers as a
new one, and ``casr plot`` needs neither model nor data.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .metrics import (average_wer, average_wer_tasks, backward_transfer, drift, forgetting, forward_transfer,
                      intransigence, max_drift, mean_or_none, real_time_factor, zero_shot_change)

ROLES = ("single-task", "joint")


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


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


def final_dev_mean(results: dict) -> float | None:
    """The mean dev WER over the learned tasks (base included, zero-shot not) after the last
    step: what choices are made on. None for a run without dev sets."""
    rows = results.get("dev_wer_matrix") or []
    values = [v for v in (rows[-1][:-1] if rows else []) if v is not None]
    return float(np.mean(values)) if values else None


def _step(learned: np.ndarray, zero_shot: np.ndarray, step: int, names: list[str], refs: dict,
          eval_rtf: float | None) -> dict[str, Any]:
    change, relative = zero_shot_change(zero_shot, step)
    lost = forgetting(learned, step)
    drifted = drift(learned, step)
    worst = max_drift(learned, step)
    return {
        "average_wer": _round(average_wer(learned, step)),
        "average_wer_tasks": _round(average_wer_tasks(learned, step)),
        "backward_transfer": _round(backward_transfer(learned, step)),
        "forgetting": {names[j]: _round(v) for j, v in enumerate(lost)},
        "mean_forgetting": _round(mean_or_none(list(lost))),
        "drift": {names[j]: _round(v) for j, v in enumerate(drifted)},
        "max_drift": {names[j]: _round(v) for j, v in enumerate(worst)},
        "mean_max_drift": _round(mean_or_none(list(worst))),
        "zero_shot_wer": _round(zero_shot[step]),
        "zero_shot_change": _round(change),
        "zero_shot_change_relative": _round(relative),
        "forward_transfer": _round(forward_transfer(learned, step, refs["single-task"])),
        "intransigence": _round(intransigence(learned, step, refs["joint"])),
        "eval_rtf": _round(eval_rtf),
    }


def compute_metrics(results: dict) -> dict[str, Any]:
    """``{"per_step": [metrics after step 0 (base model), 1, ...], "summary": {...}}``."""
    rows = wer_rows(results)
    learned, zero_shot = rows[:, :-1], rows[:, -1]
    names = results["columns"][:-1]
    refs = reference_columns(results)
    audio = sum(results.get("test_audio_seconds", {}).values())
    steps = results["steps"]
    eval_seconds = [results["base_model"]["eval_seconds"]] + [s["eval_seconds"] for s in steps]
    per_step = [_step(learned, zero_shot, k, names, refs, real_time_factor(eval_seconds[k], audio))
                for k in range(len(rows))]
    last = per_step[-1]
    tasks = results["tasks"]
    fwt = {tasks[k - 1]: per_step[k]["forward_transfer"] for k in range(1, len(rows))
           if per_step[k]["forward_transfer"] is not None}
    intr = {tasks[k - 1]: per_step[k]["intransigence"] for k in range(1, len(rows))
            if per_step[k]["intransigence"] is not None}
    trained = [s["parameters"]["trained"] for s in steps]
    summary = {
        "steps_done": len(steps),
        "final_mean_dev_wer": _round(final_dev_mean(results)),
        "final_mean_wer": last["average_wer"],
        "final_mean_wer_tasks": last["average_wer_tasks"],
        "backward_transfer": last["backward_transfer"],
        "forgetting": last["forgetting"],
        "mean_forgetting": last["mean_forgetting"],
        "drift": last["drift"],
        "max_drift": last["max_drift"],
        "mean_max_drift": last["mean_max_drift"],
        "zero_shot_wer": last["zero_shot_wer"],
        "zero_shot_change": last["zero_shot_change"],
        "zero_shot_change_relative": last["zero_shot_change_relative"],
        "forward_transfer": fwt,
        "mean_forward_transfer": _round(mean_or_none(list(fwt.values()))),
        "intransigence": intr,
        "mean_intransigence": _round(mean_or_none(list(intr.values()))),
        "cost": {
            "trained_parameters_per_step": _round(mean_or_none(trained)),
            "stored_parameters": steps[-1]["parameters"]["stored"] if steps else results["base_model"]["parameters"],
            "base_parameters": results["base_model"]["parameters"],
            "train_seconds": _round(sum(s["train_seconds"] for s in steps)),
            # Adapters reused from another run (ExtractionCache): what training them took there.
            "reused_training_seconds": _round(sum(s.get("adapter_seconds", 0.0) for s in steps
                                                  if s.get("adapter") == "reused")),
            "eval_seconds": _round(sum(eval_seconds[1:])),
            "eval_rtf": _round(real_time_factor(sum(eval_seconds[1:]), audio * len(steps))),
        },
    }
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
