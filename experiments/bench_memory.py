"""Peak memory and training time of a short run under several oneDNN primitive-cache capacities.

oneDNN keeps a primitive, with memory of its own, per convolution shape it has seen; casr caps the
cache at 64 (continual_asr/__init__.py). This runs the same short fine-tuning run once per
capacity, each in a fresh process with ``ONEDNN_PRIMITIVE_CACHE_CAPACITY`` set, and prints the
peak resident memory and training seconds after every step (results.json's ``peak_rss_mib`` and
``train_seconds``) and the final WER (which must not change: the cache does not change the sums):

    PYTHONPATH=. python experiments/bench_memory.py --capacities 1024,64,0 --threads 2

The first run pretrains the base model if the cache has none (its pretraining then counts in the
first row's first step); run it once beforehand, or read the rows after the first.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import click

from continual_asr.reporting.runs import load_results


def short_run(capacity: str, out: Path, stream: str, preset: str | None, threads: int, train_utterances: int,
              cache_dir: str | None) -> dict:
    """One ``casr run`` in a fresh process with the cache capacity set; its results.json."""
    command = [sys.executable, "-m", "continual_asr", "run", "--stream", stream, "--strategy", "finetune",
               "--out", str(out), "--quiet", "--set", "finetune_epochs=1", "--set", f"threads={threads}",
               "--set", f"max_train_utterances={train_utterances}", "--set", "max_test_utterances=20"]
    command += ["--preset", preset] if preset else []
    command += ["--cache-dir", cache_dir] if cache_dir else []
    env = {k: v for k, v in os.environ.items() if "PRIMITIVE_CACHE_CAPACITY" not in k}
    env["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = capacity
    finished = subprocess.run(command, env=env, capture_output=True, text=True)
    if finished.returncode != 0:
        raise click.ClickException(f"capacity {capacity}: casr run failed: {finished.stderr.strip()[-500:]}")
    return load_results(out)


@click.command()
@click.option("--capacities", default="1024,64,0", show_default=True, help="oneDNN cache capacities, comma-separated")
@click.option("--stream", default="accents-then-noise", show_default=True)
@click.option("--preset", default=None, help="config preset (default: the stream's own)")
@click.option("--threads", default=2, show_default=True)
@click.option("--train-utterances", default=400, show_default=True, help="max_train_utterances of each task")
@click.option("--cache-dir", default=None, help="casr's cache (default: $CASR_CACHE or ~/.cache/continual-asr)")
def main(capacities: str, stream: str, preset: str | None, threads: int, train_utterances: int,
         cache_dir: str | None) -> None:
    print("| oneDNN primitive cache | peak RSS after each step, MiB | training s per step | final mean WER |")
    print("| --- | --- | --- | ---: |")
    with tempfile.TemporaryDirectory() as work:
        for capacity in (value.strip() for value in capacities.split(",")):
            results = short_run(capacity, Path(work) / f"cap{capacity}", stream, preset, threads, train_utterances,
                                cache_dir)
            peaks = ", ".join(f"{step['peak_rss_mib']:,.0f}" for step in results["steps"])
            seconds = ", ".join(f"{step['train_seconds']:.1f}" for step in results["steps"])
            print(f"| {capacity} | {peaks} | {seconds} | {results['summary']['final_mean_wer']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
