"""continual-asr: continual learning for speech recognition.

The heart of it is Audio-AdapterFusion (arXiv 2310.13015): a frozen base Conformer, one
single-task adapter per task, and a task-ID-free combiner over all adapters, re-trained as
each task arrives.
"""

import os
import warnings

__version__ = "0.1.0"

# Avalanche warns about two things this project does on purpose: it installs no QP solver (only
# GEM-style plugins need one) and gives Avalanche no loggers (casr logs for itself).
warnings.filterwarnings("ignore", message="no QP solver found")
warnings.filterwarnings("ignore", message="No loggers specified")

# oneDNN (torch's CPU convolutions) keeps up to 1,024 primitives, one per input shape, each holding
# memory; batches of varying length make hundreds of shapes, and that cache held 1.4 GiB of the
# default run's peak. 64 kept a run's speed (not tiny models': docs/performance-runs.md). oneDNN reads
# the variable when it builds its first primitive, so this runs before any model does; a value the
# user set wins.
# (bf16 on the CPU wants more: distributed.prepare_cpu_precision.)
ONEDNN_CACHE_SET_BY_USER = "ONEDNN_PRIMITIVE_CACHE_CAPACITY" in os.environ or "DNNL_PRIMITIVE_CACHE_CAPACITY" in os.environ
if not ONEDNN_CACHE_SET_BY_USER:
    os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = "64"
