"""Reproduce the A-AF paper's comparisons on a built-in stream: every strategy, several seeds.

    python experiments/reproduce.py --jobs 2                     # experiments/paper.yaml -> runs/paper
    python experiments/reproduce.py --seeds 0 --only adapter-fusion,finetune
    python experiments/reproduce.py --stream tiny --preset tiny --out runs/paper-tiny   # a smoke run

It is ``casr sweep experiments/paper.yaml`` (continual_asr/sweep.py: resumable, finished runs
read back, ``--jobs`` runs at a time, adapter strategies sharing their single-task adapters)
plus the paper's five questions (and one of casr's own) answered with the sweep's numbers at the end of OUT/results.md
(with the table, mean ± std over the seeds that finished; OUT/compare.csv and OUT/compare.png
too). ``--report-only`` rewrites them at any time from the runs finished so far.
"""

from __future__ import annotations

from pathlib import Path

from continual_asr.cli import sweep_command
from continual_asr.evaluation.significance import paired_bootstrap
from continual_asr.reporting.compare import RunGroup
from continual_asr.reporting.intervals import group_edits, matched_note, matched_runs

AAF = "adapter-fusion per-frame"  # the paper's A-AF (experiments/paper.yaml), which claims 1-5 are about
DEFAULT = "adapter-fusion"  # casr's default: one attention per utterance


def relative(groups: dict[str, RunGroup], name: str, other: str, key: str = "final_mean_wer") -> str:
    """'value vs reference (+x %)': the summary metric ``key`` of group ``name`` against ``other``,
    each a mean over the seeds and task orders both ran, as the interval beside it is."""
    system, baseline = groups.get(name), groups.get(other)
    if not system or not baseline:
        return "not run"
    chosen, chosen_other = matched_runs(system, baseline)
    value = _mean(system.values(lambda s: s[key], chosen))
    return versus(value, _mean(baseline.values(lambda s: s[key], chosen_other)))


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def versus(value: float | None, reference: float | None) -> str:
    if value is None or reference is None:
        return "not run"
    return f"{value:.1f} vs {reference:.1f} ({100 * (value - reference) / reference:+.1f} %)"


def compared(groups: dict[str, RunGroup], name: str, other: str, sets: list[str], expect: str, *,
             split: str = "test", step: int = -1, other_step: int = -1) -> str:
    """'difference [interval]: verdict' of group ``name`` minus group ``other`` (after ``step``
    and ``other_step``), over the seeds and task orders both ran. ``expect``: "better", "worse"
    or "on par", what the paper says of the system."""
    system, baseline = groups.get(name), groups.get(other)
    if not system or not baseline:
        return "no interval (a side has no finished runs)"
    chosen, chosen_other = matched_runs(system, baseline)
    system_edits, baseline_edits = group_edits(system, step, split), group_edits(baseline, other_step, split)
    ours, theirs = [system_edits[i] for i in chosen], [baseline_edits[i] for i in chosen_other]
    if any(e is None for e in [*ours, *theirs]):
        return "no interval (a side has no finished runs with per-utterance edit counts)"
    interval = paired_bootstrap(ours, theirs, sets)
    text = f"{interval.difference:+.2f} points [{interval.low:+.2f}, {interval.high:+.2f}]"
    text += matched_note(system, baseline, chosen, chosen_other)
    if not interval.significant:
        verdict = "holds (no significant difference)" if expect == "on par" else "not significant"
    else:
        better = interval.high < 0
        if expect == "on par":  # say which way it is off: being ahead of a reference is no failure
            verdict = f"does not hold ({'better' if better else 'worse'})"
        else:
            verdict = "holds" if (expect == "better") == better else "does not hold"
    return f"{text}: **{verdict}**"


def claims(groups: dict[str, RunGroup]) -> list[str]:
    """The paper's five questions, answered from the finished runs: means over seeds and task
    orders, and differences with 95 % paired bootstrap intervals over the test utterances."""
    def mean(name: str, key: str) -> float | None:  # over all of a group's runs
        group = groups.get(name)
        return _mean(group.values(lambda s: s[key]) if group else [])

    def share(name: str) -> str:
        group = groups.get(name)
        if not group:
            return f"{name} not run"
        step = group.runs[0]["steps"][-1]["parameters"]
        return f"{name} {100 * step['trained'] / group.runs[0]['base_model']['parameters']:.1f} %"

    any_run = next(iter(groups.values())).runs[0]
    learned, tasks, zero_shot = any_run["columns"][:-1], any_run["columns"][1:-1], [any_run["columns"][-1]]
    base_zero_shot = None
    if AAF in groups:
        runs = groups[AAF].runs
        base_zero_shot = sum(r["base_wer"][r["zero_shot_task"]] for r in runs) / len(runs)
    return [
        "Each claim: the difference in WER points (A-AF minus the other; negative = A-AF better) with its 95 % "
        "paired bootstrap interval over the test utterances (runs pooled over the seeds and task orders both sides ran); 'holds' or "
        "'does not hold' only where the interval excludes 0.",
        "",
        f"1. A-AF against sequential fine-tuning, final mean WER {relative(groups, AAF, 'finetune')}: "
        f"{compared(groups, AAF, 'finetune', learned, 'better')}; against joint multi-task "
        f"fine-tuning {relative(groups, AAF, 'joint')}: "
        f"{compared(groups, AAF, 'joint', learned, 'better')}; against learning without forgetting (the "
        f"strongest regularised fine-tuning here), {relative(groups, AAF, 'lwf')}: "
        f"{compared(groups, AAF, 'lwf', learned, 'better')} "
        "(the paper: 8 % better than full fine-tuning).",
        f"2. A-AF against task-ID oracle routing, final mean WER {relative(groups, AAF, 'adapter-oracle')}: "
        f"{compared(groups, AAF, 'adapter-oracle', learned, 'on par')}; over the stream's tasks "
        f"alone (the oracle gets the base task for free): "
        f"{compared(groups, AAF, 'adapter-oracle', tasks, 'on par')} (the paper: on par).",
        "3. Parameters trained in the last step, as a share of the base model: "
        + ", ".join(share(n) for n in ("adapter-avg", "adapter-wavg", AAF, "finetune"))
        + " (the paper: 17 % for Avg/WAvg).",
        f"4. Zero-shot WER of A-AF after the last task against the base model "
        f"{versus(mean(AAF, 'zero_shot_wer'), base_zero_shot)}: "
        f"{compared(groups, AAF, AAF, zero_shot, 'better', other_step=0)}; against "
        f"sequential fine-tuning: {compared(groups, AAF, 'finetune', zero_shot, 'better')} "
        "(the paper: 9 % better than the base model).",
        f"5. LayerNorm ablation, A-AF with it against without it, final mean WER "
        f"{relative(groups, f'{AAF} +LN', AAF)}: "
        f"{compared(groups, f'{AAF} +LN', AAF, learned, 'better')}; with the adapters "
        f"trained during composition too: "
        f"{compared(groups, f'{AAF} +adapters +LN', f'{AAF} +adapters', learned, 'better')}. "
        "Backward transfer (negative = forgetting): "
        + ", ".join(f"{n} {mean(n, 'backward_transfer'):+.2f}" for n in groups
                    if mean(n, "backward_transfer") is not None) + ".",
        f"6. casr's default, not the paper's method: fusion attention pooled over the utterance "
        f"({DEFAULT}) against per frame (A-AF), final mean WER {relative(groups, DEFAULT, AAF)}: "
        f"{compared(groups, DEFAULT, AAF, learned, 'better')}; on the dev sets, where the default was chosen: "
        f"{compared(groups, DEFAULT, AAF, learned, 'better', split='dev')}; against oracle "
        f"routing over the stream's tasks: {compared(groups, DEFAULT, 'adapter-oracle', tasks, 'on par')}; "
        f"against the learned router: {compared(groups, DEFAULT, 'adapter-router', learned, 'on par')}.",
    ]


main = sweep_command(
    "reproduce", default_file=str(Path(__file__).with_name("paper.yaml")), default_out="runs/paper", extra=claims,
    help="The A-AF paper's comparisons: experiments/paper.yaml (or SWEEP_FILE), then its five questions answered.")

if __name__ == "__main__":
    main()
