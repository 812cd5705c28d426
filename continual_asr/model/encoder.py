"""The Conformer encoder with an adapter bank and a combiner in every layer's residual path, and
an output head (CTC or transducer, see heads.py)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torchaudio.models.conformer import ConformerLayer

from .adaptable import AdaptableASR
from .heads import CTCHead


# State-dict keys of the base model: the feature normaliser and base_modules() (what adapters
# and combiners leave alone; adapter files record a hash of it). "head." covers either head,
# the transducer's prediction network and joiner included; "hf." is a Hugging Face base (hf_encoder.py).
BASE_STATE_PREFIXES = ("feature_mean", "feature_std", "subsampling.", "layers.", "head.", "hf.")
ENCODER_STATE_PREFIXES = ("feature_mean", "feature_std", "subsampling.", "layers.")  # the Conformer without its head


class Conv2dSubsampling(nn.Module):
    """Two stride-2 3x3 convolutions: 10 ms frames in, 40 ms frames out."""

    def __init__(self, n_mels: int, d_model: int, channels: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, channels, 3, stride=2), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, stride=2), nn.ReLU(),
        )
        self.out = nn.Linear(channels * (((n_mels - 1) // 2 - 1) // 2), d_model)

    @staticmethod
    def output_lengths(lengths: torch.Tensor) -> torch.Tensor:
        return ((lengths - 1) // 2 - 1) // 2

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.conv(features.unsqueeze(1))  # (B, C, T', F')
        x = self.out(x.permute(0, 2, 1, 3).flatten(2))
        return x, self.output_lengths(lengths)


class ConformerASR(AdaptableASR):
    """Log-mel in, encoder frames out; ``head`` (heads.py) turns them into a loss and transcripts.

    ``head`` builds the head (default: CTC); a transducer head belongs to the base as CTC's
    linear layer does: pretrained with it, frozen with it. Adapters, combiners and the router:
    see adaptable.py.
    """

    def __init__(self, n_mels: int, d_model: int, num_layers: int, num_heads: int, ffn_dim: int,
                 conv_kernel: int, dropout: float, num_tokens: int, adapter_dim: int = 32,
                 subsampling_channels: int = 36, head: Callable[[], nn.Module] | None = None) -> None:
        super().__init__()
        self.d_model = d_model
        self.num_layers = num_layers
        self.register_buffer("feature_mean", torch.zeros(n_mels))
        self.register_buffer("feature_std", torch.ones(n_mels))
        self.subsampling = Conv2dSubsampling(n_mels, d_model, subsampling_channels)
        self.layers = nn.ModuleList(
            ConformerLayer(d_model, ffn_dim, num_heads, conv_kernel, dropout=dropout) for _ in range(num_layers)
        )
        # The head is built here, after the layers, so a seed gives the same initial weights
        # as it did when the CTC layer was hard-wired.
        self.head = CTCHead(d_model, num_tokens) if head is None else head()
        self.init_adapters(adapter_dim)

    def base_modules(self) -> list[nn.Module]:
        return [self.subsampling, self.layers, self.head]

    def encode(self, features: torch.Tensor, lengths: torch.Tensor, adapter_index: torch.Tensor | None = None,
               adapters: bool = True) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """features (B, T, n_mels) -> (every layer's output (B, T', D), adapters included; the
        last of them; output lengths (B,))."""
        x = (features - self.feature_mean) / self.feature_std
        x, out_lengths = self.subsampling(x, lengths)
        out_lengths = out_lengths.clamp(min=1, max=x.shape[1])
        padding = torch.arange(x.shape[1], device=x.device)[None, :] >= out_lengths[:, None]
        use_adapters = self.uses_adapters(adapters)
        self.begin_adapted_batch(~padding, adapters)
        x = x.transpose(0, 1)  # ConformerLayer works on (T, B, D)
        outputs = []
        for i, layer in enumerate(self.layers):
            x = layer(x, padding)
            if use_adapters:
                x = self.adapt(i, x.transpose(0, 1), adapter_index).transpose(0, 1)
            outputs.append(x.transpose(0, 1))
        return outputs, outputs[-1], out_lengths
