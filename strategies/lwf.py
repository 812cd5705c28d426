"""Learning without Forgetting: fine-tuning while distilling the previous model's posteriors (per-frame CTC
posteriors; with head=rnnt the joiner's posteriors on the reference lattice)."""

from continual_asr.registry import register_strategy
from continual_asr.training.plugins import SequenceLwFPlugin
from continual_asr.training.template import FINETUNE_OPTIONS, SpeechTemplate


@register_strategy("lwf", "learning without forgetting: fine-tuning while distilling the previous model's per-frame posteriors",
                   options=FINETUNE_OPTIONS + ("lwf_alpha", "lwf_temperature"))
def lwf(model, config, plugins=None, **common) -> SpeechTemplate:
    plugins = [*(plugins or []), SequenceLwFPlugin(config.lwf_alpha, config.lwf_temperature)]
    return SpeechTemplate(model=model, config=config, plugins=plugins, **common)
