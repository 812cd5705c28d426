"""Stream definitions: a YAML file per stream, resolved by name or path.

A stream has a base task (pretrains the base model), ordered tasks (one experience each) and a
held-out zero-shot task that no strategy trains on. A task is either synthesized (it names espeak
voices, optional speaker variants and utterance counts) or read from manifests (its ``train`` and
``test`` are paths, relative to the YAML file); either kind may have an acoustic condition
applied on top.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import re
from dataclasses import asdict, dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .config import PRESETS
from .data.conditions import Condition
from .data.manifest import MANIFEST_SUFFIXES, is_manifest_name
from .data.synth import check_voice
from .data.text import distinct_sentences
from .errors import StreamError, read_yaml

_TASK_NAME = re.compile(r"[A-Za-z0-9_+\-][A-Za-z0-9_.+\-]*")
HELD_OUT_PERCENT = 10  # of a manifest task's train, held out as its dev split when it names no dev manifest

TASK_FIELDS = ("name", "voice", "voices", "speakers", "condition", "train", "dev", "test", "text")
SYNTHESIS_FIELDS = ("voice", "voices", "speakers", "text")  # meaningless for a task read from manifests
MANIFEST_FIELDS = ("train_manifest", "dev_manifest", "test_manifest")
DEFAULT_DEV = 100  # utterances of a synthesized task's dev split unless the stream says otherwise
BABBLE_POOL_SIZE = 24  # other talkers' sentences per babble pool (one pool for train, one for dev and test)
BABBLE_VOICES = ("en-us", "en", "en-gb-x-rp")  # minus any zero-shot voice (never heard in training)
STREAM_FIELDS = ("name", "description", "text", "speakers", "defaults", "base", "tasks", "zero_shot", "seed", "preset")


@dataclass(frozen=True)
class TaskSpec:
    name: str
    voices: tuple[str, ...]
    condition: Condition
    train: int
    test: int
    text: str = "generator"  # "generator" or a path to a text file, one sentence per line
    speakers: tuple[str, ...] = ()  # espeak variants (m1, f2, ...); () = the built-in list
    seed: int = 0
    dev: int = 0
    # Where this task's sentences start in its stream's pool for its text source (train, dev,
    # test in turn): tasks take consecutive, disjoint parts, so no sentence is in two splits.
    text_start: int = 0
    babble_start: int = -1  # the babble pools' sentences in that pool (train pool, then eval pool); -1: none
    babble_voices: tuple[str, ...] = ()  # the babble talkers' voices: never a zero-shot voice
    train_manifest: str = ""  # absolute paths; set (and voices, train and test empty) for a task
    dev_manifest: str = ""  # read from manifests instead of synthesized (dev optional: else held out of train)
    test_manifest: str = ""

    @property
    def from_manifests(self) -> bool:
        return bool(self.test_manifest)

    def fingerprint(self) -> str:
        """Stable hash of everything that decides a synthesized task's audio."""
        # The manifest fields are left out: they decide nothing synthesized, and leaving them
        # out keeps the keys (and caches) of synthesized tasks what they were before them.
        payload = {k: v for k, v in asdict(self).items() if k not in MANIFEST_FIELDS}
        if self.text != "generator":  # the sentences and the file's name (it seeds their order: pool_seed)
            stat = Path(self.text).stat()  # an edited file is read again, in a long-lived process too
            digest = _file_digest(self.text, stat.st_mtime_ns, stat.st_size)
            payload["text"] = f"sha256:{digest}:{Path(self.text).name}"
        blob = json.dumps(payload, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


@functools.lru_cache(maxsize=64)
def _file_digest(path: str, mtime_ns: int, size: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


@dataclass(frozen=True)
class StreamSpec:
    name: str
    description: str
    base: TaskSpec
    tasks: tuple[TaskSpec, ...]
    zero_shot: TaskSpec
    source: str = ""
    preset: str | None = None  # the preset a run uses when --preset is not given (e.g. tiny for smoke streams)
    task_order: tuple[int, ...] = ()  # the YAML positions (1-based) of ``tasks``, in the order a run takes them

    @property
    def eval_tasks(self) -> tuple[TaskSpec, ...]:
        """The WER matrix columns: base task, every stream task, then the zero-shot task."""
        return (self.base, *self.tasks, self.zero_shot)

    @property
    def order(self) -> tuple[int, ...]:
        return self.task_order or tuple(range(1, len(self.tasks) + 1))

    def in_order(self, spec: str | None) -> "StreamSpec":
        """The stream with its tasks in another order: ``spec`` is "3,1,2,..." (every YAML
        position once, 1-based) or "shuffle:SEED" (a seeded random order); None or "" keeps
        the YAML order. Each task keeps its own data: only the order of learning changes."""
        if not spec:
            return self
        count = len(self.tasks)
        if spec.startswith("shuffle:"):
            try:
                seed = int(spec.split(":", 1)[1])
            except ValueError:
                raise StreamError(f"--task-order {spec}: shuffle:SEED needs an integer seed") from None
            order = list(range(1, count + 1))
            random.Random(seed).shuffle(order)
        else:
            try:
                order = [int(part) for part in spec.split(",")]
            except ValueError:
                raise StreamError(f"--task-order {spec}: give positions separated by commas (e.g. 3,1,2) "
                                  "or shuffle:SEED") from None
            if sorted(order) != list(range(1, count + 1)):
                raise StreamError(f"--task-order {spec}: the stream has {count} tasks; name each of the positions "
                                  f"1 to {count} once ({', '.join(t.name for t in self.tasks)})")
        originals = self.tasks if not self.task_order else tuple(t for _, t in sorted(zip(self.task_order, self.tasks)))
        natural = order == list(range(1, count + 1))
        return replace(self, tasks=tuple(originals[i - 1] for i in order), task_order=() if natural else tuple(order))


def builtin_streams() -> dict[str, Path]:
    folder = resources.files("continual_asr.stream_files")
    return {Path(str(p)).stem: Path(str(p)) for p in folder.iterdir() if str(p).endswith(".yaml")}


def describe_builtin_streams() -> dict[str, str]:
    out = {}
    for name, path in sorted(builtin_streams().items()):
        data = yaml.safe_load(path.read_text()) or {}
        out[name] = str(data.get("description", "")).strip().splitlines()[0] if data.get("description") else ""
    return out


def resolve_stream_path(name_or_path: str) -> Path:
    streams = builtin_streams()
    if name_or_path in streams:
        return streams[name_or_path]
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise StreamError(f"stream file {path} not found")
        return path
    raise StreamError(f"unknown stream '{name_or_path}' (built in: {', '.join(sorted(streams))}; or a path to a .yaml file)")


def load_stream(name_or_path: str) -> StreamSpec:
    path = resolve_stream_path(name_or_path)
    data = read_yaml(path, str(path), StreamError)
    return parse_stream(data, path)


def _require_int(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise StreamError(f"{where}: must be a non-negative integer, got {value!r}")
    return value


def _as_list(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise StreamError(f"{where}: must be a string or a list of strings, got {value!r}")


def _parse_task(raw: Any, where: str, defaults: dict[str, Any], folder: Path, seed: int, test_only: bool) -> TaskSpec:
    if not isinstance(raw, dict):
        raise StreamError(f"{where}: must be a mapping with a 'name', and 'voice' or manifest paths")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise StreamError(f"{where}.name: missing or empty")
    if not _TASK_NAME.fullmatch(name):  # it names cache files and run folders
        raise StreamError(f"{where}.name: {name!r} may hold only letters, digits, '.', '_', '+' and '-', and not "
                          "start with '.'")
    where = f"{where} ({name})"
    unknown = set(raw) - set(TASK_FIELDS)
    if unknown:
        raise StreamError(f"{where}: unknown field '{sorted(unknown)[0]}' (valid: {', '.join(TASK_FIELDS)})")
    merged = {**defaults, **raw}
    try:
        condition = Condition.from_dict(merged.get("condition"), f"{where}.condition")
    except ValueError as exc:
        raise StreamError(str(exc)) from None
    if isinstance(merged.get("test"), str) or (not test_only and isinstance(merged.get("train"), str)):
        return _parse_manifest_task(raw, merged, where, condition, folder, seed, test_only)
    if "voice" in raw and "voices" in raw:
        raise StreamError(f"{where}: give 'voice' or 'voices', not both")
    own = raw if ("voice" in raw or "voices" in raw) else defaults
    voices_raw = own.get("voices", own.get("voice"))
    if voices_raw is None:
        raise StreamError(f"{where}.voice: missing (an espeak voice such as en-us; "
                          "or give train and test as manifest paths)")
    voices = _as_list(voices_raw, f"{where}.voice")
    speakers = _as_list(merged["speakers"], f"{where}.speakers") if merged.get("speakers") else ()
    try:  # now, not when synthesis reaches this task after the earlier ones
        for voice in voices:
            check_voice(voice)
        for speaker in speakers:
            check_voice(f"{voices[0]}+{speaker}")
    except ValueError as err:
        raise StreamError(f"{where}: {err}") from None
    train = 0 if test_only else _require_int(merged.get("train"), f"{where}.train")
    test = _require_int(merged.get("test"), f"{where}.test")
    dev = _require_int(merged.get("dev", DEFAULT_DEV), f"{where}.dev")
    if test == 0:
        raise StreamError(f"{where}.test: needs at least one test utterance")
    if dev == 0:
        raise StreamError(f"{where}.dev: needs at least one dev utterance (choices are made on dev, never on test)")
    if not test_only and train == 0:
        raise StreamError(f"{where}.train: needs at least one training utterance")
    if test_only and "train" in raw:
        raise StreamError(f"{where}.train: the zero-shot task is never trained on; give only 'test'")
    text = merged.get("text", "generator")
    if not isinstance(text, str):
        raise StreamError(f"{where}.text: must be 'generator' or a path to a text file")
    if text != "generator":
        text_path = (folder / text).resolve()
        if not text_path.is_file():
            raise StreamError(f"{where}.text: file {text_path} not found")
        text = str(text_path)
    return TaskSpec(name=name, voices=voices, condition=condition, train=train, test=test, text=text,
                    speakers=speakers, seed=seed, dev=dev)


def _parse_manifest_task(raw: dict, merged: dict, where: str, condition: Condition, folder: Path, seed: int,
                         test_only: bool) -> TaskSpec:
    """A task read from manifests: ``train``/``test`` are paths; synthesis fields make no sense."""
    for key in SYNTHESIS_FIELDS:
        if key in raw:
            raise StreamError(f"{where}.{key}: only synthesized tasks have {key}; this task reads manifests "
                              "(train/test are paths)")
    if test_only and "train" in raw:
        raise StreamError(f"{where}.train: the zero-shot task is never trained on; give only 'test'")
    paths = {}
    if "dev" in raw and not isinstance(raw["dev"], str):
        raise StreamError(f"{where}.dev: a task read from manifests takes a dev manifest path (or none: then "
                          f"about {HELD_OUT_PERCENT} % of train is held out as dev), got {raw['dev']!r}")
    for split in ("test",) if test_only else ("train", "test"):
        value = merged.get(split)
        if not isinstance(value, str) or not value.strip():
            raise StreamError(f"{where}.{split}: train and test must both be manifest paths (strings) or both "
                              f"utterance counts to synthesize (integers), got {value!r}")
        if not is_manifest_name(value):
            raise StreamError(f"{where}.{split}: a manifest must end in {', '.join(MANIFEST_SUFFIXES)}, got {value!r}")
        # Existence is checked when the task's data is prepared, so that a later task's missing
        # file stops the run before that task, like any other bad data, not before the first.
        paths[split] = str((folder / value).resolve())
    if "dev" in raw:
        if not is_manifest_name(raw["dev"]):
            raise StreamError(f"{where}.dev: a manifest must end in {', '.join(MANIFEST_SUFFIXES)}, got {raw['dev']!r}")
        paths["dev"] = str((folder / raw["dev"]).resolve())
    return TaskSpec(name=raw["name"], voices=(), condition=condition, train=0, test=0, seed=seed,
                    train_manifest=paths.get("train", ""), dev_manifest=paths.get("dev", ""),
                    test_manifest=paths["test"])


def parse_stream(data: Any, path: Path) -> StreamSpec:
    if not isinstance(data, dict):
        raise StreamError(f"{path}: a stream file must be a mapping")
    unknown = set(data) - set(STREAM_FIELDS)
    if unknown:
        raise StreamError(f"{path}: unknown field '{sorted(unknown)[0]}' (valid: {', '.join(STREAM_FIELDS)})")
    for key in ("name", "base", "tasks", "zero_shot"):
        if key not in data:
            raise StreamError(f"{path}: missing field '{key}'")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict) or set(defaults) - set(TASK_FIELDS):
        raise StreamError(f"{path}: 'defaults' must be a mapping of task fields ({', '.join(TASK_FIELDS)})")
    for key in ("text", "speakers"):
        if key in data:
            defaults = {key: data[key], **defaults}
    seed = data.get("seed", 0)
    _require_int(seed, f"{path}: seed")
    folder = path.parent
    base = _parse_task(data["base"], f"{path}: base", defaults, folder, seed, test_only=False)
    if not isinstance(data["tasks"], list) or not data["tasks"]:
        raise StreamError(f"{path}: 'tasks' must be a non-empty list")
    tasks = tuple(_parse_task(t, f"{path}: tasks[{i}]", defaults, folder, seed, test_only=False)
                  for i, t in enumerate(data["tasks"]))
    zero_defaults = {k: v for k, v in defaults.items() if k != "train"}
    zero_shot = _parse_task(data["zero_shot"], f"{path}: zero_shot", zero_defaults, folder, seed, test_only=True)
    names = [t.name for t in (base, *tasks, zero_shot)]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise StreamError(f"{path}: task name '{duplicates[0]}' is used twice")
    preset = data.get("preset")
    if preset is not None and preset not in PRESETS:
        raise StreamError(f"{path}: preset '{preset}' is not a preset (valid: {', '.join(PRESETS)})")
    base, *tasks, zero_shot = _share_sentences((base, *tasks, zero_shot), seed)
    return StreamSpec(name=str(data["name"]), description=str(data.get("description", "")).strip(),
                      base=base, tasks=tuple(tasks), zero_shot=zero_shot, source=str(path), preset=preset)


def _share_sentences(tasks: tuple[TaskSpec, ...], seed: int) -> list[TaskSpec]:
    """Give every synthesized task its own part of the stream's sentence pool (one pool per text
    source: train, dev and test of each task in YAML order, then the babble talkers' sentences),
    and babble tasks talkers that never use a zero-shot voice. So no sentence is in two splits or
    two tasks, whatever the task order of a run."""
    zero_shot_voices = set(tasks[-1].voices)
    used: dict[str, int] = {}
    shared = []
    for task in tasks:
        if task.from_manifests:
            shared.append(task)
            continue
        start = used.get(task.text, 0)
        used[task.text] = start + task.train + task.dev + task.test
        shared.append(replace(task, text_start=start))
    for index, task in enumerate(shared):  # recorded speech under babble too (its text is "generator")
        if task.condition.noise == "babble":
            start = used.get(task.text, 0)
            used[task.text] = start + 2 * BABBLE_POOL_SIZE
            voices = tuple(v for v in BABBLE_VOICES if v not in zero_shot_voices)
            shared[index] = replace(task, babble_start=start, babble_voices=voices)
    for text, needed in used.items():  # said now, in one line, not when synthesis reaches the task
        if text != "generator":
            try:
                distinct_sentences(text, needed)
            except ValueError as err:
                raise StreamError(str(err)) from None
    return shared
