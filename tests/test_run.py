"""End to end on the tiny stream with the tiny preset: the CLI, results.json, determinism, errors."""

import json
import shutil
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from continual_asr.cli import main
from continual_asr.data.prepare import SYNTH_VERSION, split_speakers
from continual_asr.config import make_config
from continual_asr.evaluation.metric_registry import STEP_METRICS
from continual_asr.reporting import RUN_FILES
from conftest import copy_tiny_cache
from experiment_scripts import load_experiment
from pinned_wer import PINNED_FILE, is_this_platform, this_platform

PINNED = json.loads(PINNED_FILE.read_text())


def _run(tmp_path, cache, name, strategy="adapter-fusion", seed=0, extra=()):
    out = tmp_path / name
    # Float sums depend on the thread count, and an earlier test may have changed this process's:
    # every run here uses the count its WER was pinned with (PINNED, below).
    result = CliRunner().invoke(main, ["run", "--stream", "tiny", "--strategy", strategy, "--preset", "tiny",
                                       "--out", str(out), "--seed", str(seed), "--cache-dir", str(cache),
                                       "--quiet", "--set", f"threads={PINNED['threads']}", *extra])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return json.loads((out / "results.json").read_text()), result.output


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory, tiny_cache_template):
    return copy_tiny_cache(tiny_cache_template, tmp_path_factory.mktemp("shared"))


@pytest.fixture(scope="module")
def tiny_run_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("run")


@pytest.fixture(scope="module")
def tiny_run(tiny_run_dir, shared_cache):
    return _run(tiny_run_dir, shared_cache, "fusion")


WHOLE_MODEL = ["finetune", "joint", "replay", "ewc", "lwf"]
ADAPTERS = ["adapter-oracle", "adapter-avg", "adapter-wavg", "adapter-fusion", "adapter-router"]


def _check_parameters(results: dict, strategy: str, train_adapters: bool = False) -> None:
    """Trained: the whole model for whole-model strategies; for adapter strategies the new
    adapter (all adapters with train_adapters) and the combiners (router included)."""
    for k, step in enumerate(results["steps"]):
        params = step["parameters"]
        assert params["stored"] == params["base"] + params["adapters"] + params["combiners"]
        assert params["trained_share"] == round(params["trained"] / params["stored"], 4)
        if strategy in WHOLE_MODEL:
            assert params["trained"] == params["base"] == params["stored"] and params["adapters"] == 0
            continue
        banked = len(results["imported_adapters"]) + k + 1
        adapters = params["adapters"] if train_adapters else params["adapters"] // banked
        assert params["trained"] == adapters + params["combiners"]
        assert (params["combiners"] == 0) == (strategy in ("adapter-oracle", "adapter-avg"))


@pytest.mark.parametrize("strategy", ADAPTERS + WHOLE_MODEL)
def test_every_builtin_strategy_runs_on_tiny(tmp_path, shared_cache, tiny_run, strategy):
    if strategy == "adapter-fusion":
        results = tiny_run[0]
    else:
        results, _ = _run(tmp_path, shared_cache, strategy, strategy=strategy)
    assert results["complete"] and results["strategy"] == strategy
    assert results["base_wer"] == tiny_run[0]["base_wer"]  # same cached base model
    assert len(results["wer_matrix"]) == 2
    _check_parameters(results, strategy)
    attends = strategy in ("adapter-wavg", "adapter-fusion")  # what learns weights over adapters
    assert all(("attention" in step) == attends for step in results["steps"])
    _check_pinned(results, strategy)


def _check_pinned(results: dict, strategy: str) -> None:
    """The tiny runs' WER as the code gave them before a restructuring: a change meant to keep
    the numbers (a refactor) must keep these; one meant to change them re-pins the strategies it
    changes (python tests/pinned_wer.py STRATEGY). Float arithmetic differs between CPU kinds
    and torch versions, so each platform has its own pins, and a run is compared only with its
    platform's."""
    assert results["config"]["threads"] == PINNED["threads"]  # what every pin ran on
    here = this_platform()
    platform = next((p for p in PINNED["platforms"] if is_this_platform(p)), None)
    if platform is None:
        pinned_on = [{k: p.get(k) for k in here} for p in PINNED["platforms"]]
        pytest.skip(f"WER pinned on {pinned_on}, this is {here}")
    if strategy not in platform["runs"]:
        pytest.skip(f"{strategy}'s WER is not pinned on {here} (python tests/pinned_wer.py {strategy})")
    pinned = platform["runs"][strategy]
    for key in ("base_wer", "wer_matrix", "dev_wer_matrix"):
        assert results[key] == pinned[key], f"{strategy}: {key} differs from tests/data/pinned_wer.json"


def test_rerun_into_the_same_out_continues_and_a_different_run_is_refused(tmp_path, shared_cache, tiny_run):
    first, _ = _run(tmp_path, shared_cache, "fusion")
    again, _ = _run(tmp_path, shared_cache, "fusion")  # finished: nothing to redo
    assert again == first
    out = tmp_path / "fusion"
    result = CliRunner().invoke(main, ["run", "--stream", "tiny", "--preset", "tiny", "--out", str(out),
                                       "--cache-dir", str(shared_cache), "--seed", "3", "--quiet"])
    assert result.exit_code == 2 and "holds a run with a different seed" in result.output


def test_a_run_resumes_from_a_moved_stream_file_but_not_from_an_edited_one(tmp_path, shared_cache, tiny_run):
    """Where the YAML lies (a re-cloned checkout) is not the run's identity; what it says is."""
    first, _ = _run(tmp_path, shared_cache, "fusion")
    streams = resources.files("continual_asr.stream_files")
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    (moved / "digits.txt").write_text(streams.joinpath("digits.txt").read_text())
    text = streams.joinpath("tiny.yaml").read_text()
    args = ["run", "--preset", "tiny", "--out", str(tmp_path / "fusion"), "--cache-dir", str(shared_cache), "--quiet"]
    (moved / "tiny.yaml").write_text(text)
    result = CliRunner().invoke(main, [*args, "--stream", str(moved / "tiny.yaml")])
    assert result.exit_code == 0 and json.loads((tmp_path / "fusion" / "results.json").read_text()) == first
    (moved / "tiny.yaml").write_text(text.replace("voice: en-029", "voice: en-gb-scotland"))
    result = CliRunner().invoke(main, [*args, "--stream", str(moved / "tiny.yaml")])
    assert result.exit_code == 2 and "holds a run with a different stream" in result.output


def test_results_json_has_the_documented_schema(tiny_run):
    results, output = tiny_run
    assert results["complete"] is True
    assert results["tasks"] == ["caribbean", "us-white-10db"]
    assert results["columns"] == ["us-clean", "caribbean", "us-white-10db", "scottish-reverb"]
    assert results["zero_shot_task"] == "scottish-reverb" and results["base_task"] == "us-clean"
    matrix = results["wer_matrix"]
    assert len(matrix) == 2 and all(len(row) == 4 for row in matrix)
    assert all(0.0 <= v for row in matrix for v in row)
    assert set(results["base_wer"]) == set(results["columns"])
    for step in results["steps"]:
        params = step["parameters"]
        assert 0 < params["trained"] < params["stored"]
        assert params["adapters"] > 0 and params["combiners"] > 0
        assert step["train_seconds"] > 0 and step["eval_seconds"] > 0 and step["peak_rss_mib"] > 50
    assert results["config"]["d_model"] == make_config("tiny").d_model
    assert results["versions"]["torch"] and results["versions"]["torch cpu capability"]
    assert len(results["base_model"]["weights"]) == 16  # what tells two runs' base models apart
    assert "after caribbean" in output and "WER %" in output
    dev = results["dev_wer_matrix"]  # dev is evaluated beside test, every column has a dev set here
    assert len(dev) == 2 and all(v is not None and v >= 0 for row in [results["base_dev_wer"].values(), *dev]
                                 for v in row)
    assert dev != matrix and set(results["data"]) == {"train", "dev", "test"}


def test_edit_counts_per_utterance_give_the_wer_matrix(tiny_run, tiny_run_dir):
    results, _ = tiny_run
    edits = json.loads((tiny_run_dir / "fusion" / "edits.json").read_text())
    assert edits["columns"] == results["columns"] and len(edits["steps"]) == 1 + len(results["wer_matrix"])
    rows = [[results["base_wer"][c] for c in results["columns"]], *results["wer_matrix"]]
    for step, row in zip(edits["steps"], rows):
        for column, wer in zip(results["columns"], row):
            counts = np.array(step[column])
            assert len(counts) == 12  # the tiny stream's test sets
            assert 100 * counts[:, 1:].sum() / counts[:, 0].sum() == pytest.approx(wer, abs=0.01)
    dev_rows = [list(results["base_dev_wer"].values()), *results["dev_wer_matrix"]]
    for step, row in zip(edits["dev_steps"], dev_rows, strict=True):
        for column, wer in zip(results["columns"], row):
            counts = np.array(step[column])
            assert 100 * counts[:, 1:].sum() / counts[:, 0].sum() == pytest.approx(wer, abs=0.01)


def test_saved_edits_name_their_utterances_and_group_by_voice(tiny_run, tiny_run_dir):
    """Each edit record's manifest line is the utterance it counts (its word count matches the
    manifest's transcript), so experiments/voice_wer.py can pool them per speaker variant."""
    results, _ = tiny_run
    assert results["stream"]["synthesis_version"] == SYNTH_VERSION  # compare refuses runs of other versions
    run = tiny_run_dir / "fusion"
    edits = json.loads((run / "edits.json").read_text())
    for split, key in (("test", "steps"), ("dev", "dev_steps")):
        for column, where in edits["utterances"][split].items():
            rows = Path(where["manifest"]).read_text().splitlines()
            words = [len(json.loads(rows[line - 1])["text"].split()) for line in where["lines"]]
            assert words == [counts[0] for counts in edits[key][-1][column]]
            assert len(set(where["lines"])) == len(where["lines"])
    voice_wer = load_experiment("voice_wer").voice_wer(run)
    held_out = set(split_speakers("test"))
    for split in ("test", "dev"):
        assert set(voice_wer[split]["learned"]) == held_out  # each variant speaks its share of every set
    pooled = [edits["steps"][-1][c] for c in results["columns"] if c != results["zero_shot_task"]]
    errors = np.concatenate([np.array(rows) for rows in pooled])
    by_voice = voice_wer["test"]["learned"]
    assert min(by_voice.values()) <= 100 * errors[:, 1:].sum() / errors[:, 0].sum() <= max(by_voice.values())


def test_saved_edits_keep_each_utterances_voice_so_an_archived_run_groups_by_speaker_alone(tiny_run, tiny_run_dir,
                                                                                          tmp_path):
    edits = json.loads((tiny_run_dir / "fusion" / "edits.json").read_text())
    for split in ("test", "dev"):
        for where in edits["utterances"][split].values():
            rows = Path(where["manifest"]).read_text().splitlines()
            assert where["voices"] == [json.loads(rows[line - 1])["voice"] for line in where["lines"]]
    # The manifests gone (an archived run on another machine): grouping by voice still works.
    run = tmp_path / "archived"
    run.mkdir()
    for split in ("test", "dev"):
        for where in edits["utterances"][split].values():
            where["manifest"] = str(tmp_path / "gone.jsonl")
    (run / "edits.json").write_text(json.dumps(edits))
    shutil.copy(tiny_run_dir / "fusion" / "results.json", run / "results.json")
    voice_wer = load_experiment("voice_wer")
    assert voice_wer.voice_wer(run) == voice_wer.voice_wer(tiny_run_dir / "fusion")
    with pytest.raises(SystemExit, match="gone.jsonl: missing"):
        voice_wer.voice_wer(run, by="speaker")  # another field needs the manifests


def test_a_run_writes_metrics_plots_report_and_tensorboard_events(tiny_run, tiny_run_dir):
    results, output = tiny_run
    out = tiny_run_dir / "fusion"
    for name in (*RUN_FILES, "results.json", "run.log"):
        assert (out / name).stat().st_size > 0, name
    rows = [[results["base_wer"][c] for c in results["columns"]], *results["wer_matrix"]]
    summary = results["summary"]
    assert summary["final_mean_wer"] == pytest.approx(np.mean(rows[-1][:-1]), abs=1e-3)
    assert summary["zero_shot_wer"] == rows[-1][-1] and summary["steps_done"] == 2
    assert summary["cost"]["eval_rtf"] > 0 and summary["cost"]["trained_parameters_per_step"] > 0
    awer = [results["base_model"]["metrics"]["average_wer"]] + [s["metrics"]["average_wer"] for s in results["steps"]]
    events = EventAccumulator(str(out))
    events.Reload()
    tags = events.Tags()["scalars"]
    for tag in ("BWT/eval_phase/test_stream", "ZeroShot/eval_phase/test_stream/WER", "Loss_MB/train_phase/train_stream",
                "Loss_Epoch/train_phase/train_stream", "WER_Exp/eval_phase/test_stream/Exp001_caribbean"):
        assert tag in tags, tag
    logged = events.Scalars("AWER/eval_phase/test_stream")
    assert [e.step for e in logged] == [0, 1, 2]
    assert [e.value for e in logged] == pytest.approx(awer, abs=0.01)
    assert [e.step for e in events.Images("AdapterAttention/eval_phase/test_stream")] == [1, 2]
    for metric in STEP_METRICS:  # every metric of the registry, at x = the step
        if not metric.per_task and metric.key not in ("forward_transfer", "intransigence"):  # no references here
            assert [e.step for e in events.Scalars(f"Metrics/{metric.key}")][-1] == 2, metric.key
    assert "Metrics/forgetting/us-clean" in tags


def test_a_fusion_run_records_what_each_test_set_attends_to(tiny_run, tiny_run_dir):
    results, _ = tiny_run
    for k, step in enumerate(results["steps"]):
        attention = step["attention"]
        assert attention["slots"] == [*results["tasks"][: k + 1], "no adapter"]
        assert list(attention["test_sets"]) == results["columns"]
        for layers in attention["test_sets"].values():
            assert len(layers) == make_config("tiny").num_layers
            assert all(len(row) == len(attention["slots"]) and sum(row) == pytest.approx(1, abs=1e-3) for row in layers)
    assert "What fusion attends to" in (tiny_run_dir / "fusion" / "report.html").read_text()


def test_rerunning_a_finished_run_with_reference_runs_adds_forward_transfer(tmp_path, tiny_run, tiny_run_dir):
    results, _ = tiny_run
    out = shutil.copytree(tiny_run_dir / "fusion", tmp_path / "fusion")
    oracle = tmp_path / "oracle"  # a hand-written single-task reference of the same stream
    oracle.mkdir()
    (oracle / "results.json").write_text(json.dumps({**results, "strategy": "adapter-oracle", "wer_matrix": [
        [0.0, 10.0, 50.0, 40.0], [0.0, 10.0, 30.0, 40.0]]}))
    again, _ = _run(tmp_path, tmp_path / "unused-cache", "fusion", extra=["--reference-runs", str(oracle)])
    assert again["references"]["single-task"]["wer"] == {"caribbean": 10.0, "us-white-10db": 30.0}
    diagonal = [results["wer_matrix"][0][1], results["wer_matrix"][1][2]]
    assert again["summary"]["forward_transfer"] == pytest.approx({"caribbean": 10.0 - diagonal[0],
                                                                  "us-white-10db": 30.0 - diagonal[1]})
    assert again["wer_matrix"] == results["wer_matrix"]
    page = (out / "report.html").read_text()
    assert "single-task" in page and str(oracle) in page


def test_adapter_strategies_share_extraction_and_reused_adapters_equal_trained_ones(tmp_path, shared_cache,
                                                                                   tiny_run):
    # tiny_run (adapter-fusion) has put both tasks' adapters into shared_cache.
    reused, _ = _run(tmp_path, shared_cache, "reused", strategy="adapter-avg")
    trained, _ = _run(tmp_path, shared_cache, "trained", strategy="adapter-avg",
                      extra=["--set", "share_adapters=false"])
    assert [s["adapter"] for s in reused["steps"]] == ["reused", "reused"]
    assert [s["adapter"] for s in trained["steps"]] == ["trained", "trained"]
    assert reused["steps"][0]["adapter_seconds"] > 0
    assert reused["summary"]["cost"]["reused_training_seconds"] > 0 == trained["summary"]["cost"]["reused_training_seconds"]
    assert reused["wer_matrix"] == trained["wer_matrix"]
    assert [s["parameters"] for s in reused["steps"]] == [s["parameters"] for s in trained["steps"]]
    weights = [torch.load(tmp_path / name / "checkpoint.pt", weights_only=True)["state_dict"]
               for name in ("reused", "trained")]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[1])
    # Another seed on the same base model trains its own adapters (the key holds the run's seed).
    other_seed, _ = _run(tmp_path, shared_cache, "seed1", strategy="adapter-oracle", seed=1,
                         extra=["--set", "pretrain_seed=0"])
    assert other_seed["base_wer"] == reused["base_wer"]  # the same cached base model, not pretrained again
    assert [s["adapter"] for s in other_seed["steps"]] == ["trained", "trained"]


@pytest.mark.parametrize("args, message", [
    (["--stream", "nope"], "unknown stream 'nope' (built in: accents, accents-then-noise, long, noise, tiny"),
    (["--strategy", "nope"], "unknown strategy 'nope' (valid: "),
    (["--set", "adapter_dim=x"], "config field 'adapter_dim' must be int"),
    (["--preset", "huge"], "unknown preset 'huge'"),
])
def test_bad_names_end_in_one_line(tmp_path, args, message):
    result = CliRunner().invoke(main, ["run", "--out", str(tmp_path / "o"), *args])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output and result.output.count("\n") == 1


def test_unwritable_out_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = CliRunner().invoke(main, ["run", "--stream", "tiny", "--preset", "tiny", "--out", str(blocker / "sub")])
    assert result.exit_code == 2 and "--out" in result.output and "not writable" in result.output


def test_ls_lists_streams_and_strategies():
    result = CliRunner().invoke(main, ["ls"])
    assert result.exit_code == 0
    for name in ("accents-then-noise", "tiny", "adapter-fusion", "adapter-oracle", "finetune"):
        assert name in result.output


def test_fields_lists_every_config_field_once_under_its_group():
    from dataclasses import fields

    from continual_asr.config import GROUPS, RunConfig
    from continual_asr.registry import option_fields

    lines = CliRunner().invoke(main, ["fields"]).output.splitlines()
    group, listed = None, {}
    for line in lines:
        if not line.startswith(" "):
            group = line.split(":")[0]
            assert group in GROUPS
        else:
            listed[line.split()[0]] = group
    expected = {f.name: f.metadata["group"] for f in fields(RunConfig)}
    expected.update({name: f.metadata["group"] for name, (f, _) in option_fields().items()})
    assert listed == expected and "ewc_lambda" in listed  # every strategy's options too, each once


def test_a_strategy_default_of_its_own_is_what_it_runs_with_and_fields_says_so():
    from continual_asr.registry import get_strategy, option_fields

    defaults = option_fields()["finetune_lr"][1]
    assert defaults["joint"] != defaults["finetune"]  # joint trains best at a higher rate
    for name, default in defaults.items():
        assert get_strategy(name).settings("default")[1].finetune_lr == default
    combiner_defaults = option_fields()["fusion_lr"][1]
    assert combiner_defaults["adapter-wavg"] < combiner_defaults["adapter-fusion"]  # the weighted mean a slower one
    for name, default in combiner_defaults.items():
        assert get_strategy(name).settings("default")[1].fusion_lr == default
    line = next(l for l in CliRunner().invoke(main, ["fields"]).output.splitlines() if l.split()[:1] == ["finetune_lr"])
    assert "varies" in line and f"{defaults['joint']} joint" in line


def test_an_exported_adapter_joins_the_weighted_mean_of_another_run(tmp_path, shared_cache, tiny_run, tiny_run_dir):
    vendor = tmp_path / "caribbean-adapter"
    exported = CliRunner().invoke(main, ["adapters", "export", str(tiny_run_dir / "fusion"), "caribbean", str(vendor)])
    assert exported.exit_code == 0, exported.output
    shown = CliRunner().invoke(main, ["adapters", "show", str(vendor)])
    assert "task: caribbean" in shown.output and "bottleneck 8" in shown.output
    # Both learning algorithms' switches on Adapter Weighted Mean: adapters train, no LayerNorm.
    results, _ = _run(tmp_path, shared_cache, "wavg", strategy="adapter-wavg",
                      extra=["--adapter", str(vendor), "--set", "train_adapters=true", "--set", "fusion_layernorm=false"])
    assert [a["task"] for a in results["imported_adapters"]] == ["caribbean"]
    checkpoint = torch.load(tmp_path / "wavg" / "checkpoint.pt", weights_only=True)
    assert checkpoint["adapter_tasks"] == ["imported:caribbean", "caribbean", "us-white-10db"]
    assert results["steps"][-1]["parameters"]["combiners"] == make_config("tiny").num_layers * 3  # 3 logits per layer
    _check_parameters(results, "adapter-wavg", train_adapters=True)
    # A rerun without the adapter is another run.
    again = CliRunner().invoke(main, ["run", "--stream", "tiny", "--preset", "tiny", "--strategy", "adapter-wavg",
                                      "--out", str(tmp_path / "wavg"), "--cache-dir", str(shared_cache), "--quiet",
                                      "--set", "train_adapters=true", "--set", "fusion_layernorm=false"])
    assert again.exit_code == 2 and "different imported_adapters" in again.output


def test_the_docs_strategy_example_runs_from_its_own_file(tmp_path, shared_cache, tiny_run):
    docs = (Path(__file__).parents[1] / "docs" / "strategies.md").read_text()
    code = docs.split("<!-- example strategy -->\n```python\n", 1)[1].split("```", 1)[0]
    assert len(code.splitlines()) <= 45
    assert code == (Path(__file__).parents[1] / "examples" / "l2sp.py").read_text()
    (tmp_path / "my_strategy.py").write_text(code)
    results, _ = _run(tmp_path, shared_cache, "mine", strategy=f"{tmp_path / 'my_strategy.py'}:l2sp",
                      extra=["--set", "l2sp_strength=0.1"])
    assert results["complete"] and results["strategy"] == "my_strategy.py:l2sp"
    assert results["config"]["l2sp_strength"] == 0.1 and results["config"]["l2sp_free_head"] is False
    _check_parameters(results, "finetune")


def test_config_file_and_strategy_options_are_checked_in_one_line(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("ewc_lambda: 10\n")
    for extra, message in [(["--config", str(config)], "config field 'ewc_lambda' is not an option of strategy 'finetune'"),
                           (["--set", "nope=1"], "unknown config field 'nope' (valid: ")]:
        result = CliRunner().invoke(main, ["run", "--stream", "tiny", "--strategy", "finetune", "--out",
                                           str(tmp_path / "o"), *extra])
        assert result.exit_code == 2 and message in result.output and result.output.count("\n") == 1


POISONED_STRATEGY = '''"""Fine-tuning whose loss turns NaN in the stream's second task."""
from avalanche.core import SupervisedPlugin

from continual_asr.training.template import SpeechTemplate


class Poison(SupervisedPlugin):
    def after_forward(self, strategy, **kwargs):
        if strategy.experience.current_experience == 1:
            first, *rest = strategy.mb_output
            strategy.mb_output = (first * float("nan"), *rest)


def Poisoned(model, config, options, plugins=None, **common):
    """Fine-tuning whose loss turns NaN in the second task."""
    return SpeechTemplate(model=model, config=config, plugins=[*(plugins or []), Poison()], **common)
'''


def test_a_non_finite_loss_names_strategy_task_phase_and_iteration_and_keeps_finished_steps(tmp_path, shared_cache,
                                                                                               tiny_run):
    (tmp_path / "poisoned.py").write_text(POISONED_STRATEGY)
    out = tmp_path / "nan"
    result = CliRunner().invoke(main, ["run", "--stream", "tiny", "--preset", "tiny", "--strategy",
                                       f"{tmp_path / 'poisoned.py'}:Poisoned", "--out", str(out),
                                       "--cache-dir", str(shared_cache), "--quiet"])
    assert result.exit_code == 2, result.output
    line = result.output.strip().splitlines()[-1]
    assert "Traceback" not in result.output
    assert line.startswith("casr: error: strategy ") and "poisoned.py:Poisoned" in line
    assert "task 2/2 (us-white-10db): non-finite loss (nan)" in line
    assert "phase 'finetune', iteration " in line and "the 1 finished step(s) are kept" in line
    results = json.loads((out / "results.json").read_text())
    assert len(results["wer_matrix"]) == 1 and results["complete"] is False


def test_the_papers_per_frame_fusion_runs_on_the_same_adapters_and_composes_otherwise(tmp_path, shared_cache,
                                                                                       tiny_run):
    assert tiny_run[0]["config"]["fusion_scope"] == "utterance"  # the default
    results, _ = _run(tmp_path, shared_cache, "frame", extra=["--set", "fusion_scope=frame"])
    assert results["complete"] and results["config"]["fusion_scope"] == "frame"
    assert [s["adapter"] for s in results["steps"]] == ["reused", "reused"]  # tiny_run's
    assert results["base_wer"] == tiny_run[0]["base_wer"]
    for layers in results["steps"][-1]["attention"]["test_sets"].values():
        # results.json rounds each weight to 4 decimals: a row's sum is 1 within half a unit per weight
        assert all(abs(sum(row) - 1.0) <= 0.5e-4 * len(row) + 1e-9 for row in layers)
    assert results["steps"][-1]["attention"] != tiny_run[0]["steps"][-1]["attention"]


def test_a_task_order_trains_the_same_tasks_on_the_same_data_in_another_order(tmp_path, shared_cache, tiny_run):
    results, _ = tiny_run
    reordered, _ = _run(tmp_path, shared_cache, "reordered", strategy="adapter-avg", extra=["--task-order", "2,1"])
    assert reordered["task_order"] == [2, 1] and results["task_order"] == [1, 2]
    assert reordered["tasks"] == ["us-white-10db", "caribbean"]
    assert reordered["columns"] == ["us-clean", "us-white-10db", "caribbean", "scottish-reverb"]
    assert reordered["data"] == results["data"]  # every split the same, whatever the order
    # single-task adapters do not depend on the order: the YAML order's (tiny_run's) serve it
    assert [s["adapter"] for s in reordered["steps"]] == ["reused", "reused"]
    result = CliRunner().invoke(main, ["run", "--stream", "tiny", "--strategy", "adapter-avg", "--preset", "tiny",
                                       "--out", str(tmp_path / "reordered"), "--cache-dir", str(shared_cache),
                                       "--quiet"])
    assert result.exit_code == 2 and "holds a run with a different task_order" in result.output


def test_a_run_in_bf16_on_the_cpu_trains_and_says_so(tmp_path, tiny_cache):
    """cpu_precision=bf16 (what auto gives on AMX CPUs) on any CPU: oracle routing (whose adapter
    outputs meet bf16 hidden states) runs and the log names the arithmetic."""
    results, _ = _run(tmp_path, tiny_cache, "bf16", strategy="adapter-oracle",
                      extra=["--set", "cpu_precision=bf16", "--set", "pretrain_epochs=2", "--set", "adapter_epochs=1"])
    assert results["complete"] and results["config"]["cpu_precision"] == "bf16"
    assert "bf16 autocast (forward and loss; attention, depthwise convolutions and weights in float32)" in (tmp_path / "bf16" / "run.log").read_text()
