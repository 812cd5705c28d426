"""Experience replay: whole-model fine-tuning on each new task mixed evenly with a memory of earlier ones."""

from continual_asr.registry import register_strategy
from continual_asr.training.plugins import SpeechReplayPlugin
from continual_asr.training.template import FINETUNE_OPTIONS, SpeechTemplate


@register_strategy("replay", "experience replay: fine-tuning on the new task mixed evenly with a memory of every earlier task",
                   options=FINETUNE_OPTIONS + ("memory_per_task",))
def replay(model, config, plugins=None, seed=0, **common) -> SpeechTemplate:
    plugins = [*(plugins or []), SpeechReplayPlugin(config.memory_per_task, seed)]
    return SpeechTemplate(model=model, config=config, plugins=plugins, seed=seed, **common)
