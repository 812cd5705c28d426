"""A bank of single-task bottleneck adapters for one Conformer layer, computed in one batched op.

Each adapter is LayerNorm -> down-projection -> swish -> zero-initialised up-projection (the
NeMo/Houlsby recipe); the residual add is left to the combiner, which decides how the N
adapter outputs meet the hidden state. Parameters are kept per adapter (so one adapter can
train while the others stay frozen) and stacked on the fly: stacking a few kB of weights per
forward is far cheaper than a Python loop of N small matmuls.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BottleneckAdapter(nn.Module):
    """The parameters of one adapter; the computation lives in :class:`AdapterBank`."""

    def __init__(self, d_model: int, bottleneck: int) -> None:
        super().__init__()
        self.norm_weight = nn.Parameter(torch.ones(d_model))
        self.norm_bias = nn.Parameter(torch.zeros(d_model))
        self.down = nn.Parameter(torch.empty(d_model, bottleneck))
        self.down_bias = nn.Parameter(torch.zeros(bottleneck))
        # Zero up-projection: a new adapter starts as the identity of the layer it joins.
        self.up = nn.Parameter(torch.zeros(bottleneck, d_model))
        self.up_bias = nn.Parameter(torch.zeros(d_model))
        nn.init.kaiming_uniform_(self.down.T, a=5**0.5)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Reference (unbatched) computation, used by tests to check the bank."""
        normed = F.layer_norm(hidden, hidden.shape[-1:], self.norm_weight, self.norm_bias)
        return F.silu(normed @ self.down + self.down_bias) @ self.up + self.up_bias


class AdapterBank(nn.Module):
    """All adapters of one layer. ``forward`` returns the (B, T, N, D) adapter outputs."""

    def __init__(self, d_model: int, bottleneck: int) -> None:
        super().__init__()
        self.d_model = d_model
        self.bottleneck = bottleneck
        self.adapters = nn.ModuleList()

    def __len__(self) -> int:
        return len(self.adapters)

    def add_adapter(self) -> int:
        ref = next(self.parameters(), None)
        adapter = BottleneckAdapter(self.d_model, self.bottleneck)
        if ref is not None:
            adapter.to(ref.device)
        self.adapters.append(adapter)
        return len(self.adapters) - 1

    def _stacked(self, indices: list[int] | None) -> tuple[torch.Tensor, ...]:
        chosen = [self.adapters[i] for i in (range(len(self.adapters)) if indices is None else indices)]
        # LayerNorm's affine part folds into the down-projection: (x*g + b) W = x (g W) + b W.
        down = torch.stack([a.norm_weight[:, None] * a.down for a in chosen], dim=1)  # (D, N, r)
        down_bias = torch.stack([a.norm_bias @ a.down + a.down_bias for a in chosen])  # (N, r)
        up = torch.stack([a.up for a in chosen])  # (N, r, D)
        up_bias = torch.stack([a.up_bias for a in chosen])  # (N, D)
        return down, down_bias, up, up_bias

    def bottleneck_activations(self, hidden: torch.Tensor, indices: list[int] | None = None
                               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, T, N, r) activations after the swish, plus the stacked up-projection and its bias."""
        down, down_bias, up, up_bias = self._stacked(indices)
        normed = F.layer_norm(hidden, hidden.shape[-1:])
        n, r = down_bias.shape
        act = F.silu((normed @ down.reshape(self.d_model, n * r)).unflatten(-1, (n, r)) + down_bias)
        return act, up, up_bias

    def forward(self, hidden: torch.Tensor, indices: list[int] | None = None) -> torch.Tensor:
        act, up, up_bias = self.bottleneck_activations(hidden, indices)
        return torch.einsum("btnr,nrd->btnd", act, up) + up_bias

    def forward_routed(self, hidden: torch.Tensor, adapter_index: torch.Tensor) -> torch.Tensor:
        """Each utterance through one adapter; ``adapter_index`` (B,) with -1 meaning none."""
        out = torch.zeros_like(hidden)
        for index in adapter_index.unique().tolist():
            if index < 0:
                continue
            rows = (adapter_index == index).nonzero(as_tuple=True)[0]
            out[rows] = self.forward(hidden[rows], [index])[:, :, 0].to(out.dtype)  # autocast may differ
        return out
