"""PNG plots of a run and of a comparison (matplotlib, Agg canvas; no pyplot, no global state)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..evaluation.summary import wer_rows
from .tables import row_labels


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def _step_axis(axes, labels: Sequence[str]) -> None:
    axes.set_xticks(range(len(labels)))
    axes.set_xticklabels(labels, rotation=20 if len(labels) > 3 else 0, ha="right" if len(labels) > 3 else "center")
    axes.set_xlim(-0.2, len(labels) - 0.8)
    axes.set_xlabel("step (model after ...)")
    axes.grid(alpha=0.3)


def forgetting_curves_png(results: dict) -> bytes:
    """WER of every test set after every step, one line per task: dotted before the task is
    learned, solid from then on (star = the step that learned it); the zero-shot task dashed."""
    rows = wer_rows(results)
    columns = results["columns"]
    labels = row_labels(results)
    steps = np.arange(len(rows))
    figure = Figure(figsize=(8.5, 4.8))
    axes = figure.add_subplot()
    palette = colormaps["tab10" if len(columns) <= 10 else "tab20"]
    colors = [palette(i % palette.N) for i in range(len(columns))]
    for j, name in enumerate(columns[:-1]):
        learned = min(j, len(rows) - 1)
        axes.plot(steps[: learned + 1], rows[: learned + 1, j], ":", color=colors[j], alpha=0.7)
        axes.plot(steps[learned:], rows[learned:, j], "-o", color=colors[j], markersize=4,
                  label=name if j else f"{name} (base task)")
        if j < len(rows):
            axes.plot([j], [rows[j, j]], "*", color=colors[j], markersize=13)
    axes.plot(steps, rows[:, -1], "--s", color="0.25", markersize=4, label=f"{columns[-1]} (zero-shot)")
    axes.set_ylabel("WER %")
    axes.set_ylim(bottom=0)
    _step_axis(axes, labels)
    axes.set_title(f"WER per task after each step: {results['strategy']} on {results['stream']['name']}")
    axes.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9,
                title="dotted: not yet learned\n\u2605: step that learned it", title_fontsize=8)
    return _png(figure)


def _heat_map(axes, values: np.ndarray, cmap: str, vmax: float, cell: str, fontsize: float):
    """``values`` as a heat map from 0 to ``vmax``, each cell's value written in a legible ink."""
    image = axes.imshow(values, cmap=cmap, vmin=0, vmax=vmax, aspect="auto")
    for k in range(values.shape[0]):
        for j in range(values.shape[1]):
            red, green, blue, _ = image.cmap(image.norm(values[k, j]))
            ink = "black" if 0.299 * red + 0.587 * green + 0.114 * blue > 0.5 else "white"
            axes.text(j, k, cell.format(values[k, j]), ha="center", va="center", color=ink, fontsize=fontsize)
    return image


def attention_figure(record: dict, title: str = "") -> Figure:
    """One heat map per layer of a step's attention record (evaluation/attention.py): rows the
    test sets, columns the adapters by task and the null slot, cells the mean attention."""
    slots, test_sets = record["slots"], list(record["test_sets"])
    layers = len(next(iter(record["test_sets"].values())))
    figure = Figure(figsize=(1.5 + layers * (0.9 + 0.55 * len(slots)), 1.4 + 0.4 * len(test_sets)))
    panels = figure.subplots(1, layers, squeeze=False, sharey=True)[0]
    for layer, axes in enumerate(panels):
        values = np.array([record["test_sets"][name][layer] for name in test_sets])
        image = _heat_map(axes, values, "Blues", 1.0, "{:.2f}", fontsize=7)
        axes.set_xticks(range(len(slots)))
        axes.set_xticklabels(slots, rotation=45, ha="right", fontsize=8)
        axes.set_title(f"layer {layer + 1}", fontsize=9)
        axes.set_xlabel("adapter")
    panels[0].set_yticks(range(len(test_sets)))
    panels[0].set_yticklabels(test_sets, fontsize=8)
    panels[0].set_ylabel("test set")
    figure.colorbar(image, ax=list(panels), label="mean attention", fraction=0.03)
    figure.suptitle(f"What fusion attends to {title}".strip())
    return figure


def attention_png(results: dict) -> bytes | None:
    """The attention heat maps of the latest step that has any (None for combiners that do not attend)."""
    for k in range(len(results.get("steps", [])) - 1, -1, -1):
        record = results["steps"][k].get("attention")
        if record:
            return _png(attention_figure(record, title=f"after {results['steps'][k]['task']}"))
    return None


def wer_matrix_png(results: dict) -> bytes:
    """Heat map of the WER matrix (base model first), each cell's value written in it; the cell
    of each task right after it was learned is outlined, the zero-shot column set apart."""
    rows = wer_rows(results)
    columns = results["columns"]
    labels = row_labels(results)
    figure = Figure(figsize=(1.6 + 1.35 * len(columns), 1.2 + 0.55 * len(rows)))
    axes = figure.add_subplot()
    image = _heat_map(axes, rows, "RdYlGn_r", max(1.0, float(rows.max())), "{:.1f}", fontsize=10)
    for k in range(min(rows.shape[0], rows.shape[1] - 1)):
        axes.add_patch(Rectangle((k - 0.5, k - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=2))
    axes.axvline(len(columns) - 1.5, color="black", linewidth=2)
    axes.set_xticks(range(len(columns)))
    axes.set_xticklabels([*columns[:-1], f"{columns[-1]}\n(zero-shot)"], rotation=20, ha="right")
    axes.set_yticks(range(len(labels)))
    axes.set_yticklabels(labels)
    axes.set_xlabel("test set")
    axes.set_title(f"WER % ({results['strategy']} on {results['stream']['name']}); outlined: just learned")
    figure.colorbar(image, ax=axes, label="WER %", fraction=0.05)
    return _png(figure)


@dataclass
class Series:
    """One strategy in a comparison: per-step values, one row per run (seed)."""

    label: str
    average_wer: np.ndarray  # (runs, steps)
    zero_shot_wer: np.ndarray  # (runs, steps)


LINE_STYLES = (("-", "o"), ("--", "s"), (":", "^"))


def overlay_png(series: Sequence[Series], step_labels: Sequence[str], title: str) -> bytes:
    """AWER and zero-shot WER per step, one line per strategy: the mean over its runs, with a
    band of +- one standard deviation when there are several."""
    figure = Figure(figsize=(12, 4.6))
    panels = figure.subplots(1, 2)
    for axes, field, name in ((panels[0], "average_wer", "AWER % (tasks seen so far)"),
                              (panels[1], "zero_shot_wer", "zero-shot WER %")):
        for i, entry in enumerate(series):
            values = getattr(entry, field)
            mean = values.mean(axis=0)
            x = np.arange(len(mean))
            # ten colours, then the same colours with another line and marker: no two lines alike
            line, marker = LINE_STYLES[(i // 10) % len(LINE_STYLES)]
            axes.plot(x, mean, linestyle=line, marker=marker, color=f"C{i % 10}", markersize=4,
                      label=f"{entry.label} (n={len(values)})")
            if len(values) > 1:
                std = values.std(axis=0, ddof=1)
                axes.fill_between(x, mean - std, mean + std, color=f"C{i % 10}", alpha=0.2)
        axes.set_ylabel(name)
        axes.set_title(name)
        _step_axis(axes, step_labels)
    panels[1].legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9)
    figure.suptitle(title)
    return _png(figure)
