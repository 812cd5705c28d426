"""In-memory speech datasets, padding collate and length-bucketed batching for Avalanche.

A sample is (features (T, F) float16, token ids (S,), transcript str, task id int). The task id
is the column of the WER matrix the utterance belongs to (0 = base task, k = k-th stream task,
-1 = zero-shot); only the oracle strategy ever feeds it to the model.
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

    def to(self, device: torch.device) -> "SpeechBatch":
        return SpeechBatch(*(t.to(device, non_blocking=True) for t in self[:5]), self.texts)


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
    features, tokens, texts, task_ids = zip(*samples)
    return SpeechBatch(
        features=torch.nn.utils.rnn.pad_sequence([f.float() for f in features], batch_first=True),
        feature_lengths=torch.tensor([f.shape[0] for f in features]),
        targets=torch.nn.utils.rnn.pad_sequence(list(tokens), batch_first=True),
        target_lengths=torch.tensor([len(t) for t in tokens]),
        task_ids=torch.tensor(task_ids),
        texts=list(texts),
    )


def make_dataset(split: SplitFeatures, tokenizer: Tokenizer, task_id: int) -> AvalancheDataset:
    """An AvalancheDataset whose ``num_frames`` attribute survives subset and concat."""
    return AvalancheDataset(
        [SpeechDataset(split, tokenizer, task_id)],
        data_attributes=[DataAttribute(split.num_frames, "num_frames")],
        collate_fn=collate,
    )


class FrameBudgetBatchSampler(Sampler[list[int]]):
    """Batches of similar-length utterances holding at most ``max_frames`` padded frames.

    Sorting by length removes most padding. When shuffling, each epoch sorts by lengths jittered
    by +-10% (seeded), so batches change from epoch to epoch and repeated utterances (a
    balanced memory) do not end up in one batch, and the batch order is shuffled.
    """

    def __init__(self, lengths: Sequence[int], max_frames: int, shuffle: bool, seed: int = 0) -> None:
        self.lengths = torch.tensor(list(lengths), dtype=torch.float64)
        self.max_frames = max_frames
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self._length = len(self._plan(self._generator(0)))

    def _generator(self, epoch: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 100003 + epoch)

    def _plan(self, generator: torch.Generator | None) -> list[list[int]]:
        keys = self.lengths
        if generator is not None:
            keys = keys * (1 + 0.2 * (torch.rand(len(keys), generator=generator, dtype=torch.float64) - 0.5))
        order = torch.argsort(keys, stable=True).tolist()
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
