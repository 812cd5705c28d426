"""Data parallelism: two gloo processes on the CPU compute what one process computes.

Two ranks are forked once (torch.multiprocessing, a free TCP port) and each runs the same
scenario as the test process does alone: one training step of whole-model fine-tuning (the
Conformer's BatchNorm in training mode, SpecAugment on) and of both adapter-fusion phases
(adapter, then fusion with its calibration) on one global batch of an odd number of
utterances, then an evaluation whose batches include one with a single utterance (so one rank
holds a stand-in). Gradients after backward, weights after the step, and the WER with its
transcripts must match the single process's.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
from avalanche.core import SupervisedPlugin
from avalanche.training.plugins import EvaluationPlugin

from continual_asr import distributed
from continual_asr.config import GENERAL_FIELDS, make_config
from continual_asr.data.dataset import FrameBudgetBatchSampler, ShardedBatchSampler, make_dataset
from continual_asr.data.features import SplitFeatures
from continual_asr.data.tokenizer import Tokenizer
from continual_asr.errors import STOPPED_HINT, CasrError
from continual_asr.evaluation.wer import WordErrorRate
from continual_asr.model import build_model
from continual_asr.registry import get_strategy
from continual_asr.training.template import SpeechTemplate

WORDS = "zero one two three four five six seven eight nine".split()
# float32: split and whole batches agree to float32's rounding, not bf16's (auto is bf16 on AMX CPUs)
SETTINGS = {"batch_frames": 100000, "eval_batch_frames": 420, "adapter_epochs": 1, "fusion_epochs": 1, "num_workers": 0,
            "cpu_precision": "float32"}
CONFIG = make_config("tiny", {k: v for k, v in SETTINGS.items() if k in GENERAL_FIELDS})


def _split(lengths: list[int], seed: int) -> SplitFeatures:
    generator = torch.Generator().manual_seed(seed)
    features = [torch.randn(n, CONFIG.n_mels, generator=generator).half() for n in lengths]
    texts = [" ".join(WORDS[i] for i in torch.randint(0, 10, (3,), generator=generator).tolist()) for _ in lengths]
    return SplitFeatures(features, texts, [n / 100 for n in lengths], list(range(1, len(lengths) + 1)), "toy",
                         [], f"toy{seed}")


class GradientLog(SupervisedPlugin):
    """The gradients every step applies (after backward, so after the all-reduce)."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[dict[str, torch.Tensor]] = []

    def after_backward(self, strategy, **kwargs) -> None:
        self.steps.append({name: p.grad.detach().clone() for name, p in strategy.model.named_parameters()
                           if p.grad is not None})


def _scenario(tokenizer_bytes: bytes) -> dict:
    """What every process (or the one process) computes; returned for comparison."""
    torch.set_num_threads(1)
    tokenizer = Tokenizer(tokenizer_bytes)
    train = make_dataset(_split([60, 75, 90, 101, 120, 133, 150], seed=1), tokenizer, task_id=1)  # one batch of 7
    test = make_dataset(_split([45, 50, 70, 80, 95, 110, 140, 400], seed=2), tokenizer, task_id=1)  # 400: alone
    bench = benchmark_from_datasets(train=[train], test=[test])
    experience = next(iter(bench.train_stream))
    out: dict = {}

    torch.manual_seed(0)
    model = build_model(CONFIG, len(tokenizer))
    grads = GradientLog()
    strategy = SpeechTemplate(model=model, config=CONFIG, seed=0, epochs=1, learning_rate=1e-3, plugins=[grads])
    strategy.train(experience, eval_streams=[])
    out["finetune"] = {"grads": grads.steps, "state": {k: v.clone() for k, v in model.state_dict().items()}}

    wer = WordErrorRate(tokenizer)
    evaluator = SpeechTemplate(model=model, config=CONFIG, evaluator=EvaluationPlugin(wer, loggers=[]))
    evaluator.eval(bench.test_stream)
    out["eval"] = {"wer": wer.results[0], "references": wer.references, "hypotheses": wer.hypotheses,
                   "batches": wer._batches}  # evaluation steps this process took

    torch.manual_seed(1)
    model = build_model(CONFIG, len(tokenizer))
    grads = GradientLog()
    strategy = get_strategy("adapter-fusion").create(model, "tiny", SETTINGS, seed=0, plugins=[grads])
    strategy.train(experience, eval_streams=[])
    out["fusion"] = {"grads": grads.steps, "state": {k: v.clone() for k, v in model.state_dict().items()}}
    return out


def _rank(rank: int, world: int, port: int, tokenizer_bytes: bytes, out_dir: str) -> None:
    torch.set_num_threads(1)  # a forked child: no OpenMP thread pool of the parent's
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=120))
    try:
        torch.save(_scenario(tokenizer_bytes), Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[dict, list[dict]]:
    """(the single process's results, each of the two ranks' results)."""
    import torch.multiprocessing as mp

    out = tmp_path_factory.mktemp("ranks")
    tokenizer = Tokenizer.train([" ".join(WORDS)] * 4 + WORDS, vocab_size=30, required_chars="abcdefghijklmnopqrstuvwxyz'")
    # Fork the ranks first, before this process has run anything (no thread pools yet).
    mp.start_processes(_rank, args=(2, _free_port(), tokenizer.model_bytes, str(out)), nprocs=2, join=True,
                       start_method="fork")
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]
    return _scenario(tokenizer.model_bytes), ranks


def _assert_close(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor], rtol: float, atol: float, what: str):
    assert ours.keys() == theirs.keys(), what
    for name in ours:
        torch.testing.assert_close(theirs[name].float(), ours[name].float(), rtol=rtol, atol=atol,
                                   msg=lambda m, name=name: f"{what} {name}: {m}")


@pytest.mark.parametrize("case", ["finetune", "fusion"])
def test_a_step_on_a_global_batch_split_over_two_ranks_equals_one_process(runs, case):
    single, ranks = runs
    steps = single[case]["grads"]
    assert len(steps) == (1 if case == "finetune" else 2)  # one step per phase: one global batch
    for rank in ranks:
        assert len(rank[case]["grads"]) == len(steps)
        for k, (ours, theirs) in enumerate(zip(steps, rank[case]["grads"])):
            # atol 1e-5: the split batch sums in another order, and single float32 elements of
            # 1e-2 gradients move by 2e-6 (with BatchNorm's statistics taken per rank instead of
            # over the global batch, they differ by 5e-2)
            _assert_close(ours, theirs, rtol=1e-4, atol=1e-5, what=f"{case} step {k} gradient")
        # AdamW's first step moves each weight by about lr * sign(gradient): a weight whose gradient
        # is zero in exact arithmetic (attention's key bias, the convolution bias before
        # BatchNorm) moves by +-lr on rounding noise, in one process as in two. Those weights,
        # found as gradients that disagree beyond 0.1 % (noise), are left out; they must be few.
        noise = {}
        for ours_step, theirs_step in zip(steps, rank[case]["grads"]):
            for name, g in ours_step.items():
                disagree = (g - theirs_step[name]).abs() > 1e-3 * g.abs()
                noise[name] = noise[name] | disagree if name in noise else disagree
        assert sum(int(m.sum()) for m in noise.values()) < 0.02 * sum(m.numel() for m in noise.values())
        ours = {k: torch.where(noise[k], 0, v) if k in noise else v for k, v in single[case]["state"].items()}
        theirs = {k: torch.where(noise[k], 0, v) if k in noise else v for k, v in rank[case]["state"].items()}
        _assert_close(ours, theirs, rtol=1e-5, atol=1e-6, what=f"{case} weights")
    for name, value in ranks[0][case]["state"].items():  # the ranks hold one model
        assert torch.equal(value, ranks[1][case]["state"][name]), name


def test_wer_over_two_ranks_is_the_single_process_wer(runs):
    single, ranks = runs
    assert single["eval"]["batches"] >= 3  # several batches, the last one utterance long
    for rank in ranks:
        assert rank["eval"]["references"] == single["eval"]["references"]
        assert rank["eval"]["hypotheses"] == single["eval"]["hypotheses"]
        assert rank["eval"]["wer"] == single["eval"]["wer"]
        assert rank["eval"]["batches"] == single["eval"]["batches"]  # every rank steps through every batch


def test_sharded_batches_cover_each_global_batch_once_in_equal_numbers():
    lengths = [30, 31, 32, 50, 51, 90, 300, 33, 34, 35, 36]
    plan = FrameBudgetBatchSampler(lengths, max_frames=160, shuffle=True, seed=3)
    expected = list(FrameBudgetBatchSampler(lengths, max_frames=160, shuffle=True, seed=3))
    parts = [list(ShardedBatchSampler(FrameBudgetBatchSampler(lengths, 160, True, seed=3), r, 3)) for r in range(3)]
    assert all(len(p) == len(plan) == len(expected) for p in parts)
    for k, batch in enumerate(expected):
        items = [item for part in parts for item in part[k]]
        real = [item for item in items if item[2] >= 0]
        assert [item[0] for item in real] == batch  # contiguous parts, in order, each utterance once
        assert {item[1] for item in items} == {max(lengths[i] for i in batch)}  # padded to the global longest
        assert sum(part[k][0][3] for part in parts) == pytest.approx(1.0)  # shares of the global batch
        if len(batch) < 3:
            assert any(item[2] == -1 and item[3] == 0.0 for item in items)  # a stand-in keeps the rank in step


def test_device_choice_is_checked_in_one_line():
    assert distributed.resolve_device("cpu").type == "cpu"
    assert distributed.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(CasrError, match="auto, cpu or cuda"):
        distributed.resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(CasrError, match="sees no CUDA GPU"):
            distributed.resolve_device("cuda")


def test_nproc_relaunches_the_same_command_through_torchrun(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from continual_asr.cli import main

    from continual_asr import worker_server

    launched = []
    monkeypatch.setattr(distributed, "launch_local", lambda nproc, args: launched.append((nproc, args)) or 0)
    monkeypatch.setattr(worker_server, "start_early", lambda: None)  # no processes to fork here
    result = CliRunner().invoke(main, ["run", "--stream", "tiny", "--preset", "tiny", "--device", "cpu", "--nproc", "2",
                                       "--out", str(tmp_path / "o"), "--set", "adapter_epochs=2", "--quiet"])
    assert result.exit_code == 0, result.output
    ((nproc, rest),) = launched
    assert nproc == 2
    assert rest[0] == "run" and "--nproc" not in rest and "--quiet" in rest
    for option, value in [("--stream", "tiny"), ("--preset", "tiny"), ("--device", "cpu"), ("--set", "adapter_epochs=2"),
                          ("--out", str(tmp_path / "o"))]:
        assert rest[rest.index(option) + 1] == value


@pytest.mark.parametrize("args, env, message", [
    (["--nproc", "2"], {"WORLD_SIZE": "2"}, "under torchrun leave it out"),
    (["--nproc", "0"], {}, "--nproc must be at least 1"),
    (["--device", "tpu"], {}, "--device must be auto, cpu or cuda"),
])
def test_process_and_device_mistakes_are_one_line(tmp_path, monkeypatch, args, env, message):
    from click.testing import CliRunner

    from continual_asr.cli import main

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    result = CliRunner().invoke(main, ["run", "--stream", "tiny", "--preset", "tiny", "--out", str(tmp_path / "o"),
                                       "--device", "cpu", *args])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("stop, status, said", [
    (signal.SIGTERM, 143, f"casr: stopped by SIGTERM; {STOPPED_HINT}"),
    (signal.SIGINT, 130, "")])
def test_a_signal_that_stops_the_processes_ends_nproc_with_its_status(monkeypatch, capsys, stop, status, said):
    """The launcher passes a signal on to the processes and raises; --nproc ends with 128 + the
    signal and one line (on Ctrl-C process 0 says it, as in one process), not a traceback."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.launcher import api

    def stopped(config, entrypoint):
        def launch(*args):
            raise SignalException(f"got signal {stop}", sigval=stop)
        return launch

    monkeypatch.setattr(api, "elastic_launch", stopped)
    assert distributed.launch_local(2, ["run", "--stream", "tiny"]) == status
    assert capsys.readouterr().err.strip() == said


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("CASR_SLOW_TESTS"), reason="slow: set CASR_SLOW_TESTS=1")
def test_torchrun_two_processes_run_the_tiny_stream_as_one_process_does(tmp_path):
    """End to end (about 2 minutes on one core): torchrun --nproc-per-node 2 -m continual_asr run
    synthesizes, pretrains data-parallel and runs the tiny stream, rank 0 writing the run; one
    process then runs it again on that cached base model and gets the same WER matrix."""
    from click.testing import CliRunner

    from continual_asr.cli import main

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["run", "--stream", "tiny", "--preset", "tiny", "--device", "cpu", "--cache-dir", str(tmp_path / "cache"),
            "--quiet"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "continual_asr", *args, "--out", str(tmp_path / "two")]
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert two["complete"] and two["processes"] == 2 and len(two["wer_matrix"]) == 2
    assert len(list((tmp_path / "two").glob("events.out.tfevents.*"))) == 1  # TensorBoard from rank 0 only
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "one")])
    assert result.exit_code == 0, result.output
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    assert one["base_model"]["cached"] and one["processes"] == 1
    assert one["base_wer"] == two["base_wer"] and one["wer_matrix"] == two["wer_matrix"]


def _attention_rank(rank: int, world: int, port: int, out_dir: str) -> None:
    from continual_asr.model.combiners import AttentionRecorder

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    try:
        recorder = AttentionRecorder()  # this rank's part: 2 + rank frames, attention sums per layer
        recorder.sums = {0: torch.tensor([1.0 + rank, 1.0], dtype=torch.float64),
                         1: torch.tensor([0.0, 2.0 + rank], dtype=torch.float64)}
        recorder.frames = torch.tensor(2.0 + rank, dtype=torch.float64)
        recorder.sum_over_ranks()
        torch.save(recorder.means(), Path(out_dir) / f"attention{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_attention_sums_over_ranks_give_every_rank_the_whole_test_set(tmp_path):
    import torch.multiprocessing as mp

    mp.start_processes(_attention_rank, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True, start_method="fork")
    means = [torch.load(tmp_path / f"attention{r}.pt", weights_only=True) for r in range(2)]
    assert means[0] == means[1] == [[0.6, 0.4], [0.0, 1.0]]  # (1 + 2) / 5, (1 + 1) / 5; 0 / 5, (2 + 3) / 5


def test_the_log_says_which_arithmetic_runs():
    import torch

    from continual_asr.distributed import arithmetic, has_amx

    where = f"cpu ({torch.backends.cpu.get_cpu_capability()}{' with AMX' if has_amx() else ''}, "
    assert arithmetic(torch.device("cpu")) == where + f"{torch.get_num_threads()} threads), float32, cpu_precision=float32"
    assert arithmetic(torch.device("cpu"), cpu_precision="bf16").startswith(where)
    assert "bf16 autocast (forward and loss; attention, depthwise convolutions and weights in float32), cpu_precision=bf16" in arithmetic(
        torch.device("cpu"), cpu_precision="bf16")
    assert arithmetic(torch.device("cuda", 0)) == "cuda:0, bf16 autocast (forward and loss), float32 weights"
    assert arithmetic(torch.device("cuda", 0), enabled=False) == "cuda:0, float32"


def test_cpu_precision_auto_means_bf16_only_on_a_cpu_with_amx(monkeypatch):
    import torch

    from continual_asr import distributed

    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    for amx in (True, False):
        monkeypatch.setattr(distributed, "has_amx", lambda: amx)
        assert distributed.resolve_cpu_precision(cpu, "auto") == ("bf16" if amx else "float32")
        assert distributed.resolve_cpu_precision(gpu, "auto") == "float32"  # a GPU reads mixed_precision
        assert distributed.resolve_cpu_precision(cpu, "float32") == "float32"
        assert distributed.resolve_cpu_precision(cpu, "bf16") == "bf16"
    with distributed.autocast(cpu, cpu_precision="bf16"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    with distributed.autocast(cpu, cpu_precision="float32"):
        assert not torch.is_autocast_enabled("cpu")
