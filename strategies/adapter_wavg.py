"""Adapter Weighted Mean (WAvg): learned softmax-normalised weights over the adapters per layer, no task ID."""

from continual_asr.model import AdapterWeightedMean
from continual_asr.registry import register_strategy
from continual_asr.training.adapters import COMPOSITION_OPTIONS, AdapterStrategy


@register_strategy("adapter-wavg", "Adapter Weighted Mean: learned normalised weights over the adapters per layer, no task ID",
                   options=COMPOSITION_OPTIONS + ("fusion_layernorm",), extracts_adapters=True)
def adapter_wavg(model, config, **common) -> AdapterStrategy:
    return AdapterStrategy(
        model=model, config=config, composition=True,
        make_combiner=lambda layer: AdapterWeightedMean(config.d_model, layernorm=config.fusion_layernorm),
        **common,
    )
