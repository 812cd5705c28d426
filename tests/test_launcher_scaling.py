"""experiments/launcher_scaling.py: the one-order copy of a sweep file and the floor its waits set."""

import yaml
from experiment_scripts import ROOT, load_experiment
from fake_results import fake_results, write_run

scaling = load_experiment("launcher_scaling")

SWEEP = """
stream: tiny
preset: tiny
seeds: [0]
orders: ["2,1", "1,2"]
runs:
  finetune: {strategy: finetune}
  oracle: {strategy: adapter-oracle}
  avg: {strategy: adapter-avg}
"""


def test_the_one_order_copy_keeps_the_runs_and_drops_the_orders(tmp_path):
    source = tmp_path / "sweep.yaml"
    source.write_text(SWEEP)
    copy = yaml.safe_load(scaling.one_order_sweep(source, tmp_path).read_text())
    assert "orders" not in copy and list(copy["runs"]) == ["finetune", "oracle", "avg"]
    assert copy["stream"] == "tiny"
    paper = yaml.safe_load(scaling.one_order_sweep(ROOT / "experiments" / "paper.yaml", tmp_path).read_text())
    assert len(paper["runs"]) == 14 and "orders" not in paper


def test_the_floor_is_the_longest_chain_of_a_run_and_the_run_it_waits_for(tmp_path):
    source = tmp_path / "sweep.yaml"
    source.write_text(SWEEP)
    sweep = scaling.one_order_sweep(source, tmp_path)
    out = tmp_path / "out"

    def finished(name, wall):
        write_run(out / name / "seed0", {**fake_results([10.0] * 4, [[10.0] * 4] * 2), "wall_seconds": wall})

    for name, wall in {"finetune": 12.0, "oracle": 10.0, "avg": 5.0}.items():  # avg waits for oracle's adapters
        finished(name, wall)
    summed, floor, devices = scaling.run_seconds(sweep, out, "tiny", "tiny", "0")
    assert (summed, floor, devices) == (27.0, 15.0, ["cpu"])
    finished("finetune", 16.0)  # a whole-model run longer than the chain is the floor
    assert scaling.run_seconds(sweep, out, "tiny", "tiny", "0")[1] == 16.0
