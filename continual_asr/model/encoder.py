"""The Conformer encoder with an adapter bank and a combiner in every layer's residual path, and
an output head (CTC or transducer, see heads.py)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F
from torchaudio.models.conformer import ConformerLayer, _ConvolutionModule

from .adaptable import AdaptableASR
from .heads import CTCHead


# State-dict keys of the base model: the feature normaliser and base_modules() (what adapters
# and combiners leave alone; adapter files record a hash of it). "head." covers either head,
# the transducer's prediction network and joiner included; "hf." is a Hugging Face base (hf_encoder.py).
BASE_STATE_PREFIXES = ("feature_mean", "feature_std", "subsampling.", "layers.", "head.", "hf.")
ENCODER_STATE_PREFIXES = ("feature_mean", "feature_std", "subsampling.", "layers.")  # the Conformer without its head


class Conv2dSubsampling(nn.Module):
    """Strided 2-D convolutions over (time, mel): 10 ms frames in, 10 x ``factor`` ms frames out.

    WeNet's Conv2dSubsampling4/6/8 layouts: 4 = two 3x3 stride-2 convolutions (casr's default, 40
    ms frames); 6 = a 3x3 stride-2 then a 5x5 stride-3; 8 = three 3x3 stride-2 (FastConformer's
    rate, 80 ms). No padding, so each convolution drops its kernel's edge frames.

    The convolutions run channels-last (NHWC): oneDNN's native layout on the CPU, so neither the
    activations nor their gradients are reordered every step: the front end's own work nearly
    halves, a pretraining step is about 6 % faster on 2 CPU cores (docs/performance.md). The
    parameters keep their names, shapes and values, so base models saved before load as they were.
    """

    LAYOUTS = {4: ((3, 2), (3, 2)), 6: ((3, 2), (5, 3)), 8: ((3, 2), (3, 2), (3, 2))}

    def __init__(self, n_mels: int, d_model: int, channels: int, factor: int = 4) -> None:
        super().__init__()
        if factor not in self.LAYOUTS:
            raise ValueError(f"subsampling factor must be one of {sorted(self.LAYOUTS)}, got {factor}")
        self.layout = self.LAYOUTS[factor]
        convs: list[nn.Module] = []
        for i, (kernel, stride) in enumerate(self.layout):
            convs += [nn.Conv2d(1 if i == 0 else channels, channels, kernel, stride=stride), nn.ReLU()]
        self.conv = nn.Sequential(*convs).to(memory_format=torch.channels_last)
        self.channels = channels
        self.out = nn.Linear(channels * self.output_lengths(n_mels), d_model)  # the mel axis shrinks alike

    def output_lengths(self, lengths: torch.Tensor | int) -> torch.Tensor | int:
        """The frames (or mel bins) left after the convolutions, for ``lengths`` going in."""
        for kernel, stride in self.layout:
            lengths = (lengths - kernel) // stride + 1
        return lengths

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.conv(features.unsqueeze(1))  # (B, C, T', F'), stored as (B, T', F', C)
        # The linear layer reads each frame as (C, F') (its weight's layout since the first base
        # model); flattening the stored (F', C) instead is a view, and its gradient comes back
        # channels-last. The weight is permuted to match: a small copy, not the activations.
        d_model = self.out.weight.shape[0]
        weight = self.out.weight.view(d_model, self.channels, -1).transpose(1, 2).reshape(d_model, -1)
        x = F.linear(x.permute(0, 2, 3, 1).flatten(2), weight, self.out.bias)
        return x, self.output_lengths(lengths)


class SelfAttention(nn.MultiheadAttention):
    """torch's multi-head self-attention, computed on the CPU without its layout copies, and with
    the attention itself in float32 under CPU autocast.

    nn.MultiheadAttention (on (T, B, D), as torchaudio's Conformer calls it) copies the packed
    q, k, v projection into a contiguous (3, T, B, D) tensor, reshapes q, k and v twice more, and
    its backward fills a zero tensor of all three for each of q, k and v. ``attend`` views the
    projection as (B, H, T, d) instead and lets the attention kernel read the strides: in float32
    the same outputs and gradients to the bit, the attention's forward and backward 0.8 to 1.4 ms
    faster a layer on 2 CPU cores (docs/performance.md). Under bf16 autocast on a CPU the
    projections run in bf16 (AMX's matrix units make them 4 to 5x faster), but torch's CPU
    flash-attention backward in bf16 is 6 to 8x slower than in float32 and ate the whole gain, so
    the scaled dot product stays in float32. Elsewhere (a GPU, attention weights asked for) this is
    nn.MultiheadAttention's own forward. The Conformer layers' attention modules are switched to
    this class after they are built, so parameters, their names and a seed's initial weights do
    not change.
    """

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                **kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
        if query.is_cpu and not need_weights and not kwargs and query is key is value:
            return self.attend(query, key_padding_mask), None
        return super().forward(query, key, value, key_padding_mask=key_padding_mask, need_weights=need_weights,
                               **kwargs)

    def attend(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None) -> torch.Tensor:
        """Self-attention over x (T, B, D); key_padding_mask (B, T) is True at padding. The
        projections run in whatever autocast gives; the scaled dot product in float32 (``float()``
        returns a float32 tensor itself, not a copy)."""
        steps, batch, width = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.view(steps, batch, 3, self.num_heads, width // self.num_heads).permute(2, 1, 3, 0, 4)
        mask = None if key_padding_mask is None else ~key_padding_mask[:, None, None, :]
        with torch.autocast("cpu", enabled=False):
            out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask,
                                                 dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(out.permute(2, 0, 1, 3).reshape(steps, batch, width))


@dataclass
class FramePadding:
    """One batch's padding, shared by every layer's convolution module: ``mask`` (B, T), True at
    padding, and the row indices of the utterances' frames among the (B T) frames, computed once
    a batch when a module first asks (``nonzero`` waits for the device), not once a layer."""

    mask: torch.Tensor

    @cached_property
    def valid_rows(self) -> torch.Tensor:
        return (~self.mask).reshape(-1).nonzero().squeeze(1)


class TimeMajorConvolution(_ConvolutionModule):
    """torchaudio's Conformer convolution module computed on (B, T, D) throughout.

    torchaudio transposes to (B, D, T) for its three Conv1d layers, so oneDNN reorders the
    activations into its channels-last layout and back around every convolution, forward and
    backward. Here the 1x1 convolutions are linear layers over the last axis, the GLU splits the
    last axis, the depthwise convolution reads (B, T, D) as a channels-last (B, D, 1, T) image
    (a view, no copy) and BatchNorm normalises the (B T, D) frames (the same statistics as over
    (B, D, T)). The same parameters and the same function up to float rounding; a training step
    is 6 to 9 % faster on 2 CPU cores (docs/performance.md). The layers' convolution modules
    are switched to this class after they are built, as their attention is to SelfAttention.
    With GroupNorm in place of BatchNorm it is torchaudio's own forward.

    ``frame_padding`` (FramePadding), set by the encoder for each batch: padded frames
    are zeroed before the depthwise convolution, as ESPnet and NeMo do (torchaudio does not), so
    an utterance's last frames read zeros there, as they do alone, and not the padding's hidden
    states: without it an utterance's output, and a test set's WER, depended on what it was
    batched with. In training, BatchNorm's statistics are taken over the valid frames only, so
    the padding's share of a batch does not move them.
    """

    frame_padding: FramePadding | None = None

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        pointwise_in, _, depthwise, norm, activation, pointwise_out, dropout = self.sequential
        if not isinstance(norm, nn.BatchNorm1d):
            return super().forward(input)
        x = self.layer_norm(input)
        x = F.glu(F.linear(x, pointwise_in.weight.squeeze(-1), pointwise_in.bias), dim=-1)  # (B, T, D)
        if self.frame_padding is not None:
            x = x.masked_fill(self.frame_padding.mask.unsqueeze(-1), 0.0)
        batch, steps, width = x.shape
        x = self.depthwise(x.transpose(1, 2).unsqueeze(2), depthwise)
        frames = x.squeeze(2).transpose(1, 2).reshape(batch * steps, width)
        if norm.training and self.frame_padding is not None:
            # training statistics over the utterances' frames only, not the padding's (its
            # share varies from batch to batch); padded frames are left as they are. Row indices,
            # not a boolean mask: index_select and index_copy cost half as much forward and back
            valid = self.frame_padding.valid_rows
            x = frames.index_copy(0, valid, norm(frames.index_select(0, valid))).view(batch, steps, width)
        else:
            x = norm(frames).view(batch, steps, width)
        return dropout(F.linear(activation(x), pointwise_out.weight.squeeze(-1), pointwise_out.bias))

    @staticmethod
    def depthwise(image: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
        """The depthwise convolution over the channels-last (B, D, 1, T) view; in float32 under CPU
        autocast. oneDNN's bf16 depthwise kernel on this layout (torch 2.14) hangs on some batch
        shapes with more than one thread (with 2 threads, (B, T) = (19, 78), (3, 494), (1, 1482);
        (18, 78) and (38, 39) take 5 ms), and in float32 it is as fast as in bf16."""
        weight = conv.weight.unsqueeze(2)
        if image.is_cpu and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                return F.conv2d(image.float(), weight.float(), None if conv.bias is None else conv.bias.float(),
                                padding=(0, conv.padding[0]), groups=conv.groups)
        return F.conv2d(image, weight, conv.bias, padding=(0, conv.padding[0]), groups=conv.groups)


class ConformerASR(AdaptableASR):
    """Log-mel in, encoder frames out; ``head`` (heads.py) turns them into a loss and transcripts.

    ``head`` builds the head (default: CTC); a transducer head belongs to the base as CTC's
    linear layer does: pretrained with it, frozen with it. Adapters, combiners and the router:
    see adaptable.py.
    """

    def __init__(self, n_mels: int, d_model: int, num_layers: int, num_heads: int, ffn_dim: int,
                 conv_kernel: int, dropout: float, num_tokens: int, adapter_dim: int = 32,
                 subsampling_channels: int = 36, head: Callable[[], nn.Module] | None = None,
                 subsampling_factor: int = 4) -> None:
        super().__init__()
        self.d_model = d_model
        self.num_layers = num_layers
        self.register_buffer("feature_mean", torch.zeros(n_mels))
        self.register_buffer("feature_std", torch.ones(n_mels))
        self.subsampling = Conv2dSubsampling(n_mels, d_model, subsampling_channels, subsampling_factor)
        self.layers = nn.ModuleList(
            ConformerLayer(d_model, ffn_dim, num_heads, conv_kernel, dropout=dropout) for _ in range(num_layers)
        )
        for layer in self.layers:  # same parameters and initial weights (see the classes)
            layer.self_attn.__class__ = SelfAttention
            layer.conv_module.__class__ = TimeMajorConvolution
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
        outputs, frame_padding = [], FramePadding(padding)
        for i, layer in enumerate(self.layers):
            layer.conv_module.frame_padding = frame_padding
            try:
                x = layer(x, padding)
            finally:
                layer.conv_module.frame_padding = None
            if use_adapters:
                x = self.adapt(i, x.transpose(0, 1), adapter_index).transpose(0, 1)
            outputs.append(x.transpose(0, 1))
        return outputs, outputs[-1], out_lengths
