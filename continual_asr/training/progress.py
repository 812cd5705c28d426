"""Progress bars and log lines for training and evaluation, as an Avalanche plugin."""

from __future__ import annotations

import logging
import time

from avalanche.core import SupervisedPlugin
from tqdm import tqdm

log = logging.getLogger("continual_asr")


class ProgressPlugin(SupervisedPlugin, supports_distributed=True):  # sums over the ranks itself
    """A bar per training epoch (loss, utterances/s) and per evaluated task; a log line each.

    With several processes (only rank 0 shows it) loss and utterances are the whole global batch's.
    """

    def __init__(self, enabled: bool = True, label: str = "") -> None:
        super().__init__()
        self.enabled = enabled
        self.label = label
        self.bar: tqdm | None = None

    def _open(self, total: int, desc: str) -> None:
        self.bar = tqdm(total=total, desc=desc, unit="batch", leave=False, disable=not self.enabled)
        self.started = time.perf_counter()
        self.utterances = 0
        self.loss_sum = 0.0
        self.batches = 0

    def _close(self) -> float:
        if self.bar is not None:
            self.bar.close()
        return time.perf_counter() - self.started

    def before_training_epoch(self, strategy, **kwargs) -> None:
        phase = strategy.phase
        self.epoch_label = f"{self.label}{phase.name} epoch {strategy.phase_epoch + 1}/{phase.epochs}"
        self._open(len(strategy.dataloader), self.epoch_label)

    def after_training_iteration(self, strategy, **kwargs) -> None:
        batch = strategy.mbatch
        if batch.positions is None:
            self.utterances += len(batch.texts)
        elif batch.share > 0:  # one process's part of a global batch: count the whole batch
            self.utterances += round(sum(p >= 0 for p in batch.positions) / batch.share)
        self.loss_sum += float(strategy.loss.detach())
        self.batches += 1
        if self.bar is not None:
            rate = self.utterances / max(1e-9, time.perf_counter() - self.started)
            self.bar.set_postfix(loss=f"{float(strategy.loss.detach()):.3f}", utt_s=f"{rate:.0f}")
            self.bar.update()

    def after_training_epoch(self, strategy, **kwargs) -> None:
        seconds = self._close()
        log.info("%s: loss %.3f, %d utterances in %.1f s (%.0f utt/s)", self.epoch_label,
                 self.loss_sum / max(1, self.batches), self.utterances, seconds, self.utterances / max(seconds, 1e-9))

    def before_eval_exp(self, strategy, **kwargs) -> None:
        name = getattr(strategy.experience, "task_name", strategy.experience.current_experience)
        self._open(len(strategy.dataloader), f"{self.label}evaluate {name}")

    def after_eval_iteration(self, strategy, **kwargs) -> None:
        if self.bar is not None:
            self.bar.update()

    def after_eval_exp(self, strategy, **kwargs) -> None:
        self._close()
