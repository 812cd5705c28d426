"""WER per speaker (or any manifest field) of finished runs, on dev and test, from saved files.

    python experiments/voice_wer.py RUN_DIR [RUN_DIR ...] [--by variant|voice|FIELD] [--step K] [--per-task]

Each run folder's edits.json holds every dev and test utterance's edit counts and, per set, its
manifest, the manifest line of each record and (synthesized speech) each record's voice; this
joins them with the voice or a manifest field and pools the edits per value (the voice needs
nothing but the run folder, an archived one too; other fields need the manifests).
``--by variant`` (the default) groups synthesized speech by its espeak
speaker variant (``en-gb-scotland+klatt`` -> ``klatt``), ``--by voice`` by the whole voice, any
other name by that field of a manifest row (``speaker``, say). The pooled rows cover the learned
tasks (base task and stream tasks, not the zero-shot task) after step K (default: the last).

Why it exists: a dev split whose voices react to a setting unlike the test voices picks the wrong
setting (docs/tuning.md, "Dev drawn like test").
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from continual_asr.data.manifest import is_jsonl_manifest, manifest_field


def grouping_values(where: dict, by: str) -> dict[int, str]:
    """Manifest line number -> the grouping value of that utterance, for one set of a run's
    edits.json (``where``: its manifest, lines and, for synthesized speech, voices). ``variant``
    and ``voice`` come from the run folder itself where it kept the voices; other fields, and
    runs from before it kept them, read the manifest (JSON Lines only)."""
    if by in ("variant", "voice") and "voices" in where:
        voices = dict(zip(where["lines"], where["voices"]))
    else:
        manifest = Path(where["manifest"])
        if not is_jsonl_manifest(manifest):
            raise SystemExit(f"{manifest}: voice_wer reads JSON Lines manifests only (not CSV, TSV or lhotse)")
        if not manifest.is_file():
            raise SystemExit(f"{manifest}: missing (the manifests the run used; `casr data --stream NAME` rebuilds "
                             "a built-in stream's)")
        voices = manifest_field(manifest, "voice" if by == "variant" else by)
    if by == "variant":
        return {line: voice.partition("+")[2] or voice for line, voice in voices.items()}
    return voices


def voice_wer(run_dir: Path, by: str = "variant", step: int = -1) -> dict[str, dict[str, dict[str, float]]]:
    """{split: {task or "learned": {value: WER %}}} of one run after ``step``."""
    edits = json.loads((run_dir / "edits.json").read_text())
    if "utterances" not in edits:
        raise SystemExit(f"{run_dir}/edits.json: made before casr kept each record's manifest line; run it again")
    results = json.loads((run_dir / "results.json").read_text())
    zero_shot = results.get("zero_shot_task")
    out: dict[str, dict[str, dict[str, float]]] = {}
    for split, key in (("test", "steps"), ("dev", "dev_steps")):
        record = edits[key][step]
        if record is None:
            continue
        totals: dict[str, dict[str, np.ndarray]] = defaultdict(lambda: defaultdict(lambda: np.zeros(2)))
        for task, rows in record.items():
            where = edits["utterances"][split][task]
            values = grouping_values(where, by)
            for line, (words, subs, dels, ins) in zip(where["lines"], rows):
                value = values.get(line, "?")
                totals[task][value] += (subs + dels + ins, words)
                if task != zero_shot:
                    totals["learned"][value] += (subs + dels + ins, words)
        out[split] = {task: {v: round(100 * e / max(n, 1), 2) for v, (e, n) in sorted(per.items())}
                      for task, per in totals.items()}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--by", default="variant", help="variant, voice or a manifest field")
    parser.add_argument("--step", type=int, default=-1, help="0 = the base model, -1 = after the last task")
    parser.add_argument("--per-task", action="store_true", help="a row per task, not only the learned tasks pooled")
    args = parser.parse_args(argv)
    for run in args.runs:
        table = voice_wer(run, args.by, args.step)
        for split, per_task in table.items():
            for task, values in per_task.items():
                if task != "learned" and not args.per_task:
                    continue
                cells = "  ".join(f"{v} {w:.1f}" for v, w in values.items())
                print(f"{run}  {split:4s} {task:16s} {cells}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
