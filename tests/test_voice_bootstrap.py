"""experiments/voice_bootstrap.py: intervals over speakers as well as over utterances."""

import json

import numpy as np
import pytest
from experiment_scripts import load_experiment
from fake_results import fake_results, write_run

from continual_asr.evaluation.significance import paired_bootstrap

COLUMNS = ["base", "t1", "t2", "zs"]
SPEAKERS = ["anika", "david", "iven2", "klatt"]
voice_bootstrap = load_experiment("voice_bootstrap")


def _run(tmp_path, name, strategy, error_rate_of):
    """A finished run whose every set has 30 utterances of 10 words per speaker; the speaker's
    error rate from ``error_rate_of(speaker)``; manifests beside it with each line's voice."""
    rng = np.random.default_rng(len(name))
    folder = tmp_path / name
    steps, utterances = {}, {}
    for column in COLUMNS:
        voices = [s for s in SPEAKERS for _ in range(30)]
        manifest = tmp_path / "manifests" / f"{column}.jsonl"
        manifest.parent.mkdir(exist_ok=True)
        manifest.write_text("".join(json.dumps({"voice": f"en-us+{v}"}) + "\n" for v in voices))
        steps[column] = [[10, int(rng.binomial(10, error_rate_of(v))), 0, 0] for v in voices]
        utterances[column] = {"manifest": str(manifest), "lines": list(range(1, len(voices) + 1))}
    row = [100 * sum(e[1] for e in steps[c]) / (10 * len(steps[c])) for c in COLUMNS]
    write_run(folder, fake_results(row, [row, row], strategy=strategy))
    (folder / "edits.json").write_text(json.dumps({"columns": COLUMNS, "steps": [steps] * 3,
                                                   "utterances": {"test": utterances}}))
    return folder


def test_a_difference_from_one_speaker_holds_over_utterances_but_not_over_speakers(tmp_path):
    baseline = _run(tmp_path, "base", "finetune", lambda v: 0.5)
    everywhere = _run(tmp_path, "everywhere", "adapter-oracle", lambda v: 0.3)
    one_speaker = _run(tmp_path, "one-speaker-only", "adapter-fusion", lambda v: 0.05 if v == "klatt" else 0.55)
    table = voice_bootstrap.report([baseline, everywhere, one_speaker], "finetune", by="variant")
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in table.splitlines() if line.startswith("| adapter")}

    def excludes_zero(cell):
        low, high = (float(x) for x in cell.strip("[]").split(","))
        return high < 0 or low > 0

    assert "4 speakers (variant: anika, david, iven2, klatt)" in table
    oracle, fusion = rows["adapter-oracle"], rows["adapter-fusion"]
    assert excludes_zero(oracle[1]) and excludes_zero(oracle[2]) and oracle[4] == "4 of 4"
    assert excludes_zero(fusion[1]) and not excludes_zero(fusion[2])  # one speaker carries it, the others are worse
    assert float(fusion[3].split()[-1]) < -30  # klatt, the last speaker: about 45 points better


def test_sign_test_and_shared_draws():
    assert voice_bootstrap.sign_test(6, 0) == pytest.approx(2 / 64)
    assert voice_bootstrap.sign_test(3, 3) == 1.0 and voice_bootstrap.sign_test(0, 0) == 1.0
    units = {"a": np.array([[10, 1, 0, 0]] * 3), "b": np.array([[10, 1, 0, 0]] * 4)}
    with pytest.raises(ValueError, match="as many units in every set"):
        paired_bootstrap([units], [units], ["a", "b"], shared_draws=True)
