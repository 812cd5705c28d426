"""casr's own base model as a file (``base_model: casr:FILE``), so that runs anywhere start from
the very same weights.

The same pretraining on another kind of CPU gives another base model (float sums round
differently: an AVX2 machine's us-clean test WER was 31.7 where AVX-512 machines' was 32.7, under
one cache key), and so does a cluster node without the shared cache folder. ``casr pretrain
--export FILE`` writes the base model once; ``--set base_model=casr:FILE`` makes every run load it
instead of pretraining, after checking that it fits the run's model and tokenizer.
``--set base_model=reference`` names the stream's own such file, NAME.base.pt beside its YAML
(``streams/accents-then-noise.base.pt`` for the built-in default stream).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path

import torch

from ..config import (CASR_PREFIX as PREFIX, MODEL_FIELDS, REFERENCE_BASE, TRANSDUCER_FIELDS, UNKEYED_DEFAULTS,
                      RunConfig, fields_of)
from ..data.streamdata import StreamData
from ..data.tokenizer import Tokenizer
from ..errors import ConfigError
from ..model import AdaptableASR, build_model
from ..results import save_torch_atomic
from ..stream import StreamSpec

log = logging.getLogger("continual_asr")
FORMAT = "casr base model"
# What must agree for the weights to mean the same thing: every field that shapes the model, and
# the lattice a transducer was trained on (its search reads the weights by it). Dropout is a
# training setting of whoever uses the model, not part of its weights.
SHAPE_FIELDS = [f for f in MODEL_FIELDS if f != "dropout"] + fields_of("head") + ["rnnt_lattice"]


def base_file(base_model: str) -> Path | None:
    """The file ``base_model`` (a config value) names with ``casr:``, else None."""
    return Path(base_model[len(PREFIX):]).expanduser() if base_model.startswith(PREFIX) else None


def with_reference_base(config: RunConfig, stream: StreamSpec) -> RunConfig:
    """``config`` with ``base_model: reference`` made concrete for ``stream``: casr:FILE of its
    reference base model (NAME.base.pt beside its YAML file), or empty (pretrained, cached) where
    the stream has none; any other value as it is. Runs record the concrete value, so that they
    compare by the weights."""
    if config.base_model != REFERENCE_BASE:
        return config
    path = Path(stream.source).with_suffix(".base.pt") if stream.source else None
    if path is None or not path.is_file():
        log.info("base model: stream %s has no reference base model (%s): pretraining one", stream.name,
                 path.name if path else "no YAML file")
        return dataclasses.replace(config, base_model="")
    return dataclasses.replace(config, base_model=f"{PREFIX}{path}")


def recorded_weights(base_model: str) -> str | None:
    """The weights digest that the casr:FILE ``base_model`` names was exported with; None where the
    value names no casr base model file that can be read (loading it says why, in one line)."""
    path = base_file(base_model)
    try:
        return None if path is None else read_base_file(path)["weights"]
    except ConfigError:
        return None


def weights_digest(model: torch.nn.Module) -> str:
    """16 hex digits over every tensor of the model's state (names, shapes, dtypes, values): two
    runs start from one base model exactly when their digests agree. The same pretraining on
    another kind of CPU gives another model (float sums differ), with the same cache key."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}\n".encode())
        flat = tensor.detach().cpu().contiguous().reshape(-1)  # as bytes: 0-d buffers and bf16 too
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def check_base_file(path: Path) -> None:
    """ConfigError (one line) where ``path`` is no file: before any data or training work."""
    if not path.is_file():
        raise ConfigError(f"base_model {PREFIX}{path}: no such file (write one with casr pretrain --export FILE)")


def tokenizer_digest(tokenizer: Tokenizer) -> str:
    """16 hex digits over the SentencePiece model: the same vocabulary exactly when they agree."""
    return hashlib.sha256(tokenizer.model_bytes).hexdigest()[:16]


def export_base_model(model: AdaptableASR, path: Path, data: StreamData, config: RunConfig, info: dict,
                      weights: str) -> None:
    """Write ``model`` (the stream's base model, ``info`` from pretrain_base_model, ``weights`` its
    weights_digest) to ``path`` atomically, with what loading it checks."""
    payload = {"format": FORMAT, "state_dict": model.state_dict(), "model_config": config.subset(SHAPE_FIELDS),
               "tokenizer": tokenizer_digest(data.tokenizer), "stream": data.stream.name, "base_task": data.stream.base.name,
               "cache_key": info.get("cache_key"), "weights": weights,
               "torch cpu capability": torch.backends.cpu.get_cpu_capability()}
    save_torch_atomic(payload, Path(path))


def read_base_file(path: Path) -> dict:
    """What export_base_model wrote to ``path``; ConfigError (one line, naming the file) where it is
    no file, not a readable torch file or not a casr base model."""
    shown = f"base_model {PREFIX}{path}"
    check_base_file(path)
    try:
        checkpoint = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as error:  # a truncated or foreign file: say which, not torch's unpickler
        raise ConfigError(f"{shown}: not a readable torch file ({type(error).__name__})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise ConfigError(f"{shown}: not a casr base model (write one with casr pretrain --export FILE)")
    return checkpoint


def load_base_file(path: Path, data: StreamData, config: RunConfig) -> tuple[AdaptableASR, dict]:
    """The base model in ``path`` (written by export_base_model), as a run with ``config`` on
    ``data`` needs it; ConfigError (one line, naming the file) where it does not fit."""
    shown = f"base_model {PREFIX}{path}"
    checkpoint = read_base_file(path)
    recorded = {**UNKEYED_DEFAULTS, **checkpoint["model_config"]}  # a file from before a field has its old value
    unread = TRANSDUCER_FIELDS if config.head == "ctc" else ()  # a CTC model has no predictor (its head is checked)
    for name in SHAPE_FIELDS:
        if name not in unread and name in recorded and recorded[name] != getattr(config, name):
            raise ConfigError(f"{shown}: its model has {name}={recorded[name]!r}, the run's config "
                              f"{getattr(config, name)!r} (use the preset and fields it was pretrained with)")
    if checkpoint["tokenizer"] != tokenizer_digest(data.tokenizer):
        raise ConfigError(f"{shown}: pretrained with another vocabulary (stream {checkpoint['stream']!r}, this run's "
                          f"{data.stream.name!r}): the base task's transcripts or vocab_size differ")
    model = build_model(config, len(data.tokenizer))
    model.load_state_dict(checkpoint["state_dict"])
    log.info("base model: %s (pretrained under cache key %s), not trained here", path, checkpoint["cache_key"])
    return model, {"source": f"{PREFIX}{path}", "path": str(path), "cache_key": checkpoint["cache_key"],
                   "cached": False, "seconds": 0.0}
