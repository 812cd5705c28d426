"""Manifest tasks at the data layer: formats, rates and channels, caching, and every kind of bad data."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from continual_asr.config import make_config
from continual_asr.data.conditions import Condition
from continual_asr.data.manifest import read_manifest
from continual_asr.data.splits import load_split
from continual_asr.data.streamdata import prepare_stream_data
from continual_asr.errors import DataError
from continual_asr.stream import TaskSpec, load_stream

BASE_TEXTS = ["one two three", "four five six", "seven eight nine", "nine eight one"]  # no digits, no 'z'


def tone(seconds: float = 0.5, rate: int = 16000, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A noisy tone: enough for features, deterministic."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    mono = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)
    return mono if channels == 1 else np.stack([mono, 0.5 * mono], axis=1)


def write(path: Path, seconds: float = 0.5, rate: int = 16000, channels: int = 1, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(seconds, rate, channels, seed), rate)
    return path


def jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def manifest_task(manifest: Path, condition: Condition = Condition()) -> TaskSpec:
    return TaskSpec(name="t", voices=(), condition=condition, train=0, test=0, train_manifest=str(manifest),
                    test_manifest=str(manifest))


def load(manifest: Path, cache: Path, condition: Condition = Condition(), max_seconds: float = 20.0, limit: int = 0):
    return load_split(manifest_task(manifest, condition), "test", manifest, condition, n_mels=80, limit=limit,
                      max_seconds=max_seconds, cache_dir=cache, progress=False)


# --- formats -----------------------------------------------------------------------------------


def test_any_rate_and_channel_count_becomes_16k_mono(tmp_path):
    write(tmp_path / "a" / "x.flac", 1.0, rate=8000, channels=2)
    write(tmp_path / "a" / "y.wav", 1.0, rate=44100)
    write(tmp_path / "z.wav", 1.0)
    manifest = jsonl(tmp_path / "m.jsonl", [
        {"audio_filepath": "a/x.flac", "text": "One, TWO!", "duration": 1.0},
        {"audio_filepath": "a/y.wav", "text": "three", "duration": 1.0},
        {"audio_filepath": str(tmp_path / "z.wav"), "text": "four"},  # absolute, no duration
    ])
    split = load(manifest, tmp_path / "cache")
    assert not split.problems
    assert split.texts == ["one two", "three", "four"]  # the one normalisation rule
    assert split.seconds == [1.0, 1.0, 1.0] and split.lines == [1, 2, 3]
    # 1 s at 16 kHz: 98 frames of 25 ms every 10 ms, whatever the file's rate.
    assert [f.shape for f in split.features] == [torch.Size([98, 80])] * 3


def test_csv_and_common_voice_style_tsv(tmp_path):
    write(tmp_path / "clips" / "a.wav")
    (tmp_path / "m.csv").write_text('path,transcript,duration\nclips/a.wav,"Hello, world",0.5\n\nclips/a.wav,bye,\n')
    rows, problems = read_manifest(tmp_path / "m.csv")
    assert not problems and [(r.line, r.text, r.duration) for r in rows] == [(2, "hello world", 0.5), (4, "bye", None)]
    (tmp_path / "m.tsv").write_text('client_id\tpath\tsentence\nx\tclips/a.wav\tHe said "hi" there\n')
    rows, problems = read_manifest(tmp_path / "m.tsv")
    assert not problems and rows[0].text == "he said hi there" and rows[0].audio == tmp_path / "clips" / "a.wav"


def test_a_cap_reads_only_the_first_lines(tmp_path):
    write(tmp_path / "a.wav")
    manifest = jsonl(tmp_path / "m.jsonl", [{"audio_filepath": "a.wav", "text": f"w{i}"} for i in range(5)] + ["junk"])
    split = load(manifest, tmp_path / "cache", limit=3)
    assert split.texts == ["w0", "w1", "w2"] and not split.problems


# --- caching -----------------------------------------------------------------------------------


def test_cache_is_reused_and_follows_edits_to_the_manifest_and_the_audio(tmp_path):
    audio = write(tmp_path / "a.wav", seed=1)
    manifest = jsonl(tmp_path / "m.jsonl", [{"audio_filepath": "a.wav", "text": "one"}])
    cache = tmp_path / "cache"
    first = load(manifest, cache)
    def entries() -> list[Path]:  # without the hidden lock files beside them
        return [p for p in (cache / "features").iterdir() if not p.name.startswith(".")]
    assert len(entries()) == 1 and not any(".tmp" in p.name for p in (cache / "features").iterdir())
    assert load(manifest, cache).digest == first.digest and len(entries()) == 1

    jsonl(manifest, [{"audio_filepath": "a.wav", "text": "two"}])
    assert load(manifest, cache).texts == ["two"]

    write(audio, 0.8, seed=2)  # replaced: another size and modification time
    os.utime(audio, ns=(audio.stat().st_mtime_ns + 10**9,) * 2)
    replaced = load(manifest, cache)
    assert replaced.features[0].shape[0] != first.features[0].shape[0] and replaced.digest != first.digest


def test_a_condition_on_recorded_audio_is_deterministic(tmp_path):
    write(tmp_path / "a.wav", 1.0)
    manifest = jsonl(tmp_path / "m.jsonl", [{"audio_filepath": "a.wav", "text": "one"}])
    noisy = Condition(noise="white", snr_db=0.0)
    one, two = load(manifest, tmp_path / "c1", noisy), load(manifest, tmp_path / "c2", noisy)
    clean = load(manifest, tmp_path / "c1")
    assert torch.equal(one.features[0], two.features[0])
    assert not torch.equal(one.features[0], clean.features[0])


def test_features_computed_in_other_processes_are_the_same(tmp_path, monkeypatch):
    """Chunks of a split in two worker processes: the same features, seconds, lines, problems and
    digest as one process, the noise drawn per utterance included."""
    from continual_asr.data import workers

    rows = [{"audio_filepath": str(write(tmp_path / f"{i}.wav", 0.3 + 0.05 * i, seed=i)), "text": BASE_TEXTS[i % 4]}
            for i in range(12)]
    rows[3]["audio_filepath"], rows[8]["text"] = "gone.wav", ""  # a missing file, an empty transcript
    manifest = jsonl(tmp_path / "m.jsonl", rows)
    noisy = Condition(noise="white", snr_db=5.0)
    serial = load(manifest, tmp_path / "c1", noisy)
    monkeypatch.setattr(workers, "MIN_PARALLEL", 4)  # so these 12 rows go to the workers
    with workers.DataWorkers(2) as pool:
        parallel = load_split(manifest_task(manifest, noisy), "test", manifest, noisy, n_mels=80, limit=0,
                              max_seconds=20.0, cache_dir=tmp_path / "c2", progress=False, workers=pool)
        assert pool._pool is not None  # the workers did compute them
    assert len(serial.texts) == 10 and [p.line for p in serial.problems] == [4, 9]
    assert all(torch.equal(a, b) for a, b in zip(serial.features, parallel.features))
    assert (serial.texts, serial.seconds, serial.lines, serial.problems, serial.digest) == \
           (parallel.texts, parallel.seconds, parallel.lines, parallel.problems, parallel.digest)


def test_a_dead_worker_is_one_line_naming_the_way_out(monkeypatch):
    from continual_asr.data import workers
    from worker_jobs import die, indices

    monkeypatch.setattr(workers, "MIN_PARALLEL", 4)
    with workers.DataWorkers(2) as pool:
        with pytest.raises(DataError, match=r"worker process died .*--set synthesis_processes=1$"):
            pool.map(die, list(range(8)))
        assert pool.map(indices, [None] * 40) == list(range(40))  # a new pool starts after a dead one
        assert pool._pool is not None


# --- bad data ----------------------------------------------------------------------------------


def _stream(tmp_path: Path, bad_test_line, audio_setup=None, config_overrides=None):
    """A manifest stream whose base test manifest has ``bad_test_line`` as its line 2."""
    data = tmp_path / "data"
    for i, text in enumerate(BASE_TEXTS):
        write(data / f"b{i}.wav", seed=i)
    good = [{"audio_filepath": f"b{i}.wav", "text": t, "duration": 0.5} for i, t in enumerate(BASE_TEXTS)]
    jsonl(data / "base.train.jsonl", good)
    jsonl(data / "task.train.jsonl", good[:2])
    jsonl(data / "task.test.jsonl", good[:2])
    jsonl(data / "base.test.jsonl", [good[0], bad_test_line])
    if audio_setup:
        audio_setup(data)
    (tmp_path / "s.yaml").write_text(
        "name: s\nbase: {name: base, train: data/base.train.jsonl, test: data/base.test.jsonl}\n"
        "tasks: [{name: task, train: data/task.train.jsonl, test: data/task.test.jsonl}]\n"
        "zero_shot: {name: zero, test: data/task.test.jsonl}\n")
    return load_stream(str(tmp_path / "s.yaml")), make_config("tiny", config_overrides or {})


def _corrupt(data):
    (data / "bad.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk" * 4)


def _empty(data):
    (data / "bad.wav").write_bytes(b"")


def _zero_length(data):
    sf.write(data / "bad.wav", np.zeros(0, dtype=np.float32), 16000)


def _long(data):
    write(data / "bad.wav", 2.0)


BAD = {"audio_filepath": "bad.wav", "text": "one two"}
CASES = {
    "corrupt audio": (BAD, _corrupt, "audio file bad.wav is unreadable"),
    "empty file": (BAD, _empty, "audio file bad.wav is empty (0 bytes)"),
    "zero-length audio": (BAD, _zero_length, "audio file bad.wav has no samples"),
    "missing file": ({"audio_filepath": "gone.wav", "text": "one"}, None, "audio file gone.wav not found"),
    "empty transcript": ({"audio_filepath": "b1.wav", "text": "  "}, None, "empty transcript"),
    "transcript of punctuation": ({"audio_filepath": "b1.wav", "text": "?!"}, None,
                                  "empty transcript after normalisation ('?!')"),
    "other script": ({"audio_filepath": "b1.wav", "text": "one дом"}, None,
                     "characters outside the tokenizer's alphabet (a-z, 0-9, '): 'д' 'м' 'о'"),
    "not in the tokenizer": ({"audio_filepath": "b1.wav", "text": "route 66"}, None,
                             "characters the tokenizer cannot spell: '6'"),
    "not JSON": ('{"audio_filepath": "b1.wav", text: one}', None, "not valid JSON"),
    "not an object": ('["b1.wav", "one"]', None, "not a JSON object (got list)"),
    "missing text": ({"audio_filepath": "b1.wav"}, None, "missing field 'text'"),
    "missing path": ({"text": "one"}, None, "missing field 'audio_filepath'"),
    "bad duration value": ({"audio_filepath": "b1.wav", "text": "one", "duration": "long"}, None,
                           "field 'duration' must be a positive number"),
    "duration far off": ({"audio_filepath": "b1.wav", "text": "one", "duration": 9.0}, None,
                         "duration 9 s in the manifest, but b1.wav lasts 0.50 s"),
    "too long": (BAD, _long, "bad.wav lasts 2.0 s, longer than max_utterance_seconds=1"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_data_is_one_line_naming_file_line_and_problem(tmp_path, monkeypatch, case):
    line, setup, message = CASES[case]
    stream, config = _stream(tmp_path, line, setup, {"max_utterance_seconds": 1.0})
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as error:
        prepare_stream_data(stream, config, tmp_path / "cache", progress=False)
    text = str(error.value)
    assert text.startswith("data/base.test.jsonl:2: ") and message in text and "\n" not in text, text


def test_skip_bad_leaves_bad_utterances_out_and_counts_them(tmp_path):
    stream, config = _stream(tmp_path, {"audio_filepath": "gone.wav", "text": "one"})
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("continual_asr")
    logger.addHandler(handler)
    try:
        data = prepare_stream_data(stream, config, tmp_path / "cache", progress=False, skip_bad=True)
    finally:
        logger.removeHandler(handler)
    assert len(data.test["base"].texts) == 1 and len(data.test["base"].problems) == 1
    assert any("base/test: skipped 1 bad utterance(s), 1 left" in r.getMessage() for r in records)


def test_a_later_tasks_bad_training_data_is_deferred_but_a_bad_test_set_is_not(tmp_path):
    stream, config = _stream(tmp_path, {"audio_filepath": "b1.wav", "text": "four five"})
    (tmp_path / "data" / "task.train.jsonl").write_text('{"audio_filepath": "b0.wav", "text": "one"}\nnot json\n'
                                                        '{"audio_filepath": "b1.wav", "text": "four five"}\n')
    data = prepare_stream_data(stream, config, tmp_path / "cache", progress=False)
    assert set(data.bad_training) == {"task"} and data.trainable_tasks() == ()
    assert len(list(data.benchmark().train_stream)) == 0 and len(list(data.benchmark().test_stream)) == 3
    error = str(data.stop_before(0, tmp_path / "out"))
    assert "task.train.jsonl:2: not valid JSON" in error and "stopped before task 1 (task)" in error
    # With one good line, nothing is left to hold out as dev: the training data's error, now.
    (tmp_path / "data" / "task.train.jsonl").write_text('{"audio_filepath": "b0.wav", "text": "one"}\nnot json\n')
    with pytest.raises(DataError, match=r"task.train.jsonl:2: not valid JSON"):
        prepare_stream_data(stream, config, tmp_path / "cache", progress=False)

    (tmp_path / "data" / "task.test.jsonl").write_text("not json\n")
    with pytest.raises(DataError, match=r"task.test.jsonl:1: not valid JSON"):
        prepare_stream_data(stream, config, tmp_path / "cache", progress=False)


def test_missing_or_headerless_manifests(tmp_path):
    rows, problems = read_manifest(tmp_path / "absent.jsonl")
    assert not rows and str(problems[0]).endswith("absent.jsonl: manifest not found")
    (tmp_path / "m.csv").write_text("file,words\na.wav,one\n")
    rows, problems = read_manifest(tmp_path / "m.csv")
    assert str(problems[0]).endswith("m.csv:1: header has no text column (one of: text, transcript, sentence, "
                                     "transcription)")
    (tmp_path / "e.jsonl").write_text("\n\n")
    assert str(read_manifest(tmp_path / "e.jsonl")[1][0]).endswith("e.jsonl: manifest has no utterances")


def test_a_too_short_clip_is_bad_data(tmp_path):
    write(tmp_path / "a.wav", 0.01)
    split = load(jsonl(tmp_path / "m.jsonl", [{"audio_filepath": "a.wav", "text": "one"}]), tmp_path / "cache")
    assert not split.texts and "too short for one 25 ms feature frame" in str(split.problems[0])


def test_a_resumed_run_refuses_changed_test_data_or_finished_training_data(tmp_path):
    stream, config = _stream(tmp_path, {"audio_filepath": "b1.wav", "text": "four five"})
    recorded = prepare_stream_data(stream, config, tmp_path / "cache", progress=False).identity()
    jsonl(tmp_path / "data" / "task.train.jsonl", [{"audio_filepath": "b3.wav", "text": "nine"},
                                                    {"audio_filepath": "b2.wav", "text": "nine nine"}])
    data = prepare_stream_data(stream, config, tmp_path / "cache", progress=False)
    data.check_unchanged(recorded, finished=0)  # the task is not trained yet: its new data is what it gets
    with pytest.raises(DataError, match="the training data of task task changed since this run began"):
        data.check_unchanged(recorded, finished=1)
    jsonl(tmp_path / "data" / "task.test.jsonl", [{"audio_filepath": "b3.wav", "text": "nine"}])
    data = prepare_stream_data(stream, config, tmp_path / "cache", progress=False)
    with pytest.raises(DataError, match="the test data of task task changed"):
        data.check_unchanged(recorded, finished=0)


def test_the_tokenizer_spells_every_letter_even_from_a_small_base(tmp_path):
    stream, config = _stream(tmp_path, {"audio_filepath": "b1.wav", "text": "zebra quiz jazz"})
    data = prepare_stream_data(stream, config, tmp_path / "cache", progress=False)
    assert data.test["base"].texts[1] == "zebra quiz jazz" and not data.test["base"].problems


def test_a_nemo_offset_makes_the_utterance_a_stretch_of_the_file(tmp_path):
    write(tmp_path / "long.wav", 2.0)
    manifest = jsonl(tmp_path / "m.jsonl", [
        {"audio_filepath": "long.wav", "text": "one", "offset": 0.5, "duration": 1.0},
        {"audio_filepath": "long.wav", "text": "two", "offset": 0, "duration": 2.0},  # 0: the whole file
        {"audio_filepath": "long.wav", "text": "three", "offset": 1.5, "duration": 1.0},  # past its end
        {"audio_filepath": "long.wav", "text": "four", "offset": 0.5},
        {"audio_filepath": "long.wav", "text": "five", "offset": "soon", "duration": 1.0}])
    split = load(manifest, tmp_path / "cache")
    assert split.texts == ["one", "two"] and split.seconds == pytest.approx([1.0, 2.0])
    problems = [str(p) for p in split.problems]
    assert "the stretch ends at 2.50 s, but the file lasts 2.00 s" in problems[0]
    assert problems[1].endswith("m.jsonl:4: field 'offset' needs 'duration' (how long the stretch from the offset "
                                "lasts)")
    assert problems[2].endswith("m.jsonl:5: field 'offset' must be a number of seconds >= 0, got 'soon'")


def test_a_task_whose_train_manifest_leaves_no_dev_is_refused_before_training(tmp_path):
    stream, config = _stream(tmp_path, {"audio_filepath": "b1.wav", "text": "four five"})
    jsonl(tmp_path / "data" / "task.train.jsonl", [{"audio_filepath": "b0.wav", "text": "one"}])
    with pytest.raises(DataError, match=r"task task: its dev set is empty \(.*task.train.jsonl\): every dev and test "
                                        r"set needs at least one utterance"):
        prepare_stream_data(stream, config, tmp_path / "cache", progress=False)


def test_babble_on_recorded_speech_is_cached_by_its_talkers(tmp_path):
    """The babble talkers' sentences move with the synthesized tasks' sizes: another entry."""
    from dataclasses import replace

    write(tmp_path / "a.wav", 1.0)
    manifest = jsonl(tmp_path / "m.jsonl", [{"audio_filepath": "a.wav", "text": "one"}])
    babble = Condition.from_dict({"noise": "babble", "snr_db": 10}, "condition")
    task = replace(manifest_task(manifest, babble), babble_voices=("en-us",), babble_start=0)
    common = dict(n_mels=80, limit=0, max_seconds=20.0, cache_dir=tmp_path / "cache", progress=False)
    first = load_split(task, "test", manifest, babble, **common)
    moved = load_split(replace(task, babble_start=50), "test", manifest, babble, **common)
    assert first.digest != moved.digest
    assert len(list((tmp_path / "cache" / "features").glob("t-test-*.pt"))) == 2


def test_a_silent_clip_is_bad_data(tmp_path):
    sf.write(tmp_path / "quiet.wav", np.zeros(8000, dtype=np.float32), 16000)
    split = load(jsonl(tmp_path / "m.jsonl", [{"audio_filepath": "quiet.wav", "text": "one"}]), tmp_path / "cache")
    assert not split.texts and str(split.problems[0]).endswith("m.jsonl:1: quiet.wav is silent (every sample is 0)")
