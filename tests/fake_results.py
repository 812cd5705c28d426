"""Hand-written results.json contents (the documented schema) for metric and reporting tests."""

import json
from pathlib import Path

COLUMNS = ["base", "t1", "t2", "zs"]


def fake_results(base_row, matrix, strategy="adapter-fusion", seed=0, config=None, columns=COLUMNS,
                 train_seconds=10.0, trained=100):
    """A run of a stream with base task 'base', tasks 't1', 't2' and zero-shot 'zs'."""
    tasks = columns[1:-1]
    steps = [{"task": tasks[k], "wer": dict(zip(columns, row)), "train_seconds": train_seconds, "eval_seconds": 2.0,
              "parameters": {"trained": trained, "stored": 1000 + 50 * (k + 1), "base": 1000, "adapters": 50 * (k + 1),
                             "combiners": 0, "trained_share": 0.1, "stored_vs_base": 1.05}}
             for k, row in enumerate(matrix)]
    return {
        "schema_version": 1,
        "stream": {"name": "fake", "source": "fake.yaml", "description": "a hand-written stream"},
        "strategy": strategy, "seed": seed, "config": config or {"adapter_dim": 8}, "preset": "tiny",
        "base_task": columns[0], "tasks": tasks, "zero_shot_task": columns[-1], "columns": columns,
        "test_audio_seconds": {c: 10.0 for c in columns},
        "base_wer": dict(zip(columns, base_row)),
        "wer_matrix": [list(row) for row in matrix],
        "steps": steps,
        "base_model": {"cache_key": "k", "path": "p", "cached": True, "seconds": 0.0, "parameters": 1000,
                       "eval_seconds": 4.0},
        "device": "cpu", "versions": {"python": "3"}, "wall_seconds": 30.0,
        "complete": len(matrix) == len(tasks),
    }


def write_run(folder: Path, results: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(results))
    return folder
