"""Full fine-tuning on each task in turn: the forgetting baseline."""

from continual_asr.registry import register_strategy
from continual_asr.training.template import FINETUNE_OPTIONS, SpeechTemplate


@register_strategy("finetune", "full fine-tuning of the whole model on each task in turn (forgets)", options=FINETUNE_OPTIONS)
def finetune(model, config, **common) -> SpeechTemplate:
    return SpeechTemplate(model=model, config=config, **common)
