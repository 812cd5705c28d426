"""Regenerate tests/data/pinned_wer.json: every built-in strategy's tiny run, seed 0 (what
tests/test_run.py's test_every_builtin_strategy_runs_on_tiny compares with). Run it only when a
change is meant to change the numbers, and say so in the commit:

    .venv/bin/python tests/pinned_wer.py [STRATEGY ...] [--cache-dir DIR]

With strategies named, only their entries are redone (the others must be unchanged); a cache
folder of an earlier tiny run saves the base model's pretraining.
"""

import json
import sys
import tempfile
from pathlib import Path

import torch
from click.testing import CliRunner

from continual_asr.cli import main

THREADS = 2  # what tests/test_run.py's runs use (float sums depend on it)
STRATEGIES = ["adapter-fusion", "adapter-oracle", "adapter-avg", "adapter-wavg", "adapter-router",
              "finetune", "joint", "replay", "ewc", "lwf"]


def pinned_runs(work: Path, strategies: list[str], cache: Path) -> dict:
    out = {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "threads": THREADS, "runs": {}}
    for strategy in strategies:
        result = CliRunner().invoke(main, ["run", "--stream", "tiny", "--strategy", strategy, "--preset", "tiny",
                                           "--out", str(work / strategy), "--seed", "0",
                                           "--cache-dir", str(cache), "--quiet", "--set", f"threads={THREADS}"])
        if result.exit_code != 0:
            sys.exit(f"{strategy}: {result.output}")
        results = json.loads((work / strategy / "results.json").read_text())
        out["runs"][strategy] = {key: results[key] for key in ("base_wer", "wer_matrix", "dev_wer_matrix")}
        print(strategy, results["wer_matrix"][-1], flush=True)
    return out


if __name__ == "__main__":
    args = sys.argv[1:]
    cache = Path(args.pop(args.index("--cache-dir") + 1)) if "--cache-dir" in args else None
    args = [a for a in args if a != "--cache-dir"]
    unknown = set(args) - set(STRATEGIES)
    if unknown:
        sys.exit(f"not a built-in strategy: {', '.join(sorted(unknown))}")
    target = Path(__file__).parent / "data" / "pinned_wer.json"
    with tempfile.TemporaryDirectory() as work:
        fresh = pinned_runs(Path(work), args or STRATEGIES, cache or Path(work) / "cache")
    if args:
        pinned = json.loads(target.read_text())
        if any(pinned[key] != fresh[key] for key in ("torch", "cpu_capability", "threads")):
            sys.exit("the pinned file is from another platform: regenerate every strategy")
        pinned["runs"].update(fresh["runs"])
        fresh = {**pinned, "runs": {name: pinned["runs"][name] for name in STRATEGIES}}
    target.write_text(json.dumps(fresh, indent=1) + "\n")
    print(f"wrote {target}")
