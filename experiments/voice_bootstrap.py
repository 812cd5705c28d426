"""Do the differences between compared runs hold over speakers, not only over sentences?

    python experiments/voice_bootstrap.py RUN_DIR... --baseline NAME [--by variant|voice|FIELD] [--split test|dev]

`casr compare --baseline` resamples utterances: its intervals say how sure a difference is for
these speakers. Utterances of one speaker share errors, and a reader wants to know whether a
difference would hold for other speakers too. This groups every run's final per-utterance edit
counts by speaker (``--by variant``, the default: the espeak variant, the held-out speakers of the
built-in streams' dev and test sets; any manifest field otherwise, as experiments/voice_wer.py),
and prints, per compared group against the baseline, the difference in final mean WER (base task
and stream tasks) with three views of it:

- utterances: the paired bootstrap over utterances (as `casr compare`);
- speakers: a cluster bootstrap, the same speakers drawn with replacement for every set and both
  groups, each drawn speaker's utterances whole (few speakers make it coarse: with 6 it is a
  lower bound on the spread);
- per speaker: the difference on each speaker alone, and on how many speakers the group is
  better (a sign test's two-sided p; 6 of 6 alike gives 0.031).

Needs each run's edits.json; for runs from before casr kept each utterance's voice there, or
``--by`` another manifest field, also the manifests it names (the cache the runs used).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from continual_asr.cli_common import one_line_errors
from continual_asr.errors import CasrError
from continual_asr.evaluation.significance import paired_bootstrap
from continual_asr.reporting import compare_runs
from continual_asr.reporting.intervals import SPLITS, find_group, matched_note, matched_runs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from voice_wer import grouping_values  # noqa: E402  (a sibling script)


def speaker_edits(run_dir: Path, sets: list[str], by: str = "variant",
                  split: str = "test") -> tuple[list[str], dict[str, np.ndarray]]:
    """(speakers, {set: (speakers, 4) summed edit counts after the last step}) of one run; every
    set must be spoken by the same speakers."""
    edits = json.loads((Path(run_dir) / "edits.json").read_text(encoding="utf-8"))
    if "utterances" not in edits or edits.get(SPLITS[split], [None])[-1] is None:
        raise CasrError(f"{run_dir}/edits.json: no {split} edits with manifest lines (a run from before they were kept)")
    final = edits[SPLITS[split]][-1]
    speakers, counts = None, {}
    for name in sets:
        where = edits["utterances"][split][name]
        values = grouping_values(where, by)
        totals: dict[str, np.ndarray] = {}
        for line, row in zip(where["lines"], final[name]):
            value = values.get(line, "?")
            totals.setdefault(value, np.zeros(4, dtype=np.int64))
            totals[value] += row
        if speakers is None:
            speakers = sorted(totals)
        elif sorted(totals) != speakers:
            raise CasrError(f"{run_dir}: set {name} is spoken by {sorted(totals)}, not by {speakers} like the others")
        counts[name] = np.stack([totals[s] for s in speakers])
    return speakers, counts


def sign_test(better: int, worse: int) -> float:
    """Two-sided exact sign test p of ``better`` against ``worse`` (ties dropped)."""
    n, k = better + worse, min(better, worse)
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n) if n else 1.0


def per_speaker_differences(system: list[dict], baseline: list[dict], sets: list[str]) -> np.ndarray:
    """Per speaker, the group's mean WER over ``sets`` (runs averaged) minus the baseline's."""
    def mean(runs):
        return np.mean([np.mean([100 * r[s][:, 1:].sum(1) / r[s][:, 0] for s in sets], axis=0) for r in runs], axis=0)
    return mean(system) - mean(baseline)


def report(run_dirs: list[Path], baseline_name: str, by: str = "variant", split: str = "test") -> str:
    groups = compare_runs(run_dirs)
    baseline = find_group(groups, baseline_name)
    sets = baseline.runs[0]["columns"][:-1]  # the learned sets: base task and stream tasks
    loaded = {id(g): [speaker_edits(d, sets, by, split) for d in g.dirs] for g in groups}
    speakers = loaded[id(baseline)][0][0]
    by_speaker = {key: [counts for _, counts in runs] for key, runs in loaded.items()}
    lines = [f"Final mean WER on the {split} sets (base task and stream tasks) against **{baseline_name}**, "
             f"{len(speakers)} speakers ({by}: {', '.join(speakers)}); 95 % intervals, seed 0, 1,000 resamples.", "",
             "| group | difference | over utterances | over speakers | per speaker | better on | sign test p |",
             "| --- | ---: | --- | --- | --- | ---: | ---: |"]
    for group in groups:
        if group is baseline:
            continue
        chosen, chosen_baseline = matched_runs(group, baseline)  # the seeds and task orders both ran
        ours = [by_speaker[id(group)][i] for i in chosen]
        theirs = [by_speaker[id(baseline)][i] for i in chosen_baseline]
        utterances = paired_bootstrap([group.edits[i] for i in chosen], [baseline.edits[i] for i in chosen_baseline],
                                      sets)
        clustered = paired_bootstrap(ours, theirs, sets, shared_draws=True)
        differences = per_speaker_differences(ours, theirs, sets)
        better, worse = int((differences < 0).sum()), int((differences > 0).sum())
        lines.append(f"| {group.label}{matched_note(group, baseline, chosen, chosen_baseline)} | {utterances.difference:+.2f} | [{utterances.low:+.2f}, {utterances.high:+.2f}] "
                     f"| [{clustered.low:+.2f}, {clustered.high:+.2f}] | "
                     + " ".join(f"{d:+.1f}" for d in differences)
                     + f" | {better} of {len(differences)} | {sign_test(better, worse):.3f} |")
    return "\n".join(lines)


@one_line_errors
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--baseline", required=True, help="a strategy name or a compared row's label")
    parser.add_argument("--by", default="variant", help="variant, voice or a manifest field")
    parser.add_argument("--split", choices=["test", "dev"], default="test")
    args = parser.parse_args(argv)
    print(report(args.runs, args.baseline, args.by, args.split))


if __name__ == "__main__":
    main()
