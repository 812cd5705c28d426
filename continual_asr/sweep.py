"""Sweeps: many runs (strategy x config changes x seed) of one stream from a YAML file.

A sweep file names a stream, a preset, seeds, config fields of every run (``set``) and the runs
(name -> strategy and its own ``set``); experiments/paper.yaml is the reproduction of the A-AF
paper. Runs go to OUT/NAME/seedS and are resumable one by one (continual_asr.runner), so a
sweep is too: finished runs are read back, an unfinished one continues. ``--jobs`` runs
several at a time, each in a fresh process with its share of the cores; the adapter strategies
of a seed wait for the first of them, whose single-task adapters they then reuse
(continual_asr/training/extraction_cache.py).
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import torch

from .config import RunConfig
from .errors import CasrError, read_yaml
from .registry import StrategyInfo, get_strategy, strategy_options
from .reporting.compare import RunGroup, comparison_markdown, provenance_notes, write_comparison
from .reporting.intervals import interval_table, intervals_markdown
from .reporting.runs import REFERENCE_ROLES, load_results, reference_wers
from .results import usable_cores
from .run_state import archived_run
from .runner import run_stream, setup_logging
from .stream import load_stream
from .worker_server import end_with_sweep, worker_context

HISTORY = "sweep_history.jsonl"
if TYPE_CHECKING:
    from .launchers import ClusterOptions

Echo = Callable[[str], None]


@dataclass
class PlannedRun:
    name: str
    strategy_spec: str  # as the sweep file names it (a child process looks it up again)
    strategy: StrategyInfo
    config: RunConfig
    options: dict  # the strategy's options, validated (plain values: a worker rebuilds them)
    seed: int
    out: Path
    order: str = ""  # --task-order of the run ("" = the stream's own)

    @property
    def extracts_adapters(self) -> bool:
        return self.strategy.extracts_adapters


def overrides_for(info: StrategyInfo, overrides: dict) -> dict:
    """The fields of ``overrides`` that ``info`` reads: every general field, and its own options."""
    foreign = strategy_options() - set(info.option_names)
    return {key: value for key, value in overrides.items() if key not in foreign}


def load_plan(path: Path, out: Path, stream: str | None = None, preset: str | None = None,
              seeds: list[int] | None = None, only: list[str] | None = None,
              overrides: dict[str, str] | None = None,
              orders: list[str] | None = None) -> tuple[str, str, list[PlannedRun]]:
    """The runs of a sweep file, seed-major; command-line choices override the file's.
    The file's ``set`` and ``overrides`` (``--set``, over it) go to every run whose strategy reads
    them (a strategy's option only to the strategies that have it); ``orders`` (``--order``)
    replace the file's ``orders``."""
    spec = read_yaml(path, f"sweep file {path}")
    if not isinstance(spec, dict) or not isinstance(spec.get("runs"), dict) or not spec["runs"]:
        raise CasrError(f"{path}: a sweep file needs a 'runs' mapping of name -> {{strategy, set}}")
    stream = stream or spec.get("stream", "accents-then-noise")
    preset = preset or spec.get("preset", "default")
    seeds = seeds if seeds is not None else [int(s) for s in spec.get("seeds", [0])]
    if orders is None:
        orders = _orders(f"{path}: 'orders'", spec.get("orders"), stream)
    else:
        orders = _orders("--order", orders, stream)
    names = list(spec["runs"])
    common = spec.get("set") or {}  # config fields of every run that reads them
    if not isinstance(common, dict):
        raise CasrError(f"{path}: 'set' must be a mapping of config fields")
    if only:
        unknown = [n for n in only if n not in spec["runs"]]
        if unknown:
            raise CasrError(f"--only: no run named {', '.join(unknown)} in {path} (valid: {', '.join(names)})")
        names = [n for n in names if n in only]
    plan = []
    for seed, (order, folder) in ((s, o) for o in orders for s in seeds):
        for name in names:
            entry = spec["runs"][name] or {}
            if not isinstance(entry, dict) or "strategy" not in entry:
                raise CasrError(f"{path}: run '{name}' needs a strategy")
            info = get_strategy(str(entry["strategy"]))
            changes = {**overrides_for(info, common), **(entry.get("set") or {})}
            changes.update(overrides_for(info, overrides or {}))  # settings refuses what info does not read
            config, options = info.settings(preset, {k: (str(v).lower() if isinstance(v, bool) else str(v))
                                                     for k, v in changes.items()})
            plan.append(PlannedRun(name, str(entry["strategy"]), info, config, options.to_dict(), seed,
                                   out / name / folder / f"seed{seed}", order))
    return stream, preset, plan


def _orders(where: str, given, stream: str) -> list[tuple[str, str]]:
    """(--task-order spec, sub-folder) per task order of ``given``, a sweep file's ``orders`` or
    the command line's ``--order`` (each "3,1,2,...", a list of positions or "shuffle:SEED";
    ``where`` names them in errors); without any, the stream's own order in no sub-folder."""
    if not given:
        return [("", "")]
    if not isinstance(given, list):
        raise CasrError(f"{where} must be a list of task orders (\"3,1,2\", [3, 1, 2] or \"shuffle:SEED\")")
    spec = load_stream(stream)
    found = []
    for entry in given:
        text = ",".join(map(str, entry)) if isinstance(entry, list) else str(entry)
        order = spec.in_order(text).order
        found.append((",".join(map(str, order)), "order-" + "-".join(map(str, order))))
    if len(set(found)) != len(found):
        raise CasrError(f"{where} lists one order twice")
    return found


def job_threads(jobs: int) -> int:
    """The torch threads each job of a local sweep gets: the cores shared out (at least one) when
    ``jobs`` run at once, 0 (torch's default) when they run one at a time in this process."""
    return max(1, usable_cores() // jobs) if jobs > 1 else 0


def run_one(run: PlannedRun, stream_name: str, preset: str, cache_dir: str | None, threads: int = 0) -> str | None:
    """One run of the sweep (in this process, a worker of its pool or a cluster job); an error
    message, or None."""
    if threads:
        torch.set_num_threads(threads)
    run.out.mkdir(parents=True, exist_ok=True)
    setup_logging(run.out, quiet=True)
    try:
        info = get_strategy(run.strategy_spec)
        run_stream(load_stream(stream_name).in_order(run.order), info, run.config, run.out,
                   options=info.options(**run.options), seed=run.seed, preset=preset,
                   cache_dir=Path(cache_dir) if cache_dir else None, progress=False)
    except CasrError as exc:  # one broken run should not cost the others
        return str(exc)
    return None


def sweep_baselines(path: Path) -> list[str]:
    """The runs of a sweep file that results.md tests every other run against (``baselines:``)."""
    spec = read_yaml(path, f"sweep file {path}") or {}
    names = spec.get("baselines") or []
    if not isinstance(names, list) or not all(isinstance(n, str) and n in spec.get("runs", {}) for n in names):
        raise CasrError(f"{path}: 'baselines' must list names of its runs, got {names!r}")
    return names


def schedule(plan: list[PlannedRun], by_row: bool = False) -> list[tuple[PlannedRun, PlannedRun | None]]:
    """The runs in the order they start, each with the run it waits for: the adapter
    strategies of one seed share their single-task adapters (the extraction cache), in every
    task order, so the first of them runs first and the others start once it has trained them.

    The others follow the plan (seed by seed: a sweep run one at a time finishes a seed's whole
    table first) or, with ``by_row``, row by row: every seed and order of the file's first run,
    then of its second, and so on. Over several workers that starts the rows the file lists first
    first, and a sweep whose long rows come first (experiments/paper.yaml's whole-model baselines)
    does not end with one of them started late while the other workers idle (paper.yaml's runs'
    own times replayed: 23 % sooner on 8 workers; experiments/sweep_schedule.py)."""
    order, extractor = [], {}
    for run in plan:
        if run.extracts_adapters and run.seed not in extractor:
            extractor[run.seed] = run
            order.append((run, None))
    rest = [run for run in plan if run is not extractor.get(run.seed)]
    if by_row:
        rows = {name: row for row, name in enumerate(dict.fromkeys(run.name for run in plan))}
        rest.sort(key=lambda run: rows[run.name])  # stable: seeds and orders keep the plan's order
    order += [(run, extractor.get(run.seed) if run.extracts_adapters else None) for run in rest]
    return order


def take_ready(order: list[tuple[PlannedRun, PlannedRun | None]], ended: set[int]) -> PlannedRun | None:
    """Remove from ``order`` (see ``schedule``) and return the first run whose wait is over (the
    ``id`` of what it waits for is in ``ended``); None if every run left still waits."""
    ready = next((entry for entry in order if entry[1] is None or id(entry[1]) in ended), None)
    if ready is None:
        return None
    order.remove(ready)
    return ready[0]


def run_all(plan: list[PlannedRun], stream_name: str, preset: str, cache_dir: str | None, jobs: int,
            echo: Echo = print, log: InvocationLog | None = None, cluster: ClusterOptions | None = None,
            cluster_folder: Path | None = None) -> list[str]:
    """Every run of ``plan``, ``jobs`` at a time (each in a fresh process with its share of the
    cores, a finished one read back in this process; or with ``cluster`` each as a cluster job
    asking for ``cluster.cpus`` cores, its job files in ``cluster_folder``); the names of those
    that failed. ``log`` hears of each run as it ends."""
    failed: list[str] = []

    def ended_with(run: PlannedRun, error: BaseException | str | None) -> None:
        if log is not None:
            log.run_ended(run, error)
        if error:
            echo(f"{run.name}, seed {run.seed}: error: {error}")
            failed.append(f"{run.name}/seed{run.seed}")

    order = schedule(plan, by_row=jobs > 1)
    if cluster is not None:
        from .launchers import RunJob, make_executor, run_on_cluster

        executor = make_executor(cluster_folder or Path("submitit"), cluster)
        run_on_cluster(order, executor, cluster, jobs, lambda run: RunJob(run, stream_name, preset, cache_dir, cluster.cpus),
                       echo, ended_with, len(plan))
        return failed
    if jobs <= 1:
        for number, (run, _) in enumerate(order, start=1):
            echo(f"[{number}/{len(order)}] {run.name}, seed {run.seed}: {run.out}")
            ended_with(run, run_one(run, stream_name, preset, cache_dir))
        return failed
    threads = job_threads(jobs)
    ended: set[int] = set()
    started = 0
    with ProcessPoolExecutor(jobs, mp_context=worker_context(), max_tasks_per_child=1,
                             initializer=end_with_sweep, initargs=(os.getpid(),)) as pool:
        running = {}
        while order or running:
            while len(running) < jobs and (run := take_ready(order, ended)) is not None:
                started += 1
                echo(f"[{started}/{len(plan)}] {run.name}, seed {run.seed}: {run.out}")
                if archived_run(run.out) is not None:  # finished: read back here, not in a new process
                    ended.add(id(run))
                    ended_with(run, run_one(run, stream_name, preset, cache_dir))
                    continue
                running[pool.submit(run_one, run, stream_name, preset, cache_dir, threads)] = run
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                run = running.pop(future)
                ended.add(id(run))
                ended_with(run, future.exception() or future.result())
    return failed


def finished_groups(plan: list[PlannedRun]) -> dict[str, RunGroup]:
    """The finished runs by name. Where the sweep has finished adapter-oracle and joint runs of
    the same seed and task order, they are every run's single-task and joint references
    (forward transfer, intransigence)."""
    finished = {}
    for run in plan:
        try:
            results = load_results(run.out)
        except CasrError:
            continue
        if results.get("complete"):
            finished[id(run)] = results
    groups: dict[str, RunGroup] = {}
    for run in plan:
        if id(run) not in finished:
            continue
        results = finished[id(run)]
        references = [r.out for r in plan if id(r) in finished and r.seed == run.seed and r.order == run.order
                      and finished[id(r)]["strategy"] in REFERENCE_ROLES]
        if references:
            results = {**results, "references": reference_wers(references, results)}
        groups.setdefault(run.name, RunGroup(run.name)).add(results, run.out)
    return groups


class InvocationLog:
    """OUT/sweep_history.jsonl: a line when an invocation of the sweep starts, one as each of its
    runs ends and one when it ends, so an invocation that is killed part way (the end of a batch
    job, a closed laptop) still tells how long it ran, up to the last run it finished."""

    def __init__(self, out: Path, jobs: int, runs: int, launcher: str = "local") -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / HISTORY
        self.started = time.time()
        self.began = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self.started))
        self.jobs, self.runs, self.launcher = jobs, runs, launcher
        if self.path.is_file() and not self.path.read_bytes().endswith(b"\n"):
            with open(self.path, "a", encoding="utf-8") as history:  # end a line a kill tore
                history.write("\n")
        self._write({"jobs": jobs, "runs": runs, "launcher": launcher})

    def _write(self, entry: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as history:  # one short line: appends are atomic
            history.write(json.dumps({"began": self.began, **entry}) + "\n")

    def run_ended(self, run: PlannedRun, error: BaseException | str | None) -> None:
        self._write({"run": f"{run.name}/seed{run.seed}", "ok": not error,
                     "at_seconds": round(time.time() - self.started, 1)})

    def finish(self, failed: list[str]) -> None:
        self._write({"wall_seconds": round(time.time() - self.started, 1), "jobs": self.jobs,
                     "runs": self.runs, "failed": failed})


def invocations(out: Path) -> list[dict]:
    """The sweep's invocations, oldest first: ``jobs``, ``seconds`` and ``ended`` (False for one
    that stopped before its end: ``seconds`` then runs to the last run it finished)."""
    history = out / HISTORY
    if not history.is_file():
        return []
    found: dict[str, dict] = {}
    for line in history.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:  # a line torn by a kill: the others still count
            continue
        if not isinstance(entry, dict) or "began" not in entry:
            continue
        invocation = found.setdefault(entry["began"], {"jobs": entry.get("jobs", 1), "seconds": 0.0, "ended": False,
                                                       "launcher": entry.get("launcher", "local")})
        if "wall_seconds" in entry:
            invocation.update(seconds=entry["wall_seconds"], ended=True)
        elif not invocation["ended"]:
            invocation["seconds"] = max(invocation["seconds"], entry.get("at_seconds", 0.0))
    return list(found.values())


def _grouped(runs: list[dict]) -> list[list[dict]]:
    """The invocations by how they ran (launcher and --jobs), in order of first appearance."""
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        groups.setdefault((run["launcher"], run["jobs"]), []).append(run)
    return list(groups.values())


def duration(seconds: float) -> str:
    """'3.50 h' from an hour on, '38 min' or '37 s' below it (a tiny sweep is not '0.00 h')."""
    if seconds >= 3600:
        return f"{seconds / 3600:.2f} h"
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _invocations_alike(runs: list[dict]) -> str:
    """'2.58 h with --jobs 2' or '6.10 h over 9 invocations with --jobs 1, 7 of them stopped
    before their end (counted to their last finished run)'."""
    how = ("" if runs[0]["launcher"] == "local" else f"--launcher {runs[0]['launcher']}, ") + f"--jobs {runs[0]['jobs']}"
    took = duration(sum(i["seconds"] for i in runs))
    stopped = sum(not i["ended"] for i in runs)
    if len(runs) == 1:
        return f"{took} with {how}" + (" (stopped before its end; counted to its last finished run)" * stopped)
    return (f"{took} over {len(runs)} invocations with {how}"
            + (f", {stopped} of them stopped before their end (counted to their last finished run)" if stopped else ""))


def time_taken(out: Path, groups: dict[str, RunGroup]) -> str:
    """A sentence on the time the finished runs and the sweep's invocations took."""
    spent = sum(r["wall_seconds"] for g in groups.values() for r in g.runs)
    reused = sum(m["summary"]["cost"]["reused_training_seconds"] for g in groups.values() for m in g.metrics)
    text = (f"Their wall times add up to {duration(spent)}: base pretraining counts where a run did it; single-task "
            f"adapters a run reused from another run of the sweep count once, in the run that trained them "
            f"(reusing saved {duration(reused)}).")
    runs = invocations(out)
    if runs:
        total = sum(i["seconds"] for i in runs)
        text += (f" The sweep ran in {len(runs)} invocation{'s' * (len(runs) > 1)}, "
                 f"{'' if all(i['ended'] for i in runs) else 'at least '}{duration(total)} of wall clock: "
                 + ", ".join(_invocations_alike(alike) for alike in _grouped(runs)) + ".")
    return text


def write_report(out: Path, plan: list[PlannedRun], title: str,
                 extra: Callable[[dict[str, RunGroup]], list[str]] | None = None,
                 baselines: Sequence[str] = ()) -> str:
    """OUT/results.md (the table of the finished runs, mean ± std over seeds, how long they took,
    every run's differences from each of ``baselines`` that finished, with bootstrap intervals,
    and ``extra``'s lines), OUT/compare.csv and OUT/compare.png; returns the markdown."""
    groups = finished_groups(plan)
    if not groups:
        raise CasrError(f"{out}: no finished run yet")
    finished = sum(len(g.runs) for g in groups.values())
    lines = [f"# {title}", "",
             f"{finished} of {len(plan)} runs finished; mean ± std over seeds. {time_taken(out, groups)}", "",
             comparison_markdown(list(groups.values())), ""]
    for note in provenance_notes(list(groups.values())):
        lines += [note, ""]
    for name in baselines:
        if name in groups:
            lines += [f"## Against {name}", "", intervals_markdown(interval_table(list(groups.values()), name)), ""]
    if extra is not None:
        lines += [*extra(groups), ""]
    write_comparison(list(groups.values()), out)
    text = "\n".join(lines)
    (out / "results.md").write_text(text, encoding="utf-8")
    return text
