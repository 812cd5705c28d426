"""What fusion attends to: per test set and layer, the mean attention each adapter (and the
null slot) receives over the test set's frames, measured in the evaluation pass that gives the
WER (no extra decoding), kept in results.json and drawn into TensorBoard.

Only combiners that attend (AdapterFusion per frame, Adapter Weighted Mean's learned weights)
have anything to show; for the others ``step_record`` is None.
"""

from __future__ import annotations

from typing import Sequence

import torch
from avalanche.evaluation import PluginMetric
from avalanche.evaluation.metric_results import MetricValue

from ..model.combiners import AttentionRecorder
from ..reporting.plots import attention_figure

NULL_SLOT = "no adapter"  # the column of fusion's null slot


class AdapterAttention(PluginMetric[dict]):
    """``results`` maps test-set index -> per layer, the mean attention of each slot."""

    def __init__(self, columns: Sequence[str]) -> None:
        super().__init__()
        self.columns = list(columns)
        self.results: dict[int, list[list[float]]] = {}
        self.slots: list[str] = []
        self._recorder: AttentionRecorder | None = None

    def reset(self) -> None:
        self.results = {}

    def result(self) -> dict:
        return self.step_record() or {}

    def step_record(self) -> dict | None:
        """What results.json keeps for a step: the slots (adapters by task, then the null slot)
        and, per test set, one row of slot means per layer; None if nothing attends."""
        if len(self.results) < len(self.columns):
            return None
        return {"slots": list(self.slots), "test_sets": {self.columns[i]: self.results[i] for i in sorted(self.results)}}

    def before_eval(self, strategy) -> None:
        self.reset()

    def before_eval_exp(self, strategy) -> None:
        if strategy.experience.origin_stream.name == "test":
            self._recorder = AttentionRecorder()
            strategy.bare_model.record_attention(self._recorder)

    def before_eval_forward(self, strategy) -> None:
        if self._recorder is not None and strategy.mbatch.positions is not None:
            self._recorder.utterances = torch.tensor(strategy.mbatch.positions) >= 0  # stand-ins count nowhere

    def after_eval_exp(self, strategy) -> None:
        recorder, self._recorder = self._recorder, None
        if recorder is None:
            return
        model = strategy.bare_model
        model.record_attention(None)
        if not recorder.sums:  # nothing attends
            return
        recorder.sum_over_ranks()
        means = recorder.means()
        self.results[strategy.experience.current_experience] = means
        self.slots = list(model.adapter_tasks) + [NULL_SLOT] * (len(means[0]) - len(model.adapter_tasks))

    def after_eval(self, strategy) -> list[MetricValue]:
        record = self.step_record()
        if record is None:
            return []
        figure = attention_figure(record, title=f"after {strategy.clock.train_exp_counter} task(s)")
        return [MetricValue(self, "AdapterAttention/eval_phase/test_stream", figure, strategy.clock.train_exp_counter)]

    def __str__(self) -> str:
        return "AdapterAttention"
