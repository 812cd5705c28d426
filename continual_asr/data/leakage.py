"""What evaluation shares with training: sentences, voices, speakers. ``casr data`` reports it.

A WER on a test set that shares sentences, a voice or speakers with the training data measures
memory as much as recognition. The built-in streams share nothing (tests/test_leakage.py);
a user's stream is checked from its actual transcripts and warned about.
"""

from __future__ import annotations

from ..stream import StreamSpec
from .features import SplitFeatures
from .prepare import split_speakers


def leaked_sentences(splits: dict[tuple[str, str], SplitFeatures]) -> dict[tuple[str, str], int]:
    """For every dev and test set, keyed (task, split): how many of its utterances have a
    transcript that some training split (of any task) also has."""
    training = {text for (_, split), features in splits.items() if split == "train" for text in features.texts}
    return {key: sum(text in training for text in features.texts)
            for key, features in splits.items() if key[1] != "train"}


def design_leaks(stream: StreamSpec) -> list[str]:
    """What a synthesized stream's design lets evaluation share with training, one line each:
    a zero-shot voice among a training task's babble talkers, speaker variants that dev or test
    share with training. (A zero-shot task may speak a training task's voice on purpose, when
    what is new to it is its condition, as in the noise stream.)"""
    found = []
    zero_shot = set(stream.zero_shot.voices)
    for task in (stream.base, *stream.tasks):
        shared = zero_shot & set(task.babble_voices)
        if shared:
            found.append(f"task {task.name}'s babble talkers speak the zero-shot voice {', '.join(sorted(shared))}")
    synthesized = [t for t in stream.eval_tasks if not t.from_manifests]
    train = {v for t in synthesized if t is not stream.zero_shot for v in split_speakers("train", t.speakers)}
    for task in synthesized:
        for split in ("dev", "test"):
            shared = train & set(split_speakers(split, task.speakers))
            if shared:
                found.append(f"task {task.name}: {len(shared)} of its {split} speaker variants also speak "
                             "training data (a task's speakers list needs 3 or more to hold some out)")
    return found
