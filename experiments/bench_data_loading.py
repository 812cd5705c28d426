"""What a training epoch spends on its data, without the model: the base task's training split in
the batches pretraining draws (length-bucketed, ``batch_frames`` padded frames at most, shuffled),
each taken from the DataLoader as a run takes it (Avalanche's dataset, casr's collate, the main
process) and put through SpecAugment; how much of each batch is padding:

    python experiments/bench_data_loading.py --stream accents-then-noise --preset default --threads 2

The stream's data comes from the cache (``--cache-dir``, default $CASR_CACHE or
~/.cache/continual-asr), synthesized first if it is not there. Compare the milliseconds a batch
with a training step's (experiments/bench_training.py): what is left is the model's.
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import torch
from torch.utils.data import DataLoader

from continual_asr.config import make_config, parse_overrides
from continual_asr.data.dataset import FrameBudgetBatchSampler, collate, make_dataset
from continual_asr.data.streamdata import prepare_stream_data
from continual_asr.errors import CasrError
from continual_asr.runner import default_cache_dir
from continual_asr.stream import load_stream
from continual_asr.training.template import spec_augment


def timed_epoch(loader: DataLoader, augment: torch.nn.Module | None) -> dict:
    """Seconds spent taking batches from ``loader`` and augmenting them, with batch and frame counts."""
    loading = augmenting = 0.0
    batches = frames = padded = 0
    iterator = iter(loader)
    while True:
        began = time.perf_counter()
        batch = next(iterator, None)
        loading += time.perf_counter() - began
        if batch is None:
            break
        if augment is not None:
            began = time.perf_counter()
            augment(batch.features.transpose(1, 2))
            augmenting += time.perf_counter() - began
        batches += 1
        frames += int(batch.feature_lengths.sum())
        padded += batch.features.shape[0] * batch.features.shape[1]
    return {"batches": batches, "frames": frames, "padded": padded, "loading": loading, "augmenting": augmenting}


def stream_data(stream: str, preset: str, overrides: tuple[str, ...], cache_dir: Path | None):
    """(config, data) of ``stream`` from the cache, synthesized first if it is not there; casr's
    own one-line errors as click's."""
    try:
        config = make_config(preset, parse_overrides(overrides))
        return config, prepare_stream_data(load_stream(stream), config, cache_dir or default_cache_dir(),
                                           progress=False)
    except CasrError as error:
        raise click.ClickException(str(error)) from None


@click.command()
@click.option("--stream", default="tiny", show_default=True)
@click.option("--preset", default="tiny", show_default=True)
@click.option("--epochs", default=2, show_default=True, help="epochs timed (each a new shuffle)")
@click.option("--threads", default=0, show_default=True, help="torch threads (0: torch's default)")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--set", "overrides", multiple=True, help="key=value of the run's config, e.g. batch_frames=3000")
def main(stream: str, preset: str, epochs: int, threads: int, cache_dir: Path | None,
         overrides: tuple[str, ...]) -> None:
    if threads:
        torch.set_num_threads(threads)
    config, data = stream_data(stream, preset, overrides, cache_dir)
    base = data.train[data.stream.base.name]
    dataset = make_dataset(base, data.tokenizer, task_id=0)
    augment = spec_augment(config.n_mels) if config.specaugment else None
    print(f"{data.stream.base.name} train: {len(base.texts)} utterances, batch_frames {config.batch_frames}, "
          f"{torch.get_num_threads()} threads")
    print("| epoch | batches | padding share | loading, ms a batch | SpecAugment, ms a batch | the epoch's data, s |")
    print("|---:|---:|---:|---:|---:|---:|")
    # One sampler for every epoch, as a training phase has: it draws each epoch's batches anew.
    sampler = FrameBudgetBatchSampler(list(dataset.num_frames), config.batch_frames, shuffle=True,
                                      jitter=config.batch_length_jitter)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=0)
    for epoch in range(epochs):
        figures = timed_epoch(loader, augment)
        batches = max(1, figures["batches"])
        print(f"| {epoch + 1} | {figures['batches']} | {1 - figures['frames'] / max(1, figures['padded']):.1%} "
              f"| {1000 * figures['loading'] / batches:.2f} | {1000 * figures['augmenting'] / batches:.2f} "
              f"| {figures['loading'] + figures['augmenting']:.2f} |")


if __name__ == "__main__":
    main()
