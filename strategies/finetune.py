"""Full fine-tuning on each task in turn: the forgetting baseline."""

from continual_asr.config import RunConfig
from continual_asr.model import AdaptableASR
from continual_asr.registry import register_strategy
from continual_asr.training.template import FinetuneOptions, SpeechTemplate


@register_strategy("finetune", "full fine-tuning of the whole model on each task in turn (forgets)", options=FinetuneOptions)
def finetune(model: AdaptableASR, config: RunConfig, options: FinetuneOptions, **common) -> SpeechTemplate:
    return SpeechTemplate(model=model, config=config, epochs=options.finetune_epochs,
                          learning_rate=options.finetune_lr, **common)
