"""Learned routing (beyond the paper): an utterance-level task classifier sends each utterance
through one adapter (or none), trained on the memory plus the new task; no task ID at test time.

The combiners route like the oracle; the router, not the true task, gives the route. After each
task the router is fitted on the composition data (memory plus the new task): the pooled
features of the frozen base encoder once, then ``router_epochs`` epochs of a small MLP over them
(seconds). ``run.log`` gets its routing accuracy on that data and on every test set.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import torch
from avalanche.benchmarks.utils import AvalancheDataset
from avalanche.core import SupervisedPlugin

from continual_asr import distributed
from continual_asr.config import RunConfig, option
from continual_asr.model import AdaptableASR, OracleRouting, TaskRouter
from continual_asr.registry import register_strategy
from continual_asr.training.adapters import AdapterStrategy, ExtractionOptions
from continual_asr.training.memory import MemoryOptions

log = logging.getLogger("continual_asr")


@dataclass
class RouterOptions(ExtractionOptions, MemoryOptions):
    router_epochs: int = option(
        "router", 30, "epochs of router training after each task (on the task-balanced data's pooled features, "
                      "computed once)", min=0)
    router_lr: float = option("router", 3e-3, "peak learning rate of router training", min=0.0)
    router_hidden: int = option("router", 64, "hidden units of the router's utterance classifier", min=1)


@dataclass
class RouterFitting:
    """Fits the strategy's router on the composition data after each task (AdapterStrategy's
    ``fit_router``)."""

    epochs: int
    learning_rate: float

    def __call__(self, strategy: AdapterStrategy, data: AvalancheDataset) -> None:
        pooled, labels, task_ids = [], [], []
        strategy.model.eval()
        for batch in strategy.loader(data, strategy.config.eval_batch_frames, shuffle=False):
            batch = batch.to(strategy.device)
            pooled.append(strategy.model.pooled_base_features(batch.features, batch.feature_lengths))
            labels.append(strategy.adapter_routes(batch.task_ids) + 1)  # class 0: no adapter
            task_ids.append(batch.task_ids)
        pooled, labels, task_ids = torch.cat(pooled), torch.cat(labels), torch.cat(task_ids)
        router = strategy.router
        router.requires_grad_(True)
        strategy.trained_parameters.update({id(p): p.numel() for p in router.parameters()})
        router.fit(pooled, labels, self.epochs, self.learning_rate, strategy.config.weight_decay,
                   seed=strategy.seed * 1000 + len(strategy.model.adapter_tasks))
        router.requires_grad_(False)
        with torch.no_grad():
            right = router(pooled).argmax(dim=-1) == labels
        names = strategy.model.adapter_tasks
        shares = ", ".join(f"{names[strategy.task_adapters[t]] if t in strategy.task_adapters else 'base'} "
                           f"{100 * float(right[task_ids == t].float().mean()):.0f}%" for t in task_ids.unique().tolist())
        log.info("router: %.1f%% of the composition data routed right after training (%s)",
                 100 * float(right.float().mean()), shares)


class RoutingLog(SupervisedPlugin, supports_distributed=True):  # gathers every rank's counts
    """Logs, per evaluated task, how often the router chose the right adapter (the zero-shot
    task has none: its utterances' destinations are logged instead)."""

    def before_eval_exp(self, strategy, **kwargs) -> None:
        self.choices: Counter = Counter()
        self.hits = 0
        self.total = 0

    def after_eval_iteration(self, strategy, **kwargs) -> None:
        router = strategy.model.router
        if router is None or router.last_routes is None:
            return
        task_ids = strategy.mbatch.task_ids
        chosen = router.last_routes.to(task_ids.device)
        if strategy.mbatch.positions is not None:  # one process's part of a batch: stand-ins count nowhere
            real = torch.tensor(strategy.mbatch.positions, device=task_ids.device) >= 0
            task_ids, chosen = task_ids[real], chosen[real]
        self.choices.update(chosen.tolist())
        known = task_ids >= 0
        self.hits += int((chosen == strategy.adapter_routes(task_ids))[known].sum())
        self.total += int(known.sum())

    def after_eval_exp(self, strategy, **kwargs) -> None:
        if distributed.is_active():  # every process's counts
            parts = distributed.gather_objects((self.choices, self.hits, self.total))
            self.choices = sum((part[0] for part in parts), Counter())
            self.hits, self.total = sum(part[1] for part in parts), sum(part[2] for part in parts)
        if not self.choices:
            return
        name = getattr(strategy.experience, "task_name", strategy.experience.current_experience)
        if self.total:
            log.info("router on %s: %.1f%% routed to the right adapter", name, 100 * self.hits / self.total)
        else:
            names = strategy.model.adapter_tasks
            shares = ", ".join(f"{names[k] if k >= 0 else 'no adapter'} {100 * n / sum(self.choices.values()):.0f}%"
                               for k, n in self.choices.most_common())
            log.info("router on %s (no adapter of its own): %s", name, shares)


@register_strategy("adapter-router", "learned routing: a task classifier on pooled base-encoder features picks one adapter per utterance",
                   options=RouterOptions, extracts_adapters=True)
def adapter_router(model: AdaptableASR, config: RunConfig, options: RouterOptions, plugins=None,
                   **common) -> AdapterStrategy:
    return AdapterStrategy(model=model, config=config, make_combiner=lambda layer: OracleRouting(),
                           extraction=options, memory_per_task=options.memory_per_task,
                           router=TaskRouter(2 * model.d_model * model.num_layers, options.router_hidden),
                           fit_router=RouterFitting(options.router_epochs, options.router_lr),
                           plugins=[*(plugins or []), RoutingLog()], **common)
