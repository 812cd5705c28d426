"""Elastic weight consolidation: fine-tuning with a quadratic pull towards each earlier task's weights."""

from continual_asr.registry import register_strategy
from continual_asr.training.plugins import SpeechEWCPlugin
from continual_asr.training.template import FINETUNE_OPTIONS, SpeechTemplate


@register_strategy("ewc", "elastic weight consolidation: fine-tuning, weights pulled back by their importance to earlier tasks",
                   options=FINETUNE_OPTIONS + ("ewc_lambda", "memory_per_task"))
def ewc(model, config, plugins=None, **common) -> SpeechTemplate:
    # memory_per_task: the base task's importances are measured on its remembered utterances.
    plugins = [*(plugins or []), SpeechEWCPlugin(config.ewc_lambda, config.batch_frames)]
    return SpeechTemplate(model=model, config=config, plugins=plugins, **common)
