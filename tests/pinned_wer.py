"""Regenerate tests/data/pinned_wer.json: every built-in strategy's tiny run, seed 0 (what
tests/test_run.py's test_every_builtin_strategy_runs_on_tiny compares with). Run it only when a
change is meant to change the numbers, and say so in the commit:

    .venv/bin/python tests/pinned_wer.py
"""

import json
import sys
import tempfile
from pathlib import Path

import torch
from click.testing import CliRunner

from continual_asr.cli import main

STRATEGIES = ["adapter-fusion", "adapter-oracle", "adapter-avg", "adapter-wavg", "adapter-router",
              "finetune", "joint", "replay", "ewc", "lwf"]


def pinned_runs(work: Path) -> dict:
    out = {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "threads": torch.get_num_threads(), "runs": {}}
    for strategy in STRATEGIES:
        result = CliRunner().invoke(main, ["run", "--stream", "tiny", "--strategy", strategy, "--preset", "tiny",
                                           "--out", str(work / strategy), "--seed", "0",
                                           "--cache-dir", str(work / "cache"), "--quiet"])
        if result.exit_code != 0:
            sys.exit(f"{strategy}: {result.output}")
        results = json.loads((work / strategy / "results.json").read_text())
        out["runs"][strategy] = {key: results[key] for key in ("base_wer", "wer_matrix", "dev_wer_matrix")}
        print(strategy, results["wer_matrix"][-1], flush=True)
    return out


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as work:
        pinned = pinned_runs(Path(work))
    target = Path(__file__).parent / "data" / "pinned_wer.json"
    target.write_text(json.dumps(pinned, indent=1) + "\n")
    print(f"wrote {target}")
