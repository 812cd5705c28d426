"""experiments/fusion_attention.py: attention per test set and slot, averaged over layers and runs."""

from click.testing import CliRunner
from fake_results import fake_results, write_run
from experiment_scripts import load_experiment

fusion_attention = load_experiment("fusion_attention")


def _fusion(seed: int, t1_on_own: float) -> dict:
    run = fake_results([10, 50, 60, 40], [[12, 24, 55, 38], [13, 27, 33, 37]], seed=seed)
    slots = ["t1", "t2", "no adapter"]
    # two layers; t1's own share differs between the layers and between the seeds
    run["steps"][-1]["attention"] = {"slots": slots, "test_sets": {
        "base": [[0.3, 0.3, 0.4], [0.3, 0.3, 0.4]],
        "t1": [[t1_on_own, 0.8 - t1_on_own, 0.2], [t1_on_own - 0.2, 1.0 - t1_on_own, 0.2]],
        "t2": [[0.1, 0.8, 0.1], [0.1, 0.8, 0.1]]}}
    return run


def test_the_table_averages_layers_and_seeds_and_marks_each_test_sets_own_adapter(tmp_path):
    runs = [str(write_run(tmp_path / f"s{seed}", _fusion(seed, own))) for seed, own in ((0, 0.6), (1, 0.8))]
    oracle = str(write_run(tmp_path / "o", fake_results([10, 50, 60, 40], [[10, 20, 60, 40], [10, 20, 30, 40]],
                                                         strategy="adapter-oracle")))
    table = fusion_attention.attention_tables([*runs, oracle])
    cells = {line.split("|")[1].strip(): [c.strip() for c in line.strip().strip("|").split("|")[1:]]
             for line in table.splitlines() if line.startswith("| ") and "test set" not in line}
    # t1: layers (0.6 + 0.4) / 2 = 0.5 on seed 0, (0.8 + 0.6) / 2 = 0.7 on seed 1 -> 0.60
    assert cells["t1"] == ["0.60*", "0.20", "0.20"]
    assert cells["t2"] == ["0.10", "0.80*", "0.10"] and cells["base"] == ["0.30", "0.30", "0.40"]
    assert "(2 run(s), after the last step" in table
    assert table.rstrip().endswith("No attention recorded (they do not attend): adapter-oracle")


def test_mistakes_are_one_line(tmp_path):
    oracle = str(write_run(tmp_path / "o", fake_results([10, 50, 60, 40], [[10, 20, 60, 40], [10, 20, 30, 40]],
                                                         strategy="adapter-oracle")))
    fusion = str(write_run(tmp_path / "f", _fusion(0, 0.6)))
    for args, message in [([oracle], "none of these runs records attention"),
                          ([fusion, "--step", "5"], "--step 5: the run has steps 0 to 1")]:
        result = CliRunner().invoke(fusion_attention.main, args)
        assert result.exit_code == 2 and message in result.output and result.output.count("\n") == 1, result.output
