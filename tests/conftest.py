"""Fixtures shared by the test modules: the tiny stream's data and base model, built once.

Pretraining the tiny base model is the suite's most repeated cost. Tests that exercise a cold
cache (test_cache.py, the torchrun test) keep building their own; the others start from a copy
of this one, so each still owns its cache folder and may damage or extend it.
"""

import json
import os
import shutil
from pathlib import Path

# oneDNN's own default cache capacity for the suite (casr caps it at 64 to save a run's memory):
# the tests' tiny models build primitives for many shapes and do little arithmetic with each, so
# rebuilding evicted ones made test_strategy_contracts.py about 20 % slower. The sums are the same
# at any capacity.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "1024")

import pytest
import torch

from continual_asr.config import make_config
from continual_asr.data.streamdata import prepare_stream_data
from continual_asr.stream import load_stream
from continual_asr.training.pretrain import pretrain_base_model

# tests/data/pinned_wer.json's thread count: the base model's weights (float sums) depend on it,
# and the pinned WERs were measured on a base model pretrained with it.
PRETRAIN_THREADS = json.loads((Path(__file__).parent / "data" / "pinned_wer.json").read_text())["threads"]


def pytest_sessionstart(session) -> None:
    """Say at once when other work holds the cores: the suite's two threads then crawl (its tiny
    pretraining took 17.5 min instead of seconds beside one study run; docs/development.md)."""
    from continual_asr.cpu_load import busy_cores_warning

    message = busy_cores_warning(max(torch.get_num_threads(), PRETRAIN_THREADS),
                                 lambda fits: "run the suite on an idle machine (docs/development.md)")
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if message and reporter is not None:
        reporter.write_line(f"warning: {message}", yellow=True)


@pytest.fixture(scope="session")
def tiny_cache_template(tmp_path_factory) -> Path:
    """A cache folder with the tiny stream's audio, features, tokenizer and base model (tiny preset,
    pretraining seed 0). Read-only by convention: use ``copy_tiny_cache``."""
    cache = tmp_path_factory.mktemp("tiny-cache-template")
    config = make_config("tiny")
    threads = torch.get_num_threads()
    torch.set_num_threads(PRETRAIN_THREADS)
    try:
        data = prepare_stream_data(load_stream("tiny"), config, cache, progress=False)
        pretrain_base_model(data, config, 0, cache, torch.device("cpu"), progress=False)
    finally:
        torch.set_num_threads(threads)
    return cache


def copy_tiny_cache(template: Path, folder: Path) -> Path:
    """``folder``/cache, a copy of ``template`` (lock files and all) that its test owns."""
    return Path(shutil.copytree(template, Path(folder) / "cache"))


@pytest.fixture
def tiny_cache(tiny_cache_template, tmp_path) -> Path:
    """A warm cache for the tiny stream under ``tmp_path``, this test's own."""
    return copy_tiny_cache(tiny_cache_template, tmp_path)
