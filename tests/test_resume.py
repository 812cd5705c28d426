"""A run killed with SIGKILL in the middle of a later task resumes to the uninterrupted result."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from click.testing import CliRunner
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from continual_asr.cli import main
from continual_asr.folders import RUN_LOCK, run_folder_lock
from continual_asr.reporting import RUN_FILES
from continual_asr.training.epoch_file import EpochFile
from conftest import copy_tiny_cache


def _command(out, cache):
    return [sys.executable, "-m", "continual_asr", "run", "--stream", "tiny", "--preset", "tiny",
            "--strategy", "adapter-fusion", "--out", str(out), "--cache-dir", str(cache), "--quiet"]


def _run_here(out, cache):
    """The same run in this process: only the killed one needs a process of its own (a process
    start, mostly importing torch and avalanche, costs several seconds)."""
    result = CliRunner().invoke(main, _command(out, cache)[3:])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def _rows(out):
    try:
        return json.loads((out / "results.json").read_text())["wer_matrix"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return []


def test_sigkill_then_rerun_gives_the_uninterrupted_matrix(tmp_path, tiny_cache):
    cache = tiny_cache
    reference = tmp_path / "reference"
    _run_here(reference, cache)
    expected = json.loads((reference / "results.json").read_text())

    out = tmp_path / "killed"
    process = subprocess.Popen(_command(out, cache), start_new_session=True)
    deadline = time.time() + 300
    while len(_rows(out)) < 1 and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    # The first step's plots and report, then the second task (its adapter comes from the reference
    # run's cache; composing it takes seconds): half a second lands well before the second row.
    time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    interrupted = json.loads((out / "results.json").read_text())
    assert len(interrupted["wer_matrix"]) == 1 and not interrupted["complete"]

    _run_here(out, cache)
    resumed = json.loads((out / "results.json").read_text())
    assert resumed["complete"]
    assert resumed["wer_matrix"] == expected["wer_matrix"]
    assert resumed["base_wer"] == expected["base_wer"]
    assert resumed["summary"]["final_mean_wer"] == expected["summary"]["final_mean_wer"]
    for name in RUN_FILES:
        assert (out / name).stat().st_size > 0, name
    assert (out / "wer_matrix.csv").read_text() == (reference / "wer_matrix.csv").read_text()
    events = EventAccumulator(str(out))  # both processes' event files: each step logged once, at its step
    events.Reload()
    assert sorted(e.step for e in events.Scalars("AWER/eval_phase/test_stream")) == [0, 1, 2]

    # Archived without its checkpoint, the finished run is read back, not trained again.
    archived = tmp_path / "archive"
    assert CliRunner().invoke(main, ["archive", str(out), str(archived)]).exit_code == 0
    assert not (archived / "checkpoint.pt").exists()
    rerun = _run_here(archived, cache)
    assert not (archived / "checkpoint.pt").exists()
    assert "already holds the finished run" in (archived / "run.log").read_text()
    again = json.loads((archived / "results.json").read_text())
    assert again["wer_matrix"] == expected["wer_matrix"] and again["steps"] == resumed["steps"], rerun.output


def test_a_second_run_into_a_folder_being_written_is_refused_in_one_line(tmp_path, tiny_cache):
    out = tmp_path / "busy"
    with run_folder_lock(out):  # as a run in another terminal holds it (flock: per open file, so this process too)
        second = CliRunner().invoke(main, _command(out, tiny_cache)[3:])
    assert second.exit_code != 0
    message = second.output.strip()
    assert "another casr process is writing this run folder" in message and str(out) in message
    assert len(message.splitlines()) == 1, message
    assert {p.name for p in out.iterdir()} <= {RUN_LOCK, "run.log"}  # no results, checkpoint or events


def test_an_older_run_without_a_config_field_resumes_only_as_that_fields_default():
    from continual_asr.config import make_config
    from continual_asr.registry import get_strategy
    from continual_asr.run_state import same_run_value as _same_run_value

    read = get_strategy("finetune").defaults()
    older = make_config("tiny").to_dict()
    del older["head"]  # a run from before heads were selectable ran a CTC head
    assert _same_run_value("config", older, make_config("tiny").to_dict(), read)
    assert not _same_run_value("config", older, make_config("tiny", {"head": "rnnt"}).to_dict(), read)
    changed_threads = make_config("tiny", {"threads": 1}).to_dict()
    assert _same_run_value("config", make_config("tiny").to_dict(), changed_threads, read)  # how it runs, not what


def test_the_refusal_of_another_config_names_the_fields_that_differ():
    """A default that changed since a run began (joint's epochs, 6 until 2026-12-06) must say why
    the run folder is refused, not only that it is."""
    from continual_asr.registry import get_strategy
    from continual_asr.run_state import config_changes

    joint = get_strategy("joint")
    config, options = joint.settings("default", {})
    now = {**config.to_dict(), **options.to_dict()}
    before = {**now, "finetune_epochs": 6, "threads": 1}  # threads: how it ran, not what
    assert config_changes(before, now, joint.defaults()) == ["finetune_epochs 6 there, 24 now"]
    assert config_changes(now, now, joint.defaults()) == []


def test_a_transducer_setting_changes_transducer_runs_only():
    """A CTC run never reads the transducer's fields: a new default of one (the blank penalty's,
    2026-12-02) neither stops it resuming nor splits it from newer runs in a comparison."""
    from continual_asr.config import make_config
    from continual_asr.registry import get_strategy
    from continual_asr.reporting.compare import comparable_config
    from continual_asr.run_state import same_run_value

    read = get_strategy("finetune").defaults()
    for head in ("ctc", "hat"):
        before = make_config("tiny", {"head": head, "rnnt_blank_penalty": 0.0}).to_dict()
        now = make_config("tiny", {"head": head, "rnnt_blank_penalty": 0.5}).to_dict()
        assert same_run_value("config", before, now, read) == (head == "ctc")
        compared = [comparable_config({"strategy": "finetune", "config": c}) for c in (before, now)]
        assert (compared[0] == compared[1]) == (head == "ctc")


def test_another_strategys_option_does_not_make_a_run_another_run():
    from continual_asr.registry import get_strategy
    from continual_asr.run_state import same_run_value

    fusion = get_strategy("adapter-fusion")

    def recorded(**values) -> dict:  # results.json's config: RunConfig's fields and the options, flat
        config, options = fusion.settings("tiny", values)
        return {**config.to_dict(), **options.to_dict()}

    before = recorded(fusion_layernorm=True)  # e.g. a default that changed since
    now = recorded(fusion_layernorm=False)
    assert same_run_value("config", before, now, get_strategy("adapter-oracle").defaults())
    assert same_run_value("config", before, now, get_strategy("finetune").defaults())
    assert not same_run_value("config", before, now, fusion.defaults())


class _Interrupted(Exception):
    pass


def test_an_interrupted_pretraining_resumes_to_the_uninterrupted_base_model(tmp_path, tiny_cache_template,
                                                                           monkeypatch, caplog):
    """HAT pretraining (CTC's 4 epochs, then HAT's warm-up epoch and 3 more) stopped at the end of
    its warm-up phase, then again inside its second phase, resumes each time from the last
    epoch's file and ends with the weights of a pretraining never stopped."""
    import torch

    from continual_asr.config import make_config
    from continual_asr.data.streamdata import prepare_stream_data
    from continual_asr.stream import load_stream
    from continual_asr.training import pretrain

    config = make_config("tiny", {"pretrain_epochs": 4, "head": "hat", "transducer_epochs": 4})

    def data_in(folder):
        cache = copy_tiny_cache(tiny_cache_template, folder)
        return prepare_stream_data(load_stream("tiny"), config, cache, progress=False), cache

    def pretrain_stopping(data, cache, after_epochs):
        with monkeypatch.context() as patch:
            patch.setattr(EpochFile, "write", _stopping_after(after_epochs, _Interrupted))
            with pytest.raises(_Interrupted):
                pretrain.pretrain_base_model(data, config, 0, cache, torch.device("cpu"), progress=False)
        assert len(list((cache / "base_models").glob("*.partial"))) == 1

    def pretrain_all(data, cache):
        return pretrain.pretrain_base_model(data, config, 0, cache, torch.device("cpu"), progress=False)

    reference, _ = pretrain_all(*data_in(tmp_path / "reference"))
    data, cache = data_in(tmp_path / "stopped")
    pretrain_stopping(data, cache, 5)  # CTC's 4 epochs and HAT's warm-up: the CTC model is cached, HAT's partial
    with caplog.at_level("INFO", logger="continual_asr"):
        pretrain_stopping(data, cache, 1)  # the first epoch of HAT's second phase
        assert "resuming after epoch 1 of 4" in caplog.text
        caplog.clear()
        resumed, info = pretrain_all(data, cache)
        assert "resuming after epoch 2 of 4" in caplog.text
    assert not list((cache / "base_models").glob("*.partial"))  # gone once the entry is published
    assert not info["cached"] and info["seconds"] > 0
    resumed, reference = resumed.state_dict(), reference.state_dict()
    assert resumed.keys() == reference.keys()
    assert all(torch.equal(resumed[name], reference[name]) for name in reference)


def _stopping_after(epochs: int, error: type[BaseException]):
    """EpochFile.write that raises ``error`` once it has written ``epochs`` epoch files."""
    calls, write = [], EpochFile.write

    def write_then_stop(self, strategy):
        write(self, strategy)
        calls.append(1)
        if len(calls) == epochs:
            raise error
    return write_then_stop


def test_an_interrupted_adapter_extraction_resumes_after_its_last_epoch(tmp_path, tiny_cache_template, monkeypatch):
    """Ctrl-C after epoch 4 of the second task's adapter (10 epochs each at the tiny preset): the
    rerun resumes after it and ends with the adapters and WER matrix of a run never stopped."""
    import torch

    def run(name, cache):
        out = tmp_path / name / "run"
        return CliRunner().invoke(main, ["run", "--stream", "tiny", "--preset", "tiny", "--strategy", "adapter-oracle",
                                         "--out", str(out), "--cache-dir", str(cache), "--quiet"]), out

    def adapters(cache):
        return {path.name: torch.load(path, weights_only=True)["layers"] for path in (cache / "adapters").glob("*.pt")}

    reference_cache = copy_tiny_cache(tiny_cache_template, tmp_path / "reference")
    result, reference = run("reference", reference_cache)
    assert result.exit_code == 0, result.output
    cache = copy_tiny_cache(tiny_cache_template, tmp_path / "stopped")
    with monkeypatch.context() as patch:
        patch.setattr(EpochFile, "write", _stopping_after(14, KeyboardInterrupt))
        result, out = run("stopped", cache)
    assert result.exit_code == 130, result.output
    [partial] = (cache / "adapters").glob("*.partial")
    assert torch.load(partial, weights_only=True)["epoch"] == 4
    result, out = run("stopped", cache)
    assert result.exit_code == 0, result.output
    assert "resuming after epoch 4 of 10" in (out / "run.log").read_text()
    assert not list((cache / "adapters").glob("*.partial"))  # gone once the adapter is cached
    assert _rows(out) == _rows(reference)
    resumed, expected = adapters(cache), adapters(reference_cache)
    assert resumed.keys() == expected.keys() and len(expected) >= 2
    for name, layers in expected.items():
        assert all(torch.equal(resumed[name][i][key], layer[key]) for i, layer in enumerate(layers) for key in layer)
