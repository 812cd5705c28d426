"""Pretraining steps on the base task's real batches: what varying shapes and trained numbers
cost, which experiments/bench_training.py (one synthetic shape, fresh weights) cannot see.

    python experiments/bench_real_steps.py --stream accents-then-noise --preset default --threads 2 \
        --base-model CACHE/base_models/us-clean-KEY.pt

Three checks over the first ``--steps`` batches of a pretraining epoch (length-bucketed, as a run
draws them; the whole model trains from ``--base-model``'s weights, or fresh ones without it):

- **oneDNN primitives.** Every batch has its own (utterances, frames) shape, so the front end's
  and the convolution modules' oneDNN primitives are built again whenever the capped primitive
  cache no longer holds that shape. The creations and their milliseconds (oneDNN's own verbose
  report), against the steps' time.
- **Denormal floats** in every module's output, the gradients and AdamW's state after those
  steps: arithmetic on them can take many times longer on x86.
- **Flushing denormals to zero** (``torch.set_flush_denormal``) against not, milliseconds a step,
  interleaved over rounds of the next ``--steps`` batches.

The stream's data comes from the cache (``--cache-dir``, default $CASR_CACHE or
~/.cache/continual-asr), synthesized first if it is not there.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path

import click
import torch

from continual_asr.data.dataset import FrameBudgetBatchSampler, SpeechDataset, collate
from continual_asr.model import build_model
from continual_asr.training.pretrain import load_base_model
from bench_data_loading import stream_data  # experiments/bench_data_loading.py
from bench_training import configure, train_step  # experiments/bench_training.py
from timing import interleaved_medians  # experiments/timing.py


@contextlib.contextmanager
def onednn_creations():
    """oneDNN's verbose report (printed by C code to file descriptor 1) while the block runs,
    parsed into {primitive kind: [created, reused from the cache, creation ms]}."""
    counts: dict[str, list[float]] = {}
    with tempfile.TemporaryFile(mode="w+b") as capture:
        saved = os.dup(1)
        os.dup2(capture.fileno(), 1)
        try:
            with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON_CREATION):
                yield counts
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        capture.seek(0)
        for line in capture.read().decode(errors="replace").splitlines():
            fields = line.split(",")
            where = next((i for i, f in enumerate(fields) if f.startswith("create:")), None)
            if not line.startswith("onednn_verbose") or where is None:
                continue
            kind = f"{fields[where + 2]} {fields[where + 4]}".strip()  # e.g. "convolution forward_training"
            row = counts.setdefault(kind, [0, 0, 0.0])
            if "miss" in fields[where]:
                row[0] += 1
                row[2] += float(fields[-1])
            else:
                row[1] += 1


def denormals(tensors) -> tuple[int, int]:
    """(denormal values, all values) among ``tensors``."""
    tiny = torch.finfo(torch.float32).tiny
    found = total = 0
    for tensor in tensors:
        tensor = tensor.detach().float()
        found += int(((tensor != 0) & (tensor.abs() < tiny)).sum())
        total += tensor.numel()
    return found, total


def output_denormals(model: torch.nn.Module) -> tuple[list, dict[str, list[int]]]:
    """Forward hooks counting denormals in every submodule's floating-point outputs."""
    counts: dict[str, list[int]] = {}

    def hook(name):
        def count(_module, _inputs, outputs):
            for output in outputs if isinstance(outputs, tuple) else (outputs,):
                if torch.is_tensor(output) and output.is_floating_point():
                    found, total = denormals([output])
                    row = counts.setdefault(name, [0, 0])
                    row[0] += found
                    row[1] += total
        return count

    return [module.register_forward_hook(hook(name)) for name, module in model.named_modules() if name], counts


@click.command()
@click.option("--stream", default="tiny", show_default=True)
@click.option("--preset", default="tiny", show_default=True)
@click.option("--steps", default=40, show_default=True, help="batches in each check")
@click.option("--rounds", default=3, show_default=True, help="rounds of the flushing comparison")
@click.option("--threads", default=0, show_default=True, help="torch threads (0: torch's default)")
@click.option("--base-model", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="a base model file of the cache (base_models/*.pt) whose weights train on; default fresh ones")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--set", "overrides", multiple=True, help="key=value of the run's config, e.g. batch_frames=3000")
def main(stream: str, preset: str, steps: int, rounds: int, threads: int, base_model: Path | None,
         cache_dir: Path | None, overrides: tuple[str, ...]) -> None:
    if threads:
        torch.set_num_threads(threads)
    config, data = stream_data(stream, preset, overrides, cache_dir)
    base = data.train[data.stream.base.name]
    dataset = SpeechDataset(base, data.tokenizer, task_id=0)
    sampler = FrameBudgetBatchSampler(base.num_frames, config.batch_frames, shuffle=True,
                                      jitter=config.batch_length_jitter)
    epochs = [list(iter(sampler)) for _ in range(2)]
    shapes = [{(len(b), max(base.num_frames[i] for i in b)) for b in epoch} for epoch in epochs]
    print(f"{data.stream.base.name} train: {len(epochs[0])} batches an epoch, {len(shapes[0])} shapes "
          f"(utterances, frames) among them, {len(shapes[0] | shapes[1])} in two epochs; "
          f"{torch.get_num_threads()} threads")
    plan = (epochs[0] + epochs[1])[:2 * steps]
    batches = [collate([dataset[i] for i in indices]) for indices in plan]
    torch.manual_seed(0)
    try:
        model = (build_model(config, num_tokens=len(data.tokenizer)) if base_model is None
                 else load_base_model(base_model, config, len(data.tokenizer)))
    except (RuntimeError, KeyError, OSError) as error:
        raise click.ClickException(f"{base_model}: not a base model of this preset ({error})") from None
    configure(model, "pretraining", adapters=0)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.pretrain_lr)

    hooks, outputs = output_denormals(model)
    began = time.perf_counter()
    with onednn_creations() as created:
        for batch in batches[:steps]:
            train_step(model, batch, optimizer)
    seconds = time.perf_counter() - began
    for handle in hooks:
        handle.remove()
    print(f"\n{steps} steps in {seconds:.2f} s (oneDNN reporting, and every output counted)")
    print("| oneDNN primitive | created | reused | creation ms |")
    print("|---|---:|---:|---:|")
    for kind, (made, reused, ms) in sorted(created.items(), key=lambda item: -item[1][2]):
        print(f"| {kind} | {made} | {reused} | {ms:.1f} |")
    total_ms = sum(row[2] for row in created.values())

    found = sum(row[0] for row in outputs.values())
    worst = max(outputs.items(), key=lambda item: item[1][0], default=("none", [0, 0]))
    gradients = denormals(p.grad for p in model.parameters() if p.grad is not None)
    state = denormals(v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v) and v.dim())
    print(f"\ndenormal floats: module outputs {found} of {sum(row[1] for row in outputs.values())} "
          f"(most in {worst[0]}: {worst[1][0]}), gradients {gradients[0]} of {gradients[1]}, "
          f"AdamW's state {state[0]} of {state[1]}")

    timed = batches[steps:]

    def steps_with(flush: bool):
        def run() -> None:
            torch.set_flush_denormal(flush)
            for batch in timed:
                train_step(model, batch, optimizer)
        return run

    try:
        medians = interleaved_medians({"as is": steps_with(False), "denormals flushed": steps_with(True)},
                                      reps=rounds, warmup=0)
    finally:
        torch.set_flush_denormal(False)
    print(f"\nms a step over the next {len(timed)} batches, median of {rounds} rounds: "
          + ", ".join(f"{name} {1000 * s / max(1, len(timed)):.0f}" for name, s in medians.items()))
    # The counting pass above is slowed by its hooks: the creations' share is of plain steps.
    plain = steps * medians["as is"] / max(1, len(timed))
    print(f"oneDNN's creations: {total_ms:.0f} ms over the first {steps} steps, "
          f"{100 * total_ms / 1000 / plain:.1f} % of {steps} steps at that rate")


if __name__ == "__main__":
    main()
