"""Acoustic conditions applied on top of clean 16 kHz speech: reverberation and additive noise.

Everything random is drawn from the ``numpy.random.Generator`` passed in, so the same
generator state gives the same audio.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pyroomacoustics as pra
from scipy.signal import fftconvolve

NOISE_KINDS = ("white", "pink", "brown", "babble")
SNR_RANGE = (-10.0, 60.0)  # dB
RT60_RANGE = (0.1, 2.0)  # seconds
ROOM_RANGES = ((3.0, 10.0), (3.0, 8.0), (2.5, 3.5))  # length, width, height in metres
MIN_ROOM = (2.5, 2.5, 2.2)
WALL_MARGIN = 0.5  # metres between source/microphone and any wall
ISM_MAX_ORDER = 12  # image-source order cap; the cost grows with its cube (~3 ms at 12)
PEAK_LIMIT = 0.99  # output peak ceiling, kept below 1 so 16-bit PCM never clips


@dataclass(frozen=True)
class Condition:
    """An acoustic condition; the default (all None) is clean speech."""

    noise: str | None = None  # additive noise: white, pink, brown or babble (other talkers); None = none
    snr_db: float | None = None  # speech-to-noise ratio in dB (-10..60), required with noise
    rt60: float | None = None  # reverberation time in seconds (0.1..2.0); None = no reverberation
    babble_talkers: int = 4  # how many other talkers overlap in babble noise

    def __post_init__(self) -> None:
        if self.noise is not None and self.noise not in NOISE_KINDS:
            raise ValueError(f"unknown noise kind {self.noise!r} (valid: {', '.join(NOISE_KINDS)})")
        if (self.noise is None) != (self.snr_db is None):
            raise ValueError("noise and snr_db go together: give both or neither")
        if self.snr_db is not None:
            snr = _number(self.snr_db, "snr_db")
            if not SNR_RANGE[0] <= snr <= SNR_RANGE[1]:
                raise ValueError(f"snr_db must be within {SNR_RANGE[0]:g}..{SNR_RANGE[1]:g} dB, got {snr:g}")
            object.__setattr__(self, "snr_db", snr)
        if self.rt60 is not None:
            rt60 = _number(self.rt60, "rt60")
            if not RT60_RANGE[0] <= rt60 <= RT60_RANGE[1]:
                raise ValueError(f"rt60 must be within {RT60_RANGE[0]:g}..{RT60_RANGE[1]:g} s, got {rt60:g}")
            object.__setattr__(self, "rt60", rt60)
        if isinstance(self.babble_talkers, bool) or not isinstance(self.babble_talkers, int) \
                or not 1 <= self.babble_talkers <= 32:
            raise ValueError(f"babble_talkers must be an integer 1..32, got {self.babble_talkers!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None, where: str) -> Condition:
        """Build from a YAML mapping (None = clean); errors name ``where``."""
        if d is None:
            return cls()
        if not isinstance(d, dict):
            raise ValueError(f"{where}: must be a mapping with keys {_field_names()}, got {d!r}")
        for key in d:
            if key not in {f.name for f in fields(cls)}:
                raise ValueError(f"{where}: unknown condition field {key!r} (valid: {_field_names()})")
        try:
            return cls(**d)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: {err}") from None

    @property
    def is_clean(self) -> bool:
        return self.noise is None and self.rt60 is None

    def describe(self) -> str:
        """Short human-readable form, e.g. "pink 10 dB + RT60 0.6 s"."""
        parts = []
        if self.noise is not None:
            talkers = f" x{self.babble_talkers}" if self.noise == "babble" else ""
            parts.append(f"{self.noise}{talkers} {self.snr_db:g} dB")
        if self.rt60 is not None:
            parts.append(f"RT60 {self.rt60:g} s")
        return " + ".join(parts) or "clean"


def _field_names() -> str:
    return ", ".join(f.name for f in fields(Condition))


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    return float(value)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def colored_noise(kind: str, num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise: white, pink (power ~ 1/f) or brown (power ~ 1/f^2), by spectral shaping."""
    if kind not in ("white", "pink", "brown"):
        raise ValueError(f"colored_noise: kind must be white, pink or brown, got {kind!r}")
    white = rng.standard_normal(num_samples)
    if kind != "white" and num_samples > 1:
        spectrum = np.fft.rfft(white)
        freqs = np.fft.rfftfreq(num_samples)
        freqs[0] = freqs[1]  # avoid dividing by zero at DC; DC then gets the lowest bin's gain
        exponent = 0.5 if kind == "pink" else 1.0  # amplitude ~ f^-(power exponent / 2)
        white = np.fft.irfft(spectrum / freqs**exponent, n=num_samples)
        white -= white.mean()  # brown noise wanders; remove the offset
    rms = _rms(white)
    return (white / rms if rms > 0 else white).astype(np.float32)


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``speech`` plus ``noise`` scaled so that RMS(speech)/RMS(noise) is exactly ``snr_db``.

    The noise is tiled or cropped to the speech's length; both RMS values are taken over the
    whole clip (silences included), the usual "global" SNR.
    """
    if len(noise) == 0 or len(speech) == 0:
        raise ValueError("mix_at_snr: empty speech or noise")
    noise = np.resize(noise.astype(np.float64), len(speech))  # np.resize tiles
    speech_rms, noise_rms = _rms(speech), _rms(noise)
    if speech_rms == 0 or noise_rms == 0:
        raise ValueError("mix_at_snr: speech or noise is silent, the SNR is undefined")
    gain = speech_rms / (noise_rms * 10 ** (snr_db / 20))
    return (speech.astype(np.float64) + gain * noise).astype(np.float32)


def _room(rt60: float, rng: np.random.Generator) -> tuple[np.ndarray, float, int]:
    """Random room dimensions with the absorption and image order that give ``rt60`` (Sabine)."""
    dims = np.array([rng.uniform(lo, hi) for lo, hi in ROOM_RANGES])
    for _ in range(50):
        try:
            absorption, max_order = pra.inverse_sabine(rt60, dims)
            return dims, absorption, max_order
        except ValueError:  # walls would need to absorb > 100 %: too big a room for so short an RT60
            dims = np.maximum(dims * 0.9, MIN_ROOM)
    raise ValueError(f"no room found for RT60 {rt60:g} s")


def room_impulse_response(rt60: float, rng: np.random.Generator, sample_rate: int = 16000) -> np.ndarray:
    """Impulse response of a random shoebox room with reverberation time ``rt60`` seconds.

    Early reflections come from pyroomacoustics' image-source method, capped at order
    ``ISM_MAX_ORDER`` to stay fast (full order takes seconds at RT60 >= 1 s). Beyond the time up
    to which that capped order is complete, the tail is continued statistically: Gaussian noise
    decaying by 60 dB per ``rt60``, matched in level to the image-source part. The response
    starts just before the direct path, whose peak is normalised to 1.
    """
    dims, absorption, max_order = _room(rt60, rng)
    margin = np.full(3, WALL_MARGIN)
    for _ in range(100):  # source and microphone at least 0.5 m apart as well
        source, mic = rng.uniform(margin, dims - margin, size=(2, 3))
        if np.linalg.norm(source - mic) >= 0.5:
            break
    order = min(max_order, ISM_MAX_ORDER)
    room = pra.ShoeBox(dims, fs=sample_rate, materials=pra.Material(absorption), max_order=order)
    room.add_source(source)
    room.add_microphone(mic)
    room.compute_rir()
    rir = np.asarray(room.rir[0][0], dtype=np.float64)
    c = pra.constants.get("c")
    delay = pra.constants.get("frac_delay_length") // 2  # centre of pyroomacoustics' fractional-delay filter
    direct = int(round(np.linalg.norm(source - mic) / c * sample_rate)) + delay
    rir = rir[max(direct - 8, 0):]  # keep the speech aligned: drop the propagation delay
    rir /= np.abs(rir[6:11]).max()  # the direct path sits at index 8 (+-0.5); reflections arrive later

    if order < max_order:
        # Images up to ``order`` cover every path shorter than (order + 1) * the smallest
        # room-slice radius (see pra.inverse_sabine); past 80 % of that, use the statistical tail.
        pairs = ((dims[0], dims[1]), (dims[0], dims[2]), (dims[1], dims[2]))
        radius = min(a * b / np.hypot(a, b) for a, b in pairs)
        cross = min(int(0.8 * (order + 1) * radius / c * sample_rate), len(rir) - 1)
        length = max(len(rir), int(1.1 * rt60 * sample_rate))
        t = np.arange(length) / sample_rate
        envelope = np.exp(-6.908 * t / rt60)  # amplitude, -60 dB at t = rt60
        window = slice(max(cross - sample_rate // 50, 1), cross)  # 20 ms before the crossover
        level = np.sqrt(np.mean(rir[window] ** 2) / np.mean(envelope[window] ** 2))
        tail = level * envelope * rng.standard_normal(length)
        fade = np.clip((np.arange(length) - cross) / (sample_rate // 100) + 1.0, 0.0, 1.0)  # 10 ms ramp
        early = np.zeros(length)
        early[:len(rir)] = rir
        rir = early * (1.0 - fade) + tail * fade
    return rir.astype(np.float32)


def _babble(pool: list[np.ndarray], talkers: int, num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Sum of ``talkers`` random clips from ``pool``, each at unit RMS, randomly offset and tiled."""
    picks = rng.choice(len(pool), size=talkers, replace=len(pool) < talkers)
    total = np.zeros(num_samples)
    for index in picks:
        clip = np.asarray(pool[index], dtype=np.float64)
        rms = _rms(clip) if len(clip) else 0.0
        if rms == 0:
            raise ValueError(f"babble pool clip {index} is empty or silent")
        start = int(rng.integers(len(clip)))
        total += np.resize(np.roll(clip / rms, -start), num_samples)
    return total


def apply_condition(audio: np.ndarray, condition: Condition, rng: np.random.Generator,
                    babble_pool: list[np.ndarray] | None = None) -> np.ndarray:
    """``audio`` (16 kHz) under ``condition``: reverberation first, then noise at the SNR.

    The SNR is relative to the reverberant speech. The result keeps the input's length, is
    float32 and is scaled down (never clipped) if its peak would exceed ``PEAK_LIMIT``.
    """
    out = np.asarray(audio, dtype=np.float64)
    if condition.rt60 is not None:
        out = fftconvolve(out, room_impulse_response(condition.rt60, rng))[:len(out)]
    if condition.noise is not None:
        assert condition.snr_db is not None  # guaranteed by Condition
        if condition.noise == "babble":
            if not babble_pool:
                raise ValueError("babble noise needs a babble_pool of other talkers' speech")
            noise = _babble(babble_pool, condition.babble_talkers, len(out), rng)
        else:
            noise = colored_noise(condition.noise, len(out), rng)
        out = mix_at_snr(out, noise, condition.snr_db)
    peak = float(np.abs(out).max()) if len(out) else 0.0
    if peak > PEAK_LIMIT:
        out = out * (PEAK_LIMIT / peak)
    return out.astype(np.float32)
