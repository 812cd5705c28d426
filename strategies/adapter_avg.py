"""Adapter Mean (Avg): the plain average of every task adapter's output, no task ID."""

from continual_asr.model import AdapterMean
from continual_asr.registry import register_strategy
from continual_asr.training.adapters import COMPOSITION_OPTIONS, AdapterStrategy


@register_strategy("adapter-avg", "Adapter Mean: the plain average of every task's adapter output, no task ID",
                   options=COMPOSITION_OPTIONS, extracts_adapters=True)
def adapter_avg(model, config, **common) -> AdapterStrategy:
    # Nothing to compose unless train_adapters=true, when the adapters learn to be averaged.
    return AdapterStrategy(model=model, config=config, composition=True, make_combiner=lambda layer: AdapterMean(), **common)
