"""`casr archive`: finished runs without checkpoints, and what reads them back."""

import json

from click.testing import CliRunner
from fake_results import fake_results, write_run

from continual_asr.cli import main

BASE = [10.0, 50.0, 60.0, 40.0]
MATRIX = [[12.0, 20.0, 55.0, 38.0], [11.0, 25.0, 30.0, 44.0]]
EDITS = {"columns": ["base"], "steps": [{"base": [[8, 1, 0, 0], [5, 0, 1, 2]]}]}


def _invoke(*args):
    return CliRunner().invoke(main, list(map(str, args)))


def _sweep(tmp_path):
    """A sweep folder: two finished runs with checkpoints and logs, one unfinished, a history."""
    sweep = tmp_path / "sweep"
    for seed in (0, 1):
        run = write_run(sweep / "fusion" / f"seed{seed}", fake_results(BASE, MATRIX, seed=seed))
        (run / "checkpoint.pt").write_bytes(b"weights")
        (run / "edits.json").write_text(json.dumps(EDITS, indent=2))
        (run / "run.log").write_text("log\n")
    write_run(sweep / "fusion" / "seed2", fake_results(BASE, MATRIX[:1], seed=2))
    (sweep / "sweep_history.jsonl").write_text('{"event": "start"}\n')
    return sweep


def test_archive_copies_finished_runs_without_checkpoints(tmp_path):
    sweep, dest = _sweep(tmp_path), tmp_path / "kept"
    result = _invoke("archive", sweep, dest)
    assert result.exit_code == 0, result.output
    assert "archived 2 finished run(s)" in result.output and "left out 1 unfinished" in result.output
    for seed in (0, 1):
        run = dest / "fusion" / f"seed{seed}"
        assert sorted(p.name for p in run.iterdir()) == ["edits.json", "results.json", "run.log"]
        assert json.loads((run / "edits.json").read_text()) == EDITS  # the same counts, written compact
        assert "\n " not in (run / "edits.json").read_text()
        assert json.loads((run / "results.json").read_text()) == json.loads(
            (sweep / "fusion" / f"seed{seed}" / "results.json").read_text())
    assert not (dest / "fusion" / "seed2").exists()
    assert (dest / "sweep_history.jsonl").read_text() == '{"event": "start"}\n'
    compared = _invoke("compare", dest / "fusion" / "seed0", dest / "fusion" / "seed1", "--out", tmp_path / "cmp")
    assert compared.exit_code == 0, compared.output
    assert "0, 1" in compared.output


def test_archiving_a_second_sweep_into_an_archive_keeps_its_history(tmp_path):
    sweep, dest = _sweep(tmp_path), tmp_path / "kept"
    assert _invoke("archive", sweep, dest).exit_code == 0
    later = tmp_path / "later"
    write_run(later / "avg" / "seed0", fake_results(BASE, MATRIX, seed=0))
    (later / "sweep_history.jsonl").write_text('{"event": "later"}\n{"event": "start"}\n')  # one line the archive has
    (dest / "compare.csv").write_text("fusion\n")  # the first sweep's report
    (later / "compare.csv").write_text("fusion\navg\n")
    result = _invoke("archive", later, dest)
    assert result.exit_code == 0, result.output
    assert (dest / "sweep_history.jsonl").read_text() == '{"event": "start"}\n{"event": "later"}\n'
    assert (dest / "compare.csv").read_text() == "fusion\navg\n"  # the report beside results.md, not a stale one
    assert (dest / "fusion" / "seed0" / "results.json").is_file() and (dest / "avg" / "seed0" / "results.json").is_file()


def test_archive_refuses_in_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _invoke("archive", empty, tmp_path / "kept")
    assert result.exit_code == 2 and "no finished run to archive" in result.output
    sweep = _sweep(tmp_path)
    inside = _invoke("archive", sweep, sweep / "kept")
    assert inside.exit_code == 2 and "must lie outside" in inside.output
    assert len(inside.output.strip().splitlines()) == 1


def test_archive_adds_each_utterances_voice_to_an_older_edits_json_whose_manifest_is_here(tmp_path):
    manifest = tmp_path / "test.jsonl"
    manifest.write_text("".join(json.dumps({"audio_filepath": f"{i}.flac", "text": "a b", "voice": f"en-us+v{i}"})
                                + "\n" for i in range(3)))
    sweep = _sweep(tmp_path)
    older = {**EDITS, "utterances": {"test": {"base": {"manifest": str(manifest), "lines": [3, 1]},
                                              "gone": {"manifest": str(tmp_path / "gone.jsonl"), "lines": [1]}}}}
    (sweep / "fusion" / "seed0" / "edits.json").write_text(json.dumps(older))
    assert _invoke("archive", sweep, tmp_path / "kept").exit_code == 0
    kept = json.loads((tmp_path / "kept" / "fusion" / "seed0" / "edits.json").read_text())
    assert kept["utterances"]["test"]["base"]["voices"] == ["en-us+v2", "en-us+v0"]
    assert "voices" not in kept["utterances"]["test"]["gone"]  # its manifest is not here: left as it was
    assert kept["steps"] == EDITS["steps"]
