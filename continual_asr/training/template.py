"""The one Avalanche template every strategy shares: speech recognition in training phases.

``SpeechTemplate`` is a ``SupervisedTemplate`` (the methods it overrides, and why, are listed in
training/avalanche_overrides.py) that (a) batches variable-length speech with
the dataset's collate function on both paths (Avalanche 0.6.0 drops it when training,
issue #1531), (b) carries transcripts through the minibatch, (c) computes the loss of the model's
head (CTC or transducer, continual_asr/model/heads.py) on the encoder output, and
(d) runs each experience as a list of :class:`TrainingPhase` objects, each choosing what trains,
on which data, for how long, with its own one-cycle learning-rate schedule. A strategy only
says which phases it runs (see continual_asr/training/adapters.py and strategies/).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Protocol, runtime_checkable

import torch
import torchaudio
from avalanche.benchmarks.utils import AvalancheDataset
from avalanche.training.plugins import EvaluationPlugin
from avalanche.training.templates import SupervisedTemplate
from torch.utils.data import DataLoader

from ..config import Options, RunConfig, option
from .. import distributed
from ..data.dataset import FrameBudgetBatchSampler, ShardedBatchSampler, ShardView, SpeechBatch, collate
from ..errors import TrainingError
from ..model import AdaptableASR, head_of
from . import avalanche_overrides
from .epoch_file import EpochFile
from .memory import TaskMemory


@dataclass
class TrainingPhase:
    """One stretch of training inside an experience."""

    name: str
    epochs: int
    learning_rate: float
    configure: Callable[[AdaptableASR], None]  # installs combiners and chooses trainable parameters
    dataset: AvalancheDataset | None = None  # None: the experience's training data (as plugins adapted it)
    # A seed of its own (torch's RNG and batch order) makes the phase independent of every phase
    # before it, so its result can be reused (adapter extraction); None: the run's RNG flows on.
    seed: int | None = None
    finish: Callable[[AdaptableASR], None] | None = None  # called once the phase's epochs are done
    # Where the state after each finished epoch is kept, so an interrupted phase resumes after it
    # (training/epoch_file.py); None: an interrupted phase starts over.
    epoch_file: EpochFile | None = None


def phase_seed(run_seed: int, experience: int, phase: str) -> int:
    """A seed for one phase of one experience, independent of every other phase."""
    digest = hashlib.sha256(f"{run_seed}/{experience}/{phase}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def whole_model_epochs(default: int):
    """The ``finetune_epochs`` field with a strategy's own default, each chosen on dev: joint training,
    which goes over every task so far at each step, needs far more than the others."""
    return option("finetune", default, "epochs per task of the whole-model baselines (each strategy's own default, "
                                       "chosen on dev)", min=1)


def whole_model_lr(default: float):
    """The ``finetune_lr`` field with a strategy's own default: the best rate differs between the
    whole-model baselines (joint training wants a far higher one than sequential fine-tuning)."""
    return option("finetune", default, "peak learning rate of the whole-model baselines (each strategy's own "
                                       "default, chosen on dev)", min=0.0)


@dataclass
class FinetuneOptions(Options):
    """The options every whole-model baseline reads."""

    # 24: finetune's and LwF's lowest dev mean WER of 6, 12 and 24 epochs on accents-then-noise (seeds 0 and 1:
    # 12 is 2.66 and 1.07 dev points below 6, 24 another 1.55 and 1.61 below 12; docs/tuning.md, "Fine-tuning
    # and LwF: 24 epochs"); 6 until 2026-12-06, 12 for part of that day; 3 is worse for every baseline ("Fewer
    # whole-model epochs"). EWC has its own (strategies/ewc.py).
    finetune_epochs: int = whole_model_epochs(24)
    # 2e-3: sequential fine-tuning's lowest dev mean WER of 2.5e-4 to 4e-3 on accents-then-noise (seed 0,
    # synthesis version 4; docs/tuning.md, "The whole-model baselines tuned on dev"); 5e-4 until 2026-12-01.
    # Checked again at 24 epochs (1e-3 to 8e-3, seeds 0 and 1 at 4e-3): none better on dev ("Fine-tuning's rate
    # at 24 epochs").
    finetune_lr: float = whole_model_lr(2e-3)


@runtime_checkable
class ResumablePlugin(Protocol):
    """A plugin whose state must survive a resumed run (it goes into the checkpoint)."""

    def resume_state(self) -> dict:
        """Tensors and plain values only: checkpoints load with ``weights_only=True``."""

    def restore(self, strategy: "SpeechTemplate", state: dict, finished_experiences: list) -> None:
        """Become what the plugin was after ``finished_experiences`` (before the weights load)."""


def spec_augment(n_mels: int) -> torch.nn.Module:
    """SpecAugment as training applies it to (B, n_mels, T) log-mels: two frequency masks of up
    to a sixth of the bins, two time masks of up to 20 frames (at most a tenth of the utterance)."""
    return torch.nn.Sequential(
        torchaudio.transforms.FrequencyMasking(freq_mask_param=max(1, n_mels // 6)),
        torchaudio.transforms.FrequencyMasking(freq_mask_param=max(1, n_mels // 6)),
        torchaudio.transforms.TimeMasking(time_mask_param=20, p=0.1),
        torchaudio.transforms.TimeMasking(time_mask_param=20, p=0.1),
    )


class SpeechTemplate(SupervisedTemplate):
    """Whole-model training on each experience (the fine-tuning baseline, and pretraining)."""

    def __init__(self, *, model: AdaptableASR, config: RunConfig, device: str | torch.device = "cpu",
                 plugins: list | None = None, evaluator: EvaluationPlugin | None = None, seed: int = 0,
                 base_data: AvalancheDataset | None = None, epochs: int = 1, learning_rate: float = 1e-3,
                 memory_per_task: int = 0) -> None:
        """``epochs`` and ``learning_rate``: of the whole-model phase (``training_phases``).
        ``base_data``: the base task's training data, the memory's first task (the runner hands it
        over; composition, replay, EWC and joint training read it); the memory keeps
        ``memory_per_task`` utterances of each task (0: none, only the list of tasks seen)."""
        placeholder = torch.optim.AdamW(model.parameters(), lr=0.0)  # rebuilt for every phase
        super().__init__(model=model, optimizer=placeholder, criterion=None, train_mb_size=1, train_epochs=1,
                         eval_mb_size=1, device=device, plugins=plugins,
                         evaluator=evaluator or EvaluationPlugin(loggers=[]), eval_every=-1)
        self.config = config
        self.seed = seed
        if distributed.is_active():
            distributed.sync_batchnorm(model)  # training statistics over the whole global batch
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.memory = TaskMemory(memory_per_task, seed)
        if base_data is not None:
            self.memory.add(base_data)
        self.phase: TrainingPhase | None = None
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        self.trained_parameters: dict[int, int] = {}  # id -> numel of every parameter trained this experience
        self.step_details: dict = {}  # what a strategy adds to this experience's record in results.json
        self._phase_counter = 0
        self.phase_index = 0
        self.phase_epoch = 0
        # audio has no mel bins to mask
        self.spec_augment = spec_augment(config.n_mels) if config.specaugment and not model.takes_waveform else None

    @property
    def bare_model(self) -> AdaptableASR:
        """The model itself, not a DistributedDataParallel wrapper around it (which holds it as ``module``)."""
        return getattr(self.model, "module", self.model)

    # ---- what a strategy overrides ------------------------------------------------------------
    def training_phases(self, experience) -> list[TrainingPhase]:
        return [TrainingPhase("finetune", self.epochs, self.learning_rate,
                              configure=lambda model: model.set_trainable(base=True))]

    def after_phases(self, experience) -> None:
        """Called once the experience's phases are done (e.g. to install the eval combiner)."""

    def rebuild_structure(self, finished_experiences: list) -> None:
        """Give the model the modules it had after ``finished_experiences`` (for resuming)."""

    def adapter_routes(self, task_ids: torch.Tensor) -> torch.Tensor:
        """The true task's adapter per utterance (-1: none), which only oracle routing reads.

        Here adapter k belongs to stream task k + 1 (WER-matrix column k + 1; the base task is
        column 0 and the zero-shot task -1); AdapterStrategy keeps the real map.
        """
        return torch.where(task_ids > 0, task_ids - 1, -1)

    # ---- resuming ------------------------------------------------------------------------------
    def _resumable_plugins(self) -> dict[str, ResumablePlugin]:
        return {type(p).__name__: p for p in self.plugins if isinstance(p, ResumablePlugin)}

    def resume_state(self) -> dict:
        """What, beside the weights, an uninterrupted run carries into the next experience."""
        return {"phase_counter": self._phase_counter, "torch_rng": torch.get_rng_state(),
                "plugins": {name: p.resume_state() for name, p in self._resumable_plugins().items()}}

    def restore(self, state: dict, finished_experiences: list) -> None:
        """Rebuild structure, memory, plugins and random state as they were after
        ``finished_experiences``; load the model's weights afterwards."""
        self.rebuild_structure(finished_experiences)
        for experience in finished_experiences:
            self.memory.add(experience.dataset)
        for name, plugin in self._resumable_plugins().items():
            plugin.restore(self, state.get("plugins", {}).get(name, {}), finished_experiences)
        self._phase_counter = int(state["phase_counter"])
        torch.set_rng_state(state["torch_rng"])

    # ---- the training loop --------------------------------------------------------------------
    def _train_exp(self, experience, eval_streams=None, **kwargs) -> None:
        self.trained_parameters = {}
        self.step_details = {}
        # Avalanche has adapted the experience's data by now (train_dataset_adaptation, then the
        # plugins' after_train_dataset_adaptation, e.g. replay adding its buffer): phases without
        # data of their own train on that.
        experience_data = self.adapted_dataset
        for self.phase_index, phase in enumerate(self.training_phases(experience)):
            if phase.epochs <= 0:
                continue
            self.phase = phase
            if phase.seed is not None:
                torch.manual_seed(phase.seed)
            phase.configure(self.model)
            self.model.to(self.device)
            distributed.broadcast_module(self.model)  # every process starts the phase from rank 0's weights
            self.adapted_dataset = (phase.dataset or experience_data).train()
            self.make_train_dataloader()
            self.make_optimizer()
            self.model.train()
            first = phase.epoch_file.first_epoch(self) if phase.epoch_file is not None else 0
            for self.phase_epoch in range(first, phase.epochs):
                self._before_training_epoch(**kwargs)
                self.training_epoch(**kwargs)
                self._after_training_epoch(**kwargs)
                if phase.epoch_file is not None:
                    phase.epoch_file.write(self)
            if phase.finish is not None:
                phase.finish(self.model)
        self.phase = None
        self.after_phases(experience)
        distributed.broadcast_module(self.model)  # what ranks fitted on their own (the router) stays rank 0's
        self.memory.add(experience.dataset)

    def check_model_and_optimizer(self, **kwargs) -> None:
        """Optimizers are built per phase in ``_train_exp``; the model has no dynamic modules."""

    def model_adaptation(self, model=None):
        return (model or self.model).to(self.device)

    def make_optimizer(self, **kwargs) -> None:
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise TrainingError(f"phase '{self.phase.name}' has no trainable parameters")
        self.trained_parameters.update({id(p): p.numel() for p in params})
        lr = self.phase.learning_rate
        self.optimizer = torch.optim.AdamW(self.parameter_groups(params), lr=lr, weight_decay=self.config.weight_decay)
        total_steps = max(2, self.phase.epochs * len(self.dataloader))
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer, max_lr=lr, total_steps=total_steps, pct_start=0.15, anneal_strategy="cos")

    def parameter_groups(self, params: list) -> list[dict]:
        """The optimizer's parameter groups (a strategy may give some their own settings)."""
        return [{"params": params}]

    def optimizer_step(self) -> None:
        torch.nn.utils.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]], 5.0)
        self.optimizer.step()
        if self.scheduler is not None and self.scheduler.last_epoch + 1 < self.scheduler.total_steps:
            self.scheduler.step()

    # ---- the loops: mixed precision, several processes -----------------------------------------
    def autocast(self):
        """bf16 autocast on a GPU (``mixed_precision``) and on the CPU as ``cpu_precision`` says."""
        return distributed.autocast(self.device, self.config.mixed_precision, self.config.cpu_precision)

    def _float32(self, output):
        """The model's outputs in float32 after an autocast forward: losses and decoding (which
        runs outside autocast, in the metrics) then see the dtype of the weights."""
        if not isinstance(output, (tuple, list)):
            return output
        return type(output)(t.float() if torch.is_tensor(t) and t.is_floating_point() else t for t in output)

    def training_epoch(self, **kwargs) -> None:
        avalanche_overrides.training_epoch(self, **kwargs)

    def eval_epoch(self, **kwargs) -> None:
        avalanche_overrides.eval_epoch(self, **kwargs)

    def backward(self) -> None:
        """With several processes: each rank's loss weighted by its share of the global batch's
        utterances, gradients summed over the ranks (the whole batch's mean-loss gradient on
        every rank, before clipping); ``loss`` becomes the whole batch's, for the logs."""
        if not distributed.is_active():
            return super().backward()
        weighted = self.loss * self.mbatch.share
        weighted.backward(retain_graph=self.retain_graph)
        trained = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.loss = distributed.reduce_gradients(trained, weighted)

    # ---- data ---------------------------------------------------------------------------------
    def loader(self, dataset: AvalancheDataset, max_frames: int, shuffle: bool, sharded: bool = False,
               seed: int | None = None) -> DataLoader:
        """Length-bucketed batches of at most ``max_frames`` padded frames (plugins use it too).

        ``sharded`` (the training and evaluation loaders): with several processes, this
        process's part of every batch (continual_asr/distributed.py); otherwise whole batches.
        On a GPU, worker processes collate into pinned memory. ``seed``: of the batch order
        (default: from the run's seed and how many training phases came before).
        """
        sampler = FrameBudgetBatchSampler(list(dataset.num_frames), max_frames, shuffle,
                                          seed=self.seed * 1000 + self._phase_counter if seed is None else seed,
                                          jitter=self.config.batch_length_jitter)
        if sharded and distributed.is_active():
            sampler = ShardedBatchSampler(sampler, distributed.rank(), distributed.world_size())
            dataset = ShardView(dataset)
        workers = distributed.loader_workers(self.config.num_workers, self.device)
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=workers,
                          pin_memory=self.device.type == "cuda", persistent_workers=workers > 0)

    def make_train_dataloader(self, **kwargs) -> None:
        self._phase_counter += 1
        self.dataloader = self.loader(self.adapted_dataset, self.config.batch_frames, shuffle=True, sharded=True,
                                      seed=self.phase.seed if self.phase is not None else None)

    def make_eval_dataloader(self, **kwargs) -> None:
        self.dataloader = self.loader(self.adapted_dataset, self.config.eval_batch_frames, shuffle=False,
                                      sharded=True)

    def _unpack_minibatch(self) -> None:
        self.mbatch = self.mbatch.to(self.device)

    # ---- model and loss -----------------------------------------------------------------------
    def forward(self):
        batch: SpeechBatch = self.mbatch
        features = batch.features
        if self.is_training and self.spec_augment is not None:
            features = self.spec_augment(features.transpose(1, 2)).transpose(1, 2)
        return self.model(features, batch.feature_lengths, self.adapter_routes(batch.task_ids))

    def criterion(self) -> torch.Tensor:
        if not self.is_training:
            # Evaluation only decodes: no metric reads an evaluation loss, and the transducer's
            # would score the whole frame x token lattice for nothing.
            return torch.zeros((), device=self.device)
        loss = head_of(self.model).loss(*self.mb_output, self.mbatch)
        if not torch.isfinite(loss):
            where = f"phase '{self.phase.name}', iteration {self.clock.train_exp_iterations}"
            raise TrainingError(f"non-finite loss ({loss.item()}) in {type(self).__name__}, {where}")
        return loss
