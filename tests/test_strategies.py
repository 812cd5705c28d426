"""The pieces of the strategies on toy data: weighted mean, router, LwF, EWC, replay, joint's
sample, the registry's options and --config files."""

import dataclasses
from types import SimpleNamespace

import pytest
import torch
from avalanche.benchmarks.utils import AvalancheDataset
from avalanche.benchmarks.utils.data_attribute import DataAttribute
from torch.utils.data import Dataset

from continual_asr.config import Options, load_config_file, make_config, option
from continual_asr.data.dataset import collate
from continual_asr.errors import ConfigError
from continual_asr.model import AdapterBank, AdapterWeightedMean, TaskRouter, build_model
from continual_asr.model.heads import frame_mask
from continual_asr.registry import all_fields, available_strategies, get_strategy, register_strategy
from continual_asr.training.memory import TaskMemory
from continual_asr.strategies.ewc import SpeechEWCPlugin
from continual_asr.strategies.lwf import SequenceLwFPlugin
from continual_asr.strategies.replay import SpeechReplayPlugin
from continual_asr.training.template import SpeechTemplate

CONFIG = make_config("tiny")


class ToySpeech(Dataset):
    """Random log-mel utterances with random digit transcripts, all of one task."""

    def __init__(self, count: int, task_id: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.lengths = torch.randint(60, 120, (count,), generator=generator).tolist()
        self.features = [torch.randn(n, CONFIG.n_mels, generator=generator).half() for n in self.lengths]
        self.tokens = [torch.randint(0, 19, (5,), generator=generator) for _ in self.lengths]
        self.task_id = task_id

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, index: int):
        return self.features[index], self.tokens[index], "one two", self.task_id


def toy_dataset(count: int = 12, task_id: int = 0, seed: int = 0) -> AvalancheDataset:
    speech = ToySpeech(count, task_id, seed)
    return AvalancheDataset([speech], data_attributes=[DataAttribute(speech.lengths, "num_frames")], collate_fn=collate)


def toy_strategy(plugins=()) -> SpeechTemplate:
    torch.manual_seed(0)
    return SpeechTemplate(model=build_model(CONFIG, num_tokens=20), config=CONFIG, plugins=list(plugins), epochs=3,
                          learning_rate=5e-4)


# ---- weighted mean -------------------------------------------------------------------------
def test_weighted_mean_weights_are_normalised_and_a_new_adapter_gets_a_fair_share():
    combiner = AdapterWeightedMean(16, layernorm=False)
    combiner.resize(1)
    assert torch.allclose(combiner.weights(), torch.ones(1))
    with torch.no_grad():
        combiner.logits.copy_(torch.tensor([0.0]))
    combiner.resize(3)
    assert torch.allclose(combiner.weights(), torch.full((3,), 1 / 3))  # equal logits: Adapter Mean
    with torch.no_grad():
        combiner.logits.copy_(torch.tensor([2.0, 0.0, -1.0]))  # as if trained
    before = combiner.weights()
    combiner.resize(4)
    after = combiner.weights()
    assert combiner.logits.shape == (4,) and torch.isclose(after.sum(), torch.tensor(1.0))
    assert torch.isclose(after[3], torch.tensor(0.25))  # the newcomer's fair share
    assert torch.allclose(after[:3] / after[:3].sum(), before)  # the others keep their proportions


def test_weighted_mean_mixes_the_bank_with_its_weights():
    bank = AdapterBank(16, 4)
    for _ in range(3):
        bank.add_adapter()
    with torch.no_grad():
        for p in bank.parameters():
            p.normal_(0, 0.3)
    combiner = AdapterWeightedMean(16, layernorm=False)
    combiner.resize(3)
    with torch.no_grad():
        combiner.logits.copy_(torch.tensor([1.0, 0.0, -2.0]))
    hidden = torch.randn(2, 5, 16)
    expected = torch.einsum("btnd,n->btd", bank(hidden), torch.tensor([1.0, 0.0, -2.0]).softmax(0))
    torch.testing.assert_close(combiner(hidden, bank, None), expected)


def test_adapter_strategy_grows_the_weights_before_composition_builds_its_optimizer():
    wavg = get_strategy("adapter-wavg")
    strategy = wavg.factory(build_model(CONFIG, num_tokens=20), CONFIG, wavg.settings("tiny")[1], seed=0)
    strategy.add_adapter("a")
    strategy.add_adapter("b")
    assert all(c.logits.shape == (2,) for c in strategy.combiners)
    strategy._compose(strategy.model)  # what the composition phase configures before make_optimizer
    trainable = {id(p) for p in strategy.model.parameters() if p.requires_grad}
    assert all(id(c.logits) in trainable for c in strategy.combiners)


# ---- router --------------------------------------------------------------------------------
def test_router_learns_a_separable_toy_problem_and_routes_class_zero_to_no_adapter():
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 10, generator=generator) * 3
    labels = torch.arange(3).repeat_interleave(40)
    pooled = centres[labels] + torch.randn(120, 10, generator=generator) * 0.5
    router = TaskRouter(10, hidden=16)
    router.resize(2)  # no adapter + two adapters
    router.fit(pooled, labels, epochs=40, lr=1e-2, weight_decay=0.0)
    assert (router(pooled).argmax(-1) == labels).float().mean() > 0.95
    assert router.route(centres).tolist() == [-1, 0, 1]


def test_router_grows_a_class_per_adapter_and_keeps_what_it_learned():
    router = TaskRouter(6, hidden=8)
    router.resize(1)
    pooled = torch.randn(4, 6)
    before = router(pooled)
    router.resize(3)
    after = router(pooled)
    assert after.shape == (4, 4)
    torch.testing.assert_close(after[:, :2], before)


# ---- LwF -----------------------------------------------------------------------------------
def test_lwf_penalty_is_zero_when_the_model_equals_the_old_one_and_positive_once_it_moves():
    strategy = toy_strategy()
    lwf = SequenceLwFPlugin(alpha=1.0, temperature=2.0)
    lwf.before_training_exp(strategy)
    batch = collate([toy_dataset(3)[i] for i in range(3)])
    penalties = []
    for _ in range(2):
        strategy.model.eval()
        output = strategy.model(batch.features, batch.feature_lengths)
        fake = SimpleNamespace(model=strategy.model, mbatch=batch, mb_output=output, loss=torch.zeros(()),
                               adapter_routes=strategy.adapter_routes)
        lwf.before_backward(fake)
        penalties.append(float(fake.loss))
        with torch.no_grad():
            strategy.model.head.weight.add_(0.5 * torch.randn_like(strategy.model.head.weight))
    assert penalties[0] == pytest.approx(0.0, abs=1e-6)
    assert penalties[1] > 1e-3


def test_lwf_distillation_ignores_padded_frames():
    lwf = SequenceLwFPlugin(alpha=1.0, temperature=1.0)
    teacher = torch.randn(1, 6, 5).log_softmax(-1)
    student = teacher.clone()
    student[0, 4:] = torch.randn(2, 5).log_softmax(-1)  # differs only beyond the length
    assert float(lwf.distillation(student, teacher, frame_mask(torch.tensor([4]), 6))) == pytest.approx(0.0, abs=1e-6)


# ---- EWC -----------------------------------------------------------------------------------
def test_ewc_penalty_is_zero_right_after_consolidating_and_positive_once_a_weight_moves():
    ewc = SpeechEWCPlugin(ewc_lambda=1.0, batch_frames=400)
    strategy = toy_strategy([ewc])
    ewc.consolidate(strategy, toy_dataset(8))
    assert float(ewc.penalty(strategy.model)) == 0.0
    assert sum(float(i.data.sum()) for i in ewc.importances[0].values()) > 0
    assert all(p.grad is None for p in strategy.model.parameters())  # no gradient leaks into training
    with torch.no_grad():
        strategy.model.head.weight.add_(0.1)
    assert float(ewc.penalty(strategy.model)) > 0.0


def test_ewc_per_utterance_importance_is_the_mean_squared_gradient_of_each_utterances_loss():
    data = toy_dataset(6)
    strategy = toy_strategy()
    model = strategy.model.eval()
    expected = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    for index in range(len(data)):  # each utterance alone, in a batch of one
        batch = collate([data[index]])
        model.zero_grad(set_to_none=True)
        encoded, lengths = model(batch.features, batch.feature_lengths, strategy.adapter_routes(batch.task_ids))
        model.head.loss(encoded, lengths, batch).backward()
        for name, parameter in model.named_parameters():
            if parameter.grad is not None:
                expected[name] += parameter.grad.pow(2) / len(data)
    per_utterance = SpeechEWCPlugin(ewc_lambda=1.0, batch_frames=4000, per_utterance=True).importances_on(strategy, data)
    assert all(torch.allclose(per_utterance[name].data, expected[name], rtol=1e-4, atol=1e-12) for name in expected)
    # Avalanche's, over one batch of all six: the squared gradient of their mean loss, another measure
    per_batch = SpeechEWCPlugin(ewc_lambda=1.0, batch_frames=4000).importances_on(strategy, data)
    assert float(per_batch["head.weight"].data.sum()) < float(per_utterance["head.weight"].data.sum())


def test_ewc_state_survives_a_weights_only_checkpoint(tmp_path):
    ewc = SpeechEWCPlugin(ewc_lambda=1.0, batch_frames=400)
    strategy = toy_strategy([ewc])
    ewc.consolidate(strategy, toy_dataset(8))
    with torch.no_grad():
        strategy.model.head.weight.add_(0.1)
    torch.save(ewc.resume_state(), tmp_path / "state.pt")
    restored = SpeechEWCPlugin(ewc_lambda=1.0, batch_frames=400)
    restored.restore(strategy, torch.load(tmp_path / "state.pt", weights_only=True), [])
    assert float(restored.penalty(strategy.model)) == pytest.approx(float(ewc.penalty(strategy.model)))


# ---- replay and joint's data ---------------------------------------------------------------
def test_replay_keeps_per_task_utterances_of_every_task_base_included_and_mixes_them_in():
    replay = SpeechReplayPlugin(per_task=4, seed=0)
    strategy = toy_strategy([replay])
    strategy.memory.add(toy_dataset(20, task_id=0, seed=1))  # the base task (the runner hands it as base_data)
    first = toy_dataset(16, task_id=1, seed=2)
    strategy.adapted_dataset = first
    replay.after_train_dataset_adaptation(strategy)
    assert len(strategy.adapted_dataset) == 16 + 4 * 4  # the 4 base utterances, repeated to ~16
    strategy.experience = SimpleNamespace(dataset=first)
    replay.after_training_exp(strategy)
    buffer = replay.storage_policy.buffer
    assert sorted(int(buffer[i][3]) for i in range(len(buffer))) == [0] * 4 + [1] * 4

    # A resumed run rebuilds the same buffer from the data.
    resumed = SpeechReplayPlugin(per_task=4, seed=0)
    strategy.memory.add(first)
    resumed.restore(strategy, resumed.resume_state(), [SimpleNamespace(dataset=first)])
    again = resumed.storage_policy.buffer
    assert all(torch.equal(buffer[i][0], again[i][0]) for i in range(len(buffer)))


def test_joint_samples_every_task_so_far_evenly_at_a_fixed_size():
    memory = TaskMemory(per_task=2, seed=0)
    memory.add(toy_dataset(30, task_id=0))
    memory.add(toy_dataset(5, task_id=1))
    sample = memory.sample_seen(toy_dataset(10, task_id=2), size=30)
    tasks = [int(sample[i][3]) for i in range(len(sample))]
    assert len(sample) == 30 and [tasks.count(t) for t in range(3)] == [10, 10, 10]
    remembered = memory.sample_seen(toy_dataset(10, task_id=2), size=30, everything=False)  # composition_size
    drawn = [remembered[i] for i in range(len(remembered))]
    assert [[int(d[3]) for d in drawn].count(t) for t in range(3)] == [10, 10, 10]
    kept = [{tuple(memory.parts[t][i][0].flatten()[:4].tolist()) for i in range(2)} for t in range(2)]
    assert all(tuple(d[0].flatten()[:4].tolist()) in kept[int(d[3])] for d in drawn if int(d[3]) < 2)  # the memory only


# ---- registry and config -------------------------------------------------------------------
def test_every_builtin_strategy_is_registered_with_documented_options():
    strategies = available_strategies()
    assert set(strategies) == {"adapter-oracle", "adapter-avg", "adapter-wavg", "adapter-fusion", "adapter-router",
                               "finetune", "joint", "replay", "ewc", "lwf"}
    for info in strategies.values():
        assert info.name == info.name.lower() and "\n" not in info.description
        assert all(f.metadata["help"] for f in dataclasses.fields(info.options))


def test_registering_undocumented_or_clashing_options_or_a_bad_name_fails():
    @dataclasses.dataclass
    class Undocumented(Options):
        strength: float = 1.0

    @dataclasses.dataclass
    class Clashing(Options):
        d_model: int = option("mine", 3, "a second d_model")

    for options in (Undocumented, Clashing):
        with pytest.raises(ValueError, match="need option"):
            register_strategy("mine", "my strategy", options=options)
    with pytest.raises(ValueError, match="deriving from config.Options"):
        register_strategy("mine", "my strategy", options=("no_such_field",))
    with pytest.raises(ValueError, match="lowercase"):
        register_strategy("Mine", "my strategy")


def test_an_option_of_another_strategy_is_a_one_line_error_listing_the_valid_ones():
    with pytest.raises(ConfigError) as error:
        get_strategy("finetune").check_options({"ewc_lambda", "d_model"})
    assert str(error.value) == ("config field 'ewc_lambda' is not an option of strategy 'finetune' "
                                "(its options: finetune_epochs, finetune_lr)")
    get_strategy("ewc").check_options({"ewc_lambda", "d_model"})


def test_config_file_merges_under_set_overrides(tmp_path):
    path = tmp_path / "my.yaml"
    path.write_text("fusion_lr: 1e-3\nadapter_dim: 4\ntrain_adapters: true\n")
    values = {**load_config_file(path, all_fields()), "adapter_dim": "6"}
    _, options = get_strategy("adapter-fusion").settings("tiny", values)
    assert options.fusion_lr == 0.001 and options.adapter_dim == 6 and options.train_adapters is True


@pytest.mark.parametrize("text, message", [
    ("nope: 1\n", "unknown config field 'nope' in"),
    ("- a\n- b\n", "must be a mapping of config fields"),
    ("adapter_dim: [1, 2]\n", "config field 'adapter_dim' in"),
    ("adapter_dim: : :\n", "not valid YAML at line 1"),
])
def test_bad_config_files_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config_file(path, all_fields())
    assert message in str(error.value) and "\n" not in str(error.value)
