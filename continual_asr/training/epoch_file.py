"""Resuming inside a training phase: the state after every finished epoch, kept in one file.

Pretraining (the base model) and adapter extraction (each task's single-task adapter) are cached
when they finish; until then, the epoch file beside their cache entry is what an interruption
(Ctrl-C, SIGTERM, a kill, a pre-empted job) leaves, and the next attempt continues after its last
epoch with the weights, optimizer, learning-rate schedule, batch order and random state an
uninterrupted attempt would have had there: the result is the same, bit for bit, on the same
thread count. Process 0 writes and reads it (atomically, under the cache entry's lock); every
process gets what it read.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch
from torch import nn

from .. import distributed
from ..results import save_torch_atomic

if TYPE_CHECKING:
    from .template import SpeechTemplate

log = logging.getLogger("continual_asr")


def partial_path(entry: Path) -> Path:
    """Where the unfinished training of cache entry ``entry`` keeps its last epoch."""
    return entry.with_name(entry.name + ".partial")


class EpochFile:
    """The epoch file of the phases that carry it (``TrainingPhase.epoch_file``), or with ``path``
    None only the clock: ``seconds()`` is the training time so far, interrupted attempts' included,
    so what the cache records is what the entry cost.

    ``weights``: the part of the (unwrapped) model the file keeps, default all of it (BatchNorm
    statistics move during pretraining). An adapter keeps only itself: its training changes
    nothing else, and the file then serves every run that trains this adapter, whatever adapters
    came before it (another task order)."""

    def __init__(self, path: Path | None, weights: Callable[[nn.Module], nn.Module] | None = None) -> None:
        self.path = path
        self.weights = weights or (lambda model: model)
        self.state = _read(path) if path is not None else None
        self.seconds_before = float(self.state["seconds"]) if self.state else 0.0
        self.started: float | None = None

    def epochs_done(self, phase_epochs: list[int]) -> int | None:
        """How many epochs of the phases (their epoch counts, in order) the file holds; None: none."""
        if self.state is None:
            return None
        return sum(phase_epochs[:self.state["phase"]]) + self.state["epoch"]

    def seconds(self) -> float:
        return self.seconds_before + (time.perf_counter() - self.started if self.started is not None else 0.0)

    def first_epoch(self, strategy: SpeechTemplate) -> int:
        """Where ``strategy.phase`` (optimizer and data loader just built) starts: after the file's
        epoch, with its state restored, if the file stopped inside this phase; past the end if it
        stopped in a later phase (the weights it holds come after this one); else 0."""
        if self.started is None:
            self.started = time.perf_counter()
        state = self.state
        if state is None or strategy.phase_index > state["phase"]:
            return 0
        if strategy.phase_index < state["phase"]:
            return strategy.phase.epochs
        self.weights(strategy.bare_model).load_state_dict(state["model"])
        strategy.optimizer.load_state_dict(state["optimizer"])
        strategy.scheduler.load_state_dict(state["scheduler"])
        sampler = strategy.dataloader.batch_sampler
        getattr(sampler, "batches", sampler).epoch = state["epoch"]  # the batch order it would have had
        torch.set_rng_state(state["torch_rng"])
        return state["epoch"]

    def write(self, strategy: SpeechTemplate) -> None:
        """After an epoch of ``strategy.phase``."""
        if self.path is None or not distributed.is_main():
            return
        state = {"phase": strategy.phase_index, "epoch": strategy.phase_epoch + 1,
                 "model": self.weights(strategy.bare_model).state_dict(),
                 "optimizer": strategy.optimizer.state_dict(), "scheduler": strategy.scheduler.state_dict(),
                 "torch_rng": torch.get_rng_state(), "seconds": self.seconds()}
        save_torch_atomic(state, self.path)

    def discard(self) -> None:
        """Once the entry is cached (process 0)."""
        if self.path is not None and distributed.is_main():
            self.path.unlink(missing_ok=True)


def _read(path: Path) -> dict | None:
    """Process 0's epoch file at ``path`` (every process gets it), or None: none there, or
    unreadable (then training starts over, saying so)."""
    state = None
    if distributed.is_main() and path.exists():
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # a truncated or foreign file costs the epochs it held, nothing more
            log.warning("%s unreadable (%s); its training starts over", path, error)
    return distributed.broadcast_object(state)
