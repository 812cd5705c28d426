"""Reproduce the A-AF paper's comparisons on a built-in stream: every strategy, several seeds.

    python experiments/reproduce.py --jobs 2                     # experiments/paper.yaml -> runs/paper
    python experiments/reproduce.py --seeds 0 --only adapter-fusion,finetune
    python experiments/reproduce.py --stream tiny --preset tiny --out runs/paper-tiny   # a smoke run

It is ``casr sweep experiments/paper.yaml`` (continual_asr/sweep.py: resumable, finished runs
read back, ``--jobs`` runs at a time, adapter strategies sharing their single-task adapters)
plus the paper's five questions answered with the sweep's numbers at the end of OUT/results.md
(with the table, mean ± std over the seeds that finished; OUT/compare.csv and OUT/compare.png
too). ``--report-only`` rewrites them at any time from the runs finished so far.
"""

from __future__ import annotations

from pathlib import Path

from continual_asr.cli import sweep_command
from continual_asr.reporting.compare import RunGroup


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
        f"{relative(mean('adapter-fusion no-LN', 'final_mean_wer'), aaf)} against A-AF with it; with the "
        "adapters trained during composition too: "
        f"{relative(mean('adapter-fusion +adapters no-LN', 'final_mean_wer'), mean('adapter-fusion +adapters', 'final_mean_wer'))}. "
        "Backward transfer (negative = forgetting): "
        + ", ".join(f"{n} {mean(n, 'backward_transfer'):+.2f}" for n in groups
                    if mean(n, "backward_transfer") is not None) + ".",
    ]
    return lines


main = sweep_command(
    "reproduce", default_file=str(Path(__file__).with_name("paper.yaml")), default_out="runs/paper", extra=claims,
    help="The A-AF paper's comparisons: experiments/paper.yaml (or SWEEP_FILE), then its five questions answered.")

if __name__ == "__main__":
    main()
