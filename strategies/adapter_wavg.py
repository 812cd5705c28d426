"""Adapter Weighted Mean (WAvg): learned softmax-normalised weights over the adapters per layer, no task ID."""

from dataclasses import dataclass

from continual_asr.config import RunConfig
from continual_asr.model import AdaptableASR, AdapterWeightedMean
from continual_asr.registry import register_strategy
from continual_asr.training.adapters import (AdapterStrategy, CompositionOptions, ExtractionOptions,
                                             FusedOutputOptions)
from continual_asr.training.memory import MemoryOptions


@dataclass
class WeightedMeanOptions(ExtractionOptions, CompositionOptions, FusedOutputOptions, MemoryOptions):
    """The adapter family's options and the paper's LayerNorm on the weighted mean."""


@register_strategy("adapter-wavg", "Adapter Weighted Mean: learned normalised weights over the adapters per layer, no task ID",
                   options=WeightedMeanOptions, extracts_adapters=True)
def adapter_wavg(model: AdaptableASR, config: RunConfig, options: WeightedMeanOptions, **common) -> AdapterStrategy:
    return AdapterStrategy(
        model=model, config=config, extraction=options, composition=options, memory_per_task=options.memory_per_task,
        make_combiner=lambda layer: AdapterWeightedMean(model.d_model, layernorm=options.fusion_layernorm),
        **common,
    )
