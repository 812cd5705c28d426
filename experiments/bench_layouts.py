"""The encoder's memory layouts: whole training steps of casr's model against the layouts it had
before, timed in turn on one machine.

    python experiments/bench_layouts.py                          # pretraining, 2 threads
    python experiments/bench_layouts.py --kind "adapter training" --threads 1

Builds the default model once per variant from one seed, so all hold the same weights:
- casr's: the front end's convolutions channels-last (since 2026-12-04), the Conformer's
  convolution module on (B, T, D) throughout (TimeMajorConvolution, since 2026-12-05), the
  attention's q, k and v read as views of their packed projection (SelfAttention, since
  2026-12-06);
- torch's nn.MultiheadAttention forward, which copies them (before 2026-12-06);
- that, with torchaudio's convolution module, on (B, D, T) (before 2026-12-05);
- that, with the front end in the plain layout too (before 2026-12-04: NCHW convolutions, each
  frame flattened as (C, F') into the linear layer).
Each round times one training step of each on every batch shape (length-bucketed batches of
``batch_frames`` filled with utterances of 1.5, 2.5, 4 and 6 s), the variants in turn, the order
rotating from round to round, so the machine's drift moves them alike; prints each one's median
step and its ratio to casr's. docs/performance.md has the figures.
"""

from __future__ import annotations

import types

import click
import torch
from torch import nn
from torchaudio.models.conformer import _ConvolutionModule

from bench_training import configure, synthetic_batch, train_step  # experiments/bench_training.py
from continual_asr.config import make_config
from continual_asr.model import build_model
from timing import interleaved_medians  # experiments/timing.py

SECONDS = (1.5, 2.5, 4.0, 6.0)
CASR = "casr's"
TORCH_ATTENTION = "torch's attention module (before 2026-12-06)"
TORCHAUDIO_CONVOLUTION = "and torchaudio's convolution module (before 2026-12-05)"
PLAIN_FRONT_END = "and the plain front end (before 2026-12-04)"
VARIANTS = (CASR, TORCH_ATTENTION, TORCHAUDIO_CONVOLUTION, PLAIN_FRONT_END)


def plain_layout_forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Conv2dSubsampling.forward before 2026-12-04: NCHW convolutions, frames read as (C, F')."""
    x = self.conv(features.unsqueeze(1))
    return self.out(x.permute(0, 2, 1, 3).flatten(2)), self.output_lengths(lengths)


def build(preset: str, kind: str, variant: str):
    torch.manual_seed(0)
    config = make_config(preset)
    model = build_model(config, num_tokens=config.vocab_size)
    for layer in model.layers:  # each variant is the one before it and one more change undone
        if variant != CASR:
            layer.self_attn.__class__ = nn.MultiheadAttention
        if variant in (TORCHAUDIO_CONVOLUTION, PLAIN_FRONT_END):
            layer.conv_module.__class__ = _ConvolutionModule
    if variant == PLAIN_FRONT_END:
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
@click.option("--rounds", default=10, show_default=True, help="timed rounds (each: every batch shape, every variant)")
@click.option("--preset", default="default", show_default=True)
def main(kind: str, threads: int, rounds: int, preset: str) -> None:
    torch.set_num_threads(threads)
    built = {variant: build(preset, kind, variant) for variant in VARIANTS}
    config = built[CASR][0]
    batches = [synthetic_batch(config, max(1, config.batch_frames // int(s * 100)), int(s * 100), 4.0, s) for s in SECONDS]

    def steps(model, optimizer):
        return lambda: [train_step(model, batch, optimizer) for batch in batches]

    medians = interleaved_medians({name: steps(model, opt) for name, (_, model, opt) in built.items()}, rounds, warmup=1)
    print(f"{kind}, {preset} preset, {threads} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}: "
          f"one step on each of {len(SECONDS)} batch shapes, median of {rounds} rounds")
    for name, seconds in medians.items():
        print(f"  {name}: {1000 * seconds / len(SECONDS):.0f} ms a step, {seconds / medians[CASR]:.3f} of casr's")


if __name__ == "__main__":
    main()
