"""Single-task adapters shared between runs: knowledge extraction done once per sweep.

An adapter's training reads only the frozen base model, its task's training data, the
extraction settings and the seed; the combiner, the other adapters and the strategy never
enter it. So every adapter strategy of a sweep (oracle, Avg, WAvg, fusion and its ablations,
the router) can reuse the adapters the first of them trained, which is most of their cost.

Reuse is exact, not approximate: the extraction phase starts from an adapter initialised
from (seed, task) and is itself seeded from (seed, task) (AdapterStrategy), so a reused
adapter holds the weights this run would have trained, bit for bit on the same thread count.
The key holds everything else the weights depend on; config fields of composition,
routing, the whole-model baselines, evaluation and execution are left out of it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import RUNTIME_FIELDS, RunConfig
from ..cache import EntryLock

VERSION = 1
# Fields that cannot change an adapter trained alone on its task (over-keying is safe: a field
# missing here only costs a cache miss).
NOT_EXTRACTION = frozenset({
    "fusion_epochs", "fusion_lr", "fusion_layernorm", "fusion_null_adapter", "train_adapters", "memory_per_task",
    "composition_data", "composition_schedule", "fusion_warm_start", "fusion_value_reg", "fusion_decay",
    "fusion_temperature",
    "finetune_epochs", "finetune_lr", "ewc_lambda", "lwf_alpha", "lwf_temperature",
    "router_epochs", "router_lr", "router_hidden", "eval_batch_frames", "max_test_utterances", "rnnt_max_symbols",
    "pretrain_seed",  # the base model's fingerprint says which base it is
    *RUNTIME_FIELDS,
})


@dataclass(frozen=True)
class ExtractionCache:
    """Adapters in ``folder``, keyed by base model, task data, extraction config and seed."""

    folder: Path
    base_fingerprint: str  # continual_asr.adapter_files.base_fingerprint of the base weights
    train_digests: dict[str, str]  # task name -> content hash of its training data
    tokenizer_fingerprint: str  # StreamData.fingerprint: base data and tokenizer (token ids)
    config: RunConfig
    seed: int
    _building: dict = field(default_factory=dict, compare=False, repr=False)  # (task, position) -> EntryLock

    def key(self, task: str, position: int) -> str:
        payload = {
            "version": VERSION, "base": self.base_fingerprint, "task": task, "position": position,
            "data": self.train_digests.get(task), "tokens": self.tokenizer_fingerprint, "seed": self.seed,
            "config": {k: v for k, v in self.config.to_dict().items() if k not in NOT_EXTRACTION},
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
