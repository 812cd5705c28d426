"""Per-utterance edit counts and paired bootstrap intervals."""

import numpy as np
import pytest

from continual_asr.evaluation.significance import corpus_wer, paired_bootstrap, utterance_edits
from continual_asr.evaluation.wer import word_error_rate


def test_edit_counts_per_utterance_add_up_to_the_corpus_wer():
    refs = ["the cat sat", "a b c d", "one two three four five"]
    hyps = ["the bat sat on", "a c d", "one two three four five"]
    edits = utterance_edits(refs, hyps)
    assert edits == [[3, 1, 0, 1], [4, 0, 1, 0], [5, 0, 0, 0]]
    assert corpus_wer(np.array(edits)) == pytest.approx(word_error_rate(refs, hyps))


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
