"""The reproduction sweep (experiments/reproduce.py): its plan, its schedule, a tiny sweep with two jobs."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner

from continual_asr import sweep
from continual_asr.cli import main
from continual_asr.errors import CasrError
from experiment_scripts import load_experiment

reproduce = load_experiment("reproduce")

SWEEP = """
stream: tiny
preset: tiny
seeds: [0, 1]
set: {pretrain_seed: 0}
runs:
  finetune: {strategy: finetune}
  avg: {strategy: adapter-avg}
  oracle: {strategy: adapter-oracle, set: {adapter_epochs: 2}}
"""


def test_the_plan_applies_common_fields_and_the_schedule_runs_one_extractor_first_per_seed(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP)
    stream, preset, plan = sweep.load_plan(path, tmp_path / "out", None, None, None, None)
    assert (stream, preset) == ("tiny", "tiny")
    assert [(r.name, r.seed) for r in plan] == [(n, s) for s in (0, 1) for n in ("finetune", "avg", "oracle")]
    assert all(r.config.pretrain_seed == 0 for r in plan)
    assert plan[2].options["adapter_epochs"] == 2 and plan[1].options["adapter_epochs"] != 2
    order = [(run.name, run.seed, waits.name if waits else None) for run, waits in sweep.schedule(plan)]
    assert order == [("avg", 0, None), ("avg", 1, None), ("finetune", 0, None), ("oracle", 0, "avg"),
                     ("finetune", 1, None), ("oracle", 1, "avg")]
    # several workers: row by row after the extractors, so the rows listed first start first
    by_row = [(run.name, run.seed, waits.name if waits else None) for run, waits in sweep.schedule(plan, by_row=True)]
    assert by_row == [("avg", 0, None), ("avg", 1, None), ("finetune", 0, None), ("finetune", 1, None),
                      ("oracle", 0, "avg"), ("oracle", 1, "avg")]
    _, _, with_set = sweep.load_plan(path, tmp_path / "out", seeds=[0], overrides={"fusion_epochs": "2",
                                                                                  "adapter_dim": "4"})
    # finetune reads neither field, oracle no fusion_epochs: their options do not have them
    assert [(r.options.get("adapter_dim"), r.options.get("fusion_epochs")) for r in with_set] == \
        [(None, None), (4, 2), (4, None)]
    _, _, with_set = sweep.load_plan(path, tmp_path / "out", seeds=[0], overrides={"finetune_epochs": "2"})
    assert [r.options.get("finetune_epochs") for r in with_set][0] == 2 != with_set[1].options.get("finetune_epochs")
    with pytest.raises(CasrError, match="no run named lwf"):
        sweep.load_plan(path, tmp_path / "out", None, None, None, ["lwf"])
    # the file's own set: a strategy's option goes to the runs that read it, like --set
    path.write_text(SWEEP.replace("set: {pretrain_seed: 0}", "set: {pretrain_seed: 0, adapter_dim: 4}"))
    _, _, from_file = sweep.load_plan(path, tmp_path / "out", seeds=[0])
    assert [r.options.get("adapter_dim") for r in from_file] == [None, 4, 4]


def test_a_sweep_file_may_list_task_orders_each_run_in_its_own_folder(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP + "orders: ['1,2', [2, 1]]\n")
    _, _, plan = sweep.load_plan(path, tmp_path / "out", seeds=[0])
    assert [(r.name, r.order, r.out.relative_to(tmp_path / "out").as_posix()) for r in plan] == [
        (n, o, f"{n}/order-{o.replace(',', '-')}/seed0") for o in ("1,2", "2,1") for n in ("finetune", "avg", "oracle")]
    waits = {(run.name, run.order): w.order if w else None for run, w in sweep.schedule(plan)}
    assert waits[("oracle", "2,1")] == waits[("avg", "2,1")] == "1,2"  # one seed's adapters serve every order
    path.write_text(SWEEP + "orders: ['1,2', '1,2']\n")
    with pytest.raises(CasrError, match="lists one order twice"):
        sweep.load_plan(path, tmp_path / "out", seeds=[0])
    path.write_text(SWEEP + "orders: ['1,3']\n")
    with pytest.raises(CasrError, match="--task-order 1,3: the stream has 2 tasks"):
        sweep.load_plan(path, tmp_path / "out", seeds=[0])


def test_order_on_the_command_line_replaces_the_files_orders(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP + "orders: ['1,2', '2,1']\n")
    _, _, plan = sweep.load_plan(path, tmp_path / "out", seeds=[0], only=["avg"], orders=["2,1"])
    assert [(r.order, r.out.relative_to(tmp_path / "out").as_posix()) for r in plan] == [("2,1", "avg/order-2-1/seed0")]
    path.write_text(SWEEP)  # a file without orders: the given one still gets its sub-folder
    _, _, plan = sweep.load_plan(path, tmp_path / "out", seeds=[0], only=["avg"], orders=["1,2"])
    assert [r.out.relative_to(tmp_path / "out").as_posix() for r in plan] == ["avg/order-1-2/seed0"]
    with pytest.raises(CasrError, match="^--order lists one order twice"):
        sweep.load_plan(path, tmp_path / "out", seeds=[0], orders=["1,2", "1,2"])
    result = CliRunner().invoke(main, ["sweep", str(path), "--out", str(tmp_path / "out"), "--order", "1,3",
                                       "--report-only"])
    assert result.exit_code != 0 and "--task-order 1,3: the stream has 2 tasks" in result.output


def test_a_misnamed_baseline_stops_the_sweep_before_its_first_run(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP + "baselines: [fine-tune]\n")
    result = CliRunner().invoke(main, ["sweep", str(path), "--out", str(tmp_path / "out"),
                                       "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code != 0 and "'baselines' must list names of its runs" in result.output
    assert not (tmp_path / "out" / "finetune").exists()


def test_a_two_job_sweep_shares_adapters_and_reports(tmp_path, tiny_cache, monkeypatch):
    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP.replace("seeds: [0, 1]", "seeds: [0]").replace(", set: {adapter_epochs: 2}", "")
                    + "baselines: [avg]\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(reproduce.main, [str(path), "--out", str(out), "--jobs", "2",
                                                 "--cache-dir", str(tiny_cache), "--only", "avg,oracle"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    steps = {name: json.loads((out / name / "seed0" / "results.json").read_text())["steps"]
             for name in ("avg", "oracle")}
    assert [s["adapter"] for s in steps["avg"]] == ["trained", "trained"]
    assert [s["adapter"] for s in steps["oracle"]] == ["reused", "reused"]
    report = (out / "results.md").read_text()
    assert "2 of 2 runs finished" in report and "--jobs 2" in report
    assert "| FWT" in report  # the sweep's oracle run is the single-task reference of the avg run
    against = report.split("## Against avg")[1]
    assert "paired bootstrap interval" in against and "| oracle" in against
    history = [json.loads(line) for line in (out / "sweep_history.jsonl").read_text().splitlines()]
    assert [entry.get("run") for entry in history[1:3]] == ["avg/seed0", "oracle/seed0"]
    assert history[-1]["failed"] == [] and history[-1]["wall_seconds"] >= history[2]["at_seconds"]
    assert "6. casr's default, not the paper's method" in report  # casr's own question, "not run" in this sweep
    assert "against learning without forgetting (the strongest" in report  # claim 1's third baseline

    # Archived without checkpoints, the sweep reads its runs back as finished and trains nothing.
    kept = tmp_path / "kept"
    assert CliRunner().invoke(main, ["archive", str(out), str(kept)]).exit_code == 0
    submitted = []
    real_submit = sweep.ProcessPoolExecutor.submit
    monkeypatch.setattr(sweep.ProcessPoolExecutor, "submit",
                        lambda pool, fn, *args: submitted.append(args[0].name) or real_submit(pool, fn, *args))
    again = CliRunner().invoke(reproduce.main, [str(path), "--out", str(kept), "--jobs", "2",
                                                "--cache-dir", str(tiny_cache), "--only", "avg,oracle"])
    assert again.exit_code == 0, again.output + repr(again.exception)
    assert not list(kept.rglob("checkpoint.pt"))
    assert submitted == []  # read back by the sweep itself: no worker process starts for a finished run
    for name in ("avg", "oracle"):
        assert "already holds the finished run" in (kept / name / "seed0" / "run.log").read_text()
        assert json.loads((kept / name / "seed0" / "results.json").read_text())["steps"] == steps[name]
    assert "2 of 2 runs finished" in (kept / "results.md").read_text()

    # A run made apart and copied in is read back only if it is the run the sweep would make.
    copied = json.loads((kept / "avg" / "seed0" / "results.json").read_text())
    copied["config"]["adapter_lr"] = 0.5
    (kept / "avg" / "seed0" / "results.json").write_text(json.dumps(copied))
    other = CliRunner().invoke(reproduce.main, [str(path), "--out", str(kept), "--jobs", "2",
                                                "--cache-dir", str(tiny_cache), "--only", "avg"])
    assert other.exit_code != 0 and "holds a run with a different config (adapter_lr 0.5 there" in other.output


def test_workers_end_when_their_sweep_is_killed(tmp_path):
    """A sweep ended by SIGTERM (a scheduler, ``kill``) takes its running workers with it: a run
    left going would keep writing into a folder the next sweep resumes."""
    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP.replace("seeds: [0, 1]", "seeds: [0]"))
    parent = subprocess.Popen([sys.executable, "-m", "continual_asr", "sweep", str(path), "--jobs", "2",
                               "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        workers = []
        for _ in range(600):  # forked by the sweep's forkserver: its children (the server's children)
            servers = [p for p in psutil.Process(parent.pid).children() if "forkserver" in " ".join(p.cmdline())]
            workers = [w for server in servers for w in server.children()]
            if len(workers) == 2:
                break
            time.sleep(0.1)
        assert len(workers) == 2
        parent.send_signal(signal.SIGTERM)
        parent.wait(timeout=30)
        _, alive = psutil.wait_procs(workers, timeout=30)
        assert alive == []
    finally:
        parent.kill()
        for child in psutil.Process().children(recursive=True):
            child.kill()


def test_a_killed_invocation_counts_up_to_its_last_finished_run(tmp_path, monkeypatch):
    from continual_asr import sweep

    clock = iter([1000.0, 1600.0, 5000.0, 5030.0])  # start, a run ends, (killed); start, end
    monkeypatch.setattr(sweep.time, "time", lambda: next(clock))
    killed = sweep.InvocationLog(tmp_path, jobs=2, runs=3)
    killed.run_ended(type("Run", (), {"name": "avg", "seed": 0})(), None)
    with open(tmp_path / "sweep_history.jsonl", "a") as history:
        history.write('{"began": "torn')  # the kill tore the line it was writing
    sweep.InvocationLog(tmp_path, jobs=1, runs=3).finish([])
    lines = (tmp_path / "sweep_history.jsonl").read_text().splitlines()
    assert lines[2] == '{"began": "torn' and json.loads(lines[3])["jobs"] == 1  # the next line is whole
    assert sweep.invocations(tmp_path) == [{"jobs": 2, "seconds": 600.0, "ended": False, "launcher": "local"},
                                           {"jobs": 1, "seconds": 30.0, "ended": True, "launcher": "local"}]


def test_the_report_sums_invocations_that_ran_alike(tmp_path):
    from continual_asr import sweep

    history = [{"began": "a", "jobs": 1, "wall_seconds": 3600.0}, {"began": "b", "jobs": 2, "at_seconds": 1800.0},
               {"began": "c", "jobs": 1, "at_seconds": 7200.0}]
    (tmp_path / "sweep_history.jsonl").write_text("".join(json.dumps(line) + "\n" for line in history))
    assert sweep.time_taken(tmp_path, {}).endswith(
        "The sweep ran in 3 invocations, at least 3.50 h of wall clock: 3.00 h over 2 invocations with --jobs 1, "
        "1 of them stopped before their end (counted to their last finished run), 30 min with --jobs 2 (stopped "
        "before its end; counted to its last finished run).")


def test_durations_read_in_the_unit_that_suits_them():
    from continual_asr.sweep import duration

    assert [duration(s) for s in (37.4, 60.0, 2280.0, 3600.0, 12600.0)] == ["37 s", "1 min", "38 min", "1.00 h", "3.50 h"]


def test_casr_sweep_reports_bad_input_in_one_line(tmp_path):
    from continual_asr.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("runs: {a: {strategy: nope}}")
    broken = tmp_path / "broken.yaml"
    broken.write_text("runs:\n  a: [\n")
    for args, message in [([str(tmp_path / "missing.yaml")], "missing.yaml: cannot read it"),
                          ([str(broken)], "broken.yaml: not valid YAML at line 3"),
                          ([str(bad)], "unknown strategy 'nope'"),
                          ([str(bad), "--seeds", "x"], "--seeds must be integers")]:
        result = CliRunner().invoke(main, ["sweep", *args, "--out", str(tmp_path / "out")])
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1


def test_a_claims_relative_figure_averages_the_seeds_and_orders_its_interval_compares():
    from continual_asr.reporting.compare import RunGroup

    def group(label: str, wers: dict) -> RunGroup:
        keys = list(wers)
        return RunGroup(label, runs=[{"seed": s, "task_order": list(o)} for s, o in keys],
                        metrics=[{"summary": {"final_mean_wer": w}} for w in wers.values()])

    # the system ran seeds 0 and 1 in both orders; the baseline only seed 0 in one order
    system = group("a", {(0, (1, 2)): 40.0, (0, (2, 1)): 60.0, (1, (1, 2)): 80.0, (1, (2, 1)): 90.0})
    baseline = group("b", {(0, (1, 2)): 50.0})
    assert reproduce.relative({"a": system, "b": baseline}, "a", "b") == "40.0 vs 50.0 (-20.0 %)"
    assert reproduce.relative({"a": system}, "a", "b") == "not run"


def test_a_claims_verdict_says_which_way_a_significant_difference_goes():
    import numpy as np

    from continual_asr.reporting.compare import RunGroup

    def group(label: str, errors_per_utterance: int) -> RunGroup:  # 50 utterances of 10 words, one seed
        edits = np.zeros((50, 4), dtype=np.int64)
        edits[:, 0], edits[:, 1] = 10, errors_per_utterance
        return RunGroup(label, runs=[{"seed": 0, "task_order": ["a"]}], metrics=[{}], edits=[{"a": edits}])

    groups = {"low": group("low", 2), "high": group("high", 5), "high too": group("high too", 5)}
    assert reproduce.compared(groups, "low", "high", ["a"], "on par").endswith("**does not hold (better)**")
    assert reproduce.compared(groups, "high", "low", ["a"], "on par").endswith("**does not hold (worse)**")
    assert reproduce.compared(groups, "high", "high too", ["a"], "on par").endswith(
        "**holds (no significant difference)**")
    assert reproduce.compared(groups, "low", "high", ["a"], "better").endswith("**holds**")
    assert reproduce.compared(groups, "low", "high", ["a"], "worse").endswith("**does not hold**")


def test_the_archived_sweeps_train_their_adapters_as_their_archives_did(tmp_path):
    """The README's tables (paper.yaml, paper-hat.yaml) and the recipe study were run with 10
    adapter epochs; the default is 7 since 2026-12-07. Each file keeps 10, so that its archived
    runs read back as finished and a rerun reproduces them, and oracle routing, their reference,
    keeps its full-strength adapters."""
    root = Path(__file__).resolve().parents[1] / "experiments"
    for name in ("paper", "paper-hat", "recipe"):
        _, _, plan = sweep.load_plan(root / f"{name}.yaml", tmp_path / name, seeds=[0])
        epochs = {run.options["adapter_epochs"] for run in plan if "adapter_epochs" in run.options}
        assert epochs == {10}, name
