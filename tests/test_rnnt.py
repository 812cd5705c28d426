"""The transducer head (--set head=rnnt): loss, greedy search, adapters, the frozen base, LwF,
config and cache keys, and end to end on tiny with a resume."""

import re
from types import SimpleNamespace

import pytest
import torch
import torchaudio
from click.testing import CliRunner

from continual_asr.adapter_files import base_fingerprint
from continual_asr.cli import main
from continual_asr.config import HEAD_FIELDS, PRETRAIN_FIELDS, make_config
from continual_asr.data.dataset import collate
from continual_asr.errors import ConfigError
from continual_asr.model import (AdapterFusion, AdapterMean, HATHead, SingleAdapter, TransducerHead, build_model,
                                 head_of)
from continual_asr.model.encoder import BASE_STATE_PREFIXES
from continual_asr.model.heads import monotonic_transducer_loss, transducer_loss
from continual_asr.strategies.lwf import SequenceLwFPlugin
from continual_asr.training.pretrain import base_model_key

from conftest import PRETRAIN_THREADS, copy_tiny_cache
from test_run import _check_parameters, _run

RNNT = make_config("tiny", {"head": "rnnt"})
NUM_TOKENS = 10


def _model(seed: int = 0, head: str = "rnnt"):
    torch.manual_seed(seed)
    return build_model(make_config("tiny", {"head": head}), num_tokens=NUM_TOKENS)


def _batch(count: int = 3, seed: int = 1):
    """Random log-mel utterances of different lengths with short random transcripts."""
    generator = torch.Generator().manual_seed(seed)
    samples = []
    for i in range(count):
        frames = 90 - 15 * i
        tokens = torch.randint(0, NUM_TOKENS, (5 - i,), generator=generator)
        samples.append((torch.randn(frames, RNNT.n_mels, generator=generator).half(), tokens, "x", 0))
    return collate(samples)


# ---- loss and decoding ---------------------------------------------------------------------
# HAT's greedy search still deletes the last tokens at a loss of 0.05 per token (the mass of the
# alignments is spread where blank's sigmoid and the tokens' share are close): it trains to 0.02.
@pytest.mark.parametrize("head, target, lattice", [("rnnt", 0.05, "regular"), ("hat", 0.02, "regular"),
                                                   ("hat", 0.02, "monotonic")])
def test_transducer_loss_decreases_on_a_tiny_overfit_batch(head, target, lattice):
    model = _model(head=head).train()
    model.head.lattice = lattice
    batch = _batch()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(400):  # about 200 steps on this seed
        optimizer.zero_grad()
        loss = model.head.loss(*model(batch.features, batch.feature_lengths), batch)
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
        if losses[-1] < target:
            break
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < target and losses[0] > 3  # from a loss of several nats per token
    model.eval()
    hypotheses = model.head.decode(*model(batch.features, batch.feature_lengths))
    targets = [t[:n].tolist() for t, n in zip(batch.targets, batch.target_lengths)]
    assert hypotheses == targets  # overfit: greedy search reads the transcripts back


def test_the_two_class_lattice_gives_torchaudios_full_rnnt_loss_and_gradients():
    torch.manual_seed(4)
    logits = torch.randn(4, 13, 7, 9) * 2
    targets = torch.randint(1, 9, (4, 6))
    lengths, target_lengths = torch.tensor([13, 10, 7, 13]), torch.tensor([6, 3, 5, 0])
    full_in, pair_in = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
    full = torchaudio.functional.rnnt_loss(full_in, targets.int(), lengths.int(), target_lengths.int(), blank=0,
                                           reduction="none")
    pair = transducer_loss(pair_in.log_softmax(dim=-1), targets, lengths, target_lengths)
    torch.testing.assert_close(pair, full, rtol=1e-5, atol=1e-4)
    full.sum().backward()
    pair.sum().backward()
    torch.testing.assert_close(pair_in.grad, full_in.grad, rtol=1e-4, atol=1e-5)


def test_hat_factors_blank_out_of_the_label_softmax_and_its_loss_is_the_lattice_loss():

    torch.manual_seed(5)
    head = HATHead(d_model=8, num_tokens=NUM_TOKENS, pred_dim=6, joint_dim=6, max_symbols=3)
    logits = torch.randn(2, 9, 4, NUM_TOKENS + 1, dtype=torch.float64) * 2
    log_probs = head.log_probs(logits)
    torch.testing.assert_close(log_probs.logsumexp(dim=-1), torch.zeros(2, 9, 4, dtype=torch.float64))
    torch.testing.assert_close(log_probs[..., 0].exp(), torch.sigmoid(logits[..., 0]))  # blank: a sigmoid
    labels = log_probs[..., 1:] - torch.log1p(-log_probs[..., 0].exp())[..., None]
    torch.testing.assert_close(labels, logits[..., 1:].log_softmax(dim=-1))  # tokens: their own softmax
    # The lattice loss of HAT's distributions: the two-class kernel equals the full one given the same log-probs.
    targets, lengths, target_lengths = torch.randint(1, NUM_TOKENS + 1, (2, 3)), torch.tensor([9, 6]), torch.tensor([3, 2])
    full = torchaudio.functional.rnnt_loss(log_probs.float(), targets.int(), lengths.int(), target_lengths.int(),
                                           blank=0, reduction="none", fused_log_softmax=False)
    torch.testing.assert_close(transducer_loss(log_probs.float(), targets, lengths, target_lengths), full,
                               rtol=1e-5, atol=1e-4)


def test_the_monotonic_lattice_sums_every_path_of_one_class_per_frame():
    """Against the paths written out: each frame emits blank or the next token and moves on, so an
    utterance of T frames and U tokens has C(T, U) paths; one with more tokens than frames has none
    (loss 0, as CTC's zero_infinity) and keeps finite gradients."""
    from itertools import combinations

    torch.manual_seed(6)
    log_probs = (torch.randn(3, 6, 4, NUM_TOKENS + 1, dtype=torch.float64) * 2).log_softmax(dim=-1)
    log_probs.requires_grad_(True)
    targets = torch.randint(1, NUM_TOKENS + 1, (3, 3))
    lengths, target_lengths = torch.tensor([6, 4, 2]), torch.tensor([3, 2, 3])
    losses = monotonic_transducer_loss(log_probs, targets, lengths, target_lengths)
    for b in range(2):
        frames, tokens = int(lengths[b]), int(target_lengths[b])
        paths = []
        for emitting in combinations(range(frames), tokens):
            prefix, score = 0, torch.tensor(0.0, dtype=torch.float64)
            for t in range(frames):
                if t in emitting:
                    score, prefix = score + log_probs[b, t, prefix, targets[b, prefix]], prefix + 1
                else:
                    score = score + log_probs[b, t, prefix, 0]
            paths.append(score)
        torch.testing.assert_close(losses[b], -torch.stack(paths).logsumexp(0))
    assert float(losses[2]) == 0.0  # 3 tokens in 2 frames: no path
    losses.sum().backward()
    assert torch.isfinite(log_probs.grad).all() and float(log_probs.grad[2].abs().sum()) == 0.0


def _scripted_head(script: list[dict[tuple[int, int], int]], max_symbols: int) -> TransducerHead:
    """A head whose joiner is a table: the class utterance b gets at frame t after n emitted
    tokens is script[b][(t, n)] (blank where absent). The 'encoder' carries the frame index and
    the 'predictor' counts the tokens fed to it (the start symbol is blank)."""
    head = TransducerHead(d_model=1, num_tokens=NUM_TOKENS, pred_dim=1, joint_dim=1, max_symbols=max_symbols)
    head.enc_proj = torch.nn.Identity()

    def predict(classes, state=None):
        count = (state[0] if state is not None else torch.zeros(1, classes.shape[0], 1))
        count = count + (classes[:, -1] != 0).float().view(1, -1, 1)
        return count[0].unsqueeze(1), (count, count.clone())

    def joint(enc, pred):
        logits = torch.zeros(enc.shape[0], NUM_TOKENS + 1)
        for b in range(enc.shape[0]):
            logits[b, script[b].get((int(enc[b, 0]), int(pred[b, 0])), 0)] = 1.0
        return logits

    head.predict, head.joint = predict, joint
    return head


def test_greedy_search_of_a_hand_made_joiner_gives_the_expected_tokens():
    script = [
        {(0, 0): 5, (0, 1): 2, (2, 2): 3},  # two tokens at frame 0, one at frame 2
        {(1, 0): 7, (1, 1): 7, (1, 2): 7, (1, 3): 7, (3, 3): 4},  # never blank at frame 1; frame 3 is padding
        {},  # only blanks
    ]
    head = _scripted_head(script, max_symbols=3)
    encoded = torch.arange(4.0).view(1, 4, 1).expand(3, 4, 1)
    hypotheses = head.decode(encoded, torch.tensor([4, 3, 2]))
    # Classes are tokens + 1; utterance 1 is cut at max_symbols per frame and never reaches frame 3.
    assert hypotheses == [[4, 1, 2], [6, 6, 6], []]


def test_greedy_search_on_the_monotonic_lattice_emits_at_most_one_token_a_frame():
    script = [{(0, 0): 5, (0, 1): 2, (1, 1): 2, (2, 2): 3}, {(1, 0): 7, (1, 1): 7, (2, 1): 7}]
    head = _scripted_head(script, max_symbols=3)
    head.lattice = "monotonic"  # max_symbols no longer applies: an emission ends the frame
    encoded = torch.arange(4.0).view(1, 4, 1).expand(2, 4, 1)
    assert head.decode(encoded, torch.tensor([4, 3])) == [[4, 1, 2], [6, 6]]


def _greedy_one_by_one(head: TransducerHead, encoded: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    """Textbook greedy search, one utterance at a time, for checking the batched one."""
    results = []
    for b in range(encoded.shape[0]):
        enc = head.enc_proj(encoded[b, : int(lengths[b])])
        pred, state = head.predict(torch.zeros(1, 1, dtype=torch.long))
        tokens = []
        for t in range(enc.shape[0]):
            for _ in range(head.max_symbols):
                best = int(head.joint(enc[t], pred[0, 0]).argmax())
                if best == 0:
                    break
                tokens.append(best - 1)
                pred, state = head.predict(torch.tensor([[best]]), state)
        results.append(tokens)
    return results


@torch.no_grad()
def test_batched_greedy_search_matches_one_utterance_at_a_time():
    torch.manual_seed(3)
    head = TransducerHead(d_model=8, num_tokens=NUM_TOKENS, pred_dim=6, joint_dim=12, max_symbols=2)
    with torch.no_grad():
        head.out.bias[0] += 1.0  # blank about as likely as the tokens: a mix of emissions and skips
    encoded = torch.randn(4, 9, 8) * 2
    lengths = torch.tensor([9, 4, 7, 1])
    expected = _greedy_one_by_one(head, encoded, lengths)
    assert head.decode(encoded, lengths) == expected
    assert any(expected) and sum(map(len, expected)) < 2 * int(lengths.sum())  # neither all blank nor all capped
    # A blank penalty makes the search emit more; a huge one leaves blank no chance: max_symbols per frame.
    head.blank_penalty = 0.5
    penalised = head.decode(encoded, lengths)
    assert sum(map(len, penalised)) > sum(map(len, expected))
    head.blank_penalty = 1e3
    assert [len(h) for h in head.decode(encoded, lengths)] == [2 * int(n) for n in lengths]


@torch.no_grad()
@pytest.mark.parametrize("lattice", ["regular", "monotonic"])
def test_the_error_scripts_greedy_path_emits_what_the_search_decodes(lattice):
    """experiments/transducer_errors.py writes out the search's path frame by frame: its emissions
    must be the batched search's tokens, blank penalty included, or the trace explains another search."""
    from experiment_scripts import load_experiment

    script = load_experiment("transducer_errors")
    torch.manual_seed(4)
    head = HATHead(d_model=8, num_tokens=NUM_TOKENS, pred_dim=6, joint_dim=12, max_symbols=2, blank_penalty=0.5,
                   lattice=lattice)
    head.out.bias[0] -= 1.0  # blank's sigmoid about even with the tokens: a mix of emissions and skips
    encoded = torch.randn(3, 9, 8) * 2
    lengths = torch.tensor([9, 6, 3])
    names = SimpleNamespace(decode=lambda ids: f"t{ids[0]}")
    decoded = head.decode(encoded, lengths)
    traced = [[int(t) for t in re.findall(r"EMIT t(\d+)", script.greedy_path(head, encoded[b, : int(n)], names))]
              for b, n in enumerate(lengths)]
    assert traced == decoded
    assert any(decoded) and sum(map(len, decoded)) < head.symbols_per_frame * int(lengths.sum())


def test_the_error_script_counts_deletions_beside_the_same_word():
    import jiwer
    from experiment_scripts import load_experiment

    script = load_experiment("transducer_errors")
    measure = jiwer.process_words(["six six nine", "four eight nine", "one one"], ["six nine", "four eight", ""])
    assert measure.deletions == 4 and script.repeat_deletions(measure) == 3  # 'nine' in the second is no repeat


# ---- adapters and the frozen base ------------------------------------------------------------
@torch.no_grad()
def test_a_zero_initialised_adapter_leaves_the_rnnt_model_unchanged():
    model = _model().eval()
    batch = _batch()
    before = model(batch.features, batch.feature_lengths)
    lattice = model.head.posteriors(*before, batch)[0]
    index = model.add_adapter("new")
    for make in (lambda _: SingleAdapter(index), lambda _: AdapterMean(),
                 lambda _: AdapterFusion(RNNT.d_model, layernorm=False)):
        model.set_combiners(make)
        after = model(batch.features, batch.feature_lengths, torch.zeros(3, dtype=torch.long))
        torch.testing.assert_close(after[0], before[0], rtol=0, atol=1e-6)
        torch.testing.assert_close(model.head.posteriors(*after, batch)[0], lattice, rtol=0, atol=1e-5)
        assert model.head.decode(*after) == model.head.decode(*before)


def test_predictor_and_joiner_are_part_of_the_frozen_base():
    model = _model()
    assert isinstance(model.head, TransducerHead) and model.head in model.base_modules()
    head_keys = [k for k in model.state_dict() if k.startswith("head.")]
    assert any(".predictor." in k for k in head_keys) and any(".out." in k for k in head_keys)
    assert all(k.startswith(BASE_STATE_PREFIXES) for k in head_keys)
    model.add_adapter("a")
    model.set_trainable(base=False, adapters=[0])
    model.train()
    assert not any(p.requires_grad for p in model.head.parameters()) and not model.head.training
    counts = model.parameter_counts()
    assert counts["base"] >= sum(p.numel() for p in model.head.parameters())
    before = base_fingerprint(model.state_dict())
    with torch.no_grad():
        model.head.predictor.weight_hh_l0.add_(0.01)
    assert base_fingerprint(model.state_dict()) != before  # adapter files notice another predictor


def test_lwf_distils_the_joiner_posteriors_of_the_previous_model():
    model = _model().eval()  # BatchNorm on running statistics, as the teacher's
    strategy = SimpleNamespace(model=model, adapter_routes=lambda ids: torch.full_like(ids, -1))
    lwf = SequenceLwFPlugin(alpha=1.0, temperature=2.0)
    lwf.before_training_exp(strategy)
    batch = _batch()
    penalties = []
    for _ in range(2):
        fake = SimpleNamespace(**vars(strategy), mbatch=batch, loss=torch.zeros(()),
                               mb_output=model(batch.features, batch.feature_lengths))
        lwf.before_backward(fake)
        penalties.append(float(fake.loss))
        with torch.no_grad():
            model.head.out.weight.add_(0.5 * torch.randn_like(model.head.out.weight))
    assert penalties[0] == pytest.approx(0.0, abs=1e-6) and penalties[1] > 1e-3
    encoded, lengths = model(batch.features, batch.feature_lengths)
    log_probs, valid = head_of(model).posteriors(encoded, lengths, batch)
    assert log_probs.shape[:3] == valid.shape  # (B, frames, prefixes): one distribution per lattice node
    assert int(valid[2].sum()) == int(lengths[2]) * int(batch.target_lengths[2] + 1)


# ---- config and cache keys ------------------------------------------------------------------
def test_head_config_is_checked_and_keys_the_cached_base_model():
    with pytest.raises(ConfigError, match="config field 'head' must be one of ctc, rnnt, hat, got 'lstm'"):
        make_config("tiny", {"head": "lstm"})
    with pytest.raises(ConfigError, match="rnnt_pred_dim"):
        make_config("tiny", {"rnnt_pred_dim": "0"})
    data = SimpleNamespace(fingerprint="data")
    ctc = make_config("tiny")
    assert base_model_key(data, ctc, 0) != base_model_key(data, RNNT, 0)
    assert base_model_key(data, make_config("tiny", {"head": "hat"}), 0) != base_model_key(data, RNNT, 0)
    wider = make_config("tiny", {"head": "rnnt", "rnnt_joint_dim": "48"})
    assert base_model_key(data, wider, 0) != base_model_key(data, RNNT, 0)
    # Decoding settings and the other head's fields leave a base model's key alone.
    assert base_model_key(data, make_config("tiny", {"head": "rnnt", "rnnt_max_symbols": "2"}), 0) == \
        base_model_key(data, make_config("tiny", {"head": "rnnt", "rnnt_blank_penalty": "1.5"}), 0) == \
        base_model_key(data, RNNT, 0)
    assert base_model_key(data, make_config("tiny", {"rnnt_pred_dim": "8"}), 0) == base_model_key(data, ctc, 0)
    assert HEAD_FIELDS["ctc"] == [] and "head" not in PRETRAIN_FIELDS  # CTC keys as before heads existed
    # How a transducer is pretrained keys its base model, and only its.
    for field, value in (("transducer_ctc_weight", "0.5"), ("transducer_init", "scratch"), ("transducer_warmup", "0.5"),
                         ("transducer_epochs", "3"), ("rnnt_lattice", "regular")):
        assert base_model_key(data, make_config("tiny", {"head": "rnnt", field: value}), 0) != \
            base_model_key(data, RNNT, 0)
        assert base_model_key(data, make_config("tiny", {field: value}), 0) == base_model_key(data, ctc, 0)


def test_the_auxiliary_ctc_loss_adds_its_weight_times_ctc_on_the_encoder_output():
    from continual_asr.model import CTCHead
    from continual_asr.training.pretrain import AuxiliaryCTC

    model, batch = _model(), _batch()
    model.aux_ctc = CTCHead(RNNT.d_model, NUM_TOKENS)
    encoded, lengths = model(batch.features, batch.feature_lengths)
    strategy = SimpleNamespace(model=model, mb_output=(encoded, lengths), mbatch=batch, loss=torch.tensor(1.5))
    AuxiliaryCTC(0.3).before_backward(strategy)
    expected = 1.5 + 0.3 * model.aux_ctc.loss(encoded, lengths, batch)
    torch.testing.assert_close(strategy.loss, expected)
    assert expected > 1.5


def test_the_head_warm_up_trains_the_head_alone_then_the_whole_model():
    from continual_asr.training.pretrain import PretrainTemplate

    model = _model()
    warmup, whole = PretrainTemplate(model=model, config=RNNT, epochs=8, learning_rate=1e-3,
                                     warmup_epochs=2).training_phases(None)
    assert (warmup.epochs, whole.epochs) == (2, 6) and whole.learning_rate == warmup.learning_rate == 1e-3
    warmup.configure(model)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith("head.") for name in trainable)
    assert any(name.startswith("head.predictor.") for name in trainable)
    whole.configure(model)
    assert all(p.requires_grad for name, p in model.named_parameters() if name.startswith(("layers.", "subsampling.")))
    assert len(PretrainTemplate(model=model, config=RNNT, epochs=8, warmup_epochs=0).training_phases(None)) == 1


def test_pretrain_seed_shares_one_base_model_across_run_seeds():
    data = SimpleNamespace(fingerprint="data")
    shared = make_config("tiny", {"pretrain_seed": "0"})
    assert base_model_key(data, shared, 1) == base_model_key(data, shared, 2) == \
        base_model_key(data, make_config("tiny"), 0)
    assert base_model_key(data, make_config("tiny"), 1) != base_model_key(data, make_config("tiny"), 0)


# ---- end to end -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rnnt_cache(tmp_path_factory, tiny_cache_template):
    return copy_tiny_cache(tiny_cache_template, tmp_path_factory.mktemp("rnnt"))


# The tiny CTC base model of the shared cache, and 8 epochs (transducer_epochs) for the transducer
# started from it: these tests check the paths, not the WER.
RNNT_ARGS = ["--set", "head=rnnt", "--set", "transducer_epochs=8"]


@pytest.fixture(scope="module")
def rnnt_run(tmp_path_factory, rnnt_cache):
    out = tmp_path_factory.mktemp("rnnt-run")
    return (*_run(out, rnnt_cache, "fusion", extra=RNNT_ARGS), out / "fusion")


def test_adapter_fusion_with_the_rnnt_head_runs_end_to_end(rnnt_run, rnnt_cache):
    results, _, out = rnnt_run
    assert results["complete"] and results["config"]["head"] == "rnnt" and len(results["wer_matrix"]) == 2
    assert all(0.0 <= v for row in results["wer_matrix"] for v in row)
    _check_parameters(results, "adapter-fusion")
    # transducer_init=ctc: the cached CTC base model, then the transducer's 8 epochs, a quarter of
    # them (transducer_warmup) on the head alone
    log = (out / "run.log").read_text()
    assert "base model: reusing" in log and "pretraining on us-clean for 80 epochs" not in log
    assert "for 8 epochs from the CTC base model's encoder, the first 2 training the head alone" in log
    assert "arithmetic: cpu (" in log and "float32" in log
    # The base (predictor and joiner included) is bit for bit the cached base model.
    base = torch.load(results["base_model"]["path"], weights_only=True)["state_dict"]
    final = torch.load(out / "checkpoint.pt", weights_only=True)["state_dict"]
    assert any(k.startswith("head.predictor.") for k in base)
    for key, value in base.items():
        assert torch.equal(final[key], value), key


@pytest.mark.parametrize("strategy", ["lwf", "ewc", "adapter-router"])
def test_distillation_consolidation_and_routing_run_with_the_rnnt_head(tmp_path, rnnt_run, rnnt_cache, strategy):
    results, _ = _run(tmp_path, rnnt_cache, strategy, strategy=strategy, extra=RNNT_ARGS)
    assert results["complete"] and results["base_model"]["cached"]  # the adapter-fusion run's base model
    assert results["base_wer"] == rnnt_run[0]["base_wer"]
    _check_parameters(results, strategy)


@pytest.mark.parametrize("strategy", ["adapter-fusion", "lwf"])
def test_adapter_fusion_and_distillation_run_with_the_hat_head(tmp_path, rnnt_run, rnnt_cache, strategy):
    """HAT (the paper's decoder) shares the rnnt run's cached CTC base model and trains its own
    transducer from it; the paths that differ from RNN-T (blank sigmoid, label softmax) reach fusion,
    the frozen base and LwF's lattice posteriors."""
    extra = [*RNNT_ARGS[:1], "head=hat", *RNNT_ARGS[2:]]
    results, _ = _run(tmp_path, rnnt_cache, strategy, strategy=strategy, extra=extra)
    assert results["complete"] and results["config"]["head"] == "hat" and len(results["wer_matrix"]) == 2
    assert results["base_model"]["cache_key"] != rnnt_run[0]["base_model"]["cache_key"]
    _check_parameters(results, strategy)
    log = (tmp_path / strategy / "run.log").read_text()
    assert "base model: reusing" in log and "pretraining on us-clean for 80 epochs" not in log  # CTC's, cached
    if strategy == "adapter-fusion":
        base = torch.load(results["base_model"]["path"], weights_only=True)["state_dict"]
        final = torch.load(tmp_path / strategy / "checkpoint.pt", weights_only=True)["state_dict"]
        assert any(k.startswith("head.predictor.") for k in base)
        assert all(torch.equal(final[key], value) for key, value in base.items())


def test_an_interrupted_rnnt_run_resumes_to_the_same_result(tmp_path, rnnt_run, rnnt_cache, monkeypatch):
    import continual_asr.runner as runner

    real_save, saves = runner.save_step, []

    def save_then_die(*args, **kwargs):
        saves.append(1)
        if len(saves) == 3:  # base model, first task, then killed before the second task's checkpoint
            raise RuntimeError("killed")
        real_save(*args, **kwargs)

    monkeypatch.setattr(runner, "save_step", save_then_die)
    result = CliRunner().invoke(main, ["run", "--stream", "tiny", "--strategy", "adapter-fusion", "--preset", "tiny",
                                       "--seed", "0", *RNNT_ARGS,
                                       "--out", str(tmp_path / "fusion"), "--cache-dir", str(rnnt_cache), "--quiet"])
    assert result.exit_code != 0 and len(saves) == 3
    monkeypatch.setattr(runner, "save_step", real_save)
    resumed, output = _run(tmp_path, rnnt_cache, "fusion", extra=RNNT_ARGS)
    assert "after 1 of 2 tasks" in (tmp_path / "fusion" / "run.log").read_text()  # resumed, not redone
    assert resumed["wer_matrix"] == rnnt_run[0]["wer_matrix"]
    assert resumed["base_wer"] == rnnt_run[0]["base_wer"]


def test_transducer_pretraining_takes_variant_names_with_commas_whole(tmp_path):
    from experiment_scripts import load_experiment

    script = load_experiment("transducer_pretraining")
    assert "rnnt, init ctc + aux ctc 0.3" in script.VARIANTS
    result = CliRunner().invoke(script.main, ["--only", "rnnt, init ctc", "--only", "rnnt, init cct",
                                              "--cache-dir", str(tmp_path)])
    assert result.exit_code == 2 and "--only 'rnnt, init cct': no such variant" in result.output


def test_transducer_pretraining_ctc_row_reads_the_cached_base_model(tmp_path, tiny_cache):
    """The study's ctc row end to end on the tiny preset: the base model comes from the cache (0 s
    of training) and its dev and test WER reach the table."""
    from experiment_scripts import load_experiment

    script = load_experiment("transducer_pretraining")
    out = tmp_path / "table.md"
    result = CliRunner().invoke(script.main, ["--only", "ctc", "--cache-dir", str(tiny_cache), "--out", str(out),
                                              "--set", f"threads={PRETRAIN_THREADS}"])
    assert result.exit_code == 0, result.output
    row = next(line for line in out.read_text().splitlines() if line.startswith("| ctc "))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[-1] == "0" and all(cell.replace(".", "").isdigit() for cell in cells[1:])
