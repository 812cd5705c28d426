"""What fusion attends to, in numbers: per test set, the mean attention each adapter and the null
slot receive, averaged over the encoder's layers and over each group's runs (seeds, orders).

report.html draws the same record per layer for one run; this table is what a paper quotes. A
test set's own adapter is marked with *: a combiner that identifies the task puts most of the
weight there, one that cannot spreads it like Adapter Mean.

    python experiments/fusion_attention.py runs/recipe/combined/seed* [--step K]
"""

from __future__ import annotations

from typing import Sequence

import click
import numpy as np

from continual_asr.cli_common import one_line_errors
from continual_asr.errors import ResultsError
from continual_asr.reporting import compare_runs
from continual_asr.reporting.tables import fmt, markdown_table


def mean_attention(results: dict, step: int = -1) -> tuple[list[str], dict[str, np.ndarray]]:
    """(the slots, test set -> mean attention of each slot over the layers) after ``step``."""
    steps = results["steps"]
    if not -len(steps) <= step < len(steps):
        raise ResultsError(f"--step {step}: the run has steps 0 to {len(steps) - 1}")
    record = steps[step].get("attention")
    if not record:
        raise ResultsError(f"strategy {results['strategy']} records no attention (only adapter-fusion and "
                           "adapter-wavg attend)")
    return record["slots"], {name: np.asarray(layers, dtype=float).mean(axis=0)
                             for name, layers in record["test_sets"].items()}


def attention_tables(run_dirs: Sequence[str], step: int = -1) -> str:
    """One markdown table per group of runs: rows the test sets, columns the slots."""
    out, silent = [], []
    for group in compare_runs(run_dirs):
        if not any(s.get("attention") for s in group.runs[0]["steps"]):
            silent.append(group.label)  # oracle routing, Adapter Mean, the whole-model baselines
            continue
        records = [mean_attention(run, step) for run in group.runs]
        slots = records[0][0]
        if any(r[0] != slots for r in records):
            raise ResultsError(f"{group.label}: its runs attend over different adapters (task orders differ); "
                               "compare one order at a time")
        rows = []
        for name in records[0][1]:
            mean = np.mean([r[1][name] for r in records], axis=0)
            rows.append([name, *(fmt(float(v), 2) + ("*" if slot == name else "") for slot, v in zip(slots, mean))])
        where = "after the last step" if step == -1 else f"after step {step}"
        out.append(f"{group.label} ({len(records)} run(s), {where}; mean over layers, * the test set's own adapter)\n\n"
                   + markdown_table(["test set", *slots], rows))
    if not out:
        raise ResultsError("none of these runs records attention (only adapter-fusion and adapter-wavg attend)")
    if silent:
        out.append("No attention recorded (they do not attend): " + ", ".join(silent))
    return "\n\n".join(out)


@click.command()
@click.argument("run_dirs", nargs=-1, required=True)
@click.option("--step", default=-1, show_default=True, help="the step whose attention to show (-1: the last)")
@one_line_errors
def main(run_dirs: tuple[str, ...], step: int) -> None:
    click.echo(attention_tables(run_dirs, step))


if __name__ == "__main__":
    main()
