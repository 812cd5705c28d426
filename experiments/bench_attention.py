"""casr's self-attention (SelfAttention) against torch's nn.MultiheadAttention forward, one
Conformer layer's attention alone, on the batch shapes of a length-bucketed epoch.

    python experiments/bench_attention.py
    python experiments/bench_attention.py --threads 1 --rounds 50

For each (frames, utterances) shape of the default preset's batches after 4x subsampling: whether
the two give the same outputs and gradients to the bit (in float32 they should), and the median
time of a training call (forward and backward) and of an inference call, the two timed in turn
(experiments/timing.py). docs/performance.md has the figures.
"""

from __future__ import annotations

import click
import torch
from torch import nn

from continual_asr.config import make_config
from continual_asr.model.encoder import Conv2dSubsampling, SelfAttention
from timing import interleaved_medians  # experiments/timing.py

SECONDS = (1.5, 2.5, 4.0, 6.0)


@click.command()
@click.option("--threads", default=2, show_default=True, help="torch threads")
@click.option("--rounds", default=30, show_default=True, help="timed calls of each, in turn")
@click.option("--preset", default="default", show_default=True)
def main(threads: int, rounds: int, preset: str) -> None:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = make_config(preset)
    attention = SelfAttention(config.d_model, config.num_heads)
    forwards = {"torch's": lambda *a, **k: nn.MultiheadAttention.forward(attention, *a, **k),
                "casr's": attention.forward}
    print(f"self-attention, d={config.d_model}, {config.num_heads} heads, {threads} threads, "
          f"median of {rounds} calls each (ms)")
    print("| frames x utterances | same bits | torch's training | casr's training | torch's inference | casr's inference |")
    print("|---|---|---:|---:|---:|---:|")
    front = Conv2dSubsampling(config.n_mels, config.d_model, config.subsampling_channels, config.subsampling_factor)
    for seconds in SECONDS:
        steps = front.output_lengths(int(seconds * 100))
        batch = max(1, config.batch_frames // int(seconds * 100))
        x = torch.randn(steps, batch, config.d_model)
        lengths = torch.randint(steps * 3 // 4, steps + 1, (batch,))
        lengths[0] = steps
        padding = torch.arange(steps)[None, :] >= lengths[:, None]
        upstream = torch.randn_like(x)

        def train(forward) -> list[torch.Tensor]:
            attention.zero_grad()
            inputs = x.clone().requires_grad_()
            out, _ = forward(inputs, inputs, inputs, key_padding_mask=padding, need_weights=False)
            out.backward(upstream)
            return [out, inputs.grad, *(p.grad for p in attention.parameters())]

        def infer(forward) -> torch.Tensor:
            with torch.inference_mode():
                return forward(x, x, x, key_padding_mask=padding, need_weights=False)[0]

        same = all(torch.equal(a, b) for a, b in zip(*(train(f) for f in forwards.values())))
        same = same and torch.equal(*(infer(f) for f in forwards.values()))
        trained = interleaved_medians({n: (lambda f=f: train(f)) for n, f in forwards.items()}, rounds)
        inferred = interleaved_medians({n: (lambda f=f: infer(f)) for n, f in forwards.items()}, rounds)
        print(f"| {steps} x {batch} | {'yes' if same else 'NO'} | "
              + " | ".join(f"{1000 * t[n]:.2f}" for t in (trained, inferred) for n in forwards) + " |")


if __name__ == "__main__":
    main()
