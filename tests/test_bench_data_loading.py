"""experiments/bench_data_loading.py: an epoch of the base task's batches from a warm cache."""

from click.testing import CliRunner
from experiment_scripts import load_experiment


def rows(output: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.split("|")[1:-1]] for line in output.splitlines()
            if line.startswith("| ") and "epoch" not in line]


def test_bench_data_loading_times_epochs_and_reports_padding(tiny_cache):
    script = load_experiment("bench_data_loading")
    args = ["--stream", "tiny", "--preset", "tiny", "--threads", "1", "--cache-dir", str(tiny_cache)]
    result = CliRunner().invoke(script.main, [*args, "--epochs", "2"])
    assert result.exit_code == 0, result.output
    table = rows(result.output)
    assert [row[0] for row in table] == ["1", "2"]
    assert all(int(row[1]) > 0 and 0.0 <= float(row[2].rstrip("%")) < 100.0 for row in table)
    padding = {}
    for jitter in ("0", "1.0"):  # the run's batch_length_jitter reaches the batches
        result = CliRunner().invoke(script.main, [*args, "--epochs", "1", "--set", f"batch_length_jitter={jitter}"])
        assert result.exit_code == 0, result.output
        padding[jitter] = float(rows(result.output)[0][2].rstrip("%"))
    assert padding["0"] < padding["1.0"]
    unknown = CliRunner().invoke(script.main, ["--stream", "nowhere", "--cache-dir", str(tiny_cache)])
    assert unknown.exit_code == 1 and "nowhere" in unknown.output and "Traceback" not in unknown.output
