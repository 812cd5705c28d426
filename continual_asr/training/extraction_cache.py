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
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import RUNTIME_FIELDS, RunConfig
from ..results import save_torch_atomic

log = logging.getLogger("continual_asr")
VERSION = 1
# Fields that cannot change an adapter trained alone on its task (over-keying is safe: a field
# missing here only costs a cache miss).
NOT_EXTRACTION = frozenset({
    "fusion_epochs", "fusion_lr", "fusion_layernorm", "fusion_null_adapter", "train_adapters", "memory_per_task",
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

    def key(self, task: str, position: int) -> str:
        payload = {
            "version": VERSION, "base": self.base_fingerprint, "task": task, "position": position,
            "data": self.train_digests.get(task), "tokens": self.tokenizer_fingerprint, "seed": self.seed,
            "config": {k: v for k, v in self.config.to_dict().items() if k not in NOT_EXTRACTION},
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def path(self, task: str, position: int) -> Path:
        return self.folder / f"{task}-{self.key(task, position)}.pt"

    def load(self, task: str, position: int) -> tuple[list[dict[str, torch.Tensor]], float] | None:
        """Per layer the adapter's parameters, and the seconds its training took; None if absent
        (or unreadable: then it is trained again and the file replaced)."""
        path = self.path(task, position)
        if not path.is_file():
            return None
        try:
            stored = torch.load(path, weights_only=True, map_location="cpu")
            return stored["layers"], float(stored["seconds"])
        except Exception as exc:  # a torn file from a killed writer cannot happen (atomic), a foreign one can
            log.warning("%s: unreadable cached adapter (%s); training it again", path, exc.__class__.__name__)
            return None

    def save(self, task: str, position: int, layers: list[dict[str, torch.Tensor]], seconds: float) -> None:
        save_torch_atomic({"layers": [{k: v.detach().cpu().clone() for k, v in layer.items()} for layer in layers],
                           "seconds": round(seconds, 2), "task": task, "seed": self.seed}, self.path(task, position))
