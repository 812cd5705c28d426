"""Run every built-in strategy on one stream, one folder each, and print one comparison table.

    python experiments/compare_strategies.py --stream accents-then-noise --out runs/compare
    python experiments/compare_strategies.py --stream tiny --preset tiny --out runs/compare-tiny

Runs go to OUT/STRATEGY; a finished run is not trained again (an unfinished one continues), so
the same command regenerates the table at any time, and writes it to OUT/comparison.md too.
Columns: the mean WER over the base task and every stream task after the last task, the
zero-shot WER after the last task, the parameters trained in the last step (and their share of
the stored model) and the run's wall time without base pretraining (shared, and cached after
the first run). ``--set`` applies to every strategy that reads the field: model and batching
fields to all, a strategy option only to the strategies that declare it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from continual_asr.config import make_config, parse_overrides
from continual_asr.errors import CasrError
from continual_asr.registry import StrategyInfo, available_strategies, strategy_options
from continual_asr.reporting.tables import markdown_table
from continual_asr.runner import run_stream, setup_logging
from continual_asr.stream import load_stream

STRATEGIES = ["adapter-oracle", "adapter-avg", "adapter-wavg", "adapter-fusion", "adapter-router",
              "finetune", "joint", "replay", "ewc", "lwf"]
HEADER = ["strategy", "final mean WER %", "zero-shot WER %", "trained (last step)", "trained share", "wall s"]


def overrides_for(info: StrategyInfo, overrides: dict[str, str]) -> dict[str, str]:
    """The overrides ``info`` reads: every general field, and its own options."""
    foreign = strategy_options() - set(info.options or ())
    return {key: value for key, value in overrides.items() if key not in foreign}


def table_row(name: str, results: dict) -> list[str]:
    last = results["wer_matrix"][-1]
    trained_columns = len(results["columns"]) - 1  # every column but the zero-shot one
    parameters = results["steps"][-1]["parameters"]
    wall = results["wall_seconds"] - results["base_model"]["seconds"]
    return [name, f"{sum(last[:trained_columns]) / trained_columns:.1f}", f"{last[-1]:.1f}",
            f"{parameters['trained']:,}", f"{100 * parameters['trained_share']:.1f}%", f"{wall:.0f}"]


@click.command()
@click.option("--stream", "stream_name", default="accents-then-noise", show_default=True)
@click.option("--preset", default="default", show_default=True)
@click.option("--out", "out_dir", default=None, help="parent folder of the runs (default: runs/compare-STREAM)")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--strategies", default=",".join(STRATEGIES), show_default=True, help="comma-separated strategy names")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None)
@click.option("--progress", is_flag=True, help="progress bars and log lines on the terminal (run.log gets them anyway)")
def main(stream_name: str, preset: str, out_dir: str | None, overrides: tuple[str, ...], seed: int, strategies: str,
         cache_dir: str | None, progress: bool) -> None:
    try:
        stream = load_stream(stream_name)
        values = parse_overrides(overrides)
        registered = available_strategies()
        names = [n.strip() for n in strategies.split(",") if n.strip()]
        unknown = [n for n in names if n not in registered]
        if unknown:
            raise CasrError(f"unknown strategies {', '.join(unknown)} (valid: {', '.join(registered)})")
        plan = [(registered[n], make_config(preset, overrides_for(registered[n], values))) for n in names]
    except CasrError as exc:
        click.echo(f"compare_strategies: error: {exc}", err=True)
        sys.exit(2)
    root = Path(out_dir or f"runs/compare-{stream.name}")
    rows, failed = [], []
    for info, config in plan:
        out = root / info.name
        out.mkdir(parents=True, exist_ok=True)
        setup_logging(out, quiet=not progress)
        click.echo(f"{info.name}: {out}", err=True)
        try:
            results = run_stream(stream, info, config, out, seed=seed, preset=preset,
                                 cache_dir=Path(cache_dir) if cache_dir else None, progress=progress)
        except CasrError as exc:  # one broken run should not cost the others
            click.echo(f"{info.name}: error: {exc}", err=True)
            failed.append(info.name)
            continue
        rows.append(table_row(info.name, results))
    title = f"{stream.name}, preset {preset}, seed {seed}" + (f", {' '.join(overrides)}" if overrides else "")
    table = f"{title}\n\n{markdown_table(HEADER, rows)}\n"
    (root / "comparison.md").write_text(table, encoding="utf-8")
    click.echo(table)
    if failed:
        click.echo(f"failed: {', '.join(failed)} (see their run.log)", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
