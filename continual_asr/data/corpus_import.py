"""``casr data import``: a corpus on disk -> lhotse manifests per task and split, and a stream YAML.

lhotse's own recipe prepares the corpus (its RecordingSet and SupervisionSet; nothing is
downloaded), then casr groups the utterances into tasks by a field of the corpus (L2-ARCTIC:
the speakers' first language) and splits every task so that evaluation never hears a training
voice or sentence: each task's speakers are ranked by a hash and about 25 % (at least two) are held
out, the rest train; every distinct sentence (normalised transcript) is drawn into test (15 %),
dev (10 %) or train, once for the whole corpus, so no test or dev sentence is in any task's
training data. A held-out voice speaks in both dev and test (other sentences), so dev is drawn
like test and can predict it (with a voice of its own, one unusual dev voice can rank settings
unlike test: docs/tuning.md, "Dev drawn like test"). A training voice keeps its train-sentence
utterances, a held-out voice its dev- and test-sentence ones; the rest are left out. One task
is the base, one the zero-shot task (test and dev only), the others the stream's tasks,
alphabetically unless named.

Corpora: L2-ARCTIC (a task per first language), VCTK and Common Voice (a task per accent;
accents with fewer than three speakers are left out, and the import says which), LibriSpeech
(one accent: its parts and acoustic conditions as tasks), CMU ARCTIC (its US voices, their
conditions, its unlabelled voices; its three other accents, one voice each, are zero-shot). A corpus is one entry of
``CORPORA``: lhotse's recipe, the field that names an utterance's task, and derived tasks.
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
    # (corpus dir, manifests dir) -> [(recordings, supervisions, part)], lhotse's recipe
    prepare: Callable[[Path, Path], list[tuple[object, object, str]]]
    task_of: Callable[[object, str], str | None]  # (a supervision, its part) -> its task (None: left out)
    # Tasks made from a group's data under an acoustic condition: (name, group, condition)
    derived: tuple[tuple[str, str, tuple], ...] = ()
    base: str | None = None  # the default base task (None: the first alphabetically)
    zero_shot: str | None = None  # the default zero-shot task (None: the last other one)


def _l2_arctic(corpus_dir: Path, manifests: Path) -> list[tuple[object, object]]:
    from lhotse.recipes import prepare_l2_arctic

    read = prepare_l2_arctic(corpus_dir, manifests)["read"]  # the suitcase retellings are minutes long
    return [(read["recordings"], read["supervisions"], "read")]


def _vctk(corpus_dir: Path, manifests: Path) -> list[tuple[object, object]]:
    from lhotse.recipes import prepare_vctk

    # The Edinburgh release (wav48_silence_trimmed/, FLAC, two microphones) or the older one (wav48/).
    edinburgh = (corpus_dir / "wav48_silence_trimmed").is_dir()
    prepared = prepare_vctk(corpus_dir, manifests, use_edinburgh_vctk_url=edinburgh)
    return [(prepared["recordings"], prepared["supervisions"], "all")]


def _common_voice(corpus_dir: Path, manifests: Path) -> list[tuple[object, object]]:
    from lhotse.recipes import prepare_commonvoice

    # Every language folder found and every part (train, dev, test): casr splits them again so
    # that no dev or test sentence is in any task's training data.
    prepared = prepare_commonvoice(corpus_dir, manifests, languages="auto")
    return [(parts[p]["recordings"], parts[p]["supervisions"], p) for lang in sorted(prepared)
            for parts in [prepared[lang]] for p in sorted(parts)]


def _librispeech(corpus_dir: Path, manifests: Path) -> list[tuple[object, object, str]]:
    from lhotse.recipes import prepare_librispeech

    parts = prepare_librispeech(corpus_dir, output_dir=manifests)  # LibriSpeech's parts, or mini LibriSpeech's
    return [(parts[p]["recordings"], parts[p]["supervisions"], p) for p in sorted(parts)]


def _cmu_arctic(corpus_dir: Path, manifests: Path) -> list[tuple[object, object, str]]:
    from lhotse.recipes import prepare_cmu_arctic

    manifests.mkdir(parents=True, exist_ok=True)  # this recipe, unlike the others, writes without creating it
    prepared = prepare_cmu_arctic(corpus_dir, manifests)
    return [(prepared["recordings"], prepared["supervisions"], "all")]


def _cmu_arctic_group(supervision, part: str) -> str:
    # lhotse knows the accent of 7 of its 18 voices: four US ones and one each Canadian, Scottish
    # and Indian. One voice per accent cannot be split into train, dev and test voices, so those
    # three are one task; the voices without a label (of several accents, not recorded) another.
    accent = str((supervision.custom or {}).get("accent") or "")
    if not accent:
        return "unlabelled"
    return "us" if accent.startswith("US") else "other-accents"


def _librispeech_group(supervision, part: str) -> str:
    # "clean" and "other" are LibriSpeech's two difficulties (by how well a first recogniser did).
    return "other" if "other" in part else "clean"


def _accent(supervision, part: str = "") -> str | None:
    custom = supervision.custom or {}
    return str(custom.get("accent") or custom.get("accents") or "").lower() or None


CORPORA: dict[str, Corpus] = {
    "l2-arctic": Corpus("l2-arctic", "L2-ARCTIC: non-native English read speech, a task per first language",
                        _l2_arctic, _accent),
    "vctk": Corpus("vctk", "VCTK: English read speech, a task per accent", _vctk, _accent),
    # One accent only: the stream's tasks are its harder part and acoustic conditions on its clean part.
    "librispeech": Corpus("librispeech", "LibriSpeech (or mini LibriSpeech): read audiobooks; tasks: the 'other' part "
                          "and the clean part under noise and reverberation", _librispeech, _librispeech_group,
                          derived=(("clean-pink-10db", "clean", (("noise", "pink"), ("snr_db", 10))),
                                   ("clean-reverb-0.7s", "clean", (("rt60", 0.7),)),
                                   ("clean-white-5db", "clean", (("noise", "white"), ("snr_db", 5)))),
                          base="clean", zero_shot="clean-white-5db"),
    "cmu-arctic": Corpus("cmu-arctic", "CMU ARCTIC: the same prompts read by each voice; base: its US voices, tasks: "
                         "the voices without an accent label and the US voices under noise and reverberation, "
                         "zero-shot: its Canadian, Scottish and Indian voices", _cmu_arctic, _cmu_arctic_group,
                         derived=(("us-pink-10db", "us", (("noise", "pink"), ("snr_db", 10))),
                                  ("us-reverb-0.7s", "us", (("rt60", 0.7),))),
                         base="us", zero_shot="other-accents"),
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


MIN_SPEAKERS = 3  # two held-out voices and at least one training voice
HELD_OUT = "held-out"  # a speaker of dev and test, never of train


def speaker_splits(speakers: set[str], task: str) -> dict[str, str]:
    """A task's speakers -> held-out or train, ranked by a hash: as many held-out voices as
    the dev and test shares of the sentences would give each split (at least one each), the rest
    train."""
    ranked = sorted(speakers, key=lambda s: (_rank("speaker", task, s), s))
    held_out = sum(max(1, round(len(ranked) * SENTENCE_SHARES[split] / 100)) for split in ("test", "dev"))
    return {s: HELD_OUT if i < held_out else "train" for i, s in enumerate(ranked)}


def split_of(speaker_split: str, sentence_split: str) -> str | None:
    """Where an utterance goes: a training voice's train sentence to train, a held-out voice's dev
    or test sentence to dev or test; None (left out) where they do not agree."""
    if speaker_split == HELD_OUT:
        return sentence_split if sentence_split != "train" else None
    return "train" if sentence_split == "train" else None


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
    parts = [(CutSet.from_manifests(recordings=r, supervisions=s).trim_to_supervisions(keep_overlapping=False), part)
             for r, s, part in prepared]
    placed, left_out = _place(parts, spec)
    tasks = {name: (name, None) for name in sorted(placed)}
    tasks.update({name: (group, condition) for name, group, condition in spec.derived if group in placed})
    base, zero_shot = _roles(corpus, corpus_dir, tasks, base or spec.base, zero_shot or spec.zero_shot)
    files = {}
    for group, splits in placed.items():
        for split in SPLITS:
            if not splits[split]:
                raise DataError(f"task '{group}' has no {split} utterances once voices and sentences are kept "
                                "apart; the corpus is too small")
            files[group, split] = f"{group}_{split}_cuts.jsonl.gz"
            CutSet.from_cuts(splits[split]).to_file(out / files[group, split])
    learned = [t for t in tasks if t not in (base, zero_shot)]
    return _write_stream(out, spec, corpus_dir, files, tasks, base, learned, zero_shot), left_out


def _roles(corpus: str, corpus_dir: Path, tasks: dict, base: str | None, zero_shot: str | None) -> tuple[str, str]:
    """The base and zero-shot tasks: as named, else the first and the last (another) task."""
    names = list(tasks)
    if len(names) < 3:
        raise DataError(f"{corpus} in {corpus_dir} has {len(names)} task(s) with {MIN_SPEAKERS} or more speakers "
                        f"({', '.join(names) or 'none'}); a stream needs a base task, at least one task to learn "
                        "and a zero-shot task")
    base = base or names[0]
    zero_shot = zero_shot or next(t for t in reversed(names) if t != base)
    for role, name in (("--base", base), ("--zero-shot", zero_shot)):
        if name not in tasks:
            raise DataError(f"{role} {name}: no such task in {corpus} (its tasks: {', '.join(names)})")
    if base == zero_shot:
        raise DataError("--base and --zero-shot must be different tasks")
    return base, zero_shot


def _place(parts: list, spec: Corpus) -> tuple[dict[str, dict[str, list]], dict[str, int]]:
    """(group -> split -> its cuts, voices and sentences kept apart; the groups with too few
    speakers). ``parts``: (cuts, the corpus part they come from)."""
    by_task: dict[str, list] = defaultdict(list)
    for cuts, part in parts:
        for cut in cuts:
            task = spec.task_of(cut.supervisions[0], part)
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
            split = split_of(speakers[cut.supervisions[0].speaker or cut.recording_id],
                             sentences[normalize_text(cut.supervisions[0].text or "")])
            if split:
                placed[task][split].append(cut)
    return placed, left_out


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def _write_stream(out: Path, spec: Corpus, corpus_dir: Path, files: dict, tasks: dict, base: str, learned: list[str],
                  zero_shot: str) -> Path:
    import yaml

    def task(name: str, splits=SPLITS) -> dict:
        group, condition = tasks[name]
        return {"name": name, **{split: files[group, split] for split in splits},
                **({"condition": dict(condition)} if condition else {})}

    stream = {"name": spec.name,
              "description": f"{spec.description}; imported by casr data import from {corpus_dir.resolve()}: "
                             "voices and sentences of dev and test never in training",
              "base": task(base), "tasks": [task(t) for t in learned], "zero_shot": task(zero_shot, ("dev", "test"))}
    path = out / "stream.yaml"
    path.write_text(yaml.safe_dump(stream, sort_keys=False), encoding="utf-8")
    return path
