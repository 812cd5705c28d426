"""Where casr departs from Avalanche's ``SupervisedTemplate``, in one place.

``SpeechTemplate`` (training/template.py) overrides the Avalanche methods listed in
``OVERRIDES``. Each entry names the Avalanche method it replaces, says why, and pins a digest
of that method's source as casr was written against it (Avalanche 0.6.0).
tests/test_avalanche_overrides.py fails when an installed Avalanche's method differs and names
it, and runs the event order casr's loops must keep: an upgrade shows which override to re-read.

The two loops Avalanche has no hook for (autocast around forward and loss, outside backward)
are copies of Avalanche's with that one change; they live here as functions.
"""

from __future__ import annotations

import hashlib
import inspect
import textwrap
from dataclasses import dataclass

from avalanche.training.templates import SupervisedTemplate


@dataclass(frozen=True)
class Override:
    replaces: str  # the Avalanche class that defines the method SpeechTemplate overrides
    digest: str  # source_digest of that method in the Avalanche casr was written against
    why: str


_BASE_SGD = "avalanche.training.templates.base_sgd.BaseSGDTemplate"
_BATCH = "avalanche.training.templates.observation_type.batch_observation.BatchObservation"
_SUPERVISED = "avalanche.training.templates.problem_type.supervised_problem.SupervisedProblem"
_SGD_UPDATE = "avalanche.training.templates.update_type.sgd_update.SGDUpdate"

OVERRIDES: dict[str, Override] = {
    "_train_exp": Override(_BASE_SGD, "b9b456c6d3360b72",
                           "an experience runs as training phases, each with its own data, optimizer and schedule"),
    "check_model_and_optimizer": Override(_BATCH, "9a8567b6bfb3da14", "optimizers are built per phase"),
    "model_adaptation": Override(_BATCH, "1538585a6816127d", "the model has no dynamic (Avalanche) modules"),
    "make_optimizer": Override(_BATCH, "4dab42c5f9e7ff85", "AdamW over the phase's trainable parameters, one-cycle LR"),
    "optimizer_step": Override(_BASE_SGD, "a828f7278d171329", "gradient clipping and the LR schedule's step"),
    "training_epoch": Override(_SGD_UPDATE, "6ade66e670306c07", "forward and loss under bf16 autocast on a GPU"),
    "eval_epoch": Override(_BASE_SGD, "32083058df49a466", "forward under bf16 autocast on a GPU"),
    "backward": Override(_BASE_SGD, "4bc58c44759e2f4d", "several processes: share-weighted loss, summed gradients"),
    "make_train_dataloader": Override(_BASE_SGD, "bf21f02d8f7c1fc1",
                                      "length-bucketed speech batches with the dataset's collate (Avalanche #1531)"),
    "make_eval_dataloader": Override(_BASE_SGD, "79ff899745bbaf2d", "length-bucketed speech batches"),
    "_unpack_minibatch": Override(_SUPERVISED, "6b26564ac5736a96", "a SpeechBatch, not a tuple of tensors"),
    "forward": Override(_SUPERVISED, "168c6a43fe35fcc6", "features, lengths and adapter routes; SpecAugment"),
    "criterion": Override(_SUPERVISED, "020d9632e294fdd9", "the head's CTC or transducer loss; none when evaluating"),
}


def source_digest(function) -> str:
    """16 hex digits of SHA-256 over a function's dedented source."""
    return hashlib.sha256(textwrap.dedent(inspect.getsource(function)).encode()).hexdigest()[:16]


def changed_overrides() -> list[str]:
    """One line per overridden method whose Avalanche original is not the one casr was written
    against (moved to another class, or its source changed)."""
    changed = []
    for name, override in OVERRIDES.items():
        owner = next((cls for cls in SupervisedTemplate.__mro__ if name in vars(cls)), None)
        where = f"{owner.__module__}.{owner.__qualname__}" if owner else "nowhere"
        if where != override.replaces:
            changed.append(f"{name}: now defined in {where}, not {override.replaces}")
        elif source_digest(vars(owner)[name]) != override.digest:
            changed.append(f"{name}: {where}.{name} changed (casr overrides it: {override.why})")
    return changed


def training_epoch(strategy, **kwargs) -> None:
    """Avalanche's SGDUpdate.training_epoch with forward, loss and the plugins' loss terms under
    autocast, and backward outside it."""
    for strategy.mbatch in strategy.dataloader:
        if strategy._stop_training:
            break
        strategy._unpack_minibatch()
        strategy._before_training_iteration(**kwargs)
        strategy.optimizer.zero_grad()
        strategy.loss = strategy._make_empty_loss()
        with strategy.autocast():
            strategy._before_forward(**kwargs)
            strategy.mb_output = strategy._float32(strategy.forward())
            strategy._after_forward(**kwargs)
            strategy.loss += strategy.criterion()
            strategy._before_backward(**kwargs)
        strategy.backward()
        strategy._after_backward(**kwargs)
        strategy._before_update(**kwargs)
        strategy.optimizer_step()
        strategy._after_update(**kwargs)
        strategy._after_training_iteration(**kwargs)


def eval_epoch(strategy, **kwargs) -> None:
    """Avalanche's BaseSGDTemplate.eval_epoch with forward under autocast."""
    for strategy.mbatch in strategy.dataloader:
        strategy._unpack_minibatch()
        strategy._before_eval_iteration(**kwargs)
        with strategy.autocast():
            strategy._before_eval_forward(**kwargs)
            strategy.mb_output = strategy._float32(strategy.forward())
            strategy._after_eval_forward(**kwargs)
            strategy.loss = strategy.criterion()
        strategy._after_eval_iteration(**kwargs)
