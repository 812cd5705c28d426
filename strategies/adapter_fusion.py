"""Audio-AdapterFusion (arXiv 2310.13015): attention over all task adapters, no task ID."""

from continual_asr.model import AdapterFusion
from continual_asr.registry import register_strategy
from continual_asr.training.adapters import COMPOSITION_OPTIONS, AdapterStrategy


@register_strategy("adapter-fusion", "Audio-AdapterFusion: per-frame attention over every task's adapter, no task ID",
                   options=COMPOSITION_OPTIONS + ("fusion_layernorm", "fusion_null_adapter", "fusion_value_reg",
                                                  "fusion_decay", "fusion_temperature"), extracts_adapters=True)
def adapter_fusion(model, config, **common) -> AdapterStrategy:
    return AdapterStrategy(
        model=model, config=config, composition=True,
        make_combiner=lambda layer: AdapterFusion(config.d_model, layernorm=config.fusion_layernorm,
                                                  null_slot=config.fusion_null_adapter,
                                                  temperature=config.fusion_temperature),
        **common,
    )
