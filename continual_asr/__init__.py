"""continual-asr: continual learning for speech recognition.

The heart of it is Audio-AdapterFusion (arXiv 2310.13015): a frozen base Conformer, one
single-task adapter per task, and a task-ID-free combiner over all adapters, re-trained as
each task arrives.
"""

import warnings

__version__ = "0.1.0"

# Avalanche warns about two things this project does on purpose: it installs no QP solver (only
# GEM-style plugins need one) and gives Avalanche no loggers (casr logs for itself).
warnings.filterwarnings("ignore", message="no QP solver found")
warnings.filterwarnings("ignore", message="No loggers specified")
