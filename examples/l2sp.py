"""L2-SP: whole-model fine-tuning, pulled towards the weights each task started from.

    casr run --stream tiny --preset tiny --strategy examples/l2sp.py:l2sp --set l2sp_strength=0.1
"""
from dataclasses import dataclass

from avalanche.core import SupervisedPlugin

from continual_asr.config import RunConfig, option
from continual_asr.model import AdaptableASR
from continual_asr.registry import register_strategy
from continual_asr.training.template import FinetuneOptions, SpeechTemplate


@dataclass
class L2SPOptions(FinetuneOptions):  # finetune_epochs and finetune_lr, and two of its own
    l2sp_strength: float = option("l2sp", 0.01, "weight of the squared distance to the starting weights", min=0.0)
    l2sp_free_head: bool = option("l2sp", False, "leave the output head free: pull the encoder only")


class PullToStart(SupervisedPlugin):
    """Adds strength * ||w - w_start||^2 to every training loss."""

    def __init__(self, strength: float, free_head: bool):
        super().__init__()
        self.strength, self.free_head = strength, free_head

    def pulled(self, model):
        return [p for name, p in model.named_parameters() if not (self.free_head and name.startswith("head."))]

    def before_training_exp(self, strategy, **kwargs):
        self.start = [p.detach().clone() for p in self.pulled(strategy.model)]

    def before_backward(self, strategy, **kwargs):
        distance = sum(((p - s) ** 2).sum() for p, s in zip(self.pulled(strategy.model), self.start))
        strategy.loss += self.strength * distance


@register_strategy("l2sp", "L2-SP: whole-model fine-tuning with an L2 pull towards each task's starting weights",
                   options=L2SPOptions)
def l2sp(model: AdaptableASR, config: RunConfig, options: L2SPOptions, plugins=None, **common) -> SpeechTemplate:
    plugins = [*(plugins or []), PullToStart(options.l2sp_strength, options.l2sp_free_head)]
    return SpeechTemplate(model=model, config=config, plugins=plugins, epochs=options.finetune_epochs,
                          learning_rate=options.finetune_lr, **common)
