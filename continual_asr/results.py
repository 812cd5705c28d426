"""results.json (written atomically after every step) and the WER table printed at the end."""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

SCHEMA_VERSION = 1


def package_versions() -> dict[str, str]:
    """Package versions, and the CPU kernels torch picked: float sums, and so trained weights and
    WERs, differ between CPU capabilities (AVX2, AVX512) for the same code and seed."""
    import torch

    versions = {"python": platform.python_version(), "torch cpu capability": torch.backends.cpu.get_cpu_capability()}
    for name in ("continual-asr", "torch", "torchaudio", "avalanche-lib", "sentencepiece", "jiwer", "numpy"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@contextmanager
def _renamed_into_place(path: Path) -> Iterator[Path]:
    """A temporary file beside ``path`` to write, renamed onto ``path`` once written: readers
    never see half a file, and a crash leaves the old one."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    yield tmp
    os.replace(tmp, path)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """``data`` into ``path``, renamed into place."""
    with _renamed_into_place(path) as tmp:
        tmp.write_bytes(data)


def save_torch_atomic(payload: Any, path: Path) -> None:
    """``torch.save`` of a checkpoint, cache entry or adapter file, renamed into place (parent
    folders made)."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _renamed_into_place(path) as tmp:
        torch.save(payload, tmp)


def write_json_atomic(path: Path, payload: Any, compact: bool = False) -> None:
    """``compact``: no indentation or spaces (per-utterance edit counts: a seventh of the size)."""
    text = json.dumps(payload, separators=(",", ":")) if compact else json.dumps(payload, indent=2)
    write_bytes_atomic(path, (text + "\n").encode("utf-8"))


def new_results(identity: dict, *, source: str | None, preset: str, base_task: str, tasks: list[str],
                zero_shot_task: str, columns: list[str], test_audio_seconds: dict[str, float],
                base_row: list[float], base_dev_row: list[float | None], base_model: dict, device: str,
                processes: int) -> dict:
    """results.json before the first task: the run's identity, the base model's WER rows and
    the machine; the steps are added by :func:`step_record` as they finish."""
    return {
        "schema_version": SCHEMA_VERSION,
        **identity,
        "stream": {**identity["stream"], "source": source},
        "preset": preset,
        "base_task": base_task,
        "tasks": tasks,
        "zero_shot_task": zero_shot_task,
        "columns": columns,
        "test_audio_seconds": test_audio_seconds,
        "base_wer": dict(zip(columns, base_row)),
        "wer_matrix": [],
        "base_dev_wer": dict(zip(columns, base_dev_row)),  # dev: what choices are made on
        "dev_wer_matrix": [],
        "steps": [],
        "base_model": base_model,
        "device": device,
        "processes": processes,
        "versions": package_versions(),
        "wall_seconds": 0.0,
        "complete": False,
    }


def task_order(results: dict) -> tuple[int, ...]:
    """The YAML positions (1-based) of the tasks in the order the run learned them; runs from
    before orders were recorded learned the YAML order."""
    return tuple(results.get("task_order") or range(1, len(results.get("tasks") or ()) + 1))


def usable_cores() -> int:
    """The cores this process may run on (taskset, cgroups), where the OS says; else all."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def peak_rss_mib() -> float:
    """The process's peak resident memory so far (MiB; Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def step_record(task: str, columns: list[str], row: list[float], train_seconds: float, eval_seconds: float,
                counts: dict, trained: int, total_base: int) -> dict:
    """One entry of results.json's ``steps``: the test row, the clock, memory and parameters."""
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


def format_wer_table(results: dict) -> str:
    """Rows: the base model, then after each task; columns: every task, zero-shot, and the mean."""
    columns = results["columns"]
    seen_mean = "mean"
    width = max(8, *(len(c) for c in columns)) + 1
    row_names = ["base model"] + [f"after {t}" for t in results["tasks"][: len(results["wer_matrix"])]]
    label_width = max(len(r) for r in row_names) + 2
    header = "WER %".ljust(label_width) + "".join(c.rjust(width) for c in columns) + seen_mean.rjust(width)
    lines = [header, "-" * len(header)]
    trained = columns[:-1]  # mean over base + stream tasks, zero-shot excluded
    rows = [[results["base_wer"][c] for c in columns]] + results["wer_matrix"]
    for name, row in zip(row_names, rows):
        mean = sum(row[: len(trained)]) / len(trained)
        lines.append(name.ljust(label_width) + "".join(f"{v:{width}.1f}" for v in row) + f"{mean:{width}.1f}")
    lines.append(f"(columns: base task, stream tasks in order, zero-shot '{columns[-1]}'; mean excludes zero-shot)")
    return "\n".join(lines)
