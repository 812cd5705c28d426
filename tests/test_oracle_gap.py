"""experiments/oracle_gap.py: the final gap to oracle routing splits exactly into its parts."""

import pytest
from fake_results import fake_results, write_run
from experiment_scripts import load_experiment

oracle_gap = load_experiment("oracle_gap")


def test_the_parts_add_up_to_the_gap_and_name_where_it_comes_from(tmp_path):
    # columns: base, t1, t2, zero-shot. The oracle keeps each task at its diagonal.
    oracle = fake_results([10, 50, 60, 40], [[10, 20, 60, 40], [10, 20, 30, 40]], strategy="adapter-oracle")
    fusion = fake_results([10, 50, 60, 40], [[13, 24, 55, 38], [14, 27, 33, 37]], strategy="adapter-fusion")
    parts = oracle_gap.decompose(fusion, oracle)
    gap, diagonal, forgotten, base = (parts[name] for name in oracle_gap.PARTS)
    assert diagonal == pytest.approx(((24 - 20) + (33 - 30)) / 3)  # right after composing each task
    assert forgotten == pytest.approx((27 - 24) / 3)  # t1 since it was composed; t2 is the last
    assert base == pytest.approx((14 - 10) / 3)
    assert gap == pytest.approx((14 + 27 + 33) / 3 - (10 + 20 + 30) / 3) == pytest.approx(diagonal + forgotten + base)
    runs = [str(write_run(tmp_path / "o", oracle)), str(write_run(tmp_path / "f", fusion))]
    table = oracle_gap.gap_table(runs, "adapter-oracle")
    row = next(line for line in table.splitlines() if line.startswith("| adapter-fusion"))
    assert [cell.strip() for cell in row.strip("|").split("|")] == ["adapter-fusion", "1", "4.67", "2.33", "1.00", "1.33"]


def test_a_wrong_oracle_name_is_one_line_naming_the_option(tmp_path):
    from click.testing import CliRunner

    run = str(write_run(tmp_path / "f", fake_results([10, 50, 60, 40], [[13, 24, 55, 38], [14, 27, 33, 37]], strategy="adapter-fusion")))
    result = CliRunner().invoke(oracle_gap.main, [run, "--oracle", "oracle"])
    assert result.exit_code == 2 and result.exception.__class__ is SystemExit
    assert "--oracle oracle: no compared group by that name" in result.output
