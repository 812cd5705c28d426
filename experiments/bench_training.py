"""Training and evaluation speed of the default model on this machine's CPU cores or a GPU.

    python experiments/bench_training.py
    python experiments/bench_training.py --preset tiny --steps 3      # a quick look
    python experiments/bench_training.py --head hat                     # a transducer head
    python experiments/bench_training.py --precision fp32               # float32 only (default: fp32 and bf16)
    python experiments/bench_training.py --device cuda --batch-frames 48000   # a GPU, 8x the batch

Prints, for three kinds of training step (base pretraining: the whole model trains; adapter
training: one adapter, base frozen; fusion: 5 adapters, fusion trains):
- utterances/s and audio-seconds/s;
- achieved FLOP/s of the step (forward + backward, counted by torch's FlopCounterMode) as a
  share of the dense float32 matmul throughput measured on the same cores in the same run
  (issue 7's target: at least 30 %; on a GPU, of its float32 matmul, TF32 off);
and the evaluation real-time factor (forward + greedy decoding, 5 adapters fused). With
``--profile FILE`` each kind of step and the evaluation run three more times under
torch.profiler (after one step it does not record): the operators that took the most CPU time,
and the step's forward, loss (or decoding), backward and optimizer parts, go into FILE (one table
per kind, times summed over the three) and their top 5 a step onto the terminal.

Batches are synthetic but shaped like the real ones: ``batch_frames`` of the preset filled with
utterances of ``--seconds`` each (length bucketing makes real batches nearly unpadded), random
token targets of a realistic length. The real data path (cached log-mel features, bucketed
batches) adds little on top: run.log prints the utterances/s of every real epoch.
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import torch
from torch.profiler import ProfilerActivity, profile, record_function
from torch.utils.flop_counter import FlopCounterMode

from continual_asr.config import build_fields, make_config, parse_overrides
from continual_asr.data.dataset import SpeechBatch
from continual_asr.distributed import autocast, resolve_device
from continual_asr.errors import CasrError
from continual_asr.training.adapters import ExtractionOptions
from continual_asr.model import AdapterFusion, SingleAdapter, build_model, head_of
from continual_asr.results import peak_rss_mib
from timing import median_seconds  # experiments/timing.py


def matmul_flops_per_second(device: torch.device, size: int = 1024, reps: int = 20) -> float:
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    for _ in range(3):
        a @ b
    synchronize(device)
    began = time.perf_counter()
    for _ in range(reps):
        a @ b
    synchronize(device)
    return 2 * size**3 * reps / (time.perf_counter() - began)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so wall time covers it (nothing to wait for on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_batch(config, utterances: int, frames: int, tokens_per_second: float, seconds: float,
                    device: torch.device = torch.device("cpu")) -> SpeechBatch:
    generator = torch.Generator().manual_seed(0)
    target_length = max(1, int(tokens_per_second * seconds))
    return SpeechBatch(
        features=torch.randn(utterances, frames, config.n_mels, generator=generator).to(device),
        feature_lengths=torch.full((utterances,), frames, device=device),
        targets=torch.randint(1, config.vocab_size - 1, (utterances, target_length), generator=generator).to(device),
        target_lengths=torch.full((utterances,), target_length, device=device),
        task_ids=torch.zeros(utterances, dtype=torch.long, device=device),
        texts=[""] * utterances,
    )


def configure(model, kind: str, adapters: int) -> None:
    if kind == "pretraining":
        model.set_combiners(None)
        model.set_trainable(base=True)
        return
    while len(model.adapter_tasks) < adapters:
        model.add_adapter(f"task{len(model.adapter_tasks)}")
    if kind == "adapter training":
        model.set_combiners(lambda _: SingleAdapter(adapters - 1))
        model.set_trainable(base=False, adapters=[adapters - 1])
    else:
        model.set_combiners(lambda _: AdapterFusion(model.banks[0].d_model))
        model.set_trainable(base=False, combiners=True)


def precision_context(precision: str, device: torch.device):
    """bf16: autocast around forward and loss (backward outside it), as a run does: on the CPU
    with the attention in float32 (cpu_precision=bf16), on a GPU mixed_precision's."""
    bf16 = precision == "bf16"
    return autocast(device, enabled=bf16, cpu_precision="bf16" if bf16 else "float32")


def train_step(model, batch: SpeechBatch, optimizer, precision: str = "fp32") -> None:
    device = batch.features.device
    with precision_context(precision, device):
        with record_function("forward (encoder)"):
            encoded, lengths = model(batch.features, batch.feature_lengths)
        with record_function("loss (head)"):
            loss = head_of(model).loss(encoded.float(), lengths, batch)
    optimizer.zero_grad(set_to_none=True)
    with record_function("backward"):
        loss.backward()
    with record_function("optimizer"):
        optimizer.step()
    synchronize(device)


PROFILED_STEPS = 3


def profiled(kind: str, step, into: list[str]) -> None:
    """``PROFILED_STEPS`` more ``step``s under torch.profiler, after one it sees but does not record
    (the profiler's own start-up once made one operator of a single recorded step 20 times its
    usual cost): their table into ``into`` (times summed over the steps), the top 5 a step
    printed (CPU time: on a GPU, the time the host spends launching and waiting)."""
    with profile(activities=[ProfilerActivity.CPU],
                 schedule=torch.profiler.schedule(wait=0, warmup=1, active=PROFILED_STEPS, repeat=1)) as prof:
        for _ in range(1 + PROFILED_STEPS):
            step()
            prof.step()
    averages = prof.key_averages()
    into.append(f"## {kind}\n\n{averages.table(sort_by='self_cpu_time_total', row_limit=25)}\n")
    parts = {e.key: e.cpu_time_total for e in averages
             if e.key in ("forward (encoder)", "loss (head)", "decoding (head)", "backward", "optimizer")}
    total = sum(parts.values()) or 1.0
    top = sorted((e for e in averages if e.key not in parts and not e.key.startswith("Optimizer")),
                 key=lambda e: e.self_cpu_time_total, reverse=True)[:5]
    print(f"  profile of {kind}: " + ", ".join(f"{k} {100 * v / total:.0f} %" for k, v in parts.items())
          + "; top operators a step: "
          + ", ".join(f"{e.key} {e.self_cpu_time_total / 1000 / PROFILED_STEPS:.0f} ms" for e in top))


@click.command()
@click.option("--preset", default="default", show_default=True)
@click.option("--seconds", default=4.0, show_default=True, help="length of every synthetic utterance")
@click.option("--steps", default=8, show_default=True, help="timed steps per kind (after 2 warm-up steps)")
@click.option("--threads", default=0, show_default=True, help="torch threads (0: torch's default)")
@click.option("--head", type=click.Choice(["ctc", "rnnt", "hat"]), default="ctc", show_default=True,
              help="output head (a transducer's pretraining step here has no auxiliary CTC loss)")
@click.option("--precision", "precisions", default="fp32,bf16", show_default=True,
              help="comma-separated: fp32, bf16 (autocast; on the CPU faster only where it has AMX)")
@click.option("--device", "device_name", default="cpu", show_default=True, help="cpu, cuda or cuda:N")
@click.option("--batch-frames", default=0, show_default=True,
              help="frames per training batch (0: the preset's; a GPU wants several times more)")
@click.option("--profile", "profile_file", default=None, type=click.Path(dir_okay=False),
              help="also profile each kind of step (torch.profiler) into this file")
@click.option("--set", "overrides", multiple=True, help="key=value of the model's config, e.g. subsampling_factor=8")
def main(preset: str, seconds: float, steps: int, threads: int, head: str, precisions: str, device_name: str,
         batch_frames: int, profile_file: str | None, overrides: tuple[str, ...]) -> None:
    unknown = set(precisions.split(",")) - {"fp32", "bf16"}
    if unknown:
        raise click.BadParameter(f"{sorted(unknown)[0]!r} (fp32 or bf16)", param_hint="--precision")
    try:
        device = resolve_device(device_name)
    except CasrError as error:
        raise click.BadParameter(str(error), param_hint="--device") from None
    if threads:
        torch.set_num_threads(threads)
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32, as in training
    torch.manual_seed(0)
    try:
        config = make_config(preset, {**parse_overrides(overrides), "head": head})
    except CasrError as error:
        raise click.BadParameter(str(error), param_hint="--set") from None
    frames = int(seconds * 100)
    utterances = max(1, (batch_frames or config.batch_frames) // frames)
    batch = synthetic_batch(config, utterances, frames, tokens_per_second=4.0, seconds=seconds, device=device)
    peak = matmul_flops_per_second(device, size=1024 if device.type == "cpu" else 8192)
    where = (f"{torch.get_num_threads()} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}"
             if device.type == "cpu" else torch.cuda.get_device_name(device))
    print(f"{config.num_layers}-layer d={config.d_model} {config.head} model, {where}; batch {utterances} x "
          f"{seconds:g} s ({utterances * frames} frames)")
    print(f"dense float32 matmul: {peak / 1e9:.1f} GFLOP/s\n")
    print("| step | precision | ms/step | utterances/s | audio s/s | GFLOP/step | GFLOP/s | share of fp32 matmul |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    model = build_model(config, num_tokens=config.vocab_size)
    model.set_adapter_dim(build_fields(ExtractionOptions, preset).adapter_dim)
    tables: list[str] = []
    for kind, precision in ((k, p) for k in ("pretraining", "adapter training", "fusion (5 adapters)")
                            for p in precisions.split(",")):
        configure(model, kind, adapters=5)
        model.to(device).train()  # adapters and combiners are added on the CPU
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        with FlopCounterMode(display=False) as counter:
            train_step(model, batch, optimizer, precision)
        flops = counter.get_total_flops()
        step = median_seconds(lambda: train_step(model, batch, optimizer, precision), steps, warmup=1)
        print(f"| {kind} | {precision} | {1000 * step:.0f} | {utterances / step:.1f} | {utterances * seconds / step:.1f} "
              f"| {flops / 1e9:.2f} | {flops / step / 1e9:.1f} | {100 * flops / step / peak:.0f} % |")
        if profile_file:
            profiled(f"{kind}, {precision}", lambda: train_step(model, batch, optimizer, precision), tables)

    eval_batch = synthetic_batch(config, max(1, config.eval_batch_frames // frames), frames, 4.0, seconds, device)
    model.eval()
    with torch.inference_mode():
        head = head_of(model)
        def decode() -> None:
            head.decode(*model(eval_batch.features, eval_batch.feature_lengths))
            synchronize(device)
        took = median_seconds(decode, max(1, steps // 2), warmup=1)
        if profile_file:
            def evaluate() -> None:
                with record_function("forward (encoder)"):
                    encoded = model(eval_batch.features, eval_batch.feature_lengths)
                with record_function("decoding (head)"):
                    head.decode(*encoded)
            profiled("evaluation (greedy decoding)", evaluate, tables)
    audio = len(eval_batch.texts) * seconds
    print(f"\nevaluation (fusion of 5 adapters, greedy decoding): real-time factor {took / audio:.4f} "
          f"({audio / took:.0f} s of audio per second)")
    if profile_file:
        header = (f"# bench_training.py --preset {preset} --seconds {seconds:g}: torch.profiler, {PROFILED_STEPS} "
                  f"steps of each kind (times summed over them), {where}, torch {torch.__version__}\n\n")
        Path(profile_file).write_text(header + "\n".join(tables), encoding="utf-8")
        print(f"profile tables: {profile_file}")
    print(f"peak RSS of this benchmark: {peak_rss_mib():.0f} MiB")
    if device.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
