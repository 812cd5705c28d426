"""experiments/bench_training.py: it runs at the tiny preset, and --set reaches the model's config."""

from click.testing import CliRunner
from experiment_scripts import ROOT, load_experiment


def test_bench_training_times_every_step_kind_of_the_model_it_is_given(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "experiments"))  # its sibling module timing.py
    script = load_experiment("bench_training")
    args = ["--preset", "tiny", "--steps", "1", "--threads", "1", "--precision", "fp32", "--seconds", "1"]
    result = CliRunner().invoke(script.main, [*args, "--set", "subsampling_factor=8"])
    assert result.exit_code == 0, result.output
    for kind in ("pretraining", "adapter training", "fusion (5 adapters)"):
        assert f"| {kind} | fp32 |" in result.output
    result = CliRunner().invoke(script.main, [*args, "--set", "subsampling_factor=5"])
    assert result.exit_code == 2 and "config field 'subsampling_factor' must be one of 4, 6, 8, got 5" in result.output


def test_bench_training_profile_names_the_machine_and_every_step_kind(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(ROOT / "experiments"))
    script = load_experiment("bench_training")
    profile = tmp_path / "profile.md"
    args = ["--preset", "tiny", "--steps", "1", "--threads", "1", "--precision", "fp32", "--seconds", "1"]
    result = CliRunner().invoke(script.main, [*args, "--profile", str(profile)])
    assert result.exit_code == 0, result.output
    text = profile.read_text(encoding="utf-8")
    assert text.startswith("# bench_training.py --preset tiny --seconds 1: torch.profiler, 3 steps")
    assert "1 threads, CPU capability" in text.splitlines()[0]
    for kind in ("pretraining, fp32", "adapter training, fp32", "fusion (5 adapters), fp32", "evaluation (greedy decoding)"):
        assert f"## {kind}" in text
