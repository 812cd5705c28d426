"""Per-utterance edit counts and paired bootstrap intervals."""

import csv
import json

import jiwer
import numpy as np
import pytest
from click.testing import CliRunner
from fake_results import COLUMNS, fake_results, write_run

from continual_asr.cli import main

from continual_asr.evaluation.significance import corpus_wer, paired_bootstrap, utterance_edits
from continual_asr.evaluation.wer import word_error_rate


def test_edit_counts_per_utterance_add_up_to_the_corpus_wer():
    refs = ["the cat sat", "a b c d", "one two three four five"]
    hyps = ["the bat sat on", "a c d", "one two three four five"]
    edits = utterance_edits(refs, hyps)
    assert edits == [[3, 1, 0, 1], [4, 0, 1, 0], [5, 0, 0, 0]]
    assert corpus_wer(np.array(edits)) == pytest.approx(word_error_rate(refs, hyps))


def test_the_wer_from_edit_counts_is_jiwers_to_the_bit():
    """The evaluation metric takes a test set's WER from its per-utterance counts (one
    alignment): it must be jiwer.wer's value exactly, or the reported WERs would move."""
    rng = np.random.default_rng(1)
    words = ["a", "b", "c", "dog", "cat", "sat", "on", "mat"]
    for _ in range(20):
        refs = [" ".join(rng.choice(words, rng.integers(1, 12))) for _ in range(rng.integers(1, 40))]
        hyps = [" ".join(rng.choice(words, rng.integers(0, 12))) for _ in refs]
        edits = np.asarray(utterance_edits(refs, hyps), dtype=np.int64)
        assert corpus_wer(edits) == word_error_rate(refs, hyps) == 100.0 * jiwer.wer(refs, hyps)


def _system(rng, error_rate: float, sizes: np.ndarray) -> dict:
    errors = rng.binomial(sizes, error_rate)
    zeros = np.zeros_like(sizes)
    return {"t": np.stack([sizes, errors, zeros, zeros], axis=1), "u": np.stack([sizes, errors, zeros, zeros], axis=1)}


def test_a_real_difference_is_significant_and_none_is_not():
    rng = np.random.default_rng(0)
    sizes = rng.integers(5, 12, 300)
    better = [_system(rng, 0.30, sizes) for _ in range(2)]
    worse = [_system(rng, 0.40, sizes) for _ in range(2)]
    interval = paired_bootstrap(better, worse, ["t", "u"])
    assert interval.difference == pytest.approx(np.mean([corpus_wer(r["t"]) for r in better])
                                                - np.mean([corpus_wer(r["t"]) for r in worse]), abs=1e-4)
    assert interval.low < interval.difference < interval.high < 0 and interval.significant
    same = paired_bootstrap(better[:1], [_system(rng, 0.30, sizes)], ["t"])
    assert same.low < 0 < same.high and not same.significant
    assert paired_bootstrap(better, worse, ["t"]) == paired_bootstrap(better, worse, ["t"])  # fixed seed


def test_the_interval_is_paired_over_utterances():
    """Two systems that differ by one error on every utterance of a set whose difficulty varies a
    lot: the paired interval is tight, though each system's own WER varies widely over resamples."""
    rng = np.random.default_rng(1)
    sizes = np.full(200, 10)
    hard = rng.integers(0, 10, 200)
    zeros = np.zeros(200, dtype=int)
    a = {"t": np.stack([sizes, hard, zeros, zeros], axis=1)}
    b = {"t": np.stack([sizes, hard + 1, zeros, zeros], axis=1)}
    interval = paired_bootstrap([a], [b], ["t"])
    assert interval.difference == pytest.approx(-10.0) and interval.high - interval.low < 1e-9


def test_runs_of_other_test_sets_cannot_be_compared():
    rng = np.random.default_rng(2)
    with pytest.raises(ValueError, match="test set t has 5 utterances in one run and 6"):
        paired_bootstrap([_system(rng, 0.3, np.full(6, 5))], [_system(rng, 0.3, np.full(5, 5))], ["t"])
    with pytest.raises(ValueError, match="no per-utterance edits for test set v"):
        paired_bootstrap([_system(rng, 0.3, np.full(6, 5))], [_system(rng, 0.3, np.full(6, 5))], ["v"])


def _edits(rng, error_rate: float) -> dict:
    """Every set: 40 utterances of 8 words each at the given error rate."""
    return {c: [[8, int(e), 0, 0] for e in rng.binomial(8, error_rate, 40)] for c in COLUMNS}


def _saved_run(folder, strategy: str, seed: int, error_rate: float, with_edits: bool = True,
               dev_error_rate: float | None = None):
    """A finished run folder whose test sets have the given error rate (its dev sets too, or
    ``dev_error_rate``)."""
    rng = np.random.default_rng(seed + int(error_rate * 100))
    edits = _edits(rng, error_rate)
    dev = _edits(rng, error_rate if dev_error_rate is None else dev_error_rate)
    wer = {c: corpus_wer(np.array(rows)) for c, rows in edits.items()}
    row = [wer[c] for c in COLUMNS]
    write_run(folder, fake_results(row, [row, row], strategy=strategy, seed=seed))
    if with_edits:
        (folder / "edits.json").write_text(json.dumps({"columns": COLUMNS, "steps": [edits, edits, edits],
                                                       "dev_steps": [dev, dev, dev]}))
    return str(folder)


def test_compare_prints_intervals_against_a_baseline_from_saved_runs_alone(tmp_path):
    runs = [_saved_run(tmp_path / f"{s}-{seed}", s, seed, rate)
            for s, rate in (("finetune", 0.5), ("adapter-fusion", 0.2), ("ewc", 0.5)) for seed in (0, 1)]
    runs.append(_saved_run(tmp_path / "old", "lwf", 0, 0.4, with_edits=False))
    result = CliRunner().invoke(main, ["compare", *runs, "--baseline", "finetune", "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    table = result.output.split("Difference from **finetune**")[1]
    fusion = next(line for line in table.splitlines() if line.startswith("| adapter-fusion"))
    ewc = next(line for line in table.splitlines() if line.startswith("| ewc"))
    old = next(line for line in table.splitlines() if line.startswith("| lwf"))
    assert fusion.count(" *") == 6  # both means, the three learned sets and zero-shot: 30 points better
    assert " *" not in ewc.split("|")[2]  # the same error rate: no significant difference in the mean
    assert {cell.strip() for cell in old.split("|")[2:-1]} == {"-"}  # a run from before edit counts were kept
    assert "(matched seeds and orders: 1 of 1 runs, 1 of 2)" in old  # it ran seed 0 alone
    rows = list(csv.DictReader((tmp_path / "cmp" / "intervals_finetune.csv").open()))
    assert rows[0]["group"] == "adapter-fusion" and rows[0]["final mean WER significant"] == "True"
    assert float(rows[0]["final mean WER high"]) < 0


def test_compare_refuses_intervals_between_runs_of_other_test_sets(tmp_path):
    runs = [_saved_run(tmp_path / s, s, 0, 0.5) for s in ("finetune", "ewc")]
    edits = json.loads((tmp_path / "ewc" / "edits.json").read_text())
    edits["steps"][-1]["t1"] = edits["steps"][-1]["t1"][:30]  # fewer test utterances: not the same test set
    (tmp_path / "ewc" / "edits.json").write_text(json.dumps(edits))
    result = CliRunner().invoke(main, ["compare", *runs, "--baseline", "finetune", "--out", str(tmp_path / "cmp")])
    assert result.exit_code != 0
    assert "ewc against the baseline: test set t1 has 40 utterances in one run and 30 in another" in result.output


def test_dev_intervals_come_from_the_dev_edits(tmp_path):
    # Fusion is 30 points better on test but no better on dev: each split's intervals say so.
    runs = [_saved_run(tmp_path / f"{s}-{seed}", s, seed, rate, dev_error_rate=0.5)
            for s, rate in (("finetune", 0.5), ("adapter-fusion", 0.2)) for seed in (0, 1)]
    runs.append(_saved_run(tmp_path / "old", "lwf", 0, 0.4))
    old_edits = json.loads((tmp_path / "old" / "edits.json").read_text())
    del old_edits["dev_steps"]  # a run from before dev edit counts were kept
    (tmp_path / "old" / "edits.json").write_text(json.dumps(old_edits))
    out = tmp_path / "cmp"
    test = CliRunner().invoke(main, ["compare", *runs, "--baseline", "finetune", "--out", str(out)])
    dev = CliRunner().invoke(main, ["compare", *runs, "--baseline", "finetune", "--split", "dev", "--out", str(out)])
    assert test.exit_code == 0 and dev.exit_code == 0, test.output + dev.output

    def fusion_row(output):
        return next(line for line in output.split("Difference from")[1].splitlines() if line.startswith("| adapter-f"))

    assert fusion_row(test.output).split("|")[2].strip().endswith("*")
    assert not fusion_row(dev.output).split("|")[2].strip().endswith("*")
    assert "on the dev sets" in dev.output
    rows = list(csv.DictReader((out / "intervals_finetune_dev.csv").open()))
    assert rows[0]["final mean WER significant"] == "False"
    assert rows[1]["group"] == "lwf" and rows[1]["final mean WER difference"] == ""


def test_an_unknown_baseline_is_one_line(tmp_path):
    runs = [_saved_run(tmp_path / "a", "finetune", 0, 0.5), _saved_run(tmp_path / "b", "ewc", 0, 0.5)]
    result = CliRunner().invoke(main, ["compare", *runs, "--baseline", "joint", "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 2 and "--baseline joint: no compared group by that name (groups: finetune, ewc)" \
        in result.output


def test_a_baseline_may_name_only_some_of_its_labels_fields(tmp_path):
    from continual_asr.errors import ResultsError
    from continual_asr.reporting import compare_runs
    from continual_asr.reporting.intervals import find_group

    def run(name, config):
        folder = _saved_run(tmp_path / name, "adapter-fusion", 0, 0.5)
        results = json.loads((tmp_path / name / "results.json").read_text())
        (tmp_path / name / "results.json").write_text(json.dumps({**results, "config": config}))
        return folder

    runs = [run("a", {"adapter_epochs": 10, "base_model": ""}), run("b", {"adapter_epochs": 7, "base_model": "x"}),
            run("c", {"adapter_epochs": 7, "base_model": ""})]
    groups = compare_runs(runs)
    assert sorted(g.label for g in groups) == ["adapter-fusion (adapter_epochs=10)", "adapter-fusion (adapter_epochs=7)",
                                                "adapter-fusion (base_model=x, adapter_epochs=7)"]
    assert find_group(groups, "adapter-fusion (adapter_epochs=7)").runs[0]["config"]["base_model"] == ""  # the label
    assert find_group(groups, "adapter-fusion (base_model=x)").label == "adapter-fusion (base_model=x, adapter_epochs=7)"
    assert find_group(groups, "adapter-fusion (adapter_epochs=7, base_model=x)").runs[0]["config"]["base_model"] == "x"
    with pytest.raises(ResultsError, match="more than one compared group"):
        find_group(groups, "adapter-fusion (base_model=)")
    with pytest.raises(ResultsError, match="no compared group"):
        find_group(groups, "adapter-fusion (adapter_epochs=8)")
    result = CliRunner().invoke(main, ["compare", *runs, "--baseline", "adapter-fusion (base_model=x)",
                                       "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 0 and "Difference from **adapter-fusion (base_model=x, adapter_epochs=7)**" in result.output, \
        result.output


def test_task_orders_are_pooled_like_seeds(tmp_path):
    from continual_asr.reporting import compare_runs, comparison_markdown

    first = fake_results([10, 50, 60, 40], [[12, 20, 55, 38], [11, 25, 30, 44]], seed=0)
    second = fake_results([10, 60, 50, 40], [[12, 20, 55, 38], [11, 25, 30, 44]], seed=0,
                          columns=["base", "t2", "t1", "zs"])
    second["task_order"] = [2, 1]
    groups = compare_runs([write_run(tmp_path / "a", first), write_run(tmp_path / "b", second)])
    assert len(groups) == 1 and len(groups[0].runs) == 2
    assert "| 0 (x 2 orders) |" in comparison_markdown(groups).replace("  ", " ")
    third = fake_results([10, 50, 60, 40], [[12, 20, 55, 38], [11, 25, 30, 44]], seed=1)
    groups = compare_runs([write_run(tmp_path / d, r) for d, r in (("a", first), ("b", second), ("c", third))])
    assert "| 0, 1 (x 2 orders, 3 runs) |" in comparison_markdown(groups).replace("  ", " ")  # seed 1 in one order


def test_a_run_without_a_recorded_order_learned_the_yaml_order(tmp_path):
    from continual_asr.reporting import compare_runs, comparison_markdown
    from continual_asr.reporting.intervals import run_key

    old = fake_results([10, 50, 60, 40], [[12, 20, 55, 38], [11, 25, 30, 44]], seed=0)  # before orders were kept
    new = {**fake_results([10, 50, 60, 40], [[12, 20, 55, 38], [11, 25, 30, 44]], seed=1), "task_order": [1, 2]}
    assert run_key(old) == (0, (1, 2))
    groups = compare_runs([write_run(tmp_path / "old", old), write_run(tmp_path / "new", new)])
    assert "| 0, 1 |" in comparison_markdown(groups).replace("  ", " ")  # one order, not two


def test_intervals_compare_only_the_seeds_and_orders_both_sides_ran(tmp_path):
    # Fine-tuning ran in two task orders (50 % and 20 % WER), the other strategy in the first only,
    # at fine-tuning's WER there: pooling every run would call it 15 points worse.
    def run(name, strategy, rate, order):
        folder = _saved_run(tmp_path / name, strategy, 0, rate)
        results = json.loads((tmp_path / name / "results.json").read_text())
        (tmp_path / name / "results.json").write_text(json.dumps({**results, "task_order": order}))
        return folder

    runs = [run("ft-a", "finetune", 0.5, [1, 2]), run("ft-b", "finetune", 0.2, [2, 1]), run("ewc-a", "ewc", 0.5, [1, 2])]
    result = CliRunner().invoke(main, ["compare", *runs, "--baseline", "finetune", "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.split("Difference from")[1].splitlines() if line.startswith("| ewc"))
    assert "(matched seeds and orders: 1 of 1 runs, 1 of 2)" in row
    assert not row.split("|")[2].strip().endswith("*") and abs(float(row.split("|")[2].split()[0])) < 5


def test_a_wer_needs_references_with_words():
    for refs in ([], ["the cat", "  "], ["the cat", "?!"]):
        with pytest.raises(ValueError, match="non-empty reference"):
            word_error_rate(refs, ["x"] * len(refs))
