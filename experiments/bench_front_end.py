"""The convolutional front end's layout: channels-last (casr's since 2026-12-04) against the plain
layout it had before, whole training steps timed in turn on one machine.

    python experiments/bench_front_end.py                          # pretraining, 2 threads
    python experiments/bench_front_end.py --kind "adapter training" --threads 1

Builds the default model twice from one seed: once as casr builds it, once with the front end put
back as it was (the convolutions in the default NCHW layout, each frame flattened as (C, F') into
the linear layer). Both hold the same weights. Each round times one training step of each on
every batch shape (length-bucketed batches of ``batch_frames`` filled with utterances of 1.5,
2.5, 4 and 6 s), the two in turn so the machine's drift moves both alike; prints the median step
of each and the new/old ratio. docs/performance.md has the figures.
"""

from __future__ import annotations

import types

import click
import torch

from bench_training import configure, synthetic_batch, train_step  # experiments/bench_training.py
from continual_asr.config import make_config
from continual_asr.model import build_model
from timing import interleaved_medians  # experiments/timing.py

SECONDS = (1.5, 2.5, 4.0, 6.0)


def plain_layout_forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Conv2dSubsampling.forward before 2026-12-04: NCHW convolutions, frames read as (C, F')."""
    x = self.conv(features.unsqueeze(1))
    return self.out(x.permute(0, 2, 1, 3).flatten(2)), self.output_lengths(lengths)


def build(preset: str, kind: str, plain: bool):
    torch.manual_seed(0)
    config = make_config(preset)
    model = build_model(config, num_tokens=config.vocab_size)
    if plain:
        model.subsampling.conv.to(memory_format=torch.contiguous_format)
        model.subsampling.forward = types.MethodType(plain_layout_forward, model.subsampling)
    configure(model, kind, adapters=5)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    return config, model, optimizer


@click.command()
@click.option("--kind", default="pretraining", show_default=True,
              type=click.Choice(["pretraining", "adapter training", "fusion (5 adapters)"]))
@click.option("--threads", default=2, show_default=True, help="torch threads")
@click.option("--rounds", default=6, show_default=True, help="timed rounds (each: every batch shape, both layouts)")
@click.option("--preset", default="default", show_default=True)
def main(kind: str, threads: int, rounds: int, preset: str) -> None:
    torch.set_num_threads(threads)
    built = {"plain (before)": build(preset, kind, plain=True), "channels-last": build(preset, kind, plain=False)}
    config = built["channels-last"][0]
    batches = [synthetic_batch(config, max(1, config.batch_frames // int(s * 100)), int(s * 100), 4.0, s) for s in SECONDS]

    def steps(model, optimizer):
        return lambda: [train_step(model, batch, optimizer) for batch in batches]

    medians = interleaved_medians({name: steps(model, opt) for name, (_, model, opt) in built.items()}, rounds, warmup=1)
    print(f"{kind}, {preset} preset, {threads} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}: "
          f"one step on each of {len(SECONDS)} batch shapes, median of {rounds} rounds")
    for name, seconds in medians.items():
        print(f"  {name}: {1000 * seconds / len(SECONDS):.0f} ms a step")
    print(f"  channels-last / plain: {medians['channels-last'] / medians['plain (before)']:.3f}")


if __name__ == "__main__":
    main()
