"""casr's base model as a file (base_model: casr:FILE): exported once, loaded by runs with no cache of it."""

import dataclasses
import json
import re
import shutil
from importlib import resources
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from continual_asr.cli import main
from continual_asr.config import make_config
from continual_asr.data.prepare import task_sentences
from continual_asr.data.streamdata import _counts, _stream_tokenizer, prepare_stream_data
from continual_asr.errors import ConfigError
from continual_asr.stream import load_stream
from continual_asr.model import build_model
from continual_asr.sweep import load_plan
from continual_asr.training.base_file import (SHAPE_FIELDS, load_base_file, read_base_file, tokenizer_digest,
                                              weights_digest, with_reference_base)


def export(cache, path) -> str:
    result = CliRunner().invoke(main, ["pretrain", "--stream", "tiny", "--preset", "tiny", "--cache-dir", str(cache),
                                       "--export", str(path), "--quiet"])
    assert result.exit_code == 0, result.output
    return result.output.split("(weights ")[1][:16]


def test_pretrain_prints_the_base_models_wer_on_the_split_asked_for(tiny_cache):
    def printed(*split) -> str:
        result = CliRunner().invoke(main, ["pretrain", "--stream", "tiny", "--preset", "tiny", "--cache-dir",
                                           str(tiny_cache), "--quiet", *split])
        assert result.exit_code == 0, result.output
        return result.output.splitlines()[-1]

    test, dev = printed(), printed("--split", "dev")
    assert test.startswith("base model test WER %: us-clean ") and dev.startswith("base model dev WER %: us-clean ")
    assert test != dev  # other utterances


def test_a_run_starts_from_the_exported_base_model_without_pretraining_one(tiny_cache, tmp_path):
    digest = export(tiny_cache, tmp_path / "base.pt")
    shutil.rmtree(tiny_cache / "base_models")  # as on a machine that never pretrained it
    result = CliRunner().invoke(main, [
        "run", "--stream", "tiny", "--preset", "tiny", "--strategy", "adapter-avg", "--cache-dir", str(tiny_cache),
        "--out", str(tmp_path / "run"), "--quiet", "--set", f"base_model=casr:{tmp_path / 'base.pt'}",
        "--set", "adapter_epochs=1", "--set", "fusion_epochs=1"])
    assert result.exit_code == 0, result.output
    base = json.loads((tmp_path / "run" / "results.json").read_text())["base_model"]
    assert (base["weights"], base["source"], base["seconds"]) == (digest, f"casr:{tmp_path / 'base.pt'}", 0.0)
    assert not (tiny_cache / "base_models").exists()

    # The file moved (into a repository, onto another machine): the same weights, so the same run,
    # read back rather than trained again; a file of other weights under that path is another run.
    moved = tmp_path / "elsewhere" / "base.pt"
    moved.parent.mkdir()
    shutil.move(tmp_path / "base.pt", moved)
    again = ["run", "--stream", "tiny", "--preset", "tiny", "--strategy", "adapter-avg", "--cache-dir",
             str(tiny_cache), "--out", str(tmp_path / "run"), "--set", f"base_model=casr:{moved}",
             "--set", "adapter_epochs=1", "--set", "fusion_epochs=1"]
    result = CliRunner().invoke(main, again)
    assert result.exit_code == 0, result.output
    assert "already holds the finished run" in (tmp_path / "run" / "run.log").read_text()
    torch.save({**torch.load(moved, weights_only=True), "weights": "0" * 16}, moved)
    result = CliRunner().invoke(main, again)
    assert result.exit_code != 0 and f"started from base model weights {digest}; {moved} holds 0000" in result.output


def test_reference_is_the_base_model_file_beside_the_streams_yaml(tiny_cache, tmp_path):
    """base_model=reference: NAME.base.pt beside the stream's YAML, or pretraining where there is
    none; a run that pretrained the very weights the file holds is the same run as one from it."""
    streams = resources.files("continual_asr.stream_files")
    folder = tmp_path / "streams"
    folder.mkdir()
    for name in ("tiny.yaml", "digits.txt"):
        (folder / name).write_text(streams.joinpath(name).read_text())
    args = ["run", "--stream", str(folder / "tiny.yaml"), "--preset", "tiny", "--strategy", "adapter-avg", "--quiet",
            "--cache-dir", str(tiny_cache), "--set", "base_model=reference", "--set", "adapter_epochs=1",
            "--set", "fusion_epochs=1"]

    def run(out: str) -> dict:
        result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / out)])
        assert result.exit_code == 0, result.output
        return json.loads((tmp_path / out / "results.json").read_text())

    pretrained = run("pretrained")
    assert pretrained["config"]["base_model"] == ""
    assert "stream tiny has no reference base model (tiny.base.pt): pretraining one" in (
        tmp_path / "pretrained" / "run.log").read_text()
    digest = export(tiny_cache, folder / "tiny.base.pt")  # the cached base model: the same weights
    assert digest == pretrained["base_model"]["weights"]
    run("pretrained")
    assert "already holds the finished run" in (tmp_path / "pretrained" / "run.log").read_text()
    from_file = run("from-file")
    assert from_file["config"]["base_model"] == f"casr:{folder / 'tiny.base.pt'}"
    assert (from_file["base_model"]["weights"], from_file["base_model"]["seconds"]) == (digest, 0.0)
    assert from_file["wer_matrix"] == pretrained["wer_matrix"]  # the same weights, the same run


def test_a_base_model_file_that_does_not_fit_the_run_is_one_line_naming_it(tiny_cache, tmp_path):
    path = tmp_path / "base.pt"
    export(tiny_cache, path)
    config = make_config("tiny")
    data = prepare_stream_data(load_stream("tiny"), config, tiny_cache, progress=False)
    model, info = load_base_file(path, data, config)
    assert info["source"] == f"casr:{path}"
    with pytest.raises(ConfigError, match=r"base\.pt: its model has d_model=32, the run's config 48"):
        load_base_file(path, data, dataclasses.replace(config, d_model=48))
    saved = torch.load(path, weights_only=True)
    # A file from before subsampling_factor existed has the 4x front end every model had then.
    older = {**saved, "model_config": {k: v for k, v in saved["model_config"].items() if k != "subsampling_factor"}}
    torch.save(older, tmp_path / "older.pt")
    load_base_file(tmp_path / "older.pt", data, config)
    with pytest.raises(ConfigError, match=r"older\.pt: its model has subsampling_factor=4, the run's config 8"):
        load_base_file(tmp_path / "older.pt", data, dataclasses.replace(config, subsampling_factor=8))
    # The transducer's fields mean nothing to a CTC model: a CTC run with other values loads it.
    load_base_file(path, data, dataclasses.replace(config, rnnt_pred_dim=8, rnnt_lattice="monotonic"))
    # A transducer's lattice is part of what its weights mean; a file from before the field was regular.
    recorded = {k: v for k, v in older["model_config"].items() if k != "rnnt_lattice"}
    hat = {**older, "model_config": {**recorded, "head": "hat"}}
    torch.save(hat, tmp_path / "hat.pt")
    with pytest.raises(ConfigError, match=r"hat\.pt: its model has rnnt_lattice='regular', the run's config 'monotonic'"):
        load_base_file(tmp_path / "hat.pt", data, dataclasses.replace(config, head="hat", rnnt_lattice="monotonic"))
    torch.save({**saved, "tokenizer": "0" * 16}, tmp_path / "other-vocabulary.pt")
    with pytest.raises(ConfigError, match="other-vocabulary.pt: pretrained with another vocabulary"):
        load_base_file(tmp_path / "other-vocabulary.pt", data, config)
    torch.save({"state_dict": saved["state_dict"]}, tmp_path / "bare.pt")  # a cache entry, a run's checkpoint
    with pytest.raises(ConfigError, match="bare.pt: not a casr base model"):
        load_base_file(tmp_path / "bare.pt", data, config)
    (tmp_path / "junk.pt").write_text("not torch")
    with pytest.raises(ConfigError, match="junk.pt: not a readable torch file"):
        load_base_file(tmp_path / "junk.pt", data, config)


@pytest.mark.parametrize("value, message", [
    ("casr:missing.pt", "base_model casr:missing.pt: no such file"),
    ("casr:", "config field 'base_model' must be empty, reference (the stream's NAME.base.pt), hf:PATH"),
    ("base.pt", "config field 'base_model' must be empty, reference (the stream's NAME.base.pt), hf:PATH"),
])
def test_a_wrong_base_model_value_stops_before_any_work(tmp_path, value, message):
    result = CliRunner().invoke(main, ["run", "--stream", "tiny", "--preset", "tiny", "--strategy", "finetune",
                                       "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "run"),
                                       "--set", f"base_model={value}"])
    assert result.exit_code == 2 and message in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "cache").exists()


def test_the_shipped_base_model_fits_the_default_run(tmp_path):
    """make run loads streams/accents-then-noise.base.pt: it must load into today's model at the
    default fields, hold the weights its digest names, and share the stream's vocabulary (the
    tokenizer is trained on the base task's planned sentences, so no synthesis is needed to check)."""
    root = Path(__file__).resolve().parents[1]
    shipped = read_base_file(root / "streams" / "accents-then-noise.base.pt")
    config = make_config()
    assert shipped["model_config"] == config.subset(SHAPE_FIELDS)
    model = build_model(config, config.vocab_size)
    model.load_state_dict(shipped["state_dict"])  # strict: every tensor of today's model, no other
    assert weights_digest(model) == shipped["weights"]
    makefile = (root / "Makefile").read_text()
    assert re.search(rf"weights {shipped['weights']}\b", makefile), "the Makefile names another digest"

    stream = load_stream("accents-then-noise")
    sentences = task_sentences(stream.base, _counts(stream.base, config))["train"]
    assert tokenizer_digest(_stream_tokenizer(sentences, config, tmp_path)) == shipped["tokenizer"]


def test_the_studies_sweeps_start_from_the_default_streams_reference_base_model(tmp_path):
    """paper.yaml, baselines.yaml and recipe.yaml name base_model: reference, which on the default
    stream is the shipped file (and so the README's table's base model on any machine)."""
    root = Path(__file__).resolve().parents[1]
    shipped = f"casr:{root / 'streams' / 'accents-then-noise.base.pt'}"
    for name in ("paper", "baselines", "recipe"):
        stream_name, _, plan = load_plan(root / "experiments" / f"{name}.yaml", tmp_path / name, seeds=[0])
        assert {run.config.base_model for run in plan} == {"reference"}, name
        assert with_reference_base(plan[0].config, load_stream(stream_name)).base_model == shipped
    tiny = make_config("tiny", {"base_model": "reference"})
    assert with_reference_base(tiny, load_stream("tiny")).base_model == ""  # no streams/tiny.base.pt: pretrain
