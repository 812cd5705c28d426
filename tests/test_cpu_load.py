"""The busy-cores warning: /proc/stat's counters read right, and the threads that fit."""

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from continual_asr import cpu_load
from continual_asr.cli import _warn_if_cores_busy

STAT = """cpu  300 0 100 500 10 0 0 0 0 0
cpu0 100 0 50 300 10 0 0 0 0 0
cpu1 200 0 50 200 0 0 0 0 0 0
intr 1 2 3
"""
LATER = """cpu  500 0 100 600 10 0 0 0 0 0
cpu0 100 0 50 400 10 0 0 0 0 0
cpu1 300 0 50 200 0 0 0 0 0 0
"""


def test_cpu_times_counts_idle_and_iowait_as_free_and_keeps_only_the_cores_asked_for():
    assert cpu_load.cpu_times(STAT) == {0: (150, 460), 1: (250, 450)}
    assert cpu_load.cpu_times(STAT, {1}) == {1: (250, 450)}


def test_busy_cores_is_the_share_of_each_cores_ticks_that_went_to_work():
    # core 0: 100 new ticks, all idle; core 1: 100 new ticks, all user
    assert cpu_load.busy_cores(cpu_load.cpu_times(STAT), cpu_load.cpu_times(LATER)) == pytest.approx(1.0)


@pytest.mark.parametrize("threads, busy, cores, fits", [
    (2, 1.0, 2, 1),      # one study run on one of two cores: two threads crawl, one fits
    (2, 0.1, 2, None),   # a shell's noise
    (1, 2.0, 2, None),   # one thread waits on no other thread
    (4, 0.0, 2, 2),      # more threads than cores on an idle machine
    (2, 2.0, 2, 1),      # nothing idle: one thread is still the least bad
    (8, 1.0, 16, None),
])
def test_threads_that_fit(threads, busy, cores, fits):
    assert cpu_load.threads_that_fit(threads, busy, cores) == fits


def test_no_stat_file_means_no_figure(tmp_path):
    assert cpu_load.sample_busy_cores(0.01, tmp_path / "missing") is None


@pytest.mark.skipif(not Path("/proc/stat").exists() or not hasattr(os, "sched_getaffinity"), reason="Linux only")
def test_spinning_processes_show_as_busy_cores():
    cores = len(os.sched_getaffinity(0))
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cores)]
    try:
        time.sleep(0.3)  # past their interpreters' start
        busy, seen = cpu_load.sample_busy_cores(0.3)
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    assert seen == cores
    assert busy > 0.6 * cores


def test_the_cli_warns_in_the_log_with_the_threads_that_fit(monkeypatch, caplog):
    monkeypatch.setattr(cpu_load, "sample_busy_cores", lambda: (1.0, 2))
    with caplog.at_level(logging.WARNING, logger="continual_asr"):
        _warn_if_cores_busy(torch.device("cpu"), 2)
    assert "2 torch threads, but only 1.0 of the 2 cores are idle" in caplog.text
    assert "--set threads=1" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="continual_asr"):
        _warn_if_cores_busy(torch.device("cpu"), 1)
    assert caplog.text == ""


def test_a_local_sweep_warns_for_its_jobs_threads_together(monkeypatch, capsys):
    from continual_asr.cli_sweep import _warn_if_cores_busy as sweep_warning

    monkeypatch.setattr(cpu_load, "sample_busy_cores", lambda: (1.0, 4))
    sweep_warning(2, 2)  # two jobs of two threads on the three idle cores
    assert "4 torch threads, but only 3.0 of the 4 cores are idle" in capsys.readouterr().err
    sweep_warning(3, 1)  # one thread a job: nothing waits
    assert capsys.readouterr().err == ""
