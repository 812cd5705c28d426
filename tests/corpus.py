"""Small "recorded" corpora for tests: speech written to disk at other rates, channel counts and formats.

The speech comes from espeak (spoken digit strings, learnable by the tiny model in seconds), but
the corpus is built the way a user's is: audio files on disk, NeMo JSON Lines manifests beside
them, and a stream YAML that points at the manifests. Nothing is read from the synthesizer's
cache.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from continual_asr.data.synth import SAMPLE_RATE, EspeakSynthesizer
from continual_asr.data.text import read_sentences

DIGITS = Path(__file__).resolve().parent.parent / "streams" / "digits.txt"

# name: (voice, sample rate, channels, format, train utterances, test utterances)
CORPUS = {
    "clean": ("en-us", 8000, 2, "FLAC", 24, 4),
    "a": ("en-029", 44100, 1, "WAV", 12, 4),
    "b": ("en-gb-x-rp", 8000, 2, "WAV", 12, 4),
    "unseen": ("en-gb-scotland", 44100, 1, "FLAC", 0, 4),
}

STREAM_YAML = """\
name: my-corpus
base: {name: clean, train: data/clean.train.jsonl, test: data/clean.test.jsonl}
tasks:
  - {name: accent-a, train: data/a.train.jsonl, test: data/a.test.jsonl}
  - {name: accent-b, train: data/b.train.jsonl, test: data/b.test.jsonl}
zero_shot: {name: unseen, test: data/unseen.test.jsonl}
"""


def write_audio(path: Path, audio16k: np.ndarray, rate: int, channels: int, fmt: str) -> float:
    """Write 16 kHz mono ``audio16k`` at ``rate`` with ``channels`` channels; returns its duration."""
    audio = audio16k if rate == SAMPLE_RATE else resample_poly(audio16k, rate // 100, SAMPLE_RATE // 100)
    if channels == 2:  # not the same signal twice: the reader must really mix them
        audio = np.stack([audio, 0.6 * audio], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.clip(audio, -1, 1), rate, format=fmt, subtype="PCM_16")
    return len(audio) / rate


def write_manifest(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def make_corpus(root: Path) -> Path:
    """``root/data``: audio and manifests per CORPUS entry; ``root/stream.yaml``: the issue's minimal stream."""
    synthesizer = EspeakSynthesizer()
    sentences = read_sentences(DIGITS)
    rng = np.random.default_rng(0)
    data = root / "data"
    for name, (voice, rate, channels, fmt, n_train, n_test) in CORPUS.items():
        for split, count in (("train", n_train), ("test", n_test)):
            if not count:
                continue
            rows = []
            for index in range(count):
                text = sentences[int(rng.integers(len(sentences)))]
                audio = synthesizer.synthesize(text, f"{voice}+m1", rate=int(rng.integers(150, 190)), pitch=50)
                relative = f"audio/{name}/{split}-{index:03d}.{fmt.lower()}"
                seconds = write_audio(data / relative, audio, rate, channels, fmt)
                rows.append({"audio_filepath": relative, "text": text.capitalize() + ".", "duration": seconds})
            write_manifest(data / f"{name}.{split}.jsonl", rows)
    (root / "stream.yaml").write_text(STREAM_YAML)
    return root / "stream.yaml"
