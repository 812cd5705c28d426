"""L2-SP: whole-model fine-tuning, pulled towards the weights each task started from.

    casr run --stream tiny --preset tiny --strategy examples/l2sp.py:L2SP
"""
from avalanche.core import SupervisedPlugin

from continual_asr.training.template import SpeechTemplate

STRENGTH = 0.01  # weight of the squared distance to the starting weights


class PullToStart(SupervisedPlugin):
    """Adds STRENGTH * ||w - w_start||^2 to every training loss."""

    def before_training_exp(self, strategy, **kwargs):
        self.start = [p.detach().clone() for p in strategy.model.parameters()]

    def before_backward(self, strategy, **kwargs):
        distance = sum(((p - s) ** 2).sum() for p, s in zip(strategy.model.parameters(), self.start))
        strategy.loss += STRENGTH * distance


def L2SP(model, config, plugins=None, **common):
    """L2-SP: whole-model fine-tuning with an L2 pull towards each task's starting weights."""
    return SpeechTemplate(model=model, config=config, plugins=[*(plugins or []), PullToStart()], **common)
