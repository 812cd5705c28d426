"""One short check on a CUDA machine (under 5 minutes): does casr run on the GPU, and how fast
does adapter training go there compared with the CPU?

    python experiments/gpu_check.py                 # everything
    python experiments/gpu_check.py --skip-run      # throughput only
    python experiments/gpu_check.py --budget 240    # stop starting new parts after 240 s

1. ``casr run --stream tiny --preset tiny --device cuda`` (synthesizes the tiny stream and
   pretrains its tiny base model on the GPU first): exit status, WER table, device recorded.
2. Adapter training throughput of the default-size model (4 Conformer layers, d=144, a
   32-dim adapter, the base frozen) through the real training loop (AdapterStrategy, the
   template's length-bucketed loader, pinned memory and workers on the GPU) on synthetic
   utterances of 2-8 s: utterances/s and audio seconds/s on the GPU (bf16 autocast and
   float32; default batch_frames=6000 and 8x that) and on the CPU. Epoch times after the
   first (warm-up) epoch, the GPU synchronised.
3. ``casr run --nproc 2 --device cpu`` on the tiny stream: torchrun with gloo, end to end
   (the base model is cached by part 1).

Nothing is downloaded; everything goes to a temporary folder (or --work DIR).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import torch
from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
from avalanche.benchmarks.utils import AvalancheDataset
from avalanche.benchmarks.utils.data_attribute import DataAttribute
from avalanche.core import SupervisedPlugin
from torch.utils.data import Dataset

from continual_asr.data.dataset import FrameBudgetBatchSampler, collate
from continual_asr.model import build_model
from continual_asr.registry import get_strategy

STARTED = time.perf_counter()
NUM_TOKENS = 256


def elapsed() -> float:
    return time.perf_counter() - STARTED


class SyntheticSpeech(Dataset):
    """Random log-mel utterances of 2-8 s with transcripts of about 2.5 tokens per second."""

    def __init__(self, count: int, n_mels: int, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.lengths = torch.randint(200, 800, (count,), generator=generator).tolist()
        self.features = [torch.randn(n, n_mels, generator=generator).half() for n in self.lengths]
        self.tokens = [torch.randint(0, NUM_TOKENS, (max(2, n // 40),), generator=generator) for n in self.lengths]

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, index: int):
        return self.features[index], self.tokens[index], "synthetic", 1


class EpochClock(SupervisedPlugin):
    """Wall time and utterances of every training epoch (the GPU synchronised at both ends)."""

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.device = device
        self.epochs: list[float] = []

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def before_training_epoch(self, strategy, **kwargs) -> None:
        self._sync()
        self.began = time.perf_counter()

    def after_training_epoch(self, strategy, **kwargs) -> None:
        self._sync()
        self.epochs.append(time.perf_counter() - self.began)


def adapter_throughput(device: torch.device, count: int, epochs: int, **overrides) -> dict:
    """Adapter training (knowledge extraction) of the default-size model on ``count`` synthetic
    utterances for ``epochs`` epochs; rates from the epochs after the first."""
    fusion = get_strategy("adapter-fusion")
    config, options = fusion.settings("default", {"adapter_epochs": epochs, "fusion_epochs": 0, **overrides})
    speech = SyntheticSpeech(count, config.n_mels)
    data = AvalancheDataset([speech], data_attributes=[DataAttribute(speech.lengths, "num_frames")],
                            collate_fn=collate)
    experience = next(iter(benchmark_from_datasets(train=[data], test=[data]).train_stream))
    torch.manual_seed(0)
    model = build_model(config, NUM_TOKENS)
    clock = EpochClock(device)
    strategy = fusion.factory(model, config, options, device=device, seed=0, plugins=[clock])
    strategy.train(experience, eval_streams=[])
    seconds = statistics.median(clock.epochs[1:] or clock.epochs)
    audio = sum(speech.lengths) / 100
    return {"utt_s": count / seconds, "audio_s_per_s": audio / seconds, "epoch_s": seconds,
            "utterances": count, "audio_s": audio,
            "batches": len(FrameBudgetBatchSampler(speech.lengths, config.batch_frames, shuffle=False))}


def casr(args: list[str], timeout: float) -> tuple[int, str, float]:
    began = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-m", "continual_asr", *args], capture_output=True, text=True,
                              timeout=max(10.0, timeout))
        return done.returncode, done.stdout + done.stderr, time.perf_counter() - began
    except subprocess.TimeoutExpired as exc:
        output = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return 124, output + "\n(timed out)", time.perf_counter() - began


def show_run(name: str, rc: int, output: str, seconds: float, out: Path) -> None:
    print(f"\n== {name}: exit status {rc} in {seconds:.0f} s")
    print("\n".join(output.strip().splitlines()[-14:]))
    results = out / "results.json"
    if results.is_file():
        data = json.loads(results.read_text())
        print(f"results.json: device {data.get('device')}, processes {data.get('processes')}, "
              f"complete {data.get('complete')}, wall {data.get('wall_seconds')} s, "
              f"base model pretrained in {data['base_model'].get('seconds', 0):.0f} s")


@click.command()
@click.option("--work", type=click.Path(file_okay=False), default=None, help="folder for runs and cache (default: temporary)")
@click.option("--budget", default=270.0, show_default=True, help="seconds after which no new part starts")
@click.option("--skip-run", is_flag=True, help="only the throughput measurement")
def main(work, budget, skip_run) -> None:
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuda available: {torch.cuda.is_available()}")
    if not torch.cuda.is_available():
        print("no CUDA GPU: this check is for a GPU machine (the CPU parts still run)")
    else:
        props = torch.cuda.get_device_properties(0)
        print(f"GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB, bf16: {torch.cuda.is_bf16_supported()}")
    root = Path(work or tempfile.mkdtemp(prefix="casr-gpu-check-"))
    cache = root / "cache"
    cuda = torch.cuda.is_available()

    if not skip_run and cuda:
        out = root / "tiny-cuda"
        rc, output, seconds = casr(["run", "--stream", "tiny", "--preset", "tiny", "--device", "cuda", "--out", str(out),
                                    "--cache-dir", str(cache), "--quiet", "--overwrite"], timeout=budget - elapsed())
        show_run("casr run --stream tiny --preset tiny --device cuda", rc, output, seconds, out)

    rows = []
    cases = []
    if cuda:
        gpu = torch.device("cuda", 0)
        cases += [("cuda bf16, batch_frames 6000", gpu, 1024, 4, {}),
                  ("cuda float32, batch_frames 6000", gpu, 1024, 4, {"mixed_precision": False}),
                  ("cuda bf16, batch_frames 48000", gpu, 2048, 4, {"batch_frames": 48000})]
    cases.append((f"cpu ({torch.get_num_threads()} threads), batch_frames 6000", torch.device("cpu"), 96, 2, {}))
    for name, device, count, epochs, overrides in cases:
        if elapsed() > budget - 30:
            print(f"(skipped {name}: time budget)")
            continue
        try:
            row = adapter_throughput(device, count, epochs, **overrides)
        except Exception as exc:  # report and go on: this is a diagnostic
            print(f"{name}: failed: {exc.__class__.__name__}: {exc}")
            continue
        rows.append((name, row))
        print(f"{name}: {row['utt_s']:.1f} utt/s, {row['audio_s_per_s']:.0f} audio s/s "
              f"({row['epoch_s']:.2f} s per epoch of {row['utterances']} utterances, {row['batches']} batches)")
    if rows:
        print("\n== adapter training throughput, default-size model (4 layers, d=144, adapter 32), synthetic 2-8 s utterances")
        print("| setting | utterances/s | audio seconds/s | vs CPU |")
        print("| --- | ---: | ---: | ---: |")
        cpu = next((r for n, r in rows if n.startswith("cpu")), None)
        for name, row in rows:
            ratio = f"{row['utt_s'] / cpu['utt_s']:.1f}x" if cpu else "-"
            print(f"| {name} | {row['utt_s']:.1f} | {row['audio_s_per_s']:.0f} | {ratio} |")

    if not skip_run and elapsed() < budget - 60:
        out = root / "tiny-nproc2-cpu"
        rc, output, seconds = casr(["run", "--stream", "tiny", "--preset", "tiny", "--device", "cpu", "--nproc", "2",
                                    "--out", str(out), "--cache-dir", str(cache), "--quiet", "--overwrite"],
                                   timeout=budget - elapsed())
        show_run("casr run --stream tiny --preset tiny --device cpu --nproc 2 (torchrun, gloo)", rc, output, seconds, out)
    print(f"\ngpu_check done in {elapsed():.0f} s; files in {root}")


if __name__ == "__main__":
    main()
