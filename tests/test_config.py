"""Presets, --set overrides and their one-line errors."""

from types import SimpleNamespace

import pytest

from continual_asr.config import PRESETS, build_fields, make_config, parse_overrides
from continual_asr.errors import ConfigError
from continual_asr.registry import get_strategy
from continual_asr.training.pretrain import base_model_key


def test_presets_build_and_tiny_is_smaller():
    default, tiny = make_config("default"), make_config("tiny")
    assert set(PRESETS) >= {"default", "tiny"}
    assert tiny.d_model < default.d_model and tiny.num_layers < default.num_layers
    assert tiny.max_train_utterances > 0 and default.max_train_utterances == 0


def test_overrides_are_typed_and_split_between_config_and_the_strategys_options():
    config, options = get_strategy("adapter-fusion").settings(
        "tiny", parse_overrides(["adapter_dim=4", "fusion_layernorm=false", "fusion_lr=0.01", "d_model=48"]))
    assert options.adapter_dim == 4 and options.fusion_layernorm is False and options.fusion_lr == 0.01
    assert config.d_model == 48 and not hasattr(config, "adapter_dim")
    assert options.memory_per_task == PRESETS["tiny"]["memory_per_task"]  # the preset reaches the options too


@pytest.mark.parametrize("pairs, message", [
    (["no_such=1"], "unknown config field 'no_such' (valid:"),
    (["adapter_dim=big"], "config field 'adapter_dim' must be int"),
    (["adapter_dim=0"], "config field 'adapter_dim' must be >= 1"),
    (["specaugment=maybe"], "config field 'specaugment' must be true or false"),
    (["num_heads=5"], "config field 'num_heads' (5) must divide d_model"),
    (["conv_kernel=4"], "config field 'conv_kernel' must be odd"),
    (["adapter_dim"], "--set expects key=value"),
])
def test_bad_overrides_name_the_field(pairs, message):
    with pytest.raises(ConfigError, match=None) as error:
        get_strategy("adapter-fusion").settings("default", parse_overrides(pairs))
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="unknown preset 'huge' \\(valid: default, tiny\\)"):
        make_config("huge")


def test_every_field_belongs_to_a_documented_group_and_keys_follow_the_groups():
    from dataclasses import fields
    from pathlib import Path

    from continual_asr.config import GROUPS, RunConfig
    from continual_asr.training.extraction_cache import ExtractionCache

    assert {f.metadata["group"] for f in fields(RunConfig)} <= set(GROUPS)

    from continual_asr.training.adapters import ExtractionOptions

    def key(preset: str = "tiny", seed: int = 0, position: int = 1, **changes) -> str:
        extraction = {k: v for k, v in changes.items() if k in ("adapter_dim", "adapter_epochs", "adapter_lr")}
        general = {k: v for k, v in changes.items() if k not in extraction}
        options = build_fields(ExtractionOptions, preset, extraction)
        return ExtractionCache(Path("/unused"), "base", {"t": "data"}, "tokens", make_config(preset, general),
                               options.to_dict(), seed).key("t", position)

    assert len({key(), key(adapter_dim=4), key(batch_frames=900)}) == 3  # extraction and training groups
    assert key() == key(threads=1, eval_batch_frames=999)  # runtime and evaluation never enter
    # Pinned keys: adding a field must not move them (they moved with the extraction cache's and the
    # base model's versions, 2026-12-05: padded frames zeroed before the depthwise convolutions).
    assert key(adapter_lr=3e-3) == "04c8d162001827f9" == key(adapter_lr=3e-3, cpu_precision="float32")
    assert key(cpu_precision="bf16") != key(cpu_precision="float32")  # other arithmetic, other adapters

    def base_key(**changes) -> str:
        return base_model_key(SimpleNamespace(fingerprint="data"), make_config("tiny", changes), 0)

    # a bf16 base model is another entry; float32's key is the one from before the field (the base
    # model's version moved it, 2026-12-05: BatchNorm's training statistics over valid frames only)
    assert base_key(cpu_precision="bf16") != base_key() == base_key(cpu_precision="float32") == "b1a79e5de03ab9d9"
    # (10 epochs: the default preset's until 2026-12-07; 10-epoch adapters keep their cache entries)
    assert key("default", 3, 2, adapter_dim=4, adapter_lr=3e-3, adapter_epochs=10) == "c65c110484e446bc"
    # the 4x front end every model had before subsampling_factor keeps its keys; another is another model
    gpu = base_model_key(SimpleNamespace(fingerprint="data"), make_config("tiny"), 0, gpu_bf16=True)
    assert gpu != base_key()  # pretrained under a GPU's bf16 autocast: other weights
    assert base_key(subsampling_factor=4) == "b1a79e5de03ab9d9" != base_key(subsampling_factor=8)
    assert key(subsampling_factor=8) != key() == key(subsampling_factor=4)
