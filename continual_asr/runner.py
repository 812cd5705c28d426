"""``casr run`` as a library function: data, base model, the stream of experiences, the WER matrix.

With several processes (torch.distributed initialised, see continual_asr/distributed.py) every
rank runs this alike; rank 0 alone reads and writes the run folder and shows progress. A
non-finite loss ends the run with a TrainingError naming strategy, task, phase and iteration;
the steps finished before it are kept.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from avalanche.logging import TensorboardLogger

from . import distributed
from .adapter_files import base_fingerprint, import_adapters, load_adapter
from .config import Options, RunConfig
from .data.dataset import evaluation_order
from .data.features import SplitFeatures
from .data.manifest import utterance_voices
from .data.streamdata import StreamData, prepare_stream_data
from .errors import CasrError, TrainingError
from .evaluation.plugin_metrics import Evaluator, make_evaluator
from .evaluation.metric_registry import tensorboard_scalars
from .folders import ensure_writable, run_folder_lock
from .model.hf_encoder import check_base_model
from .registry import StrategyInfo
from .reporting import reference_wers
from .results import format_wer_table, new_results, step_record
from .run_state import (clear_stale_events, load_previous, refresh_finished, resume, run_identity,
                        save_step)
from .stream import StreamSpec
from .training.base_file import weights_digest, with_reference_base
from .training.pretrain import pretrain_base_model
from .training.adapters import ExtractionOptions
from .training.extraction_cache import ExtractionCache
from .training.progress import ProgressPlugin

log = logging.getLogger("continual_asr")
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


def _log_metrics(tensorboard: TensorboardLogger, block: dict, step: int) -> None:
    """Every metric of the registry into TensorBoard at x = the step (0 = the base model)."""
    for tag, value in tensorboard_scalars(block).items():
        tensorboard.writer.add_scalar(tag, value, global_step=step)
    tensorboard.writer.flush()


@dataclass
class _Evaluation:
    """The test sets, then the dev sets, after a step (or of the base model)."""

    cl_strategy: object
    benchmark: object
    evaluator: Evaluator
    columns: list[str]
    dev_columns: list[str]

    def __call__(self, edits: dict) -> tuple[list[float], list[float | None], float, dict | None]:
        """The test row (the WER matrix's), the dev row (None where a column has no dev set),
        the seconds the test sets took (the real-time factor's; dev's go into the wall time) and
        what fusion attended to on the test sets (None if nothing attends). The test and dev
        sets' per-utterance edit counts join ``edits``."""
        wer = self.evaluator.wer
        began = time.perf_counter()
        self.cl_strategy.eval(self.benchmark.test_stream)
        test_row = [round(wer.results[i], 2) for i in range(len(self.columns))]
        edits["steps"].append({c: wer.edits[i] for i, c in enumerate(self.columns)})
        attended = self.evaluator.attention.step_record()
        seconds = time.perf_counter() - began
        self.cl_strategy.eval(self.benchmark.dev_stream)
        dev = {c: round(wer.results[i], 2) for i, c in enumerate(self.dev_columns)}
        edits["dev_steps"].append({c: wer.edits[i] for i, c in enumerate(self.dev_columns)})
        return test_row, [dev.get(c) for c in self.columns], seconds, attended


def _utterances(splits: dict[str, SplitFeatures], columns: list[str]) -> dict[str, dict]:
    """Per set, its manifest and the manifest line of each per-utterance edit record (they are in
    evaluation order), so that saved edits can be grouped by speaker or any manifest field; and
    each record's voice where the manifest names one (synthesized speech), so that grouping by
    speaker needs nothing but the run folder."""
    out = {}
    for c in columns:
        lines = [splits[c].lines[i] for i in evaluation_order(splits[c].num_frames)]
        out[c] = {"manifest": splits[c].source, "lines": lines}
        voices = utterance_voices(splits[c].source, lines)
        if voices is not None:
            out[c]["voices"] = voices
    return out


def _data_and_base_model(stream: StreamSpec, strategy: StrategyInfo, config: RunConfig, seed: int, cache_dir: Path,
                         device: torch.device, progress: bool, skip_bad: bool) -> tuple[StreamData, object, dict]:
    """The stream's data (features, tokenizer; one process at a time builds what the cache
    lacks) and the pretrained base model, with every RNG seeded from ``seed`` after each."""
    if config.threads:
        torch.set_num_threads(config.threads)
    seed_everything(seed)
    data: StreamData = distributed.in_turn(
        lambda: prepare_stream_data(stream, config, cache_dir, progress=progress, skip_bad=skip_bad))
    try:
        model, base_info = pretrain_base_model(data, config, seed, cache_dir, device, progress=progress)
    except TrainingError as exc:
        raise TrainingError(f"strategy {strategy.name}, base-model pretraining on {stream.base.name}: {exc}") from None
    seed_everything(seed)
    return data, model, {**base_info, "weights": weights_digest(model)}


def _extraction_cache(strategy: StrategyInfo, model, data: StreamData, config: RunConfig, options: Options, seed: int,
                      cache_dir: Path) -> ExtractionCache | None:
    """Single-task adapters shared with earlier runs, for a strategy that extracts them (its
    options hold the extraction options)."""
    if not (strategy.extracts_adapters and config.share_adapters):
        return None
    extraction = {f.name: getattr(options, f.name) for f in dataclasses.fields(ExtractionOptions)}
    return ExtractionCache(cache_dir / "adapters", base_fingerprint(model.state_dict()),
                           {name: split.digest for name, split in data.train.items()}, data.fingerprint, config,
                           extraction, seed)


def _build_strategy(strategy: StrategyInfo, model, data: StreamData, config: RunConfig, options: Options, *, seed: int,
                    cache_dir: Path, device: torch.device, progress: bool, evaluator: Evaluator, base_task
                    ) -> tuple[object, ExtractionCache | None]:
    """The strategy's template from its factory, with what the runner hands every strategy (and
    the extraction cache to one that extracts adapters)."""
    extraction_cache = _extraction_cache(strategy, model, data, config, options, seed, cache_dir)
    cl_strategy = strategy.factory(model, config, options, device=device, seed=seed, plugins=[ProgressPlugin(progress)],
                                   evaluator=evaluator.plugin, base_data=data.dataset("train", base_task),
                                   **({"extraction_cache": extraction_cache} if extraction_cache else {}))
    return cl_strategy, extraction_cache


def run_stream(stream: StreamSpec, strategy: StrategyInfo, config: RunConfig, out_dir: Path, *,
               options: Options | None = None, seed: int = 0, preset: str = "default", cache_dir: Path | None = None,
               device: str = "cpu", progress: bool = True, overwrite: bool = False, reference_runs: Sequence[Path] = (),
               skip_bad: bool = False, adapters: Sequence[Path] = ()) -> dict:
    """Run ``strategy`` over ``stream``; checkpoint, results.json (with the metrics), CSVs, plots,
    report.html and TensorBoard events after every step. ``options``: the strategy's (None: its
    defaults under ``preset``; ``StrategyInfo.settings`` makes both from flat settings).

    Rerunning the same run into the same ``out_dir`` continues after its last finished step.
    ``reference_runs`` (single-task and joint runs of the same stream) give forward transfer and
    intransigence; without them a resumed run keeps the references it had. Bad training data of
    a later task stops the run (DataError) before that task, the steps before it kept;
    ``skip_bad`` leaves bad utterances out instead. ``adapters``: adapter files (casr adapters
    export) added to the bank before the first task, fused by every composition. Several
    processes (continual_asr/distributed.py) call this alike; rank 0 alone writes ``out_dir``
    and holds it against any other process running into it.
    """
    with run_folder_lock(out_dir) if distributed.is_main() else contextlib.nullcontext():
        return _run_stream(stream, strategy, config, Path(out_dir), options=options, seed=seed, preset=preset,
                           cache_dir=cache_dir, device=device, progress=progress, overwrite=overwrite,
                           reference_runs=reference_runs, skip_bad=skip_bad, adapters=adapters)


def _run_stream(stream: StreamSpec, strategy: StrategyInfo, config: RunConfig, out_dir: Path, *,
                options: Options | None, seed: int, preset: str, cache_dir: Path | None, device: str,
                progress: bool, overwrite: bool, reference_runs: Sequence[Path], skip_bad: bool,
                adapters: Sequence[Path]) -> dict:
    started = time.perf_counter()
    options = strategy.settings(preset)[1] if options is None else options
    config = with_reference_base(config, stream)
    check_base_model(config.base_model)
    if adapters and not strategy.extracts_adapters:  # before minutes of pretraining, not after
        raise CasrError(f"--adapter needs an adapter strategy (adapter-*): {strategy.name} has no adapter bank")
    main = distributed.is_main()
    progress = progress and main
    imported = distributed.broadcast_object([load_adapter(path) for path in adapters] if main else None)
    config = dataclasses.replace(
        config, cpu_precision=distributed.prepare_cpu_precision(torch.device(device), config.cpu_precision))
    identity = run_identity(stream, strategy.name, seed, config, options, imported)
    columns = [t.name for t in stream.eval_tasks]
    references = distributed.broadcast_object(
        reference_wers(reference_runs, {"columns": columns}) if reference_runs and main else None)
    previous = distributed.broadcast_object(
        None if overwrite or not main else load_previous(out_dir, identity, strategy.defaults()))
    if previous is not None and previous["results"]["complete"]:
        log.info("%s already holds the finished run; nothing to train", out_dir)
        return refresh_finished(out_dir, previous, references) if main else previous["results"]
    if previous is None and main:
        clear_stale_events(out_dir)
    cache_dir = ensure_writable(cache_dir or default_cache_dir(), "cache folder")
    torch_device = torch.device(device)
    data, model, base_info = _data_and_base_model(stream, strategy, config, seed, cache_dir, torch_device, progress,
                                                  skip_bad)
    log.info("arithmetic: %s", distributed.arithmetic(torch_device, config.mixed_precision, config.cpu_precision))
    tensorboard = TensorboardLogger(out_dir) if main else None
    evaluator = make_evaluator(data.tokenizer, columns, loggers=[tensorboard] if main else [])
    cl_strategy, extraction_cache = _build_strategy(strategy, model, data, config, options, seed=seed,
                                                    cache_dir=cache_dir, device=torch_device, progress=progress,
                                                    evaluator=evaluator, base_task=stream.base)
    benchmark = data.benchmark()
    experiences = list(benchmark.train_stream)
    total_base = model.parameter_counts()["total"]
    import_adapters(cl_strategy, imported)
    evaluate = _Evaluation(cl_strategy, benchmark, evaluator, columns, [t.name for t in data.dev_tasks()])
    steps = _Steps(strategy.name, stream, out_dir, main, model, cl_strategy, evaluate, tensorboard, total_base, started)
    results = steps.begin(previous, data, experiences, evaluator, references, identity=identity, preset=preset,
                          base_info=base_info, device=torch_device)
    done = len(results["wer_matrix"])
    try:
        for experience, task in zip(experiences[done:], stream.tasks[done:]):
            steps.run(experience, task)
    finally:  # an adapter claimed for training and never saved must not block other runs
        if extraction_cache is not None:
            extraction_cache.release()
    if main:
        tensorboard.writer.close()
    if not results["complete"]:  # the next task's training data is bad: stop before it, finished steps kept
        raise data.stop_before(len(results["wer_matrix"]), out_dir)
    return results


class _Steps:
    """The run's results as its steps finish: the base model's evaluation (or the checkpoint's
    steps), then per task train, evaluate, record, save (rank 0) and log."""

    def __init__(self, strategy_name: str, stream: StreamSpec, out_dir: Path, main: bool, model: torch.nn.Module,
                 cl_strategy, evaluate: _Evaluation, tensorboard: TensorboardLogger | None, total_base: int,
                 started: float) -> None:
        self.strategy_name, self.stream, self.out_dir, self.main = strategy_name, stream, out_dir, main
        self.model, self.cl_strategy, self.evaluate, self.tensorboard = model, cl_strategy, evaluate, tensorboard
        self.total_base = total_base
        self.started = started  # perf_counter at this process's start of the run
        self.wall_before = 0.0  # wall seconds of the run's earlier processes (before a resume)
        self.results: dict = {}
        self.edits: dict = {"columns": evaluate.columns, "steps": [], "dev_steps": []}

    def begin(self, previous: dict | None, data: StreamData, experiences: list, evaluator: Evaluator,
              references: dict | None, **start) -> dict:
        """The results before the first step to train: the checkpoint's steps (``previous``),
        else the base model's evaluation (``start``: what ``start`` takes), saved at once."""
        columns = self.evaluate.columns
        audio_seconds = {c: round(sum(data.test[c].num_frames) * FRAME_SECONDS, 2) for c in columns}
        if previous is not None:
            data.check_unchanged(previous["results"].get("data"), len(previous["results"]["wer_matrix"]))
            self.resume(previous, experiences, evaluator.matrix_metrics, audio_seconds)
        else:
            self.start(audio_seconds=audio_seconds, **start)
        if references is not None:
            self.results["references"] = references
        self.edits["utterances"] = {"test": _utterances(data.test, columns),
                                    "dev": _utterances(data.dev, self.evaluate.dev_columns)}
        self.results["data"] = data.identity()  # what the steps from here on train and test on
        if previous is None and self.main:
            self.save()
        return self.results

    def start(self, identity: dict, preset: str, audio_seconds: dict, base_info: dict, device: torch.device) -> None:
        """A fresh run: the base model's WER on every test and dev set."""
        base_row, base_dev_row, base_eval_seconds, _ = self.evaluate(self.edits)
        stream, columns = self.stream, self.evaluate.columns
        log.info("base model WER: %s", ", ".join(f"{c} {v:.1f}" for c, v in zip(columns, base_row)))
        self.results = new_results(
            identity, source=stream.source, preset=preset, base_task=stream.base.name,
            tasks=[t.name for t in stream.tasks], zero_shot_task=stream.zero_shot.name, columns=columns,
            test_audio_seconds=audio_seconds, base_row=base_row, base_dev_row=base_dev_row,
            base_model={**base_info, "parameters": self.total_base, "eval_seconds": round(base_eval_seconds, 2)},
            device=str(device), processes=distributed.world_size())

    def resume(self, previous: dict, experiences: list, matrix_metrics: list, audio_seconds: dict) -> None:
        self.results, self.edits = resume(previous, self.cl_strategy, self.model, experiences, matrix_metrics,
                                          self.evaluate.columns)
        self.results.setdefault("test_audio_seconds", audio_seconds)
        self.wall_before = self.results["wall_seconds"]
        log.info("resuming %s after %d of %d tasks", self.out_dir, len(self.results["wer_matrix"]), len(experiences))

    def save(self) -> None:
        """Checkpoint and every output file (rank 0); the latest step's metrics (the base
        model's at step 0) into TensorBoard."""
        save_step(self.out_dir, self.model, self.cl_strategy, self.results, self.edits)  # attaches the metrics
        steps = self.results["steps"]
        _log_metrics(self.tensorboard, steps[-1]["metrics"] if steps else self.results["base_model"]["metrics"],
                     len(steps))

    def run(self, experience, task) -> None:
        results, columns = self.results, self.evaluate.columns
        log.info("task %d/%d: %s", experience.current_experience + 1, len(self.stream.tasks), task.name)
        began = time.perf_counter()
        self._train(experience, task)
        train_seconds = time.perf_counter() - began
        row, dev_row, eval_seconds, attended = self.evaluate(self.edits)
        trained = sum(self.cl_strategy.trained_parameters.values())
        results["wer_matrix"].append(row)
        results["dev_wer_matrix"].append(dev_row)
        results["steps"].append({**step_record(task.name, columns, row, train_seconds, eval_seconds,
                                               self.model.parameter_counts(), trained, self.total_base),
                                 **self.cl_strategy.step_details,
                                 **({"attention": attended} if attended else {})})
        results["wall_seconds"] = round(self.wall_before + time.perf_counter() - self.started, 2)
        results["complete"] = len(results["wer_matrix"]) == len(self.stream.tasks)
        if self.main:
            self.save()
        log.info("after %s: %s", task.name, ", ".join(f"{c} {v:.1f}" for c, v in zip(columns, row)))

    def _train(self, experience, task) -> None:
        try:
            self.cl_strategy.train(experience, eval_streams=[])
        except TrainingError as exc:
            kept = len(self.results["wer_matrix"])
            raise TrainingError(
                f"strategy {self.strategy_name}, task {experience.current_experience + 1}/{len(self.stream.tasks)} "
                f"({task.name}): {exc}; the {kept} finished step(s) are kept in {self.out_dir} (rerunning the "
                "same command retries this task)") from None


__all__ = ["run_stream", "format_wer_table", "default_cache_dir", "ensure_writable", "setup_logging"]
