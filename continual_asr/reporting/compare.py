"""``casr compare``: several finished runs of one stream side by side, seeds aggregated.

Runs that differ only in their seed (same strategy, preset and config) form one group; each
number of the table is the group's mean, with the sample standard deviation (n - 1) when the
group has several runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import CasrError, ResultsError
from ..evaluation import metric_registry as registry
from ..evaluation.summary import compute_metrics
from ..results import task_order, write_bytes_atomic
from ..training.base_file import base_file
from .intervals import load_final_edits
from .plots import Series, overlay_png
from .runs import load_results, reference_wers
from .tables import csv_text, fmt, markdown_table, row_labels

@dataclass
class RunGroup:
    """The runs of one strategy and config (one per seed)."""

    label: str
    runs: list[dict] = field(default_factory=list)  # results dicts
    metrics: list[dict] = field(default_factory=list)  # compute_metrics of each
    edits: list = field(default_factory=list)  # each run's final per-utterance edit counts (None: not kept)
    dirs: list[Path] = field(default_factory=list)

    def add(self, results: dict, run_dir: Path | str) -> None:
        self.dirs.append(Path(run_dir))
        self.runs.append(results)
        self.metrics.append(compute_metrics(results))
        self.edits.append(load_final_edits(run_dir))

    @property
    def seeds(self) -> list:
        return [r.get("seed") for r in self.runs]

    def described_runs(self) -> str:
        """Its seeds, and how many task orders when more than one: '0, 1, 2 (x 2 orders)', or
        '0, 1 (x 2 orders, 3 runs)' while some seed has not run in every order."""
        seeds = sorted({s for s in self.seeds if s is not None})
        orders = {task_order(r) for r in self.runs}
        described = ", ".join(map(str, seeds))
        if len(orders) <= 1:
            return described
        every = len(self.runs) == len(seeds) * len(orders)
        return described + f" (x {len(orders)} orders{'' if every else f', {len(self.runs)} runs'})"

    def values(self, get: Callable[[dict], float | None], runs: Sequence[int] | None = None) -> list[float]:
        """``get`` of each run's summary metrics (of the runs numbered ``runs``, else all), Nones left out."""
        chosen = self.metrics if runs is None else [self.metrics[i] for i in runs]
        return [v for v in (get(m["summary"]) for m in chosen) if v is not None]


def comparable_config(results: dict) -> dict:
    """A run's config as comparisons read it, as resuming does (config.config_as_run): without
    this an older run would pool with a newer one that set a newer field otherwise. A casr:FILE
    base model is named by the weights the run started from, not by the file's path: where the
    file lay is not the run's identity (resuming judges it so too, run_state.same_base_file), so
    runs from one file under two paths pool and files of other weights stay apart. Runs that
    recorded no weights keep the path."""
    from ..config import config_as_run

    # A strategy from a file that is not loaded here has no defaults: what the run recorded.
    config = config_as_run(results.get("config", {}), _defaults(results["strategy"]))
    weights = (results.get("base_model") or {}).get("weights")
    if weights and base_file(config.get("base_model") or "") is not None:
        config["base_model"] = f"casr:FILE of weights {weights}"
    return config


def _key(results: dict, shared: dict[str, set[str]]) -> tuple:
    config = {k: v for k, v in results.get("config", {}).items() if k in shared[results["strategy"]]}
    return results["strategy"], results.get("preset"), json.dumps(config, sort_keys=True)


def _shared_fields(runs: list[dict]) -> dict[str, set[str]]:
    """Per strategy, the config fields every one of its runs recorded. Runs record the fields
    their strategy reads; runs from before options moved beside their strategies (2026-11-30)
    recorded every strategy's, and those must not tell two runs of one setting apart."""
    shared: dict[str, set[str]] = {}
    for results in runs:
        keys = set(results.get("config", {}))
        shared[results["strategy"]] = shared.get(results["strategy"], keys) & keys
    return shared


def _defaults(strategy: str, preset: str = "default") -> dict:
    """The config a run of ``strategy`` at ``preset`` has when nothing is set; {} for a strategy
    from a file that is not loaded here."""
    from ..registry import get_strategy

    try:
        return get_strategy(strategy).defaults(preset)
    except CasrError:
        return {}


def _labels(groups: list[RunGroup], shared: dict[str, set[str]]) -> None:
    """Strategy names, plus the config fields that tell apart groups of the same strategy: where
    most of them share a value (one factor at a time from a default), only the fields in which a
    group departs from it; else every field that differs. A group off the strategy's default in
    such a field always shows it, so a bare strategy name is never a setting other than its
    default (three groups, two of them at 3 epochs, do not make 3 epochs look like the default)."""
    for group in groups:
        twins = [g for g in groups if g.runs[0]["strategy"] == group.runs[0]["strategy"]]
        if len(twins) == 1:
            continue
        fields = shared[group.runs[0]["strategy"]]
        configs = [{"preset": t.runs[0].get("preset"), **{k: v for k, v in t.runs[0].get("config", {}).items()
                                                         if k in fields}} for t in twins]
        own = configs[twins.index(group)]
        defaults = _defaults(group.runs[0]["strategy"], own["preset"] or "default")
        shown = []
        for key, value in own.items():
            values = [json.dumps(c.get(key), sort_keys=True) for c in configs]
            if len(set(values)) == 1:
                continue
            modal = max(set(values), key=values.count)
            off_default = key in defaults and value != defaults[key]
            if values.count(modal) == 1 or json.dumps(value, sort_keys=True) != modal or off_default:
                shown.append(f"{key}={value}")
        if shown:
            group.label += " (" + ", ".join(shown) + ")"


def compare_runs(run_dirs: Sequence[Path | str], reference_dirs: Sequence[Path | str] = ()) -> list[RunGroup]:
    """Load and group finished runs of one stream; ``reference_dirs`` replace each run's stored
    reference runs (for forward transfer and intransigence)."""
    if not run_dirs:
        raise ResultsError("compare needs at least one run folder")
    loaded = []
    first = None
    for run_dir in run_dirs:
        results = load_results(run_dir)
        if first is None:
            first = (run_dir, results)
        elif not _same_tasks(results["columns"], first[1]["columns"]):
            raise ResultsError(f"{run_dir}: a run of stream '{results['stream']['name']}', not of "
                               f"'{first[1]['stream']['name']}' like {first[0]}; compare runs of one stream")
        else:
            _check_same_speech(run_dir, results, *first)
        if not results.get("complete"):
            raise ResultsError(f"{run_dir}: incomplete run ({len(results['wer_matrix'])} of "
                               f"{len(results['tasks'])} tasks); finish it by rerunning casr run into it")
        if reference_dirs:
            results = {**results, "references": reference_wers(reference_dirs, results)}
        loaded.append((run_dir, results))
    loaded = [(run_dir, {**results, "config": comparable_config(results)}) for run_dir, results in loaded]
    shared = _shared_fields([results for _, results in loaded])
    groups: dict[tuple, RunGroup] = {}
    for run_dir, results in loaded:
        groups.setdefault(_key(results, shared), RunGroup(results["strategy"])).add(results, run_dir)
    ordered = list(groups.values())
    _labels(ordered, shared)
    return ordered


def _check_same_speech(run_dir: Path | str, results: dict, first_dir: Path | str, first: dict) -> None:
    """Synthesized test sets of two synthesis versions speak other voices: refuse to compare them.
    (None: recorded speech, or a run from before the version was recorded: not checked.)"""
    version, first_version = (r["stream"].get("synthesis_version") for r in (results, first))
    if version != first_version and None not in (version, first_version):
        raise ResultsError(f"{run_dir}: its speech is of synthesis version {version}, {first_dir}'s of version "
                           f"{first_version} (other dev and test voices), so their WERs do not compare; run the "
                           "older one again with this casr")


def _same_tasks(columns: list[str], other: list[str]) -> bool:
    """The same stream, its tasks perhaps in another order (task orders are compared like seeds)."""
    return columns[0] == other[0] and columns[-1] == other[-1] and sorted(columns) == sorted(other)


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return float(np.mean(values)), (float(np.std(values, ddof=1)) if len(values) > 1 else None)


def _fields(groups: list[RunGroup]) -> list[registry.Metric]:
    """The registry's comparison columns; an optional one only when some run has a value."""
    return [m for m in registry.compare_columns() if not m.optional or any(g.values(m.in_table) for g in groups)]


def comparison_markdown(groups: list[RunGroup]) -> str:
    """The table for the terminal: 'mean ± std' per cell (just the mean for a single run)."""
    fields = _fields(groups)
    rows = []
    for group in groups:
        cells = []
        for metric in fields:
            mean, std = _mean_std(group.values(metric.in_table))
            cells.append(fmt(mean, metric.digits) + ("" if std is None else f" ± {fmt(std, metric.digits)}"))
        rows.append([group.label, group.described_runs(), *cells])
    return markdown_table(["strategy", "seeds", *(m.label for m in fields)], rows)


def base_model_note(groups: list[RunGroup]) -> str | None:
    """One line when the runs do not all start from one base model, else None. Runs are told
    apart by their base model's weights (``base_model.weights``) where every run recorded them,
    else by the base model's WER on every test and dev set (runs from before 2026-12-01)."""
    runs = [(group.label, results) for group in groups for results in group.runs]
    by_weights = all(results["base_model"].get("weights") for _, results in runs)
    classes: dict[str, list[tuple[str, dict]]] = {}
    for label, results in runs:
        key = (results["base_model"]["weights"] if by_weights
               else json.dumps([results["base_wer"], results.get("base_dev_wer")], sort_keys=True))
        classes.setdefault(key, []).append((label, results))
    if len(classes) < 2:
        return None
    parts = []
    for members in sorted(classes.values(), key=len, reverse=True):
        first = members[0][1]
        labels = list(dict.fromkeys(label for label, _ in members))
        named = ", ".join(labels[:4]) + (f" and {len(labels) - 4} more" if len(labels) > 4 else "")
        parts.append(f"{first['base_task']} test WER {fmt(first['base_wer'][first['base_task']], 2)} under "
                     f"{len(members)} run{'s' if len(members) > 1 else ''} ({named})")
    return (f"**Not one base model**: these runs start from {len(classes)} different base models "
            f"(told apart by {'their weights' if by_weights else 'their WERs on every test and dev set'}: "
            f"{'; '.join(parts)}). Other pretraining settings, or the same ones on another kind of CPU (float "
            "sums differ), give another base model; differences between rows then carry the base models' too.")


def data_note(groups: list[RunGroup]) -> str | None:
    """One line when the runs did not all train and test on the same features: a split of one
    task whose content hash (results.json ``data``) differs between runs. The same stream
    synthesized, or its features computed, on another kind of CPU differs in the last bits
    (docs/development.md); runs from before digests were recorded are left out."""
    seen: dict[tuple[str, str], dict[str, list[str]]] = {}
    for group in groups:
        for results in group.runs:
            for split, digests in (results.get("data") or {}).items():
                for task, digest in digests.items():
                    seen.setdefault((split, task), {}).setdefault(digest, []).append(group.label)
    differing = [(split, task, by_digest) for (split, task), by_digest in seen.items() if len(by_digest) > 1]
    if not differing:
        return None
    shown = []
    for split, task, by_digest in differing[:3]:
        shares = "; ".join(f"{len(labels)} run{'s' if len(labels) > 1 else ''} {digest}"
                           for digest, labels in sorted(by_digest.items(), key=lambda item: -len(item[1])))
        shown.append(f"{task} {split} ({shares})")
    more = f" and {len(differing) - 3} more splits" if len(differing) > 3 else ""
    return (f"**Not one data set**: these runs trained or tested on different features of "
            f"{'; '.join(shown)}{more}. The same stream synthesized on another kind of CPU, or another "
            "version of its audio libraries, differs in the last bits; differences between rows then carry "
            "the data's too (docs/development.md: holding an AVX-512 machine to AVX2 kernels).")


def provenance_notes(groups: list[RunGroup]) -> list[str]:
    """The notes a comparison prints under its table: runs from different base models, runs on
    different features (each a line, only where it applies)."""
    return [note for note in (base_model_note(groups), data_note(groups)) if note]


def comparison_csv(groups: list[RunGroup]) -> str:
    """One row per group: its runs, then mean and std of every number (std empty for one run)."""
    fields = _fields(groups)
    header = ["strategy", "runs", "seeds"]
    for metric in fields:
        header += [f"{metric.label} mean", f"{metric.label} std"]
    rows = []
    for group in groups:
        row = [group.label, len(group.runs), " ".join(map(str, group.seeds))]
        for metric in fields:
            mean, std = _mean_std(group.values(metric.in_table))
            row += [None if mean is None else round(mean, 4), None if std is None else round(std, 4)]
        rows.append(row)
    return csv_text(header, rows)


def write_comparison(groups: list[RunGroup], out_dir: Path) -> list[Path]:
    """compare.csv and compare.png (AWER and zero-shot WER per step, one line per group)."""
    out_dir = Path(out_dir)
    series = [Series(g.label,
                     np.array([[s["average_wer"] for s in m["per_step"]] for m in g.metrics], dtype=float),
                     np.array([[s["zero_shot_wer"] for s in m["per_step"]] for m in g.metrics], dtype=float))
              for g in groups]
    first = groups[0].runs[0]
    title = f"{first['stream']['name']}: {sum(len(g.runs) for g in groups)} runs, mean \u00b1 std over seeds"
    labels = row_labels(first)
    if len({task_order(r) for g in groups for r in g.runs}) > 1:  # a step learned another task in each order
        labels = ["base model"] + [f"after step {k}" for k in range(1, len(labels))]
    csv_path, png_path = out_dir / "compare.csv", out_dir / "compare.png"
    write_bytes_atomic(csv_path, comparison_csv(groups).encode("utf-8"))
    write_bytes_atomic(png_path, overlay_png(series, labels, title))
    return [csv_path, png_path]
