"""``casr run`` as a library function: data, base model, the stream of experiences, the WER matrix."""

from __future__ import annotations

import logging
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from avalanche.training.plugins import EvaluationPlugin

from .config import RunConfig
from .data.streamdata import StreamData, prepare_stream_data
from .errors import CasrError
from .evaluation.wer import WordErrorRate
from .registry import StrategyInfo
from .results import SCHEMA_VERSION, format_wer_table, package_versions, write_json_atomic
from .stream import StreamSpec
from .training.pretrain import pretrain_base_model
from .training.progress import ProgressPlugin

log = logging.getLogger("continual_asr")


def default_cache_dir() -> Path:
    import os
    return Path(os.environ.get("CASR_CACHE", Path.home() / ".cache" / "continual-asr"))


def ensure_writable(folder: Path, what: str) -> Path:
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise CasrError(f"{what} {folder}: not writable ({exc.strerror or exc})") from None
    return folder


def setup_logging(out_dir: Path | None, quiet: bool) -> None:
    log.setLevel(logging.INFO)
    log.handlers.clear()
    log.propagate = False
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.WARNING if quiet else logging.INFO)
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


def run_stream(stream: StreamSpec, strategy: StrategyInfo, config: RunConfig, out_dir: Path, *, seed: int = 0,
               preset: str = "default", cache_dir: Path | None = None, device: str = "cpu",
               progress: bool = True) -> dict:
    """Run ``strategy`` over ``stream``; writes results.json after every step and returns it."""
    started = time.perf_counter()
    cache_dir = ensure_writable(cache_dir or default_cache_dir(), "cache folder")
    if config.threads:
        torch.set_num_threads(config.threads)
    torch_device = torch.device(device)
    seed_everything(seed)

    data: StreamData = prepare_stream_data(stream, config, cache_dir, progress=progress)
    model, base_info = pretrain_base_model(data, config, seed, cache_dir, torch_device, progress=progress)
    seed_everything(seed)

    wer = WordErrorRate(data.tokenizer)
    cl_strategy = strategy.factory(model, config, device=torch_device, seed=seed,
                                   plugins=[ProgressPlugin(progress)], evaluator=EvaluationPlugin(wer, loggers=[]))
    cl_strategy.memory.add(data.dataset("train", stream.base))
    benchmark = data.benchmark()
    columns = [t.name for t in stream.eval_tasks]
    total_base = model.parameter_counts()["total"]

    def evaluate() -> tuple[list[float], float]:
        began = time.perf_counter()
        cl_strategy.eval(benchmark.test_stream)
        return [round(wer.results[i], 2) for i in range(len(columns))], time.perf_counter() - began

    base_row, base_eval_seconds = evaluate()
    results = {
        "schema_version": SCHEMA_VERSION,
        "stream": {"name": stream.name, "source": stream.source, "description": stream.description},
        "strategy": strategy.name,
        "preset": preset,
        "seed": seed,
        "config": config.to_dict(),
        "base_task": stream.base.name,
        "tasks": [t.name for t in stream.tasks],
        "zero_shot_task": stream.zero_shot.name,
        "columns": columns,
        "base_wer": dict(zip(columns, base_row)),
        "wer_matrix": [],
        "steps": [],
        "base_model": {**base_info, "parameters": total_base, "eval_seconds": round(base_eval_seconds, 2)},
        "device": str(torch_device),
        "versions": package_versions(),
        "complete": False,
    }
    out_dir = Path(out_dir)
    write_json_atomic(out_dir / "results.json", results)
    log.info("base model WER: %s", ", ".join(f"{c} {v:.1f}" for c, v in zip(columns, base_row)))

    for experience, task in zip(benchmark.train_stream, stream.tasks):
        log.info("task %d/%d: %s", experience.current_experience + 1, len(stream.tasks), task.name)
        began = time.perf_counter()
        cl_strategy.train(experience, eval_streams=[])
        train_seconds = time.perf_counter() - began
        row, eval_seconds = evaluate()
        counts = model.parameter_counts()
        trained = sum(cl_strategy.trained_parameters.values())
        results["wer_matrix"].append(row)
        results["steps"].append({
            "task": task.name,
            "wer": dict(zip(columns, row)),
            "train_seconds": round(train_seconds, 2),
            "eval_seconds": round(eval_seconds, 2),
            "parameters": {
                "trained": trained,
                "stored": counts["total"],
                "base": counts["base"],
                "adapters": counts["adapters"],
                "combiners": counts["combiners"],
                "trained_share": round(trained / counts["total"], 4),
                "stored_vs_base": round(counts["total"] / total_base, 4),
            },
        })
        results["wall_seconds"] = round(time.perf_counter() - started, 2)
        write_json_atomic(out_dir / "results.json", results)
        log.info("after %s: %s", task.name, ", ".join(f"{c} {v:.1f}" for c, v in zip(columns, row)))

    results["complete"] = True
    results["wall_seconds"] = round(time.perf_counter() - started, 2)
    write_json_atomic(out_dir / "results.json", results)
    return results


__all__ = ["run_stream", "format_wer_table", "default_cache_dir", "ensure_writable", "setup_logging"]
