"""Learned routing (beyond the paper): an utterance-level task classifier sends each utterance
through one adapter (or none), trained on the memory plus the new task; no task ID at test time."""

from continual_asr.model import OracleRouting, TaskRouter
from continual_asr.registry import register_strategy
from continual_asr.training.adapters import EXTRACTION_OPTIONS, AdapterStrategy


@register_strategy("adapter-router", "learned routing: a task classifier on pooled base-encoder features picks one adapter per utterance",
                   options=EXTRACTION_OPTIONS + ("memory_per_task", "router_epochs", "router_lr", "router_hidden"),
                   extracts_adapters=True)
def adapter_router(model, config, **common) -> AdapterStrategy:
    # The combiners route like the oracle; the router, not the true task, gives the route.
    return AdapterStrategy(model=model, config=config, composition=False, make_combiner=lambda layer: OracleRouting(),
                           router=TaskRouter(2 * config.d_model * config.num_layers, config.router_hidden), **common)
