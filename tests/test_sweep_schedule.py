"""experiments/sweep_schedule.py: a sweep's start orders replayed against its runs' own times."""

from click.testing import CliRunner

from continual_asr import sweep
from experiment_scripts import load_experiment
from fake_results import fake_results, write_run

script = load_experiment("sweep_schedule")

SWEEP = """
stream: tiny
preset: tiny
seeds: [0, 1, 2]
runs:
  finetune: {strategy: finetune}
  avg: {strategy: adapter-avg}
  oracle: {strategy: adapter-oracle}
"""


def _archive(tmp_path):
    """Finished runs: finetune 300 s; avg, each seed's first adapter run, 10 s of its own after 100 s
    of training the adapters that oracle (10 s) reuses."""
    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP)
    seconds = {"finetune": (300, 0), "avg": (110, 0), "oracle": (10, 100)}
    for name, (wall, reused) in seconds.items():
        for seed in (0, 1, 2):
            results = fake_results([10, 50, 50, 60], [[10, 20, 50, 60], [10, 20, 30, 60]], seed=seed)
            results.update(wall_seconds=wall, summary={"cost": {"reused_training_seconds": reused, "eval_seconds": 1.0}})
            write_run(tmp_path / "out" / name / f"seed{seed}", results)
    return path, tmp_path / "out"


def test_the_replay_starts_runs_as_the_sweep_does_and_row_by_row_ends_sooner(tmp_path):
    path, out = _archive(tmp_path)
    _, _, plan = sweep.load_plan(path, out)
    times = script.ArchivedTimes(out)
    assert [times.own_seconds(run) for run in plan[:3]] == [300, 10, 10] and times.extraction_seconds(0) == 100
    # 2 workers, seed by seed: avg0, avg1 | avg2 | ft0 | or0 | ft1 | or1 | ft2 (420 to 720) | or2
    assert script.replay(sweep.schedule(plan), 2, times) == 720
    # row by row the three fine-tuning runs start before any oracle run: the last ends at 710
    assert script.replay(sweep.schedule(plan, by_row=True), 2, times) == 710
    assert script.replay(sweep.schedule(plan), 1, times) == 3 * (300 + 110 + 10)


def test_the_command_prints_both_orders_and_the_lower_bound(tmp_path):
    path, out = _archive(tmp_path)
    result = CliRunner().invoke(script.main, ["--runs", str(out), "--sweep-file", str(path), "--workers", "1,2"])
    assert result.exit_code == 0, result.output
    assert "9 runs of sweep.yaml" in result.output
    assert "| 2 | 0.20 h | 0.20 h | 1% | 0.17 h |" in result.output  # 720 s, 710 s; 1,260 s / 2 workers = 630 s
