"""The adapter strategy family: frozen base, one new adapter per task, then a combiner.

Per experience: (1) knowledge extraction, a fresh zero-initialised adapter trained alone on the
new task with the base frozen; (2) knowledge composition, the combiner (re)trained on the new
task plus the memory of earlier tasks (base included, each repeated to the new task's size so
the combiner does not learn to favour the newest adapter), adapters frozen unless
``train_adapters``. Combiners whose parameters do not depend on the number of adapters
(fusion, Q/K/V are D x D) carry over from one task to the next: composition warm-starts; those
that do (weighted mean, the router) are resized as each adapter joins, before any optimizer.

With a router (adapter-router), the combiners route each utterance through one adapter and
composition trains the router to classify utterances into {no adapter, task 1..N} on the
same data; routing accuracy goes to the log.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Callable

import torch
from avalanche.core import SupervisedPlugin
from torch import nn

from ..model import ConformerASR, Resizable, SingleAdapter, TaskRouter
from .. import distributed
from ..errors import ConfigError
from .extraction_cache import ExtractionCache
from .template import SpeechTemplate, TrainingPhase, phase_seed

CombinerFactory = Callable[[int], nn.Module]
log = logging.getLogger("continual_asr")

# The config fields adapter strategies read (their registered options).
EXTRACTION_OPTIONS = ("adapter_dim", "adapter_epochs", "adapter_lr")
COMPOSITION_OPTIONS = EXTRACTION_OPTIONS + ("fusion_epochs", "fusion_lr", "train_adapters", "memory_per_task",
                                           "composition_data", "composition_schedule", "fusion_warm_start")


class AdapterStrategy(SpeechTemplate):
    """Base frozen; adapters per task; ``make_combiner(layer)`` gives the evaluation combiner.

    ``composition`` says whether the combiner has anything to learn (Adapter Mean and oracle
    routing do not, unless ``train_adapters`` is set). ``router``: route each utterance by this
    classifier, trained during composition (use it with oracle-routing combiners).
    ``extraction_cache``: single-task adapters shared with earlier runs (None: always train).
    """

    def __init__(self, *, model: ConformerASR, config, make_combiner: CombinerFactory,
                 composition: bool = True, router: TaskRouter | None = None,
                 extraction_cache: ExtractionCache | None = None, **common) -> None:
        if router is not None:
            common["plugins"] = [*(common.get("plugins") or []), RoutingLog()]
        super().__init__(model=model, config=config, **common)
        self.make_combiner = make_combiner
        self.combiners = nn.ModuleList(make_combiner(i) for i in range(len(model.layers)))
        uncalibrated = any(not bool(getattr(c, "calibrated", True)) for c in self.combiners)
        if composition and uncalibrated and config.fusion_epochs == 0:
            # The LayerNorm's gain is set on the first batch the combiner sees: with no composition
            # epoch that would be a test batch, and the evaluation would shape the model.
            raise ConfigError("fusion_epochs=0 with fusion_layernorm=true would calibrate the fused output's "
                              "LayerNorm on the first test batch; train at least one composition epoch "
                              "(fusion_epochs >= 1) or set fusion_layernorm=false")
        self.composition = composition
        self.router = router
        self.task_adapters: dict[int, int] = {}  # task id (the WER-matrix column) -> its adapter
        self.extraction_cache = extraction_cache

    def task_name(self, experience) -> str:
        return getattr(experience, "task_name", f"task{experience.current_experience}")

    # ---- the bank --------------------------------------------------------------------------
    def add_adapter(self, name: str) -> int:
        """A fresh adapter in every layer; combiners and router grow with it."""
        index = self.model.add_adapter(name)
        for module in [*self.combiners, self.router]:
            if isinstance(module, Resizable):
                module.resize(len(self.model.adapter_tasks))
        return index

    def add_task_adapter(self, experience) -> int:
        index = self.add_adapter(self.task_name(experience))
        task_id = int(experience.dataset[0][3])  # every utterance of an experience has its task's id
        self.task_adapters[task_id] = index
        return index

    def import_adapter(self, name: str, tensors: dict[str, torch.Tensor]) -> int:
        """Add an adapter trained elsewhere (``tensors``: "layer.parameter" -> weights). It has no
        task in this stream: combiners fuse it, oracle routing never picks it."""
        index = self.add_adapter(name)
        with torch.no_grad():
            for layer, bank in enumerate(self.model.banks):
                for parameter, value in bank.adapters[index].named_parameters():
                    value.copy_(tensors[f"{layer}.{parameter}"])
        return index

    def adapter_routes(self, task_ids: torch.Tensor) -> torch.Tensor:
        routes = torch.full_like(task_ids, -1)
        for task, adapter in self.task_adapters.items():
            routes[task_ids == task] = adapter
        return routes

    # ---- phases ----------------------------------------------------------------------------
    def training_phases(self, experience) -> list[TrainingPhase]:
        # Extraction depends on nothing but (seed, task), so that runs can share it (ExtractionCache).
        position = experience.current_experience
        extraction_seed = phase_seed(self.seed, position, "adapter")
        torch.manual_seed(extraction_seed)  # the fresh adapter's initial down-projection
        index = self.add_task_adapter(experience)
        phases = []
        if not self._reuse_adapter(index, position):
            phases.append(self._extraction_phase(index, position, extraction_seed))
        has_parameters = any(p.numel() for p in self.combiners.parameters())
        once = self.config.composition_schedule == "once"
        last = position == len(experience.origin_stream) - 1
        if self.composition and (has_parameters or self.config.train_adapters) and (last or not once):
            if once or not self.config.fusion_warm_start:
                self._fresh_combiners(phase_seed(self.seed, position, "fusion-init"))
            data = self.memory.balanced_with(experience.dataset, everything=self.config.composition_data == "all")
            phases.append(TrainingPhase("fusion", self.config.fusion_epochs, self.config.fusion_lr,
                                        self._compose, dataset=data, seed=phase_seed(self.seed, position, "fusion")))
        return phases

    def _fresh_combiners(self, seed: int) -> None:
        """New combiners, initialised as at the start (seeded), for every adapter so far."""
        torch.manual_seed(seed)
        self.combiners = nn.ModuleList(self.make_combiner(i) for i in range(len(self.model.layers))).to(self.device)
        for module in self.combiners:
            if isinstance(module, Resizable):
                module.resize(len(self.model.adapter_tasks))

    # ---- the composition recipe ----------------------------------------------------------------
    def criterion(self) -> torch.Tensor:
        loss = super().criterion()
        if self.is_training and self._composing() and self.config.fusion_value_reg:
            penalty = sum(c.value_regularizer() for c in self.combiners if hasattr(c, "value_regularizer"))
            loss = loss + self.config.fusion_value_reg * penalty
        return loss

    def parameter_groups(self, params: list[nn.Parameter]) -> list[dict]:
        """With ``fusion_decay`` none or identity, the combiners' parameters get no AdamW decay
        (identity: V is pulled towards I after each step instead, see ``optimizer_step``)."""
        if not self._composing() or self.config.fusion_decay == "zero":
            return super().parameter_groups(params)
        combiner = {id(p) for p in self.combiners.parameters()}
        return [{"params": [p for p in params if id(p) not in combiner]},
                {"params": [p for p in params if id(p) in combiner], "weight_decay": 0.0}]

    def optimizer_step(self) -> None:
        lr = self.optimizer.param_groups[0]["lr"]
        super().optimizer_step()
        if self._composing() and self.config.fusion_decay == "identity":
            with torch.no_grad():  # decoupled decay, as AdamW's, but towards the identity
                for combiner in self.combiners:
                    value = getattr(combiner, "value", None)
                    if isinstance(value, nn.Linear):
                        eye = torch.eye(value.weight.shape[0], device=value.weight.device)
                        value.weight.sub_(lr * self.config.weight_decay * (value.weight - eye))

    def _calibrate(self, data) -> None:
        """Combiners not composed yet (composition_schedule=once, before the last task) set their
        LayerNorm gain on a batch of training data, never on the first test batch."""
        if all(bool(getattr(c, "calibrated", True)) for c in self.combiners):
            return
        self.model.eval()
        loader = self.loader(data, self.config.batch_frames, shuffle=True, seed=self.seed)
        batch = next(iter(loader)).to(self.device)
        with torch.no_grad():
            self.model(batch.features, batch.feature_lengths, self.adapter_routes(batch.task_ids))

    def _composing(self) -> bool:
        return self.phase is not None and self.phase.name == "fusion"

    def _extraction_phase(self, index: int, position: int, seed: int) -> TrainingPhase:
        began = 0.0

        def extract(model: ConformerASR) -> None:
            nonlocal began
            began = time.perf_counter()
            model.set_router(None)
            model.set_combiners(lambda _: SingleAdapter(index))
            model.set_trainable(base=False, adapters=[index])

        def keep(model: ConformerASR) -> None:
            seconds = time.perf_counter() - began
            self.step_details.update(adapter="trained", adapter_seconds=round(seconds, 2))
            if self.extraction_cache is not None and distributed.is_main():
                self.extraction_cache.save(model.adapter_tasks[index], position,
                                           [bank.adapters[index].state_dict() for bank in model.banks], seconds)

        return TrainingPhase("adapter", self.config.adapter_epochs, self.config.adapter_lr, extract, seed=seed,
                             finish=keep)

    def _reuse_adapter(self, index: int, position: int) -> bool:
        """Load this task's adapter from the extraction cache, if an earlier run trained it."""
        if self.extraction_cache is None:
            return False
        task = self.model.adapter_tasks[index]
        cached = distributed.broadcast_object(self.extraction_cache.claim(task, position)
                                              if distributed.is_main() else None)
        if cached is None:
            return False
        layers, seconds = cached
        for bank, weights in zip(self.model.banks, layers):
            bank.adapters[index].load_state_dict(weights)
        # It counts as trained in this step, as it would have been without the cache.
        self.trained_parameters.update({id(p): p.numel() for bank in self.model.banks
                                        for p in bank.adapters[index].parameters()})
        self.step_details.update(adapter="reused", adapter_seconds=seconds)
        log.info("adapter for %s: reused from %s (its training took %.0f s)", task,
                 self.extraction_cache.path(task, position), seconds)
        return True

    def _compose(self, model: ConformerASR) -> None:
        model.set_combiners(self.combiners)
        adapters = list(range(len(model.adapter_tasks))) if self.config.train_adapters else None
        model.set_trainable(base=False, adapters=adapters, combiners=True)

    def after_phases(self, experience) -> None:
        self.model.set_combiners(self.combiners)
        self.model.set_router(self.router)
        self.model.set_trainable(base=False)
        if experience is not None:
            self._calibrate(self.memory.balanced_with(experience.dataset))
        if experience is not None and self.router is not None:
            self._fit_router(self.memory.balanced_with(experience.dataset))

    def _fit_router(self, data) -> None:
        """Train the router on the composition data: its pooled features once (the base is frozen,
        they never change), then ``router_epochs`` epochs over them (a small MLP: seconds)."""
        pooled, labels, task_ids = [], [], []
        self.model.eval()
        for batch in self.loader(data, self.config.eval_batch_frames, shuffle=False):
            batch = batch.to(self.device)
            pooled.append(self.model.pooled_base_features(batch.features, batch.feature_lengths))
            labels.append(self.adapter_routes(batch.task_ids) + 1)  # class 0: no adapter
            task_ids.append(batch.task_ids)
        pooled, labels, task_ids = torch.cat(pooled), torch.cat(labels), torch.cat(task_ids)
        self.router.requires_grad_(True)
        self.trained_parameters.update({id(p): p.numel() for p in self.router.parameters()})
        self.router.fit(pooled, labels, self.config.router_epochs, self.config.router_lr, self.config.weight_decay,
                        seed=self.seed * 1000 + len(self.model.adapter_tasks))
        self.router.requires_grad_(False)
        with torch.no_grad():
            right = self.router(pooled).argmax(dim=-1) == labels
        shares = ", ".join(f"{self.model.adapter_tasks[self.task_adapters[t]] if t in self.task_adapters else 'base'} "
                           f"{100 * float(right[task_ids == t].float().mean()):.0f}%" for t in task_ids.unique().tolist())
        log.info("router: %.1f%% of the composition data routed right after training (%s)",
                 100 * float(right.float().mean()), shares)

    def rebuild_structure(self, finished_experiences: list) -> None:
        for experience in finished_experiences:
            self.add_task_adapter(experience)
        if finished_experiences:
            self.after_phases(None)


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
