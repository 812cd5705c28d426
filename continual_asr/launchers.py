"""Sweeps on a cluster: every run of a sweep as a Slurm job, through submitit (the launcher Hydra
and fairseq use).

Each run is a :class:`RunJob`. submitit requeues it when Slurm pre-empts it or its time runs
out (``Checkpointable``), and the requeued job resumes from the run's folder like any rerun. A
job that fails for another reason (a node lost, memory exhausted) is submitted again, up to
``max_retries`` times; a run that ends with a casr error (bad data, a bad config) is not, since
it would end the same way. Runs that wait for another (the first adapter run of a seed trains
the adapters the others reuse) are submitted once it has ended, exactly as the local process
pool does. ``cluster="local"`` is submitit's local executor: the same submission path, with jobs
as processes of this machine (what the tests run).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .errors import CasrError

POLL_SECONDS = 2.0


@dataclass
class ClusterOptions:
    """What each job asks the cluster for (``casr sweep --launcher slurm`` options)."""

    cluster: str = "slurm"  # or "local": submitit's local executor
    time_minutes: int = 240
    cpus: int = 2
    gpus: int = 0
    mem_gb: int | None = None
    partition: str | None = None
    max_retries: int = 2

    def __post_init__(self) -> None:
        if self.cluster not in ("slurm", "local"):
            raise CasrError(f"cluster: 'slurm' or 'local', not {self.cluster!r}")
        for name in ("time_minutes", "cpus"):
            if getattr(self, name) < 1:
                raise CasrError(f"--{name.replace('_minutes', '').replace('_', '-')} must be at least 1")
        if self.gpus < 0 or self.max_retries < 0:
            raise CasrError("--gpus and --max-retries cannot be negative")


def _submitit():
    try:
        import submitit
    except ImportError:
        raise CasrError("--launcher slurm needs submitit: pip install 'continual-asr[cluster]'") from None
    return submitit


class RunJob:
    """One run of a sweep as a job; requeued on pre-emption or time-out (it resumes from its folder)."""

    def __init__(self, run, stream_name: str, preset: str, cache_dir: str | None, threads: int) -> None:
        self.args = (run, stream_name, preset, cache_dir, threads)

    def __call__(self) -> str | None:
        from .sweep import run_one

        return run_one(*self.args)

    def checkpoint(self):
        # Nothing to save here: every finished step is already in the run's checkpoint.pt.
        return _submitit().helpers.DelayedSubmission(self)


def make_executor(folder: Path, options: ClusterOptions):
    """A submitit executor writing its job files and logs into ``folder``."""
    submitit = _submitit()
    executor = submitit.AutoExecutor(folder=str(folder), cluster=options.cluster)
    parameters: dict[str, Any] = {"name": "casr-sweep", "timeout_min": options.time_minutes,
                                  "cpus_per_task": options.cpus, "gpus_per_node": options.gpus}
    if options.mem_gb is not None:
        parameters["mem_gb"] = options.mem_gb
    if options.partition and options.cluster == "slurm":
        parameters["slurm_partition"] = options.partition
    executor.update_parameters(**parameters)
    return executor


def run_on_cluster(order: list, executor, options: ClusterOptions, jobs: int, job_for: Callable[[Any], Any],
                   echo: Callable[[str], None], ended_with: Callable[[Any, BaseException | str | None], None],
                   total: int) -> None:
    """Submit the runs of ``order`` ((run, run it waits for or None), see sweep.schedule), at most
    ``jobs`` in the queue at once; ``ended_with(run, error)`` hears of each as it ends."""
    from .sweep import take_ready

    failures: dict[int, int] = {}
    ended: set[int] = set()
    running: dict[Any, Any] = {}
    started = 0
    try:
        while order or running:
            while len(running) < jobs and (run := take_ready(order, ended)) is not None:
                started += 1
                job = executor.submit(job_for(run))
                echo(f"[{started}/{total}] {run.name}, seed {run.seed}: {run.out} (job {job.job_id})")
                running[job] = run
            time.sleep(POLL_SECONDS)
            for job in [j for j in running if j.done()]:
                run = running.pop(job)
                try:
                    error = job.result()
                except Exception as exc:  # the job itself failed: try again, a few times
                    tries = failures[id(run)] = failures.get(id(run), 0) + 1
                    if tries <= options.max_retries:
                        echo(f"{run.name}, seed {run.seed}: job {job.job_id} failed ({exc.__class__.__name__}); "
                             f"submitting it again ({tries} of {options.max_retries})")
                        running[executor.submit(job_for(run))] = run
                        continue
                    last = str(exc).strip().splitlines()[-1] if str(exc).strip() else exc.__class__.__name__
                    error = f"job {job.job_id} failed {tries} times; last: {last}"
                ended.add(id(run))
                ended_with(run, error)
    except BaseException:  # Ctrl-C or an error here: jobs left queued would run on, unwatched
        for job in running:
            job.cancel(check=False)
        raise
