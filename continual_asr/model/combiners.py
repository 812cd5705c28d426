"""Combiners: how a layer's adapter bank meets its hidden state (the residual path).

Every adapter strategy is the same model with a different combiner in each Conformer layer.
A combiner maps (hidden (B, T, D), bank, adapter_index (B,)) to the delta added to the hidden
state. ``adapter_index`` is the true task's adapter per utterance (-1: none); only the oracle
may look at it, which is what makes the others task-ID-free.
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from ..distributed import all_reduce_sum, global_mean
from .adapters import AdapterBank


class AttentionRecorder:
    """Sums, per layer, the attention each adapter (and the null slot) receives over the valid
    frames of the utterances that count: the evaluator's view of what fusion attends to.

    The encoder calls ``begin_batch`` with its valid-frame mask and ``add`` after every layer
    whose combiner exposes ``last_attention`` (set only while ``keep_attention`` is on, so
    training and plain evaluation keep nothing).
    """

    def __init__(self) -> None:
        self.sums: dict[int, torch.Tensor] = {}
        self.frames = torch.zeros((), dtype=torch.float64)
        self.utterances: torch.Tensor | None = None  # (B,) bool: False for padding stand-ins
        self._valid: torch.Tensor | None = None

    def begin_batch(self, valid: torch.Tensor) -> None:
        if self.utterances is not None:
            valid = valid & self.utterances.to(valid.device)[:, None]
        self._valid = valid
        self.frames = self.frames + valid.sum().double().cpu()

    def add(self, layer: int, probs: torch.Tensor) -> None:
        """``probs`` (B, T, S) per frame, or (S,) the same for every frame (a weighted mean)."""
        valid = self._valid
        if probs.dim() == 1:
            total = probs.detach().double().cpu() * valid.sum().double().cpu()
        else:
            total = (probs.detach().double() * valid.unsqueeze(-1)).sum(dim=(0, 1)).cpu()
        self.sums[layer] = self.sums[layer] + total if layer in self.sums else total

    def sum_over_ranks(self) -> None:
        """With several processes, replace this process's sums by every process's (one all-reduce;
        every rank holds a part or a stand-in of every batch, so all have the same layers)."""
        layers = sorted(self.sums)
        totals = all_reduce_sum(torch.cat([*(self.sums[layer] for layer in layers), self.frames.reshape(1)]))
        self.sums = dict(zip(layers, totals[:-1].split([len(self.sums[layer]) for layer in layers])))
        self.frames = totals[-1]

    def means(self) -> list[list[float]]:
        """Per layer, the mean attention of each slot over every frame seen (rows sum to 1)."""
        frames = max(float(self.frames), 1.0)
        return [[round(float(v) / frames, 4) for v in self.sums[layer]] for layer in sorted(self.sums)]


@runtime_checkable
class Resizable(Protocol):
    """A combiner (or router) with per-adapter parameters: told the bank's size whenever an
    adapter joins, so its parameters exist before any optimizer is built over them."""

    def resize(self, num_adapters: int) -> None: ...


class SingleAdapter(nn.Module):
    """Every utterance through one adapter: knowledge extraction trains it this way."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def forward(self, hidden: torch.Tensor, bank: AdapterBank, adapter_index: torch.Tensor | None) -> torch.Tensor:
        return bank(hidden, [self.index])[:, :, 0]


class OracleRouting(nn.Module):
    """Task-ID routing: each utterance through its own task's adapter (the paper's upper reference)."""

    def forward(self, hidden: torch.Tensor, bank: AdapterBank, adapter_index: torch.Tensor | None) -> torch.Tensor:
        if adapter_index is None:
            raise ValueError("oracle routing needs the task of every utterance")
        # A task not learned yet has no adapter: its speech goes through the base alone.
        return bank.forward_routed(hidden, torch.where(adapter_index < len(bank), adapter_index, -1))


class AdapterMean(nn.Module):
    """Adapter Mean (Avg): the plain average of all adapters' outputs, no task ID, no parameters."""

    def forward(self, hidden: torch.Tensor, bank: AdapterBank, adapter_index: torch.Tensor | None) -> torch.Tensor:
        return bank(hidden).mean(dim=2)


class AdapterWeightedMean(nn.Module):
    """Adapter Weighted Mean (WAvg): per layer, a learned weighted average of the adapters' outputs.

    One logit per adapter, softmax-normalised, the same for every frame and utterance (no task
    ID). A new adapter's logit is log(sum_i exp l_i) - log(n) over the n earlier ones, which
    gives it a fair share 1/(n+1) and leaves the earlier adapters' proportions as learned; equal
    logits are Adapter Mean. ``layernorm`` normalises the mixture before the residual add, as
    fusion does, with the gain calibrated on the first batch so the layer starts as the mean
    (with several processes, on the whole global batch: every rank gets the same gain).
    """

    def __init__(self, d_model: int, layernorm: bool = True) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(0))
        self.norm = nn.LayerNorm(d_model) if layernorm else None
        self.register_buffer("calibrated", torch.tensor(not layernorm))
        self.keep_attention = False  # set by the evaluator's AttentionRecorder
        self.last_attention: torch.Tensor | None = None

    def resize(self, num_adapters: int) -> None:
        logits = self.logits.detach()
        if num_adapters < len(logits):
            raise ValueError(f"weighted mean over {len(logits)} adapters cannot shrink to {num_adapters}")
        while len(logits) < num_adapters:
            fair = logits.logsumexp(0) - math.log(len(logits)) if len(logits) else logits.new_zeros(())
            logits = torch.cat([logits, fair.reshape(1)])
        self.logits = nn.Parameter(logits.clone(), requires_grad=self.logits.requires_grad)

    def weights(self) -> torch.Tensor:
        """(N,) the normalised weight of each adapter."""
        return self.logits.softmax(dim=0)

    def forward(self, hidden: torch.Tensor, bank: AdapterBank, adapter_index: torch.Tensor | None) -> torch.Tensor:
        if len(self.logits) != len(bank):
            raise ValueError(f"weighted mean has {len(self.logits)} weights for {len(bank)} adapters (resize it)")
        weights = self.weights()
        self.last_attention = weights if self.keep_attention else None
        mixed = torch.einsum("btnd,n->btd", bank(hidden), weights)
        if self.norm is None:
            return mixed
        if not bool(self.calibrated):
            with torch.no_grad():
                self.norm.weight.fill_(global_mean(mixed.float().std(dim=-1)) + 1e-6)
                self.calibrated.fill_(True)
        return self.norm(mixed)


class AdapterFusion(nn.Module):
    """Audio-AdapterFusion: per-frame attention over the N adapter outputs, query = hidden state.

    Follows AdapterHub's BertFusion (Q, K ~ N(0, 0.02); V near identity, so fusion starts as a
    plain average; no 1/sqrt(d) scaling) with two pieces of linear algebra that keep the cost
    flat in N: q.(K a_i) = (K^T q).a_i, so keys are never projected per adapter, and
    sum_i p_i (V a_i) = V (sum_i p_i a_i), so values are projected once. K's bias adds the same
    q.b to every score and cancels in the softmax, so K has none.

    ``layernorm`` normalises the fused output before the residual add (the paper's stabiliser);
    its gain is calibrated on the first batch to the scale of the average adapter output, so the
    layer still starts close to Adapter Mean. ``null_slot`` adds a "no adapter" choice with a
    zero key score: speech no adapter helps (the base task) can pass through unchanged. Its
    probability gates the normalised output, out = (1 - p_null) LN(V sum_i p~_i a_i) with p~
    renormalised over the adapters, because a LayerNorm of a (near-)zero mixture would blow
    noise up to full scale instead of adding nothing.

    ``scope="utterance"`` (not the paper's) averages each adapter's scores over the utterance's
    valid frames before the softmax: one attention per utterance, a soft router inside fusion,
    for tasks a single frame does not show (an accent) where it does show noise.
    """

    def __init__(self, d_model: int, layernorm: bool = True, null_slot: bool = True, temperature: float = 1.0,
                 scope: str = "frame") -> None:
        super().__init__()
        if scope not in ("frame", "utterance"):
            raise ValueError(f"fusion scope must be 'frame' or 'utterance', got {scope!r}")
        self.scope = scope
        self._valid: torch.Tensor | None = None  # (B, T) valid frames of the batch (set_valid_frames)
        self.temperature = temperature  # scores / T: AdapterHub's fusion has one too
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model, bias=False)
        self.value = nn.Linear(d_model, d_model, bias=False)
        for proj in (self.query, self.key):
            nn.init.normal_(proj.weight, std=0.02)
        nn.init.zeros_(self.query.bias)
        with torch.no_grad():
            self.value.weight.fill_(1e-6)
            self.value.weight.fill_diagonal_(1.0)
        self.null_slot = null_slot
        self.norm = nn.LayerNorm(d_model) if layernorm else None
        self.register_buffer("calibrated", torch.tensor(not layernorm))
        self.keep_attention = False  # set by the evaluator's AttentionRecorder
        self.last_attention: torch.Tensor | None = None

    def attention(self, hidden: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
        """(B, T, N[+1]) attention probabilities over the adapters (and the null slot, last)."""
        key_query = self.query(hidden) @ self.key.weight  # (B, T, D): K^T q
        return self._softmax(torch.einsum("btd,btnd->btn", key_query, outputs))

    def set_valid_frames(self, valid: torch.Tensor) -> None:
        """The batch's (B, T) valid-frame mask, before its first layer (utterance scope pools over it)."""
        self._valid = valid

    def _scoped(self, scores: torch.Tensor) -> torch.Tensor:
        """(B, T, N) scores, or with utterance scope their mean over each utterance's valid frames."""
        if self.scope == "frame":
            return scores
        valid = self._valid
        if valid is None or valid.shape != scores.shape[:2]:
            raise RuntimeError("utterance-scope fusion needs the batch's valid frames (AdaptableASR.encode sets them)")
        weights = valid.to(scores.dtype).unsqueeze(-1)
        pooled = (scores * weights).sum(1, keepdim=True) / weights.sum(1, keepdim=True).clamp_min(1.0)
        return pooled.expand_as(scores)

    def _softmax(self, scores: torch.Tensor) -> torch.Tensor:
        scores = self._scoped(scores)
        if self.temperature != 1.0:
            scores = scores / self.temperature
        if self.null_slot:
            scores = torch.cat([scores, scores.new_zeros(scores.shape[:-1] + (1,))], dim=-1)
        return scores.softmax(dim=-1)

    def forward(self, hidden: torch.Tensor, bank: AdapterBank, adapter_index: torch.Tensor | None) -> torch.Tensor:
        if not torch.is_grad_enabled() and bool(self.calibrated):
            return self._folded(hidden, bank)
        outputs = bank(hidden)  # (B, T, N, D)
        probs = self.attention(hidden, outputs)
        self.last_attention = probs if self.keep_attention else None
        adapter_probs = probs[..., : outputs.shape[2]]
        if self.norm is None:  # the null slot's share simply contributes nothing
            return self.value(torch.einsum("btn,btnd->btd", adapter_probs, outputs))
        gate = adapter_probs.sum(dim=-1, keepdim=True)  # 1 - p_null (1 without a null slot)
        fused = self.value(torch.einsum("btn,btnd->btd", adapter_probs / gate.clamp_min(1e-9), outputs))
        if not bool(self.calibrated):
            with torch.no_grad():
                self.norm.weight.fill_(global_mean(fused.float().std(dim=-1)) + 1e-6)
                self.calibrated.fill_(True)
        return gate * self.norm(fused)

    @torch.no_grad()
    def _folded(self, hidden: torch.Tensor, bank: AdapterBank) -> torch.Tensor:
        """``forward`` for inference, the same function with every D x D projection folded into
        the adapters' up-projections (a_i = s_i U_i + c_i, s_i the bottleneck activations):
        q.(K a_i) = (h W_q^T K + b_q K) U_i^T . s_i + (...) c_i and V sum_i p_i a_i =
        sum_i p_i s_i (U_i V^T) + p.(c V^T). The folded weights cost D x D x N r once per call
        instead of three D x D projections of every frame, and no (B, T, N, D) tensor is made."""
        act, up, up_bias = bank.bottleneck_activations(hidden)  # (B, T, N, r), (N, r, D), (N, D)
        n, r, d = up.shape
        up = up.reshape(n * r, d)
        query_key = self.query.weight.T @ self.key.weight  # h -> K^T q, without the bias
        query_key_bias = self.query.bias @ self.key.weight
        scores = ((hidden @ (query_key @ up.T) + query_key_bias @ up.T).unflatten(-1, (n, r)) * act).sum(-1)
        scores = scores + hidden @ (query_key @ up_bias.T) + query_key_bias @ up_bias.T
        probs = self._softmax(scores)
        self.last_attention = probs if self.keep_attention else None
        probs = probs[..., :n]
        value_up, value_bias = up @ self.value.weight.T, up_bias @ self.value.weight.T

        def mixed(weights: torch.Tensor) -> torch.Tensor:  # V sum_i w_i a_i
            return (weights.unsqueeze(-1) * act).flatten(-2) @ value_up + weights @ value_bias

        if self.norm is None:
            return mixed(probs)
        gate = probs.sum(dim=-1, keepdim=True)
        return gate * self.norm(mixed(probs / gate.clamp_min(1e-9)))

    def value_regularizer(self) -> torch.Tensor:
        """||I - V||_F^2, AdapterHub's penalty that keeps V near the identity."""
        eye = torch.eye(self.value.weight.shape[0], device=self.value.weight.device)
        return (eye - self.value.weight).pow(2).sum()
