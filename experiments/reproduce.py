"""Reproduce the A-AF paper's comparisons on a built-in stream: every strategy, several seeds.

    python experiments/reproduce.py                              # experiments/paper.yaml -> runs/paper
    python experiments/reproduce.py --seeds 0 --only adapter-fusion,finetune
    python experiments/reproduce.py --stream tiny --preset tiny --out runs/paper-tiny   # a smoke run

Runs go to OUT/NAME/seedS, seed by seed (all strategies of seed 0 first, so a partial sweep
already compares everything). The sweep is resumable: a finished run is read back, an
unfinished one continues from its last finished task. At the end (and with ``--report-only``
at any time) it writes OUT/results.md: the table (mean ± std over the seeds that finished),
the paper's five questions answered with this sweep's numbers, and OUT/compare.csv and
OUT/compare.png (AWER and zero-shot WER per step, one line per run name).
"""

from __future__ import annotations

import sys
import time
from functools import partial
from pathlib import Path

import click

from continual_asr.errors import CasrError
from continual_asr.reporting.compare import RunGroup, comparison_markdown, write_comparison
from continual_asr.stream import load_stream
from continual_asr.sweep import PlannedRun, finished_groups, load_plan, record_invocation, run_all, time_taken


def relative(value: float | None, reference: float | None) -> str:
    if value is None or reference is None:
        return "not run"
    return f"{value:.1f} vs {reference:.1f} ({100 * (value - reference) / reference:+.1f} %)"


def claims(groups: dict[str, RunGroup]) -> list[str]:
    """The paper's five questions, answered from the finished runs (means over seeds)."""
    def mean(name: str, key: str) -> float | None:
        group = groups.get(name)
        values = group.values(lambda s: s[key]) if group else []
        return sum(values) / len(values) if values else None

    def share(name: str) -> str:
        group = groups.get(name)
        if not group:
            return f"{name} not run"
        step = group.runs[0]["steps"][-1]["parameters"]
        return f"{name} {100 * step['trained'] / group.runs[0]['base_model']['parameters']:.1f} %"

    aaf = mean("adapter-fusion", "final_mean_wer")
    base_zero_shot = None
    if "adapter-fusion" in groups:
        runs = groups["adapter-fusion"].runs
        base_zero_shot = sum(r["base_wer"][r["zero_shot_task"]] for r in runs) / len(runs)
    lines = [
        f"1. A-AF final mean WER against sequential fine-tuning: {relative(aaf, mean('finetune', 'final_mean_wer'))}; "
        f"against joint multi-task fine-tuning: {relative(aaf, mean('joint', 'final_mean_wer'))} "
        "(the paper: 8 % better than full fine-tuning).",
        f"2. A-AF against task-ID oracle routing: {relative(aaf, mean('adapter-oracle', 'final_mean_wer'))} "
        "(the paper: on par).",
        "3. Parameters trained in the last step, as a share of the base model: "
        + ", ".join(share(n) for n in ("adapter-avg", "adapter-wavg", "adapter-fusion", "finetune"))
        + " (the paper: 17 % for Avg/WAvg).",
        f"4. Zero-shot WER of A-AF after the last task against the base model: "
        f"{relative(mean('adapter-fusion', 'zero_shot_wer'), base_zero_shot)} (the paper: 9 % better).",
        f"5. LayerNorm ablation, final mean WER without it: "
        f"{relative(mean('adapter-fusion no-LN', 'final_mean_wer'), aaf)} against A-AF with it. "
        "Backward transfer (negative = forgetting): "
        + ", ".join(f"{n} {mean(n, 'backward_transfer'):+.2f}" for n in groups
                    if mean(n, "backward_transfer") is not None) + ".",
    ]
    return lines


def write_report(out: Path, stream: str, preset: str, plan: list[PlannedRun]) -> str:
    groups = finished_groups(plan)
    if not groups:
        raise CasrError(f"{out}: no finished run yet")
    finished = sum(len(g.runs) for g in groups.values())
    text = "\n".join([
        f"# Reproduction: {stream}, preset {preset}",
        "",
        f"{finished} of {len(plan)} runs finished; mean ± std over seeds. {time_taken(out, groups)}",
        "",
        comparison_markdown(list(groups.values())),
        "",
        *claims(groups),
        "",
    ])
    write_comparison(list(groups.values()), out)
    (out / "results.md").write_text(text, encoding="utf-8")
    return text


@click.command()
@click.option("--config", "sweep_file", default=str(Path(__file__).with_name("paper.yaml")), show_default=True,
              type=click.Path(dir_okay=False), help="the sweep file (stream, preset, seeds, runs)")
@click.option("--out", "out_dir", default="runs/paper", show_default=True)
@click.option("--stream", default=None, help="instead of the sweep file's stream")
@click.option("--preset", default=None, help="instead of the sweep file's preset")
@click.option("--seeds", default=None, help="comma-separated, instead of the sweep file's")
@click.option("--only", default=None, help="comma-separated run names of the sweep file")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None)
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(min=1),
              help="runs at a time, each in its own process with cores/jobs threads (2 cores: --jobs 2)")
@click.option("--report-only", is_flag=True, help="write results.md from the finished runs; train nothing")
def main(sweep_file: str, out_dir: str, stream: str | None, preset: str | None, seeds: str | None,
         only: str | None, cache_dir: str | None, jobs: int, report_only: bool) -> None:
    out = Path(out_dir)
    try:
        stream_name, preset_name, plan = load_plan(
            Path(sweep_file), out, stream, preset,
            [int(s) for s in seeds.split(",")] if seeds else None,
            [n.strip() for n in only.split(",")] if only else None)
        load_stream(stream_name)  # an unknown stream fails here, in one line, not in every run
    except (CasrError, ValueError) as exc:
        click.echo(f"reproduce: error: {exc}", err=True)
        sys.exit(2)
    failed = []
    if not report_only:
        began = time.time()
        failed = run_all(plan, stream_name, preset_name, cache_dir, jobs, echo=partial(click.echo, err=True))
        record_invocation(out, began, jobs, len(plan), failed)
    try:
        click.echo(write_report(out, stream_name, preset_name, plan))
    except CasrError as exc:
        click.echo(f"reproduce: error: {exc}", err=True)
        sys.exit(2)
    if failed:
        click.echo(f"failed: {', '.join(failed)} (see their run.log)", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
