"""The whole-model continual-learning baselines as Avalanche plugins, fitted to speech models.

Replay and EWC are Avalanche's own plugins with the one piece that assumes fixed-size
classification batches replaced; LwF distils class logits in Avalanche, so the sequence version
(the head's output distributions: per-frame CTC posteriors, or the transducer's joiner
posteriors on the reference lattice) is written here. All three treat the base task as the
first task to protect: it is no experience of the stream, but forgetting it is forgetting all
the same.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from avalanche.core import SupervisedPlugin
from avalanche.training.plugins import EWCPlugin, ReplayPlugin
from avalanche.training.storage_policy import ExperienceBalancedBuffer
from avalanche.training.utils import ParamData, copy_params_dict, zerolike_params_dict

from ..model.heads import head_of
from .template import SpeechTemplate


class SpeechReplayPlugin(ReplayPlugin):
    """Experience replay: Avalanche's ReplayPlugin and ExperienceBalancedBuffer (reservoir
    sampling per experience), ``per_task`` utterances kept from every task, base task included.

    The buffer is not adaptive: each task keeps ``per_task`` utterances (the "one group" size),
    so the memory grows by ``per_task`` per task exactly like the adapter strategies' memory,
    and the comparison between them spends the same data budget.

    Replaced: ReplayPlugin.before_training_exp swaps in a ReplayDataLoader, fixed-size batches of
    new data paired with fixed-size batches from the buffer, which cannot length-bucket speech
    (and the template builds its dataloader per phase anyway). Instead the buffer joins the
    experience's data in after_train_dataset_adaptation, repeated to about the new data's size:
    the even mix of new and remembered utterances that ReplayDataLoader's equal batch sizes give.
    Sampling runs on its own seeded generator, so a resumed run rebuilds the same buffer.
    """

    def __init__(self, per_task: int, seed: int = 0) -> None:
        super().__init__(mem_size=per_task, storage_policy=ExperienceBalancedBuffer(
            max_size=per_task, adaptive_size=False, num_experiences=1))
        self.seed = seed

    def _store(self, dataset) -> None:
        with torch.random.fork_rng():
            torch.manual_seed(self.seed * 7919 + len(self.storage_policy.buffer_groups))
            self.storage_policy.post_adapt(None, SimpleNamespace(dataset=dataset))

    def _store_tasks_before_the_stream(self, strategy: SpeechTemplate, finished: int = 0) -> None:
        # What the template remembered before the first experience: the base task.
        for dataset in strategy.memory.seen[: len(strategy.memory.seen) - finished]:
            self._store(dataset)

    def before_training_exp(self, strategy: SpeechTemplate, **kwargs) -> None:
        """No ReplayDataLoader (see the class docstring): the buffer is already in the data."""

    def after_train_dataset_adaptation(self, strategy: SpeechTemplate, **kwargs) -> None:
        if not self.storage_policy.buffer_groups and self.mem_size > 0:
            self._store_tasks_before_the_stream(strategy)
        buffer = self.storage_policy.buffer
        if len(buffer) == 0:
            return
        repeats = max(1, round(len(strategy.adapted_dataset) / len(buffer)))
        strategy.adapted_dataset = strategy.adapted_dataset.concat(buffer.subset(list(range(len(buffer))) * repeats))

    def after_training_exp(self, strategy: SpeechTemplate, **kwargs) -> None:
        if self.mem_size > 0:
            self._store(strategy.experience.dataset)

    def resume_state(self) -> dict:
        return {}  # the buffer is rebuilt from the data: sampling is seeded per task

    def restore(self, strategy: SpeechTemplate, state: dict, finished_experiences: list) -> None:
        self.storage_policy = ExperienceBalancedBuffer(max_size=self.mem_size, adaptive_size=False, num_experiences=1)
        if self.mem_size > 0:
            self._store_tasks_before_the_stream(strategy, len(finished_experiences))
            for experience in finished_experiences:
                self._store(experience.dataset)


class SpeechEWCPlugin(EWCPlugin):
    """Elastic weight consolidation: Avalanche's EWCPlugin in "separate" mode (one quadratic
    penalty per consolidated task, importance = mean squared gradient), for speech models.

    Replaced: compute_importances, whose fixed-size DataLoader and ``criterion(model(batch[0]),
    batch[1])`` fit classification only; here the template's length-bucketed batches and the
    head's loss (CTC or RNN-T), with the model in eval mode so BatchNorm statistics stay put.
    And the bookkeeping: the base task is consolidated first, on its remembered sample, before
    the first experience (Avalanche counts consolidated experiences with the clock, which knows
    no base task), so before_backward sums the penalty over every consolidated task.
    """

    def __init__(self, ewc_lambda: float, batch_frames: int) -> None:
        super().__init__(ewc_lambda, mode="separate")
        self.batch_frames = batch_frames

    def importances_on(self, strategy: SpeechTemplate, dataset) -> dict[str, ParamData]:
        model = strategy.model
        importances = zerolike_params_dict(model)
        loader = strategy.loader(dataset, self.batch_frames, shuffle=False)
        was_training = model.training
        model.eval()
        for batch in loader:
            batch = batch.to(strategy.device)
            model.zero_grad(set_to_none=True)
            encoded, out_lengths = model(batch.features, batch.feature_lengths, strategy.adapter_routes(batch.task_ids))
            head_of(model).loss(encoded, out_lengths, batch).backward()
            for name, parameter in model.named_parameters():
                if parameter.grad is not None:
                    importances[name].data += parameter.grad.detach().pow(2)
        for importance in importances.values():
            importance.data /= max(1, len(loader))
        model.zero_grad(set_to_none=True)
        model.train(was_training)
        return importances

    def consolidate(self, strategy: SpeechTemplate, dataset) -> None:
        """Remember the current weights and their importance on ``dataset`` as one more task."""
        key = len(self.saved_params)
        self.update_importances(self.importances_on(strategy, dataset), key)
        self.saved_params[key] = copy_params_dict(strategy.model)

    def penalty(self, model: torch.nn.Module) -> torch.Tensor:
        """sum over consolidated tasks and parameters of importance * (weight - saved weight)^2."""
        penalty = torch.zeros((), device=next(model.parameters()).device)
        for key, saved in self.saved_params.items():
            importances = self.importances[key]
            for name, parameter in model.named_parameters():
                if name in saved:  # parameters added later (none in whole-model strategies) do not count
                    penalty = penalty + (importances[name].data * (parameter - saved[name].data).pow(2)).sum()
        return penalty

    def before_training_exp(self, strategy: SpeechTemplate, **kwargs) -> None:
        if not self.saved_params and len(strategy.memory):
            self.consolidate(strategy, strategy.memory.dataset())  # the base task, before the first experience

    def before_backward(self, strategy: SpeechTemplate, **kwargs) -> None:
        if self.saved_params:
            strategy.loss += self.ewc_lambda * self.penalty(strategy.model)

    def after_training_exp(self, strategy: SpeechTemplate, **kwargs) -> None:
        self.consolidate(strategy, strategy.experience.dataset)

    def resume_state(self) -> dict:
        return {"saved": {k: {n: p.data for n, p in v.items()} for k, v in self.saved_params.items()},
                "importances": {k: {n: p.data for n, p in v.items()} for k, v in self.importances.items()}}

    def restore(self, strategy: SpeechTemplate, state: dict, finished_experiences: list) -> None:
        def params(tensors: dict) -> dict[str, ParamData]:
            return {n: ParamData(n, init_tensor=t.to(strategy.device), device=strategy.device)
                    for n, t in tensors.items()}
        self.saved_params.clear()
        self.importances.clear()
        for key, tensors in state.get("saved", {}).items():
            self.saved_params[key] = params(tensors)
            self.importances[key] = params(state["importances"][key])


class SequenceLwFPlugin(SupervisedPlugin, supports_distributed=True):  # weighted by each rank's share
    """Learning without Forgetting for speech: distil the previous model's output distributions.

    Avalanche's LwFPlugin distils the logits of previously seen classes; a speech model has
    distributions over the same vocabulary for every task: per output frame for CTC, per
    (frame, reference-prefix) node of the lattice the RNN-T loss scores for a transducer (its
    joiner posteriors; the predictor hears the reference tokens, as in training). The teacher is
    the model as it was when the experience began (the base model before the first one); the
    penalty is alpha * T^2 * the mean over valid distributions of KL(teacher || student), both
    softened by temperature T (Hinton et al.'s scaling keeps gradients comparable across T).
    The teacher hears the batch without SpecAugment: its posteriors are the targets, masking
    only perturbs the student, and masks keep the frame count, so frames stay aligned.
    """

    def __init__(self, alpha: float, temperature: float) -> None:
        super().__init__()
        self.alpha = alpha
        self.temperature = temperature
        self.teacher: torch.nn.Module | None = None

    def distillation(self, student_log_probs: torch.Tensor, teacher_log_probs: torch.Tensor,
                     valid: torch.Tensor) -> torch.Tensor:
        """alpha * T^2 * mean over the valid distributions of KL(teacher_T || student_T); inputs
        (..., V) log-probabilities, ``valid`` a mask of their leading dimensions."""
        t = self.temperature
        student = F.log_softmax(student_log_probs.float() / t, dim=-1)
        teacher = F.log_softmax(teacher_log_probs.float() / t, dim=-1)
        kl = (teacher.exp() * (teacher - student)).sum(dim=-1)
        return self.alpha * t * t * kl[valid.to(kl.device)].mean()

    def before_training_exp(self, strategy: SpeechTemplate, **kwargs) -> None:
        self.teacher = copy.deepcopy(strategy.model).eval().requires_grad_(False)

    def before_backward(self, strategy: SpeechTemplate, **kwargs) -> None:
        if self.teacher is None:
            return
        batch = strategy.mbatch
        with torch.no_grad():
            encoded, lengths = self.teacher(batch.features, batch.feature_lengths,
                                            strategy.adapter_routes(batch.task_ids))
            teacher_log_probs, _ = head_of(self.teacher).posteriors(encoded, lengths, batch)
        student_log_probs, valid = head_of(strategy.model).posteriors(*strategy.mb_output, batch)
        strategy.loss += self.distillation(student_log_probs, teacher_log_probs, valid)

    def after_training_exp(self, strategy: SpeechTemplate, **kwargs) -> None:
        self.teacher = None  # the next experience copies the model as it is then
