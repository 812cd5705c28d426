"""Audio-AdapterFusion (arXiv 2310.13015): attention over all task adapters, no task ID."""

from dataclasses import dataclass

from continual_asr.config import RunConfig, option
from continual_asr.model import AdaptableASR, AdapterFusion
from continual_asr.registry import register_strategy
from continual_asr.training.adapters import (AdapterStrategy, CompositionOptions, ExtractionOptions,
                                             FusedOutputOptions)
from continual_asr.training.memory import MemoryOptions


@dataclass
class FusionOptions(ExtractionOptions, CompositionOptions, FusedOutputOptions, MemoryOptions):
    """A-AF's options: the adapter family's, and fusion's attention with AdapterHub's recipe."""

    fusion_null_adapter: bool = option(
        "fusion", True, "let fusion attend to a zero 'no adapter' slot, so base-task speech can bypass adapters")
    fusion_value_reg: float = option(
        "fusion", 0.0, "weight of AdapterHub's value regulariser, sum over layers of ||I - V||^2, in the "
                       "composition loss (0: off)", min=0.0)
    fusion_decay: str = option(
        "fusion", "zero", "weight decay of the fusion projections: 'zero' (AdamW's, towards 0), 'none', or "
                          "'identity' (V decays towards the identity, Q and K not at all)",
        choices=("zero", "none", "identity"))
    fusion_temperature: float = option(
        "fusion", 1.0, "softmax temperature of fusion's attention over the adapters (scores / T; large T: "
                       "towards the mean)", min=0.01)
    # utterance beat frame on dev in every setting measured (docs/tuning.md, "One attention per
    # utterance becomes the default"); the paper's per-frame fusion stays one field away.
    fusion_scope: str = option(
        "fusion", "utterance", "what one attention covers: 'utterance' (each adapter's scores averaged over the "
                               "utterance first: one attention per utterance, as a soft router) or 'frame' (the "
                               "paper's: each frame attends on its own)", choices=("utterance", "frame"))


@register_strategy("adapter-fusion", "Audio-AdapterFusion: attention over every task's adapter, no task ID (one per "
                                     "utterance; fusion_scope=frame: the paper's, per frame)",
                   options=FusionOptions, extracts_adapters=True)
def adapter_fusion(model: AdaptableASR, config: RunConfig, options: FusionOptions, **common) -> AdapterStrategy:
    return AdapterStrategy(
        model=model, config=config, extraction=options, composition=options, memory_per_task=options.memory_per_task,
        make_combiner=lambda layer: AdapterFusion(model.d_model, layernorm=options.fusion_layernorm,
                                                  null_slot=options.fusion_null_adapter,
                                                  temperature=options.fusion_temperature,
                                                  scope=options.fusion_scope),
        value_regularizer=options.fusion_value_reg, combiner_decay=options.fusion_decay, **common,
    )
