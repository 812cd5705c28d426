"""The Conformer encoder with an adapter bank and a combiner in every layer's residual path, and
an output head (CTC or transducer, see heads.py)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torchaudio.models.conformer import ConformerLayer

from .adapters import AdapterBank
from .combiners import AttentionRecorder
from .heads import CTCHead


# State-dict keys of the base model: the feature normaliser and base_modules() (what adapters
# and combiners leave alone; adapter files record a hash of it). "head." covers either head,
# the transducer's prediction network and joiner included.
BASE_STATE_PREFIXES = ("feature_mean", "feature_std", "subsampling.", "layers.", "head.")


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


class ConformerASR(nn.Module):
    """Log-mel in, encoder frames out; ``head`` (heads.py) turns them into a loss and transcripts.

    ``head`` builds the head (default: CTC); a transducer head belongs to the base as CTC's
    linear layer does: pretrained with it, frozen with it.

    Adapters: ``banks[i]`` holds every task's adapter of layer i and ``combiners[i]`` decides
    how they are combined (see combiners.py); with no adapters the model is the plain base.
    """

    def __init__(self, n_mels: int, d_model: int, num_layers: int, num_heads: int, ffn_dim: int,
                 conv_kernel: int, dropout: float, num_tokens: int, adapter_dim: int = 32,
                 subsampling_channels: int = 36, head: Callable[[], nn.Module] | None = None) -> None:
        super().__init__()
        self.register_buffer("feature_mean", torch.zeros(n_mels))
        self.register_buffer("feature_std", torch.ones(n_mels))
        self.subsampling = Conv2dSubsampling(n_mels, d_model, subsampling_channels)
        self.layers = nn.ModuleList(
            ConformerLayer(d_model, ffn_dim, num_heads, conv_kernel, dropout=dropout) for _ in range(num_layers)
        )
        # The head is built here, after the layers, so a seed gives the same initial weights
        # as it did when the CTC layer was hard-wired.
        self.head = CTCHead(d_model, num_tokens) if head is None else head()
        self.banks = nn.ModuleList(AdapterBank(d_model, adapter_dim) for _ in range(num_layers))
        self.combiners = nn.ModuleList()
        # Optional utterance-level router (see forward): None, or a module with
        # route(pooled features) -> adapter index per utterance.
        self.register_module("router", None)
        self.adapter_tasks: list[str] = []
        self.base_frozen = False
        self.attention_recorder: AttentionRecorder | None = None  # see record_attention

    # ---- structure -------------------------------------------------------------------------
    def base_modules(self) -> list[nn.Module]:
        return [self.subsampling, self.layers, self.head]

    def set_adapter_dim(self, bottleneck: int) -> None:
        """The bottleneck width of the adapters added from now on (an adapter strategy's
        ``adapter_dim``); a bank holding adapters of another width refuses."""
        for bank in self.banks:
            if len(bank) and bank.bottleneck != bottleneck:
                raise ValueError(f"the adapter banks hold {bank.bottleneck}-wide adapters, not {bottleneck}")
            bank.bottleneck = bottleneck

    def add_adapter(self, task: str) -> int:
        """Add one fresh (identity) adapter for ``task`` to every layer; returns its index."""
        indices = {bank.add_adapter() for bank in self.banks}
        self.adapter_tasks.append(task)
        return indices.pop()

    def set_combiners(self, make: Callable[[int], nn.Module] | nn.ModuleList | None) -> None:
        """Install a combiner per layer: a factory called with the layer index, or a ModuleList."""
        if make is None:
            self.combiners = nn.ModuleList()
        elif isinstance(make, nn.ModuleList):
            self.combiners = make
        else:
            self.combiners = nn.ModuleList(make(i) for i in range(len(self.layers)))
        self.combiners.to(self.feature_mean.device)

    def set_router(self, router: nn.Module | None) -> None:
        """Install (or remove) the utterance-level router that picks each utterance's adapter."""
        self.router = router
        if router is not None:
            router.to(self.feature_mean.device)

    def set_trainable(self, base: bool, adapters: list[int] | None = None, combiners: bool = False) -> None:
        """Choose what trains (``combiners`` includes the router); a frozen base is also kept in
        eval mode (see ``train``)."""
        for module in self.base_modules():
            module.requires_grad_(base)
        for bank in self.banks:
            for i, adapter in enumerate(bank.adapters):
                adapter.requires_grad_(adapters is not None and i in adapters)
        self.combiners.requires_grad_(combiners)
        if self.router is not None:
            self.router.requires_grad_(combiners)
        self.base_frozen = not base
        self.train(self.training)

    def train(self, mode: bool = True) -> "ConformerASR":
        super().train(mode)
        if self.base_frozen:
            # The Conformer's convolution module has BatchNorm: a frozen base must not update its
            # running statistics, and its dropout stays off too.
            for module in self.base_modules():
                module.eval()
        return self

    def parameter_counts(self) -> dict[str, int]:
        def count(modules):
            return sum(p.numel() for m in modules for p in m.parameters())
        composition = [self.combiners] + ([self.router] if self.router is not None else [])
        counts = {"base": count(self.base_modules()), "adapters": count(self.banks),
                  "combiners": count(composition)}
        counts["trainable"] = sum(p.numel() for p in self.parameters() if p.requires_grad)
        counts["total"] = counts["base"] + counts["adapters"] + counts["combiners"]
        return counts

    def record_attention(self, recorder: AttentionRecorder | None) -> None:
        """Start (or, with None, stop) summing every combiner's attention into ``recorder``."""
        self.attention_recorder = recorder
        for combiner in self.combiners:
            if hasattr(combiner, "keep_attention"):
                combiner.keep_attention = recorder is not None
                combiner.last_attention = None

    # ---- computation -----------------------------------------------------------------------
    def encode(self, features: torch.Tensor, lengths: torch.Tensor, adapter_index: torch.Tensor | None = None,
               adapters: bool = True) -> tuple[list[torch.Tensor], torch.Tensor]:
        """features (B, T, n_mels) -> (every layer's output (B, T', D), adapters included; output lengths (B,))."""
        x = (features - self.feature_mean) / self.feature_std
        x, out_lengths = self.subsampling(x, lengths)
        out_lengths = out_lengths.clamp(min=1, max=x.shape[1])
        padding = torch.arange(x.shape[1], device=x.device)[None, :] >= out_lengths[:, None]
        x = x.transpose(0, 1)  # ConformerLayer works on (T, B, D)
        use_adapters = adapters and len(self.combiners) > 0 and len(self.banks[0]) > 0
        recorder = self.attention_recorder if use_adapters else None
        if recorder is not None:
            recorder.begin_batch(~padding)
        outputs = []
        for i, layer in enumerate(self.layers):
            x = layer(x, padding)
            if use_adapters:
                hidden = x.transpose(0, 1)
                x = (hidden + self.combiners[i](hidden, self.banks[i], adapter_index)).transpose(0, 1)
                attention = getattr(self.combiners[i], "last_attention", None)
                if recorder is not None and attention is not None:
                    recorder.add(i, attention)
            outputs.append(x.transpose(0, 1))
        return outputs, out_lengths

    @torch.no_grad()
    def pooled_base_features(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, 2 D num_layers): mean and standard deviation over each utterance's frames of every
        layer's output of the base encoder without adapters (statistics pooling: what a router
        classifies; lower layers keep more of the accent and channel than the last)."""
        outputs, out_lengths = self.encode(features, lengths, adapters=False)
        valid = (torch.arange(outputs[0].shape[1], device=features.device)[None, :] < out_lengths[:, None]).unsqueeze(-1)
        count = out_lengths.clamp(min=1).unsqueeze(-1).to(outputs[0].dtype)
        stats = []
        for hidden in outputs:
            mean = (hidden * valid).sum(dim=1) / count
            var = (((hidden - mean.unsqueeze(1)) * valid) ** 2).sum(dim=1) / count
            stats += [mean, var.clamp(min=1e-8).sqrt()]
        return torch.cat(stats, dim=-1)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor,
                adapter_index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """features (B, T, n_mels) -> (encoder output (B, T', D), output lengths (B,)): the
        input of ``head.loss`` and ``head.decode``.

        ``adapter_index`` is the true task's adapter per utterance (only oracle routing reads
        it). With a router installed, the router's choice from a first, adapter-free pass
        replaces it: the model is then task-ID free.
        """
        if self.router is not None and len(self.combiners) > 0 and len(self.banks[0]) > 0:
            adapter_index = self.router.route(self.pooled_base_features(features, lengths))
        outputs, out_lengths = self.encode(features, lengths, adapter_index)
        return outputs[-1], out_lengths


