"""Fusion cost as tasks accumulate: encoder forward time with N adapters fused, against the base.

    python experiments/bench_fusion.py                 # default model, batch 8 x 4 s, N = 1..16
    python experiments/bench_fusion.py --reps 20 --adapters 1,2,4,8,16,32

For each N it times the encoder (features in, last layer out; no head) three ways, as a ratio
to the bare base encoder on the same batch:
- ``batched``: this project's AdapterFusion over the batched AdapterBank (stacked weights, keys
  and values never projected per adapter);
- ``loop``: the AdapterHub way, each adapter run on its own in a Python loop and every adapter
  output projected through K and V before the attention;
- ``mean``: Adapter Mean over the batched bank, for scale.
The target (issue 7) is batched N = 8 at most 1.25x the base encoder. Adapters get random
up-projections so nothing is skipped as zero. Timings are medians over ``--reps`` calls after
two warm-up calls, in inference mode, on the CPU threads torch uses by default; for each N the
bare encoder and the three variants are timed in turn within every rep, so the ratios do not
drift with the machine.
"""

from __future__ import annotations

import click
import torch
from torch import nn

from continual_asr.config import build_fields, make_config
from continual_asr.model import AdapterBank, AdapterFusion, AdapterMean, build_model
from continual_asr.training.adapters import ExtractionOptions
from timing import interleaved_medians  # experiments/timing.py


class LoopFusion(nn.Module):
    """AdapterHub-style fusion: one adapter at a time, K and V applied to every adapter output."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, hidden: torch.Tensor, bank: AdapterBank, adapter_index: torch.Tensor | None) -> torch.Tensor:
        outputs = [adapter(hidden) for adapter in bank.adapters]  # N x (B, T, D)
        query = self.query(hidden)
        keys = torch.stack([self.key(a) for a in outputs], dim=2)  # (B, T, N, D)
        values = torch.stack([self.value(a) for a in outputs], dim=2)
        probs = torch.einsum("btd,btnd->btn", query, keys).softmax(dim=-1)
        return self.norm(torch.einsum("btn,btnd->btd", probs, values))


@click.command()
@click.option("--preset", default="default", show_default=True, help="model sizes from this preset")
@click.option("--batch", default=8, show_default=True)
@click.option("--seconds", default=4.0, show_default=True, help="length of every utterance")
@click.option("--adapters", "counts", default="1,2,4,8,16", show_default=True)
@click.option("--reps", default=20, show_default=True)
@click.option("--threads", default=0, show_default=True, help="torch threads (0: torch's default)")
def main(preset: str, batch: int, seconds: float, counts: str, reps: int, threads: int) -> None:
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = make_config(preset, {})
    frames = int(seconds * 100)
    features = torch.randn(batch, frames, config.n_mels)
    lengths = torch.full((batch,), frames)

    def encoder_with(make_combiner, n: int):
        model = build_model(config, num_tokens=config.vocab_size).eval()
        model.set_adapter_dim(build_fields(ExtractionOptions, preset).adapter_dim)
        for task in range(n):
            model.add_adapter(f"task{task}")
        for bank in model.banks:
            for adapter in bank.adapters:
                nn.init.normal_(adapter.up, std=0.02)
        if make_combiner is not None:
            model.set_combiners(lambda _: make_combiner())
            # calibrate LayerNorm gains once, outside the timing
            with torch.inference_mode():
                model.encode(features, lengths)
        return lambda: model.encode(features, lengths)

    with torch.inference_mode():
        print(f"{config.num_layers}-layer d={config.d_model} encoder, batch {batch} x {seconds:g} s, "
              f"{torch.get_num_threads()} threads, median of {reps}\n")
        print("| adapters N | base encoder | fusion, batched bank | ratio | fusion, per-adapter loop | ratio "
              "| Adapter Mean | ratio |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        base_encoder = encoder_with(None, 0)
        for n in [int(c) for c in counts.split(",")]:
            took = interleaved_medians({"base": base_encoder,
                                        "batched": encoder_with(lambda: AdapterFusion(config.d_model), n),
                                        "loop": encoder_with(lambda: LoopFusion(config.d_model), n),
                                        "mean": encoder_with(AdapterMean, n)}, reps)
            base = took["base"]
            print(f"| {n} | {1000 * base:.1f} ms | " + " | ".join(
                f"{1000 * took[name]:.1f} ms | {took[name] / base:.2f}x" for name in ("batched", "loop", "mean")) + " |")


if __name__ == "__main__":
    main()
