"""experiments/bench_front_end.py: its 'before' model is the plain layout with the same weights
(so the timing compares layouts, not models), and it prints both medians and their ratio."""

import torch
from click.testing import CliRunner
from experiment_scripts import ROOT, load_experiment


def test_the_benchmark_times_one_function_in_two_layouts(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "experiments"))  # its sibling modules
    script = load_experiment("bench_front_end")
    _, plain, _ = script.build("tiny", "pretraining", plain=True)
    _, channels_last, _ = script.build("tiny", "pretraining", plain=False)
    assert plain.subsampling.conv[0].weight.is_contiguous()
    assert not channels_last.subsampling.conv[2].weight.is_contiguous()
    features, lengths = torch.randn(2, 90, 80), torch.tensor([90, 70])
    torch.testing.assert_close(plain.subsampling(features, lengths)[0], channels_last.subsampling(features, lengths)[0])

    result = CliRunner().invoke(script.main, ["--preset", "tiny", "--rounds", "1", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "plain (before):" in result.output and "channels-last / plain:" in result.output
