"""The base models (casr's Conformer with its CTC or transducer head, or a Hugging Face CTC model:
hf_encoder.py), adapter banks and combiners."""

from __future__ import annotations

from ..config import RunConfig
from .adaptable import AdaptableASR
from .adapters import AdapterBank, BottleneckAdapter
from .combiners import (AdapterFusion, AdapterMean, AdapterWeightedMean, OracleRouting, Resizable,
                        SingleAdapter)
from .encoder import ConformerASR
from .heads import CTCHead, HATHead, TransducerHead, head_of, make_head
from .router import TaskRouter


def build_model(config: RunConfig, num_tokens: int) -> ConformerASR:
    """A fresh base model sized by the config (head included), for a tokenizer of ``num_tokens``
    pieces; an adapter strategy sets its adapters' width (``set_adapter_dim``)."""
    return ConformerASR(
        n_mels=config.n_mels, d_model=config.d_model, num_layers=config.num_layers,
        num_heads=config.num_heads, ffn_dim=config.ffn_dim, conv_kernel=config.conv_kernel,
        dropout=config.dropout, num_tokens=num_tokens,
        subsampling_channels=config.subsampling_channels, subsampling_factor=config.subsampling_factor,
        head=lambda: make_head(config, num_tokens),
    )


__all__ = ["AdaptableASR", "AdapterBank", "BottleneckAdapter", "AdapterFusion", "AdapterMean", "AdapterWeightedMean",
           "OracleRouting", "Resizable", "SingleAdapter", "ConformerASR", "CTCHead",
           "HATHead", "TransducerHead", "TaskRouter", "build_model", "head_of", "make_head"]
