"""report.html: one self-contained page per run (inline CSS, plots embedded as base64 PNG)."""

from __future__ import annotations

import base64
import json
from html import escape
from typing import Any, Sequence

from ..evaluation import metric_registry as registry
from ..evaluation.summary import wer_rows
from .tables import fmt, row_labels

STYLE = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child, table.kv td { text-align: left; white-space: nowrap; }
table.kv td + td { white-space: normal; } div.wide { overflow-x: auto; }
th { background: #f3f3f3; } td.diag { font-weight: bold; background: #eef4ff; }
img { max-width: 100%; border: 1px solid #eee; } .note { color: #666; font-size: 0.85em; }
"""

class _Cell(str):
    """A ready-made ``<td>`` element (not escaped again)."""


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], cls: str = "") -> str:
    """A table; no header row when ``header`` is empty."""
    head = "<tr>" + "".join(f"<th>{escape(str(h))}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(c if isinstance(c, _Cell) else f"<td>{escape(str(c))}</td>" for c in row)
                   + "</tr>" for row in rows)
    return f'<div class="wide"><table class="{cls}">{head}{body}</table></div>'


def _kv(pairs: Sequence[tuple[str, Any]]) -> str:
    return _table([], pairs, cls="kv")


def _matrix(results: dict, per_step: list[dict]) -> str:
    columns = results["columns"]
    rows = wer_rows(results).tolist()
    body = []
    for k, (label, row) in enumerate(zip(row_labels(results), rows)):
        cells = [_Cell(f'<td class="diag">{v:.2f}</td>') if j == k else f"{v:.2f}" for j, v in enumerate(row)]
        body.append([label, *cells, fmt(per_step[k]["average_wer"], 2)])
    header = ["WER %", *columns[:-1], f"{columns[-1]} (zero-shot)", "AWER"]
    return _table(header, body) + '<p class="note">bold: the task just learned (W[k, k]).</p>'


def _per_step(results: dict, per_step: list[dict]) -> str:
    steps = [None] + list(results["steps"])
    body = []
    for label, block, step in zip(row_labels(results), per_step, steps):
        cost = ["-", "-", fmt(results["base_model"]["eval_seconds"], 2)] if step is None else [
            f"{step['parameters']['trained']:,}", fmt(step["train_seconds"], 1), fmt(step["eval_seconds"], 2)]
        body.append([label, *(fmt(block[m.key], m.digits) for m in registry.step_columns()), *cost])
    return _table(["after", *(m.label for m in registry.step_columns()), "trained params", "train s", "eval s"], body)


def _forgetting(results: dict, summary: dict) -> str:
    tasks = list(summary["forgetting"])
    if not tasks:
        return "<p>No task has been followed by another yet.</p>"
    return _table(["task", "forgetting (points)", "drift (points)", "max drift (points)"],
                  [[t, fmt(summary["forgetting"][t], 2), fmt(summary["drift"][t], 2), fmt(summary["max_drift"][t], 2)]
                   for t in tasks])


def _references(results: dict) -> str:
    references = results.get("references") or {}
    if not references:
        return ('<p>None given (<code>casr run --reference-runs DIR...</code> with an adapter-oracle run for '
                "single-task and a joint run): forward transfer and intransigence are not computed.</p>")
    return _table(["role", "runs", "reference WER per task"],
                  [[role, ", ".join(entry["runs"]), json.dumps(entry["wer"])] for role, entry in references.items()])


def _image(title: str, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<h2>{escape(title)}</h2><img alt="{escape(title)}" src="data:image/png;base64,{data}">'


def report_html(results: dict, metrics: dict, images: dict[str, bytes]) -> str:
    """The whole page: the run, its key numbers, the WER matrix, the metrics per step, the plots
    (``images``: title -> PNG bytes), the references, the metric definitions and the config."""
    summary = metrics["summary"]
    stream = results["stream"]
    done = f"{len(results['wer_matrix'])} of {len(results['tasks'])} tasks"
    overview = _kv([
        ("stream", f"{stream['name']}: {stream.get('description', '')}"), ("stream file", stream.get("source", "")),
        ("strategy", results["strategy"]), ("preset", results.get("preset", "")), ("seed", results.get("seed", "")),
        ("status", "complete" if results.get("complete") else f"incomplete ({done})"),
        ("tasks", f"base {results['base_task']}; stream {', '.join(results['tasks'])}; "
                  f"zero-shot {results['zero_shot_task']}"),
        ("device, wall time", f"{results.get('device', '')}, {fmt(results.get('wall_seconds'), 0)} s"),
    ])
    key_numbers = _kv([(m.label, fmt(m.in_table(summary), m.digits)) for m in registry.compare_columns()])
    config = _kv(sorted((key, json.dumps(value)) for key, value in results.get("config", {}).items()))
    versions = ", ".join(f"{k} {v}" for k, v in results.get("versions", {}).items())
    title = f"casr report: {results['strategy']} on {stream['name']}"
    parts = [
        f"<h1>{escape(title)}</h1>", overview, "<h2>Key numbers</h2>", key_numbers,
        "<h2>WER matrix (%)</h2>", _matrix(results, metrics["per_step"]),
        "<h2>Metrics after each step</h2>", _per_step(results, metrics["per_step"]),
        "<h2>Forgetting per task</h2>", _forgetting(results, summary),
        *(_image(name, png) for name, png in images.items()),
        "<h2>Reference runs</h2>", _references(results),
        "<h2>Definitions</h2>",
        '<p class="note">W: the WER matrix with the base model as row 0 (task 0 = the base task), row k = after '
        "step k; z: the zero-shot WER. Differences are WER points.</p>",
        _table([], [[m.label, _Cell(f"<td>{m.definition}</td>")] for m in registry.STEP_METRICS], cls="kv"),
        "<h2>Config</h2>", config, f'<p class="note">{escape(versions)}</p>',
    ]
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")
