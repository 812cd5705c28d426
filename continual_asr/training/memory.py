"""A small per-task memory of earlier tasks' training utterances (knowledge composition data)."""

from __future__ import annotations

import torch
from avalanche.benchmarks.utils import AvalancheDataset


class TaskMemory:
    """Keeps a fixed random sample of ``per_task`` utterances from each task it is given."""

    def __init__(self, per_task: int, seed: int = 0) -> None:
        self.per_task = per_task
        self.seed = seed
        self.parts: list[AvalancheDataset] = []

    def __len__(self) -> int:
        return sum(len(part) for part in self.parts)

    def add(self, dataset: AvalancheDataset) -> None:
        if self.per_task == 0:
            return
        generator = torch.Generator().manual_seed(self.seed * 7919 + len(self.parts))
        chosen = torch.randperm(len(dataset), generator=generator)[: self.per_task]
        self.parts.append(dataset.subset(sorted(chosen.tolist())))

    def dataset(self) -> AvalancheDataset | None:
        if not self.parts:
            return None
        merged = self.parts[0]
        for part in self.parts[1:]:
            merged = merged.concat(part)
        return merged

    def with_dataset(self, dataset: AvalancheDataset) -> AvalancheDataset:
        """``dataset`` plus everything remembered."""
        remembered = self.dataset()
        return dataset if remembered is None else dataset.concat(remembered)

    def balanced_with(self, dataset: AvalancheDataset) -> AvalancheDataset:
        """``dataset`` plus every remembered task repeated to about the same size.

        Composition trains on the new task's full data; without balancing, its 10x larger share
        would teach the combiner to favour the newest adapter and forget the others.
        """
        merged = dataset
        for part in self.parts:
            repeats = max(1, round(len(dataset) / max(1, len(part))))
            merged = merged.concat(part.subset(list(range(len(part))) * repeats))
        return merged
