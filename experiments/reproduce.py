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
from dataclasses import dataclass
from pathlib import Path

import click
import yaml

from continual_asr.config import RunConfig, make_config
from continual_asr.errors import CasrError
from continual_asr.evaluation.summary import compute_metrics
from continual_asr.registry import StrategyInfo, get_strategy
from continual_asr.reporting.compare import RunGroup, comparison_markdown, write_comparison
from continual_asr.reporting.runs import load_results
from continual_asr.runner import run_stream, setup_logging
from continual_asr.stream import load_stream


@dataclass
class PlannedRun:
    name: str
    strategy: StrategyInfo
    config: RunConfig
    seed: int
    out: Path


def load_plan(path: Path, out: Path, stream: str | None, preset: str | None, seeds: list[int] | None,
              only: list[str] | None) -> tuple[str, str, list[PlannedRun]]:
    """The runs of a sweep file, seed-major; command-line choices override the file's."""
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CasrError(f"{path}: cannot read the sweep file ({exc.__class__.__name__})") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("runs"), dict) or not spec["runs"]:
        raise CasrError(f"{path}: a sweep file needs a 'runs' mapping of name -> {{strategy, set}}")
    stream = stream or spec.get("stream", "accents-then-noise")
    preset = preset or spec.get("preset", "default")
    seeds = seeds if seeds is not None else [int(s) for s in spec.get("seeds", [0])]
    names = list(spec["runs"])
    common = spec.get("set") or {}  # config fields of every run
    if not isinstance(common, dict):
        raise CasrError(f"{path}: 'set' must be a mapping of config fields")
    if only:
        unknown = [n for n in only if n not in spec["runs"]]
        if unknown:
            raise CasrError(f"--only: no run named {', '.join(unknown)} in {path} (valid: {', '.join(names)})")
        names = [n for n in names if n in only]
    plan = []
    for seed in seeds:
        for name in names:
            entry = spec["runs"][name] or {}
            if not isinstance(entry, dict) or "strategy" not in entry:
                raise CasrError(f"{path}: run '{name}' needs a strategy")
            info = get_strategy(str(entry["strategy"]))
            changes = {**common, **(entry.get("set") or {})}
            info.check_options(changes)
            config = make_config(preset, {k: (str(v).lower() if isinstance(v, bool) else str(v))
                                          for k, v in changes.items()})
            plan.append(PlannedRun(name, info, config, seed, out / name / f"seed{seed}"))
    return stream, preset, plan


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


def finished_groups(plan: list[PlannedRun]) -> dict[str, RunGroup]:
    groups: dict[str, RunGroup] = {}
    for run in plan:
        try:
            results = load_results(run.out)
        except CasrError:
            continue
        if results.get("complete"):
            group = groups.setdefault(run.name, RunGroup(run.name))
            group.runs.append(results)
            group.metrics.append(compute_metrics(results))
    return groups


def write_report(out: Path, stream: str, preset: str, plan: list[PlannedRun]) -> str:
    groups = finished_groups(plan)
    if not groups:
        raise CasrError(f"{out}: no finished run yet")
    finished = sum(len(g.runs) for g in groups.values())
    hours = sum(r["wall_seconds"] for g in groups.values() for r in g.runs) / 3600
    took = f" Their wall times add up to {hours:.2f} h (base pretraining included where a run did it)."
    text = "\n".join([
        f"# Reproduction: {stream}, preset {preset}",
        "",
        f"{finished} of {len(plan)} runs finished; mean ± std over seeds.{took}",
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
@click.option("--report-only", is_flag=True, help="write results.md from the finished runs; train nothing")
def main(sweep_file: str, out_dir: str, stream: str | None, preset: str | None, seeds: str | None,
         only: str | None, cache_dir: str | None, report_only: bool) -> None:
    out = Path(out_dir)
    try:
        stream_name, preset_name, plan = load_plan(
            Path(sweep_file), out, stream, preset,
            [int(s) for s in seeds.split(",")] if seeds else None,
            [n.strip() for n in only.split(",")] if only else None)
        stream_spec = load_stream(stream_name)
    except (CasrError, ValueError) as exc:
        click.echo(f"reproduce: error: {exc}", err=True)
        sys.exit(2)
    failed = []
    for number, run in enumerate([] if report_only else plan, start=1):
        run.out.mkdir(parents=True, exist_ok=True)
        setup_logging(run.out, quiet=True)
        click.echo(f"[{number}/{len(plan)}] {run.name}, seed {run.seed}: {run.out}", err=True)
        try:
            run_stream(stream_spec, run.strategy, run.config, run.out, seed=run.seed, preset=preset_name,
                       cache_dir=Path(cache_dir) if cache_dir else None, progress=False)
        except CasrError as exc:  # one broken run should not cost the others
            click.echo(f"{run.name}, seed {run.seed}: error: {exc}", err=True)
            failed.append(f"{run.name}/seed{run.seed}")
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
