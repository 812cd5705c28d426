"""``casr run`` as a library function: data, base model, the stream of experiences, the WER matrix."""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import resource
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from avalanche.logging import TensorboardLogger

from . import distributed
from .adapter_files import base_fingerprint, import_adapters, load_adapter
from .config import RUNTIME_FIELDS, RunConfig
from .data.streamdata import StreamData, prepare_stream_data
from .errors import CasrError, TrainingError
from .evaluation.plugin_metrics import make_evaluator
from .evaluation.metric_registry import tensorboard_scalars
from .evaluation.summary import attach_metrics
from .folders import ensure_writable
from .registry import StrategyInfo
from .reporting import reference_wers, write_run_outputs
from .reporting.intervals import EDITS
from .results import SCHEMA_VERSION, format_wer_table, package_versions, save_torch_atomic, write_json_atomic
from .stream import StreamSpec
from .training.pretrain import pretrain_base_model, save_checkpoint
from .training.extraction_cache import ExtractionCache
from .training.progress import ProgressPlugin

log = logging.getLogger("continual_asr")
CHECKPOINT = "checkpoint.pt"
FRAME_SECONDS = 0.01  # the log-mel hop (continual_asr.data.features.log_mel): audio seconds per frame


def default_cache_dir() -> Path:
    return Path(os.environ.get("CASR_CACHE", Path.home() / ".cache" / "continual-asr"))


def setup_logging(out_dir: Path | None, quiet: bool, errors_only: bool = False) -> None:
    """Log lines to stderr (warnings only if ``quiet``; errors only if ``errors_only``: the
    processes other than rank 0) and to ``out_dir``/run.log."""
    log.setLevel(logging.INFO)
    log.handlers.clear()
    log.propagate = False
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.ERROR if errors_only else logging.WARNING if quiet else logging.INFO)
    console.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(console)
    if out_dir is not None:
        file = logging.FileHandler(Path(out_dir) / "run.log")
        file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(file)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


IDENTITY_DEFAULTS = {"imported_adapters": []}  # what runs from before a key existed had


def _same_run_value(key: str, previous, value) -> bool:
    """Config fields that did not exist when the earlier run began (it ran as their default
    does) and fields of how a run executes (threads, workers) do not make it another run."""
    if key == "stream" and isinstance(previous, dict):  # where the YAML file lies is not the run's identity
        return all(previous.get(name, value[name]) == value[name] for name in value)
    if key == "task_order" and previous is None:  # runs from before task orders took the YAML order
        return value == list(range(1, len(value) + 1))
    if key != "config" or not isinstance(previous, dict):
        return previous == value
    defaults = {f.name: f.default for f in dataclasses.fields(RunConfig)}
    return all(old == value.get(name) for name, old in {**defaults, **previous}.items()
               if name not in RUNTIME_FIELDS and name in value)


def _load_previous(out_dir: Path, identity: dict) -> dict | None:
    """The checkpoint of an earlier run into ``out_dir``, if it is the same run; else None."""
    path = out_dir / CHECKPOINT
    if not path.is_file():
        return None
    try:
        checkpoint = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # a torn or foreign file: never guess, say so
        raise CasrError(f"{path}: unreadable checkpoint ({exc.__class__.__name__}); pass --overwrite to start over") from None
    previous = checkpoint["results"]
    for key, value in identity.items():
        if not _same_run_value(key, previous.get(key, IDENTITY_DEFAULTS.get(key)), value):
            raise CasrError(f"--out {out_dir} holds a run with a different {key}; use another --out or pass --overwrite")
    return checkpoint


def _save(out_dir: Path, model, cl_strategy, results: dict, edits: dict) -> None:
    """Checkpoint first, then edits.json and results.json, then the CSVs, plots and report: all
    atomic; the checkpoint holds the results, the edits and the Avalanche clock (the x of the
    logged metrics) too."""
    attach_metrics(results)
    clock = {k: v for k, v in vars(cl_strategy.clock).items() if isinstance(v, int)}
    save_checkpoint(model, out_dir / CHECKPOINT, results=results, strategy_state=cl_strategy.resume_state(),
                    clock=clock, edits=edits)
    write_json_atomic(out_dir / EDITS, edits)  # per step and test set: each utterance's [words, S, D, I]
    write_json_atomic(out_dir / "results.json", results)
    write_run_outputs(results, out_dir)


def _refresh_finished(out_dir: Path, checkpoint: dict, references: dict | None) -> dict:
    """A finished run asked again: new references (if given) and metrics into its checkpoint and
    results.json, and every output file rewritten."""
    results = checkpoint["results"]
    if references is not None:
        results["references"] = references
    attach_metrics(results)
    save_torch_atomic(checkpoint, out_dir / CHECKPOINT)
    write_json_atomic(out_dir / "results.json", results)
    write_run_outputs(results, out_dir)
    return results


def peak_rss_mib() -> float:
    """The process's peak resident memory so far (MiB; Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def _log_metrics(tensorboard: TensorboardLogger, block: dict, step: int) -> None:
    """Every metric of the registry into TensorBoard at x = the step (0 = the base model)."""
    for tag, value in tensorboard_scalars(block).items():
        tensorboard.writer.add_scalar(tag, value, global_step=step)
    tensorboard.writer.flush()


def _step_record(task: str, columns: list[str], row: list[float], train_seconds: float, eval_seconds: float,
                 counts: dict, trained: int, total_base: int) -> dict:
    return {
        "task": task,
        "wer": dict(zip(columns, row)),
        "train_seconds": round(train_seconds, 2),
        "eval_seconds": round(eval_seconds, 2),
        "peak_rss_mib": peak_rss_mib(),
        "parameters": {
            "trained": trained,
            "stored": counts["total"],
            "base": counts["base"],
            "adapters": counts["adapters"],
            "combiners": counts["combiners"],
            "trained_share": round(trained / counts["total"], 4),
            "stored_vs_base": round(counts["total"] / total_base, 4),
        },
    }


def run_stream(stream: StreamSpec, strategy: StrategyInfo, config: RunConfig, out_dir: Path, *, seed: int = 0,
               preset: str = "default", cache_dir: Path | None = None, device: str = "cpu",
               progress: bool = True, overwrite: bool = False, reference_runs: Sequence[Path] = (),
               skip_bad: bool = False, adapters: Sequence[Path] = ()) -> dict:
    """Run ``strategy`` over ``stream``; checkpoint, results.json (with the metrics), CSVs, plots,
    report.html and TensorBoard events after every step.

    Rerunning the same run into the same ``out_dir`` continues after its last finished step.
    ``reference_runs`` (single-task and joint runs of the same stream) give forward transfer and
    intransigence; without them a resumed run keeps the references it had. Bad training data of
    a later task stops the run (DataError) before that task, the steps before it kept;
    ``skip_bad`` leaves bad utterances out instead. ``adapters``: adapter files (casr adapters
    export) added to the bank before the first task, fused by every composition.

    With several processes (torch.distributed initialised, see continual_asr/distributed.py)
    every rank calls this alike; rank 0 alone reads and writes ``out_dir`` and shows progress.
    A non-finite loss ends the run with a TrainingError naming strategy, task, phase and
    iteration; the steps finished before it are kept.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    main = distributed.is_main()
    progress = progress and main
    imported = distributed.broadcast_object([load_adapter(path) for path in adapters] if main else None)
    identity = {"stream": {"name": stream.name, "description": stream.description,
                           "tasks": {t.name: t.fingerprint() for t in stream.eval_tasks}},
                "task_order": list(stream.order),
                "strategy": strategy.name, "seed": seed, "config": config.to_dict(),
                "imported_adapters": [{"task": a.task, "digest": a.digest()} for a in imported]}
    columns = [t.name for t in stream.eval_tasks]
    references = distributed.broadcast_object(
        reference_wers(reference_runs, {"columns": columns}) if reference_runs and main else None)
    previous = distributed.broadcast_object(None if overwrite or not main else _load_previous(out_dir, identity))
    if previous is not None and previous["results"]["complete"]:
        log.info("%s already holds the finished run; nothing to train", out_dir)
        return _refresh_finished(out_dir, previous, references) if main else previous["results"]
    if previous is None and main:  # a fresh start: events of an earlier run into out_dir would mix in
        for stale in out_dir.glob("events.out.tfevents.*"):
            stale.unlink()
    cache_dir = ensure_writable(cache_dir or default_cache_dir(), "cache folder")
    if config.threads:
        torch.set_num_threads(config.threads)
    torch_device = torch.device(device)
    seed_everything(seed)

    data: StreamData = distributed.in_turn(
        lambda: prepare_stream_data(stream, config, cache_dir, progress=progress, skip_bad=skip_bad))
    try:
        model, base_info = pretrain_base_model(data, config, seed, cache_dir, torch_device, progress=progress)
    except TrainingError as exc:
        raise TrainingError(f"strategy {strategy.name}, base-model pretraining on {stream.base.name}: {exc}") from None
    seed_everything(seed)

    tensorboard = TensorboardLogger(out_dir) if main else None
    wer, matrix_metrics, attention, evaluator = make_evaluator(data.tokenizer, columns,
                                                               loggers=[tensorboard] if main else [])
    cl_strategy = strategy.factory(model, config, device=torch_device, seed=seed,
                                   plugins=[ProgressPlugin(progress)], evaluator=evaluator)
    cl_strategy.memory.add(data.dataset("train", stream.base))
    benchmark = data.benchmark()
    experiences = list(benchmark.train_stream)
    total_base = model.parameter_counts()["total"]
    import_adapters(cl_strategy, imported)
    if hasattr(cl_strategy, "extraction_cache") and config.share_adapters:
        cl_strategy.extraction_cache = ExtractionCache(
            cache_dir / "adapters", base_fingerprint(model.state_dict()),
            {name: split.digest for name, split in data.train.items()}, data.fingerprint, config, seed)
    audio_seconds = {c: round(sum(data.test[c].num_frames) * FRAME_SECONDS, 2) for c in columns}

    dev_columns = [t.name for t in data.dev_tasks()]

    def evaluate() -> tuple[list[float], list[float | None], float, dict | None]:
        """The test row (the WER matrix's), the dev row (None where a column has no dev set),
        the seconds the test sets took (the real-time factor's; dev's go into the wall time) and
        what fusion attended to on the test sets (None if nothing attends). The test sets'
        per-utterance edit counts join ``edits``."""
        began = time.perf_counter()
        cl_strategy.eval(benchmark.test_stream)
        test_row = [round(wer.results[i], 2) for i in range(len(columns))]
        edits["steps"].append({c: wer.edits[i] for i, c in enumerate(columns)})
        attended = attention.step_record()
        seconds = time.perf_counter() - began
        cl_strategy.eval(benchmark.dev_stream)
        dev = {c: round(wer.results[i], 2) for i, c in enumerate(dev_columns)}
        return test_row, [dev.get(c) for c in columns], seconds, attended

    if previous is not None:
        results = previous["results"]
        done = len(results["wer_matrix"])
        # A run from before edit counts were kept has none for its finished steps.
        edits = previous.get("edits") or {"columns": columns, "steps": [None] * (done + 1)}
        results.setdefault("test_audio_seconds", audio_seconds)
        data.check_unchanged(results.get("data"), done)
        cl_strategy.restore(previous["strategy_state"], experiences[:done])
        model.load_state_dict(previous["state_dict"])
        for name, value in previous.get("clock", {"train_exp_counter": done}).items():
            setattr(cl_strategy.clock, name, value)
        for row in [[results["base_wer"][c] for c in columns], *results["wer_matrix"]]:
            for metric in matrix_metrics:
                metric.update(row)
        log.info("resuming %s after %d of %d tasks", out_dir, done, len(experiences))
    else:
        edits = {"columns": columns, "steps": []}
        base_row, base_dev_row, base_eval_seconds, _ = evaluate()
        results = {
            "schema_version": SCHEMA_VERSION,
            **identity,
            "stream": {**identity["stream"], "source": stream.source},
            "preset": preset,
            "base_task": stream.base.name,
            "tasks": [t.name for t in stream.tasks],
            "zero_shot_task": stream.zero_shot.name,
            "columns": columns,
            "test_audio_seconds": audio_seconds,
            "base_wer": dict(zip(columns, base_row)),
            "wer_matrix": [],
            "base_dev_wer": dict(zip(columns, base_dev_row)),  # dev: what choices are made on
            "dev_wer_matrix": [],
            "steps": [],
            "base_model": {**base_info, "parameters": total_base, "eval_seconds": round(base_eval_seconds, 2)},
            "device": str(torch_device),
            "processes": distributed.world_size(),
            "versions": package_versions(),
            "wall_seconds": 0.0,
            "complete": False,
        }
        done = 0
    if references is not None:
        results["references"] = references
    results["data"] = data.identity()  # what the steps from here on train and test on
    if previous is None and main:
        _save(out_dir, model, cl_strategy, results, edits)
        _log_metrics(tensorboard, results["base_model"]["metrics"], 0)
        log.info("base model WER: %s", ", ".join(f"{c} {v:.1f}" for c, v in zip(columns, base_row)))
    wall_before = results["wall_seconds"]

    try:
        for experience, task in zip(experiences[done:], stream.tasks[done:]):
            log.info("task %d/%d: %s", experience.current_experience + 1, len(stream.tasks), task.name)
            began = time.perf_counter()
            try:
                cl_strategy.train(experience, eval_streams=[])
            except TrainingError as exc:
                kept = len(results["wer_matrix"])
                raise TrainingError(
                    f"strategy {strategy.name}, task {experience.current_experience + 1}/{len(stream.tasks)} "
                    f"({task.name}): {exc}; the {kept} finished step(s) are kept in {out_dir} (rerunning the same "
                    "command retries this task)") from None
            train_seconds = time.perf_counter() - began
            row, dev_row, eval_seconds, attended = evaluate()
            trained = sum(cl_strategy.trained_parameters.values())
            results["wer_matrix"].append(row)
            results["dev_wer_matrix"].append(dev_row)
            results["steps"].append({**_step_record(task.name, columns, row, train_seconds, eval_seconds,
                                                    model.parameter_counts(), trained, total_base),
                                     **cl_strategy.step_details,
                                     **({"attention": attended} if attended else {})})
            results["wall_seconds"] = round(wall_before + time.perf_counter() - started, 2)
            results["complete"] = len(results["wer_matrix"]) == len(stream.tasks)
            if main:
                _save(out_dir, model, cl_strategy, results, edits)
                _log_metrics(tensorboard, results["steps"][-1]["metrics"], len(results["steps"]))
            log.info("after %s: %s", task.name, ", ".join(f"{c} {v:.1f}" for c, v in zip(columns, row)))
    finally:  # an adapter claimed for training and never saved must not block other runs
        if getattr(cl_strategy, "extraction_cache", None) is not None:
            cl_strategy.extraction_cache.release()
    if main:
        tensorboard.writer.close()
    if not results["complete"]:  # the next task's training data is bad: stop before it, finished steps kept
        raise data.stop_before(len(results["wer_matrix"]), out_dir)
    return results


__all__ = ["run_stream", "format_wer_table", "default_cache_dir", "ensure_writable", "setup_logging"]
