"""continual-asr: continual learning for speech recognition.

The heart of it is Audio-AdapterFusion (arXiv 2310.13015): a frozen base Conformer, one
single-task adapter per task, and a task-ID-free combiner over all adapters, re-trained as
each task arrives.
"""

__version__ = "0.1.0"
