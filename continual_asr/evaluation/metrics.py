"""Continual-learning metrics of a WER matrix: pure functions, numpy in, numbers out.

Notation (also in docs/outputs.md, "Metrics"). ``W`` is the *learned* part of the WER
matrix, extended by the base model: row ``k`` is the model after step ``k`` (row 0 = the base
model, i.e. "after learning task 0", the base task), column ``j`` is the test set of learned
task ``j`` (column 0 = base task, column j = j-th stream task). It has one row per finished
step and ``K + 1`` columns, so it is square once the run is complete. ``z[k]`` is the zero-shot
WER after step ``k``. Every value is a WER in percent; every difference is in WER points.
Lower WER is better, so the signs below are chosen to read naturally:
backward and forward transfer are positive when they help; forgetting, drift and intransigence
are positive when they hurt.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def _check(learned: np.ndarray, step: int) -> np.ndarray:
    learned = np.asarray(learned, dtype=float)
    if learned.ndim != 2 or not 0 <= step < learned.shape[0] or learned.shape[0] > learned.shape[1]:
        raise ValueError(f"step {step} is not a row of a {learned.shape} learned-task WER matrix")
    return learned


def average_wer(learned: np.ndarray, step: int) -> float:
    """AWER_k = mean over j = 0..k of W[k, j]: the WER over every task seen so far."""
    learned = _check(learned, step)
    return float(learned[step, : step + 1].mean())


def backward_transfer(learned: np.ndarray, step: int) -> float | None:
    """BWT_k = mean over j < k of (W[j, j] - W[k, j]); negative = forgetting; None at k = 0."""
    learned = _check(learned, step)
    if step == 0:
        return None
    diagonal = np.diag(learned)[:step]
    return float((diagonal - learned[step, :step]).mean())


def average_wer_tasks(learned: np.ndarray, step: int) -> float | None:
    """AWER of the stream's tasks alone, j = 1..k (no base task: routing gets it for free);
    None at k = 0."""
    learned = _check(learned, step)
    return float(learned[step, 1: step + 1].mean()) if step else None


def forgetting(learned: np.ndarray, step: int) -> np.ndarray:
    """F_k(j) = W[k, j] - min over j <= l < k of W[l, j], for j < k: Chaudhry et al.'s (2018)
    forgetting in WER terms, how much worse task j is now than at its best since it was learned
    (rows before step j do not count: being worse than before learning a task is not forgetting)."""
    learned = _check(learned, step)
    return np.array([learned[step, j] - learned[j:step, j].min() for j in range(step)])


def drift(learned: np.ndarray, step: int) -> np.ndarray:
    """D_k(j) = W[k, j] - W[j, j] for j < k: how much worse task j is now than right after it
    was learned (its mean over j is -BWT_k)."""
    learned = _check(learned, step)
    return learned[step, :step] - np.diag(learned)[:step]


def max_drift(learned: np.ndarray, step: int) -> np.ndarray:
    """maxD_k(j) = max over j < l <= k of D_l(j): the worst it has been since task j was learned."""
    learned = _check(learned, step)
    return np.array([(learned[j + 1: step + 1, j] - learned[j, j]).max() for j in range(step)])


def zero_shot_change(zero_shot: Sequence[float], step: int) -> tuple[float, float | None]:
    """(z[k] - z[0], 100 (z[k] - z[0]) / z[0]): the zero-shot WER against the base model's,
    in WER points and in percent (None when the base model's zero-shot WER is 0)."""
    change = float(zero_shot[step] - zero_shot[0])
    return change, (100.0 * change / zero_shot[0] if zero_shot[0] else None)


def forward_transfer(learned: np.ndarray, step: int, single_task: Mapping[int, float]) -> float | None:
    """FWT_k = S[k] - W[k, k] (k >= 1), S[k] = WER on task k of a model that learned task k alone
    from the base model; positive = the earlier tasks helped. None without a reference."""
    learned = _check(learned, step)
    if step == 0 or step not in single_task:
        return None
    return float(single_task[step] - learned[step, step])


def intransigence(learned: np.ndarray, step: int, joint: Mapping[int, float]) -> float | None:
    """I_k = W[k, k] - J[k] (k >= 1), J[k] = WER on task k of joint training on every task up to
    k; positive = the strategy learns task k worse than joint training. None without a reference."""
    learned = _check(learned, step)
    if step == 0 or step not in joint:
        return None
    return float(learned[step, step] - joint[step])


def mean_or_none(values: Sequence[float | None]) -> float | None:
    """The mean of the values that exist; None when none does."""
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def real_time_factor(eval_seconds: float, audio_seconds: float) -> float | None:
    """Evaluation seconds per second of test audio (lower is faster); None without audio."""
    return eval_seconds / audio_seconds if audio_seconds > 0 else None
