"""``casr sweep``: the runs of a sweep file, resumably, and their comparison (a click command
factory: experiments/reproduce.py builds its own from it)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import click

from .cli_common import one_line_errors, parse_seeds


_CLUSTER_OPTIONS = [
    click.option("--launcher", type=click.Choice(["local", "slurm", "submitit-local"]), default="local",
                 show_default=True, help="local: a process pool here; slurm: each run a Slurm job through submitit "
                                         "(--jobs caps the jobs queued at once); submitit-local: the same submission "
                                         "path with jobs as local processes"),
    click.option("--time", "time_minutes", default=240, show_default=True, type=int, metavar="MINUTES",
                 help="cluster jobs: time limit (a job that reaches it is requeued and resumes)"),
    click.option("--cpus", default=2, show_default=True, type=int, help="cluster jobs: cores per job (and torch threads)"),
    click.option("--gpus", default=0, show_default=True, type=int, help="cluster jobs: GPUs per job"),
    click.option("--mem-gb", default=None, type=int, help="cluster jobs: memory per job"),
    click.option("--partition", default=None, help="cluster jobs: Slurm partition"),
    click.option("--max-retries", default=2, show_default=True, type=int,
                 help="cluster jobs: submit a failed job again this many times"),
]


def _cluster_options(command: Callable) -> Callable:
    """--launcher and what a cluster job asks for (launchers.ClusterOptions)."""
    for option in reversed(_CLUSTER_OPTIONS):
        command = option(command)
    return command


def _warn_if_cores_busy(jobs: int, threads: int) -> None:
    """Before a local sweep: warn when other work holds the cores its jobs' threads need (each
    job has ``threads`` (the runs' config), else what the sweep gives it; continual_asr/cpu_load.py)."""
    import torch

    from .cpu_load import busy_cores_warning
    from .sweep import job_threads

    per_job = threads or job_threads(jobs) or torch.get_num_threads()
    if per_job < 2:  # one thread a job never waits on another
        return
    message = busy_cores_warning(per_job * jobs, lambda fits: f"--set threads={max(1, fits // jobs)}, or start it "
                                                              f"when the cores are free")
    if message:
        click.echo(f"casr: {message}", err=True)


def sweep_command(name: str, default_file: str | None = None, default_out: str | None = None,
                  extra: Callable | None = None, help: str | None = None) -> click.Command:
    """The sweep command (``casr sweep``; experiments/reproduce.py is one with the paper's file
    and its questions as ``extra``: groups -> lines for results.md)."""

    @click.command(name=name, help=help)
    @click.argument("sweep_file", required=default_file is None, default=default_file,
                    type=click.Path(dir_okay=False))
    @click.option("--out", "out_dir", default=default_out, metavar="DIR",
                  help=f"parent folder of the runs: OUT/NAME/seedS (default: {default_out or 'runs/sweep-FILESTEM'})")
    @click.option("--stream", "stream_name", default=None, help="instead of the sweep file's stream")
    @click.option("--preset", default=None, help="instead of the sweep file's preset")
    @click.option("--seeds", default=None, metavar="N,N,...", help="instead of the sweep file's seeds")
    @click.option("--only", default=None, metavar="NAME,...", help="only these runs of the sweep file")
    @click.option("--order", "orders", multiple=True, metavar="N,N,...",
                  help="a task order instead of the sweep file's orders (repeatable; its runs go in "
                       "OUT/NAME/order-N-N-.../seedS, as the file's orders' do)")
    @click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                  help="a config field for every run whose strategy reads it (repeatable)")
    @click.option("--jobs", default=1, show_default=True, type=click.IntRange(min=1),
                  help="runs at a time, each in its own process with cores/jobs threads")
    @click.option("--cache-dir", type=click.Path(file_okay=False), default=None)
    @click.option("--report-only", is_flag=True, help="write results.md from the finished runs; train nothing")
    @_cluster_options
    @one_line_errors
    def command(sweep_file, out_dir, stream_name, preset, seeds, only, orders, overrides, jobs, cache_dir,
                report_only, launcher, time_minutes, cpus, gpus, mem_gb, partition, max_retries) -> None:
        if jobs > 1 and launcher == "local" and not report_only:
            from .worker_server import start_early

            start_early()  # the workers' server imports casr while this process does
        from .config import parse_overrides
        from .folders import ensure_writable
        from .stream import load_stream
        from .launchers import ClusterOptions
        from .sweep import InvocationLog, load_plan, run_all, sweep_baselines, write_report

        out = Path(out_dir or f"runs/sweep-{Path(sweep_file).stem}")
        stream, preset, plan = load_plan(
            Path(sweep_file), out, stream_name, preset, parse_seeds(seeds) if seeds else None,
            [n.strip() for n in only.split(",") if n.strip()] if only else None, parse_overrides(overrides),
            list(orders) or None)
        load_stream(stream)  # an unknown stream fails now, in one line, not once per run
        baselines = sweep_baselines(Path(sweep_file))  # and a misnamed baseline before hours of runs, not after
        ensure_writable(out, "--out")
        failed = []
        if not report_only:
            cluster = None if launcher == "local" else ClusterOptions(
                cluster="local" if launcher == "submitit-local" else "slurm", time_minutes=time_minutes, cpus=cpus,
                gpus=gpus, mem_gb=mem_gb, partition=partition, max_retries=max_retries)
            if launcher == "local":
                _warn_if_cores_busy(jobs, max(run.config.threads for run in plan))
            log = InvocationLog(out, jobs, len(plan), launcher)
            failed = run_all(plan, stream, preset, cache_dir, jobs, echo=lambda line: click.echo(line, err=True), log=log,
                             cluster=cluster, cluster_folder=out / "submitit")
            log.finish(failed)
        click.echo(write_report(out, plan, f"{Path(sweep_file).stem}: {stream}, preset {preset}", extra,
                                baselines))
        if failed:
            click.echo(f"casr: failed runs: {', '.join(failed)} (see their run.log)", err=True)
            sys.exit(1)

    return command
