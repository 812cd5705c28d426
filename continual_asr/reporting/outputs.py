"""Every file a run writes beside its results.json, rebuilt from the results alone."""

from __future__ import annotations

from pathlib import Path

from ..evaluation.summary import compute_metrics
from ..results import write_bytes_atomic
from .html import report_html
from .plots import attention_png, forgetting_curves_png, wer_matrix_png
from .tables import metrics_csv, wer_matrix_csv

RUN_FILES = ("wer_matrix.csv", "metrics.csv", "forgetting_curves.png", "wer_matrix.png", "report.html")


def write_run_outputs(results: dict, out_dir: Path) -> list[Path]:
    """Write the CSVs, the plots and report.html into ``out_dir`` (each atomically); the paths."""
    metrics = compute_metrics(results)
    curves = forgetting_curves_png(results)
    heat_map = wer_matrix_png(results)
    images = {"Forgetting curves": curves, "WER matrix heat map": heat_map}
    attended = attention_png(results)
    if attended is not None:
        images["What fusion attends to (mean attention per test set, adapter and layer, on the test sets)"] = attended
    contents = {
        "wer_matrix.csv": wer_matrix_csv(results).encode("utf-8"),
        "metrics.csv": metrics_csv(results, metrics).encode("utf-8"),
        "forgetting_curves.png": curves,
        "wer_matrix.png": heat_map,
        "report.html": report_html(results, metrics, images).encode("utf-8"),
    }
    paths = []
    for name in RUN_FILES:
        path = Path(out_dir) / name
        write_bytes_atomic(path, contents[name])
        paths.append(path)
    return paths
