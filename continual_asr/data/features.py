"""Reading audio and computing log-mel features; the in-memory form of one split."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from ..errors import DataError
from .manifest import Problem, display_path
from .synth import SAMPLE_RATE

SAMPLES_PER_FRAME = SAMPLE_RATE // 100  # one 10 ms log-mel frame


def log_mel(audio: np.ndarray, n_mels: int) -> torch.Tensor:
    """(frames, n_mels) Kaldi-style log-mel filterbank, 25 ms windows every 10 ms, no dither."""
    wave = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)).unsqueeze(0)
    return torchaudio.compliance.kaldi.fbank(wave * 32768.0, num_mel_bins=n_mels, dither=0.0,
                                             sample_frequency=SAMPLE_RATE, energy_floor=1.0)


def read_audio(path: Path, shown: str = "", offset: float | None = None, duration: float | None = None
               ) -> tuple[np.ndarray, float]:
    """Mono float32 audio at 16 kHz, and its duration in seconds: the whole file, or with
    ``offset`` the stretch of ``duration`` seconds from there (a lhotse cut or supervision).

    Any rate and channel count soundfile reads (WAV, FLAC, OGG, ...) is accepted: other rates
    are resampled and channels averaged. Raises DataError naming the file (as ``shown``, e.g.
    the path written in a manifest) and what is wrong.
    """
    shown = shown or display_path(path)
    if not path.exists():
        raise DataError(f"audio file {shown} not found")
    if not path.is_file():
        raise DataError(f"audio file {shown} is not a file")
    if path.stat().st_size == 0:
        raise DataError(f"audio file {shown} is empty (0 bytes)")
    try:
        with sf.SoundFile(str(path)) as audio_file:
            rate, total = audio_file.samplerate, audio_file.frames
            start, frames = 0, -1
            if offset is not None:
                start = round(offset * rate)
                frames = round((duration or 0.0) * rate)
                if start + frames > total + round(0.01 * rate):  # lhotse rounds durations to its own precision
                    raise DataError(f"audio file {shown}: the stretch ends at {offset + (duration or 0):.2f} s, "
                                    f"but the file lasts {total / rate:.2f} s")
                audio_file.seek(min(start, total))
            audio = audio_file.read(frames, dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError, ValueError) as exc:
        reason = str(exc).splitlines()[0]
        if reason.startswith("Error opening '"):  # libsndfile repeats the path: "Error opening '...': why"
            reason = reason.split("': ", 1)[-1]
        raise DataError(f"audio file {shown} is unreadable ({reason})") from None
    if audio.shape[0] == 0:
        raise DataError(f"audio file {shown} has no samples (zero length)")
    mono = audio.mean(axis=1)
    if not np.isfinite(mono).all():
        raise DataError(f"audio file {shown} holds NaN or infinite samples")
    if rate != SAMPLE_RATE:
        mono = torchaudio.functional.resample(torch.from_numpy(mono), rate, SAMPLE_RATE).numpy()
    return mono, audio.shape[0] / rate


@dataclass
class SplitFeatures:
    """The usable utterances of one task's train or test split, in memory, and what was wrong with the rest."""

    # Each (frames, n_mels) log-mel, or (samples,) 16 kHz audio for a Hugging Face base; float16
    # to halve memory (audio keeps 11 significant bits of every sample, relative to its own size).
    features: list[torch.Tensor]
    texts: list[str]  # normalised transcripts
    seconds: list[float]  # each utterance's duration
    lines: list[int]  # each utterance's line in ``source``, for messages
    source: str  # the manifest
    problems: list[Problem]  # utterances left out, with why
    digest: str  # hash of features and texts: what a model trained on this split depends on

    @property
    def num_frames(self) -> list[int]:
        """Each utterance's length in 10 ms frames (what batch_frames counts), also for audio."""
        return [f.shape[0] // SAMPLES_PER_FRAME if f.dim() == 1 else f.shape[0] for f in self.features]

    def without(self, drop: dict[int, Problem]) -> "SplitFeatures":
        """A copy without the utterances at the indices in ``drop``, whose problems are added."""
        keep = [i for i in range(len(self.texts)) if i not in drop]
        digest = hashlib.sha256(f"{self.digest}|{keep}".encode()).hexdigest()[:16]
        return SplitFeatures([self.features[i] for i in keep], [self.texts[i] for i in keep],
                             [self.seconds[i] for i in keep], [self.lines[i] for i in keep], self.source,
                             sorted([*self.problems, *drop.values()], key=lambda p: (p.file, p.line)), digest)
