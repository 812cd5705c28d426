"""Single-task adapters shared between runs: knowledge extraction done once per sweep.

An adapter's training reads only the frozen base model, its task's training data, the
extraction settings and the seed; the combiner, the other adapters and the strategy never
enter it. So every adapter strategy of a sweep (oracle, Avg, WAvg, fusion and its ablations,
the router) can reuse the adapters the first of them trained, which is most of their cost.

Reuse is exact, not approximate: the extraction phase starts from an adapter initialised
from (seed, task) and is itself seeded from (seed, task) (AdapterStrategy; the task by its place
in the stream file, so runs in another task order share it too), so a reused
adapter holds the weights this run would have trained, bit for bit on the same thread count.
The key holds everything else the weights depend on: RunConfig's groups in EXTRACTION_GROUPS
and the extraction options (ExtractionOptions in training/adapters.py).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import RunConfig, fields_of, precision_key
from ..cache import EntryLock

VERSION = 2  # 2: the encoder zeroes padded frames before its depthwise convolutions
# RunConfig's groups an adapter trained alone on its task depends on (continual_asr/config.py's
# GROUPS): the base model's architecture and pretraining (also in the base fingerprint), the
# training batches and data and the arithmetic; beside them, every extraction option. A field
# added to one of these groups, or to ExtractionOptions, joins the key by itself; composition,
# routing, the whole-model baselines, evaluation and execution never enter it.
EXTRACTION_GROUPS = ("model", "head", "pretraining", "training", "data", "numerics")


@dataclass(frozen=True)
class ExtractionCache:
    """Adapters in ``folder``, keyed by base model, task data, extraction config and seed."""

    folder: Path
    base_fingerprint: str  # continual_asr.adapter_files.base_fingerprint of the base weights
    train_digests: dict[str, str]  # task name -> content hash of its training data
    tokenizer_fingerprint: str  # StreamData.fingerprint: base data and tokenizer (token ids)
    config: RunConfig
    extraction: dict  # the extraction options (training/adapters.py's ExtractionOptions) and their values
    seed: int
    _building: dict = field(default_factory=dict, compare=False, repr=False)  # (task, position) -> EntryLock

    def key(self, task: str, position: int) -> str:
        config = self.config.key_subset(fields_of(*EXTRACTION_GROUPS))
        config.update(precision_key(config.pop("cpu_precision")))
        payload = {
            "version": VERSION, "base": self.base_fingerprint, "task": task, "position": position,
            "data": self.train_digests.get(task), "tokens": self.tokenizer_fingerprint, "seed": self.seed,
            "config": {**config, **self.extraction},
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def path(self, task: str, position: int) -> Path:
        return self.folder / f"{task}-{self.key(task, position)}.pt"

    def claim(self, task: str, position: int) -> tuple[list[dict[str, torch.Tensor]], float] | None:
        """Per layer the adapter's parameters, and the seconds its training took; or None, and
        then this process holds the entry's lock until :meth:`save` (or :meth:`release`): another
        run that needs this adapter meanwhile waits for it instead of training it too."""
        lock = EntryLock(self.path(task, position), "cached adapter").acquire()
        found = lock.load(_read_adapter)
        if found is not None:
            lock.release()
            return found
        self._building[task, position] = lock
        return None

    def save(self, task: str, position: int, layers: list[dict[str, torch.Tensor]], seconds: float) -> None:
        lock = self._building.pop((task, position), None) or EntryLock(self.path(task, position),
                                                                        "cached adapter").acquire()
        payload = {"layers": [{k: v.detach().cpu().clone() for k, v in layer.items()} for layer in layers],
                   "seconds": round(seconds, 2), "task": task, "seed": self.seed}
        try:
            lock.build(lambda built: torch.save(payload, built))
        finally:
            lock.release()

    def release(self) -> None:
        """Give up the entries claimed and not saved (a run that stopped part way)."""
        for lock in self._building.values():
            lock.release()
        self._building.clear()


def _read_adapter(path: Path) -> tuple[list[dict[str, torch.Tensor]], float]:
    stored = torch.load(path, weights_only=True, map_location="cpu")
    return stored["layers"], float(stored["seconds"])
