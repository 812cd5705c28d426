"""Stream YAML: the built-in streams, and one-line errors for bad fields."""

import pytest
import yaml

from continual_asr.config import make_config
from continual_asr.errors import StreamError
from continual_asr.stream import builtin_streams, load_stream
from corpus import STREAM_YAML


def test_builtin_streams_load_and_follow_the_recipe():
    assert {"accents-then-noise", "tiny"} <= set(builtin_streams())
    stream = load_stream("accents-then-noise")
    assert stream.base.voices == ("en-us",) and stream.base.condition.is_clean
    accents = [t for t in stream.tasks if t.condition.is_clean]
    conditions = [t for t in stream.tasks if not t.condition.is_clean]
    assert len(accents) >= 3 and len(conditions) >= 2
    # The tasks come in the order the name promises: accents, then noise.
    assert stream.tasks[: len(accents)] == tuple(accents)
    seen_voices = {v for t in (stream.base, *stream.tasks) for v in t.voices}
    seen_noises = {t.condition.noise for t in stream.tasks}
    zero = stream.zero_shot
    assert zero.train == 0 and not set(zero.voices) & seen_voices
    assert zero.condition.noise not in seen_noises
    tiny = load_stream("tiny")
    assert len(tiny.tasks) == 2 and tiny.base.text.endswith("digits.txt")


def _write(tmp_path, data):
    path = tmp_path / "stream.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


VALID = {
    "name": "mine",
    "base": {"name": "b", "voice": "en-us", "train": 4, "test": 2},
    "tasks": [{"name": "t", "voice": "en-029", "train": 4, "test": 2}],
    "zero_shot": {"name": "z", "voice": "en-us-nyc", "test": 2},
}


def test_a_valid_user_stream_loads(tmp_path):
    stream = load_stream(_write(tmp_path, VALID))
    assert [t.name for t in stream.eval_tasks] == ["b", "t", "z"]
    assert stream.preset is None


def test_a_stream_may_name_the_preset_runs_use_without_preset():
    from continual_asr.cli import _common

    assert load_stream("tiny").preset == "tiny" and load_stream("accents-then-noise").preset is None
    config, _, preset = _common(None, (), "tiny")
    assert preset == "tiny" and config == make_config("tiny")
    config, _, preset = _common("default", (), "tiny")  # --preset wins
    assert preset == "default" and config == make_config("default")
    assert _common(None, (), "accents-then-noise")[2] == "default"


@pytest.mark.parametrize("change, message", [
    ({"colour": 1}, "unknown field 'colour' (valid: "),
    ({"tasks": []}, "'tasks' must be a non-empty list"),
    ({"tasks": [{"name": "t", "voice": "en-029", "train": 4, "test": 2, "pitch": 3}]},
     "tasks[0] (t): unknown field 'pitch'"),
    ({"tasks": [{"name": "t", "voice": "en-029", "train": -1, "test": 2}]}, "tasks[0] (t).train: must be a non-negative"),
    ({"tasks": [{"name": "t", "train": 4, "test": 2}]}, "tasks[0] (t).voice: missing"),
    ({"tasks": [{"name": "t", "voice": "en-029", "train": 4, "test": 2, "condition": {"noise": "pink"}}]},
     "condition"),
    ({"tasks": [{"name": "b", "voice": "en-029", "train": 4, "test": 2}]}, "task name 'b' is used twice"),
    ({"zero_shot": {"name": "z", "voice": "en-us-nyc", "train": 3, "test": 2}}, "the zero-shot task is never trained on"),
    ({"preset": "huge"}, "preset 'huge' is not a preset (valid: default, tiny)"),
    ({"tasks": [{"name": "../t", "voice": "en-029", "train": 4, "test": 2}]},
     "tasks[0].name: '../t' may hold only letters, digits"),
    ({"tasks": [{"name": "t", "voice": "en-xx", "train": 4, "test": 2}]}, "tasks[0] (t): unknown espeak voice 'en-xx'"),
    ({"tasks": [{"name": "t", "voice": "en-029", "speakers": ["m1", "zz9", "f1"], "train": 4, "test": 2}]},
     "tasks[0] (t): unknown espeak voice 'en-029+zz9': no speaker variant 'zz9'"),
])
def test_invalid_fields_are_named_in_one_line(tmp_path, change, message):
    with pytest.raises(StreamError) as error:
        load_stream(_write(tmp_path, {**VALID, **change}))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_unknown_stream_name_lists_the_builtin_ones():
    with pytest.raises(StreamError, match=r"unknown stream 'nope' \(built in: accents, accents-then-noise, long, "
                                          r"noise, tiny; or a path"):
        load_stream("nope")


def test_missing_yaml_file_is_named(tmp_path):
    with pytest.raises(StreamError, match="not found"):
        load_stream(str(tmp_path / "absent.yaml"))


def test_broken_yaml_names_the_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\ntasks: [\n")
    with pytest.raises(StreamError, match=r"broken.yaml: not valid YAML at line 3 \("):
        load_stream(str(path))


def test_new_builtin_streams_differ_from_the_base_in_every_task_and_share_its_base():
    base = load_stream("accents-then-noise").base
    sizes = {}
    for name in ("accents", "noise", "long"):
        stream = load_stream(name)
        assert stream.base == base  # one base model serves every built-in stream
        for task in (*stream.tasks, stream.zero_shot):
            assert not task.from_manifests
            assert set(task.voices) != set(base.voices) or not task.condition.is_clean, (name, task.name)
        sizes[name] = (len(stream.tasks), {t.train for t in stream.tasks})
    accents = load_stream("accents")
    assert all(t.condition.is_clean for t in accents.tasks) and len(accents.tasks) > 3
    assert not set(accents.zero_shot.voices) & {v for t in accents.tasks for v in t.voices}
    noise = load_stream("noise")
    assert {v for t in noise.tasks for v in t.voices} == {"en-us"}
    for kind in ("white", "pink", "babble"):
        assert len({t.condition.snr_db for t in noise.tasks if t.condition.noise == kind}) >= 2, kind
    assert len({t.condition.rt60 for t in noise.tasks if t.condition.rt60}) >= 2
    assert sizes["long"][0] >= 10 and max(sizes["long"][1]) < min(sizes["accents"][1])


def test_manifest_tasks_resolve_paths_against_the_yaml_file(tmp_path, monkeypatch):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "stream.yaml").write_text(STREAM_YAML)
    monkeypatch.chdir(tmp_path)
    stream = load_stream("corpus/stream.yaml")
    assert all(t.from_manifests and t.voices == () for t in stream.eval_tasks)
    assert stream.tasks[1].train_manifest == str(tmp_path / "corpus" / "data" / "b.train.jsonl")
    assert stream.zero_shot.test_manifest.endswith("unseen.test.jsonl") and stream.zero_shot.train_manifest == ""


def test_a_stream_mixes_synthesized_and_manifest_tasks_with_conditions(tmp_path):
    data = {**VALID, "tasks": [
        {"name": "recorded-noisy", "train": "a.csv", "test": "b.tsv", "condition": {"noise": "pink", "snr_db": 10}},
        {"name": "synth", "voice": "en-029", "train": 4, "test": 2},
    ]}
    stream = load_stream(_write(tmp_path, data))
    recorded, synth = stream.tasks
    assert recorded.from_manifests and recorded.condition.noise == "pink"
    assert not synth.from_manifests and synth.voices == ("en-029",)


@pytest.mark.parametrize("task, message", [
    ({"name": "t", "train": "a.jsonl", "test": 2}, "tasks[0] (t).test: train and test must both be manifest paths"),
    ({"name": "t", "train": 4, "test": "a.jsonl"}, "tasks[0] (t).train: train and test must both be manifest paths"),
    ({"name": "t", "voice": "en-us", "train": "a.jsonl", "test": "b.jsonl"},
     "tasks[0] (t).voice: only synthesized tasks have voice"),
    ({"name": "t", "train": "a.txt", "test": "b.jsonl"}, "tasks[0] (t).train: a manifest must end in .jsonl"),
])
def test_invalid_manifest_tasks_are_named(tmp_path, task, message):
    with pytest.raises(StreamError) as error:
        load_stream(_write(tmp_path, {**VALID, "tasks": [task]}))
    assert message in str(error.value)


def test_a_task_order_reorders_the_tasks_and_keeps_their_data():
    stream = load_stream("accents-then-noise")
    reordered = stream.in_order("3,1,2,5,4")
    assert [t.name for t in reordered.tasks] == ["west-midlands", "scottish", "caribbean", "us-reverb-0.7s",
                                                 "us-babble-10db"]
    assert reordered.order == (3, 1, 2, 5, 4) and stream.order == (1, 2, 3, 4, 5)
    assert {t.name: t for t in reordered.tasks} == {t.name: t for t in stream.tasks}  # same sentences, same audio
    assert stream.in_order("shuffle:1").order == stream.in_order("shuffle:1").order != stream.order
    assert stream.in_order("1,2,3,4,5") == stream and reordered.in_order("1,2,3,4,5") == stream
    for bad, message in (("1,2", "has 5 tasks; name each of the positions 1 to 5 once"),
                         ("1,1,2,3,4", "name each of the positions"), ("a,b", "positions separated by commas"),
                         ("shuffle:x", "shuffle:SEED needs an integer seed")):
        with pytest.raises(StreamError, match=message):
            stream.in_order(bad)


def test_a_text_file_too_small_or_unreadable_for_the_stream_is_a_one_line_stream_error(tmp_path):
    """Every task and split takes sentences of its own: a file with too few is said when the
    stream loads, naming the file and the count, not when synthesis reaches the task that runs out."""
    (tmp_path / "few.txt").write_text("\n".join(f"sentence number {i}" for i in range(17)), encoding="utf-8")
    small = {**VALID, "text": "few.txt", "defaults": {"dev": 1}}  # needs 4 + 1 + 2 (base), 4 + 1 + 2 (task), 1 + 2 (zero-shot)
    assert load_stream(_write(tmp_path, small)).base.text.endswith("few.txt")
    (tmp_path / "few.txt").write_text("\n".join(f"sentence number {i}" for i in range(16)), encoding="utf-8")
    with pytest.raises(StreamError, match=r"few\.txt: only 16 distinct usable sentences, the stream needs 17"):
        load_stream(_write(tmp_path, small))
    (tmp_path / "few.txt").write_bytes(b"fine line\nbroken \xff line\n")
    with pytest.raises(StreamError, match=r"few\.txt: line 2: not valid UTF-8"):
        load_stream(_write(tmp_path, small))


def test_a_text_files_name_is_in_its_tasks_fingerprint(tmp_path):
    """The file's name seeds the order its sentences are drawn in, so the same sentences under
    another name are other audio, and another cache entry; a moved file is the same."""
    sentences = "\n".join(f"sentence number {i}" for i in range(40))
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text(sentences, encoding="utf-8")
    (tmp_path / "moved").mkdir()
    (tmp_path / "moved" / "a.txt").write_text(sentences, encoding="utf-8")

    def base(text: str):
        return load_stream(_write(tmp_path, {**VALID, "text": text, "defaults": {"dev": 1}})).base

    assert base("a.txt").fingerprint() != base("b.txt").fingerprint()
    assert base("a.txt").fingerprint() == base("moved/a.txt").fingerprint()


def test_babble_on_recorded_speech_alone_draws_its_talkers_from_the_generator(tmp_path):
    data = {**VALID, "tasks": [{"name": "noisy", "train": "a.jsonl", "test": "b.jsonl",
                                "condition": {"noise": "babble", "snr_db": 10}}],
            "base": {"name": "b", "train": "c.jsonl", "test": "d.jsonl"}, "zero_shot": {"name": "z", "test": "e.jsonl"}}
    noisy = load_stream(_write(tmp_path, data)).tasks[0]
    assert noisy.text == "generator" and noisy.babble_start == 0 and noisy.babble_voices
