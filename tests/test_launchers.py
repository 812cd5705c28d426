"""Sweeps on a cluster through submitit: the real submission path with submitit's local
executor, and the resubmission of failed jobs with a stand-in executor."""

import json
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from continual_asr import launchers
from continual_asr.cli import main
from continual_asr.errors import CasrError
from continual_asr.launchers import ClusterOptions, run_on_cluster

SWEEP = """
stream: tiny
preset: tiny
seeds: [0]
set: {pretrain_seed: 0}
runs:  # neither waits for the other: two jobs at once (waiting is the stand-in executor's test below)
  avg: {strategy: adapter-avg}
  finetune: {strategy: finetune}
"""


def test_a_sweep_through_submitit_runs_each_run_as_a_job(tmp_path, tiny_cache):
    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["sweep", str(path), "--out", str(out), "--jobs", "2", "--launcher", "submitit-local",
                                       "--cpus", "1", "--cache-dir", str(tiny_cache)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "(job " in result.output
    for name in ("avg", "finetune"):
        assert json.loads((out / name / "seed0" / "results.json").read_text())["complete"]
    assert len(list((out / "submitit").glob("*_log.out"))) == 2  # one job per run, none submitted again
    report = (out / "results.md").read_text()
    assert "2 of 2 runs finished" in report and "--launcher submitit-local, --jobs 2" in report


class _Job:
    ids = iter(range(100))

    def __init__(self, outcome):
        self.outcome, self.job_id, self.cancelled = outcome, next(self.ids), False

    def done(self):
        return True

    def result(self):
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome

    def cancel(self, check=True):
        self.cancelled = True


class _Executor:
    """Each submission of a run takes the next of its scripted outcomes."""

    def __init__(self, outcomes):
        self.outcomes, self.submitted = outcomes, []

    def submit(self, run):
        self.submitted.append(run.name)
        return _Job(self.outcomes[run.name].pop(0))


def _runs(*names):
    return [SimpleNamespace(name=n, seed=0, out=f"out/{n}") for n in names]


def test_failed_jobs_are_submitted_again_up_to_the_limit_and_casr_errors_are_not(monkeypatch):
    monkeypatch.setattr(launchers, "POLL_SECONDS", 0)
    a, b, c = _runs("a", "b", "c")
    executor = _Executor({"a": [RuntimeError("node lost"), None], "b": [RuntimeError("x")] * 3,
                          "c": ["bad data: manifest.jsonl line 3"]})
    ended, lines = {}, []
    run_on_cluster([(a, None), (b, None), (c, a)], executor, ClusterOptions(cluster="local", max_retries=2), 5,
                   lambda run: run, lines.append, lambda run, error: ended.setdefault(run.name, error), 3)
    assert ended["a"] is None and executor.submitted.count("a") == 2
    assert executor.submitted.count("b") == 3 and "failed 3 times" in ended["b"]
    assert executor.submitted.count("c") == 1 and ended["c"].startswith("bad data")
    assert executor.submitted.index("c") > executor.submitted.index("a")  # c waited for a
    assert any("submitting it again (1 of 2)" in line for line in lines)


def test_cluster_options_are_checked():
    with pytest.raises(CasrError, match="--cpus must be at least 1"):
        ClusterOptions(cpus=0)
    with pytest.raises(CasrError, match="cluster: 'slurm' or 'local'"):
        ClusterOptions(cluster="pbs")
