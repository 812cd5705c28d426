"""What each strategy promises about the model: which weights it may touch, and the identities
between combiners that the paper's comparisons rest on."""

import copy

import pytest
import torch

from continual_asr.config import make_config
from continual_asr.data.streamdata import prepare_stream_data
from continual_asr.model import AdapterMean, OracleRouting, SingleAdapter, build_model
from continual_asr.registry import get_strategy
from continual_asr.stream import load_stream
from continual_asr.training.pretrain import pretrain_base_model

ADAPTER_STRATEGIES = ["adapter-oracle", "adapter-avg", "adapter-wavg", "adapter-fusion", "adapter-router"]


def _model_with_random_adapters(count: int):
    torch.manual_seed(0)
    model = build_model(make_config("tiny"), num_tokens=20).eval()
    generator = torch.Generator().manual_seed(3)
    for task in range(count):
        model.add_adapter(f"task{task}")
    with torch.no_grad():
        for bank in model.banks:
            for p in bank.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.3)
    features = torch.randn(4, 90, 80, generator=generator)
    lengths = torch.tensor([90, 80, 70, 60])
    return model, features, lengths


def _encoded(model, make_combiner, features, lengths, routes=None):
    model.set_combiners(make_combiner)
    with torch.no_grad():
        return model.encode(features, lengths, routes)[0][-1]


def test_oracle_routing_with_the_true_task_equals_that_tasks_single_adapter_model():
    model, features, lengths = _model_with_random_adapters(3)
    routes = torch.tensor([2, 0, 1, 2])
    routed = _encoded(model, lambda _: OracleRouting(), features, lengths, routes)
    for row, task in enumerate(routes.tolist()):
        alone = _encoded(model, lambda _: SingleAdapter(task), features[row:row + 1], lengths[row:row + 1])
        frames = alone.shape[1]
        torch.testing.assert_close(routed[row, :frames], alone[0], rtol=1e-5, atol=1e-5)


def test_adapter_mean_of_identical_adapters_equals_one_adapter():
    model, features, lengths = _model_with_random_adapters(4)
    with torch.no_grad():
        for bank in model.banks:
            for copy in bank.adapters[1:]:
                for target, source in zip(copy.parameters(), bank.adapters[0].parameters()):
                    target.copy_(source)
    mean = _encoded(model, lambda _: AdapterMean(), features, lengths)
    single = _encoded(model, lambda _: SingleAdapter(0), features, lengths)
    torch.testing.assert_close(mean, single, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    cache = tmp_path_factory.mktemp("contracts")
    config = make_config("tiny")
    stream = load_stream("tiny")
    data = prepare_stream_data(stream, config, cache, progress=False)
    model, _ = pretrain_base_model(data, config, 0, cache, torch.device("cpu"), progress=False)
    return stream, data, model


def _train_step_by_step(tiny_data, strategy_name: str, **overrides):
    """Yield (model state before the step, after it) for every experience of the tiny stream."""
    stream, data, base_model = tiny_data
    config = make_config("tiny", overrides)
    model = copy.deepcopy(base_model)
    strategy = get_strategy(strategy_name).factory(model, config, device="cpu", seed=0)
    strategy.memory.add(data.dataset("train", stream.base))
    for experience in data.benchmark().train_stream:
        before = {k: v.clone() for k, v in model.state_dict().items()}
        strategy.train(experience, eval_streams=[])
        yield before, model.state_dict()


def _base_keys(state: dict) -> list[str]:
    return [k for k in state if not k.startswith(("banks.", "combiners.", "router."))]


@pytest.mark.parametrize("strategy", ADAPTER_STRATEGIES)
def test_adapter_strategies_leave_the_base_bit_identical_after_every_step(tiny_data, strategy):
    base_state = tiny_data[2].state_dict()
    for step, (_, after) in enumerate(_train_step_by_step(tiny_data, strategy)):
        for key in _base_keys(base_state):  # weights and BatchNorm statistics
            assert torch.equal(after[key], base_state[key]), f"{strategy} changed {key}"
        new_keys = set(after) - set(base_state)  # all that was added lives in banks, combiners, router
        assert new_keys and all(k.startswith(("banks.", "combiners.", "router.")) for k in new_keys)
        ups = [k for k in new_keys if f".adapters.{step}.up" in k]  # the step's adapter has learned
        assert ups and all(not torch.equal(after[k], torch.zeros_like(after[k])) for k in ups)


def test_finetune_changes_the_base(tiny_data):
    for before, after in _train_step_by_step(tiny_data, "finetune"):
        changed = [k for k in _base_keys(before) if not torch.equal(before[k], after[k])]
        assert any(k.startswith("layers.") for k in changed) and any(k.startswith("head") for k in changed)


@pytest.mark.parametrize("strategy", ["adapter-avg", "adapter-wavg", "adapter-fusion"])
@pytest.mark.parametrize("train_adapters", [False, True])
def test_only_the_combiner_plus_adapters_algorithm_changes_earlier_adapters(tiny_data, strategy, train_adapters):
    steps = list(_train_step_by_step(tiny_data, strategy, train_adapters=str(train_adapters).lower()))
    before, after = steps[1]  # the second task: the first task's adapter already exists
    first_adapter = [k for k in before if k.startswith("banks.") and ".adapters.0." in k]
    assert first_adapter
    changed = [k for k in first_adapter if not torch.equal(before[k], after[k])]
    assert bool(changed) == train_adapters, changed
