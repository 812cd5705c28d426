"""How a sweep spreads over workers: a sweep file's runs on a small stream at several ``--jobs``.

Runs the sweep file (default experiments/paper.yaml: its 14 runs, one seed, its first task
order) on experiments/sweep-timing-stream.yaml with the tiny model, once per worker count. Every
run is single-threaded (one core per worker). The data and the base model are prepared once,
beforehand (a warm-up run), and every timed sweep starts from a copy of that cache without
single-task adapters, so each trains them again in its first adapter run, which the other
adapter runs wait for (continual_asr/sweep.py, ``schedule``). Prints, per worker count, the
sweep's wall time (its sweep_history.jsonl), its speed-up over the first worker count measured, the
sum of its runs' own wall times (results.json: without each job's process start, imports and
data loading), and the floor the waits set with unlimited workers: the longest chain of a run
and the run it waits for, from the runs' own wall times.

    PYTHONPATH=. python experiments/launcher_scaling.py --jobs 1,2                           # 2 cores
    PYTHONPATH=. python experiments/launcher_scaling.py --jobs 2,7,14 --launcher submitit-local  # 16 cores

``--launcher submitit-local`` submits every run as a job through submitit, the same path as
``--launcher slurm``, with jobs as processes of this machine: a stand-in for N machines that
shares one machine's memory bandwidth.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import click
import yaml

from continual_asr.reporting.runs import load_results
from continual_asr.sweep import invocations, load_plan, schedule

HERE = Path(__file__).resolve().parent


def one_order_sweep(sweep_file: Path, folder: Path) -> Path:
    """A copy of the sweep file with only its first task order (the stream's own order if it has
    none), its stream and seeds left to the command line."""
    spec = yaml.safe_load(sweep_file.read_text(encoding="utf-8"))
    spec.pop("orders", None)
    path = folder / f"{sweep_file.stem}-one-order.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def sweep(sweep_file: Path, out: Path, cache: Path, stream: str, preset: str, seeds: str, jobs: int,
          launcher: str, only: str | None = None) -> None:
    command = [sys.executable, "-m", "continual_asr", "sweep", str(sweep_file), "--out", str(out),
               "--stream", stream, "--preset", preset, "--seeds", seeds, "--jobs", str(jobs),
               "--launcher", launcher, "--cpus", "1", "--cache-dir", str(cache), "--set", "threads=1"]
    command += ["--only", only] if only else []
    finished = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "CASR_CACHE": str(cache)})
    if finished.returncode != 0:
        raise click.ClickException(f"{jobs} workers: casr sweep failed: {finished.stderr.strip()[-800:]}")


def run_seconds(sweep_file: Path, out: Path, stream: str, preset: str, seeds: str) -> tuple[float, float, list[str]]:
    """The runs' wall times summed, the longest wait chain, and the devices the runs used."""
    _, _, plan = load_plan(sweep_file, out, stream, preset, [int(s) for s in seeds.split(",")],
                           overrides={"threads": "1"})
    results = {id(run): load_results(run.out) for run in plan}
    seconds = {key: float(r["wall_seconds"]) for key, r in results.items()}
    chain = max(seconds[id(run)] + (seconds[id(waits)] if waits is not None else 0.0)
                for run, waits in schedule(plan))
    return sum(seconds.values()), chain, sorted({str(r["device"]) for r in results.values()})


@click.command()
@click.option("--jobs", "job_counts", default="1,2", show_default=True, help="worker counts, comma-separated")
@click.option("--launcher", default="local", show_default=True, type=click.Choice(["local", "submitit-local"]))
@click.option("--sweep-file", default=str(HERE / "paper.yaml"), show_default=True)
@click.option("--stream", default=str(HERE / "sweep-timing-stream.yaml"), show_default=True)
@click.option("--preset", default="tiny", show_default=True)
@click.option("--seeds", default="0", show_default=True)
@click.option("--all-orders", is_flag=True, help="every task order of the sweep file (default: its first)")
@click.option("--work", default=None, help="keep the runs and caches here (default: a temporary folder)")
def main(job_counts: str, launcher: str, sweep_file: str, stream: str, preset: str, seeds: str, all_orders: bool,
         work: str | None) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(work) if work else Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        sweep_path = Path(sweep_file) if all_orders else one_order_sweep(Path(sweep_file), root)
        warm = root / "cache-warm"
        first = next(iter(yaml.safe_load(sweep_path.read_text(encoding="utf-8"))["runs"]))
        click.echo(f"warm-up: data and base model into {warm} (run {first!r})", err=True)
        sweep(sweep_path, root / "warm-up", warm, stream, preset, seeds.split(",")[0], 1, "local", only=first)
        print(f"{sweep_path.name} on {Path(stream).name}, preset {preset}, seeds {seeds}, one thread a run, "
              f"launcher {launcher}")
        print("| workers | sweep wall s | speed-up | runs' own wall s summed | floor set by the waits, s | devices |")
        print("| ---: | ---: | ---: | ---: | ---: | --- |")
        first_wall = None
        for jobs in (int(n) for n in job_counts.split(",")):
            cache = root / f"cache-{jobs}"
            shutil.rmtree(cache, ignore_errors=True)
            shutil.copytree(warm, cache, ignore=shutil.ignore_patterns("adapters"))
            out = root / f"jobs-{jobs}"
            click.echo(f"{jobs} workers: {out}", err=True)
            sweep(sweep_path, out, cache, stream, preset, seeds, jobs, launcher)
            wall = invocations(out)[-1]["seconds"]
            summed, chain, devices = run_seconds(sweep_path, out, stream, preset, seeds)
            first_wall = first_wall or wall
            print(f"| {jobs} | {wall:.0f} | {first_wall / wall:.2f}x | {summed:.0f} | {chain:.0f} | {', '.join(devices)} |",
                  flush=True)


if __name__ == "__main__":
    main()
