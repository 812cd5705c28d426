"""Elastic weight consolidation: fine-tuning with a quadratic pull towards each earlier task's weights."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from avalanche.training.plugins import EWCPlugin
from avalanche.training.utils import ParamData, copy_params_dict, zerolike_params_dict

from continual_asr.config import RunConfig, option
from continual_asr.model import AdaptableASR
from continual_asr.model.heads import head_of
from continual_asr.registry import register_strategy
from continual_asr.training.memory import MemoryOptions
from continual_asr.training.template import FinetuneOptions, SpeechTemplate, whole_model_epochs


class SpeechEWCPlugin(EWCPlugin):
    """Elastic weight consolidation: Avalanche's EWCPlugin in "separate" mode (one quadratic
    penalty per consolidated task, importance = mean squared gradient), for speech models.

    ``per_utterance`` measures the importance as the empirical Fisher of EWC's paper, the squared
    gradient of each utterance's loss averaged over the task's utterances, instead of Avalanche's
    squared gradient of each mini-batch's mean loss averaged over batches: with B utterances a
    batch the latter is about a B-th of the former where the utterances' gradients disagree, and
    all of it where they agree, so the two weigh parameters differently, not just on another scale.

    Replaced: compute_importances, whose fixed-size DataLoader and ``criterion(model(batch[0]),
    batch[1])`` fit classification only; here the template's length-bucketed batches and the
    head's loss (CTC or RNN-T), with the model in eval mode so BatchNorm statistics stay put.
    And the bookkeeping: the base task is consolidated first, on its remembered sample, before
    the first experience (Avalanche counts consolidated experiences with the clock, which knows
    no base task), so before_backward sums the penalty over every consolidated task.
    """

    def __init__(self, ewc_lambda: float, batch_frames: int, per_utterance: bool = False) -> None:
        super().__init__(ewc_lambda, mode="separate")
        self.batch_frames = batch_frames
        self.per_utterance = per_utterance

    def importances_on(self, strategy: SpeechTemplate, dataset) -> dict[str, ParamData]:
        model = strategy.model
        importances = zerolike_params_dict(model)
        # A budget of one frame makes every batch a single utterance (BatchNorm is in eval mode).
        loader = strategy.loader(dataset, 1 if self.per_utterance else self.batch_frames, shuffle=False)
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


@dataclass
class EWCOptions(FinetuneOptions, MemoryOptions):
    """memory_per_task: the base task's importances are measured on its remembered utterances."""

    # 3e3, with ewc_importance=utterance: the lowest dev mean WER of 1e3, 3e3 and 1e4 at 12 epochs (seed 0: 63.95,
    # 62.25, 68.21), and over seeds 0 and 1 1.05 dev points [0.42, 1.73] below Avalanche's batch importances at
    # their own best λ, 1e5 (an AVX2 machine, 2026-12-08; docs/tuning.md, "EWC's importances per utterance").
    # Batch importances are about a batch's size smaller, so their λ was larger: 1e5 was the lowest dev mean WER
    # of 1e3 to 1e6 at 6 epochs (seed 0, 2026-12-01), and at 12 epochs 1e4, 3e4 and 3e5 were no better.
    ewc_lambda: float = option(
        "ewc", 3e3, "ewc: weight of the penalty sum_i F_i (w_i - w*_i)^2 per earlier task (F: see ewc_importance)",
        min=0.0)
    # utterance since 2026-12-08 (above); batch, Avalanche's, before it.
    ewc_importance: str = option(
        "ewc", "utterance", "how F is measured on a task's data: 'utterance' (EWC's empirical Fisher: the squared "
                            "gradient of each utterance's loss, averaged over utterances) or 'batch' (Avalanche's: "
                            "the squared gradient of each training-size batch's mean loss, averaged over batches; "
                            "smaller, so it wants a larger ewc_lambda: 1e5 was its best)",
        choices=("utterance", "batch"))
    # The rate is fine-tuning's 2e-3 (inherited): at lambda 1e4, 0.59 dev points better than 5e-4, not
    # significant ([-1.91, +0.76]; seed 0, an AVX2 machine, 2026-12-01).
    # 12: EWC's lower dev mean WER of 6 and 12 epochs on accents-then-noise (seeds 0 and 1: 1.34 dev points below
    # 6; docs/tuning.md, "Fine-tuning, EWC and LwF: 12 epochs"); 6 until 2026-12-06. 24, which finetune and LwF
    # default to, is no better for EWC on dev (-0.13 [-1.08, +0.88], seeds 0 and 1; docs/tuning.md, "Fine-tuning
    # and LwF: 24 epochs") at twice the training.
    finetune_epochs: int = whole_model_epochs(12)


@register_strategy("ewc", "elastic weight consolidation: fine-tuning, weights pulled back by their importance to earlier tasks",
                   options=EWCOptions)
def ewc(model: AdaptableASR, config: RunConfig, options: EWCOptions, plugins=None, **common) -> SpeechTemplate:
    plugins = [*(plugins or []), SpeechEWCPlugin(options.ewc_lambda, config.batch_frames,
                                                 per_utterance=options.ewc_importance == "utterance")]
    return SpeechTemplate(model=model, config=config, plugins=plugins, epochs=options.finetune_epochs,
                          learning_rate=options.finetune_lr, memory_per_task=options.memory_per_task, **common)
