"""``casr data import``: a corpus on disk -> lhotse manifests per task and split, and a stream YAML.

lhotse's own recipe prepares the corpus (its RecordingSet and SupervisionSet; nothing is
downloaded), then casr groups the utterances into tasks by a field of the corpus (L2-ARCTIC:
the speakers' first language) and splits every task so that evaluation never hears a training
voice or sentence: each task's speakers are ranked by a hash and the first goes to test, the
second to dev, the rest to train; every distinct sentence (normalised transcript) is drawn into
test, dev or train the same way, once for the whole corpus, so no test or dev sentence is in
any task's training data. An utterance keeps its place only where its speaker's and its
sentence's splits agree. One task is the base, one the zero-shot task (test and dev only), the
others the stream's tasks, alphabetically unless named.

Corpora: L2-ARCTIC (a task per first language: Arabic, Chinese, Hindi, Korean, Spanish,
Vietnamese), VCTK and Common Voice (a task per accent; accents with fewer than three speakers
are left out, and the import says which). A corpus is one entry of ``CORPORA``: lhotse's recipe and the field that names
an utterance's task.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import DataError
from .lhotse_manifests import INSTALL_HINT
from .text import normalize_text

SENTENCE_SHARES = {"test": 15, "dev": 10}  # percent of the distinct sentences; the rest: train
SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class Corpus:
    name: str
    description: str
    prepare: Callable[[Path, Path], list[tuple[object, object]]]  # (corpus dir, manifests dir) -> [(recordings, supervisions)]
    task_of: Callable[[object], str | None]  # a supervision's task (None: left out)


def _l2_arctic(corpus_dir: Path, manifests: Path) -> list[tuple[object, object]]:
    from lhotse.recipes import prepare_l2_arctic

    read = prepare_l2_arctic(corpus_dir, manifests)["read"]  # the suitcase retellings are minutes long
    return [(read["recordings"], read["supervisions"])]


def _vctk(corpus_dir: Path, manifests: Path) -> list[tuple[object, object]]:
    from lhotse.recipes import prepare_vctk

    # The Edinburgh release (wav48_silence_trimmed/, FLAC, two microphones) or the older one (wav48/).
    edinburgh = (corpus_dir / "wav48_silence_trimmed").is_dir()
    prepared = prepare_vctk(corpus_dir, manifests, use_edinburgh_vctk_url=edinburgh)
    return [(prepared["recordings"], prepared["supervisions"])]


def _common_voice(corpus_dir: Path, manifests: Path) -> list[tuple[object, object]]:
    from lhotse.recipes import prepare_commonvoice

    # Every language folder found and every part (train, dev, test): casr splits them again so
    # that no dev or test sentence is in any task's training data.
    prepared = prepare_commonvoice(corpus_dir, manifests, languages="auto")
    return [(parts[p]["recordings"], parts[p]["supervisions"]) for lang in sorted(prepared)
            for parts in [prepared[lang]] for p in sorted(parts)]


def _accent(supervision) -> str | None:
    custom = supervision.custom or {}
    return str(custom.get("accent") or custom.get("accents") or "").lower() or None


CORPORA: dict[str, Corpus] = {
    "l2-arctic": Corpus("l2-arctic", "L2-ARCTIC: non-native English read speech, a task per first language",
                        _l2_arctic, _accent),
    "vctk": Corpus("vctk", "VCTK: English read speech, a task per accent", _vctk, _accent),
    "commonvoice": Corpus("commonvoice", "Common Voice: read sentences, a task per accent its speakers gave "
                          "(speakers who gave none are left out)", _common_voice, _accent),
}


def _rank(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("/".join(parts).encode()).digest()[:8], "big")


def sentence_splits(texts: list[str]) -> dict[str, str]:
    """Each distinct normalised sentence -> train, dev or test (by a hash: stable as the corpus grows)."""
    distinct = sorted(set(texts), key=lambda t: (_rank("sentence", t), t))
    test = round(len(distinct) * SENTENCE_SHARES["test"] / 100)
    dev = round(len(distinct) * SENTENCE_SHARES["dev"] / 100)
    return {t: "test" if i < test else "dev" if i < test + dev else "train" for i, t in enumerate(distinct)}


MIN_SPEAKERS = 3  # a test voice, a dev voice and at least one training voice


def speaker_splits(speakers: set[str], task: str) -> dict[str, str]:
    """A task's speakers -> test (the first by hash), dev (the second), train (the rest)."""
    ranked = sorted(speakers, key=lambda s: (_rank("speaker", task, s), s))
    return {s: "test" if i == 0 else "dev" if i == 1 else "train" for i, s in enumerate(ranked)}


def import_corpus(corpus: str, corpus_dir: Path, out: Path, base: str | None = None,
                  zero_shot: str | None = None) -> tuple[Path, dict[str, int]]:
    """Prepare ``corpus`` from ``corpus_dir`` into ``out``: manifests/ (lhotse's), one CutSet per
    task and split, and stream.yaml; returns the stream file's path and the groups left out for
    having fewer than ``MIN_SPEAKERS`` speakers (name -> speakers)."""
    if corpus not in CORPORA:
        raise DataError(f"unknown corpus '{corpus}' (valid: {', '.join(CORPORA)})")
    if not corpus_dir.is_dir():
        raise DataError(f"corpus folder {corpus_dir} not found")
    try:
        from lhotse import CutSet
    except ImportError:
        raise DataError(f"casr data import runs lhotse's recipes ({INSTALL_HINT})") from None
    spec = CORPORA[corpus]
    out.mkdir(parents=True, exist_ok=True)
    try:
        prepared = spec.prepare(corpus_dir, out / "manifests")
    except (AssertionError, ValueError, KeyError, OSError, RuntimeError) as exc:
        raise DataError(f"lhotse could not prepare {corpus} from {corpus_dir} ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else 'no reason given'})") from None
    cuts = CutSet.from_manifests(recordings=prepared[0][0], supervisions=prepared[0][1])
    for recordings, supervisions in prepared[1:]:
        cuts = cuts + CutSet.from_manifests(recordings=recordings, supervisions=supervisions)
    cuts = cuts.trim_to_supervisions(keep_overlapping=False).to_eager()
    placed, left_out = _place(cuts, spec)
    tasks = sorted(placed)
    if len(tasks) < 3:
        raise DataError(f"{corpus} in {corpus_dir} has {len(tasks)} task(s) with {MIN_SPEAKERS} or more speakers "
                        f"({', '.join(tasks) or 'none'}); a stream needs a base task, at least one task to learn and a "
                        "zero-shot task")
    base = base or tasks[0]
    zero_shot = zero_shot or next(t for t in reversed(tasks) if t != base)
    for role, name in (("--base", base), ("--zero-shot", zero_shot)):
        if name not in placed:
            raise DataError(f"{role} {name}: no such task in {corpus} (its tasks: {', '.join(tasks)})")
    if base == zero_shot:
        raise DataError("--base and --zero-shot must be different tasks")
    files = {}
    for task, splits in placed.items():
        for split in SPLITS:
            if task == zero_shot and split == "train":
                continue
            if not splits[split]:
                raise DataError(f"task '{task}' has no {split} utterances once voices and sentences are kept apart; "
                                "the corpus is too small")
            name = f"{task}_{split}_cuts.jsonl.gz"
            CutSet.from_cuts(splits[split]).to_file(out / name)
            files[task, split] = name
    learned = [t for t in tasks if t not in (base, zero_shot)]
    return _write_stream(out, spec, corpus_dir, files, base, learned, zero_shot), left_out


def _place(cuts, spec: Corpus) -> tuple[dict[str, dict[str, list]], dict[str, int]]:
    """(task -> split -> its cuts, voices and sentences kept apart; the groups with too few speakers)."""
    by_task: dict[str, list] = defaultdict(list)
    for cut in cuts:
        task = spec.task_of(cut.supervisions[0])
        if task:
            by_task[_slug(task)].append(cut)
    sentences = sentence_splits([normalize_text(c.supervisions[0].text or "") for t in by_task.values() for c in t])
    placed: dict[str, dict[str, list]] = {}
    left_out: dict[str, int] = {}
    for task, task_cuts in sorted(by_task.items()):
        voices = {c.supervisions[0].speaker or c.recording_id for c in task_cuts}
        if len(voices) < MIN_SPEAKERS:
            left_out[task] = len(voices)
            continue
        speakers = speaker_splits(voices, task)
        placed[task] = {split: [] for split in SPLITS}
        for cut in task_cuts:
            voice = speakers[cut.supervisions[0].speaker or cut.recording_id]
            if voice == sentences[normalize_text(cut.supervisions[0].text or "")]:
                placed[task][voice].append(cut)
    return placed, left_out


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def _write_stream(out: Path, spec: Corpus, corpus_dir: Path, files: dict, base: str, learned: list[str],
                  zero_shot: str) -> Path:
    import yaml

    def task(name: str, splits=SPLITS) -> dict:
        return {"name": name, **{split: files[name, split] for split in splits}}

    stream = {"name": spec.name,
              "description": f"{spec.description}; imported by casr data import from {corpus_dir.resolve()}: "
                             "voices and sentences of dev and test never in training",
              "base": task(base), "tasks": [task(t) for t in learned], "zero_shot": task(zero_shot, ("dev", "test"))}
    path = out / "stream.yaml"
    path.write_text(yaml.safe_dump(stream, sort_keys=False), encoding="utf-8")
    return path
