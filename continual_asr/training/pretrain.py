"""Base-model pretraining on the stream's base task, cached by (data, model config and head, seed)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path

import torch

from avalanche.core import SupervisedPlugin
from avalanche.training.plugins import EvaluationPlugin

from ..cache import EntryLock
from ..config import HEAD_FIELDS, PRETRAIN_FIELDS, RunConfig, precision_key
from .. import distributed
from ..data.streamdata import StreamData
from ..evaluation.wer import WordErrorRate
from ..model import AdaptableASR, ConformerASR, CTCHead, build_model
from ..model.encoder import ENCODER_STATE_PREFIXES
from ..model.hf_encoder import folder_fingerprint, hf_folder, load_hf_model
from ..results import save_torch_atomic
from .base_file import base_file, load_base_file
from .epoch_file import EpochFile, partial_path
from .progress import ProgressPlugin
from .template import SpeechTemplate, TrainingPhase

log = logging.getLogger("continual_asr")
PRETRAIN_VERSION = 3  # 2: padded frames zeroed before the depthwise convolution; 3: BatchNorm statistics over valid frames


def pretrain_seed(config: RunConfig, run_seed: int) -> int:
    return run_seed if config.pretrain_seed < 0 else config.pretrain_seed


def base_model_key(data: StreamData, config: RunConfig, seed: int, gpu_bf16: bool = False) -> str:
    """``seed``: the run's; ``config.pretrain_seed`` overrides it (the key is the seed used).
    ``gpu_bf16``: pretrained under a GPU's bf16 autocast (``mixed_precision``): other weights."""
    seed = pretrain_seed(config, seed)
    fields = PRETRAIN_FIELDS + HEAD_FIELDS[config.head]  # the head is part of the base model
    payload = {"data": data.fingerprint, "config": config.key_subset(fields), "seed": seed,
               "version": PRETRAIN_VERSION, **precision_key(config.cpu_precision)}
    if gpu_bf16:
        payload["precision"] = "bf16-gpu"
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def save_checkpoint(model: AdaptableASR, path: Path, **metadata) -> None:
    """Atomic: a temporary file renamed into place, so a crash never leaves half a checkpoint."""
    save_torch_atomic({"state_dict": model.state_dict(), "adapter_tasks": list(model.adapter_tasks), **metadata},
                      path)


def load_base_model(path: Path, config: RunConfig, num_tokens: int) -> ConformerASR:
    checkpoint = torch.load(path, weights_only=True, map_location="cpu")
    model = build_model(config, num_tokens)
    model.load_state_dict(checkpoint["state_dict"])
    return model


def pretrain_base_model(data: StreamData, config: RunConfig, seed: int, cache_dir: Path,
                        device: torch.device, progress: bool = True) -> tuple[AdaptableASR, dict]:
    """The base model for this stream's base task: from the cache, or trained now and cached; a
    pretrained model from disk (``base_model: hf:PATH`` or ``casr:FILE``) as it is."""
    file = base_file(config.base_model)
    if file is not None:
        return load_base_file(file, data, config)
    folder = hf_folder(config.base_model)
    if folder is not None:
        model = load_hf_model(folder)
        log.info("base model: %s (%s, %d layers of width %d), not trained here", config.base_model,
                 type(model.hf).__name__, model.num_layers, model.d_model)
        return model, {"source": config.base_model, "path": str(folder), "cache_key": folder_fingerprint(folder),
                       "cached": False, "seconds": 0.0}
    seed = pretrain_seed(config, seed)
    # auto made concrete here too (casr pretrain), so the key says the arithmetic that trains
    config = dataclasses.replace(config, cpu_precision=distributed.prepare_cpu_precision(device, config.cpu_precision))
    key = base_model_key(data, config, seed, gpu_bf16=device.type == "cuda" and config.mixed_precision)
    path = Path(cache_dir) / "base_models" / f"{data.stream.base.name}-{key}.pt"
    info = {"cache_key": key, "path": str(path)}
    # Rank 0 alone uses the cache (other nodes need no shared cache folder) and holds the entry's
    # lock until the model is published: another run needing this base model waits, then reads it.
    lock = EntryLock(path, "base model").acquire() if distributed.is_main() else None
    try:
        found = lock.load(lambda p: load_base_model(p, config, len(data.tokenizer))) if lock else None
        if distributed.broadcast_object(found is not None):
            log.info("base model: reusing %s", path)
            model = found if found is not None else build_model(config, len(data.tokenizer))
            distributed.broadcast_module(model)
            return model, {**info, "cached": True, "seconds": 0.0}
        start = None
        if config.head != "ctc" and config.transducer_init == "ctc":
            start, ctc_info = pretrain_base_model(data, dataclasses.replace(config, head="ctc"), seed, cache_dir,
                                                  device, progress)
        epoch_file = EpochFile(partial_path(path))  # read under the entry's lock
        model, seconds = _pretrain(data, config, seed, device, progress, start, epoch_file)
        if start is not None:
            seconds += ctc_info["seconds"]  # what this base model cost, the CTC one included
        if lock:
            lock.build(lambda built: save_checkpoint(model, built, key=key, seconds=seconds))
            epoch_file.discard()
    finally:
        if lock:
            lock.release()
    return model, {**info, "cached": False, "seconds": seconds}


class PretrainTemplate(SpeechTemplate):
    """Whole-model pretraining, after ``warmup_epochs`` of the head alone: a transducer that
    starts from the CTC base model's encoder first learns its prediction network and joiner
    against that encoder, then trains with it. (The frozen encoder's BatchNorm statistics still
    follow the base task's batches, on which they were learned.) ``epoch_file``: kept after every
    epoch of both phases, and resumed from."""

    def __init__(self, *, warmup_epochs: int = 0, epoch_file: EpochFile | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.warmup_epochs = warmup_epochs
        self.epoch_file = epoch_file

    def training_phases(self, experience) -> list[TrainingPhase]:
        whole = dataclasses.replace(super().training_phases(experience)[0], epoch_file=self.epoch_file)
        if not self.warmup_epochs:
            return [whole]
        return [TrainingPhase("head warm-up", self.warmup_epochs, self.learning_rate, configure=_head_only,
                              epoch_file=self.epoch_file),
                dataclasses.replace(whole, epochs=whole.epochs - self.warmup_epochs)]


def _head_only(model: AdaptableASR) -> None:
    model.set_trainable(base=True)
    for name, parameter in model.named_parameters():
        if name.startswith(ENCODER_STATE_PREFIXES):
            parameter.requires_grad_(False)


class AuxiliaryCTC(SupervisedPlugin, supports_distributed=True):  # the loss it adds is weighted like the main one
    """Hybrid CTC/transducer pretraining (as ESPnet, NeMo and icefall do): ``weight`` x the CTC
    loss of a linear layer on the encoder output (``model.aux_ctc``, which pretraining adds and
    removes) joins the transducer loss. CTC's frame-synchronous alignment gives the encoder a
    gradient that does not wait for the prediction network to learn."""

    def __init__(self, weight: float) -> None:
        super().__init__()
        self.weight = weight

    def before_backward(self, strategy: SpeechTemplate, **kwargs) -> None:
        model = getattr(strategy.model, "module", strategy.model)
        strategy.loss += self.weight * model.aux_ctc.loss(*strategy.mb_output, strategy.mbatch)


def _pretrain(data: StreamData, config: RunConfig, seed: int, device: torch.device, progress: bool,
              start: ConformerASR | None, epoch_file: EpochFile) -> tuple[ConformerASR, float]:
    """Data-parallel over every process, like all training. ``start``: a CTC base model whose
    encoder (and CTC layer, as the auxiliary CTC layer) a transducer starts from. ``epoch_file``:
    kept after every epoch, and resumed from when it holds one."""
    torch.manual_seed(seed)
    model = build_model(config, len(data.tokenizer))
    mean, std = data.feature_stats()
    model.feature_mean.copy_(mean)
    model.feature_std.copy_(std)
    plugins = [ProgressPlugin(progress, label="pretrain ")]
    hybrid = config.head != "ctc" and config.transducer_ctc_weight > 0
    if hybrid:
        model.aux_ctc = CTCHead(config.d_model, len(data.tokenizer))
        plugins.append(AuxiliaryCTC(config.transducer_ctc_weight))
    if start is not None:
        encoder = {k: v for k, v in start.state_dict().items() if k.startswith(ENCODER_STATE_PREFIXES)}
        model.load_state_dict(encoder, strict=False)
        if hybrid:
            model.aux_ctc.load_state_dict(start.head.state_dict())
    epochs, warmup = config.pretrain_epochs, 0
    if start is not None:  # a transducer from the CTC base model: its own epochs, the first on the head alone
        epochs = config.transducer_epochs or config.pretrain_epochs
        warmup = round(config.transducer_warmup * epochs)
    strategy = PretrainTemplate(model=model, config=config, device=device, seed=seed, epochs=epochs,
                                learning_rate=config.pretrain_lr, plugins=plugins, warmup_epochs=warmup,
                                epoch_file=epoch_file)
    experience = next(iter(data.benchmark_for_base().train_stream))
    log.info("base model: pretraining on %s for %d epochs%s", data.stream.base.name, epochs,
             f" from the CTC base model's encoder, the first {warmup} training the head alone" if start is not None
             else "")
    done = epoch_file.epochs_done([phase.epochs for phase in strategy.training_phases(experience)])
    if done is not None:
        log.info("base model: resuming after epoch %d of %d (%s)", done, epochs, epoch_file.path)
    strategy.train(experience, eval_streams=[])
    seconds = epoch_file.seconds()
    if hybrid:
        del model.aux_ctc  # not part of the base model
    return model.cpu(), seconds


def evaluate_base_model(model: AdaptableASR, data: StreamData, config: RunConfig,
                        device: torch.device, split: str = "test") -> dict[str, float]:
    """WER (%) of the plain base model (no adapters) on every test set of the stream, or with
    ``split="dev"`` on every dev set."""
    wer = WordErrorRate(data.tokenizer)
    strategy = SpeechTemplate(model=model, config=config, device=device,
                              evaluator=EvaluationPlugin(wer, loggers=[]))
    benchmark = data.benchmark()
    stream, tasks = ((benchmark.test_stream, data.stream.eval_tasks) if split == "test"
                     else (benchmark.dev_stream, data.dev_tasks()))
    strategy.eval(stream)
    return {task.name: round(wer.results[i], 2) for i, task in enumerate(tasks)}
