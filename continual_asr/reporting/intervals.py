"""Which differences between compared runs are real: paired bootstrap intervals against a baseline.

From saved runs alone: each run folder's ``edits.json`` holds its test and dev sets' per-utterance
edit counts after every step; the final step's are compared (continual_asr/evaluation/significance.py).
Test intervals say which reported differences are real; dev intervals, whether a choice made on
dev rests on a real difference.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from ..errors import ResultsError
from ..evaluation.significance import LEVEL, RESAMPLES, SEED, DifferentTestSets, Interval, paired_bootstrap
from ..results import task_order
from .tables import csv_text, markdown_table

EDITS = "edits.json"
SPLITS = {"test": "steps", "dev": "dev_steps"}  # edits.json's key of each split's per-step edits


def load_final_edits(run_dir: Path | str, step: int = -1, split: str = "test") -> dict[str, np.ndarray] | None:
    """Evaluation set -> (utterances, 4) edit counts after the run's last step (or ``step``, 0 =
    the base model) on the ``split`` sets; None for a run from before edit counts (or dev edit
    counts) were kept, or without that step's."""
    path = Path(run_dir) / EDITS
    if not path.is_file():
        return None
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
        steps = recorded["steps"] if split == "test" else recorded.get(SPLITS[split]) or []
    except (ValueError, KeyError, TypeError):
        raise ResultsError(f"{path}: not a casr edits.json") from None
    chosen = steps[step] if steps and -len(steps) <= step < len(steps) else None
    return None if chosen is None else {name: np.asarray(rows, dtype=np.int64) for name, rows in chosen.items()}


def group_edits(group, step: int = -1, split: str = "test") -> list:
    """Each of ``group``'s runs' edit counts after ``step`` on the ``split`` sets (None for a run
    without them): the test sets' final ones are loaded with the group, others read now."""
    if (step, split) == (-1, "test"):
        return group.edits
    return [load_final_edits(d, step, split) for d in group.dirs]


def find_group(groups: Sequence, name: str, option: str = "--baseline"):
    """The group labelled ``name``; or the one group of strategy ``name``; or, for ``STRATEGY
    (field=value, ...)``, the one group of that strategy whose config has those values, however
    many other fields its label shows (``option`` names it in errors)."""
    matches = ([g for g in groups if g.label == name] or [g for g in groups if g.runs[0]["strategy"] == name]
               or _groups_with_fields(groups, name))
    if len(matches) != 1:
        labels = ", ".join(g.label for g in groups)
        how = "no" if not matches else "more than one"
        raise ResultsError(f"{option} {name}: {how} compared group by that name (groups: {labels})")
    return matches[0]


def _groups_with_fields(groups: Sequence, name: str) -> list:
    """The groups that ``STRATEGY (field=value, ...)`` describes: that strategy, and each field's
    value written as a label writes it (``adapter-fusion (adapter_epochs=10)`` finds ``adapter-fusion
    (base_model=, adapter_epochs=10)``)."""
    strategy, _, fields = name.partition(" (")
    if not fields.endswith(")"):
        return []
    wanted = [pair.partition("=") for pair in fields[:-1].split(", ")]
    if any(not sep for _, sep, _ in wanted):
        return []

    def described(run: dict) -> bool:
        values = {"preset": run.get("preset"), **run.get("config", {})}  # what a label may show
        return run["strategy"] == strategy and all(key in values and f"{values[key]}" == value
                                                   for key, _, value in wanted)

    return [g for g in groups if described(g.runs[0])]


def run_key(results: dict) -> tuple:
    """What pairs two runs of different groups: the same seed and the same task order."""
    return results.get("seed"), task_order(results)


def matched_runs(group, baseline) -> tuple[list[int], list[int]]:
    """The runs of ``group`` and of ``baseline`` to compare: those with a seed and task order the
    other group ran too, so that unequal sets of runs (one order against two: fine-tuning moves by
    about 6 points between orders) compare methods, not orders or seeds. Every run of both where
    they share none."""
    own, other = [run_key(r) for r in group.runs], [run_key(r) for r in baseline.runs]
    common = set(own) & set(other)
    if not common:
        return list(range(len(own))), list(range(len(other)))
    return [i for i, k in enumerate(own) if k in common], [i for i, k in enumerate(other) if k in common]


def matched_note(group, baseline, chosen: list[int], chosen_baseline: list[int]) -> str:
    """'' where a comparison kept every run of both sides (``matched_runs``), else how many of each it kept."""
    if (len(chosen), len(chosen_baseline)) == (len(group.runs), len(baseline.runs)):
        return ""
    return (f" (matched seeds and orders: {len(chosen)} of {len(group.runs)} runs, "
            f"{len(chosen_baseline)} of {len(baseline.runs)})")


class IntervalRow(NamedTuple):
    """One group against the baseline: ``note`` says which runs were left out (``matched_note``)."""

    label: str
    note: str
    runs: int  # of the group's runs compared
    baseline_runs: int  # of the baseline's runs compared
    intervals: list[Interval | None]


class IntervalTable(NamedTuple):
    """Every group against one baseline, computed once for the markdown table and the CSV."""

    baseline: str  # the baseline group's whole label
    split: str
    titles: list[str]
    rows: list[IntervalRow]


def _cell(interval: Interval | None) -> str:
    if interval is None:
        return "-"
    mark = " *" if interval.significant else ""
    return f"{interval.difference:+.2f} [{interval.low:+.2f}, {interval.high:+.2f}]{mark}"


def _interval(system: list, baseline: list, sets: list[str], label: str) -> Interval | None:
    try:
        return paired_bootstrap(system, baseline, sets)
    except DifferentTestSets as error:  # another max_test_utterances, say: no pairing, no interval
        raise ResultsError(f"{label} against the baseline: {error}") from None
    except ValueError:  # a set without edits (a zero-shot task from manifests has no dev set)
        return None


def interval_table(groups: Sequence, baseline_name: str, split: str = "test") -> IntervalTable:
    """Column titles and a row per group, every group against the baseline, over the seeds and
    task orders both ran: the final mean WER (base task and stream tasks, as the table's), the
    mean over the stream's tasks alone, then each task's final WER, on the ``split`` sets. A
    group without edit counts gets None cells."""
    baseline = find_group(groups, baseline_name)
    edits = {id(g): group_edits(g, split=split) for g in groups}
    columns = baseline.runs[0]["columns"][:-1]  # learned test sets; zero-shot apart, as in the mean
    titles = ["final mean WER", "mean WER, tasks", *columns, "zero-shot"]
    sets = [columns, columns[1:], *([c] for c in columns), [baseline.runs[0]["columns"][-1]]]
    rows = []
    for group in groups:
        if group is baseline:
            continue
        chosen, chosen_baseline = matched_runs(group, baseline)
        system, reference = [edits[id(group)][i] for i in chosen], [edits[id(baseline)][i] for i in chosen_baseline]
        if any(e is None for e in reference):  # only the runs compared need them
            raise ResultsError(f"--baseline {baseline_name}: its runs have no {split} edit counts in edits.json "
                               "(made before casr kept them); rerun them")
        intervals = ([None] * len(titles) if any(e is None for e in system)
                     else [_interval(system, reference, s, group.label) for s in sets])
        rows.append(IntervalRow(group.label, matched_note(group, baseline, chosen, chosen_baseline), len(chosen),
                                len(chosen_baseline), intervals))
    return IntervalTable(baseline.label, split, titles, rows)


def intervals_markdown(table: IntervalTable) -> str:
    baseline_name, split = table.baseline, table.split
    note = (f"Difference from **{baseline_name}** in WER points on the {split} sets after the last step (negative: "
            f"better than {baseline_name}), with its {LEVEL:.0%} paired bootstrap interval ({RESAMPLES:,} resamples "
            f"of each {split} set's utterances, seed {SEED}; each side's runs pooled by their mean, over the seeds and task "
            "orders both sides ran). "
            "`*`: the interval excludes 0, the difference is significant. `-`: no per-utterance edit counts.")
    rows = markdown_table(["vs " + baseline_name, *table.titles],
                          [[row.label + row.note, *map(_cell, row.intervals)] for row in table.rows])
    return note + "\n\n" + rows


def intervals_csv(table: IntervalTable) -> str:
    header = ["group", "baseline", "runs compared", "baseline runs compared"] + [
        f"{t} {part}" for t in table.titles for part in ("difference", "low", "high", "significant")]
    out = []
    for row in table.rows:
        values = []
        for interval in row.intervals:
            values += [None] * 4 if interval is None else [interval.difference, interval.low, interval.high,
                                                           interval.significant]
        out.append([row.label, table.baseline, row.runs, row.baseline_runs, *values])
    return csv_text(header, out)
