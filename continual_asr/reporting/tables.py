"""CSV files and text tables of a run: the WER matrix and the metrics per step."""

from __future__ import annotations

import csv
import io
from typing import Any, Sequence

from ..evaluation import metric_registry as registry
from ..evaluation.summary import wer_rows


def row_labels(results: dict) -> list[str]:
    """'base model', then 'after TASK' for every finished step."""
    return ["base model"] + [f"after {step['task']}" for step in results["steps"]]


def csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """CSV with a header row; None becomes an empty cell."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["" if value is None else value for value in row] for row in rows])
    return buffer.getvalue()


def wer_matrix_csv(results: dict) -> str:
    """One row per step (the base model first), one WER (%) column per test set (zero-shot last)."""
    columns = results["columns"]
    rows = wer_rows(results).tolist()
    return csv_text(["after", *columns], [[label, *row] for label, row in zip(row_labels(results), rows)])


def metrics_csv(results: dict, metrics: dict) -> str:
    """One row per step (step 0 = the base model): every metric, the cost, forgetting per task."""
    earlier = results["columns"][:-2]  # tasks that can have been forgotten: all learned but the last
    columns, per_task = registry.step_columns(), [m.key for m in registry.per_task_step_metrics()]
    header = ["step", "after", *(m.key for m in columns), "trained_parameters", "stored_parameters", "train_seconds",
              "eval_seconds", *(f"{m}:{t}" for m in per_task for t in earlier)]
    steps = [None] + list(results["steps"])
    rows = []
    for k, (label, block, step) in enumerate(zip(row_labels(results), metrics["per_step"], steps)):
        if step is None:
            cost = [0, results["base_model"]["parameters"], 0.0, results["base_model"]["eval_seconds"]]
        else:
            cost = [step["parameters"]["trained"], step["parameters"]["stored"], step["train_seconds"],
                    step["eval_seconds"]]
        rows.append([k, label, *(block[m.key] for m in columns), *cost,
                     *(block[m].get(t) for m in per_task for t in earlier)])
    return csv_text(header, rows)


def fmt(value: float | None, digits: int = 1) -> str:
    """A number for humans: fixed digits, '-' when absent."""
    return "-" if value is None else f"{value:,.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured markdown table, columns padded so it also reads well on a terminal."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"

    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])
