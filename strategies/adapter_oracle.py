"""Task-ID routing: each utterance through its own task's adapter (the paper's upper reference)."""

from continual_asr.model import OracleRouting
from continual_asr.registry import register_strategy
from continual_asr.training.adapters import EXTRACTION_OPTIONS, AdapterStrategy


@register_strategy("adapter-oracle", "task-ID routing: every utterance through its own task's adapter (needs the task at test time)",
                   options=EXTRACTION_OPTIONS, extracts_adapters=True)
def adapter_oracle(model, config, **common) -> AdapterStrategy:
    return AdapterStrategy(model=model, config=config, composition=False, make_combiner=lambda layer: OracleRouting(), **common)
