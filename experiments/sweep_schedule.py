"""How long a sweep takes on N workers in each start order, replayed from a finished sweep's own run times.

    PYTHONPATH=. python experiments/sweep_schedule.py          # paper.yaml, its archived AVX2 main-row runs
    PYTHONPATH=. python experiments/sweep_schedule.py --runs OUT --sweep-file FILE --workers 2,4,8

A sweep starts its runs through ``continual_asr.sweep.schedule`` and ``take_ready``; this script
runs those very functions against a clock instead of workers: whenever a worker is free it starts
the next run that is ready, which then takes the time the same run took in ``--runs`` (its
results.json's ``wall_seconds``). It does so for the two orders casr has, seed by seed (one
worker) and row by row (several), for every worker count, and prints the lower bound no order
passes: the whole work shared out evenly, or the longest run or chain of runs (a seed's first
adapter run and a run that waits for it), whichever is more.

The plan is the sweep file's runs that ``--runs`` holds (the rows and seeds it finished). A
seed's adapter runs share their single-task adapters: in the replay the seed's first adapter run
trains them (it takes its own composition time plus the seed's extraction time) and the others
wait for it and take their composition time. Both come from the archive: the extraction time is
the largest ``reused_training_seconds`` a run of that seed and task order reports, and a run
that trained some adapters itself has that part taken off its own time. No process starts,
queueing or machines of different speeds: a replay of the runs' own times, not a measurement
of a cluster.
"""

from __future__ import annotations

import heapq
import statistics
from pathlib import Path

import click

from continual_asr.reporting.runs import load_results
from continual_asr.sweep import PlannedRun, load_plan, schedule, take_ready

HERE = Path(__file__).resolve().parent


class ArchivedTimes:
    """Each run's seconds in the archive, split into composition and the seed's extraction."""

    def __init__(self, archive: Path) -> None:
        self.results = {}
        for path in archive.glob("**/results.json"):
            results = load_results(path.parent)  # a broken file: one line naming it
            if results.get("complete"):
                self.results[path.parent.resolve()] = results
        self.extraction: dict[tuple[int, str], float] = {}  # (seed, task order folder) -> seconds
        for folder, results in self.results.items():
            key = (results["seed"], _order_folder(folder))
            reused = results["summary"]["cost"]["reused_training_seconds"]
            self.extraction[key] = max(self.extraction.get(key, 0.0), reused)

    def has(self, run: PlannedRun) -> bool:
        return run.out.resolve() in self.results

    def extraction_seconds(self, seed: int) -> float:
        """The seed's single-task adapters' training time (the mean over its task orders)."""
        return statistics.mean(v for (s, _), v in self.extraction.items() if s == seed)

    def own_seconds(self, run: PlannedRun) -> float:
        """The run's time without any adapter training (what a run that reuses them takes)."""
        results = self.results[run.out.resolve()]
        if not run.extracts_adapters:
            return results["wall_seconds"]
        cost = results["summary"]["cost"]
        trained = max(0.0, self.extraction[(run.seed, _order_folder(run.out))] - cost["reused_training_seconds"])
        return max(cost["eval_seconds"], results["wall_seconds"] - trained)


def _order_folder(run_folder: Path) -> str:
    """OUT/NAME/order-.../seedS's task order folder; "" for OUT/NAME/seedS (the stream's own order)."""
    parent = run_folder.resolve().parent.name
    return parent if parent.startswith("order-") else ""


def replay(order: list[tuple[PlannedRun, PlannedRun | None]], workers: int, times: ArchivedTimes) -> float:
    """Seconds until the last run of ``order`` ends with ``workers`` running at once."""
    order = list(order)
    extractors = {id(run) for run, waits in order if run.extracts_adapters and waits is None}
    ended: set[int] = set()
    running: list[tuple[float, int, PlannedRun]] = []
    now = 0.0
    while order or running:
        while len(running) < workers and (run := take_ready(order, ended)) is not None:
            seconds = times.own_seconds(run) + (times.extraction_seconds(run.seed) if id(run) in extractors else 0.0)
            heapq.heappush(running, (now + seconds, id(run), run))
        now, ended_id, _ = heapq.heappop(running)
        ended.add(ended_id)
    return now


@click.command()
@click.option("--runs", "archive", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=HERE / "results" / "paper-avx2-main-rows", show_default=True,
              help="a finished (or archived) sweep's folder: its runs' times")
@click.option("--sweep-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=HERE / "paper.yaml", show_default=True, help="the sweep file those runs came from")
@click.option("--workers", default="1,2,4,8,16,32", show_default=True, help="worker counts to replay")
def main(archive: Path, sweep_file: Path, workers: str) -> None:
    times = ArchivedTimes(archive)
    seeds = sorted({r["seed"] for r in times.results.values()})
    _, _, plan = load_plan(sweep_file, archive, seeds=seeds)
    plan = [run for run in plan if times.has(run)]  # the rows, seeds and orders the archive finished
    if not plan:
        raise click.ClickException(f"{archive} holds no finished run of {sweep_file}")
    extractors = {run.seed for run in plan if run.extracts_adapters}
    total = sum(times.own_seconds(run) for run in plan) + sum(times.extraction_seconds(s) for s in extractors)
    longest = max(times.own_seconds(run) for run in plan)
    for run, waits in schedule(plan):  # a seed's adapter runs after its first: a chain no worker count shortens
        if waits is not None:
            longest = max(longest, times.extraction_seconds(run.seed) + times.own_seconds(waits) + times.own_seconds(run))
    click.echo(f"{len(plan)} runs of {sweep_file.name} timed in {archive} (seeds {', '.join(map(str, seeds))}): "
               f"{total / 3600:.2f} h of run time, the longest run or chain of runs {longest / 3600:.2f} h")
    click.echo("| workers | seed by seed | row by row | shorter by | lower bound |")
    click.echo("| ---: | ---: | ---: | ---: | ---: |")
    for count in (int(w) for w in workers.split(",")):
        by_seed = replay(schedule(plan), count, times)
        by_row = replay(schedule(plan, by_row=True), count, times)
        bound = max(total / count, longest)
        click.echo(f"| {count} | {by_seed / 3600:.2f} h | {by_row / 3600:.2f} h | {round(1 - by_row / by_seed, 3) + 0.0:.0%} | "
                   f"{bound / 3600:.2f} h |")


if __name__ == "__main__":
    main()
