"""Log-mel features, computed once per utterance and cached beside the task's manifests."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from ..errors import DataError
from .synth import SAMPLE_RATE

FEATURE_VERSION = 1  # bump when the feature computation changes, to invalidate caches


def log_mel(audio: np.ndarray, n_mels: int) -> torch.Tensor:
    """(frames, n_mels) Kaldi-style log-mel filterbank, 25 ms windows every 10 ms, no dither."""
    wave = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)).unsqueeze(0)
    return torchaudio.compliance.kaldi.fbank(wave * 32768.0, num_mel_bins=n_mels, dither=0.0,
                                             sample_frequency=SAMPLE_RATE, energy_floor=1.0)


def read_audio(path: Path) -> np.ndarray:
    """Mono float32 audio at 16 kHz; other rates are resampled and channels averaged."""
    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise DataError(f"{path}: unreadable audio ({str(exc).splitlines()[0]})") from None
    if audio.shape[0] == 0:
        raise DataError(f"{path}: empty audio file")
    mono = audio.mean(axis=1)
    if rate != SAMPLE_RATE:
        mono = torchaudio.functional.resample(torch.from_numpy(mono), rate, SAMPLE_RATE).numpy()
    return mono


@dataclass
class SplitFeatures:
    """The features and transcripts of one task's train or test split, in memory."""

    features: list[torch.Tensor]  # each (frames, n_mels), float16 to halve memory
    texts: list[str]

    @property
    def num_frames(self) -> list[int]:
        return [f.shape[0] for f in self.features]


def read_manifest(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    raise DataError(f"{path}:{number}: not a JSON line") from None
    return rows


def load_split_features(manifest: Path, n_mels: int, limit: int = 0) -> SplitFeatures:
    """Features of the first ``limit`` (0 = all) utterances of a manifest, cached on disk."""
    rows = read_manifest(manifest)
    if limit:
        rows = rows[:limit]
    cache = manifest.with_name(f"{manifest.stem}.fbank{n_mels}-v{FEATURE_VERSION}-n{len(rows)}.pt")
    if cache.is_file():
        data = torch.load(cache, weights_only=True)
        return SplitFeatures(data["features"], data["texts"])
    features, texts = [], []
    for row in rows:
        audio = read_audio(manifest.parent / row["audio_filepath"])
        features.append(log_mel(audio, n_mels).to(torch.float16))
        texts.append(row["text"])
    tmp = cache.with_suffix(".tmp")
    torch.save({"features": features, "texts": texts}, tmp)
    os.replace(tmp, cache)
    return SplitFeatures(features, texts)
