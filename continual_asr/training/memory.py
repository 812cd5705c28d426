"""A small per-task memory of earlier tasks' training utterances (knowledge composition data)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from avalanche.benchmarks.utils import AvalancheDataset

from ..config import Options, option


@dataclass
class MemoryOptions(Options):
    """The options of a strategy that keeps a memory of earlier tasks' utterances."""

    memory_per_task: int = option(
        "memory", 100, "utterances kept from each earlier task (base included) for composition", min=0)


class TaskMemory:
    """Keeps a fixed random sample of ``per_task`` utterances from each task it is given.

    ``seen`` also lists every task's full training data, in the order given (the base task
    first): only the joint baseline and composition on all data (the paper's protocol) read it,
    both ignoring the memory limit by design. Holding it costs nothing, the datasets are in
    memory for the run anyway.
    """

    def __init__(self, per_task: int, seed: int = 0) -> None:
        self.per_task = per_task
        self.seed = seed
        self.parts: list[AvalancheDataset] = []
        self.seen: list[AvalancheDataset] = []

    def __len__(self) -> int:
        return sum(len(part) for part in self.parts)

    def add(self, dataset: AvalancheDataset) -> None:
        self.seen.append(dataset)
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

    def balanced_with(self, dataset: AvalancheDataset, everything: bool = False) -> AvalancheDataset:
        """``dataset`` plus every remembered task (``everything``: every earlier task's full
        training data instead) repeated to about the same size, never cut.

        Composition trains on the new task's full data; without balancing, its 10x larger share
        would teach the combiner to favour the newest adapter and forget the others.
        """
        merged = dataset
        for part in self.seen if everything else self.parts:
            repeats = max(1, round(len(dataset) / max(1, len(part))))
            merged = merged.concat(part.subset(list(range(len(part))) * repeats))
        return merged

    def sample_seen(self, dataset: AvalancheDataset, size: int, everything: bool = True) -> AvalancheDataset:
        """``size`` utterances drawn evenly from ``dataset`` (the new task) and every earlier task:
        its full training data, or with ``everything=False`` its remembered utterances.

        Each task contributes size / tasks utterances, a seeded random permutation of its data,
        cycled when the task is smaller than its share: balanced, so the larger base task does
        not drown the newest one, and of a fixed size, so the cost does not grow with the tasks.
        """
        tasks = [*(self.seen if everything else self.parts), dataset]
        generator = torch.Generator().manual_seed(self.seed * 104729 + len(self.seen))
        merged: AvalancheDataset | None = None
        for i, task in enumerate(tasks):
            share = size // len(tasks) + (1 if i < size % len(tasks) else 0)
            if share == 0:
                continue
            order = torch.randperm(len(task), generator=generator).tolist()
            part = task.subset((order * (share // len(order) + 1))[:share])
            merged = part if merged is None else merged.concat(part)
        if merged is None:
            raise ValueError(f"cannot sample {size} utterances")
        return merged
