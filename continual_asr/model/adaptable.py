"""What every base model shares: an adapter bank and a combiner after each encoder layer, an
optional utterance router, and the choice of what trains.

A base model (the built-in Conformer in encoder.py, a Hugging Face CTC model in hf_encoder.py)
subclasses :class:`AdaptableASR` and supplies ``base_modules`` and ``encode``; its encode calls
:meth:`AdaptableASR.adapt` on each layer's output. Strategies, combiners, metrics and resume
only see this interface, so they work the same on either base.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .adapters import AdapterBank
from .combiners import AttentionRecorder


class AdaptableASR(nn.Module):
    """``banks[i]`` holds every task's adapter of layer i and ``combiners[i]`` decides how they
    are combined (see combiners.py); with no adapters the model is the plain base. ``head``
    (heads.py) turns the encoder output into a loss and transcripts.

    A subclass sets ``d_model`` and ``num_layers``, builds ``head`` and calls
    :meth:`init_adapters` at the end of its ``__init__``.
    """

    d_model: int
    num_layers: int
    takes_waveform = False  # True: the input is 16 kHz audio samples (B, S), not log-mel frames

    def init_adapters(self, adapter_dim: int) -> None:
        self.banks = nn.ModuleList(AdapterBank(self.d_model, adapter_dim) for _ in range(self.num_layers))
        self.combiners = nn.ModuleList()
        # Optional utterance-level router (see forward): None, or a module with
        # route(pooled features) -> adapter index per utterance.
        self.register_module("router", None)
        self.adapter_tasks: list[str] = []
        self.base_frozen = False
        self.attention_recorder: AttentionRecorder | None = None  # see record_attention

    # ---- what a base model supplies --------------------------------------------------------
    def base_modules(self) -> list[nn.Module]:
        """The base model's modules (the head included): what adapters and combiners leave alone."""
        raise NotImplementedError

    def encode(self, features: torch.Tensor, lengths: torch.Tensor, adapter_index: torch.Tensor | None = None,
               adapters: bool = True) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """(every layer's output (B, T', D), adapters included; the encoder output the head reads;
        output lengths (B,))."""
        raise NotImplementedError

    def frozen_parts(self) -> list[nn.Module]:
        """Parts of the base that never train, even when the base does (none by default)."""
        return []

    # ---- structure -------------------------------------------------------------------------
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

    def _device(self) -> torch.device:
        return next(self.head.parameters()).device

    def set_combiners(self, make: Callable[[int], nn.Module] | nn.ModuleList | None) -> None:
        """Install a combiner per layer: a factory called with the layer index, or a ModuleList."""
        if make is None:
            self.combiners = nn.ModuleList()
        elif isinstance(make, nn.ModuleList):
            self.combiners = make
        else:
            self.combiners = nn.ModuleList(make(i) for i in range(self.num_layers))
        self.combiners.to(self._device())

    def set_router(self, router: nn.Module | None) -> None:
        """Install (or remove) the utterance-level router that picks each utterance's adapter."""
        self.router = router
        if router is not None:
            router.to(self._device())

    def set_trainable(self, base: bool, adapters: list[int] | None = None, combiners: bool = False) -> None:
        """Choose what trains (``combiners`` includes the router); a frozen base is also kept in
        eval mode (see ``train``)."""
        for module in self.base_modules():
            module.requires_grad_(base)
        for module in self.frozen_parts():
            module.requires_grad_(False)
        for bank in self.banks:
            for i, adapter in enumerate(bank.adapters):
                adapter.requires_grad_(adapters is not None and i in adapters)
        self.combiners.requires_grad_(combiners)
        if self.router is not None:
            self.router.requires_grad_(combiners)
        self.base_frozen = not base
        self.train(self.training)

    def train(self, mode: bool = True) -> "AdaptableASR":
        super().train(mode)
        if self.base_frozen:
            # A frozen base must not update running statistics (the Conformer's BatchNorm), and
            # its dropout and masking stay off too.
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
    def uses_adapters(self, adapters: bool = True) -> bool:
        return adapters and len(self.combiners) > 0 and len(self.banks[0]) > 0

    def begin_adapted_batch(self, valid: torch.Tensor, adapters: bool) -> None:
        """Called by ``encode`` before the first layer, with the (B, T') valid-frame mask."""
        for combiner in self.combiners:
            if hasattr(combiner, "set_valid_frames"):
                combiner.set_valid_frames(valid)
        if self.attention_recorder is not None and self.uses_adapters(adapters):
            self.attention_recorder.begin_batch(valid)

    def adapt(self, layer: int, hidden: torch.Tensor, adapter_index: torch.Tensor | None) -> torch.Tensor:
        """Layer ``layer``'s output (B, T', D) plus its combined adapters' correction."""
        hidden = hidden + self.combiners[layer](hidden, self.banks[layer], adapter_index)
        attention = getattr(self.combiners[layer], "last_attention", None)
        if self.attention_recorder is not None and attention is not None:
            self.attention_recorder.add(layer, attention)
        return hidden

    @torch.no_grad()
    def pooled_base_features(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, 2 D num_layers): mean and standard deviation over each utterance's frames of every
        layer's output of the base encoder without adapters (statistics pooling: what a router
        classifies; lower layers keep more of the accent and channel than the last)."""
        outputs, _, out_lengths = self.encode(features, lengths, adapters=False)
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
        """features (B, T, n_mels) or audio (B, S) -> (encoder output (B, T', D), output lengths
        (B,)): the input of ``head.loss`` and ``head.decode``.

        ``adapter_index`` is the true task's adapter per utterance (only oracle routing reads
        it). With a router installed, the router's choice from a first, adapter-free pass
        replaces it: the model is then task-ID free.
        """
        if self.router is not None and self.uses_adapters():
            adapter_index = self.router.route(self.pooled_base_features(features, lengths))
        _, encoded, out_lengths = self.encode(features, lengths, adapter_index)
        return encoded, out_lengths
