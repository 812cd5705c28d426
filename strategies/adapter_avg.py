"""Adapter Mean (Avg): the plain average of every task adapter's output, no task ID."""

from dataclasses import dataclass

from continual_asr.config import RunConfig
from continual_asr.model import AdaptableASR, AdapterMean
from continual_asr.registry import register_strategy
from continual_asr.training.adapters import AdapterStrategy, CompositionOptions, ExtractionOptions
from continual_asr.training.memory import MemoryOptions


@dataclass
class AdapterMeanOptions(ExtractionOptions, CompositionOptions, MemoryOptions):
    """The adapter family's options (composition trains something only with train_adapters=true)."""


@register_strategy("adapter-avg", "Adapter Mean: the plain average of every task's adapter output, no task ID",
                   options=AdapterMeanOptions, extracts_adapters=True)
def adapter_avg(model: AdaptableASR, config: RunConfig, options: AdapterMeanOptions, **common) -> AdapterStrategy:
    # Nothing to compose unless train_adapters=true, when the adapters learn to be averaged.
    return AdapterStrategy(model=model, config=config, extraction=options, composition=options,
                           memory_per_task=options.memory_per_task, make_combiner=lambda layer: AdapterMean(), **common)
