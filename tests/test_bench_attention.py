"""experiments/bench_attention.py: casr's self-attention against torch's, to the bit and timed."""

from click.testing import CliRunner
from experiment_scripts import ROOT, load_experiment


def test_the_benchmark_finds_the_same_bits_on_every_shape(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "experiments"))  # its sibling modules
    script = load_experiment("bench_attention")
    result = CliRunner().invoke(script.main, ["--preset", "tiny", "--rounds", "1", "--threads", "1"])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line[:3].strip("| ").isdigit()]
    assert len(rows) == len(script.SECONDS)
    assert all(row.split(" | ")[1] == "yes" for row in rows)
