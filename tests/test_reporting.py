"""`casr plot` and `casr compare` on hand-written results.json files; `casr run --seeds` plumbing."""

import csv
import json

import pytest
from click.testing import CliRunner
from fake_results import fake_results, write_run

from continual_asr.cli import main
from continual_asr.reporting import RUN_FILES

BASE = [10.0, 50.0, 60.0, 40.0]


def _run_dir(tmp_path, name, final_t1=25.0, strategy="adapter-fusion", seed=0, **kwargs):
    matrix = [[12.0, 20.0, 55.0, 38.0], [11.0, final_t1, 30.0, 44.0]]
    return write_run(tmp_path / name, fake_results(BASE, matrix, strategy=strategy, seed=seed, **kwargs))


def _invoke(*args):
    return CliRunner().invoke(main, list(map(str, args)))


def test_plot_rebuilds_every_file_from_results_json_alone(tmp_path):
    run = _run_dir(tmp_path, "run")
    result = _invoke("plot", run)
    assert result.exit_code == 0, result.output
    for name in RUN_FILES:
        assert (run / name).stat().st_size > 0, name
    assert sorted(p.name for p in run.iterdir()) == sorted([*RUN_FILES, "results.json"])  # no temporary files left
    for png in ("forgetting_curves.png", "wer_matrix.png"):
        assert (run / png).read_bytes().startswith(b"\x89PNG")
    rows = list(csv.reader((run / "wer_matrix.csv").open()))
    assert rows[0] == ["after", "base", "t1", "t2", "zs"]
    assert rows[1] == ["base model", "10.0", "50.0", "60.0", "40.0"] and rows[2][0] == "after t1"
    metrics = list(csv.DictReader((run / "metrics.csv").open()))
    assert [m["average_wer"] for m in metrics] == ["10.0", "16.0", "22.0"]
    assert metrics[2]["backward_transfer"] == "-3.0" and metrics[2]["max_drift:base"] == "2.0"
    assert metrics[2]["forgetting:t1"] == "5.0" and metrics[2]["average_wer_tasks"] == "27.5"
    page = (run / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 2
    assert "http://" not in page and "https://" not in page  # self-contained
    for text in ("adapter-fusion", "a hand-written stream", "22.00", "-3.00", "adapter_dim", "zs (zero-shot)"):
        assert text in page, text


def test_plot_is_deterministic_and_leaves_results_json_alone(tmp_path):
    run = _run_dir(tmp_path, "run")
    before = (run / "results.json").read_text()
    _invoke("plot", run)
    first = {name: (run / name).read_bytes() for name in ("wer_matrix.csv", "metrics.csv", "report.html")}
    _invoke("plot", run)
    assert first == {name: (run / name).read_bytes() for name in first}
    assert (run / "results.json").read_text() == before


def test_compare_aggregates_seeds_into_mean_and_std(tmp_path):
    runs = [_run_dir(tmp_path, f"fusion{s}", final_t1=t1, seed=s) for s, t1 in ((0, 25.0), (1, 28.0), (2, 31.0))]
    finetune = _run_dir(tmp_path, "finetune", final_t1=40.0, strategy="finetune", trained=1000)
    result = _invoke("compare", *runs, finetune, "--out", tmp_path / "cmp")
    assert result.exit_code == 0, result.output
    table = {row["strategy"]: row for row in csv.DictReader((tmp_path / "cmp" / "compare.csv").open())}
    fusion = table["adapter-fusion"]
    assert fusion["runs"] == "3" and fusion["seeds"] == "0 1 2"
    # final mean WER per seed: (11 + t1 + 30) / 3 = 22, 23, 24 -> mean 23, sample std 1
    assert float(fusion["final mean WER mean"]) == pytest.approx(23.0)
    assert float(fusion["final mean WER std"]) == pytest.approx(1.0)
    # BWT per seed: ((10 - 11) + (20 - t1)) / 2 = -3, -4.5, -6 -> mean -4.5, std 1.5
    assert float(fusion["BWT mean"]) == pytest.approx(-4.5) and float(fusion["BWT std"]) == pytest.approx(1.5)
    assert table["finetune"]["runs"] == "1" and table["finetune"]["final mean WER std"] == ""
    assert float(table["finetune"]["trained params/step mean"]) == 1000
    assert "FWT mean" not in fusion  # no reference runs given
    assert "23.00 ± 1.00" in result.output and "| adapter-fusion" in result.output
    assert (tmp_path / "cmp" / "compare.png").read_bytes().startswith(b"\x89PNG")


def test_compare_keeps_different_configs_of_one_strategy_apart(tmp_path):
    a = _run_dir(tmp_path, "a", config={"adapter_dim": 8})
    b = _run_dir(tmp_path, "b", config={"adapter_dim": 16})
    result = _invoke("compare", a, b, "--out", tmp_path / "cmp")
    assert result.exit_code == 0, result.output
    assert "adapter-fusion (adapter_dim=8)" in result.output and "adapter-fusion (adapter_dim=16)" in result.output


def test_compare_groups_a_run_that_recorded_every_strategys_fields_with_its_twin(tmp_path):
    # Runs from before options moved beside their strategies recorded other strategies' fields too.
    old = _run_dir(tmp_path, "old", config={"adapter_dim": 8, "ewc_lambda": 10000.0, "lwf_alpha": 1.0})
    new = _run_dir(tmp_path, "new", config={"adapter_dim": 8}, seed=1)
    result = _invoke("compare", old, new, "--out", tmp_path / "cmp")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((tmp_path / "cmp" / "compare.csv").open()))
    assert [(r["strategy"], r["runs"]) for r in rows] == [("adapter-fusion", "2")]


def test_compare_labels_a_one_factor_study_by_what_each_run_changes(tmp_path):
    default = {"adapter_dim": 8, "fusion_epochs": 3, "fusion_layernorm": False}  # the tiny preset's
    runs = [_run_dir(tmp_path, "default", config=default),
            _run_dir(tmp_path, "epochs", config={**default, "fusion_epochs": 1}),
            _run_dir(tmp_path, "ln", config={**default, "fusion_layernorm": True})]
    result = _invoke("compare", *runs, "--out", tmp_path / "cmp")
    assert result.exit_code == 0, result.output
    labels = [line.split("|")[1].strip() for line in result.output.splitlines() if line.startswith("| adapter")]
    assert labels == ["adapter-fusion", "adapter-fusion (fusion_epochs=1)", "adapter-fusion (fusion_layernorm=True)"]


def test_a_setting_most_groups_share_is_named_unless_it_is_the_default(tmp_path):
    # Two of three groups at 1 fusion epoch: the tiny preset's default is 3, so the plain name
    # would pass 1 epoch off as the default.
    default = {"adapter_dim": 8, "fusion_epochs": 3, "fusion_lr": 2e-3}
    runs = [_run_dir(tmp_path, "default", config=default),
            _run_dir(tmp_path, "one", config={**default, "fusion_epochs": 1}),
            _run_dir(tmp_path, "one-fast", config={**default, "fusion_epochs": 1, "fusion_lr": 4e-3})]
    result = _invoke("compare", *runs, "--out", tmp_path / "cmp")
    assert result.exit_code == 0, result.output
    labels = [line.split("|")[1].strip() for line in result.output.splitlines() if line.startswith("| adapter")]
    assert labels == ["adapter-fusion (fusion_epochs=3)", "adapter-fusion (fusion_epochs=1)",
                      "adapter-fusion (fusion_epochs=1, fusion_lr=0.004)"]


def test_a_field_newer_than_a_run_counts_at_its_default_and_how_a_run_ran_tells_nothing_apart(tmp_path):
    # "old" ran before fusion_scope existed (so per frame); threads is how a run ran, not what.
    old = _run_dir(tmp_path, "old", config={"adapter_dim": 8, "threads": 0})
    frame = _run_dir(tmp_path, "frame", config={"adapter_dim": 8, "fusion_scope": "frame", "threads": 1}, seed=1)
    utterance = _run_dir(tmp_path, "utterance", config={"adapter_dim": 8, "fusion_scope": "utterance", "threads": 1})
    result = _invoke("compare", old, frame, utterance, "--out", tmp_path / "cmp")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((tmp_path / "cmp" / "compare.csv").open()))
    assert [(r["strategy"], r["runs"]) for r in rows] == [("adapter-fusion (fusion_scope=frame)", "2"),
                                                          ("adapter-fusion (fusion_scope=utterance)", "1")]


def test_an_ewc_run_from_before_ewc_importance_counts_as_avalanches_batch_importances(tmp_path):
    old = _run_dir(tmp_path, "old", strategy="ewc", config={"ewc_lambda": 1e5})
    batch = _run_dir(tmp_path, "batch", strategy="ewc", config={"ewc_lambda": 1e5, "ewc_importance": "batch"}, seed=1)
    fisher = _run_dir(tmp_path, "fisher", strategy="ewc", config={"ewc_lambda": 1e5, "ewc_importance": "utterance"})
    result = _invoke("compare", old, batch, fisher, "--out", tmp_path / "cmp")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((tmp_path / "cmp" / "compare.csv").open()))
    assert [(r["strategy"], r["runs"]) for r in rows] == [("ewc (ewc_importance=batch)", "2"),
                                                          ("ewc (ewc_importance=utterance)", "1")]


def test_compare_with_reference_runs_adds_forward_transfer(tmp_path):
    oracle = write_run(tmp_path / "oracle", fake_results(BASE, [[10, 24, 60, 40], [10, 24, 28, 40]],
                                                         strategy="adapter-oracle"))
    result = _invoke("compare", _run_dir(tmp_path, "run"), "--reference-runs", oracle, "--out", tmp_path / "cmp")
    assert result.exit_code == 0, result.output
    row = next(csv.DictReader((tmp_path / "cmp" / "compare.csv").open()))
    assert float(row["FWT mean"]) == pytest.approx(1.0)  # (24 - 20 + 28 - 30) / 2


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "empty", "empty: no results.json (not a casr run folder)"),
    (lambda p: write_run(p / "half", fake_results(BASE, [[12.0, 20.0, 55.0, 38.0]])), "half: incomplete run (1 of 2"),
    (lambda p: write_run(p / "other", fake_results([1, 2, 3], [[1, 2, 3]], columns=["base", "t1", "zs"])),
     "compare runs of one stream"),
])
def test_compare_errors_are_one_line_naming_the_folder(tmp_path, make, message):
    folder = make(tmp_path)
    folder.mkdir(exist_ok=True)
    result = _invoke("compare", _run_dir(tmp_path, "good"), folder, "--out", tmp_path / "cmp")
    assert result.exit_code == 2 and message in result.output
    assert result.output.startswith("casr: error: ") and result.output.count("\n") == 1


def _synthesized(results: dict, version: int | None) -> dict:
    return {**results, "stream": {**results["stream"], "synthesis_version": version}}


def test_compare_refuses_runs_on_two_synthesis_versions_only(tmp_path):
    matrix = [[12, 20, 55, 38], [13, 22, 30, 37]]
    v4, v5 = (write_run(tmp_path / f"v{n}", _synthesized(fake_results(BASE, matrix), n)) for n in (4, 5))
    result = _invoke("compare", v4, v5, "--out", tmp_path / "cmp")
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "v5: its speech is of synthesis version 5" in result.output and "do not compare" in result.output
    recorded = write_run(tmp_path / "manifests", _synthesized(fake_results(BASE, matrix), None))
    for other in (recorded, _run_dir(tmp_path, "from-before-versions")):
        result = _invoke("compare", v4, other, "--out", tmp_path / "cmp")
        assert result.exit_code == 0, result.output


def _with_base(results: dict, base_row=None, weights=None) -> dict:
    base_model = {**results["base_model"], **({"weights": weights} if weights else {})}
    return {**results, "base_model": base_model,
            "base_wer": dict(zip(results["columns"], base_row)) if base_row else results["base_wer"]}


def test_compare_says_when_its_runs_start_from_different_base_models(tmp_path):
    matrix = [[12, 20, 55, 38], [13, 22, 30, 37]]
    same = [write_run(tmp_path / f"s{seed}", _with_base(fake_results(BASE, matrix, seed=seed))) for seed in (0, 1)]
    result = _invoke("compare", *same, "--out", tmp_path / "cmp")
    assert result.exit_code == 0 and "Not one base model" not in result.output
    # Runs from before weights were recorded: told apart by the base model's WERs.
    other = write_run(tmp_path / "other", _with_base(fake_results(BASE, matrix, strategy="finetune"), [11.0, 50, 60, 40]))
    result = _invoke("compare", *same, other, "--out", tmp_path / "cmp")
    assert result.exit_code == 0, result.output
    assert "start from 2 different base models (told apart by their WERs on every test and dev set" in result.output
    assert "base test WER 10.00 under 2 runs (adapter-fusion); base test WER 11.00 under 1 run (finetune)" in result.output
    # Where every run recorded its base model's weights, those decide, whatever the WERs.
    digests = [write_run(tmp_path / f"d{seed}", _with_base(fake_results(BASE, matrix, seed=seed), weights=w))
               for seed, w in ((0, "aaaa"), (1, "aaaa"), (2, "bbbb"))]
    result = _invoke("compare", *digests, "--out", tmp_path / "cmp")
    assert "start from 2 different base models (told apart by their weights" in result.output
    assert "Not one base model" not in _invoke("compare", *digests[:2], "--out", tmp_path / "cmp").output


def test_compare_says_when_its_runs_trained_or_tested_on_different_features(tmp_path):
    matrix = [[12, 20, 55, 38], [13, 22, 30, 37]]
    data = {"train": {"us": "t0"}, "dev": {"us": "d0"}, "test": {"us": "a0", "accent": "b0"}}
    same = [write_run(tmp_path / f"s{seed}", {**fake_results(BASE, matrix, seed=seed), "data": data}) for seed in (0, 1)]
    before = write_run(tmp_path / "before", fake_results(BASE, matrix, seed=2))  # from before digests: no verdict
    result = _invoke("compare", *same, before, "--out", tmp_path / "cmp")
    assert result.exit_code == 0 and "Not one data set" not in result.output
    other = {**data, "test": {"us": "a1", "accent": "b0"}}
    odd = write_run(tmp_path / "odd", {**fake_results(BASE, matrix, strategy="finetune"), "data": other})
    result = _invoke("compare", *same, odd, "--out", tmp_path / "cmp")
    assert result.exit_code == 0, result.output
    assert "Not one data set" in result.output and "us test (2 runs a0; 1 run a1)" in result.output
    assert "accent" not in result.output.split("Not one data set")[1].split("\n")[0]


def test_compare_groups_runs_from_one_base_model_file_under_two_paths_by_its_weights(tmp_path):
    # A study extended after its base model file moved into the repository: the same weights.
    matrix = [[12, 20, 55, 38], [13, 22, 30, 37]]
    runs = [write_run(tmp_path / name, _with_base(fake_results(BASE, matrix, seed=seed, config={"base_model": path}),
                                                  weights=weights))
            for name, seed, path, weights in (("moved0", 0, "casr:/tmp/hat-base.pt", "aaaa"),
                                              ("moved1", 1, "casr:results/hat-base.pt", "aaaa"),
                                              ("other", 2, "casr:results/hat-base.pt", "bbbb"))]
    result = _invoke("compare", *runs, "--out", tmp_path / "cmp")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((tmp_path / "cmp" / "compare.csv").open()))
    assert sorted(r["runs"] for r in rows) == ["1", "2"]  # one path apart: together; other weights: apart
    assert "base_model=casr:FILE of weights bbbb" in result.output


def test_plot_of_a_folder_without_results_names_it(tmp_path):
    result = _invoke("plot", tmp_path / "nothing")
    assert result.exit_code == 2 and "nothing: no results.json" in result.output


def test_run_with_seeds_runs_each_seed_into_a_sub_folder_then_compares(tmp_path, monkeypatch):
    calls = []

    def fake_run_stream(stream, strategy, config, out, *, seed, reference_runs, **kwargs):
        calls.append((seed, out.name, reference_runs))
        results = fake_results(BASE, [[12.0, 20.0, 55.0, 38.0], [11.0, 25.0 + seed, 30.0, 44.0]],
                               strategy=strategy.name, seed=seed)
        (out / "results.json").write_text(json.dumps(results))
        return results

    monkeypatch.setattr("continual_asr.runner.run_stream", fake_run_stream)
    out = tmp_path / "multi"
    result = _invoke("run", "--stream", "tiny", "--preset", "tiny", "--out", out, "--seeds", "0,1,2", "--quiet")
    assert result.exit_code == 0, result.output
    assert calls == [(0, "seed0", []), (1, "seed1", []), (2, "seed2", [])]
    assert (out / "compare.csv").is_file() and "0, 1, 2" in result.output
    assert _invoke("run", "--stream", "tiny", "--seed", "1", "--seeds", "0,1", "--out", out).output == \
        "casr: error: give --seed or --seeds, not both\n"
    assert "--seeds must be integers" in _invoke("run", "--stream", "tiny", "--seeds", "0,x", "--out", out).output
