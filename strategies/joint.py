"""Joint training on every task so far: the reference that intransigence is measured against."""

import sys

from continual_asr.registry import register_strategy
from continual_asr.training.memory import TaskMemory
from continual_asr.training.template import SpeechTemplate, TrainingPhase


class JointTraining(SpeechTemplate):
    """Whole-model fine-tuning, at each step on all the training data of the base task and of
    every stream task up to this one (cumulative joint training, not a replay sample)."""

    def __init__(self, **common) -> None:
        super().__init__(**common)
        self.memory = TaskMemory(sys.maxsize, self.seed)  # keeps every utterance of every task

    def training_phases(self, experience) -> list[TrainingPhase]:
        return [TrainingPhase("joint", self.epochs, self.learning_rate,
                              configure=lambda model: model.set_trainable(base=True),
                              dataset=self.memory.with_dataset(experience.dataset))]


@register_strategy("joint", "joint training: whole-model fine-tuning on all data of every task so far (a reference run)")
def joint(model, config, **common) -> SpeechTemplate:
    return JointTraining(model=model, config=config, **common)
