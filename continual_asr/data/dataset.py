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

    Sorting by length removes most padding; the batches are fixed, and only their order is
    shuffled each epoch (seeded), so the number of steps per epoch is known in advance.
    """

    def __init__(self, lengths: Sequence[int], max_frames: int, shuffle: bool, seed: int = 0) -> None:
        order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
        self.batches: list[list[int]] = []
        current: list[int] = []
        for index in order:
            if current and lengths[index] * (len(current) + 1) > max_frames:
                self.batches.append(current)
                current = []
            current.append(index)
        if current:
            self.batches.append(current)
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[int]]:
        if not self.shuffle:
            yield from self.batches
            return
        generator = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        self.epoch += 1
        for i in torch.randperm(len(self.batches), generator=generator).tolist():
            yield self.batches[i]
