"""What evaluation shares with training: sentences, voices, speakers. ``casr data`` reports it.

A WER on a test set that shares sentences, a voice or speakers with the training data measures
memory as much as recognition. The built-in streams share nothing (tests/test_leakage.py);
a user's stream is checked from its actual transcripts and warned about.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..stream import StreamSpec
from .features import SplitFeatures
from .manifest import read_manifest
from .prepare import split_speakers


def leaked_utterances(splits: dict[tuple[str, str], SplitFeatures]) -> dict[tuple[str, str], int]:
    """For every dev and test set, keyed (task, split): how many of its utterances have a
    transcript that some training split (of any task) also has, or are a recording (the same
    audio file, or the same stretch of it) that some training split also uses, whatever its
    transcript says there."""
    recordings = _recordings(splits)
    trained = [key for key in splits if key[1] == "train"]
    texts = {text for key in trained for text in splits[key].texts}
    used = {r for key in trained for r in recordings[key] if r is not None}
    return {key: sum(text in texts or recording in used for text, recording in zip(features.texts, recordings[key]))
            for key, features in splits.items() if key[1] != "train"}


def dev_test_sentences(splits: dict[tuple[str, str], SplitFeatures]) -> dict[str, int]:
    """Per task: how many of its test utterances speak a sentence of some dev set (of any task).
    Not a leak from training, but a choice made on such a dev set has heard test's sentences."""
    dev = {text for (_, split), features in splits.items() if split == "dev" for text in features.texts}
    return {task: sum(text in dev for text in features.texts)
            for (task, split), features in splits.items() if split == "test"}


def _recordings(splits: dict[tuple[str, str], SplitFeatures]) -> dict[tuple[str, str], list]:
    """Each split's utterances' recordings, (resolved audio path, offset), read back from their
    manifests (each read once); None for an utterance whose manifest cannot be read."""
    manifests: dict[str, dict[int, tuple[str, float | None]]] = {}
    for features in splits.values():
        if features.source not in manifests:
            rows, _ = read_manifest(Path(features.source)) if features.source else ([], [])
            manifests[features.source] = {row.line: (os.path.realpath(row.audio), row.offset) for row in rows}
    return {key: [manifests[f.source].get(line) for line in f.lines] for key, f in splits.items()}


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
