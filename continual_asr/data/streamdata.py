"""Everything a run needs from a stream's data: checked features per split and a tokenizer.

Bad data never passes silently. Problems in the base task or in any test set (the WER matrix
needs every column from the start) stop preparation at once. Problems in a later task's
training data are logged at once but only stop the run when that task is reached
(:meth:`StreamData.stop_before`), so the steps before it are finished and kept, and a rerun
after the data is fixed continues from there. ``skip_bad`` leaves bad utterances out instead.

The tokenizer is trained on the base task's training transcripts only (plus every letter, see
``text.LETTERS``): the base model is then a function of the base task alone, so fixing or
replacing a later task's data never changes it under a half-finished run (and streams that
share a base task share one base model).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets

from ..cache import cached
from ..config import RunConfig
from ..errors import DataError
from ..model.hf_encoder import hf_folder
from ..stream import StreamSpec, TaskSpec
from .conditions import Condition
from .dataset import make_dataset
from .features import SplitFeatures
from .manifest import Problem, display_path
from .prepare import prepare_task
from .splits import load_split
from .text import LETTERS
from .tokenizer import Tokenizer
from .workers import DataWorkers, data_processes

log = logging.getLogger("continual_asr")


@dataclass
class StreamData:
    stream: StreamSpec
    tokenizer: Tokenizer
    train: dict[str, SplitFeatures]  # base and stream tasks whose training data is usable
    test: dict[str, SplitFeatures]  # base, stream tasks and zero-shot (the WER matrix columns)
    dev: dict[str, SplitFeatures]  # the same tasks' dev sets, where they have one (choices are made on these)
    fingerprint: str  # of the base task's training data and the tokenizer: the base-model cache key
    bad_training: dict[str, DataError] = field(default_factory=dict)  # task -> why the run must stop before it

    def feature_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-bin mean and std over the base task's training frames (the model's normaliser)."""
        features = self.train[self.stream.base.name].features
        # cat casts the float16 features straight into one float32 buffer: the same frames as
        # concatenating float32 copies, without holding every copy too (half the peak memory)
        frames = torch.empty(sum(len(f) for f in features), *features[0].shape[1:])
        torch.cat(features, out=frames)
        return frames.mean(dim=0), frames.std(dim=0).clamp(min=1e-3)

    def dataset(self, split: str, task: TaskSpec):
        column = self.stream.eval_tasks.index(task)
        task_id = -1 if task is self.stream.zero_shot else column
        return make_dataset(getattr(self, split)[task.name], self.tokenizer, task_id)

    def benchmark_for_base(self):
        """A one-experience benchmark of the base task, for pretraining."""
        base = self.stream.base
        return benchmark_from_datasets(train=[self.dataset("train", base)], test=[self.dataset("test", base)])

    def trainable_tasks(self) -> tuple[TaskSpec, ...]:
        """The stream's tasks up to (not including) the first one with bad training data."""
        tasks = self.stream.tasks
        first_bad = next((i for i, t in enumerate(tasks) if t.name in self.bad_training), len(tasks))
        return tasks[:first_bad]

    def dev_tasks(self) -> tuple[TaskSpec, ...]:
        """The columns with a dev set (all of them, except a zero-shot task read from manifests
        without a dev manifest)."""
        return tuple(t for t in self.stream.eval_tasks if t.name in self.dev)

    def benchmark(self):
        """Avalanche benchmark: a training experience per trainable task; every column in test,
        every column with a dev set in dev."""
        trainable = self.trainable_tasks()
        bench = benchmark_from_datasets(
            train=[self.dataset("train", t) for t in trainable],
            test=[self.dataset("test", t) for t in self.stream.eval_tasks],
            dev=[self.dataset("dev", t) for t in self.dev_tasks()],
        )
        for experience, task, position in zip(bench.train_stream, trainable, self.stream.order):
            experience.task_name = task.name
            experience.stream_position = position - 1  # its place in the stream file, whatever the run's order
        for stream, tasks in ((bench.test_stream, self.stream.eval_tasks), (bench.dev_stream, self.dev_tasks())):
            for experience, task in zip(stream, tasks):
                experience.task_name = task.name
        return bench

    def stop_before(self, index: int, out_dir: Path) -> DataError:
        """The error that ends a run whose next task (``stream.tasks[index]``) has bad training data."""
        task = self.stream.tasks[index]
        return DataError(f"{self.bad_training[task.name]} [stopped before task {index + 1} ({task.name}); "
                         f"the {index} finished ones are kept in {out_dir}: fix the data and rerun to continue]")

    def identity(self) -> dict:
        """Content hashes of every split: a resumed run must see the same data for what it has done."""
        return {split: {name: features.digest for name, features in getattr(self, split).items()}
                for split in ("train", "dev", "test")}

    def check_unchanged(self, recorded: dict | None, finished: int) -> None:
        """DataError if a test set, or the training data of the base or a finished task, changed since ``recorded``."""
        if recorded is None:
            return
        current = self.identity()
        for name in (self.stream.base.name, *(t.name for t in self.stream.tasks[:finished])):
            if recorded["train"].get(name) != current["train"].get(name):
                raise DataError(f"the training data of task {name} changed since this run began (its steps "
                                "would no longer match it); use another --out or pass --overwrite")
        # A dev set held out of a task's train follows it: it may change until that task is trained
        # (so fixing a later task's manifest stays possible; only its dev column's earlier rows move).
        unfinished = {t.name for t in self.stream.tasks[finished:] if t.from_manifests and not t.dev_manifest}
        for split in ("dev", "test"):
            for name, digest in recorded.get(split, {}).items():
                if split == "dev" and name in unfinished:
                    continue
                if current[split].get(name) != digest:
                    raise DataError(f"the {split} data of task {name} changed since this run began (earlier WERs "
                                    "would not be comparable); use another --out or pass --overwrite")


def _counts(task: TaskSpec, config: RunConfig) -> dict[str, int]:
    def cap(n: int, limit: int) -> int:
        return min(n, limit) if limit else n
    return {"train": cap(task.train, config.max_train_utterances), "dev": cap(task.dev, config.max_test_utterances),
            "test": cap(task.test, config.max_test_utterances)}


def _load_tokenizer(texts: list[str], vocab_size: int, cache_dir: Path) -> Tokenizer:
    key = hashlib.sha256(("\n".join(texts) + f"|{vocab_size}|{LETTERS}").encode()).hexdigest()[:16]
    path = Path(cache_dir) / "tokenizers" / f"spm-{vocab_size}-{key}.model"

    def build(tmp: Path) -> Tokenizer:
        tokenizer = Tokenizer.train(texts, vocab_size, required_chars=LETTERS)
        tokenizer.save(tmp)
        return tokenizer

    return cached(path, Tokenizer.load, build, "tokenizer")


def _stream_tokenizer(texts: list[str], config: RunConfig, cache_dir: Path):
    """The base model's own tokenizer for a pretrained base; else one trained on ``texts``."""
    folder = hf_folder(config.base_model)
    if folder is not None:
        from ..model.hf_encoder import load_hf_tokenizer  # transformers only when asked for
        return load_hf_tokenizer(folder)
    return _load_tokenizer(texts, config.vocab_size, cache_dir)


def _task_splits(task: TaskSpec, config: RunConfig, cache_dir: Path, progress: bool,
                 workers: DataWorkers) -> dict[str, SplitFeatures]:
    """A task's splits (zero-shot: dev and test) with all their problems, but not yet the tokenizer's."""
    common = dict(n_mels=config.n_mels, max_seconds=config.max_utterance_seconds, cache_dir=cache_dir,
                  progress=progress, waveform=hf_folder(config.base_model) is not None, workers=workers)
    trained = task.train > 0 or bool(task.train_manifest)
    if task.from_manifests:
        caps = {"train": config.max_train_utterances, "dev": config.max_test_utterances,
                "test": config.max_test_utterances}
        reads = {"test": (task.test_manifest, "")}
        if task.dev_manifest:
            reads["dev"] = (task.dev_manifest, "")
        if trained:  # without a dev manifest, dev is held out of train
            reads["train"] = (task.train_manifest, "" if task.dev_manifest else "train")
            reads.setdefault("dev", (task.train_manifest, "dev"))
        return {s: load_split(task, s, Path(path), task.condition, limit=caps[s], held_out=part, **common)
                for s, (path, part) in reads.items()}
    counts = _counts(task, config)
    folder = prepare_task(task, cache_dir, counts, progress=progress, workers=workers)
    # The synthesized audio already carries the task's condition.
    splits = ("train", "dev", "test") if trained else ("dev", "test")
    return {s: load_split(task, s, folder / f"{s}.jsonl", Condition(), limit=0, **common) for s in splits}


def load_stream_splits(stream: StreamSpec, config: RunConfig, cache_dir: Path,
                       progress: bool = True) -> tuple[dict[tuple[str, str], SplitFeatures], Tokenizer]:
    """Every split of every task, keyed (task, split), each with every problem found; and the tokenizer.

    Problems are recorded, never raised: callers choose (``prepare_stream_data``, ``casr data``).
    """
    splits: dict[tuple[str, str], SplitFeatures] = {}
    with DataWorkers(data_processes(config.synthesis_processes)) as workers:  # started only by a cold cache
        for task in stream.eval_tasks:
            for split, features in _task_splits(task, config, cache_dir, progress, workers).items():
                splits[task.name, split] = features
    base_train = splits[stream.base.name, "train"]
    if not base_train.texts:
        raise _error(base_train, "the base task has no usable training utterance")
    tokenizer = _stream_tokenizer(base_train.texts, config, cache_dir)
    for key, features in splits.items():
        unknown = {}
        for index, text in enumerate(features.texts):
            chars = tokenizer.unknown_characters(text)
            if chars:
                spelled = " ".join(map(repr, sorted(chars)))
                why = ("the base model's vocabulary" if hf_folder(config.base_model) is not None
                       else "the tokenizer is trained on the base task's training transcripts")
                message = f"transcript has characters the tokenizer cannot spell: {spelled} ({why})"
                unknown[index] = Problem(features.source, features.lines[index], message)
        if unknown:
            splits[key] = features.without(unknown)
    return splits, tokenizer


def check_evaluation_sets(splits: dict[tuple[str, str], SplitFeatures],
                          bad_training: dict[str, DataError] | None = None) -> None:
    """Raise DataError, naming the first, when a dev or test set has no utterance left (the
    training data's own error where the task's dev is held out of bad training data)."""
    for (task, split), features in splits.items():
        if split != "train" and not features.texts:
            if task in (bad_training or {}):
                raise bad_training[task]
            raise DataError(f"task {task}: its {split} set is empty ({display_path(features.source)}): every dev "
                            "and test set needs at least one utterance (a train manifest of one utterance leaves "
                            "none to hold out as dev: give the task a dev: manifest)")


def _error(features: SplitFeatures, headline: str = "") -> DataError:
    """One line: the first problem, how many more, and what to do."""
    problems = features.problems
    first = f"{problems[0]}" if problems else f"{features.source}: no usable utterances"
    more = f" (and {len(problems) - 1} more in this file)" if len(problems) > 1 else ""
    hint = "; `casr data` lists every problem, --skip-bad leaves bad utterances out"
    return DataError(f"{headline + ': ' if headline else ''}{first}{more}{hint}")


def _usable(task: str, split: str, features: SplitFeatures, skip_bad: bool) -> DataError | None:
    """None if ``features`` can be used as they are (problems skipped if asked); else why not."""
    if not features.problems:
        return None
    if not skip_bad or not features.texts:
        return _error(features)
    log.warning("%s/%s: skipped %d bad utterance(s), %d left (first: %s)", task, split, len(features.problems),
                len(features.texts), features.problems[0])
    return None


def prepare_stream_data(stream: StreamSpec, config: RunConfig, cache_dir: Path, progress: bool = True, *,
                        skip_bad: bool = False) -> StreamData:
    """Synthesize or read every task's audio, compute and check features, train the tokenizer.

    Raises DataError for problems in the base task or a test set; records problems in a later
    task's training data in ``bad_training`` (the run stops before that task).
    """
    splits, tokenizer = load_stream_splits(stream, config, cache_dir, progress)
    bad_training: dict[str, DataError] = {}
    for (task, split), features in splits.items():
        error = _usable(task, split, features, skip_bad)
        if error is None:
            continue
        if split != "train" or task == stream.base.name:
            raise error
        bad_training[task] = error
        log.warning("task %s: bad training data, the run will stop before it: %s", task, error)
    check_evaluation_sets(splits, bad_training)
    for task in stream.eval_tasks:
        log.info("data %s: %s", task.name, ", ".join(f"{len(f.texts)} {s}" for (t, s), f in splits.items()
                                                       if t == task.name))
    train = {t: f for (t, s), f in splits.items() if s == "train" and t not in bad_training}
    dev = {t: f for (t, s), f in splits.items() if s == "dev"}
    test = {t: f for (t, s), f in splits.items() if s == "test"}
    payload = f"{train[stream.base.name].digest}|{config.n_mels}".encode() + tokenizer.model_bytes
    if hf_folder(config.base_model) is not None:  # its audio input and tokenizer are the model's
        payload += f"|{config.base_model}".encode()
    fingerprint = hashlib.sha256(payload).hexdigest()[:16]
    return StreamData(stream, tokenizer, train, test, dev, fingerprint, bad_training)
