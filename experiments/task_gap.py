"""How far each task of a stream is from the base task, as the base model hears it.

A continual-learning stream is only informative if every task is clearly harder for the base
model than the base task itself. This prints the base model's WER on every test set of the
stream and flags tasks whose WER is within ``--margin`` points of the base task's.

    python experiments/task_gap.py --stream accents-then-noise
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import torch

from continual_asr.config import make_config, parse_overrides
from continual_asr.data.streamdata import prepare_stream_data
from continual_asr.runner import default_cache_dir, setup_logging
from continual_asr.stream import load_stream
from continual_asr.training.pretrain import evaluate_base_model, pretrain_base_model


@click.command()
@click.option("--stream", "stream_name", default="accents-then-noise", show_default=True)
@click.option("--preset", default="default", show_default=True)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--margin", default=10.0, show_default=True, help="WER points a task must exceed the base task by")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None)
def main(stream_name: str, preset: str, overrides: tuple[str, ...], seed: int, margin: float, cache_dir: str | None) -> None:
    setup_logging(None, quiet=True)
    config = make_config(preset, parse_overrides(overrides))
    stream = load_stream(stream_name)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    data = prepare_stream_data(stream, config, cache, progress=False)
    model, _ = pretrain_base_model(data, config, seed, cache, torch.device("cpu"), progress=False)
    wers = evaluate_base_model(model, data, config, torch.device("cpu"))
    base = wers[stream.base.name]
    click.echo(f"{'task':<24}{'WER %':>8}{'gap':>8}  condition")
    too_close = []
    for task in stream.eval_tasks:
        gap = wers[task.name] - base
        role = "base" if task is stream.base else "zero-shot" if task is stream.zero_shot else ""
        flag = "" if task is stream.base or gap >= margin else "  <- too close to the base task"
        if flag:
            too_close.append(task.name)
        click.echo(f"{task.name:<24}{wers[task.name]:8.1f}{gap:8.1f}  {'+'.join(task.voices)} "
                   f"{task.condition.describe()} {role}{flag}")
    sys.exit(1 if too_close else 0)


if __name__ == "__main__":
    main()
