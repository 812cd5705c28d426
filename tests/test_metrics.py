"""Continual-learning metric formulas on hand-made WER matrices, and their Avalanche wrappers."""

from types import SimpleNamespace

import numpy as np
import pytest
from fake_results import fake_results, write_run

from continual_asr.errors import ResultsError
from continual_asr.evaluation.metrics import (average_wer, average_wer_tasks, backward_transfer, drift, forgetting,
                                              forward_transfer, intransigence, max_drift, real_time_factor,
                                              zero_shot_change)
from continual_asr.evaluation.plugin_metrics import AverageWER, BackwardTransfer, Forgetting, ZeroShotWER
from continual_asr.evaluation.metric_registry import tensorboard_scalars
from continual_asr.evaluation.summary import attach_metrics, compute_metrics
from continual_asr.reporting import reference_wers

# Rows: base model, after t1, after t2. Columns: base task, t1, t2 (learned), and zero-shot Z.
LEARNED = np.array([[10.0, 50.0, 60.0],
                    [12.0, 20.0, 55.0],
                    [11.0, 25.0, 30.0]])
ZERO_SHOT = np.array([40.0, 38.0, 44.0])


def test_average_wer_is_the_mean_over_tasks_seen_so_far():
    assert average_wer(LEARNED, 0) == 10.0
    assert average_wer(LEARNED, 1) == 16.0  # (12 + 20) / 2: t2 not seen yet
    assert average_wer(LEARNED, 2) == pytest.approx(22.0)  # (11 + 25 + 30) / 3


def test_backward_transfer_is_negative_when_earlier_tasks_get_worse():
    assert backward_transfer(LEARNED, 0) is None
    assert backward_transfer(LEARNED, 1) == -2.0  # 10 - 12
    assert backward_transfer(LEARNED, 2) == pytest.approx(-3.0)  # ((10 - 11) + (20 - 25)) / 2


def test_drift_final_and_worst_since_learned():
    assert drift(LEARNED, 2).tolist() == [1.0, 5.0]  # 11 - 10, 25 - 20
    assert max_drift(LEARNED, 2).tolist() == [2.0, 5.0]  # the base task was worst after t1 (12 - 10)
    assert drift(LEARNED, 0).size == 0
    # the mean of the final drift is minus BWT, at every step
    for k in (1, 2):
        assert drift(LEARNED, k).mean() == pytest.approx(-backward_transfer(LEARNED, k))


def test_forgetting_is_chaudhrys_against_the_best_earlier_value():
    assert forgetting(LEARNED, 2).tolist() == [1.0, 5.0]  # 11 - min(10, 12), 25 - min(50, 20)
    assert forgetting(LEARNED, 1).tolist() == [2.0] and forgetting(LEARNED, 0).size == 0
    # The base task improved while t1 was learned, then lost part of it: drift calls that a gain
    # (9 is better than the 10 it had when learned), forgetting a loss (9 is worse than its best, 8).
    recovered = np.array([[10.0, 50.0, 60.0], [8.0, 20.0, 55.0], [9.0, 18.0, 30.0]])
    assert drift(recovered, 2).tolist() == [-1.0, -2.0]
    assert forgetting(recovered, 2).tolist() == [1.0, -2.0]
    # t1 was easier before it was learned (30) than after (32) and never changed since: being
    # worse than before learning a task is not forgetting it.
    unlearned = np.array([[10.0, 30.0, 50.0], [10.0, 32.0, 50.0], [10.0, 32.0, 20.0]])
    assert forgetting(unlearned, 2).tolist() == [0.0, 0.0]


def test_improvement_after_learning_is_negative_forgetting_and_positive_bwt():
    better = np.array([[10.0, 50.0], [8.0, 20.0]])
    assert forgetting(better, 1).tolist() == [-2.0] and drift(better, 1).tolist() == [-2.0]
    assert max_drift(better, 1).tolist() == [-2.0]
    assert backward_transfer(better, 1) == 2.0


def test_mean_wer_over_the_streams_tasks_leaves_the_base_task_out():
    assert average_wer_tasks(LEARNED, 0) is None
    assert average_wer_tasks(LEARNED, 2) == pytest.approx(27.5)  # (25 + 30) / 2


def test_zero_shot_change_against_the_base_model():
    assert zero_shot_change(ZERO_SHOT, 0) == (0.0, 0.0)
    assert zero_shot_change(ZERO_SHOT, 1) == (-2.0, -5.0)
    assert zero_shot_change(ZERO_SHOT, 2) == (4.0, 10.0)
    assert zero_shot_change([0.0, 5.0], 1) == (5.0, None)


def test_forward_transfer_and_intransigence_against_references():
    single, joint = {1: 24.0, 2: 28.0}, {1: 18.0, 2: 27.0}
    assert forward_transfer(LEARNED, 1, single) == 4.0  # 24 - 20: better than learning t1 alone
    assert forward_transfer(LEARNED, 2, single) == -2.0  # 28 - 30
    assert intransigence(LEARNED, 1, joint) == 2.0  # 20 - 18
    assert intransigence(LEARNED, 2, joint) == 3.0  # 30 - 27
    assert forward_transfer(LEARNED, 0, single) is None and intransigence(LEARNED, 2, {}) is None


def test_metrics_of_an_unfinished_run_and_bad_steps():
    partial = LEARNED[:2]  # two rows, three learned columns
    assert average_wer(partial, 1) == 16.0 and backward_transfer(partial, 1) == -2.0
    with pytest.raises(ValueError):
        average_wer(partial, 2)
    assert real_time_factor(2.0, 40.0) == 0.05 and real_time_factor(1.0, 0.0) is None


def _fake():
    rows = np.column_stack([LEARNED, ZERO_SHOT])
    return fake_results(rows[0].tolist(), rows[1:].tolist())


def test_summary_from_results_json_alone():
    metrics = compute_metrics(_fake())
    per_step, summary = metrics["per_step"], metrics["summary"]
    assert [s["average_wer"] for s in per_step] == [10.0, 16.0, 22.0]
    assert [s["backward_transfer"] for s in per_step] == [None, -2.0, -3.0]
    assert [s["zero_shot_wer"] for s in per_step] == [40.0, 38.0, 44.0]
    assert per_step[1]["forgetting"] == {"base": 2.0}
    assert summary["final_mean_wer"] == 22.0 and summary["backward_transfer"] == -3.0
    assert summary["forgetting"] == {"base": 1.0, "t1": 5.0} and summary["mean_forgetting"] == 3.0
    assert summary["drift"] == {"base": 1.0, "t1": 5.0}
    assert summary["max_drift"] == {"base": 2.0, "t1": 5.0} and summary["mean_max_drift"] == 3.5
    assert summary["final_mean_wer_tasks"] == 27.5
    assert (summary["zero_shot_change"], summary["zero_shot_change_relative"]) == (4.0, 10.0)
    assert summary["mean_forward_transfer"] is None and summary["forward_transfer"] == {}
    cost = summary["cost"]
    assert cost["train_seconds"] == 20.0 and cost["eval_seconds"] == 4.0 and cost["stored_parameters"] == 1100
    assert cost["eval_rtf"] == pytest.approx(4.0 / (40.0 * 2))  # 2 s per step over 4 x 10 s of test audio
    assert per_step[0]["eval_rtf"] == 0.1  # the base model's evaluation: 4 s over 40 s


def test_the_dev_mean_covers_the_learned_tasks_of_a_run_in_progress():
    results = _fake()
    results["base_dev_wer"] = {"base": 11.0, "t1": 51.0, "t2": 61.0, "zs": 41.0}
    results["dev_wer_matrix"] = [[13.0, 21.0, 56.0, 39.0], [12.0, 26.0, 31.0, 45.0]]
    assert compute_metrics(results)["summary"]["final_mean_dev_wer"] == 23.0  # (12 + 26 + 31) / 3
    in_progress = {**results, "wer_matrix": results["wer_matrix"][:1], "steps": results["steps"][:1],
                   "dev_wer_matrix": results["dev_wer_matrix"][:1], "complete": False}
    assert compute_metrics(in_progress)["summary"]["final_mean_dev_wer"] == 17.0  # base and t1; t2 not learned
    before_any = {**results, "wer_matrix": [], "steps": [], "dev_wer_matrix": [], "complete": False}
    assert compute_metrics(before_any)["summary"]["final_mean_dev_wer"] == 11.0


def test_attach_metrics_only_adds_keys():
    results = _fake()
    before = {k: v for k, v in results.items()}
    attach_metrics(results)
    assert all(results[k] == v for k, v in before.items() if k not in ("base_model", "steps"))
    assert {"metrics"} == set(results["steps"][0]) - {"task", "wer", "train_seconds", "eval_seconds", "parameters"}
    assert results["base_model"]["metrics"]["average_wer"] == 10.0 and results["summary"]["steps_done"] == 2


def test_reference_runs_give_forward_transfer_and_intransigence(tmp_path):
    oracle = fake_results([10, 50, 60, 40], [[10, 24, 60, 40], [10, 24, 28, 40]], strategy="adapter-oracle")
    joint = fake_results([10, 50, 60, 40], [[9, 18, 50, 40], [9, 19, 27, 40]], strategy="joint")
    results = _fake()
    results["references"] = reference_wers([write_run(tmp_path / "o", oracle), write_run(tmp_path / "j", joint)],
                                           results)
    assert results["references"]["single-task"]["wer"] == {"t1": 24, "t2": 28}
    summary = compute_metrics(results)["summary"]
    assert summary["forward_transfer"] == {"t1": 4.0, "t2": -2.0} and summary["mean_forward_transfer"] == 1.0
    assert summary["intransigence"] == {"t1": 2.0, "t2": 3.0} and summary["mean_intransigence"] == 2.5


def test_reference_runs_must_be_references_of_the_same_stream(tmp_path):
    finetune = write_run(tmp_path / "f", fake_results([1, 2, 3, 4], [[1, 2, 3, 4]], strategy="finetune"))
    with pytest.raises(ResultsError, match="strategy 'finetune' is not a reference run"):
        reference_wers([finetune], _fake())
    other = fake_results([1, 2, 3], [[1, 2, 3]], strategy="joint", columns=["base", "t1", "zs"])
    with pytest.raises(ResultsError, match="must be a run of the same stream"):
        reference_wers([write_run(tmp_path / "other", other)], _fake())


def test_avalanche_metrics_update_result_reset_and_emit_at_the_step():
    wer = SimpleNamespace(results={})
    columns = ["base", "t1", "t2", "zs"]
    metrics = [cls(wer, columns) for cls in (AverageWER, BackwardTransfer, Forgetting, ZeroShotWER)]
    rows = np.column_stack([LEARNED, ZERO_SHOT])
    for metric in metrics:
        metric.update(rows[0])
    wer.results = dict(enumerate(rows[1]))

    def evaluate(experiences, stream="test"):
        strategy = SimpleNamespace(clock=SimpleNamespace(train_exp_counter=1))
        for metric in metrics:
            metric.before_eval(strategy)
            for index in experiences:
                strategy.experience = SimpleNamespace(current_experience=index,
                                                      origin_stream=SimpleNamespace(name=stream))
                metric.after_eval_exp(strategy)
        return {v.name: (v.value, v.x_plot) for m in metrics for v in m.after_eval(strategy)}

    assert evaluate([0, 1]) == {} and len(metrics[0].rows) == 1  # a partial evaluation is no step
    assert evaluate(range(4), "dev") == {} and len(metrics[0].rows) == 1  # the matrix is the test sets'
    emitted = evaluate(range(4))
    assert emitted == {
        "AWER/eval_phase/test_stream": (16.0, 1),
        "BWT/eval_phase/test_stream": (-2.0, 1),
        "Forgetting_Exp/eval_phase/test_stream/Exp000_base": (2.0, 1),
        "ZeroShot/eval_phase/test_stream/WER": (38.0, 1),
        "ZeroShot/eval_phase/test_stream/change": (-2.0, 1),
        "ZeroShot/eval_phase/test_stream/change_relative": (-5.0, 1),
    }
    metrics[0].update(rows[2])
    assert metrics[0].result() == {"": pytest.approx(22.0)}
    metrics[0].reset()
    assert metrics[0].rows == []


def test_a_metric_added_to_the_registry_reaches_every_table_the_report_and_tensorboard(monkeypatch, tmp_path):
    """Adding a metric is one registry entry: the summary, metrics.csv, report.html, the
    comparison tables and the TensorBoard scalars all iterate the registry."""
    from continual_asr.evaluation import metric_registry as registry
    from continual_asr.reporting import tables
    from continual_asr.reporting.compare import compare_runs, comparison_csv, comparison_markdown
    from continual_asr.reporting.html import report_html

    worst = registry.Metric("worst_wer", "worst WER", 1, "max over j &le; k of W[k, j]",
                            lambda s: float(s.learned[s.step, : s.step + 1].max()))
    final_worst = registry.Metric("final_worst_wer", "final worst WER", 1, "worst WER at the last step",
                                  lambda s: s.last["worst_wer"])
    monkeypatch.setattr(registry, "STEP_METRICS", [*registry.STEP_METRICS, worst])
    monkeypatch.setattr(registry, "SUMMARY_METRICS", [*registry.SUMMARY_METRICS, final_worst])

    results = _fake()
    metrics = compute_metrics(results)
    assert [s["worst_wer"] for s in metrics["per_step"]] == [10.0, 20.0, 30.0]
    assert metrics["summary"]["final_worst_wer"] == 30.0
    assert "worst_wer" in tables.metrics_csv(results, metrics).splitlines()[0]
    assert "worst WER" in report_html(results, metrics, {}) and "max over j &le; k of W[k, j]" in report_html(results, metrics, {})
    assert registry.tensorboard_scalars(metrics["per_step"][2])["Metrics/worst_wer"] == 30.0
    groups = compare_runs([write_run(tmp_path / "run", results)])
    assert "final worst WER" in comparison_markdown(groups) and "final worst WER mean" in comparison_csv(groups)


def test_tensorboard_scalars_hold_every_step_metric_with_a_value():
    per_step = compute_metrics(_fake())["per_step"]
    assert "Metrics/average_wer" in tensorboard_scalars(per_step[0])  # the base model: no task forgotten yet
    scalars = tensorboard_scalars(per_step[2])
    assert scalars["Metrics/average_wer"] == 22.0 and scalars["Metrics/forgetting/t1"] == 5.0
    assert "Metrics/forward_transfer" not in scalars  # no reference runs: no value
