"""Where a task-ID-free strategy loses to oracle routing: the final gap, decomposed exactly.

Oracle routing never forgets (each test set through its own adapter), so its final WER on
stream task k is its diagonal O[k, k], and for any other strategy W

    W[K, k] - O[K, k] = (W[k, k] - O[k, k])  +  (W[K, k] - W[k, k])
                        right after composing    forgotten since

while the base task contributes W[K, 0] - O[K, 0] (the oracle runs it through the bare base
model). The final mean WER gap is the sum of the three parts over the K + 1 learned columns,
divided by K + 1: this prints each part, averaged over the runs of each strategy.

    python experiments/oracle_gap.py runs/paper/*/seed* --oracle adapter-oracle
"""

from __future__ import annotations

from typing import Sequence

import click
import numpy as np

from continual_asr.cli_common import one_line_errors
from continual_asr.evaluation.summary import wer_rows
from continual_asr.reporting import compare_runs
from continual_asr.reporting.intervals import find_group
from continual_asr.reporting.tables import fmt, markdown_table

PARTS = ("final mean WER gap", "after composing (stream tasks)", "forgotten since (stream tasks)", "base task")


def _learned(results: dict) -> np.ndarray:
    """(K + 1, K + 1): rows after each step (0 = base model), columns the learned tasks."""
    return wer_rows(results)[:, :-1]


def decompose(run: dict, oracle: dict) -> dict[str, float]:
    """The three parts of ``run``'s final mean WER gap to ``oracle`` (same stream and order)."""
    if run["columns"] != oracle["columns"]:
        raise click.ClickException("each run needs an oracle run of the same task order")
    w, o = _learned(run), _learned(oracle)
    k = w.shape[0] - 1
    diagonal = sum(w[j, j] - o[k, j] for j in range(1, k + 1))  # o[k, j] = o[j, j]: the oracle keeps its adapters
    forgotten = sum(w[k, j] - w[j, j] for j in range(1, k + 1))
    base = w[k, 0] - o[k, 0]
    return {PARTS[0]: float(w[k].mean() - o[k].mean()), PARTS[1]: diagonal / (k + 1),
            PARTS[2]: forgotten / (k + 1), PARTS[3]: base / (k + 1)}


def gap_table(run_dirs: Sequence[str], oracle_name: str) -> str:
    groups = compare_runs(run_dirs)
    oracle = find_group(groups, oracle_name, option="--oracle")
    by_key = {(r.get("seed"), tuple(r.get("task_order") or ())): r for r in oracle.runs}
    rows = []
    for group in groups:
        if group is oracle:
            continue
        parts = []
        for run in group.runs:
            match = by_key.get((run.get("seed"), tuple(run.get("task_order") or ())))
            if match is not None:
                parts.append(decompose(run, match))
        if parts:
            rows.append([group.label, str(len(parts)),
                         *(fmt(float(np.mean([p[name] for p in parts])), 2) for name in PARTS)])
    note = ("Final mean WER gap to oracle routing, in WER points, and its three parts (each summed over its "
            "columns and divided by the K + 1 learned columns, so the parts add up to the gap); the mean over "
            "the runs that have an oracle run of the same seed and task order.")
    return note + "\n\n" + markdown_table(["strategy", "runs", *PARTS], rows)


@click.command()
@click.argument("run_dirs", nargs=-1, required=True)
@click.option("--oracle", "oracle_name", default="adapter-oracle", show_default=True,
              help="the oracle-routing group (strategy name or label)")
@one_line_errors
def main(run_dirs: tuple[str, ...], oracle_name: str) -> None:
    click.echo(gap_table(run_dirs, oracle_name))


if __name__ == "__main__":
    main()
