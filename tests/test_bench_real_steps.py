"""experiments/bench_real_steps.py: real batches' shapes, oneDNN's creations, denormals, flushing."""

import re

from click.testing import CliRunner
from experiment_scripts import ROOT, load_experiment


def test_bench_real_steps_reports_shapes_creations_denormals_and_both_timings(tiny_cache, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "experiments"))  # its sibling modules
    script = load_experiment("bench_real_steps")
    base_model = next((tiny_cache / "base_models").glob("*.pt"))
    args = ["--threads", "1", "--steps", "3", "--rounds", "1", "--cache-dir", str(tiny_cache)]
    result = CliRunner().invoke(script.main, [*args, "--base-model", str(base_model)])
    assert result.exit_code == 0, result.output
    batches, shapes = map(int, re.search(r"(\d+) batches an epoch, (\d+) shapes", result.output).groups())
    assert 0 < shapes <= batches
    # The front end's convolutions are oneDNN's: the first step builds its primitives.
    created = [int(m) for m in re.findall(r"\| convolution \S+ \| (\d+) \|", result.output)]
    assert created and sum(created) > 0, result.output
    assert re.search(r"denormal floats: module outputs \d+ of [1-9]\d*", result.output)
    timings = re.search(r"as is (\d+), denormals flushed (\d+)", result.output)
    assert timings and all(int(t) > 0 for t in timings.groups())
    assert re.search(r"oneDNN's creations: \d+ ms over the first 3 steps, [\d.]+ % of 3 steps", result.output)
    wrong = CliRunner().invoke(script.main, [*args, "--base-model", str(tiny_cache / "tokenizers" / "missing.pt")])
    assert wrong.exit_code != 0 and "Traceback" not in wrong.output
    unknown = CliRunner().invoke(script.main, ["--stream", "nowhere", "--cache-dir", str(tiny_cache)])
    assert unknown.exit_code == 1 and "nowhere" in unknown.output and "Traceback" not in unknown.output
