"""One split of one task, from its manifest to checked, cached log-mel features.

Synthesized tasks go through here too (their cache folder holds a JSONL manifest), so every
utterance meets the same checks. The cache entry is keyed by the manifest's bytes, the size and
modification time of every audio file it names, and everything else that decides the result
(feature size, cap, condition, maximum length): an edited manifest or a replaced audio file is
read again. Entries are built through continual_asr.cache (one builder, atomic, self-healing).
"""

from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from ..errors import DataError
from ..cache import cached
from ..stream import HELD_OUT_PERCENT, TaskSpec
from .conditions import Condition, apply_condition
from .features import SplitFeatures, log_mel, read_audio
from .manifest import ManifestRow, Problem, read_manifest
from .prepare import babble_pool, seed_of
from .synth import SAMPLE_RATE, EspeakSynthesizer
from .workers import DataWorkers

FEATURE_VERSION = 3  # bump when features or checks change, to invalidate caches
# A declared duration is "far from the real one" beyond max(0.5 s, 10 %): rounding and codec
# padding stay well inside, a manifest pointing at the wrong file or a truncated one does not.
DURATION_TOLERANCE = (0.5, 0.10)
MIN_SECONDS = 0.025  # one analysis window; anything shorter has no feature frame at all


def load_split(task: TaskSpec, split: str, manifest: Path, condition: Condition, *, n_mels: int, limit: int,
               max_seconds: float, cache_dir: Path, progress: bool = True, held_out: str = "",
               waveform: bool = False, workers: DataWorkers | None = None) -> SplitFeatures:
    """The usable utterances among the first ``limit`` (0 = all) of ``manifest``, and the problems of the rest.

    ``condition`` is applied to every utterance (seeded per utterance and split, so
    deterministic); pass the clean condition for audio that already carries it. ``held_out``:
    "dev" reads only the share of the manifest held out as dev (:func:`hold_out`), "train" all
    but it (then the manifest's problems are reported here), "" the whole manifest. ``waveform``:
    keep the 16 kHz samples themselves (a Hugging Face base's input) instead of log-mel frames.
    ``workers``: processes to compute features in on a cold cache (default: this one; the
    features are the same for any number).
    """
    rows, problems = read_manifest(manifest, 0 if held_out else limit)
    if held_out:
        rows = hold_out(rows)[held_out == "dev"][: limit or None]
        problems = problems if held_out == "train" else []
    key = _cache_key(manifest, rows, condition, task, split, 0 if waveform else n_mels, limit, max_seconds, waveform)
    entry = Path(cache_dir) / "features" / f"{task.name}-{split}-{key}.pt"

    def load(path: Path) -> SplitFeatures:
        data = torch.load(path, weights_only=True)
        return SplitFeatures(data["features"], data["texts"], data["seconds"], data["lines"], str(manifest.resolve()),
                             [Problem(*p) for p in data["problems"]], data["digest"])

    def build(tmp: Path) -> SplitFeatures:
        result = _compute(task, split, manifest, rows, problems, condition, n_mels, max_seconds, progress, waveform,
                          workers or DataWorkers())
        torch.save({"features": result.features, "texts": result.texts, "seconds": result.seconds,
                    "lines": result.lines, "problems": [[p.file, p.line, p.message] for p in result.problems],
                    "digest": result.digest}, tmp)
        return result

    return cached(entry, load, build, "features")


def _compute(task: TaskSpec, split: str, manifest: Path, rows: list[ManifestRow], problems: list[Problem],
             condition: Condition, n_mels: int, max_seconds: float, progress: bool, waveform: bool,
             workers: DataWorkers) -> SplitFeatures:
    pool = babble_pool(task, split, EspeakSynthesizer()) if condition.noise == "babble" and rows else None
    job = _FeatureJob(task.seed, task.name, split, str(manifest.resolve()), condition, pool, n_mels, max_seconds,
                      waveform)
    features, texts, seconds, lines = [], [], [], []
    with tqdm(total=len(rows), desc=f"features {task.name}/{split}", unit="utt", disable=not progress,
              leave=False) as bar:
        for row, done in zip(rows, workers.map(job, rows, bar)):
            if isinstance(done, Problem):
                problems.append(done)
                continue
            features.append(torch.from_numpy(done[0]))
            texts.append(row.text)
            seconds.append(done[1])
            lines.append(row.line)
    problems.sort(key=lambda p: p.line)
    digest = hashlib.sha256()
    for feature, text in zip(features, texts):
        digest.update(text.encode() + b"\0" + feature.numpy().tobytes())
    return SplitFeatures(features, texts, seconds, lines, str(manifest.resolve()), problems, digest.hexdigest()[:16])


@dataclass(frozen=True)
class _FeatureJob:
    """Checks utterances of one split and computes their features (float16 log-mel frames, or the
    waveform), each from its own audio and seeds, so any chunking, in any process, gives the same."""

    task_seed: int
    task: str
    split: str
    source: str  # the manifest, as problems name it
    condition: Condition
    babble: list[np.ndarray] | None
    n_mels: int
    max_seconds: float
    waveform: bool

    def __call__(self, rows: Sequence[ManifestRow], first: int,
                 bar: tqdm | None = None) -> list[tuple[np.ndarray, float] | Problem]:
        results: list[tuple[np.ndarray, float] | Problem] = []
        with one_torch_thread():
            for row in rows:
                results.append(self.one(row))
                if bar is not None:
                    bar.update()
        return results

    def one(self, row: ManifestRow) -> tuple[np.ndarray, float] | Problem:
        """(features, seconds), or the problem that keeps ``row`` out."""
        try:
            audio, duration = _checked_audio(row, self.max_seconds)
            if not self.condition.is_clean:
                rng = np.random.default_rng(seed_of(self.task_seed, self.task, self.split, row.raw_path, row.text))
                audio = apply_condition(audio, self.condition, rng, self.babble)
        except (DataError, ValueError) as exc:  # ValueError: e.g. silent audio has no SNR
            return Problem(self.source, row.line, str(exc))
        feature = torch.from_numpy(audio) if self.waveform else log_mel(audio, self.n_mels)
        return feature.to(torch.float16).numpy(), round(duration, 3)


@contextmanager
def one_torch_thread():
    """torch on one thread for a while: features are many small tensors, for which a second
    thread gains nothing on a quiet machine and, beside other busy processes (a sweep's runs, a
    test suite), makes log-mel extraction tens of times slower as the threads wait on each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _checked_audio(row: ManifestRow, max_seconds: float) -> tuple[np.ndarray, float]:
    audio, seconds = read_audio(row.audio, row.raw_path, row.offset, row.duration)
    if row.duration is not None and row.offset is None:  # a stretch is as long as declared, or read_audio refused it
        allowed = max(DURATION_TOLERANCE[0], DURATION_TOLERANCE[1] * seconds)
        if abs(row.duration - seconds) > allowed:
            raise DataError(f"duration {row.duration:g} s in the manifest, but {row.raw_path} lasts {seconds:.2f} s")
    if seconds > max_seconds:
        raise DataError(f"{row.raw_path} lasts {seconds:.1f} s, longer than max_utterance_seconds={max_seconds:g} "
                        "(raise it with --set max_utterance_seconds=...)")
    if len(audio) < MIN_SECONDS * SAMPLE_RATE:
        raise DataError(f"{row.raw_path} lasts {seconds * 1000:.0f} ms, too short for one 25 ms feature frame")
    if not np.any(audio):  # a transcript over silence teaches the model to hallucinate it
        raise DataError(f"{row.raw_path} is silent (every sample is 0)")
    return audio, seconds


def hold_out(rows: list[ManifestRow]) -> tuple[list[ManifestRow], list[ManifestRow]]:
    """(train, dev): about ``HELD_OUT_PERCENT`` % of the rows held out as dev, each by a hash of
    its own audio path and transcript, so an utterance stays where it is when the manifest is
    reordered or grows (a choice made on dev is never later trained on). A manifest of two or
    more rows where no hash falls under the threshold holds out the row of the lowest hash.
    Both in manifest order."""
    if len(rows) < 2:
        return rows, []
    hashes = [seed_of("dev", row.raw_path, row.text) for row in rows]
    dev = {i for i, h in enumerate(hashes) if h % 1000 < HELD_OUT_PERCENT * 10}
    if not dev:
        dev = {min(range(len(rows)), key=lambda i: (hashes[i], i))}
    return [r for i, r in enumerate(rows) if i not in dev], [r for i, r in enumerate(rows) if i in dev]


def _cache_key(manifest: Path, rows: list[ManifestRow], condition: Condition, task: TaskSpec, split: str,
               n_mels: int, limit: int, max_seconds: float, waveform: bool) -> str:
    settings = {"version": FEATURE_VERSION, "n_mels": n_mels, "limit": limit, "max_seconds": max_seconds,
                "condition": asdict(condition)}
    if waveform:  # only then, so log-mel entries keep the keys they were cached under
        settings["frontend"] = "waveform"
    if not condition.is_clean:  # the condition's randomness is seeded by these
        settings["seeded_by"] = [task.seed, task.name, split]
    if condition.noise == "babble":  # the talkers' sentences and voices (babble_pool)
        settings["babble"] = [task.text, task.babble_start, list(task.babble_voices), list(task.speakers)]
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    try:
        digest.update(manifest.read_bytes())
    except OSError:
        digest.update(b"unreadable")
    for row in rows:
        try:
            stat = row.audio.stat()
            digest.update(f"{row.audio}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{row.audio}|missing\n".encode())
    return digest.hexdigest()[:16]
