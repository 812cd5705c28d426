"""Every number casr reports about a run, in one place.

A :class:`Metric` has a key (where results.json keeps it), a label and a number of digits (how
tables show it), a definition (what report.html and the docs say it is) and the function that
computes it. ``STEP_METRICS`` are computed after every step (``steps[k].metrics``, the base
model's ``base_model.metrics``); ``SUMMARY_METRICS`` once, after the last finished step
(``summary``; a dotted key nests, ``cost.eval_rtf`` is ``summary["cost"]["eval_rtf"]``).
Everything that shows metrics iterates these lists: the summary (evaluation/summary.py),
metrics.csv and report.html (reporting/), ``casr compare`` and the sweep report, and
TensorBoard. Adding a metric is one entry here, plus its function in :mod:`.metrics`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from .metrics import (average_wer, average_wer_tasks, backward_transfer, drift, forgetting, forward_transfer,
                      intransigence, max_drift, mean_or_none, real_time_factor, zero_shot_change)


@dataclass(frozen=True)
class StepInputs:
    """What a step's metrics are computed from."""

    learned: np.ndarray  # W: rows 0..K (base model first), the learned columns
    zero_shot: np.ndarray  # z per row
    step: int
    names: list[str]  # the learned columns' tasks
    references: Mapping[str, Mapping[int, float]]  # role -> {column: reference WER}
    eval_rtf: float | None


@dataclass(frozen=True)
class SummaryInputs:
    """What the summary is computed from: the run and every step's metrics."""

    results: dict
    per_step: list[dict]
    eval_seconds: list[float]  # per row (the base model's first)
    test_audio_seconds: float

    @property
    def last(self) -> dict:
        return self.per_step[-1]

    def per_task(self, key: str) -> dict[str, float]:
        """A step metric's value at each step that has one, by the task that step learned."""
        tasks = self.results["tasks"]
        return {tasks[k - 1]: self.per_step[k][key] for k in range(1, len(self.per_step))
                if self.per_step[k][key] is not None}


@dataclass(frozen=True)
class Metric:
    key: str
    label: str  # its column title
    digits: int
    definition: str  # HTML-ready: report.html writes it as it is
    compute: Callable[[Any], Any]  # StepInputs or SummaryInputs -> number, task -> number, or None
    per_task: bool = False  # the value is task -> number
    column: bool = True  # in the tables (per-step tables for a step metric; compare and sweep tables for a summary one)
    optional: bool = False  # a compare column shown only when some run has a value
    shown: Callable[[dict], float | None] | None = None  # what the compare column shows, from the summary (default: the value)

    def value(self, block: dict) -> Any:
        """This metric in a metrics block (a step's, or the summary: dotted keys walk down)."""
        for part in self.key.split("."):
            block = block.get(part) if isinstance(block, dict) else None
        return block

    def in_table(self, summary: dict) -> float | None:
        return self.shown(summary) if self.shown is not None else self.value(summary)


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


def _by_task(values: np.ndarray, names: list[str]) -> dict[str, float]:
    return {names[j]: _round(v) for j, v in enumerate(values)}


def _mean(values) -> float | None:
    return _round(mean_or_none(list(values)))


STEP_METRICS: list[Metric] = [
    Metric("average_wer", "AWER", 2, "mean over j &le; k of W[k, j]: WER over the tasks seen so far (base task = task 0)",
           lambda s: _round(average_wer(s.learned, s.step))),
    Metric("average_wer_tasks", "AWER tasks", 2, "mean over 1 &le; j &le; k of W[k, j]: the same without the base task",
           lambda s: _round(average_wer_tasks(s.learned, s.step))),
    Metric("backward_transfer", "BWT", 2, "mean over j &lt; k of (W[j, j] &minus; W[k, j]); negative = forgetting",
           lambda s: _round(backward_transfer(s.learned, s.step))),
    Metric("forgetting", "forgetting", 2, "W[k, j] &minus; min over j &le; l &lt; k of W[l, j] (Chaudhry et al. 2018): "
           "WER points above task j's best since it was learned", lambda s: _by_task(forgetting(s.learned, s.step), s.names),
           per_task=True),
    Metric("mean_forgetting", "forgetting", 2, "the mean of forgetting over j &lt; k",
           lambda s: _mean(forgetting(s.learned, s.step))),
    Metric("drift", "drift", 2, "W[k, j] &minus; W[j, j]: WER points lost on task j since it was learned "
           "(mean over j: &minus;BWT)", lambda s: _by_task(drift(s.learned, s.step), s.names), per_task=True),
    Metric("max_drift", "max drift", 2, "max over j &lt; l &le; k of D_l(j): the worst since task j was learned",
           lambda s: _by_task(max_drift(s.learned, s.step), s.names), per_task=True),
    Metric("mean_max_drift", "mean max drift", 2, "the mean of max drift over j &lt; k",
           lambda s: _mean(max_drift(s.learned, s.step))),
    Metric("zero_shot_wer", "zero-shot WER", 2, "z[k]: WER on the held-out zero-shot task",
           lambda s: _round(s.zero_shot[s.step])),
    Metric("zero_shot_change", "zero-shot change", 2, "z[k] &minus; z[0] in WER points",
           lambda s: _round(zero_shot_change(s.zero_shot, s.step)[0])),
    Metric("zero_shot_change_relative", "zero-shot change %", 2, "100 (z[k] &minus; z[0]) / z[0] in %",
           lambda s: _round(zero_shot_change(s.zero_shot, s.step)[1])),
    Metric("forward_transfer", "FWT", 2, "S[k] &minus; W[k, k], S = single-task reference (positive = earlier tasks helped)",
           lambda s: _round(forward_transfer(s.learned, s.step, s.references["single-task"]))),
    Metric("intransigence", "intransigence", 2, "W[k, k] &minus; J[k], J = joint-training reference (positive = learns worse)",
           lambda s: _round(intransigence(s.learned, s.step, s.references["joint"]))),
    Metric("eval_rtf", "eval RTF", 3, "evaluation seconds / seconds of test audio", lambda s: _round(s.eval_rtf)),
]


def _final_dev_mean(results: dict) -> float | None:
    """The mean dev WER over the learned tasks (base included, zero-shot not) after the last
    step: what choices are made on. None for a run without dev sets."""
    rows = results.get("dev_wer_matrix") or []
    # Row k is after step k+1: the base task and k+1 stream tasks are learned (a run in progress
    # has later columns too); before any step, the base model's dev WER on the base task.
    last = rows[-1][: len(rows) + 1] if rows else [(results.get("base_dev_wer") or {}).get(results["columns"][0])]
    values = [v for v in last if v is not None]
    return float(np.mean(values)) if values else None


def _last(key: str) -> Callable[[SummaryInputs], Any]:
    return lambda s: s.last[key]


def _stored_parameters(s: SummaryInputs) -> int:
    steps = s.results["steps"]
    return steps[-1]["parameters"]["stored"] if steps else s.results["base_model"]["parameters"]


def _reused_seconds(s: SummaryInputs) -> float | None:
    # Adapters reused from another run (ExtractionCache): what training them took there.
    return _round(sum(step.get("adapter_seconds", 0.0) for step in s.results["steps"] if step.get("adapter") == "reused"))


def _strategy_train_seconds(summary: dict) -> float:
    # The strategy's cost, whether this run trained its adapters or reused another run's.
    return summary["cost"]["train_seconds"] + summary["cost"].get("reused_training_seconds", 0.0)


SUMMARY_METRICS: list[Metric] = [
    Metric("steps_done", "steps", 0, "finished steps", lambda s: len(s.results["steps"]), column=False),
    Metric("final_mean_dev_wer", "dev mean WER", 2, "the mean over the learned tasks of their dev WER after the last "
           "step: what choices are made on", lambda s: _round(_final_dev_mean(s.results)), optional=True),
    Metric("final_mean_wer", "final mean WER", 2, "AWER at the last step", _last("average_wer")),
    Metric("final_mean_wer_tasks", "final mean WER, tasks", 2, "AWER tasks at the last step (the base task left out)",
           _last("average_wer_tasks")),
    Metric("backward_transfer", "BWT", 2, "BWT at the last step", _last("backward_transfer")),
    Metric("forgetting", "forgetting per task", 2, "forgetting at the last step", _last("forgetting"),
           per_task=True, column=False),
    Metric("mean_forgetting", "forgetting", 2, "mean forgetting at the last step", _last("mean_forgetting")),
    Metric("drift", "drift per task", 2, "drift at the last step", _last("drift"), per_task=True, column=False),
    Metric("max_drift", "max drift per task", 2, "max drift at the last step", _last("max_drift"), per_task=True,
           column=False),
    Metric("mean_max_drift", "mean max drift", 2, "mean max drift at the last step", _last("mean_max_drift"),
           column=False),
    Metric("zero_shot_wer", "zero-shot WER", 2, "zero-shot WER at the last step", _last("zero_shot_wer")),
    Metric("zero_shot_change", "zero-shot change", 2, "zero-shot change at the last step (points)",
           _last("zero_shot_change")),
    Metric("zero_shot_change_relative", "zero-shot change %", 1, "zero-shot change at the last step (%)",
           _last("zero_shot_change_relative"), column=False),
    Metric("forward_transfer", "FWT per task", 2, "FWT of each task at the step that learned it",
           lambda s: s.per_task("forward_transfer"), per_task=True, column=False),
    Metric("mean_forward_transfer", "FWT", 2, "the mean of FWT over the tasks",
           lambda s: _mean(s.per_task("forward_transfer").values()), optional=True),
    Metric("intransigence", "intransigence per task", 2, "intransigence of each task at the step that learned it",
           lambda s: s.per_task("intransigence"), per_task=True, column=False),
    Metric("mean_intransigence", "intransigence", 2, "the mean of intransigence over the tasks",
           lambda s: _mean(s.per_task("intransigence").values()), optional=True),
    Metric("cost.trained_parameters_per_step", "trained params/step", 0, "parameters trained per step, mean over the steps",
           lambda s: _mean(step["parameters"]["trained"] for step in s.results["steps"])),
    Metric("cost.stored_parameters", "stored params", 0, "parameters stored after the last step", _stored_parameters),
    Metric("cost.base_parameters", "base params", 0, "parameters of the base model",
           lambda s: s.results["base_model"]["parameters"], column=False),
    Metric("cost.train_seconds", "train s", 1, "training seconds summed over the steps (with, in tables, what the "
           "adapters this run reused took to train in the run that trained them)",
           lambda s: _round(sum(step["train_seconds"] for step in s.results["steps"])), shown=_strategy_train_seconds),
    Metric("cost.reused_training_seconds", "reused adapters' training s", 1, "what the adapters this run reused "
           "took to train in the run that trained them", _reused_seconds, column=False),
    Metric("cost.eval_seconds", "eval s", 1, "evaluation seconds summed over the steps (base model left out)",
           lambda s: _round(sum(s.eval_seconds[1:])), column=False),
    Metric("cost.eval_rtf", "eval RTF", 4, "evaluation seconds / seconds of test audio, over every step",
           lambda s: _round(real_time_factor(sum(s.eval_seconds[1:]), s.test_audio_seconds * len(s.results["steps"])))),
]


def tensorboard_scalars(block: dict) -> dict[str, float]:
    """A step's metrics block as TensorBoard scalars: ``Metrics/KEY``, and ``Metrics/KEY/TASK``
    for a metric with a number per task; metrics without a value are left out."""
    scalars: dict[str, float] = {}
    for metric in STEP_METRICS:
        value = metric.value(block)
        items = (value or {}).items() if metric.per_task else [("", value)]
        for task, number in items:
            if number is not None:
                scalars[f"Metrics/{metric.key}" + (f"/{task}" if task else "")] = float(number)
    return scalars


def step_columns() -> list[Metric]:
    """The step metrics the per-step tables show, in order (those with one number per step)."""
    return [m for m in STEP_METRICS if m.column and not m.per_task]


def per_task_step_metrics() -> list[Metric]:
    return [m for m in STEP_METRICS if m.per_task]


def compare_columns() -> list[Metric]:
    """The summary metrics the comparison tables show, in order."""
    return [m for m in SUMMARY_METRICS if m.column]


__all__ = ["Metric", "StepInputs", "SummaryInputs", "STEP_METRICS", "SUMMARY_METRICS", "compare_columns",
           "per_task_step_metrics", "step_columns", "tensorboard_scalars"]
