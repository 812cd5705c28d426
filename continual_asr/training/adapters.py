"""The adapter strategy family: frozen base, one new adapter per task, then a combiner.

Per experience: (1) knowledge extraction, a fresh zero-initialised adapter trained alone on the
new task with the base frozen; (2) knowledge composition, the combiner (re)trained on the new
task plus the memory of earlier tasks (base included, each repeated to the new task's size so
the combiner does not learn to favour the newest adapter), adapters frozen unless
``train_adapters``. Combiners whose parameters do not depend on the number of adapters
(fusion, Q/K/V are D x D) carry over from one task to the next: composition warm-starts.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from ..model import ConformerCTC, SingleAdapter
from .template import SpeechTemplate, TrainingPhase

CombinerFactory = Callable[[int], nn.Module]


class AdapterStrategy(SpeechTemplate):
    """Base frozen; adapters per task; ``make_combiner(layer)`` gives the evaluation combiner.

    ``composition`` says whether the combiner has anything to learn (Adapter Mean and oracle
    routing do not, unless ``train_adapters`` is set).
    """

    def __init__(self, *, model: ConformerCTC, config, make_combiner: CombinerFactory,
                 composition: bool = True, **common) -> None:
        super().__init__(model=model, config=config, **common)
        self.combiners = nn.ModuleList(make_combiner(i) for i in range(len(model.layers)))
        self.composition = composition

    def task_name(self, experience) -> str:
        return getattr(experience, "task_name", f"task{experience.current_experience}")

    def training_phases(self, experience) -> list[TrainingPhase]:
        index = self.model.add_adapter(self.task_name(experience))

        def extract(model: ConformerCTC) -> None:
            model.set_combiners(lambda _: SingleAdapter(index))
            model.set_trainable(base=False, adapters=[index])

        phases = [TrainingPhase("adapter", self.config.adapter_epochs, self.config.adapter_lr, extract)]
        has_parameters = any(p.numel() for p in self.combiners.parameters())
        if self.composition and (has_parameters or self.config.train_adapters):
            phases.append(TrainingPhase("fusion", self.config.fusion_epochs, self.config.fusion_lr,
                                        self._compose, dataset=self.memory.balanced_with(experience.dataset)))
        return phases

    def _compose(self, model: ConformerCTC) -> None:
        model.set_combiners(self.combiners)
        adapters = list(range(len(model.adapter_tasks))) if self.config.train_adapters else None
        model.set_trainable(base=False, adapters=adapters, combiners=True)

    def after_phases(self, experience) -> None:
        self.model.set_combiners(self.combiners)
        self.model.set_trainable(base=False)

    def rebuild_structure(self, finished_experiences: list) -> None:
        for experience in finished_experiences:
            self.model.add_adapter(self.task_name(experience))
        if finished_experiences:
            self.after_phases(None)
