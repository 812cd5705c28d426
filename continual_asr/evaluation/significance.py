"""Which differences are real: per-utterance edit counts and paired bootstrap intervals.

A test set of a few hundred utterances measures a WER near 45 % to within a point or more, so a
difference between two strategies means little without an interval. Every run keeps, per test
set and step, each utterance's reference words, substitutions, deletions and insertions
(``edits.json`` in the run folder); the intervals below come from those alone.

Paired bootstrap (Koehn 2004; Bisani and Ney 2004): resample the utterances of every test set
with replacement, the same resample for both systems (they are scored on the same utterances),
recompute each system's corpus WER per test set, and take the 2.5th and 97.5th percentiles of
the difference over ``resamples`` draws. Several runs of one system (seeds, task orders) are
pooled by averaging their WERs within each draw. A difference is significant when its interval
excludes zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import jiwer
import numpy as np

from ..data.text import normalize_text

RESAMPLES = 1000
SEED = 0
LEVEL = 0.95


def utterance_edits(references: Sequence[str], hypotheses: Sequence[str]) -> list[list[int]]:
    """Per utterance [reference words, substitutions, deletions, insertions], after the
    project's one normalisation (the WER's own)."""
    refs = [normalize_text(r) for r in references]
    hyps = [normalize_text(h) for h in hypotheses]
    out = jiwer.process_words(refs, hyps)
    counts = []
    for ref, chunks in zip(out.references, out.alignments):
        edits = {"substitute": 0, "delete": 0, "insert": 0}
        for chunk in chunks:
            if chunk.type in edits:
                span = chunk.ref_end_idx - chunk.ref_start_idx if chunk.type != "insert" else \
                    chunk.hyp_end_idx - chunk.hyp_start_idx
                edits[chunk.type] += span
        counts.append([len(ref), edits["substitute"], edits["delete"], edits["insert"]])
    return counts


def corpus_wer(edits: np.ndarray) -> float:
    """WER % of (utterances, 4) edit counts (divided before scaling, as jiwer.wer does: the same
    value to the bit)."""
    return 100.0 * (float(edits[:, 1:].sum()) / float(edits[:, 0].sum()))


@dataclass(frozen=True)
class Interval:
    difference: float  # system minus baseline, in WER points (negative: the system is better)
    low: float
    high: float

    @property
    def significant(self) -> bool:
        return self.low > 0 or self.high < 0


class DifferentTestSets(ValueError):
    """Two runs hold different numbers of utterances of one test set: they cannot be paired."""


def paired_bootstrap(system: Sequence[dict[str, np.ndarray]], baseline: Sequence[dict[str, np.ndarray]],
                     test_sets: Sequence[str], resamples: int = RESAMPLES, seed: int = SEED,
                     level: float = LEVEL, shared_draws: bool = False) -> Interval:
    """The difference of mean WER over ``test_sets`` (each run's WER averaged over the sets,
    then over its system's runs) between ``system`` and ``baseline``, with its bootstrap
    interval. Each run is {test set: (units, 4) edit counts}; every run must hold the same
    units of each set (runs of one stream). A unit is an utterance, or the summed counts of a
    cluster of them (a speaker's, say: a cluster bootstrap). ``shared_draws``: one draw of unit
    positions for every set, for units that are the same speakers in every set in one order."""
    sizes = {}
    for run in [*system, *baseline]:
        for name in test_sets:
            if name not in run:
                raise ValueError(f"a run has no per-utterance edits for test set {name}")
            if sizes.setdefault(name, len(run[name])) != len(run[name]):
                raise DifferentTestSets(f"test set {name} has {len(run[name])} utterances in one run and {sizes[name]} "
                                 "in another: not the same test set")
    rng = np.random.default_rng(seed)
    full = {s: np.arange(n)[None, :] for s, n in sizes.items()}
    if shared_draws:
        if len(set(sizes.values())) > 1:
            raise ValueError(f"shared draws need as many units in every set, not {sorted(set(sizes.values()))}")
        units = next(iter(sizes.values()))
        shared = rng.integers(0, units, (resamples, units))
        picks = {s: shared for s in sizes}
    else:
        picks = {s: rng.integers(0, n, (resamples, n)) for s, n in sizes.items()}  # one resample per row

    def mean_wer(runs: Sequence[dict[str, np.ndarray]], rows: dict[str, np.ndarray]) -> np.ndarray:
        """Per resample, the runs' mean over the test sets of each set's corpus WER."""
        per_run = []
        for run in runs:
            per_set = []
            for name in test_sets:
                errors, words = run[name][:, 1:].sum(axis=1), run[name][:, 0]
                per_set.append(100.0 * errors[rows[name]].sum(axis=1) / words[rows[name]].sum(axis=1))
            per_run.append(np.mean(per_set, axis=0))
        return np.mean(per_run, axis=0)

    observed = float((mean_wer(system, full) - mean_wer(baseline, full))[0])
    draws = mean_wer(system, picks) - mean_wer(baseline, picks)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(draws, [tail, 100 - tail])
    return Interval(round(observed, 4), round(float(low), 4), round(float(high), 4))
