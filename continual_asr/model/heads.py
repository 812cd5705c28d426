"""Output heads: what turns the encoder's frames into a loss and a transcript.

The model's forward returns the encoder output (B, T', D) and its lengths; the head (the
model's ``head`` module, part of the frozen base) gives

- ``loss(encoded, lengths, batch)``: the mean training loss, normalised per target token;
- ``decode(encoded, lengths)``: greedy token ids per utterance;
- ``posteriors(encoded, lengths, batch)``: every output distribution the loss scores, with a
  mask of the valid ones (what LwF distils).

Every head shares the class layout: blank is class 0, token t is class t + 1. Adapters and
combiners live in the encoder, so they work the same under any head: CTC, RNN-T
(``TransducerHead``) or HAT (``HATHead``, the paper's decoder: the RNN-T lattice with blank
factored out of the label softmax).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

from ..config import RunConfig

if TYPE_CHECKING:  # only a type here: the model package needs no data loading
    from ..data.dataset import SpeechBatch


def frame_mask(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """(B, frames) True where a frame is inside its utterance."""
    return torch.arange(frames, device=lengths.device)[None, :] < lengths[:, None]


def head_of(model: nn.Module) -> nn.Module:
    """The head of a model, also when a wrapper (DistributedDataParallel) holds it as ``module``."""
    return getattr(model, "module", model).head


class CTCHead(nn.Linear):
    """CTC: one linear layer to (V + 1) classes per frame. A ``Linear`` itself, so its state
    keeps the names ``head.weight``/``head.bias`` that cached base models and adapter files'
    base fingerprints were made with."""

    def __init__(self, d_model: int, num_tokens: int) -> None:
        super().__init__(d_model, num_tokens + 1)

    def log_probs(self, encoded: torch.Tensor) -> torch.Tensor:
        return super().forward(encoded).log_softmax(dim=-1)

    def loss(self, encoded: torch.Tensor, lengths: torch.Tensor, batch: SpeechBatch) -> torch.Tensor:
        """Mean over the batch of the CTC loss divided by the target length."""
        return F.ctc_loss(self.log_probs(encoded).transpose(0, 1).float(), batch.targets + 1, lengths,
                          batch.target_lengths, blank=0, reduction="mean", zero_infinity=True)

    @torch.no_grad()
    def decode(self, encoded: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
        """Best path: argmax per frame, merge repeats, drop blanks."""
        best = self(encoded).argmax(dim=-1).cpu()
        hypotheses = []
        for path, length in zip(best, lengths.cpu().tolist()):
            path = torch.unique_consecutive(path[:length])
            hypotheses.append([t - 1 for t in path.tolist() if t != 0])
        return hypotheses

    def posteriors(self, encoded: torch.Tensor, lengths: torch.Tensor,
                   batch: SpeechBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-frame log-posteriors (B, T', V + 1) and the valid frames (B, T')."""
        return self.log_probs(encoded), frame_mask(lengths, encoded.shape[1])


def transducer_loss(log_probs: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor,
                    target_lengths: torch.Tensor) -> torch.Tensor:
    """Per-utterance transducer loss (torchaudio's rnnt_loss, blank 0) of lattice log-probabilities
    (B, T, U + 1, C), float32, and target classes (B, U).

    The loss reads two log-probabilities per lattice node, blank and the next reference class.
    They are gathered here and given to the kernel as a two-class lattice
    (``fused_log_softmax=False``): the same loss and gradients as the whole lattice, but the
    kernel, whose per-class loop over the full lattice dominated a training step on a CPU,
    touches 2 classes instead of C (about 4x faster at the default sizes). Any normalised
    distribution per node works: RNN-T's softmax, or HAT's factored one.
    """
    batch, frames, prefixes, _ = log_probs.shape
    following = F.pad(targets, (0, 1), value=0)  # the class after each prefix (after the last: any)
    emit = log_probs.gather(-1, following[:, None, :, None].expand(batch, frames, prefixes, 1)).squeeze(-1)
    pair = torch.stack([log_probs[..., 0], emit], dim=-1)  # class 0: blank, class 1: the next token
    return torchaudio.functional.rnnt_loss(pair, torch.ones_like(targets, dtype=torch.int32), lengths.int(),
                                           target_lengths.int(), blank=0, reduction="none", fused_log_softmax=False)


def monotonic_transducer_loss(log_probs: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor,
                              target_lengths: torch.Tensor) -> torch.Tensor:
    """Per-utterance loss of the monotonic transducer lattice (Tripathi et al. 2019; k2's
    "modified" RNN-T): every frame emits exactly one class, blank or the next token, and moves on,
    so a token is emitted at most once per frame. Same inputs as ``transducer_loss``. An
    utterance with more tokens than frames has no path: its loss is 0, as CTC's zero_infinity."""
    batch, frames, prefixes, _ = log_probs.shape
    following = F.pad(targets, (0, 1), value=0)
    emit = log_probs.gather(-1, following[:, None, :, None].expand(batch, frames, prefixes, 1)).squeeze(-1)
    blank = log_probs[..., 0]
    impossible = -1e30  # finite, so that logaddexp of two impossible paths keeps finite gradients
    alpha = torch.full((batch, prefixes), impossible, dtype=log_probs.dtype, device=log_probs.device)
    alpha[:, 0] = 0.0
    alphas = []
    for t in range(frames):  # alpha[u]: log-probability of having emitted u tokens after frame t
        stay = alpha + blank[:, t]
        move = F.pad(alpha[:, :-1] + emit[:, t, :-1], (1, 0), value=impossible)
        alpha = torch.logaddexp(stay, move)
        alphas.append(alpha)
    last = torch.stack(alphas, dim=1)[torch.arange(batch, device=lengths.device), lengths - 1, target_lengths]
    return torch.where(last > impossible / 2, -last, torch.zeros_like(last))


class TransducerHead(nn.Module):
    """RNN-T: a prediction network (token embedding, one LSTM layer) over the tokens so far and
    a joiner, out(tanh(W_enc e_t + W_pred p_u)), scoring each (frame, tokens-so-far) pair.

    Blank (class 0) doubles as the start symbol fed to the predictor before any token.
    Costlier than CTC: the loss scores the whole B x T' x (U + 1) lattice through the joiner,
    and decoding steps the predictor token by token (batched over utterances, one step per
    emitted token, at most ``max_symbols`` per frame).

    ``lattice``: "regular" (a frame emits tokens until blank moves on) or "monotonic" (a frame
    emits blank or one token and moves on, in the loss and in greedy search). On the regular
    lattice the joiner sees the same frame and predictor state right after emitting a token and
    at a later frame of the same token repeated, so with little data it learns to delete
    repeats; on the monotonic lattice an emission also moves past its frame, so the two differ.
    """

    def __init__(self, d_model: int, num_tokens: int, pred_dim: int, joint_dim: int, max_symbols: int,
                 blank_penalty: float = 0.0, lattice: str = "regular") -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_tokens + 1, pred_dim)
        self.predictor = nn.LSTM(pred_dim, pred_dim, batch_first=True)
        self.enc_proj = nn.Linear(d_model, joint_dim)
        self.pred_proj = nn.Linear(pred_dim, joint_dim, bias=False)  # enc_proj's bias serves both
        self.out = nn.Linear(joint_dim, num_tokens + 1)
        self.max_symbols = max_symbols  # decoding settings, not weights: not in the state dict
        self.blank_penalty = blank_penalty
        self.lattice = lattice  # shapes what the weights learn: part of the base model's key, unlike the two above

    # ---- pieces --------------------------------------------------------------------------------
    @property
    def symbols_per_frame(self) -> int:
        """The most tokens greedy search emits at one frame: what the lattice allows, capped."""
        return 1 if self.lattice == "monotonic" else self.max_symbols

    def predict(self, classes: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """classes (B, U) -> projected predictor output (B, U, J) and the LSTM state."""
        out, state = self.predictor(self.embedding(classes), state)
        return self.pred_proj(out), state

    def joint(self, enc: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        """Logits over the V + 1 classes of projected encoder and predictor outputs (broadcast)."""
        return self.out(torch.tanh(enc + pred))

    def log_probs(self, logits: torch.Tensor) -> torch.Tensor:
        """The joiner's output distribution per node, as log-probabilities over the V + 1 classes."""
        return logits.log_softmax(dim=-1)

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """What greedy search takes the argmax of: the logits (their softmax keeps the order)."""
        return logits

    def lattice_logits(self, encoded: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(B, T', U + 1, V + 1): the joiner at every frame and every prefix of ``targets`` (B, U)."""
        prefixes = F.pad(targets + 1, (1, 0), value=0)  # start symbol, then the targets
        pred, _ = self.predict(prefixes)
        return self.joint(self.enc_proj(encoded).unsqueeze(2), pred.unsqueeze(1))

    # ---- the head interface ----------------------------------------------------------------------
    def loss(self, encoded: torch.Tensor, lengths: torch.Tensor, batch: SpeechBatch) -> torch.Tensor:
        """Mean over the batch of the RNN-T loss divided by the target length (CTC's
        normalisation, so learning rates and gradient clipping mean the same for both heads)."""
        # The loss kernel wants the lattice exactly as long as the longest utterance and transcript.
        encoded = encoded[:, : int(lengths.max())]
        targets = batch.targets[:, : int(batch.target_lengths.max())]
        log_probs = self.log_probs(self.lattice_logits(encoded, targets).float())  # the kernel takes float32
        loss = monotonic_transducer_loss if self.lattice == "monotonic" else transducer_loss
        costs = loss(log_probs, targets + 1, lengths, batch.target_lengths)
        return (costs / batch.target_lengths.clamp(min=1).to(costs.dtype)).mean()

    @torch.no_grad()
    def decode(self, encoded: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
        """Greedy search, all utterances at once: at each frame, emit the argmax token and step
        the predictor while it is not blank (at most ``symbols_per_frame`` times), then move on."""
        batch = encoded.shape[0]
        enc = self.enc_proj(encoded)
        pred, state = self.predict(torch.zeros(batch, 1, dtype=torch.long, device=encoded.device))
        pred = pred[:, 0]
        hypotheses: list[list[int]] = [[] for _ in range(batch)]
        for t in range(int(lengths.max()) if batch else 0):
            active = t < lengths  # utterances that may still emit at this frame
            for _ in range(self.symbols_per_frame):
                scores = self.scores(self.joint(enc[:, t], pred))
                if self.blank_penalty:  # blank's score, logit or log-probability, falls against every token's
                    scores[:, 0] -= self.blank_penalty  # a fresh tensor, and no gradients here
                best = scores.argmax(dim=-1)
                emit = active & (best != 0)
                if not bool(emit.any()):
                    break
                for b, token in zip(emit.nonzero()[:, 0].tolist(), best[emit].tolist()):
                    hypotheses[b].append(token - 1)
                # Step the predictor for everyone (one batched call), keep it where a token was emitted.
                new_pred, new_state = self.predict(best.unsqueeze(1), state)
                keep = emit.unsqueeze(-1)
                pred = torch.where(keep, new_pred[:, 0], pred)
                state = tuple(torch.where(keep.unsqueeze(0), new, old) for new, old in zip(new_state, state))
                active = emit  # a blank ends that utterance's turn at this frame
        return hypotheses

    def posteriors(self, encoded: torch.Tensor, lengths: torch.Tensor,
                   batch: SpeechBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """The joiner's log-posteriors on the reference lattice (B, T', U + 1, V + 1) and the
        valid nodes (frame inside the utterance, prefix no longer than its transcript)."""
        log_probs = self.log_probs(self.lattice_logits(encoded, batch.targets))
        prefixes = frame_mask(batch.target_lengths + 1, log_probs.shape[2])
        return log_probs, frame_mask(lengths, log_probs.shape[1])[:, :, None] & prefixes[:, None, :]


class HATHead(TransducerHead):
    """HAT, the Hybrid Autoregressive Transducer (Variani et al., 2020), the paper's decoder: the
    RNN-T lattice and joiner, but blank's probability is a sigmoid of its own logit and the
    tokens share the rest, P(token) = (1 - P(blank)) softmax(token logits). Trained with the same
    lattice loss and decoded by the same greedy search; the label softmax alone is the model's
    internal language model, which a fused external one can replace."""

    def log_probs(self, logits: torch.Tensor) -> torch.Tensor:
        blank = logits[..., :1]
        return torch.cat([F.logsigmoid(blank), F.logsigmoid(-blank) + logits[..., 1:].log_softmax(dim=-1)], dim=-1)

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        return self.log_probs(logits)  # blank and the tokens are no longer one softmax's logits


def make_head(config: RunConfig, num_tokens: int) -> nn.Module:
    """The head ``config.head`` names, sized by the config."""
    if config.head in ("rnnt", "hat"):
        transducer = HATHead if config.head == "hat" else TransducerHead
        return transducer(config.d_model, num_tokens, config.rnnt_pred_dim, config.rnnt_joint_dim,
                          config.rnnt_max_symbols, config.rnnt_blank_penalty, config.rnnt_lattice)
    return CTCHead(config.d_model, num_tokens)
