"""experiments/bench_layouts.py: its earlier variants hold the same weights as casr's model and
compute the same function (so the timing compares layouts, not models), and it prints each
median and its ratio to casr's."""

import torch
from click.testing import CliRunner
from experiment_scripts import ROOT, load_experiment
from torch import nn
from torchaudio.models.conformer import _ConvolutionModule


def test_the_benchmark_times_one_function_in_four_layouts(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "experiments"))  # its sibling modules
    script = load_experiment("bench_layouts")
    models = {variant: script.build("tiny", "pretraining", variant)[1] for variant in script.VARIANTS}
    assert type(models[script.TORCH_ATTENTION].layers[0].self_attn) is nn.MultiheadAttention
    assert type(models[script.TORCH_ATTENTION].layers[0].conv_module) is not _ConvolutionModule
    assert type(models[script.TORCHAUDIO_CONVOLUTION].layers[0].conv_module) is _ConvolutionModule
    assert type(models[script.CASR].layers[0].self_attn) is not nn.MultiheadAttention
    assert type(models[script.CASR].layers[0].conv_module) is not _ConvolutionModule
    assert models[script.PLAIN_FRONT_END].subsampling.conv[0].weight.is_contiguous()
    assert not models[script.CASR].subsampling.conv[2].weight.is_contiguous()
    # Without padding: torchaudio's module does not zero padded frames, casr's does (since 2026-12-05).
    features, lengths = torch.randn(2, 90, 80), torch.tensor([90, 90])
    expected = models[script.CASR](features, lengths)[0]
    assert torch.equal(models[script.TORCH_ATTENTION](features, lengths)[0], expected)  # only copies differ
    for variant in (script.TORCHAUDIO_CONVOLUTION, script.PLAIN_FRONT_END):
        torch.testing.assert_close(models[variant](features, lengths)[0], expected)

    result = CliRunner().invoke(script.main, ["--preset", "tiny", "--rounds", "1", "--threads", "1"])
    assert result.exit_code == 0, result.output
    for variant in script.VARIANTS:
        assert f"  {variant}: " in result.output
    assert "1.000 of casr's" in result.output
