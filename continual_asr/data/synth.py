"""In-process speech synthesis with libespeak-ng (shipped, with its voice data, by espeakng-loader).

espeak keeps global state (current voice, parameters, one output callback), so one engine per
process owns the library and every call runs under one lock. By default the library is reloaded
before each utterance so that the audio does not depend on earlier calls (see ``_Engine``).
Audio comes back as float32 mono at ``SAMPLE_RATE`` (16 kHz), resampled from espeak's 22050 Hz.
"""

from __future__ import annotations

import _ctypes
import ctypes
import os
import threading
import zlib
from functools import lru_cache
from math import gcd

import espeakng_loader
import numpy as np
from scipy.signal import firwin, resample_poly  # scipy comes with pyroomacoustics, so no new dependency

SAMPLE_RATE = 16000

# Values from espeak-ng's speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000
_RATE, _PITCH = 1, 3  # espeak_PARAMETER
_DEFAULT_RATE, _DEFAULT_PITCH = 175, 50  # espeak's defaults (words per minute, 0-100)
_SILENCE = 1e-3  # max |sample| below this counts as no speech

# Variants (voices/!v) that give clearly audible and mutually distinct speakers on the English
# accents. Chosen by measuring, on en-us, en and en-029, the median F0 and the long-term average
# spectrum of each variant and keeping a set whose pairwise distance is large (male, female, low,
# high, bright and dark voices); whisper/croak/robot-like variants are left out. Each was checked
# to give audible speech (peak > 0.1) on all eight English accents.
_SPEAKER_VARIANTS = ("m1", "f1", "m7", "f3", "m8", "f5", "david", "Andrea", "belinda", "Storm", "grandma",
                     "shelby", "Nguyen", "iven2", "pablo", "steph", "Alicia", "klatt", "Alex", "mike2", "anika")

_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class _Voice(ctypes.Structure):  # espeak_VOICE
    _fields_ = [("name", ctypes.c_char_p), ("languages", ctypes.c_char_p), ("identifier", ctypes.c_char_p),
                ("gender", ctypes.c_ubyte), ("age", ctypes.c_ubyte), ("variant", ctypes.c_ubyte),
                ("xx1", ctypes.c_ubyte), ("score", ctypes.c_int), ("spare", ctypes.c_void_p)]


class _Engine:
    """The process-wide libespeak-ng handle; use only while holding ``_LOCK``.

    espeak's output depends on hidden state left by earlier utterances (e.g. the phase of its
    pitch-flutter table, a static that nothing resets) and on a noise generator seeded from the
    clock. So that an utterance is a pure function of (text, voice, rate, pitch), a reproducible
    engine unloads and reloads the library before each utterance (dlclose resets every static;
    about 2 ms) and seeds the noise generator from the request. (Should other code in the process
    hold the same library, dlclose cannot unload it and calls are then merely close, not equal.)
    """

    def __init__(self) -> None:
        self.data_path = espeakng_loader.get_data_path()
        self.chunks: list[np.ndarray] = []
        self.callback = _SYNTH_CALLBACK(self._collect)  # keep a reference, or ctypes frees it
        self.lib: ctypes.CDLL | None = None
        self.voice: str | None = None  # the voice set in the loaded library
        self.used = False  # whether the loaded library has synthesized since it was loaded
        self._load()

    def _load(self) -> None:
        try:
            lib = ctypes.CDLL(espeakng_loader.get_library_path())
        except OSError as err:
            raise RuntimeError(f"cannot load libespeak-ng from espeakng-loader: {err}") from None
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
        self.native_rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, self.data_path.encode(), 0)
        if self.native_rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed with data at {self.data_path}")
        lib.espeak_SetSynthCallback(self.callback)
        self.lib, self.voice, self.used = lib, None, False

    def _reload(self) -> None:
        assert self.lib is not None
        self.lib.espeak_Terminate()
        handle = self.lib._handle
        self.lib = None
        _ctypes.dlclose(handle)  # the last reference: the next load starts from pristine statics
        self._load()

    def _collect(self, wav, num_samples: int, events) -> int:
        if wav and num_samples > 0:
            self.chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        return 0  # 0 = continue synthesis

    def synthesize(self, text: str, voice: str, rate: int, pitch: int, reproducible: bool) -> np.ndarray:
        if reproducible and self.used:
            self._reload()
        assert self.lib is not None
        if voice != self.voice:  # loading a voice reads files, so only do it when it changes
            self.voice = None
            if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise ValueError(f"unknown espeak voice {voice!r}")
            self.voice = voice
        # Set both every call: the output must not depend on what the previous call used.
        self.lib.espeak_SetParameter(_RATE, rate, 0)
        self.lib.espeak_SetParameter(_PITCH, pitch, 0)
        data = text.encode("utf-8")
        self.lib.espeak_ng_SetRandSeed(zlib.crc32(data + voice.encode()))
        self.chunks, self.used = [], True
        status = self.lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _ENDPAUSE,
                                       None, None)
        if status != 0:
            raise RuntimeError(f"espeak_Synth failed (error {status}) for voice {voice!r}")
        return np.concatenate(self.chunks) if self.chunks else np.zeros(0, dtype=np.int16)


_LOCK = threading.Lock()
_ENGINE: _Engine | None = None


def _engine() -> _Engine:
    """The lazily created singleton; call while holding ``_LOCK``."""
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = _Engine()
    return _ENGINE


@lru_cache(maxsize=1)
def list_voices() -> list[str]:
    """Names of the installed espeak voices (accents/languages), e.g. "en-us", "en", "en-029".

    These are the voice files' names, lowercased, which ``espeak_SetVoiceByName`` accepts; a
    speaker variant is appended with "+", e.g. "en-us+f2".
    """
    with _LOCK:
        entries = _engine().lib.espeak_ListVoices(None)
        names, i = set(), 0
        while entries[i]:
            names.add(os.path.basename(entries[i].contents.identifier.decode()).lower())
            i += 1
    return sorted(names)


@lru_cache(maxsize=1)
def list_variants() -> list[str]:
    """All speaker variant names shipped with espeak (the files in voices/!v)."""
    return sorted(os.listdir(os.path.join(espeakng_loader.get_data_path(), "voices", "!v")))


def speaker_variants() -> list[str]:
    """The default speaker variants: clearly audible and distinct from each other."""
    return list(_SPEAKER_VARIANTS)


def check_voice(voice: str) -> None:
    """Reject what espeak would accept silently but render wrongly (a bad variant, a bare variant)."""
    base, _, variant = voice.partition("+")
    if base.lower() not in list_voices():
        english = ", ".join(v for v in list_voices() if v.startswith("en"))
        raise ValueError(f"unknown espeak voice {voice!r}: {base!r} is not a voice (English ones: {english})")
    if "+" in voice and variant not in list_variants():
        raise ValueError(f"unknown espeak voice {voice!r}: no speaker variant {variant!r} "
                         f"(names are case-sensitive, e.g. {', '.join(_SPEAKER_VARIANTS[:6])})")


class EspeakSynthesizer:
    """Text to 16 kHz float32 speech with espeak-ng, in-process.

    With ``reproducible=True`` (the default) the audio depends only on the arguments of
    ``synthesize``, not on earlier calls (about 200 utterances/s); ``False`` skips the per-utterance
    reload (about 300/s) at the price of tiny call-order-dependent differences.
    """

    def __init__(self, reproducible: bool = True) -> None:
        self.reproducible = reproducible
        with _LOCK:
            self.native_rate = _engine().native_rate
        divisor = gcd(SAMPLE_RATE, self.native_rate)
        self._up, self._down = SAMPLE_RATE // divisor, self.native_rate // divisor
        # resample_poly's own low-pass filter (Kaiser, beta 5), designed once: it designs it again
        # on every call otherwise, a tenth of synthesis time. The same taps, so the same audio.
        max_rate = max(self._up, self._down)
        self._taps = firwin(20 * max_rate + 1, 1.0 / max_rate, window=("kaiser", 5.0)).astype(np.float32)

    def synthesize(self, text: str, voice: str, rate: int | None = None, pitch: int | None = None) -> np.ndarray:
        """Speech for ``text`` as float32 mono at 16 kHz in [-1, 1].

        ``voice`` is an espeak voice with an optional variant ("en-us", "en-us+f2"); ``rate`` is
        in words per minute (80-450, default 175) and ``pitch`` 0-100 (default 50).
        """
        rate = _DEFAULT_RATE if rate is None else int(rate)
        pitch = _DEFAULT_PITCH if pitch is None else int(pitch)
        if not 80 <= rate <= 450:
            raise ValueError(f"espeak rate must be 80..450 words per minute, got {rate}")
        if not 0 <= pitch <= 100:
            raise ValueError(f"espeak pitch must be 0..100, got {pitch}")
        if not text.strip():
            raise ValueError(f"cannot synthesize empty text (voice {voice!r})")
        check_voice(voice)
        with _LOCK:
            samples = _engine().synthesize(text, voice, rate, pitch, self.reproducible)
        audio = samples.astype(np.float32) / 32768.0
        if audio.size == 0 or np.abs(audio).max() < _SILENCE:
            raise ValueError(f"espeak voice {voice!r} produced no audible speech for {text[:40]!r}")
        audio = resample_poly(audio, self._up, self._down, window=self._taps).astype(np.float32)
        peak = float(np.abs(audio).max())
        return audio / peak if peak > 1.0 else audio  # resampling can overshoot; scale, never clip
