"""SpeechTemplate's departures from Avalanche stay pinned to the Avalanche they were written for.

When Avalanche is upgraded, these tests say which overridden method changed upstream and
whether the training and evaluation loops still fire the plugin events Avalanche's own
template fires, in the same order.
"""

import torch
from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
from avalanche.benchmarks.utils import AvalancheDataset
from avalanche.core import SupervisedPlugin
from avalanche.training.templates import SupervisedTemplate
from torch.utils.data import TensorDataset

from continual_asr.training.avalanche_overrides import OVERRIDES, changed_overrides
from continual_asr.training.template import SpeechTemplate
from test_strategies import toy_strategy, toy_dataset

EVENTS = sorted(name for name in dir(SupervisedPlugin) if name.startswith(("before_", "after_")))


class EventLog(SupervisedPlugin):
    """Every plugin event in the order fired (consecutive repeats of an iteration's events
    are one block: the number of minibatches is not the point)."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []
        for name in EVENTS:
            setattr(self, name, lambda strategy, _name=name, **kwargs: self.events.append(_name))

    def blocks(self) -> list[str]:
        collapsed: list[str] = []
        for event in self.events:
            collapsed.append(event)
            for size in range(1, 40):  # drop a repeat of the block just completed
                if len(collapsed) >= 2 * size and collapsed[-size:] == collapsed[-2 * size:-size]:
                    del collapsed[-size:]
                    break
        return collapsed


def test_every_overridden_avalanche_method_is_the_one_casr_was_written_against():
    assert changed_overrides() == [], "re-read SpeechTemplate's overrides against the new Avalanche"


def test_every_method_speechtemplate_overrides_is_listed_with_its_reason():
    overridden = {name for name in vars(SpeechTemplate)
                  if callable(vars(SpeechTemplate)[name]) and hasattr(SupervisedTemplate, name)
                  and not name.startswith("__")}
    assert overridden == set(OVERRIDES)


def _run_one_experience(strategy, train, test) -> list[str]:
    log = EventLog()
    strategy.plugins.append(log)
    strategy.evaluator.active = False  # no metrics: only the events of the loops themselves
    bench = benchmark_from_datasets(train=[train], test=[test])
    strategy.train(bench.train_stream[0], eval_streams=[])
    strategy.eval(bench.test_stream)
    return log.blocks()


def test_speech_loops_fire_avalanche_s_events_in_avalanche_s_order():
    speech = _run_one_experience(toy_strategy(), toy_dataset(12, seed=1), toy_dataset(6, seed=2))

    torch.manual_seed(0)
    features, labels = torch.randn(12, 4), torch.randint(0, 2, (12,))
    tensors = AvalancheDataset([TensorDataset(features, labels, torch.zeros(12, dtype=torch.long))])
    model = torch.nn.Linear(4, 2)
    plain = SupervisedTemplate(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                               criterion=torch.nn.CrossEntropyLoss(), train_mb_size=4, train_epochs=1,
                               eval_mb_size=4)
    reference = _run_one_experience(plain, tensors, tensors)

    assert speech == reference
