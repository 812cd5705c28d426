"""The one Avalanche template every strategy shares: CTC speech recognition in training phases.

``SpeechTemplate`` is a ``SupervisedTemplate`` that (a) batches variable-length speech with
the dataset's collate function on both paths (Avalanche 0.6.0 drops it when training,
issue #1531), (b) carries transcripts through the minibatch, (c) computes the CTC loss, and
(d) runs each experience as a list of :class:`TrainingPhase` objects, each choosing what trains,
on which data, for how long, with its own one-cycle learning-rate schedule. A strategy only
says which phases it runs (see continual_asr/training/adapters.py and strategies/).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
import torchaudio
from avalanche.benchmarks.utils import AvalancheDataset
from avalanche.training.plugins import EvaluationPlugin
from avalanche.training.templates import SupervisedTemplate
from torch.utils.data import DataLoader

from ..config import RunConfig
from ..data.dataset import FrameBudgetBatchSampler, SpeechBatch, collate
from ..errors import TrainingError
from ..model import ConformerCTC
from .memory import TaskMemory


@dataclass
class TrainingPhase:
    """One stretch of training inside an experience."""

    name: str
    epochs: int
    learning_rate: float
    configure: Callable[[ConformerCTC], None]  # installs combiners and chooses trainable parameters
    dataset: AvalancheDataset | None = None  # None: the experience's own training data


class SpeechTemplate(SupervisedTemplate):
    """Whole-model training on each experience (the fine-tuning baseline, and pretraining)."""

    def __init__(self, *, model: ConformerCTC, config: RunConfig, device: str | torch.device = "cpu",
                 plugins: list | None = None, evaluator: EvaluationPlugin | None = None, seed: int = 0,
                 epochs: int | None = None, learning_rate: float | None = None) -> None:
        placeholder = torch.optim.AdamW(model.parameters(), lr=0.0)  # rebuilt for every phase
        super().__init__(model=model, optimizer=placeholder, criterion=None, train_mb_size=1, train_epochs=1,
                         eval_mb_size=1, device=device, plugins=plugins,
                         evaluator=evaluator or EvaluationPlugin(loggers=[]), eval_every=-1)
        self.config = config
        self.seed = seed
        self.epochs = config.finetune_epochs if epochs is None else epochs
        self.learning_rate = config.finetune_lr if learning_rate is None else learning_rate
        self.memory = TaskMemory(config.memory_per_task, seed)
        self.phase: TrainingPhase | None = None
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        self.trained_parameters: dict[int, int] = {}  # id -> numel of every parameter trained this experience
        self._phase_counter = 0
        self.phase_epoch = 0
        self.spec_augment = torch.nn.Sequential(
            torchaudio.transforms.FrequencyMasking(freq_mask_param=max(1, config.n_mels // 6)),
            torchaudio.transforms.FrequencyMasking(freq_mask_param=max(1, config.n_mels // 6)),
            torchaudio.transforms.TimeMasking(time_mask_param=20, p=0.1),
            torchaudio.transforms.TimeMasking(time_mask_param=20, p=0.1),
        ) if config.specaugment else None

    # ---- what a strategy overrides ------------------------------------------------------------
    def training_phases(self, experience) -> list[TrainingPhase]:
        return [TrainingPhase("finetune", self.epochs, self.learning_rate,
                              configure=lambda model: model.set_trainable(base=True))]

    def after_phases(self, experience) -> None:
        """Called once the experience's phases are done (e.g. to install the eval combiner)."""

    def rebuild_structure(self, finished_experiences: list) -> None:
        """Give the model the modules it had after ``finished_experiences`` (for resuming)."""

    # ---- resuming ------------------------------------------------------------------------------
    def resume_state(self) -> dict:
        """What, beside the weights, an uninterrupted run carries into the next experience."""
        return {"phase_counter": self._phase_counter, "torch_rng": torch.get_rng_state()}

    def restore(self, state: dict, finished_experiences: list) -> None:
        """Rebuild structure, memory and random state as they were after ``finished_experiences``;
        load the model's weights afterwards."""
        self.rebuild_structure(finished_experiences)
        for experience in finished_experiences:
            self.memory.add(experience.dataset)
        self._phase_counter = int(state["phase_counter"])
        torch.set_rng_state(state["torch_rng"])

    # ---- the training loop --------------------------------------------------------------------
    def _train_exp(self, experience, eval_streams=None, **kwargs) -> None:
        self.trained_parameters = {}
        for phase in self.training_phases(experience):
            if phase.epochs <= 0:
                continue
            self.phase = phase
            phase.configure(self.model)
            self.model.to(self.device)
            self.adapted_dataset = (phase.dataset or experience.dataset).train()
            self.make_train_dataloader()
            self.make_optimizer()
            self.model.train()
            for self.phase_epoch in range(phase.epochs):
                self._before_training_epoch(**kwargs)
                self.training_epoch(**kwargs)
                self._after_training_epoch(**kwargs)
        self.phase = None
        self.after_phases(experience)
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
        self.optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=self.config.weight_decay)
        total_steps = max(2, self.phase.epochs * len(self.dataloader))
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer, max_lr=lr, total_steps=total_steps, pct_start=0.15, anneal_strategy="cos")

    def optimizer_step(self) -> None:
        torch.nn.utils.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]], 5.0)
        self.optimizer.step()
        if self.scheduler is not None and self.scheduler.last_epoch + 1 < self.scheduler.total_steps:
            self.scheduler.step()

    # ---- data ---------------------------------------------------------------------------------
    def _loader(self, dataset: AvalancheDataset, max_frames: int, shuffle: bool) -> DataLoader:
        sampler = FrameBudgetBatchSampler(list(dataset.num_frames), max_frames, shuffle,
                                          seed=self.seed * 1000 + self._phase_counter)
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=0,
                          pin_memory=self.device.type == "cuda")

    def make_train_dataloader(self, **kwargs) -> None:
        self._phase_counter += 1
        self.dataloader = self._loader(self.adapted_dataset, self.config.batch_frames, shuffle=True)

    def make_eval_dataloader(self, **kwargs) -> None:
        self.dataloader = self._loader(self.adapted_dataset, self.config.eval_batch_frames, shuffle=False)

    def _unpack_minibatch(self) -> None:
        self.mbatch = self.mbatch.to(self.device)

    # ---- model and loss -----------------------------------------------------------------------
    def forward(self):
        batch: SpeechBatch = self.mbatch
        features = batch.features
        if self.is_training and self.spec_augment is not None:
            features = self.spec_augment(features.transpose(1, 2)).transpose(1, 2)
        # The true task's adapter (base and zero-shot: none). Only the oracle combiner reads it.
        adapter_index = torch.where(batch.task_ids > 0, batch.task_ids - 1, -1)
        return self.model(features, batch.feature_lengths, adapter_index)

    def criterion(self) -> torch.Tensor:
        log_probs, out_lengths = self.mb_output
        batch: SpeechBatch = self.mbatch
        loss = F.ctc_loss(log_probs.transpose(0, 1).float(), batch.targets + 1, out_lengths, batch.target_lengths,
                          blank=0, reduction="mean", zero_infinity=True)
        if self.is_training and not torch.isfinite(loss):
            where = f"phase '{self.phase.name}', iteration {self.clock.train_exp_iterations}"
            raise TrainingError(f"non-finite loss ({loss.item()}) in {type(self).__name__}, {where}")
        return loss
