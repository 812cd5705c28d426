"""Many processes, one cache: races on purpose, killed lock holders, damaged entries.

Every test here starts real processes (the way sweeps, torchrun and several users share a
cache) on a micro stream of spoken digits with a few epochs, so each run takes seconds.
"""

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path

import pytest
import yaml

from continual_asr.cache import EntryLock, cached, lock_path
from continual_asr.folders import ensure_writable

FAST = ["--preset", "tiny", "--set", "pretrain_epochs=3", "--set", "adapter_epochs=2",
        "--quiet"]


def _micro_stream(folder: Path) -> Path:
    digits = resources.files("continual_asr.stream_files") / "digits.txt"
    stream = {"name": "micro", "text": str(digits), "preset": "tiny", "defaults": {"dev": 4},
              "base": {"name": "us-clean", "voice": "en-us", "train": 16, "test": 4},
              "tasks": [{"name": "caribbean", "voice": "en-029", "train": 8, "test": 4},
                        {"name": "us-white", "voice": "en-us", "condition": {"noise": "white", "snr_db": 10},
                         "train": 8, "test": 4}],
              "zero_shot": {"name": "scottish", "voice": "en-gb-scotland", "test": 4}}
    path = folder / "micro.yaml"
    path.write_text(yaml.safe_dump(stream))
    return path


def _casr(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "continual_asr", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def _finish(process: subprocess.Popen, timeout: float = 600) -> tuple[int, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out + err


def _leftovers(cache: Path) -> list[str]:
    return [str(p) for p in cache.rglob("*") if ".tmp-" in p.name or ".damaged-" in p.name]


@pytest.fixture(scope="module")
def micro(tmp_path_factory) -> Path:
    return _micro_stream(tmp_path_factory.mktemp("stream"))


# ---- the mechanism -----------------------------------------------------------------------------
def _build_once(entry: str, builders: str) -> str:
    """One of several processes asking for the same entry; a slow build, so they overlap."""
    def build(tmp: Path) -> str:
        with open(builders, "a") as log:
            log.write(f"{os.getpid()}\n")
        time.sleep(0.5)
        tmp.write_text("built once")
        return "built once"
    return cached(Path(entry), lambda p: p.read_text(), build, "test entry")


def test_one_process_builds_an_entry_the_others_wait_and_read_it(tmp_path):
    entry, builders = tmp_path / "entry.txt", tmp_path / "builders.txt"
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        values = pool.starmap(_build_once, [(str(entry), str(builders))] * 4)
    assert values == ["built once"] * 4
    assert len(builders.read_text().split()) == 1
    assert not _leftovers(tmp_path)


HOLD_LOCK = """
import sys, time
from pathlib import Path
from continual_asr.cache import EntryLock
lock = EntryLock(Path(sys.argv[1]), "test entry").acquire()
lock.temporary().write_text("half an entry")
print("held", flush=True)
time.sleep(600)
"""


def test_a_lock_whose_holder_was_killed_does_not_block_the_next_process(tmp_path):
    entry = tmp_path / "entry.txt"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(entry)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    assert lock_path(entry).exists() and _leftovers(tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    done = []
    worker = threading.Thread(target=lambda: done.append(
        cached(entry, lambda p: p.read_text(), lambda tmp: tmp.write_text("whole") and "whole", "test entry")))
    worker.start()
    worker.join(timeout=30)
    assert done == ["whole"] and entry.read_text() == "whole"
    assert not _leftovers(tmp_path)  # the killed builder's half entry is cleared away


def test_a_damaged_entry_is_moved_aside_in_one_log_line_and_built_again(tmp_path, caplog):
    entry = tmp_path / "entry.json"
    entry.write_text('{"truncated": ')
    with caplog.at_level("WARNING", logger="continual_asr"):
        value = cached(entry, lambda p: json.loads(p.read_text()),
                       lambda tmp: tmp.write_text('{"whole": 1}') and {"whole": 1}, "test entry")
    assert value == {"whole": 1} and json.loads(entry.read_text()) == {"whole": 1}
    (line,) = [r.getMessage() for r in caplog.records]
    assert "test entry" in line and "is damaged (JSONDecodeError" in line and "built again" in line
    (aside,) = tmp_path.glob("entry.json.damaged-*")
    assert aside.read_text() == '{"truncated": '


def test_any_number_of_processes_may_check_one_folder_at_once(tmp_path):
    def check(_: int) -> None:  # a shared probe name made these collide: "not writable (No such file ...)"
        for _ in range(50):
            ensure_writable(tmp_path / "shared", "cache folder")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(check, range(8)))  # re-raises any checker's error
    assert not list((tmp_path / "shared").iterdir())


def test_an_entry_lock_is_a_context_manager_that_releases(tmp_path):
    entry = tmp_path / "e"
    with EntryLock(entry, "test entry") as lock:
        built = lock.temporary()
        built.write_text("x")
        lock.publish(built)
    with EntryLock(entry, "test entry"):  # would wait forever if the first were still held
        assert entry.read_text() == "x"


# ---- every kind of entry, from real runs -------------------------------------------------------
@pytest.fixture(scope="module")
def raced(tmp_path_factory, micro):
    """Four runs started at once on a cold cache: they race for the micro stream's audio,
    features, tokenizer, base model and single-task adapters."""
    root = tmp_path_factory.mktemp("raced")
    cache = root / "cache"
    runs = [_casr("run", "--stream", str(micro), "--strategy", "adapter-oracle", "--out", str(root / f"run{i}"),
                  "--cache-dir", str(cache), *FAST) for i in range(4)]
    finished = [_finish(run) for run in runs]
    for code, output in finished:
        assert code == 0, output[-3000:]
    return root, cache, [json.loads((root / f"run{i}" / "results.json").read_text()) for i in range(4)]


def test_four_processes_build_every_kind_of_entry_once_and_agree(raced):
    _, cache, results = raced
    assert all(r["complete"] for r in results)
    assert len({json.dumps([r["base_wer"], r["wer_matrix"]]) for r in results}) == 1
    assert sorted(r["base_model"]["cached"] for r in results) == [False, True, True, True]  # pretrained once
    # The one that pretrained recorded the weights it trained, the others those they read back: the same
    assert len({r["base_model"]["weights"] for r in results}) == 1
    for step in range(2):  # each single-task adapter trained once, reused by the other three runs
        assert sorted(r["steps"][step]["adapter"] for r in results) == ["reused", "reused", "reused", "trained"]
    kinds = {kind: [p for p in (cache / kind).iterdir() if not p.name.startswith(".")]
             for kind in ("audio", "features", "tokenizers", "base_models", "adapters")}
    assert {kind: len(entries) for kind, entries in kinds.items()} == {
        "audio": 4, "features": 11, "tokenizers": 1, "base_models": 1, "adapters": 2}
    assert not _leftovers(cache)


def test_damaged_entries_of_every_kind_cost_a_log_line_each_and_a_rebuild(raced, micro, tmp_path):
    """Also the suite's check that a run repeats exactly: features, tokenizer, base model and adapter
    rebuilt from scratch in another process give the same WERs (test_data_synthesis checks the
    audio the same way; the pinned WERs, where this platform has them, check every strategy)."""
    root, cache, results = raced
    features = sorted((cache / "features").glob("us-clean-train-*.pt"))[0]
    truncate = [features, *(cache / "base_models").glob("*.pt"), *(cache / "adapters").glob("caribbean-*.pt")]
    for path in truncate:
        path.write_bytes(path.read_bytes()[:1000])
    (tokenizer,) = (cache / "tokenizers").glob("*.model")
    tokenizer.write_bytes(b"")
    code, output = _finish(_casr("run", "--stream", str(micro), "--strategy", "adapter-oracle",
                                 "--out", str(tmp_path / "again"), "--cache-dir", str(cache), *FAST))
    assert code == 0 and "Traceback" not in output, output[-3000:]
    damaged = [line for line in (tmp_path / "again" / "run.log").read_text().splitlines() if "is damaged" in line]
    assert len(damaged) == 4 and all("built again" in line for line in damaged)
    again = json.loads((tmp_path / "again" / "results.json").read_text())
    assert again["base_wer"] == results[0]["base_wer"] and again["wer_matrix"] == results[0]["wer_matrix"]
    assert len(list(cache.rglob("*.damaged-*"))) == 4


# ---- the commands that share a cache -----------------------------------------------------------
@pytest.mark.parametrize("attempt", [1, 2])
def test_a_two_job_sweep_on_a_cold_cache_succeeds(tmp_path, micro, attempt):
    sweep = tmp_path / "two.yaml"
    sweep.write_text(yaml.safe_dump({
        "stream": str(micro), "preset": "tiny", "seeds": [0],
        "set": {"pretrain_epochs": 3},
        "runs": {"finetune": {"strategy": "finetune", "set": {"finetune_epochs": 1}},
                 "adapter-avg": {"strategy": "adapter-avg", "set": {"adapter_epochs": 2}}}}))
    code, output = _finish(_casr("sweep", str(sweep), "--jobs", "2", "--out", str(tmp_path / "sweep"),
                                 "--cache-dir", str(tmp_path / "cache")))
    assert code == 0, output[-3000:]
    for name in ("finetune", "adapter-avg"):
        assert json.loads((tmp_path / "sweep" / name / "seed0" / "results.json").read_text())["complete"]


@pytest.mark.parametrize("attempt", [1, 2])
def test_two_processes_of_one_run_on_a_fresh_cache_succeed(tmp_path, micro, attempt):
    code, output = _finish(_casr("run", "--stream", str(micro), "--strategy", "adapter-fusion", "--nproc", "2",
                                 "--device", "cpu", "--out", str(tmp_path / "run"),
                                 "--cache-dir", str(tmp_path / "cache"), *FAST))
    assert code == 0, output[-3000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["complete"] and results["processes"] == 2


FAILS_ON_PROCESS_1 = '''
from continual_asr import distributed
from continual_asr.errors import TrainingError
from continual_asr.registry import register_strategy
from continual_asr.training.template import FinetuneOptions, SpeechTemplate


class FailsOnProcessOne(SpeechTemplate):
    def _before_training_exp(self, **kwargs):
        if distributed.rank() == 1:
            raise TrainingError("process 1 gives up on purpose")
        super()._before_training_exp(**kwargs)


@register_strategy("fails-on-1", "stops with an error on process 1", options=FinetuneOptions)
def fails_on_1(model, config, options, **common):
    return FailsOnProcessOne(model=model, config=config, epochs=options.finetune_epochs, **common)
'''


def test_an_error_on_one_process_is_one_line_and_status_2(tmp_path, raced, micro):
    _, cache, _ = raced
    strategy = tmp_path / "fails.py"
    strategy.write_text(FAILS_ON_PROCESS_1)
    code, output = _finish(_casr("run", "--stream", str(micro), "--strategy", f"{strategy}:fails_on_1",
                                 "--nproc", "2", "--device", "cpu", "--out", str(tmp_path / "run"),
                                 "--cache-dir", str(cache), "--preset", "tiny", "--set", "pretrain_epochs=3", "--quiet"))
    lines = [line for line in output.splitlines() if line.strip()]
    assert code == 2, output[-3000:]
    assert lines == [lines[0]] and lines[0].startswith("casr: error (process 1): ") and "on purpose" in lines[0]
