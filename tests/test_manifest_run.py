"""End to end on a corpus of audio files on disk (8 kHz stereo, 44.1 kHz mono; FLAC and WAV).

A later task's bad manifest line stops the run before that task with one line naming the file
and line, the finished task kept; after the fix, a rerun continues and completes with the
finished task's row unchanged.
"""

import json

from click.testing import CliRunner

from continual_asr.cli import main
from corpus import make_corpus

FAST = ["--preset", "tiny", "--set", "pretrain_epochs=20", "--set", "adapter_epochs=3", "--set", "fusion_epochs=1"]


def test_manifest_stream_stops_before_bad_data_and_a_rerun_continues(tmp_path, monkeypatch):
    stream = make_corpus(tmp_path / "corpus")
    monkeypatch.chdir(tmp_path)
    manifest = tmp_path / "corpus" / "data" / "b.train.jsonl"
    good = manifest.read_text()
    lines = good.splitlines(keepends=True)
    manifest.write_text("".join(lines[:2] + ['{"audio_filepath": "audio/b/train-002.wav", "text": \n'] + lines[3:]))
    cache, out = tmp_path / "cache", tmp_path / "out"
    common = ["--stream", str(stream), "--cache-dir", str(cache), *FAST]

    report = CliRunner().invoke(main, ["data", *common, "--quiet"])
    assert report.exit_code == 2, report.output
    row = next(line.split() for line in report.output.splitlines() if line.startswith("accent-b ") and "train" in line)
    # 11 good lines, two of them held out as dev (each by its own hash: about a tenth); 1 bad line
    assert row[:5] == ["accent-b", "task", "2", "train", "9"] and row[-9:] == [
        "1", "corpus/data/b.train.jsonl", "(about", "10", "%", "held", "out", "as", "dev)"]
    assert "corpus/data/b.train.jsonl:3: not valid JSON" in report.output
    assert CliRunner().invoke(main, ["data", *common, "--quiet", "--skip-bad"]).exit_code == 0

    stopped = CliRunner().invoke(main, ["run", *common, "--out", str(out), "--quiet"])
    assert stopped.exit_code == 2, stopped.output
    error = stopped.output.strip().splitlines()[-1]
    assert error.startswith("casr: error: corpus/data/b.train.jsonl:3: not valid JSON"), error
    assert "stopped before task 2 (accent-b)" in error
    first = json.loads((out / "results.json").read_text())
    assert len(first["wer_matrix"]) == 1 and not first["complete"]
    assert first["columns"] == ["clean", "accent-a", "accent-b", "unseen"]

    manifest.write_text(good)
    resumed = CliRunner().invoke(main, ["run", *common, "--out", str(out), "--quiet"])
    assert resumed.exit_code == 0, resumed.output
    final = json.loads((out / "results.json").read_text())
    assert final["complete"] and len(final["wer_matrix"]) == 2
    assert final["wer_matrix"][0] == first["wer_matrix"][0] and final["base_wer"] == first["base_wer"]
    assert final["base_model"]["cache_key"] == first["base_model"]["cache_key"]

