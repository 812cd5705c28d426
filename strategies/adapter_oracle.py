"""Task-ID routing: each utterance through its own task's adapter (the paper's upper reference)."""

from continual_asr.config import RunConfig
from continual_asr.model import AdaptableASR, OracleRouting
from continual_asr.registry import register_strategy
from continual_asr.training.adapters import AdapterStrategy, ExtractionOptions


@register_strategy("adapter-oracle", "task-ID routing: every utterance through its own task's adapter (needs the task at test time)",
                   options=ExtractionOptions, extracts_adapters=True)
def adapter_oracle(model: AdaptableASR, config: RunConfig, options: ExtractionOptions, **common) -> AdapterStrategy:
    return AdapterStrategy(model=model, config=config, extraction=options, make_combiner=lambda layer: OracleRouting(),
                           **common)
