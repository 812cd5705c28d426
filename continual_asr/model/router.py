"""An utterance-level task router: which single-task adapter (or none) an utterance goes through.

A learned alternative to fusion (beyond the paper): instead of mixing adapters frame by frame,
classify the whole utterance into {base task / no adapter, task 1..N} and send it through that
one adapter, as oracle routing does with the true task. The features are the statistics pooling
(mean and std over frames) of every layer's output of the frozen base encoder without
adapters (ConformerASR.pooled_base_features), so routing
costs one extra adapter-free pass and never depends on the adapters it chooses between.
The router trains on the composition data (memory plus the new task, balanced); since the base
is frozen, the pooled features are computed once per task and the small classifier trains on
them for many epochs at almost no cost.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

BATCH = 32  # utterances per router update: small batches, many cheap steps


class TaskRouter(nn.Module):
    """Pooled (B, F) features -> logits over {no adapter, adapter 0, ..., adapter N-1}.

    Hard routing: each utterance goes through the adapter of its most probable class (class 0:
    none). ``resize`` adds an output class per new adapter, keeping what was learned for the
    others, so the router warm-starts from one task to the next.
    """

    def __init__(self, features: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(features), nn.Linear(features, hidden), nn.GELU())
        self.out = nn.Linear(hidden, 1)  # class 0, "no adapter", exists from the start
        self.last_routes: torch.Tensor | None = None  # the latest decisions, for the routing-accuracy log

    @property
    def num_classes(self) -> int:
        return self.out.out_features

    def resize(self, num_adapters: int) -> None:
        """One class per adapter plus "no adapter"; called when the bank grows."""
        if num_adapters + 1 < self.num_classes:
            raise ValueError(f"a router over {self.num_classes - 1} adapters cannot shrink to {num_adapters}")
        if num_adapters + 1 == self.num_classes:
            return
        old = self.out
        self.out = nn.Linear(old.in_features, num_adapters + 1).to(old.weight.device)
        with torch.no_grad():
            self.out.weight[: old.out_features] = old.weight
            self.out.bias[: old.out_features] = old.bias
        self.out.requires_grad_(old.weight.requires_grad)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.out(self.net(pooled))

    def fit(self, pooled: torch.Tensor, labels: torch.Tensor, epochs: int, lr: float, weight_decay: float,
            seed: int = 0) -> None:
        """Train on precomputed features (N, F) and classes (N,): AdamW, one-cycle schedule."""
        parameters = [p for p in self.parameters() if p.requires_grad]
        if epochs <= 0 or not parameters or len(labels) == 0:
            return
        optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
        steps_per_epoch = math.ceil(len(labels) / BATCH)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(2, epochs * steps_per_epoch),
                                                        pct_start=0.15, anneal_strategy="cos")
        generator = torch.Generator().manual_seed(seed)
        self.train()
        for _ in range(epochs):
            for rows in torch.randperm(len(labels), generator=generator).split(BATCH):
                rows = rows.to(pooled.device)
                optimizer.zero_grad(set_to_none=True)
                F.cross_entropy(self(pooled[rows]), labels[rows]).backward()
                optimizer.step()
                if scheduler.last_epoch + 1 < scheduler.total_steps:
                    scheduler.step()
        self.eval()

    @torch.no_grad()
    def route(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B,) adapter index per utterance, -1 for none."""
        self.last_routes = self(pooled).argmax(dim=-1) - 1
        return self.last_routes
