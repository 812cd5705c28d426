"""Sentence source, espeak synthesis and acoustic conditions (fast, deterministic, tiny inputs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from continual_asr.data.conditions import (Condition, apply_condition, colored_noise, mix_at_snr,
                                           room_impulse_response)
from continual_asr.data import text as text_module
from continual_asr.data.synth import SAMPLE_RATE, EspeakSynthesizer, list_voices, speaker_variants
from continual_asr.data.text import (generate_sentences, normalize_text, read_sentences, sentence_pool,
                                     vocabulary)

# --- text -------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw, expected", [
    ("Hello, World!", "hello world"),
    ("Don\u2019t  STOP \u2018quoted\u2019 text.", "don't stop quoted text"),
    ("rock 'n' roll, the dogs' bowls", "rock n roll the dogs bowls"),
    ("Caf\u00e9 na\u00efve", "cafe naive"),
    ("  It's 10:30 o'clock\t\n", "it's 10 30 o'clock"),
    ("\uff26\uff35\uff2c\uff2c\u3000width", "full width"),  # NFKC folds full-width forms
    ("a\u2014b (c) [d] \u00abe\u00bb #1", "a b c d e 1"),
    ("thr\u00adee fo\u200dur", "three four"),  # invisible format characters join, not split
    ("", ""),
])
def test_normalize_text(raw: str, expected: str) -> None:
    assert normalize_text(raw) == expected
    assert normalize_text(expected) == expected  # idempotent


def test_generator_is_deterministic_unique_and_bounded() -> None:
    first = generate_sentences(300, seed=7)
    assert first == generate_sentences(300, seed=7)
    assert first != generate_sentences(300, seed=8)
    assert len(set(first)) == 300
    vocab = vocabulary()
    for sentence in first:
        words = sentence.split()
        assert 4 <= len(words) <= 12
        assert normalize_text(sentence) == sentence
        assert set(words) <= vocab, set(words) - vocab


def test_generator_exclusion_and_vocabulary_size(monkeypatch: pytest.MonkeyPatch) -> None:
    train = generate_sentences(200, seed=1)
    test = generate_sentences(100, seed=1, exclude=set(train))
    assert not set(train) & set(test)
    assert 800 <= len(vocabulary()) <= 1500
    assert generate_sentences(0, seed=1) == []
    monkeypatch.setitem(text_module._GRAMMAR, "sentence", ["the cat sat down", "the dog sat down"])
    with pytest.raises(ValueError, match="only 1 of 2 new sentences"):
        generate_sentences(2, seed=1, exclude={"the cat sat down"})


def test_generator_independent_of_hash_seed() -> None:
    code = "from continual_asr.data.text import generate_sentences as g; print(g(50, 3))"
    outs = {subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": str(h)},
                           cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True,
                           check=True).stdout for h in (1, 2)}
    assert len(outs) == 1


def test_read_sentences_and_errors(tmp_path) -> None:
    path = tmp_path / "lines.txt"
    path.write_text("# a comment\nHello, World!\n\n   \nIt\u2019s   fine.\n  # indented comment\nhello world\n",
                    encoding="utf-8")
    assert read_sentences(path) == ["hello world", "it's fine", "hello world"]
    picked = sentence_pool(str(path), 2, seed=0)
    assert sorted(picked) == ["hello world", "it's fine"]
    assert sentence_pool(str(path), 1, seed=0) == picked[:1]  # prefixes agree
    with pytest.raises(ValueError, match="lines.txt: only 2 distinct"):
        sentence_pool(str(path), 3, seed=0)

    with pytest.raises(ValueError, match=r"missing\.txt: file not found"):
        read_sentences(tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"empty\.txt: no usable sentences"):
        read_sentences(empty)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine line\nbroken \xff\xfe line\n")
    with pytest.raises(ValueError, match=r"bad\.txt: line 2: not valid UTF-8"):
        read_sentences(bad)
    assert sentence_pool("generator", 5, seed=3) == sentence_pool("generator", 50, seed=3)[:5]


# --- synthesis --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synth() -> EspeakSynthesizer:
    return EspeakSynthesizer()


def test_synthesis_returns_16k_float_speech(synth: EspeakSynthesizer) -> None:
    audio = synth.synthesize("the old farmer sold two cows", "en-us+m1")
    assert SAMPLE_RATE == 16000
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 0.3 <= len(audio) / SAMPLE_RATE <= 6.0
    assert 0.05 < np.abs(audio).max() <= 1.0


def test_synthesis_is_reproducible_and_voices_differ(synth: EspeakSynthesizer) -> None:
    text = "please open the window"
    first = synth.synthesize(text, "en-us+f2", rate=160, pitch=40)
    synth.synthesize("something else in between", "en+m3", rate=220, pitch=70)
    assert np.array_equal(first, synth.synthesize(text, "en-us+f2", rate=160, pitch=40))
    other = synth.synthesize(text, "en-us+m1", rate=160, pitch=40)
    n = min(len(first), len(other))
    assert len(first) != len(other) or not np.allclose(first[:n], other[:n], atol=1e-3)


def test_unknown_voices_raise(synth: EspeakSynthesizer) -> None:
    for voice in ("en-gb", "xx-nothing", "en-us+nosuchvariant", "m3"):
        with pytest.raises(ValueError, match="unknown espeak voice"):
            synth.synthesize("hello there", voice)
    assert {"en-us", "en", "en-029"} <= set(list_voices())
    assert len(speaker_variants()) >= 10


# --- conditions -------------------------------------------------------------------------------


def _tone(seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)


@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 10.0, 35.0])
def test_mix_at_snr_is_exact(snr_db: float) -> None:
    speech = _tone()
    noise = colored_noise("white", 3000, np.random.default_rng(0))  # shorter: gets tiled
    mixed = mix_at_snr(speech, noise, snr_db)
    residual = mixed.astype(np.float64) - speech
    measured = 20 * np.log10(np.sqrt(np.mean(speech.astype(np.float64) ** 2)) / np.sqrt(np.mean(residual ** 2)))
    assert len(mixed) == len(speech)
    assert abs(measured - snr_db) < 0.1


def test_colored_noise_spectra() -> None:
    rng = np.random.default_rng(1)
    powers = {}
    for kind in ("white", "pink", "brown"):
        noise = colored_noise(kind, 32000, rng)
        assert abs(np.sqrt(np.mean(noise.astype(np.float64) ** 2)) - 1) < 1e-3
        spectrum = np.abs(np.fft.rfft(noise)) ** 2
        freqs = np.fft.rfftfreq(len(noise), 1 / SAMPLE_RATE)
        low = spectrum[(freqs > 50) & (freqs < 500)].mean()
        high = spectrum[(freqs > 4000) & (freqs < 7500)].mean()
        powers[kind] = low / high
    assert powers["pink"] > 5 * powers["white"]
    assert powers["brown"] > 5 * powers["pink"]


def _decay_time(rir: np.ndarray, drop_db: float = 20.0) -> float:
    energy = np.cumsum((rir.astype(np.float64) ** 2)[::-1])[::-1]  # Schroeder backward integral
    level = 10 * np.log10(energy / energy[0] + 1e-30)
    return float(np.argmax(level < -drop_db)) / SAMPLE_RATE


def test_room_impulse_response_decay_grows_with_rt60() -> None:
    short = room_impulse_response(0.3, np.random.default_rng(2))
    long = room_impulse_response(1.2, np.random.default_rng(2))
    assert abs(short[8] - 1) < 1e-6 and abs(long[8] - 1) < 1e-6  # direct path normalised to 1
    assert _decay_time(long) > 2 * _decay_time(short)


def test_apply_condition_deterministic_and_keeps_length() -> None:
    speech = _tone(0.8)
    pool = [_tone(0.3), colored_noise("pink", 4000, np.random.default_rng(5))]
    for condition in (Condition(noise="pink", snr_db=5, rt60=0.5), Condition(noise="babble", snr_db=0),
                      Condition(rt60=0.9), Condition(noise="brown", snr_db=-10)):
        runs = [apply_condition(speech, condition, np.random.default_rng(9), pool) for _ in range(2)]
        assert np.array_equal(runs[0], runs[1])
        assert runs[0].dtype == np.float32 and len(runs[0]) == len(speech)
        assert np.abs(runs[0]).max() <= 1.0
        assert not np.array_equal(runs[0], apply_condition(speech, condition, np.random.default_rng(10), pool))
    loud = apply_condition(speech * 3, Condition(noise="white", snr_db=0), np.random.default_rng(0))
    assert 0.9 < np.abs(loud).max() <= 1.0  # scaled down, not clipped
    with pytest.raises(ValueError, match="babble_pool"):
        apply_condition(speech, Condition(noise="babble", snr_db=0), np.random.default_rng(0))


def test_condition_validation() -> None:
    assert Condition().is_clean and Condition().describe() == "clean"
    assert Condition(noise="pink", snr_db=10, rt60=0.6).describe() == "pink 10 dB + RT60 0.6 s"
    assert Condition.from_dict(None, "t") == Condition()
    assert Condition.from_dict({"noise": "white", "snr_db": 20}, "t").snr_db == 20.0
    bad = [({"noise": "purple", "snr_db": 5}, "valid: white, pink, brown, babble"),
           ({"noise": "pink"}, "snr_db"), ({"rt60": 3.0}, "rt60"), ({"rt60": 0.05}, "rt60"),
           ({"noise": "white", "snr_db": 70}, "snr_db"), ({"noise": "white", "snr_db": -11}, "snr_db"),
           ({"noise": "babble", "snr_db": 0, "babble_talkers": 0}, "babble_talkers")]
    for mapping, message in bad:
        with pytest.raises(ValueError, match=message):
            Condition.from_dict(mapping, "stream.tasks[0].condition")
    with pytest.raises(ValueError, match=r"^t\.c: unknown condition field 'x' \(valid: noise, snr_db, rt60, "
                                         r"babble_talkers\)$"):
        Condition.from_dict({"x": 1}, "t.c")


def test_synthesis_processes_write_the_same_files(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks synthesized in other processes give the same audio and manifests as one process
    (each utterance's seeds name it), babble included; and a task is sealed like any other.
    Each held-out speaker variant speaks an equal share of the test set."""
    from continual_asr.data import prepare, workers
    from continual_asr.stream import load_stream

    task = next(t for t in load_stream("accents-then-noise").tasks if t.condition.noise == "babble")
    counts = {"train": 10, "dev": 2, "test": 6}
    monkeypatch.setattr(workers, "MIN_PARALLEL", 4)  # so this small task goes to 2 processes

    def contents(folder: Path) -> dict[str, bytes]:
        return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}

    serial = prepare.prepare_task(task, tmp_path / "one", counts, progress=False)
    with workers.DataWorkers(2) as pool:
        parallel = prepare.prepare_task(task, tmp_path / "two", counts, progress=False, workers=pool)
        assert pool._pool is not None  # the workers did synthesize
    assert len(list((parallel / "audio").glob("train-*.flac"))) == 10
    assert contents(serial) == contents(parallel)
    test_voices = [json.loads(line)["voice"].split("+")[1] for line in (serial / "test.jsonl").open()]
    assert sorted(test_voices) == sorted(prepare.split_speakers("test", task.speakers))
