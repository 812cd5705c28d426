"""lhotse manifests as a task's data: a CutSet, or a SupervisionSet with its RecordingSet.

lhotse (the data layer of k2/icefall) describes a corpus as recordings (audio files, possibly
multi-channel), supervisions (a transcript for a stretch of one recording) and cuts (a stretch
with its supervisions). A task's ``train``/``dev``/``test`` may name:

- a CutSet manifest (``cuts*.jsonl.gz`` or ``.jsonl``): each cut one utterance, its text the
  texts of its supervisions joined;
- a SupervisionSet manifest: each supervision one utterance; its RecordingSet is the file beside
  it named as lhotse's recipes name it, ``supervisions`` replaced by ``recordings``.

Every utterance becomes a :class:`~continual_asr.data.manifest.ManifestRow` with the stretch's
offset and duration (channels are mixed down when the audio is read), checked like a NeMo
manifest's lines: each bad one is a Problem naming the manifest and the utterance's position.
Only recordings that are files on disk are read; nothing is downloaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .manifest import ManifestRow, Problem, add_row

LHOTSE_SUFFIX = ".jsonl.gz"
INSTALL_HINT = "pip install 'continual-asr[lhotse]'"


def is_lhotse_manifest(path: Path) -> bool:
    """A ``.jsonl.gz`` file, or a ``.jsonl`` file whose first record is a lhotse cut or supervision."""
    if path.name.lower().endswith(LHOTSE_SUFFIX):
        return True
    if path.suffix.lower() != ".jsonl" or not path.is_file():
        return False
    with path.open("rb") as stream:
        for raw in stream:
            if raw.strip():
                try:
                    record = json.loads(raw)
                except ValueError:
                    return False
                return isinstance(record, dict) and "audio_filepath" not in record and (
                    "recording" in record or "recording_id" in record)
    return False


def recordings_beside(supervisions: Path) -> Path:
    """The RecordingSet manifest lhotse's recipes write beside a SupervisionSet manifest."""
    return supervisions.with_name(supervisions.name.replace("supervisions", "recordings"))


def read_lhotse(path: Path, limit: int = 0) -> tuple[list[ManifestRow], list[Problem], int]:
    """The first ``limit`` (0 = all) utterances of a lhotse manifest: good rows, problems, and
    how many utterances were looked at."""
    file = str(path)
    try:
        from lhotse import CutSet, RecordingSet, SupervisionSet, load_manifest
    except ImportError:
        return [], [Problem(file, 0, f"a lhotse manifest needs lhotse ({INSTALL_HINT})")], 0
    try:
        manifest = load_manifest(path)
    except Exception as exc:  # lhotse raises many kinds on a bad file: say which, in one line
        return [], [Problem(file, 0, f"not a readable lhotse manifest ({_reason(exc)})")], 0
    if isinstance(manifest, SupervisionSet):
        beside = recordings_beside(path)
        if beside == path or not beside.is_file():
            return [], [Problem(file, 0, f"a SupervisionSet needs its RecordingSet beside it ({beside.name} "
                                          "not found); or give a CutSet")], 0
        try:
            recordings = load_manifest(beside)
        except Exception as exc:
            return [], [Problem(file, 0, f"its RecordingSet {beside.name} is unreadable ({_reason(exc)})")], 0
        return _rows(path, _stretches_of_supervisions(manifest, recordings, beside.name), limit)
    if isinstance(manifest, CutSet):
        return _rows(path, _stretches_of_cuts(manifest), limit)
    if isinstance(manifest, RecordingSet):
        return [], [Problem(file, 0, "a RecordingSet has no transcripts: give its SupervisionSet or a CutSet")], 0
    return [], [Problem(file, 0, f"a lhotse {type(manifest).__name__} holds no utterances: give a CutSet or "
                                 "a SupervisionSet")], 0


@dataclass(frozen=True)
class _Stretch:
    """One utterance of a lhotse manifest, whatever kind of manifest it came from."""

    recording: object | None  # lhotse Recording; None: ``missing`` says why
    text: str | None
    start: float
    duration: float
    utterance_id: str
    missing: str = ""


def _stretches_of_cuts(cuts) -> Iterator[_Stretch]:
    for cut in cuts:
        texts = [s.text for s in cut.supervisions if s.text]
        yield _Stretch(getattr(cut, "recording", None), " ".join(texts) if texts else None, cut.start, cut.duration,
                       cut.id, f"cut '{cut.id}' has no recording")


def _stretches_of_supervisions(supervisions, recordings, recordings_name: str) -> Iterator[_Stretch]:
    for supervision in supervisions:
        found = supervision.recording_id in recordings
        yield _Stretch(recordings[supervision.recording_id] if found else None, supervision.text, supervision.start,
                       supervision.duration, supervision.id,
                       f"recording '{supervision.recording_id}' is not in {recordings_name}")


def _rows(path: Path, stretches: Iterator[_Stretch], limit: int) -> tuple[list[ManifestRow], list[Problem], int]:
    """The first ``limit`` (0 = all) stretches as checked rows and problems, and how many were looked at."""
    rows: list[ManifestRow] = []
    problems: list[Problem] = []
    seen = 0
    for number, stretch in enumerate(stretches, start=1):
        if limit and seen >= limit:
            break
        seen += 1
        _add_stretch(rows, problems, path, number, stretch)
    return rows, problems, seen


def _add_stretch(rows: list[ManifestRow], problems: list[Problem], path: Path, number: int, stretch: _Stretch) -> None:
    """One utterance: a stretch of a recording that must be one file on disk."""
    recording = stretch.recording
    if recording is None:
        problems.append(Problem(str(path), number, stretch.missing))
        return
    sources = recording.sources
    if len(sources) != 1 or sources[0].type != "file":
        kinds = ", ".join(sorted({s.type for s in sources})) or "none"
        problems.append(Problem(str(path), number, f"recording '{recording.id}' is not one audio file on disk "
                                                   f"(sources: {kinds}); casr reads local files only"))
        return
    if recording.transforms:
        problems.append(Problem(str(path), number, f"recording '{recording.id}' has lhotse transforms "
                                                   "(speed, volume, ...); casr reads plain files only"))
        return
    add_row(rows, problems, path, number, {"audio_filepath": str(sources[0].source), "text": stretch.text,
                                           "duration": stretch.duration}, offset=float(stretch.start),
            utterance_id=stretch.utterance_id)


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:120]}" if text else type(exc).__name__
