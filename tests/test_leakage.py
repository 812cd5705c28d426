"""No sentence, voice or speaker shared between training and evaluation: built-in streams, checks, dev splits."""

from pathlib import Path

import pytest
import yaml

from continual_asr.data.features import SplitFeatures
from continual_asr.data.leakage import design_leaks, dev_test_sentences, leaked_utterances
from continual_asr.data.manifest import ManifestRow
from continual_asr.data.prepare import SPLITS, babble_sentences, split_speakers, task_sentences
from continual_asr.data.splits import hold_out
from continual_asr.errors import StreamError
from continual_asr.stream import BABBLE_POOL_SIZE, builtin_streams, load_stream


@pytest.mark.parametrize("name", sorted(builtin_streams()))
def test_a_builtin_stream_shares_no_sentence_voice_or_speaker_between_training_and_evaluation(name):
    stream = load_stream(name)
    parts: dict[str, list[str]] = {}
    for task in stream.eval_tasks:
        for split, sentences in task_sentences(task).items():
            parts[f"{task.name}/{split}"] = sentences
            assert len(sentences) == getattr(task, split)
        if task.condition.noise == "babble":
            for split in ("train", "test"):
                parts[f"{task.name}/babble-{split}"] = babble_sentences(task, split)
                assert len(parts[f"{task.name}/babble-{split}"]) == BABBLE_POOL_SIZE
    every = [s for sentences in parts.values() for s in sentences]
    assert len(set(every)) == len(every), "a sentence is in two splits, tasks or babble pools"
    assert design_leaks(stream) == []
    assert all(task.dev > 0 for task in stream.eval_tasks)


def test_held_out_speakers_speak_only_dev_and_test():
    train, dev, test = (set(split_speakers(split)) for split in SPLITS)
    assert train and dev and not (train & dev)
    assert dev == test, "dev is drawn like test: the same held-out variants, other sentences"
    assert len(train) >= 2 * len(dev)
    assert split_speakers("test", ["m1", "f1"]) == ["m1", "f1"]  # too few to hold any out: used whole
    assert split_speakers("train", ["m1", "f1", "m2"]) == ["m1", "f1"]  # three hold one out


def _stream(tmp_path: Path, **changes) -> Path:
    data = {"name": "s", "text": "generator", "defaults": {"train": 4, "dev": 2, "test": 2},
            "base": {"name": "base", "voice": "en-us"},
            "tasks": [{"name": "a", "voice": "en-029", "condition": {"noise": "babble", "snr_db": 5}}],
            "zero_shot": {"name": "z", "voice": "en-us-nyc"}, **changes}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_babble_talkers_never_use_the_zero_shot_voice(tmp_path):
    stream = load_stream(str(_stream(tmp_path, zero_shot={"name": "z", "voice": "en-gb-x-rp"})))
    assert "en-gb-x-rp" not in stream.tasks[0].babble_voices and stream.tasks[0].babble_voices
    assert design_leaks(stream) == []


def test_design_leaks_name_a_zero_shot_voice_in_babble_and_shared_speakers(tmp_path):
    stream = load_stream(str(_stream(tmp_path, speakers=["m1", "f1"])))
    object.__setattr__(stream.tasks[0], "babble_voices", ("en-us", "en-us-nyc"))  # as before streams were checked
    found = "\n".join(design_leaks(stream))
    assert "task a's babble talkers speak the zero-shot voice en-us-nyc" in found
    assert "of its test speaker variants also speak training data" in found


def test_leaked_utterances_count_evaluation_utterances_whose_sentence_is_trained_on():
    def split(*texts: str) -> SplitFeatures:
        return SplitFeatures([], list(texts), [], list(range(1, len(texts) + 1)), "", [], "")
    counts = leaked_utterances({("a", "train"): split("one two", "three"), ("b", "train"): split("four"),
                               ("a", "test"): split("one two", "five", "four"), ("b", "dev"): split("six")})
    assert counts == {("a", "test"): 2, ("b", "dev"): 0}


def test_a_recording_in_training_and_evaluation_leaks_whatever_its_transcript(tmp_path):
    import json

    def manifest(name: str, *rows: tuple[str, str]) -> SplitFeatures:
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps({"audio_filepath": a, "text": t}) + "\n" for a, t in rows))
        return SplitFeatures([], [t for _, t in rows], [], list(range(1, len(rows) + 1)), str(path), [], "")

    train = manifest("train", ("clips/a.wav", "one two"), ("clips/b.wav", "three"))
    test = manifest("test", ("clips/b.wav", "tree"), ("./clips/../clips/a.wav", "won two"), ("clips/c.wav", "four"))
    dev = manifest("dev", ("clips/d.wav", "four"))
    splits = {("t", "train"): train, ("t", "test"): test, ("t", "dev"): dev}
    assert leaked_utterances(splits) == {("t", "test"): 2, ("t", "dev"): 0}  # b and a, under typos
    assert dev_test_sentences(splits) == {"t": 1}  # "four": not from training, but dev has heard it


def test_dev_is_given_in_the_stream_and_must_not_be_empty(tmp_path):
    stream = load_stream(str(_stream(tmp_path, defaults={"train": 4, "test": 2})))
    assert stream.base.dev == 100  # the default
    with pytest.raises(StreamError, match=r"base \(base\)\.dev: needs at least one dev utterance"):
        load_stream(str(_stream(tmp_path, defaults={"train": 4, "dev": 0, "test": 2})))


def test_a_manifest_tasks_held_out_dev_is_a_stable_tenth_of_train():
    rows = [ManifestRow(i + 1, f"audio/{i}.wav", Path(f"/c/audio/{i}.wav"), f"text {i}", None) for i in range(400)]
    train, dev = hold_out(rows)
    assert 25 <= len(dev) <= 55 and len(train) + len(dev) == 400  # about a tenth
    assert not {r.raw_path for r in train} & {r.raw_path for r in dev}
    reordered_train, reordered_dev = hold_out(list(reversed(rows)))
    assert {r.raw_path for r in reordered_dev} == {r.raw_path for r in dev}  # chosen by content, not position
    # Growing the manifest never moves a dev utterance back into train (a choice made on dev
    # would then be trained on), however many rows are added.
    for grown in (rows[:33], rows[:200]):
        grown_dev = {r.raw_path for r in hold_out(grown)[1]}
        assert grown_dev == {r.raw_path for r in dev if r in grown}
    assert hold_out(rows[:1]) == (rows[:1], [])
    assert len(hold_out(rows[:2])[1]) == 1  # at least one, however small
