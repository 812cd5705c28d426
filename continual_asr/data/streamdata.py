"""Everything a run needs from a stream's data: features per split and a tokenizer."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets

from ..config import RunConfig
from ..stream import StreamSpec, TaskSpec
from .dataset import make_dataset
from .features import SplitFeatures, load_split_features
from .prepare import prepare_task
from .tokenizer import Tokenizer

log = logging.getLogger("continual_asr")


@dataclass
class StreamData:
    stream: StreamSpec
    tokenizer: Tokenizer
    train: dict[str, SplitFeatures]  # base and stream tasks
    test: dict[str, SplitFeatures]  # base, stream tasks and zero-shot (the WER matrix columns)
    fingerprint: str  # of the data and tokenizer, for the base-model cache key

    def feature_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-bin mean and std over the base task's training frames (the model's normaliser)."""
        frames = torch.cat([f.float() for f in self.train[self.stream.base.name].features])
        return frames.mean(dim=0), frames.std(dim=0).clamp(min=1e-3)

    def dataset(self, split: str, task: TaskSpec):
        column = self.stream.eval_tasks.index(task)
        task_id = -1 if task is self.stream.zero_shot else column
        return make_dataset(getattr(self, split)[task.name], self.tokenizer, task_id)

    def benchmark_for_base(self):
        """A one-experience benchmark of the base task, for pretraining."""
        base = self.stream.base
        return benchmark_from_datasets(train=[self.dataset("train", base)], test=[self.dataset("test", base)])

    def benchmark(self):
        """Avalanche benchmark: one training experience per stream task; every column in test."""
        bench = benchmark_from_datasets(
            train=[self.dataset("train", t) for t in self.stream.tasks],
            test=[self.dataset("test", t) for t in self.stream.eval_tasks],
        )
        for experience, task in zip(bench.train_stream, self.stream.tasks):
            experience.task_name = task.name
        for experience, task in zip(bench.test_stream, self.stream.eval_tasks):
            experience.task_name = task.name
        return bench


def _counts(task: TaskSpec, config: RunConfig) -> tuple[int, int]:
    def cap(n: int, limit: int) -> int:
        return min(n, limit) if limit else n
    return cap(task.train, config.max_train_utterances), cap(task.test, config.max_test_utterances)


def _load_tokenizer(texts: list[str], vocab_size: int, cache_dir: Path) -> Tokenizer:
    key = hashlib.sha256(("\n".join(texts) + f"|{vocab_size}").encode()).hexdigest()[:16]
    path = Path(cache_dir) / "tokenizers" / f"spm-{vocab_size}-{key}.model"
    if path.is_file():
        return Tokenizer.load(path)
    tokenizer = Tokenizer.train(texts, vocab_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tokenizer.save(tmp)
    os.replace(tmp, path)
    return tokenizer


def prepare_stream_data(stream: StreamSpec, config: RunConfig, cache_dir: Path, progress: bool = True) -> StreamData:
    """Synthesize (or reuse) every task's audio, compute features, train the tokenizer."""
    train: dict[str, SplitFeatures] = {}
    test: dict[str, SplitFeatures] = {}
    parts = []
    for task in stream.eval_tasks:
        n_train, n_test = _counts(task, config)
        folder = prepare_task(task, cache_dir, n_train, n_test, progress=progress)
        if n_train:
            train[task.name] = load_split_features(folder / "train.jsonl", config.n_mels)
        test[task.name] = load_split_features(folder / "test.jsonl", config.n_mels)
        parts.append(folder.name)
        log.info("data %s: %d train, %d test utterances (%s)", task.name, n_train, n_test, folder)
    texts = [t for split in train.values() for t in split.texts]
    tokenizer = _load_tokenizer(texts, config.vocab_size, cache_dir)
    fingerprint = hashlib.sha256(("|".join(parts) + f"|{config.n_mels}").encode() + tokenizer.model_bytes).hexdigest()[:16]
    return StreamData(stream, tokenizer, train, test, fingerprint)
