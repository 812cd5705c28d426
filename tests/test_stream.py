"""Stream YAML: the built-in streams, and one-line errors for bad fields."""

import pytest
import yaml

from continual_asr.errors import StreamError
from continual_asr.stream import builtin_streams, load_stream


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
])
def test_invalid_fields_are_named_in_one_line(tmp_path, change, message):
    with pytest.raises(StreamError) as error:
        load_stream(_write(tmp_path, {**VALID, **change}))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_unknown_stream_name_lists_the_builtin_ones():
    with pytest.raises(StreamError, match="unknown stream 'nope' \\(built in: accents-then-noise, tiny"):
        load_stream("nope")


def test_missing_yaml_file_is_named(tmp_path):
    with pytest.raises(StreamError, match="not found"):
        load_stream(str(tmp_path / "absent.yaml"))
