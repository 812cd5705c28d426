"""Reporting: CSV files, plots and an HTML report of a run, and comparisons of several runs.

Library functions over results dicts and run folders; they need neither model nor data, so
``casr plot`` rebuilds every file from results.json alone.
"""

from .compare import base_model_note, compare_runs, comparison_markdown, provenance_notes, write_comparison
from .outputs import RUN_FILES, write_run_outputs
from .runs import load_results, reference_wers

__all__ = ["RUN_FILES", "base_model_note", "compare_runs", "comparison_markdown", "load_results", "provenance_notes", "reference_wers", "write_comparison", "write_run_outputs"]
