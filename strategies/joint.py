"""Joint multi-task fine-tuning on every task so far (base included): the usual upper bound.

"Every task so far" at step k is the base task and stream tasks 1..k, all their training data,
sampled evenly per task (the larger base task would otherwise drown the newest one). Each step
makes one pass over finetune_epochs x (new task's size) utterances, however many tasks have been
seen: at equal epochs, the same number of updates as finetune. Joint training's default, 24, was
chosen on dev on a grid of its own: as an upper bound it should be trained to what it can reach.
"""

from dataclasses import dataclass

from continual_asr.config import RunConfig
from continual_asr.model import AdaptableASR
from continual_asr.registry import register_strategy
from continual_asr.training.template import (FinetuneOptions, SpeechTemplate, TrainingPhase, whole_model_epochs,
                                                whole_model_lr)


@dataclass
class JointOptions(FinetuneOptions):
    # 4e-3: joint's lowest dev mean WER of 5e-4 to 8e-3 on accents-then-noise (seed 0, synthesis
    # version 4; docs/tuning.md, "The whole-model baselines tuned on dev"), 5 points below the 5e-4
    # all whole-model baselines shared before 2026-12-01: every step retrains on all data seen so far,
    # so a high rate costs it no forgetting, unlike sequential fine-tuning (best at 2e-3).
    finetune_lr: float = whole_model_lr(4e-3)
    # 24: joint's lowest dev mean WER of 3 to 24 epochs on accents-then-noise (seeds 0 and 1; 36, on seed 0
    # only, is better still; docs/tuning.md, "Joint training's own epochs"); 6, finetune's then, until 2026-12-06,
    # 12.6 dev points worse.
    finetune_epochs: int = whole_model_epochs(24)


class JointTraining(SpeechTemplate):
    """Whole-model fine-tuning on an even sample of all data of every task so far."""

    def training_phases(self, experience) -> list[TrainingPhase]:
        data = self.memory.sample_seen(experience.dataset, self.epochs * len(experience.dataset))
        return [TrainingPhase("joint", 1, self.learning_rate, dataset=data,
                              configure=lambda model: model.set_trainable(base=True))]


@register_strategy("joint", "joint multi-task fine-tuning on all data of every task so far, base included (upper bound)",
                   options=JointOptions)
def joint(model: AdaptableASR, config: RunConfig, options: JointOptions, **common) -> SpeechTemplate:
    return JointTraining(model=model, config=config, epochs=options.finetune_epochs, learning_rate=options.finetune_lr,
                         **common)
