"""Regenerate tests/data/pinned_wer.json for this platform: every built-in strategy's tiny run,
seed 0 (what tests/test_run.py's test_every_builtin_strategy_runs_on_tiny compares with). Run it
only when a change is meant to change the numbers, and say so in the commit:

    .venv/bin/python tests/pinned_wer.py [STRATEGY ...] [--changed] [--cache-dir DIR]

The file holds one entry per platform (torch version and CPU capability; every run on THREADS
threads): float sums differ between them. This platform's entry is redone: the strategies
named, or all of them (all where this platform has no entry yet). ``--changed``: the code change changed the numbers of the
strategies named (or of all), so their pins on other platforms are stale and are dropped, until
someone re-pins them on such a machine. A cache folder of an earlier tiny run saves the base
model's pretraining.

An AVX-512 machine can pin for AVX2 as well: with ``ATEN_CPU_CAPABILITY=avx2
ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2`` in the environment, torch, oneDNN and MKL
run their AVX2 kernels and the platform reads as AVX2 (on an AMD AVX-512 CPU this reproduced the
AVX2 AMD machines' pins exactly, 2026-12-04). The built-in stream's reverberated tasks also go
through NumPy's and OpenBLAS's kernels (pyroomacoustics, scipy): for its long runs add
``NPY_DISABLE_CPU_FEATURES=X86_V4 OPENBLAS_CORETYPE=Haswell`` (docs/development.md).
"""

import json
import sys
import tempfile
from pathlib import Path

import torch
from click.testing import CliRunner

from continual_asr.cli import main
from continual_asr.config import make_config
from continual_asr.distributed import resolve_cpu_precision

THREADS = 2  # what tests/test_run.py's runs use (float sums depend on it)
STRATEGIES = ["adapter-fusion", "adapter-oracle", "adapter-avg", "adapter-wavg", "adapter-router",
              "finetune", "joint", "replay", "ewc", "lwf"]


PINNED_FILE = Path(__file__).parent / "data" / "pinned_wer.json"


def cpu_vendor() -> str:
    """/proc/cpuinfo's vendor_id ('GenuineIntel', 'AuthenticAMD'), or '' where there is none."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("vendor_id")), "")


def this_platform() -> dict:
    """What a platform's pins are keyed by: float sums differ between torch versions and CPU kinds,
    and between vendors of one capability (an AMD and an Intel AVX-512 CPU give other tiny WERs);
    and the precision a default run computes in here."""
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_vendor": cpu_vendor(), "cpu_precision": resolve_cpu_precision(torch.device("cpu"), make_config("tiny").cpu_precision)}


def is_this_platform(entry: dict) -> bool:
    """Pins recorded before the vendor was part of the key match no platform (their vendor is not
    known); pins recorded before the precision was are float32's (the only CPU arithmetic then)."""
    entry = {"cpu_precision": "float32", **entry}
    return all(entry.get(key) == value for key, value in this_platform().items())


def pinned_runs(work: Path, strategies: list[str], cache: Path) -> dict:
    out = {**this_platform(), "runs": {}}
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
    changed = "--changed" in args
    args = [a for a in args if a not in ("--cache-dir", "--changed")]
    unknown = set(args) - set(STRATEGIES)
    if unknown:
        sys.exit(f"not a built-in strategy: {', '.join(sorted(unknown))}")
    platforms = json.loads(PINNED_FILE.read_text())["platforms"] if PINNED_FILE.exists() else []
    platforms = [p for p in platforms if p["runs"]]  # a platform whose pins were all dropped awaits a fresh entry
    here = next((p for p in platforms if is_this_platform(p)), None)
    with tempfile.TemporaryDirectory() as work:
        fresh = pinned_runs(Path(work), (args if here else None) or STRATEGIES, cache or Path(work) / "cache")
    if here is None:
        platforms.append(fresh)
    else:
        merged = {**here["runs"], **fresh["runs"]}
        here["runs"] = {name: merged[name] for name in STRATEGIES if name in merged}
    if changed:
        for other in platforms:
            if not is_this_platform(other):
                for name in args or STRATEGIES:
                    other["runs"].pop(name, None)
    PINNED_FILE.write_text(json.dumps({"threads": THREADS, "platforms": platforms}, indent=1) + "\n")
    print(f"wrote {PINNED_FILE}")
