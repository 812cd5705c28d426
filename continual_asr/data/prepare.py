"""Synthesize a task's speech into the cache: FLAC files plus NeMo-style JSONL manifests.

What keeps training and evaluation apart (checked by ``casr data`` and the tests):

- **Sentences.** Each task takes its own consecutive part of its stream's sentence pool for
  train, dev and test (continual_asr/stream.py), so no sentence is in two splits or two tasks.
- **Speakers.** Dev and test speak held-out espeak speaker variants (:func:`split_speakers`) that
  no training utterance of any task uses. They share those variants (never a sentence), so that
  dev is drawn like test and a choice made on dev carries over: with three variants each, one
  unusual dev voice (klatt) once decided the dev ranking alone (docs/tuning.md). Each variant
  speaks an equal share of every dev and test set.
- **Noise and rooms.** Babble comes from two pools of other talkers, one for train and one for
  dev and test, with their own sentences and speakers, never a zero-shot voice. Rooms
  (reverberation) are drawn per utterance from seeds that name the split.

A cache entry is keyed by the task's fingerprint and utterance counts and built through
continual_asr.cache: one process synthesizes it into a private folder, seals it with every
file's size and renames it into place; others wait for it, and a damaged one is built again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf
from tqdm import tqdm

from ..cache import cached, check_folder, seal_folder
from ..stream import BABBLE_POOL_SIZE, BABBLE_VOICES, TaskSpec
from .conditions import apply_condition
from .synth import SAMPLE_RATE, EspeakSynthesizer, speaker_variants
from .text import sentence_pool
from .workers import DataWorkers

SYNTH_VERSION = 4  # bump when synthesis or an entry's layout changes (3: dev split; 4: dev and test share the held-out variants)
SPLITS = ("train", "dev", "test")
RATE_RANGE = (145, 195)  # words per minute, espeak's default is 175
PITCH_RANGE = (30, 70)  # espeak's default is 50
HELD_OUT_EVERY = 7  # of the speaker variants, two in seven are held out for dev and test


def seed_of(*parts: object) -> int:
    """A seed that does not depend on Python's hash randomisation."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little")


def split_speakers(split: str, speakers: tuple[str, ...] | list[str] = ()) -> list[str]:
    """The speaker variants of ``split``: of the list (default: the built-in one), positions
    3, 6, 10, 13, 17, 20, ... are held out and speak both dev and test, the rest speak train (a
    list of three holds out its last). A list of one or two is used whole by every split
    (``casr data`` warns)."""
    variants = list(speakers) or speaker_variants()
    if len(variants) < 3:
        return variants
    held = {HELD_OUT_EVERY // 2, HELD_OUT_EVERY - 1}
    held_out = [v for i, v in enumerate(variants) if i % HELD_OUT_EVERY in held] or variants[-1:]
    if split == "train":
        return [v for v in variants if v not in held_out]
    return held_out


def task_sentences(task: TaskSpec, counts: dict[str, int] | None = None) -> dict[str, list[str]]:
    """A synthesized task's sentences per split (the first ``counts[split]`` of each, when capped)."""
    sizes = {"train": task.train, "dev": task.dev, "test": task.test}
    pool = sentence_pool(task.text, task.text_start + sum(sizes.values()), pool_seed(task))
    out, start = {}, task.text_start
    for split in SPLITS:
        out[split] = pool[start: start + sizes[split]][: (counts or sizes)[split]]
        start += sizes[split]
    return out


def pool_seed(task: TaskSpec) -> int:
    return seed_of(task.seed, "sentences", Path(task.text).name if task.text != "generator" else "generator") % 2**31


def babble_sentences(task: TaskSpec, split: str) -> list[str]:
    """The babble talkers' sentences for ``split``: the train pool's, or the dev/test pool's."""
    offset = task.babble_start + (0 if split == "train" else BABBLE_POOL_SIZE)
    return sentence_pool(task.text, offset + BABBLE_POOL_SIZE, pool_seed(task))[offset:]


def babble_pool(task: TaskSpec, split: str, synthesizer: EspeakSynthesizer) -> list[np.ndarray]:
    """Other talkers' speech for babble noise: one pool for train, another for dev and test."""
    group = "train" if split == "train" else "eval"
    rng = np.random.default_rng(seed_of(task.seed, task.name, "babble", group))
    speakers = split_speakers("train" if split == "train" else "test", task.speakers)
    voices = task.babble_voices or BABBLE_VOICES
    pool = []
    for text in babble_sentences(task, split):
        voice = f"{rng.choice(voices)}+{rng.choice(speakers)}"
        pool.append(synthesizer.synthesize(text, voice, rate=int(rng.integers(*RATE_RANGE)),
                                           pitch=int(rng.integers(*PITCH_RANGE))))
    return pool


def task_cache_dir(task: TaskSpec, cache_dir: Path, counts: dict[str, int]) -> Path:
    sizes = "-".join(str(counts[s]) for s in SPLITS)
    return Path(cache_dir) / "audio" / f"{task.name}-{task.fingerprint()}-v{SYNTH_VERSION}-{sizes}"


def prepare_task(task: TaskSpec, cache_dir: Path, counts: dict[str, int] | None = None,
                 progress: bool = True, workers: DataWorkers | None = None) -> Path:
    """Synthesize ``task`` (or reuse the cache); returns the folder holding {train,dev,test}.jsonl.
    ``counts``: utterances per split (default: the task's own); ``workers``: processes to
    synthesize in (default: this one; the audio is the same for any number)."""
    counts = counts or {"train": task.train, "dev": task.dev, "test": task.test}
    target = task_cache_dir(task, cache_dir, counts)

    def build(tmp: Path) -> Path:
        _synthesize(task, tmp, counts, progress, workers or DataWorkers())
        seal_folder(tmp)
        return target

    return cached(target, check_folder, build, "synthesized audio")


def _synthesize(task: TaskSpec, tmp: Path, counts: dict[str, int], progress: bool, workers: DataWorkers) -> None:
    (tmp / "audio").mkdir(parents=True)
    splits = task_sentences(task, counts)
    synthesizer = EspeakSynthesizer()
    with tqdm(total=sum(counts.values()), desc=f"synthesize {task.name}", unit="utt", disable=not progress,
              leave=False) as bar:
        for split, texts in splits.items():
            babble = babble_pool(task, split, synthesizer) if task.condition.noise == "babble" and texts else None
            job = _SplitJob(task, split, split_speakers(split, task.speakers), babble, tmp)
            rows = workers.map(job, texts, bar)
            with open(tmp / f"{split}.jsonl", "w", encoding="utf-8") as handle:
                handle.writelines(json.dumps(row) + "\n" for row in rows)


@dataclass(frozen=True)
class _SplitJob:
    """Synthesizes utterances of one split of one task: each from seeds that name it (task, split,
    index), so any chunking, in any process, writes the same files."""

    task: TaskSpec
    split: str
    speakers: list[str]
    babble: list[np.ndarray] | None
    tmp: Path

    def __call__(self, texts: Sequence[str], first: int, bar: tqdm | None = None) -> list[dict]:
        synthesizer = EspeakSynthesizer()
        task, rows = self.task, []
        for index, text in enumerate(texts, start=first):
            rng = np.random.default_rng(seed_of(task.seed, task.name, self.split, index))
            accent, drawn = task.voices[rng.integers(len(task.voices))], self.speakers[rng.integers(len(self.speakers))]
            # dev and test take the held-out variants in turn: each speaks an equal share of both,
            # so one voice's WER weighs the same in dev as in test (the draw is made all the same,
            # so that the rate and pitch drawn next stay as they are)
            speaker = drawn if self.split == "train" else self.speakers[index % len(self.speakers)]
            voice = f"{accent}+{speaker}"
            audio = synthesizer.synthesize(text, voice, rate=int(rng.integers(*RATE_RANGE)),
                                           pitch=int(rng.integers(*PITCH_RANGE)))
            if not task.condition.is_clean:
                audio = apply_condition(audio, task.condition, rng, self.babble)
            name = f"audio/{self.split}-{index:05d}.flac"
            sf.write(self.tmp / name, audio, SAMPLE_RATE, subtype="PCM_16")
            rows.append({"audio_filepath": name, "text": text, "duration": round(len(audio) / SAMPLE_RATE, 3),
                         "voice": voice})
            if bar is not None:
                bar.update()
        return rows
