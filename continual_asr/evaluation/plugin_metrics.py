"""The continual-learning metrics as Avalanche plugin metrics, so any Avalanche logger gets them.

Each :class:`MatrixMetric` keeps the WER rows of the steps so far (``update(row)``), computes
its value for the latest step with the pure functions of :mod:`.metrics` (``result()``) and
emits it after every evaluation of the whole test stream (the dev stream's is left out), at x = the number of finished
training experiences (0 = the base model). The runner evaluates the whole stream exactly once
per step, and replays earlier rows through ``update`` when it resumes a run.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import NamedTuple, Sequence

import numpy as np
from avalanche.evaluation import PluginMetric
from avalanche.evaluation.metric_results import MetricValue
from avalanche.evaluation.metrics import loss_metrics
from avalanche.training.plugins import EvaluationPlugin

from ..data.tokenizer import Tokenizer
from .attention import AdapterAttention
from .metrics import average_wer, backward_transfer, forgetting, zero_shot_change
from .wer import WordErrorRate


class MatrixMetric(PluginMetric[dict]):
    """One metric of the WER matrix; ``compute`` maps (learned W, zero-shot z) to {suffix: value}."""

    name = ""

    def __init__(self, wer: WordErrorRate, columns: Sequence[str]) -> None:
        super().__init__()
        self.wer = wer
        self.columns = list(columns)
        self.rows: list[list[float]] = []
        self.evaluated: set[int] = set()  # test sets evaluated in the current eval call

    def reset(self) -> None:
        self.rows = []

    def update(self, row: Sequence[float]) -> None:
        self.rows.append([float(v) for v in row])

    def result(self) -> dict:
        matrix = np.array(self.rows, dtype=float)
        return self.compute(matrix[:, :-1], matrix[:, -1])

    @abstractmethod
    def compute(self, learned: np.ndarray, zero_shot: np.ndarray) -> dict:
        """{name suffix: value} for the latest row; None values are not emitted."""

    def before_eval(self, strategy) -> None:
        self.evaluated = set()

    def after_eval_exp(self, strategy) -> None:
        if strategy.experience.origin_stream.name == "test":  # the WER matrix is the test sets'
            self.evaluated.add(strategy.experience.current_experience)

    def after_eval(self, strategy) -> list[MetricValue]:
        if len(self.evaluated) < len(self.columns):  # not a whole step's row (a partial evaluation)
            return []
        self.update([self.wer.results[i] for i in range(len(self.columns))])
        step = strategy.clock.train_exp_counter
        base = f"{self.name}/eval_phase/test_stream"
        return [MetricValue(self, f"{base}/{suffix}" if suffix else base, value, step)
                for suffix, value in self.result().items() if value is not None]

    def __str__(self) -> str:
        return self.name


class AverageWER(MatrixMetric):
    """AWER_k: mean WER over the tasks learned so far (base task included)."""

    name = "AWER"

    def compute(self, learned, zero_shot):
        return {"": average_wer(learned, len(learned) - 1)}


class BackwardTransfer(MatrixMetric):
    """BWT_k: mean change of the earlier tasks' WER since each was learned (negative = forgetting)."""

    name = "BWT"

    def compute(self, learned, zero_shot):
        return {"": backward_transfer(learned, len(learned) - 1)}


class Forgetting(MatrixMetric):
    """F_k(j) per earlier task (Chaudhry et al.): its WER now minus its best before this step."""

    name = "Forgetting_Exp"

    def compute(self, learned, zero_shot):
        lost = forgetting(learned, len(learned) - 1)
        return {f"Exp{j:03d}_{self.columns[j]}": float(v) for j, v in enumerate(lost)}


class ZeroShotWER(MatrixMetric):
    """The zero-shot task's WER, and its change against the base model (points and %)."""

    name = "ZeroShot"

    def compute(self, learned, zero_shot):
        change, relative = zero_shot_change(zero_shot, len(zero_shot) - 1)
        return {"WER": float(zero_shot[-1]), "change": change, "change_relative": relative}


class Evaluator(NamedTuple):
    wer: WordErrorRate
    matrix_metrics: list[MatrixMetric]
    attention: AdapterAttention
    plugin: EvaluationPlugin


def make_evaluator(tokenizer: Tokenizer, columns: Sequence[str], loggers: list) -> Evaluator:
    """WER per test set, the matrix metrics, what fusion attends to and the training loss (per
    minibatch and epoch), in one Avalanche EvaluationPlugin."""
    wer = WordErrorRate(tokenizer, columns)
    matrix = [cls(wer, columns) for cls in (AverageWER, BackwardTransfer, Forgetting, ZeroShotWER)]
    attention = AdapterAttention(columns)
    plugin = EvaluationPlugin(wer, *matrix, attention, *loss_metrics(minibatch=True, epoch=True), loggers=loggers)
    return Evaluator(wer, matrix, attention, plugin)
