"""Jobs for DataWorkers in tests: a module that imports nothing heavy, so that a spawned worker
unpickling them starts in a fraction of a second (a test module would import torch first)."""

import os


def die(rows, first, bar=None):
    os._exit(3)  # as a worker killed for memory would


def indices(rows, first, bar=None):
    return [first + i for i in range(len(rows))]
