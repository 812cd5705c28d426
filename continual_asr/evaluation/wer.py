"""Word error rate (jiwer) of the model head's greedy transcripts, as an Avalanche plugin metric."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from avalanche.evaluation import PluginMetric
from avalanche.evaluation.metric_results import MetricValue

from .. import distributed
from ..data.text import normalize_text
from ..data.tokenizer import Tokenizer
from ..model.heads import head_of
from .significance import corpus_wer, utterance_edits


def greedy_decode(model: torch.nn.Module, encoded: torch.Tensor, lengths: torch.Tensor,
                  tokenizer: Tokenizer) -> list[str]:
    """Transcripts of a batch: the model head's greedy token ids (CTC best path or transducer
    greedy search, see model/heads.py), detokenized."""
    return [tokenizer.decode(tokens) for tokens in head_of(model).decode(encoded, lengths)]


def word_error_rate(references: list[str], hypotheses: list[str]) -> float:
    """Corpus-level WER in percent, both sides normalised with the project's one rule (jiwer's
    value to the bit)."""
    return corpus_wer(np.asarray(_checked_edits(references, hypotheses), dtype=np.int64))


def _checked_edits(references: Sequence[str], hypotheses: Sequence[str]) -> list[list[int]]:
    """Per-utterance [words, S, D, I] (significance.utterance_edits), refusing empty references."""
    if not references or not all(normalize_text(r) for r in references):
        raise ValueError("WER needs non-empty reference transcripts")
    return utterance_edits(references, hypotheses)


class WordErrorRate(PluginMetric[float]):
    """WER per evaluation experience; ``results`` maps experience index -> latest WER (%).

    Emitted at x = the number of finished training experiences (0 = before any), named with
    the test set's task when ``columns`` (task names in experience order) are given.
    """

    def __init__(self, tokenizer: Tokenizer, columns: Sequence[str] = ()) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.columns = list(columns)
        self.references: list[str] = []
        self.hypotheses: list[str] = []
        self.order: list[tuple[int, int, int] | None] = []  # (batch, rank, row) of each transcript
        self._batches = 0
        self.results: dict[int, float] = {}
        self.edits: dict[int, list[list[int]]] = {}  # per test set, each utterance's [words, S, D, I]

    def reset(self) -> None:
        self.references, self.hypotheses, self.order, self._batches = [], [], [], 0

    def update(self, hypotheses: list[str], references: list[str]) -> None:
        self.hypotheses.extend(hypotheses)
        self.references.extend(references)

    def result(self) -> float:
        return word_error_rate(self.references, self.hypotheses)

    def before_eval_exp(self, strategy) -> None:
        self.reset()

    def after_eval_iteration(self, strategy) -> None:
        encoded, lengths = strategy.mb_output
        self.update(greedy_decode(strategy.model, encoded, lengths, self.tokenizer), strategy.mbatch.texts)

    def after_eval_forward(self, strategy) -> None:
        """Where each utterance of the batch belongs: with several processes, each holds its part
        of every batch (None: a stand-in that counts nowhere)."""
        positions = strategy.mbatch.positions or [0] * len(strategy.mbatch.texts)
        here = distributed.rank()
        self.order.extend((self._batches, here, row) if p >= 0 else None for row, p in enumerate(positions))
        self._batches += 1

    def after_eval_exp(self, strategy) -> list[MetricValue]:
        index = strategy.experience.current_experience
        # With several processes each saw its part of the test set: all of it, in order, here.
        self.references, self.hypotheses = distributed.gather_transcripts(self.order, self.references, self.hypotheses)
        # The WER from the per-utterance counts: one alignment of the test set, not a second
        # one in jiwer.wer (the same integers summed, so the same value to the bit).
        self.edits[index] = _checked_edits(self.references, self.hypotheses)
        value = corpus_wer(np.asarray(self.edits[index], dtype=np.int64))
        self.results[index] = value
        name = f"WER_Exp/eval_phase/{strategy.experience.origin_stream.name}_stream/Exp{index:03d}"
        task = getattr(strategy.experience, "task_name", None)
        if task or index < len(self.columns):
            name += f"_{task or self.columns[index]}"
        return [MetricValue(self, name, value, strategy.clock.train_exp_counter)]

    def __str__(self) -> str:
        return "WER"
