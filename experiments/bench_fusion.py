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
With AdapterHub's ``adapters`` library installed (``pip install -e '.[dev,adapterhub]'``: it
pins transformers 4.57, which casr's Hugging Face base also runs on), a second table times the real library in
the same run: a BERT encoder of the Conformer's width, layers, heads, feed-forward width and
subsampled length, bare and with N bottleneck adapters (``SeqBnConfig``, the same bottleneck
width) under ``Fuse``, against casr's added time on its own encoder. Added time is what fusion
costs on top of the encoder, the part the two designs share. The targets (issue 16): batched
N = 8 at most 1.15x the base encoder, and at least 4x less added time than AdapterHub's. Adapters get random
up-projections so nothing is skipped as zero. Timings are medians over ``--reps`` calls after
two warm-up calls, in inference mode, on the CPU threads torch uses by default; for each N the
bare encoder and the three variants are timed in turn within every rep, so the ratios do not
drift with the machine.
"""

from __future__ import annotations

import logging

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


def adapterhub_calls(config, adapter_dim: int, batch: int, frames: int, n: int) -> dict | None:
    """Forward calls of a BERT encoder at the Conformer's shapes, bare and with N adapters under
    AdapterHub's AdapterFusion; None without the ``adapters`` library."""
    try:
        import adapters
        from adapters import SeqBnConfig
        from adapters.composition import Fuse
        from transformers import BertConfig, BertModel
    except ImportError:
        return None
    logging.getLogger("adapters").setLevel(logging.ERROR)  # its note, while building, that no adapter is active yet
    shapes = BertConfig(hidden_size=config.d_model, num_hidden_layers=config.num_layers,
                        num_attention_heads=config.num_heads, intermediate_size=config.ffn_dim, vocab_size=8,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, max_position_embeddings=4096)
    bare, fused = BertModel(shapes).eval(), BertModel(shapes).eval()
    adapters.init(fused)
    names = [f"task{task}" for task in range(n)]
    for name in names:
        fused.add_adapter(name, config=SeqBnConfig(reduction_factor=config.d_model / adapter_dim))
    fused.add_adapter_fusion(Fuse(*names))
    fused.set_active_adapters(Fuse(*names))
    hidden = torch.randn(batch, frames, config.d_model)
    return {"hub base": lambda: bare(inputs_embeds=hidden).last_hidden_state,
            "hub fusion": lambda: fused(inputs_embeds=hidden).last_hidden_state}


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

    adapter_dim = build_fields(ExtractionOptions, preset).adapter_dim

    def encoder_with(make_combiner, n: int):
        model = build_model(config, num_tokens=config.vocab_size).eval()
        model.set_adapter_dim(adapter_dim)
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
        subsampled = base_encoder()[1].shape[1]  # the frames every layer (and its adapters) sees
        added = {}
        for n in [int(c) for c in counts.split(",")]:
            calls = {"base": base_encoder,
                     "batched": encoder_with(lambda: AdapterFusion(config.d_model), n),
                     "loop": encoder_with(lambda: LoopFusion(config.d_model), n),
                     "mean": encoder_with(AdapterMean, n)}
            calls.update(adapterhub_calls(config, adapter_dim, batch, subsampled, n) or {})
            took = interleaved_medians(calls, reps)
            base = took["base"]
            print(f"| {n} | {1000 * base:.1f} ms | " + " | ".join(
                f"{1000 * took[name]:.1f} ms | {took[name] / base:.2f}x" for name in ("batched", "loop", "mean")) + " |")
            if "hub base" in took:
                added[n] = (took["hub base"], took["hub fusion"], took["batched"] - base)
        if not added:
            print("\nAdapterHub not timed: the adapters library is not installed "
                  "(pip install -e '.[dev,adapterhub]')")
            return
        print(f"\nAdapterHub's AdapterFusion (adapters {_version('adapters')}), BERT encoder of the same shapes "
              f"({batch} x {subsampled} frames after subsampling), timed in the same rounds\n")
        print("| adapters N | BERT encoder | + AdapterHub fusion | AdapterHub added | casr added | added-time ratio |")
        print("|---:|---:|---:|---:|---:|---:|")
        for n, (hub_base, hub_fusion, casr_added) in added.items():
            hub_added = hub_fusion - hub_base
            print(f"| {n} | {1000 * hub_base:.1f} ms | {1000 * hub_fusion:.1f} ms | {1000 * hub_added:.1f} ms | "
                  f"{1000 * casr_added:.1f} ms | " + (f"{hub_added / casr_added:.1f}x |" if casr_added > 0 else "casr added nothing measurable |"))


def _version(package: str) -> str:
    from importlib.metadata import version
    return version(package)

if __name__ == "__main__":
    main()
