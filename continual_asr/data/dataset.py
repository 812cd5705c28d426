"""In-memory speech datasets, padding collate and length-bucketed batching for Avalanche.

A sample is (features (T, F) float16, token ids (S,), transcript str, task id int). The task id
is the column of the WER matrix the utterance belongs to (0 = base task, k = k-th stream task,
-1 = zero-shot); only the oracle strategy ever feeds it to the model.

With several processes (continual_asr/distributed.py) each one loads its part of every batch
through :class:`ShardedBatchSampler` and :class:`ShardView`: the batch then also says where its
utterances are in the dataset and what share of the global batch it holds.
"""

from __future__ import annotations

from typing import Iterator, NamedTuple, Sequence

import torch
from avalanche.benchmarks.utils import AvalancheDataset
from avalanche.benchmarks.utils.data_attribute import DataAttribute
from torch.utils.data import Dataset, Sampler

from .features import SplitFeatures
from .tokenizer import Tokenizer


class SpeechBatch(NamedTuple):
    features: torch.Tensor  # (B, T, F) float32, zero-padded
    feature_lengths: torch.Tensor  # (B,)
    targets: torch.Tensor  # (B, S) token ids, zero-padded
    target_lengths: torch.Tensor  # (B,)
    task_ids: torch.Tensor  # (B,)
    texts: list[str]
    # Only for one process's part of a global batch (ShardedBatchSampler): each utterance's index
    # in the dataset (-1: a stand-in that only keeps a rank without utterances in step, whose
    # outputs count nowhere), and this part's share of the global batch's utterances.
    positions: list[int] | None = None
    share: float = 1.0

    def to(self, device: torch.device) -> "SpeechBatch":
        return SpeechBatch(*(t.to(device, non_blocking=True) for t in self[:5]), *self[5:])


class SpeechDataset(Dataset):
    def __init__(self, split: SplitFeatures, tokenizer: Tokenizer, task_id: int) -> None:
        self.features = split.features
        self.texts = split.texts
        self.tokens = [torch.tensor(tokenizer.encode(t), dtype=torch.long) for t in split.texts]
        self.task_id = task_id

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int):
        return self.features[index], self.tokens[index], self.texts[index], self.task_id


def collate(samples: Sequence[tuple]) -> SpeechBatch:
    """Zero-padded batch of samples; samples from a :class:`ShardView` (seven fields) are padded
    to their global batch's longest utterance and keep their positions and share."""
    features, tokens, texts, task_ids = list(zip(*samples))[:4]
    padded = torch.nn.utils.rnn.pad_sequence([f.float() for f in features], batch_first=True)
    positions, share = None, 1.0
    if len(samples[0]) == 7:
        pad_to, positions, shares = list(zip(*samples))[4:]
        padded = torch.nn.functional.pad(padded, (0, 0, 0, max(pad_to) - padded.shape[1]))
        positions, share = list(positions), float(shares[0])
    return SpeechBatch(
        features=padded,
        feature_lengths=torch.tensor([f.shape[0] for f in features]),
        targets=torch.nn.utils.rnn.pad_sequence(list(tokens), batch_first=True),
        target_lengths=torch.tensor([len(t) for t in tokens]),
        task_ids=torch.tensor(task_ids),
        texts=list(texts),
        positions=positions,
        share=share,
    )


def make_dataset(split: SplitFeatures, tokenizer: Tokenizer, task_id: int) -> AvalancheDataset:
    """An AvalancheDataset whose ``num_frames`` attribute survives subset and concat."""
    return AvalancheDataset(
        [SpeechDataset(split, tokenizer, task_id)],
        data_attributes=[DataAttribute(split.num_frames, "num_frames")],
        collate_fn=collate,
    )


def evaluation_order(lengths: Sequence[int]) -> list[int]:
    """The order evaluation visits a split's utterances in: by length, ties in manifest order.
    Every per-utterance record of a run (edits.json) is in this order."""
    return torch.argsort(torch.tensor(list(lengths), dtype=torch.float64), stable=True).tolist()


class FrameBudgetBatchSampler(Sampler[list[int]]):
    """Batches of similar-length utterances holding at most ``max_frames`` padded frames.

    Sorting by length removes most padding. When shuffling, each epoch sorts by lengths times a
    seeded random factor within ``1 +- jitter / 2`` (+-10 % by default), so batches change from
    epoch to epoch and repeated utterances (a balanced memory) do not end up in one batch, and the
    batch order is shuffled. The price is padding: 9 % of the default stream's padded frames at
    +-10 %, 0.5 % sorted exactly (experiments/bench_data_loading.py).
    """

    def __init__(self, lengths: Sequence[int], max_frames: int, shuffle: bool, seed: int = 0,
                 jitter: float = 0.2) -> None:
        self.lengths = torch.tensor(list(lengths), dtype=torch.float64)
        self.max_frames = max_frames
        self.shuffle = shuffle
        self.jitter = jitter
        self.seed = seed
        self.epoch = 0
        self._length = len(self._plan(self._generator(0)))

    def _generator(self, epoch: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 100003 + epoch)

    def _plan(self, generator: torch.Generator | None) -> list[list[int]]:
        if generator is None:
            order = evaluation_order(self.lengths.tolist())
        else:
            jitter = 1 + self.jitter * (torch.rand(len(self.lengths), generator=generator, dtype=torch.float64) - 0.5)
            order = torch.argsort(self.lengths * jitter, stable=True).tolist()
        batches: list[list[int]] = []
        current: list[int] = []
        longest = 0
        lengths = self.lengths.tolist()
        for index in order:
            length = int(lengths[index])
            if current and max(longest, length) * (len(current) + 1) > self.max_frames:
                batches.append(current)
                current, longest = [], 0
            current.append(index)
            longest = max(longest, length)
        if current:
            batches.append(current)
        return batches

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[list[int]]:
        if not self.shuffle:
            yield from self._plan(None)
            return
        generator = self._generator(self.epoch)
        self.epoch += 1
        batches = self._plan(generator)
        for i in torch.randperm(len(batches), generator=generator).tolist():
            yield batches[i]


class ShardedBatchSampler(Sampler[list[tuple[int, int, int, float]]]):
    """One process's part of every batch of ``batches`` (which every process builds alike).

    Each global batch (length-sorted) is split into ``world_size`` contiguous parts, as even as
    possible (the first ``B mod world_size`` parts one utterance longer); this rank yields its
    part, each item (dataset index, global batch's longest utterance in frames, position,
    share of the global batch's utterances), for :class:`ShardView`. Every rank yields the same
    number of batches, ``len(batches)``. A rank whose part is empty (a global batch of fewer
    utterances than processes) gets the batch's first utterance as a stand-in: position -1,
    share 0, so it computes in step with the others and counts nowhere.
    """

    def __init__(self, batches: FrameBudgetBatchSampler, rank: int, world_size: int) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside a world of {world_size}")
        self.batches = batches
        self.lengths = batches.lengths.tolist()
        self.rank = rank
        self.world_size = world_size

    def __len__(self) -> int:
        return len(self.batches)

    def part(self, batch: list[int]) -> list[tuple[int, int, int, float]]:
        longest = int(max(self.lengths[i] for i in batch))
        size, extra = divmod(len(batch), self.world_size)
        start = self.rank * size + min(self.rank, extra)
        mine = batch[start: start + size + (1 if self.rank < extra else 0)]
        if not mine:
            return [(batch[0], longest, -1, 0.0)]
        return [(index, longest, index, len(mine) / len(batch)) for index in mine]

    def __iter__(self) -> Iterator[list[tuple[int, int, int, float]]]:
        for batch in self.batches:
            yield self.part(batch)


class ShardView(Dataset):
    """``dataset`` indexed by :class:`ShardedBatchSampler` items: a sample plus its padding
    target, position and share (what :func:`collate` needs to build a part of a global batch)."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int, int, float]):
        index, longest, position, share = item
        return (*self.dataset[index], longest, position, share)
