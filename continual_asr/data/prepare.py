"""Synthesize a task's speech into the cache: FLAC files plus NeMo-style JSONL manifests.

A cache entry is keyed by the task's fingerprint and utterance counts and built through
continual_asr.cache: one process synthesizes it into a private folder, seals it with every
file's size and renames it into place; others wait for it, and a damaged one is built again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from ..cache import cached, check_folder, seal_folder
from ..stream import TaskSpec
from .conditions import apply_condition
from .synth import SAMPLE_RATE, EspeakSynthesizer, speaker_variants
from .text import sentences_for_split

SYNTH_VERSION = 2  # bump when synthesis or an entry's layout changes (2: sealed by complete.json)
BABBLE_POOL_SIZE = 24
BABBLE_VOICES = ("en-us", "en", "en-gb-x-rp", "en-us-nyc")
RATE_RANGE = (145, 195)  # words per minute, espeak's default is 175
PITCH_RANGE = (30, 70)  # espeak's default is 50


def seed_of(*parts: object) -> int:
    """A seed that does not depend on Python's hash randomisation."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little")


def task_cache_dir(task: TaskSpec, cache_dir: Path, train: int, test: int) -> Path:
    return Path(cache_dir) / "audio" / f"{task.name}-{task.fingerprint()}-v{SYNTH_VERSION}-{train}-{test}"


def babble_pool(task: TaskSpec, synthesizer: EspeakSynthesizer, speakers: list[str]) -> list[np.ndarray]:
    """Other talkers' speech for babble noise, the same for every utterance of ``task``."""
    rng = np.random.default_rng(seed_of(task.seed, task.name, "babble"))
    texts = sentences_for_split("generator", BABBLE_POOL_SIZE, seed_of(task.seed, task.name, "babble-text") % 2**31)
    pool = []
    for text in texts:
        voice = f"{rng.choice(BABBLE_VOICES)}+{rng.choice(speakers)}"
        pool.append(synthesizer.synthesize(text, voice, rate=int(rng.integers(*RATE_RANGE)),
                                           pitch=int(rng.integers(*PITCH_RANGE))))
    return pool


def prepare_task(task: TaskSpec, cache_dir: Path, train: int | None = None, test: int | None = None,
                 progress: bool = True) -> Path:
    """Synthesize ``task`` (or reuse the cache); returns the folder holding train/test.jsonl."""
    train = task.train if train is None else train
    test = task.test if test is None else test
    target = task_cache_dir(task, cache_dir, train, test)

    def build(tmp: Path) -> Path:
        _synthesize(task, tmp, train, test, progress)
        seal_folder(tmp)
        return target

    return cached(target, check_folder, build, "synthesized audio")


def _synthesize(task: TaskSpec, tmp: Path, train: int, test: int, progress: bool) -> None:
    (tmp / "audio").mkdir(parents=True)
    sentences = sentences_for_split(task.text, train + test, seed_of(task.seed, task.name, "text") % 2**31)
    splits = {"train": sentences[:train], "test": sentences[train:]}
    speakers = list(task.speakers) or speaker_variants()
    synthesizer = EspeakSynthesizer()
    babble = babble_pool(task, synthesizer, speakers) if task.condition.noise == "babble" else None
    bar = tqdm(total=train + test, desc=f"synthesize {task.name}", unit="utt", disable=not progress, leave=False)
    for split, texts in splits.items():
        rows = []
        for index, text in enumerate(texts):
            rng = np.random.default_rng(seed_of(task.seed, task.name, split, index))
            voice = f"{task.voices[rng.integers(len(task.voices))]}+{speakers[rng.integers(len(speakers))]}"
            audio = synthesizer.synthesize(text, voice, rate=int(rng.integers(*RATE_RANGE)),
                                           pitch=int(rng.integers(*PITCH_RANGE)))
            if not task.condition.is_clean:
                audio = apply_condition(audio, task.condition, rng, babble)
            name = f"audio/{split}-{index:05d}.flac"
            sf.write(tmp / name, audio, SAMPLE_RATE, subtype="PCM_16")
            rows.append({"audio_filepath": name, "text": text, "duration": round(len(audio) / SAMPLE_RATE, 3),
                         "voice": voice})
            bar.update()
        with open(tmp / f"{split}.jsonl", "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in rows)
    bar.close()
