"""Behaviour of the adapter bank, the combiners and the frozen base."""

import copy
import os
import subprocess
import sys

import pytest
import torch

from continual_asr.config import make_config
from continual_asr.data.dataset import SpeechBatch
from continual_asr.model import (AdapterBank, AdapterFusion, AdapterMean, OracleRouting, SingleAdapter,
                                 build_model)
from continual_asr.model.combiners import AttentionRecorder


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build_model(make_config("tiny"), num_tokens=20).eval()


def _batch(batch=3, frames=80, n_mels=80):
    generator = torch.Generator().manual_seed(1)
    return torch.randn(batch, frames, n_mels, generator=generator), torch.tensor([80, 64, 50])[:batch]


def _random_bank(d_model: int, bottleneck: int, adapters: int) -> AdapterBank:
    """A bank of ``adapters`` with random weights (fresh adapters are the identity)."""
    bank = AdapterBank(d_model, bottleneck)
    for _ in range(adapters):
        bank.add_adapter()
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in bank.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.3)
    return bank


def test_fresh_adapter_leaves_base_output_unchanged(model):
    features, lengths = _batch()
    before, _ = model(features, lengths)
    index = model.add_adapter("new")
    for make in (lambda _: SingleAdapter(index), lambda _: AdapterMean(), lambda _: OracleRouting()):
        model.set_combiners(make)
        after, _ = model(features, lengths, torch.zeros(3, dtype=torch.long))
        torch.testing.assert_close(after, before, rtol=0, atol=1e-6)


def test_batched_bank_matches_each_adapter_alone():
    bank = _random_bank(16, 4, 5)
    hidden = torch.randn(2, 7, 16)
    stacked = bank(hidden)
    assert stacked.shape == (2, 7, 5, 16)
    for i, adapter in enumerate(bank.adapters):
        torch.testing.assert_close(stacked[:, :, i], adapter(hidden), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bank(hidden, [3, 1]), stacked[:, :, [3, 1]], rtol=1e-5, atol=1e-5)


def test_oracle_routes_each_utterance_to_its_own_adapter():
    bank = _random_bank(16, 4, 3)
    hidden = torch.randn(4, 5, 16)
    routes = torch.tensor([2, -1, 0, 2])
    delta = OracleRouting()(hidden, bank, routes)
    torch.testing.assert_close(delta[0], bank.adapters[2](hidden[0]), rtol=1e-5, atol=1e-5)
    assert torch.all(delta[1] == 0)
    torch.testing.assert_close(delta[2], bank.adapters[0](hidden[2]), rtol=1e-5, atol=1e-5)


def test_fusion_starts_as_adapter_mean():
    bank = _random_bank(16, 4, 4)
    hidden = torch.randn(2, 6, 16)
    fusion = AdapterFusion(16, layernorm=False, null_slot=False)
    probs = fusion.attention(hidden, bank(hidden))
    assert probs.shape == (2, 6, 4)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 6))
    # Q and K start near zero, V near identity: the fused output is close to the plain average.
    mean = AdapterMean()(hidden, bank, None)
    fused = fusion(hidden, bank, None)
    assert (fused - mean).abs().max() < 0.05 * mean.abs().max()


def test_fusion_attention_selects_an_adapter_when_keys_align():
    bank = _random_bank(8, 2, 2)
    hidden = torch.randn(1, 3, 8)
    fusion = AdapterFusion(8, layernorm=False, null_slot=True)
    with torch.no_grad():
        fusion.query.weight.copy_(torch.eye(8) * 50)
        fusion.key.weight.copy_(torch.eye(8))
    outputs = bank(hidden)
    probs = fusion.attention(hidden, outputs)
    assert probs.shape == (1, 3, 3)  # two adapters plus the null slot
    expected = torch.einsum("btd,btnd->btn", hidden * 50, outputs)
    expected = torch.cat([expected, torch.zeros(1, 3, 1)], -1).softmax(-1)
    torch.testing.assert_close(probs, expected)


def test_fusion_temperature_divides_the_scores():
    bank = _random_bank(8, 2, 3)  # three adapters, plus the null slot
    hidden = torch.randn(1, 3, 8)
    sharp, flat = AdapterFusion(8, layernorm=False), AdapterFusion(8, layernorm=False, temperature=1e6)
    with torch.no_grad():
        for fusion in (sharp, flat):
            fusion.query.weight.copy_(torch.eye(8) * 50)
            fusion.key.weight.copy_(torch.eye(8))
    outputs = bank(hidden)
    assert sharp.attention(hidden, outputs).max() > 0.9
    torch.testing.assert_close(flat.attention(hidden, outputs), torch.full((1, 3, 4), 0.25), atol=1e-4, rtol=0)


@pytest.mark.parametrize("layernorm, null_slot", [(True, True), (False, True), (True, False), (False, False)])
def test_fusion_inference_with_folded_projections_matches_training_path(layernorm, null_slot):
    bank = _random_bank(16, 4, 3)
    hidden = torch.randn(2, 6, 16)
    fusion = AdapterFusion(16, layernorm=layernorm, null_slot=null_slot)
    for proj in (fusion.query, fusion.key, fusion.value):  # away from the near-average start
        torch.nn.init.normal_(proj.weight, std=0.3)
    torch.nn.init.normal_(fusion.query.bias, std=0.3)
    trained_path = fusion(hidden, bank, None)  # grad on: the plain path (and the calibration)
    with torch.no_grad():
        folded = fusion(hidden, bank, None)
    torch.testing.assert_close(folded, trained_path, rtol=1e-4, atol=1e-5)


def _sharp_utterance_fusion(d: int, **kwargs) -> AdapterFusion:
    fusion = AdapterFusion(d, layernorm=False, scope="utterance", **kwargs)
    for proj in (fusion.query, fusion.key, fusion.value):
        torch.nn.init.normal_(proj.weight, std=0.3)
    return fusion


def test_utterance_scope_gives_each_utterance_one_attention_from_its_valid_frames_only():
    torch.manual_seed(0)
    bank = _random_bank(8, 4, 3)
    fusion = _sharp_utterance_fusion(8)
    hidden = torch.randn(2, 5, 8)
    valid = torch.tensor([[True] * 5, [True, True, True, False, False]])
    fusion.set_valid_frames(valid)
    probs = fusion.attention(hidden, bank(hidden))
    assert torch.allclose(probs, probs[:, :1].expand_as(probs))  # the same at every frame
    frame = AdapterFusion(8, layernorm=False)
    frame.load_state_dict(fusion.state_dict())
    scores = torch.log(frame.attention(hidden, bank(hidden)))  # frame scores, up to a constant per frame
    scores = scores[..., :3] - scores[..., 3:]  # minus the null slot's (0): the scores themselves
    expected = torch.cat([scores[1, :3].mean(0), torch.zeros(1)]).softmax(-1)
    torch.testing.assert_close(probs[1, 0], expected, rtol=1e-5, atol=1e-6)
    # padding frames, whatever they hold, change nothing
    changed = hidden.clone()
    changed[1, 3:] = 100.0
    torch.testing.assert_close(fusion.attention(changed, bank(changed))[1, :3], probs[1, :3])


def test_utterance_scope_folded_inference_matches_training_path():
    torch.manual_seed(1)
    bank = _random_bank(16, 4, 3)
    fusion = _sharp_utterance_fusion(16)
    hidden = torch.randn(2, 6, 16)
    fusion.set_valid_frames(torch.tensor([[True] * 6, [True] * 4 + [False] * 2]))
    trained_path = fusion(hidden, bank, None)
    with torch.no_grad():
        folded = fusion(hidden, bank, None)
    torch.testing.assert_close(folded, trained_path, rtol=1e-4, atol=1e-5)


def test_the_encoder_gives_utterance_fusion_its_valid_frames(model):
    for name in ("a", "b"):
        model.add_adapter(name)
    model.set_combiners(lambda layer: _sharp_utterance_fusion(model.d_model))
    features, lengths = _batch()
    encoded, out_lengths = model(features, lengths)
    for combiner in model.combiners:  # each layer pooled over exactly the frames the output keeps
        valid = combiner._valid
        assert valid.shape == encoded.shape[:2] and valid.sum(1).tolist() == out_lengths.tolist()
        assert all(valid[b, :n].all() for b, n in enumerate(out_lengths.tolist()))


def test_layernorm_gain_is_calibrated_to_the_fused_scale():
    bank = _random_bank(16, 4, 3)
    hidden = torch.randn(2, 6, 16)
    fusion = AdapterFusion(16, layernorm=True, null_slot=False)
    out = fusion(hidden, bank, None)
    raw = AdapterFusion(16, layernorm=False, null_slot=False)
    raw.load_state_dict({k: v for k, v in fusion.state_dict().items() if not k.startswith("norm")},
                        strict=False)
    assert bool(fusion.calibrated)
    ratio = out.std() / raw(hidden, bank, None).std()
    assert 0.7 < float(ratio) < 1.3


def test_frozen_base_stays_in_eval_mode(model):
    model.add_adapter("a")
    model.set_trainable(base=False, adapters=[0])
    model.train()
    assert not model.layers.training and not model.subsampling.training
    assert model.banks.training
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("banks.") for n in trainable)
    model.set_trainable(base=True)
    model.train()
    assert model.layers.training


def test_parameter_counts_add_up(model):
    model.add_adapter("a")
    model.add_adapter("b")
    model.set_combiners(lambda _: AdapterFusion(32))
    counts = model.parameter_counts()
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["adapters"] == sum(p.numel() for p in model.banks.parameters())


def test_null_slot_lets_fusion_add_nothing_even_with_layernorm(monkeypatch):
    bank = _random_bank(8, 2, 2)
    hidden = torch.randn(1, 4, 8)
    fusion = AdapterFusion(8, layernorm=True, null_slot=True)
    fusion(hidden, bank, None)  # calibrates the LayerNorm gain

    def attend(probabilities):
        monkeypatch.setattr(fusion, "attention", lambda h, o: torch.tensor(probabilities).expand(1, 4, 3))
        return fusion(hidden, bank, None)

    assert torch.all(attend([0.0, 0.0, 1.0]) == 0)  # all mass on "no adapter": nothing is added
    full = attend([0.5, 0.5, 0.0])
    torch.testing.assert_close(attend([0.25, 0.25, 0.5]), 0.5 * full)  # the null share gates the output


def _fusion_model():
    torch.manual_seed(0)
    model = build_model(make_config("tiny"), num_tokens=20).eval()
    for task in ("a", "b"):
        model.add_adapter(task)
    model.set_combiners(lambda i: AdapterFusion(model.banks[0].d_model, layernorm=True, null_slot=True))
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for module in (*model.banks, *model.combiners):
            for name, p in module.named_parameters():
                if not name.startswith("norm"):
                    p.copy_(torch.randn(p.shape, generator=generator) * 0.1)
    return model


def _recorded(model, features, lengths, utterances=None, grad=False):
    recorder = AttentionRecorder()
    recorder.utterances = utterances
    model.record_attention(recorder)
    with torch.set_grad_enabled(grad):
        model(features, lengths)
    model.record_attention(None)
    return recorder


def test_attention_recorder_averages_valid_frames_only():
    """Padding frames and stand-in utterances count nowhere: a padded batch gives the
    frame-weighted mean of its utterances recorded one by one; the folded inference path
    records what the training path does."""
    model = _fusion_model()
    features, lengths = _batch()
    _recorded(model, features, lengths, grad=True)  # calibrates the LayerNorm gains
    batch = _recorded(model, features, lengths)
    means = torch.tensor(batch.means())
    assert means.shape == (len(model.layers), 3)  # two adapters and the null slot
    torch.testing.assert_close(means.sum(-1), torch.ones(len(model.layers)), atol=1e-3, rtol=0)
    alone = [_recorded(model, features[i:i + 1, :n], lengths[i:i + 1]) for i, n in enumerate(lengths.tolist())]
    pooled = sum(torch.stack([r.sums[k] for k in sorted(r.sums)]) for r in alone)
    frames = sum(float(r.frames) for r in alone)
    assert float(batch.frames) == frames
    alone_means = (pooled / frames).float()
    # Not exact: the Conformer's convolution module lets padding leak into the last frames.
    torch.testing.assert_close(means, alone_means, atol=2e-3, rtol=0)
    trained_path = torch.tensor(_recorded(model, features, lengths, grad=True).means())
    torch.testing.assert_close(trained_path, means, atol=1e-3, rtol=0)
    first_only = _recorded(model, features, lengths, utterances=torch.tensor([True, False, False]))
    torch.testing.assert_close(torch.tensor(first_only.means()), torch.tensor(alone[0].means()), atol=1e-4, rtol=0)
    assert all(c.last_attention is None and not c.keep_attention for c in model.combiners)


def test_cpu_autocast_self_attention_matches_torch_attention_with_padding():
    """SelfAttention.attend (float32 attention under CPU autocast) is torch's attention."""
    from continual_asr.model.encoder import SelfAttention

    torch.manual_seed(0)
    attention = SelfAttention(16, 2).eval()
    x = torch.randn(7, 3, 16)
    padding = torch.arange(7)[None, :] >= torch.tensor([7, 5, 2])[:, None]
    expected, _ = torch.nn.MultiheadAttention.forward(attention, x, x, x, key_padding_mask=padding,
                                                      need_weights=False)
    got = attention.attend(x, padding)
    valid = ~padding.T[..., None]
    assert torch.allclose(got * valid, expected * valid, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed, _ = attention(x, x, x, key_padding_mask=padding, need_weights=False)
    assert mixed.dtype == torch.bfloat16 and torch.allclose(mixed.float() * valid, expected * valid, atol=0.05)


def test_float32_self_attention_on_the_cpu_is_torch_attention_to_the_bit_forward_and_backward():
    """SelfAttention skips nn.MultiheadAttention's layout copies on the CPU; a float32 run must
    not change by a bit for it (a seed's base model stays the one it was)."""
    from continual_asr.model.encoder import SelfAttention

    torch.manual_seed(0)
    attention = SelfAttention(16, 2)
    x = torch.randn(7, 3, 16)
    padding = torch.arange(7)[None, :] >= torch.tensor([7, 5, 2])[:, None]
    upstream = torch.randn(7, 3, 16)
    results = []
    for forward in (attention.forward, lambda *a, **k: torch.nn.MultiheadAttention.forward(attention, *a, **k)):
        attention.zero_grad()
        inputs = x.clone().requires_grad_()
        out, _ = forward(inputs, inputs, inputs, key_padding_mask=padding, need_weights=False)
        out.backward(upstream)
        results.append([out, inputs.grad, *(p.grad for p in attention.parameters())])
    for ours, torchs in zip(*results):
        assert torch.equal(ours, torchs)
    calls = []
    attention.attend = lambda *a: calls.append(a) or x  # the CPU path is taken without autocast too
    attention(x, x, x, key_padding_mask=padding, need_weights=False)
    assert len(calls) == 1


def test_conformer_attention_is_the_cpu_autocast_class_with_unchanged_parameters(model):
    from continual_asr.model.encoder import SelfAttention

    attention = model.layers[0].self_attn
    assert type(attention) is SelfAttention
    assert {name for name, _ in attention.named_parameters()} == {
        "in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"}


@pytest.mark.parametrize("user_setting, expected", [
    ({}, ["64", "64", "256"]),
    ({"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "1024"}, ["1024"] * 3),
    ({"DNNL_PRIMITIVE_CACHE_CAPACITY": "8"}, ["None"] * 3),  # oneDNN's older name for it: left to oneDNN
])
def test_importing_casr_bounds_onednns_primitive_cache_unless_the_user_set_it(user_setting, expected):
    """oneDNN keeps a primitive (with its memory) per convolution shape; casr caps how many before
    torch builds the first one, raises the cap for a bf16 run on the CPU (a compiled kernel per
    matrix product shape) and never overrides what the user asked for."""
    env = {k: v for k, v in os.environ.items() if "PRIMITIVE_CACHE_CAPACITY" not in k} | user_setting
    script = ("import os, torch, continual_asr; from continual_asr import distributed\n"
              "print(os.environ.get('ONEDNN_PRIMITIVE_CACHE_CAPACITY'))\n"
              "for precision in ('float32', 'bf16'):\n"
              "    assert distributed.prepare_cpu_precision(torch.device('cpu'), precision) == precision\n"
              "    print(os.environ.get('ONEDNN_PRIMITIVE_CACHE_CAPACITY'))")
    printed = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                             check=True).stdout.split()
    assert printed == expected


@pytest.mark.parametrize("factor", [4, 6, 8])
def test_subsampling_lengths_are_the_frames_the_convolutions_give(factor):
    from continual_asr.model.encoder import Conv2dSubsampling

    front = Conv2dSubsampling(n_mels=80, d_model=16, channels=4, factor=factor)
    for frames in (factor * 4 + 3, 57, 100, 401):
        out, lengths = front(torch.zeros(1, frames, 80), torch.tensor([frames]))
        assert out.shape[1] == int(lengths)
        if frames >= 100:  # the kernels' edges aside, one output frame per factor input frames
            assert abs(frames / int(lengths) - factor) < factor * 0.15
    # the 4x front end's parameters are named as before the option, so cached base models load
    if factor == 4:
        assert sorted(front.state_dict()) == ["conv.0.bias", "conv.0.weight", "conv.2.bias", "conv.2.weight",
                                              "out.bias", "out.weight"]


@pytest.mark.parametrize("factor", [4, 8])
def test_the_channels_last_front_end_computes_what_the_plain_layout_does(factor):
    """The front end runs channels-last and flattens each frame as (F', C), its linear weight
    permuted to match: the same function, and the same gradients, as convolutions in the default
    layout read as (C, F') (how every saved base model's linear weight is laid out)."""
    from torch.nn import functional as F

    from continual_asr.model.encoder import Conv2dSubsampling

    torch.manual_seed(0)
    front = Conv2dSubsampling(n_mels=24, d_model=8, channels=3, factor=factor)
    features = torch.randn(2, 60, 24)
    out, _ = front(features, torch.tensor([60, 50]))
    loss_weights = torch.randn_like(out)
    (out * loss_weights).sum().backward()

    reference = {name: p.detach().contiguous().requires_grad_() for name, p in front.named_parameters()}
    x = features.unsqueeze(1)
    for i, (_, stride) in enumerate(front.layout):
        x = F.relu(F.conv2d(x, reference[f"conv.{2 * i}.weight"], reference[f"conv.{2 * i}.bias"], stride=stride))
    expected = F.linear(x.permute(0, 2, 1, 3).flatten(2), reference["out.weight"], reference["out.bias"])
    (expected * loss_weights).sum().backward()
    torch.testing.assert_close(out, expected)
    for name, p in front.named_parameters():
        torch.testing.assert_close(p.grad, reference[name].grad, msg=name)

    plain = {name: t.contiguous() for name, t in front.state_dict().items()}  # as older code saved them
    loaded = Conv2dSubsampling(n_mels=24, d_model=8, channels=3, factor=factor)
    loaded.load_state_dict(plain)
    torch.testing.assert_close(loaded(features, torch.tensor([60, 50]))[0], out)


def test_the_time_major_convolution_module_computes_what_torchaudios_does():
    """The Conformer's convolution module runs on (B, T, D) throughout: the same outputs, input
    and parameter gradients and BatchNorm running statistics as torchaudio's (B, D, T) module
    with the same parameters, in training and in evaluation."""
    import copy

    from torchaudio.models.conformer import _ConvolutionModule

    from continual_asr.model.encoder import TimeMajorConvolution

    torch.manual_seed(0)
    reference = _ConvolutionModule(input_dim=12, num_channels=12, depthwise_kernel_size=5, bias=True)
    time_major = copy.deepcopy(reference)
    time_major.__class__ = TimeMajorConvolution
    x = torch.randn(3, 17, 12)
    weights = torch.randn(3, 17, 12)
    outputs = []
    for module in (reference, time_major):
        module.train()
        features = x.clone().requires_grad_()
        out = module(features)
        (out * weights).sum().backward()
        outputs.append((out, features.grad, dict(module.named_parameters()), dict(module.named_buffers())))
    (expected, expected_input_grad, expected_params, expected_buffers), (out, input_grad, params, buffers) = outputs
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(input_grad, expected_input_grad)
    for name, parameter in params.items():
        if name == "sequential.2.bias":  # BatchNorm removes it: its true gradient is 0, both hold rounding noise
            assert parameter.grad.abs().max() < 1e-4 and expected_params[name].grad.abs().max() < 1e-4
            continue
        torch.testing.assert_close(parameter.grad, expected_params[name].grad, msg=name)
    for name, buffer in buffers.items():
        torch.testing.assert_close(buffer, expected_buffers[name], msg=name)
    reference.eval(), time_major.eval()
    torch.testing.assert_close(time_major(x), reference(x))


def test_the_depthwise_convolution_runs_in_float32_under_cpu_autocast(monkeypatch):
    """oneDNN's bf16 depthwise kernel on the (B, D, 1, T) channels-last view never returned for
    some batch shapes with two threads (a bf16 pretraining hung on a batch of 19 x 78 frames), so
    under CPU autocast that one convolution runs in float32, outside autocast; the module's
    output stays what float32 gives, to bf16's rounding, and float32 runs are unchanged."""
    from torchaudio.models.conformer import _ConvolutionModule

    from continual_asr.model.encoder import TimeMajorConvolution

    torch.manual_seed(0)
    module = _ConvolutionModule(input_dim=16, num_channels=16, depthwise_kernel_size=5, bias=True)
    module.__class__ = TimeMajorConvolution
    module.eval()
    x = torch.randn(3, 11, 16)
    expected = module(x)
    seen = []
    conv2d = torch.nn.functional.conv2d

    def spy(input, weight, *args, **kwargs):
        seen.append((input.dtype, weight.dtype, torch.is_autocast_enabled("cpu")))
        return conv2d(input, weight, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "conv2d", spy)
    features = x.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = module(features)
    mixed.float().sum().backward()
    assert seen == [(torch.float32, torch.float32, False)]
    assert features.grad is not None and torch.isfinite(features.grad).all()
    torch.testing.assert_close(mixed.float(), expected, atol=0.1, rtol=0.05)
    seen.clear()
    torch.testing.assert_close(module(x), expected, atol=0, rtol=0)  # float32: the same call as before
    assert seen == [(torch.float32, torch.float32, False)]


def test_the_conformer_layers_use_the_time_major_convolution_module():
    from continual_asr.model.encoder import TimeMajorConvolution

    model = build_model(make_config("tiny"), num_tokens=20)
    assert all(type(layer.conv_module) is TimeMajorConvolution for layer in model.layers)


def test_an_utterances_output_does_not_depend_on_what_it_is_batched_with():
    """Padded frames are zeroed before each depthwise convolution, so an utterance's encoder
    frames are the same alone and beside a longer one (the WER of a test set then does not
    depend on eval_batch_frames), through adapters and utterance-scope fusion too."""
    torch.manual_seed(0)
    model = build_model(make_config("tiny"), num_tokens=20)
    for task in ("a", "b"):
        model.add_adapter(task)
    model.set_combiners(lambda _: AdapterFusion(model.d_model, layernorm=False, scope="utterance"))
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.banks.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.1)
    model.eval()
    short, long = torch.randn(1, 120, 80, generator=generator), torch.randn(1, 300, 80, generator=generator)
    with torch.no_grad():
        alone = model.encode(short, torch.tensor([120]))[1]
        together = model.encode(torch.cat([torch.nn.functional.pad(short, (0, 0, 0, 180)), long]),
                                torch.tensor([120, 300]))[1]
    torch.testing.assert_close(together[:1, : alone.shape[1]], alone, atol=1e-5, rtol=1e-5)


def test_batchnorm_training_statistics_ignore_the_padding():
    """In training, the convolution modules' BatchNorm normalises by the statistics of the
    utterances' frames only: an utterance padded to three times its length gives the same output
    and the same running statistics as alone."""
    torch.manual_seed(0)
    model = build_model(make_config("tiny"), num_tokens=20)
    padded_model = copy.deepcopy(model)
    model.train(), padded_model.train()
    short = torch.randn(1, 120, 80, generator=torch.Generator().manual_seed(4))
    alone = model.encode(short, torch.tensor([120]))[1]
    padded = padded_model.encode(torch.nn.functional.pad(short, (0, 0, 0, 240)), torch.tensor([120]))[1]
    torch.testing.assert_close(padded[:, : alone.shape[1]], alone, atol=1e-5, rtol=1e-5)
    for layer, padded_layer in zip(model.layers, padded_model.layers):
        norm, padded_norm = layer.conv_module.sequential[3], padded_layer.conv_module.sequential[3]
        torch.testing.assert_close(padded_norm.running_mean, norm.running_mean, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(padded_norm.running_var, norm.running_var, atol=1e-6, rtol=1e-5)


def test_a_training_batch_finds_its_valid_frames_once_not_once_a_layer():
    """``nonzero`` waits for the device; the layers' BatchNorms share one call a batch."""
    from torch.overrides import TorchFunctionMode

    class CountNonzero(TorchFunctionMode):
        calls = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            CountNonzero.calls += func in (torch.nonzero, torch.Tensor.nonzero)
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    model = build_model(make_config("tiny", {"num_layers": 3}), num_tokens=20).train()
    features, lengths = _batch()
    with CountNonzero():
        model.encode(features, lengths)
    assert CountNonzero.calls == 1


def test_an_eight_times_subsampled_model_trains_and_decodes():
    torch.manual_seed(0)
    model = build_model(make_config("tiny", {"subsampling_factor": 8}), num_tokens=20)
    features, lengths = _batch()
    batch = SpeechBatch(features, lengths, torch.randint(0, 19, (3, 4)), torch.tensor([4, 3, 2]),
                        torch.zeros(3, dtype=torch.long), ["", "", ""])
    encoded, out_lengths = model(features, lengths)
    assert encoded.shape[1] == 9 and out_lengths.tolist() == [9, 7, 5]  # 80 ms frames from 10 ms ones
    loss = model.head.loss(encoded, out_lengths, batch)
    loss.backward()
    assert torch.isfinite(loss) and model.subsampling.conv[4].weight.grad is not None
    assert len(model.head.decode(encoded.detach(), out_lengths)) == 3
