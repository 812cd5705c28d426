"""What each strategy promises about the model: which weights it may touch, and the identities
between combiners that the paper's comparisons rest on."""

import copy

import pytest
import torch

from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
from avalanche.training.plugins import EvaluationPlugin

from conftest import copy_tiny_cache
from continual_asr.config import make_config
from continual_asr.data.dataset import make_dataset
from continual_asr.errors import ConfigError
from continual_asr.evaluation.wer import WordErrorRate, greedy_decode
from continual_asr.data.streamdata import prepare_stream_data
from continual_asr.model import AdapterMean, OracleRouting, SingleAdapter, build_model
from continual_asr.registry import available_strategies, get_strategy
from continual_asr.stream import load_stream
from continual_asr.sweep import overrides_for
from continual_asr.training.memory import TaskMemory
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
            for duplicate in bank.adapters[1:]:
                for target, source in zip(duplicate.parameters(), bank.adapters[0].parameters()):
                    target.copy_(source)
    mean = _encoded(model, lambda _: AdapterMean(), features, lengths)
    single = _encoded(model, lambda _: SingleAdapter(0), features, lengths)
    torch.testing.assert_close(mean, single, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory, tiny_cache_template):
    cache = copy_tiny_cache(tiny_cache_template, tmp_path_factory.mktemp("contracts"))
    config = make_config("tiny")
    stream = load_stream("tiny")
    data = prepare_stream_data(stream, config, cache, progress=False)
    model, _ = pretrain_base_model(data, config, 0, cache, torch.device("cpu"), progress=False)
    return stream, data, model


def _make(strategy_name: str, model, values: dict | None = None, **common):
    """The strategy on the tiny preset with those of ``values`` it reads (as a sweep's --set)."""
    info = get_strategy(strategy_name)
    return info.create(model, "tiny", overrides_for(info, values or {}), device="cpu", seed=0, **common)


def _train_step_by_step(tiny_data, strategy_name: str, **overrides):
    """Yield (model state before the step, after it) for every experience of the tiny stream."""
    stream, data, base_model = tiny_data
    model = copy.deepcopy(base_model)
    strategy = _make(strategy_name, model, overrides)
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


class _Transcripts(WordErrorRate):
    """Every hypothesis of an evaluation, in order (the WER metric keeps only the last test set's)."""

    def __init__(self, tokenizer) -> None:
        super().__init__(tokenizer)
        self.all: list[str] = []

    def after_eval_iteration(self, strategy) -> None:
        super().after_eval_iteration(strategy)
        encoded, lengths = strategy.mb_output
        self.all.extend(greedy_decode(strategy.model, encoded, lengths, self.tokenizer))


FAST = dict(pretrain_epochs=1, adapter_epochs=1, fusion_epochs=1, finetune_epochs=1, router_epochs=1)
TASK_ID_FREE = sorted(set(available_strategies()) - {"adapter-oracle"})


@pytest.mark.parametrize("strategy_name", TASK_ID_FREE)
def test_evaluation_is_task_id_free(tiny_data, strategy_name):
    """Transcripts stay the same when each test set is labelled with another task's id, or with
    none: every strategy but oracle routing decides from the speech alone."""
    stream, data, base_model = tiny_data
    model = copy.deepcopy(base_model)
    transcripts = _Transcripts(data.tokenizer)
    strategy = _make(strategy_name, model, FAST, evaluator=EvaluationPlugin(transcripts, loggers=[]))
    strategy.memory.add(data.dataset("train", stream.base))
    for experience in data.benchmark().train_stream:
        strategy.train(experience, eval_streams=[])
    columns = len(stream.eval_tasks)

    def evaluate(task_id) -> list[str]:
        sets = [make_dataset(data.test[t.name], data.tokenizer, task_id(c)) for c, t in enumerate(stream.eval_tasks)]
        transcripts.all = []
        strategy.eval(benchmark_from_datasets(test=sets).test_stream)
        return transcripts.all

    true = evaluate(lambda c: c if c < columns - 1 else -1)
    assert len(true) == sum(len(data.test[t.name].texts) for t in stream.eval_tasks)
    assert evaluate(lambda c: (c + 1) % (columns - 1)) == true  # every set labelled as another task
    assert evaluate(lambda c: -1) == true  # no task id at all


def test_oracle_routing_does_read_the_task_id(tiny_data):
    """The control for the test above: oracle routing transcribes a test set differently when
    it is labelled with no task (so no adapter), once its adapters make a difference."""
    stream, data, base_model = tiny_data
    model = copy.deepcopy(base_model)
    transcripts = _Transcripts(data.tokenizer)
    strategy = _make("adapter-oracle", model, FAST, evaluator=EvaluationPlugin(transcripts, loggers=[]))
    for experience in data.benchmark().train_stream:
        strategy.train(experience, eval_streams=[])
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # one epoch leaves the adapters near zero: make them matter
        for bank in model.banks:
            for p in bank.parameters():
                p.add_(torch.randn(p.shape, generator=generator) * 0.3)
    task = stream.tasks[0]
    outputs = []
    for task_id in (stream.eval_tasks.index(task), -1):
        transcripts.all = []
        sets = [make_dataset(data.test[task.name], data.tokenizer, task_id)]
        strategy.eval(benchmark_from_datasets(test=sets).test_stream)
        outputs.append(transcripts.all)
    assert outputs[0] != outputs[1]


def test_a_layernorm_combiner_without_composition_epochs_is_refused(tiny_data):
    model = copy.deepcopy(tiny_data[2])
    for name in ("adapter-fusion", "adapter-wavg"):
        with pytest.raises(ConfigError, match="fusion_epochs=0 with fusion_layernorm=true"):
            _make(name, model, {"fusion_epochs": 0, "fusion_layernorm": True})
    _make("adapter-fusion", model, {"fusion_epochs": 0, "fusion_layernorm": False})


def _value_distance(strategy) -> float:
    """Mean over layers of ||V - I|| of the fusion combiners."""
    return float(sum((c.value.weight - torch.eye(c.value.weight.shape[0])).norm() for c in strategy.combiners)
                 / len(strategy.combiners))


def _fused(tiny_data, **options):
    stream, data, base_model = tiny_data
    strategy = _make("adapter-fusion", copy.deepcopy(base_model), {**FAST, **options})
    strategy.memory.add(data.dataset("train", stream.base))
    snapshots = []
    for experience in data.benchmark().train_stream:
        strategy.train(experience, eval_streams=[])
        snapshots.append((strategy.combiners, {k: v.clone() for k, v in strategy.combiners.state_dict().items()}))
    return strategy, snapshots


def test_the_value_regulariser_and_decay_towards_the_identity_keep_v_near_i(tiny_data):
    plain = _value_distance(_fused(tiny_data, fusion_epochs=3)[0])
    regularised = _value_distance(_fused(tiny_data, fusion_epochs=3, fusion_value_reg=10.0)[0])
    towards_identity = _value_distance(_fused(tiny_data, fusion_epochs=3, fusion_decay="identity",
                                              weight_decay=50.0)[0])
    assert regularised < 0.5 * plain and towards_identity < 0.5 * plain


def test_a_fresh_combiner_per_task_and_composing_once(tiny_data):
    _, warm = _fused(tiny_data, fusion_warm_start=True)
    _, fresh = _fused(tiny_data)  # the default
    assert warm[0][0] is warm[1][0] and fresh[0][0] is not fresh[1][0]  # new modules for the second task
    _, once = _fused(tiny_data, composition_schedule="once", fusion_layernorm=True)
    learned = [k for k in once[0][1] if not k.endswith(("norm.weight", "calibrated"))]
    assert all(bool(c.calibrated) for c in once[0][0])  # calibrated on a training batch after the first task
    assert once[0][0] is not once[1][0]  # the last task composes from a fresh combiner
    assert any(not torch.equal(once[0][1][k], once[1][1][k]) for k in learned)


def test_composition_on_all_data_takes_every_earlier_tasks_full_training_data(tiny_data):
    stream, data, _ = tiny_data
    memory = TaskMemory(per_task=4, seed=0)
    memory.add(data.dataset("train", stream.base))
    new = data.dataset("train", stream.tasks[0])
    assert len(memory.balanced_with(new)) == len(new) + 4 * round(len(new) / 4)
    assert len(memory.balanced_with(new, everything=True)) == len(new) + len(data.train[stream.base.name].texts)


def test_a_composition_of_a_fixed_size_draws_that_many_utterances_evenly(tiny_data):
    stream, data, base_model = tiny_data
    sizes = {}
    for factor in (0.0, 1.5, None):
        options = {**FAST} if factor is None else {**FAST, "composition_size": factor}
        strategy = _make("adapter-fusion", copy.deepcopy(base_model), options)
        strategy.memory.add(data.dataset("train", stream.base))
        experience = next(iter(data.benchmark().train_stream))
        fusion = [phase for phase in strategy.training_phases(experience) if phase.name == "fusion"][0]
        sizes[factor] = len(fusion.dataset)
    new, kept = len(experience.dataset), len(strategy.memory.parts[0])
    assert sizes[1.5] == round(1.5 * new)  # the new task and the base task's memory, half each
    assert sizes[0.0] == new + kept * round(new / kept)  # grows with the tasks
    assert sizes[None] == sizes[0.0]  # the default (a fixed size cost dev WER, docs/results.md)
