"""Length-bucketed training batches: the jitter that varies them from epoch to epoch, and its padding."""

import random

import pytest
import torch

from continual_asr.data.dataset import FrameBudgetBatchSampler

RANDOM = random.Random(0)
LENGTHS = [RANDOM.randint(150, 900) for _ in range(600)]


def padding_share(sampler: FrameBudgetBatchSampler, epochs: int = 3) -> float:
    padded = real = 0
    for _ in range(epochs):
        for batch in sampler:
            padded += max(LENGTHS[i] for i in batch) * len(batch)
            real += sum(LENGTHS[i] for i in batch)
    return 1 - real / padded


def in_plan_order(batches: list[list[int]], order: list[int]) -> list[int]:
    """The batches' utterances, the batches put back in the order they were cut from ``order``."""
    position = {utterance: k for k, utterance in enumerate(order)}
    return [i for batch in sorted(batches, key=lambda b: position[b[0]]) for i in batch]


def test_the_default_jitter_plans_the_batches_it_always_did():
    """jitter=0.2 is the spread that was fixed before it became batch_length_jitter: same batches."""
    sampler = FrameBudgetBatchSampler(LENGTHS, 6000, shuffle=True, seed=5)
    factor = 1 + 0.2 * (torch.rand(len(LENGTHS), generator=sampler._generator(0), dtype=torch.float64) - 0.5)
    order = torch.argsort(torch.tensor(LENGTHS, dtype=torch.float64) * factor, stable=True).tolist()
    assert in_plan_order(list(sampler), order) == order


def test_less_jitter_pads_less_and_none_sorts_exactly():
    shares = [padding_share(FrameBudgetBatchSampler(LENGTHS, 6000, shuffle=True, seed=1, jitter=j))
              for j in (0.4, 0.2, 0.05, 0.0)]
    assert shares == sorted(shares, reverse=True) and shares[0] > 2 * shares[-1], shares
    by_length = torch.argsort(torch.tensor(LENGTHS), stable=True).tolist()
    for _ in range(2):  # the same batches every epoch, in another order
        assert in_plan_order(list(FrameBudgetBatchSampler(LENGTHS, 6000, True, seed=1, jitter=0.0)),
                             by_length) == by_length


@pytest.mark.parametrize("jitter", [0.2, 0.0])
def test_every_utterance_is_in_one_batch_an_epoch_whatever_the_jitter(jitter):
    sampler = FrameBudgetBatchSampler(LENGTHS, 6000, shuffle=True, seed=2, jitter=jitter)
    for _ in range(2):
        batches = list(sampler)
        assert sorted(i for batch in batches for i in batch) == list(range(len(LENGTHS)))
        assert all(max(LENGTHS[i] for i in batch) * len(batch) <= 6000 for batch in batches)
