"""Adapters as files: export from a run's checkpoint, import into a run of the same base model,
refusal of any other base model."""

import json

import pytest
import safetensors.torch
import torch

from continual_asr.adapter_files import (IMPORTED, base_fingerprint, check_fits, export_adapter, import_adapters,
                                         load_adapter)
from continual_asr.config import make_config
from continual_asr.errors import CasrError
from continual_asr.model import build_model
from continual_asr.registry import get_strategy
from continual_asr.training.pretrain import save_checkpoint

CONFIG = make_config("tiny")
RESULTS = {"stream": {"name": "tiny"}, "strategy": "adapter-fusion", "seed": 0}


def _strategy(seed: int = 0, **values):
    torch.manual_seed(seed)
    return get_strategy("adapter-fusion").create(build_model(CONFIG, num_tokens=20), "tiny", values, seed=seed)


def _trained_run(tmp_path):
    """A run folder whose checkpoint holds two adapters with non-trivial weights."""
    strategy = _strategy()
    for name in ("caribbean", "babble"):
        strategy.add_adapter(name)
    with torch.no_grad():
        for p in strategy.model.banks.parameters():
            p.normal_(0, 0.1)
    save_checkpoint(strategy.model, tmp_path / "run" / "checkpoint.pt", results=RESULTS)
    return strategy, tmp_path / "run"


def test_export_then_import_round_trip(tmp_path):
    source, run_dir = _trained_run(tmp_path)
    written = export_adapter(run_dir, "babble", tmp_path / "babble")
    adapter = load_adapter(tmp_path / "babble")
    assert (adapter.task, adapter.num_layers, adapter.bottleneck, adapter.d_model) == ("babble", 2, 8, CONFIG.d_model)
    assert adapter.base_fingerprint == base_fingerprint(source.model.state_dict()) == written.base_fingerprint
    assert adapter.source["strategy"] == "adapter-fusion" and adapter.digest() == written.digest()

    target = _strategy()  # the same base model: same seed, same weights
    import_adapters(target, [adapter])
    assert target.model.adapter_tasks == [IMPORTED + "babble"]
    for source_bank, target_bank in zip(source.model.banks, target.model.banks):
        for a, b in zip(source_bank.adapters[1].parameters(), target_bank.adapters[0].parameters()):
            assert torch.equal(a, b)
    # Imported adapters grow the combiners like any other; they have no task of the stream.
    assert target.task_adapters == {}


def test_an_adapter_of_another_base_model_is_refused_naming_both_fingerprints(tmp_path):
    _, run_dir = _trained_run(tmp_path)
    export_adapter(run_dir, "caribbean", tmp_path / "caribbean")
    adapter = load_adapter(tmp_path / "caribbean")
    foreign = _strategy(seed=1)
    with pytest.raises(CasrError) as error:
        import_adapters(foreign, [adapter])
    message = str(error.value)
    assert adapter.base_fingerprint in message and base_fingerprint(foreign.model.state_dict()) in message
    assert "\n" not in message and foreign.model.adapter_tasks == []


def test_an_adapter_of_another_bottleneck_is_refused(tmp_path):
    _, run_dir = _trained_run(tmp_path)
    adapter = export_adapter(run_dir, "caribbean", tmp_path / "caribbean")
    wider = _strategy(adapter_dim=16)
    with pytest.raises(CasrError, match="bottleneck 8, this run's adapter_dim is 16 \\(pass --set adapter_dim=8\\)"):
        check_fits(adapter, wider.model)


def test_export_names_the_adapters_a_run_has(tmp_path):
    _, run_dir = _trained_run(tmp_path)
    with pytest.raises(CasrError, match="has no adapter for task 'nope' \\(its adapters: caribbean, babble\\)"):
        export_adapter(run_dir, "nope", tmp_path / "x")


def test_files_that_are_not_adapters_are_refused_without_running_code(tmp_path):
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(CasrError, match="is not a casr adapter"):
        load_adapter(tmp_path / "other.pt")
    torch.save({"format": "casr-adapter", "payload": CasrError("pickled object")}, tmp_path / "pickle.pt")
    with pytest.raises(CasrError, match="not a readable adapter file"):  # weights_only refuses objects
        load_adapter(tmp_path / "pickle.pt")
    with pytest.raises(CasrError, match="not found"):
        load_adapter(tmp_path / "missing.pt")


def test_only_adapter_strategies_take_adapter_files(tmp_path):
    _, run_dir = _trained_run(tmp_path)
    adapter = export_adapter(run_dir, "caribbean", tmp_path / "caribbean")
    finetune = get_strategy("finetune").create(build_model(CONFIG, num_tokens=20), "tiny", seed=0)
    with pytest.raises(CasrError, match="--adapter needs an adapter strategy"):
        import_adapters(finetune, [adapter])


def test_an_exported_adapter_is_a_safetensors_folder_with_a_json_config(tmp_path):
    _, run_dir = _trained_run(tmp_path)
    written = export_adapter(run_dir, "babble", tmp_path / "babble")
    assert sorted(p.name for p in (tmp_path / "babble").iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    config = json.loads((tmp_path / "babble" / "adapter_config.json").read_text())
    assert config["format"] == "casr-adapter" and config["format_version"] == 2 and config["task"] == "babble"
    assert config["base_fingerprint"] == written.base_fingerprint and config["bottleneck"] == 8
    tensors = safetensors.torch.load_file(str(tmp_path / "babble" / "adapter_model.safetensors"))
    assert sorted(tensors) == sorted(written.tensors) and all(torch.equal(tensors[k], written.tensors[k]) for k in tensors)
    again = export_adapter(run_dir, "babble", tmp_path / "babble")  # replaces the earlier export whole
    assert load_adapter(tmp_path / "babble").digest() == again.digest() == written.digest()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".babble")] == []
    (tmp_path / "not-a-folder").write_text("x")
    with pytest.raises(CasrError, match="exists and is not an adapter folder"):
        export_adapter(run_dir, "babble", tmp_path / "not-a-folder")


def test_version_1_pt_files_still_load(tmp_path):
    _, run_dir = _trained_run(tmp_path)
    written = export_adapter(run_dir, "babble", tmp_path / "babble")
    legacy = {"format": "casr-adapter", "version": 1, "task": "babble", "d_model": written.d_model,
              "bottleneck": written.bottleneck, "num_layers": written.num_layers,
              "base_fingerprint": written.base_fingerprint, "source": written.source, "tensors": written.tensors}
    torch.save(legacy, tmp_path / "babble.pt")
    assert load_adapter(tmp_path / "babble.pt").digest() == written.digest()


def test_damaged_adapter_folders_are_refused_in_one_line(tmp_path):
    _, run_dir = _trained_run(tmp_path)
    folder = tmp_path / "babble"
    export_adapter(run_dir, "babble", folder)
    weights = (folder / "adapter_model.safetensors").read_bytes()
    (folder / "adapter_model.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(CasrError, match="not a readable safetensors file"):
        load_adapter(folder)
    (folder / "adapter_model.safetensors").write_bytes(weights)
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "num_layers": 3}))
    with pytest.raises(CasrError, match="do not match adapter_config.json"):
        load_adapter(folder)
    (folder / "adapter_config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "task"}))
    with pytest.raises(CasrError, match="missing field"):
        load_adapter(folder)
    (folder / "adapter_config.json").unlink()
    with pytest.raises(CasrError, match="adapter_config.json is missing"):
        load_adapter(folder)
