"""The ``casr`` command: thin click commands over the library functions."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from .cli_common import one_line_errors, parse_seeds
from .cli_sweep import sweep_command

OUT_HELP = "output folder (default: runs/STREAM-STRATEGY-seedN; with --seeds: runs/STREAM-STRATEGY/seedN)"
SKIP_BAD_HELP = "leave bad utterances out (counted in the log) instead of stopping with an error"
REFERENCE_HELP = ("a reference run folder of the same stream (adapter-oracle: single-task, joint: joint) for "
                  "forward transfer and intransigence; repeatable")
DEVICE_HELP = "auto (a CUDA GPU if torch sees one, else the CPU), cpu, cuda or cuda:N; bf16 mixed precision on a GPU"
NPROC_HELP = ("run as N data-parallel processes on this machine (runs this command again through torch's launcher; "
              "with cuda, one GPU each); several machines: torchrun ... -m continual_asr")


PRESET_HELP = "model and training sizes: tiny or default (default: the stream's own preset if it names one, else default)"


def _settings(config_preset: str | None, overrides: tuple[str, ...], stream_name: str, config_file: str | None = None,
              strategy=None):
    """(the user's flat config fields, stream, preset name): without --preset, the stream's own
    preset, else default. ``StrategyInfo.settings`` turns the fields into config and options
    (``strategy``: its options are fields of the config file too, if it comes from a file)."""
    from .config import load_config_file, parse_overrides
    from .registry import all_fields
    from .stream import load_stream

    known = all_fields() | set(strategy.option_names if strategy else ())
    values = {**(load_config_file(config_file, known) if config_file else {}), **parse_overrides(overrides)}
    stream = load_stream(stream_name)
    return values, stream, config_preset or stream.preset or "default"


def _common(config_preset: str | None, overrides: tuple[str, ...], stream_name: str, config_file: str | None = None):
    """(general config, stream, preset name) of a command that trains no strategy: strategies'
    options are accepted and ignored (an unknown field is still refused)."""
    from .config import GENERAL_FIELDS, make_config
    from .registry import refuse_unknown_fields

    from .model.hf_encoder import check_base_model
    from .training.base_file import with_reference_base

    values, stream, preset = _settings(config_preset, overrides, stream_name, config_file)
    refuse_unknown_fields(values)
    config = with_reference_base(make_config(preset, {k: v for k, v in values.items() if k in GENERAL_FIELDS}), stream)
    check_base_model(config.base_model)
    return config, stream, preset


def _start_worker_server(nproc: int) -> None:
    """With ``--nproc N`` outside torchrun, start the server the N processes will fork from now:
    its import of casr then overlaps this process's (continual_asr/worker_server.py)."""
    if nproc > 1 and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        from .worker_server import start_early

        start_early()


def _start_processes(command: str, device: str, nproc: int):
    """The torch device of this process. With ``--nproc N`` (N > 1) in a plain process, run this
    command again as N processes through torch's elastic launcher and exit with their status;
    under torchrun, join its process group (continual_asr/distributed.py)."""
    from click.core import ParameterSource

    from . import distributed
    from .errors import ConfigError

    torch_device = distributed.resolve_device(device)
    if nproc < 1:
        raise ConfigError(f"--nproc must be at least 1, got {nproc}")
    if nproc > 1:
        if distributed.launched():
            raise ConfigError("--nproc starts processes itself; under torchrun leave it out (torchrun's "
                              "--nproc-per-node says how many)")
        if torch_device.type == "cuda":
            import torch

            if nproc > torch.cuda.device_count():
                raise ConfigError(f"--nproc {nproc} with --device {device}: one GPU per process, and only "
                                  f"{torch.cuda.device_count()} are visible")
        ctx = click.get_current_context()
        args = [command]
        for param in ctx.command.params:
            if not isinstance(param, click.Option) or param.name == "nproc":
                continue
            if ctx.get_parameter_source(param.name) in (ParameterSource.DEFAULT, None):
                continue
            value, flag = ctx.params[param.name], max(param.opts, key=len)
            if param.is_flag:
                args += [flag] if value else []
            elif param.multiple:
                args += [item for v in value for item in (flag, str(v))]
            elif value is not None:
                args += [flag, str(value)]
        sys.exit(distributed.launch_local(nproc, args))
    distributed.init(torch_device)
    return torch_device


def _warn_if_cores_busy(torch_device, threads: int) -> None:
    """Before CPU training in one process: warn, in the log, when other work already holds the
    cores its torch threads need (continual_asr/cpu_load.py)."""
    import logging

    from . import distributed

    if torch_device.type != "cpu" or distributed.launched():
        return
    import torch

    from .cpu_load import busy_cores_warning

    message = busy_cores_warning(threads or torch.get_num_threads(),
                                 lambda fits: f"--set threads={fits}, or start it when the cores are free")
    if message:
        logging.getLogger("continual_asr").warning(message)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="continual-asr")
def main() -> None:
    """continual-asr: continual learning for speech recognition (Audio-AdapterFusion and baselines)."""


@main.command()
@click.option("--stream", "stream_name", default="accents-then-noise", show_default=True,
              help="built-in stream name or path to a stream YAML file")
@click.option("--strategy", "strategy_name", default="adapter-fusion", show_default=True,
              help="registered strategy name, or path/to/file.py:Name")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None, help=OUT_HELP)
@click.option("--preset", default=None, help=PRESET_HELP)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="override one config field (repeatable)")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="YAML mapping of config fields (under the preset, over which --set wins)")
@click.option("--adapter", "adapter_files", multiple=True, metavar="DIR",
              help="an exported adapter (casr adapters export) of the same base model, fused from the first task on; repeatable")
@click.option("--seed", default=0, show_default=True, type=int, help="seed of model init and training order")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="where synthesized audio, features and base models are cached (default: $CASR_CACHE or ~/.cache/continual-asr)")
@click.option("--device", default="auto", show_default=True, help=DEVICE_HELP)
@click.option("--nproc", default=1, show_default=True, type=int, metavar="N", help=NPROC_HELP)
@click.option("--quiet", is_flag=True, help="no progress bars or log lines on the terminal (run.log still gets them)")
@click.option("--overwrite", is_flag=True, help="start over even if --out holds an earlier run (default: continue it)")
@click.option("--seeds", default=None, metavar="N,N,...",
              help="run these seeds one after another into OUT/seedN sub-folders, then compare them")
@click.option("--reference-runs", "reference_runs", multiple=True, metavar="DIR", help=REFERENCE_HELP)
@click.option("--skip-bad", is_flag=True, help=SKIP_BAD_HELP)
@click.option("--task-order", default=None, metavar="3,1,2,...|shuffle:SEED",
              help="learn the stream's tasks in this order (YAML positions, 1-based) or a seeded shuffle of it")
@one_line_errors
def run(stream_name, strategy_name, out_dir, preset, overrides, config_file, adapter_files, seed, cache_dir, device,
        nproc, quiet, overwrite, seeds, reference_runs, skip_bad, task_order) -> None:
    """Learn the stream's tasks one after another; WER on every task after each step.

    Writes results.json, wer_matrix.csv, metrics.csv, forgetting_curves.png, wer_matrix.png,
    report.html, run.log and TensorBoard events into --out. Rerunning the same command into
    the same --out continues after the last finished task. Several processes: --nproc N here,
    or torchrun --nproc-per-node N [--nnodes ...] -m continual_asr run ...
    """
    _start_worker_server(nproc)
    from click.core import ParameterSource

    from . import distributed
    from .errors import ConfigError
    from .registry import get_strategy
    from .reporting import compare_runs, comparison_markdown, write_comparison
    from .runner import ensure_writable, format_wer_table, run_stream, setup_logging

    strategy = get_strategy(strategy_name)
    values, stream, preset = _settings(preset, overrides, stream_name, config_file, strategy)
    stream = stream.in_order(task_order)
    config, options = strategy.settings(preset, values)
    name = f"runs/{stream.name}-{strategy.name.replace(':', '-').replace('.py', '')}"
    if stream.task_order:
        name += "-order" + "-".join(map(str, stream.order))
    if seeds is None:
        targets = [(seed, Path(out_dir or f"{name}-seed{seed}"))]
    else:
        if click.get_current_context().get_parameter_source("seed") is not ParameterSource.DEFAULT:
            raise ConfigError("give --seed or --seeds, not both")
        base = Path(out_dir or name)
        targets = [(s, base / f"seed{s}") for s in parse_seeds(seeds)]
    rank0 = distributed.is_main()  # rank 0 alone writes; the other processes log errors only
    if rank0:
        for _, out in targets:
            ensure_writable(out, "--out")
    torch_device = _start_processes("run", device, nproc)
    for number, (run_seed, out) in enumerate(targets):
        setup_logging(out if rank0 else None, quiet, errors_only=not rank0)
        if number == 0:
            _warn_if_cores_busy(torch_device, config.threads)
        results = run_stream(stream, strategy, config, out, options=options, seed=run_seed, preset=preset,
                             cache_dir=Path(cache_dir) if cache_dir else None, device=torch_device,
                             progress=not quiet, overwrite=overwrite, reference_runs=[Path(r) for r in reference_runs],
                             skip_bad=skip_bad, adapters=[Path(a) for a in adapter_files])
        if rank0:
            click.echo(format_wer_table(results))
            click.echo(f"wall time {results['wall_seconds']:.0f} s; results.json, plots and report.html in {out}")
    distributed.shutdown()
    if len(targets) > 1 and rank0:
        groups = compare_runs([out for _, out in targets])
        paths = write_comparison(groups, base)
        click.echo(comparison_markdown(groups))
        click.echo("comparison: " + ", ".join(map(str, paths)))


@main.command()
@click.argument("run_dirs", nargs=-1, required=True)
@click.option("--out", "out_dir", default=None, metavar="DIR",
              help="where compare.csv and compare.png go (default: runs/compare-STREAM)")
@click.option("--reference-runs", "reference_runs", multiple=True, metavar="DIR", help=REFERENCE_HELP)
@click.option("--baseline", "baselines", multiple=True, metavar="NAME",
              help="a group to test every other against (a strategy name, a table label, or STRATEGY (field=value, "
                   "...) with some of the label's fields): differences with 95 %% paired bootstrap intervals, "
                   "significant ones marked; repeatable")
@click.option("--split", type=click.Choice(["test", "dev"]), default="test", show_default=True,
              help="the evaluation sets of --baseline's intervals: test to report, dev to check a choice made on dev")
@one_line_errors
def compare(run_dirs, out_dir, reference_runs, baselines, split) -> None:
    """Compare finished runs of one stream: a table (mean ± std over seeds) and an overlay plot.

    Runs that differ only in their seed are aggregated. The table is printed as markdown and
    written as compare.csv; compare.png shows AWER and zero-shot WER per step per strategy.
    With --baseline, the differences from that group with their intervals (intervals_NAME.csv;
    with --split dev, on the dev sets: intervals_NAME_dev.csv).
    """
    from .folders import ensure_writable
    from .reporting import compare_runs, comparison_markdown, provenance_notes, write_comparison
    from .reporting.intervals import interval_table, intervals_csv, intervals_markdown
    from .results import write_bytes_atomic

    groups = compare_runs(run_dirs, reference_runs)
    out = ensure_writable(Path(out_dir or f"runs/compare-{groups[0].runs[0]['stream']['name']}"), "--out")
    paths = write_comparison(groups, out)
    click.echo(comparison_markdown(groups))
    for note in provenance_notes(groups):
        click.echo("\n" + note)
    for name in baselines:
        table = interval_table(groups, name, split)  # the bootstrap once, for the table and the CSV
        click.echo("\n" + intervals_markdown(table))
        suffix = "" if split == "test" else f"_{split}"
        path = out / f"intervals_{name.replace(' ', '_').replace('/', '_')}{suffix}.csv"
        write_bytes_atomic(path, intervals_csv(table).encode("utf-8"))
        paths.append(path)
    click.echo("written: " + ", ".join(map(str, paths)))


@main.command()
@click.argument("run_dir")
@one_line_errors
def plot(run_dir) -> None:
    """Re-create a run's CSVs, plots and report.html from its results.json alone."""
    from .folders import ensure_writable
    from .reporting import load_results, write_run_outputs

    results = load_results(run_dir)
    paths = write_run_outputs(results, ensure_writable(Path(run_dir), "run folder"))
    click.echo("written: " + ", ".join(map(str, paths)))


@main.command()
@click.option("--stream", "stream_name", default="accents-then-noise", show_default=True)
@click.option("--preset", default=None, help=PRESET_HELP)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="YAML mapping of config fields (under the preset, over which --set wins)")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None)
@click.option("--device", default="auto", show_default=True, help=DEVICE_HELP)
@click.option("--nproc", default=1, show_default=True, type=int, metavar="N", help=NPROC_HELP)
@click.option("--quiet", is_flag=True)
@click.option("--skip-bad", is_flag=True, help=SKIP_BAD_HELP)
@click.option("--export", "export_path", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="also write the base model to FILE: runs with --set base_model=casr:FILE then start from "
                   "these weights on any machine, instead of pretraining their own")
@click.option("--split", type=click.Choice(["test", "dev"]), default="test", show_default=True,
              help="the sets the base model's WER is printed on (choose settings on dev)")
@one_line_errors
def pretrain(stream_name, preset, overrides, config_file, seed, cache_dir, device, nproc, quiet, skip_bad,
             export_path, split) -> None:
    """Prepare the stream's data and pretrain (or find cached) its base model."""
    _start_worker_server(nproc)
    from . import distributed
    from .config import HF_PREFIX
    from .data.streamdata import prepare_stream_data
    from .errors import ConfigError
    from .runner import default_cache_dir, ensure_writable, setup_logging
    from .training.base_file import export_base_model, weights_digest
    from .training.pretrain import evaluate_base_model, pretrain_base_model

    config, stream, preset = _common(preset, overrides, stream_name, config_file)
    if export_path and config.base_model.startswith(HF_PREFIX):
        raise ConfigError(f"--export: a Hugging Face base model is a folder already; runs name it with "
                          f"base_model={HF_PREFIX}PATH")
    torch_device = _start_processes("pretrain", device, nproc)
    rank0 = distributed.is_main()
    cache = ensure_writable(Path(cache_dir) if cache_dir else default_cache_dir(), "cache folder")
    setup_logging(None, quiet, errors_only=not rank0)
    _warn_if_cores_busy(torch_device, config.threads)
    progress = not quiet and rank0
    data = distributed.in_turn(lambda: prepare_stream_data(stream, config, cache, progress=progress, skip_bad=skip_bad))
    model, info = pretrain_base_model(data, config, seed, cache, torch_device, progress=progress)
    state = "from disk, not trained here" if info.get("source") else (
        "cached" if info["cached"] else f"trained in {info['seconds']:.0f} s")
    if rank0:
        weights = weights_digest(model)
        click.echo(f"base model for {stream.name} ({state}): {info['path']} (weights {weights})")
        if export_path:
            export_base_model(model, Path(export_path), data, config, info, weights)
            click.echo(f"written: {export_path} (runs load it with --set base_model=casr:{export_path})")
    wers = evaluate_base_model(model, data, config, torch_device, split=split)
    if rank0:
        click.echo(f"base model {split} WER %: " + ", ".join(f"{name} {wer:.2f}" for name, wer in wers.items()))
    distributed.shutdown()


@main.group(name="data", invoke_without_command=True)
@click.option("--stream", "stream_name", default="accents-then-noise", show_default=True,
              help="built-in stream name or path to a stream YAML file")
@click.option("--preset", default=None, help="as for run: tiny caps utterances per task")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="override one config field (repeatable)")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None)
@click.option("--skip-bad", is_flag=True, help="exit 0 despite problems (a run with --skip-bad leaves them out)")
@click.option("--quiet", is_flag=True, help="no progress bars or log lines")
@click.pass_context
@one_line_errors
def data_command(ctx, stream_name, preset, overrides, cache_dir, skip_bad, quiet) -> None:
    """Prepare the stream's data and report on it, so that bad data shows up before a run.

    Synthesizes or reads every task, caches its features, then prints per task and split:
    utterances, hours, mean duration, vocabulary size (distinct words) and the problems found,
    each naming its file and line. Exits with status 2 if there are problems, unless --skip-bad.
    `casr data import` turns a corpus on disk into a stream.
    """
    if ctx.invoked_subcommand is not None:
        return
    from .data.overview import format_overview
    from .data.streamdata import check_evaluation_sets, load_stream_splits
    from .errors import DataError
    from .runner import default_cache_dir, ensure_writable, setup_logging

    config, stream, preset = _common(preset, overrides, stream_name)
    cache = ensure_writable(Path(cache_dir) if cache_dir else default_cache_dir(), "cache folder")
    setup_logging(None, quiet)
    splits, _ = load_stream_splits(stream, config, cache, progress=not quiet)
    click.echo(format_overview(stream, splits))
    problems = sum(len(features.problems) for features in splits.values())
    if problems and not skip_bad:
        raise DataError(f"{problems} problem(s) in the data of stream {stream.name} (listed above); fix them, "
                        "or pass --skip-bad to leave those utterances out")
    check_evaluation_sets(splits)


@data_command.command(name="import")
@click.argument("corpus")
@click.argument("corpus_dir", type=click.Path(file_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="where the manifests and stream.yaml go")
@click.option("--base", default=None, help="the base task (default: the first alphabetically)")
@click.option("--zero-shot", "zero_shot", default=None, help="the zero-shot task (default: the last alphabetically)")
@one_line_errors
def import_command(corpus, corpus_dir, out_dir, base, zero_shot) -> None:
    """Turn CORPUS (l2-arctic, vctk, commonvoice, librispeech or cmu-arctic), on disk in CORPUS_DIR, into a stream with lhotse's recipe:
    a CutSet per task and split in --out and stream.yaml, dev and test voices and sentences
    never in training. Nothing is downloaded."""
    from .data.corpus_import import import_corpus
    from .folders import ensure_writable

    path, left_out = import_corpus(corpus, Path(corpus_dir), ensure_writable(Path(out_dir), "--out"), base, zero_shot)
    if left_out:
        click.echo("left out (fewer than 3 speakers): " + ", ".join(f"{g} ({n})" for g, n in sorted(left_out.items())))
    click.echo(f"stream written to {path}; check it with: casr data --stream {path}")


@main.command(name="ls")
def list_things() -> None:
    """List the built-in streams, the strategies and the presets."""
    from .config import PRESETS
    from .registry import available_strategies
    from .stream import describe_builtin_streams

    click.echo("streams:")
    for name, description in describe_builtin_streams().items():
        click.echo(f"  {name:<22} {description}")
    click.echo("strategies:")
    for info in available_strategies().values():
        click.echo(f"  {info.name:<22} {info.description}")
        click.echo(f"  {'':<22} options: {', '.join(info.option_names) or 'none'}")
    click.echo(f"presets: {', '.join(PRESETS)}")
    click.echo("(casr run --set FIELD=VALUE or --config FILE.yaml; every field and its help: casr fields)")


@main.command()
@click.argument("source", type=click.Path(file_okay=False))
@click.argument("dest", type=click.Path(file_okay=False))
@one_line_errors
def archive(source, dest) -> None:
    """Copy the finished runs under SOURCE (a run or a sweep folder) into DEST without their
    checkpoints: results.json, edits.json and run.log of each, at the same relative path, and a
    sweep's results.md, compare.csv, compare.png and history. compare, plot and sweep
    --report-only work on DEST; a sweep or rerun into an archived run reads it back instead of
    training it again."""
    from .archive import archive_runs

    archived, unfinished = archive_runs(Path(source), Path(dest))
    click.echo(f"archived {len(archived)} finished run(s) into {dest}"
               + (f"; left out {len(unfinished)} unfinished: " + ", ".join(map(str, unfinished)) if unfinished else ""))


@main.command(name="fields")
def list_fields() -> None:
    """List every config field, by group, with its default and help text; a strategy's option
    also says which strategies read it."""
    from dataclasses import fields

    from .config import GROUPS, RunConfig
    from .registry import option_fields

    listed = [(f, None) for f in fields(RunConfig)] + list(option_fields().values())
    groups = list(GROUPS) + sorted({f.metadata["group"] for f, _ in listed} - set(GROUPS))
    for group in groups:
        click.echo(f"{group}: {GROUPS.get(group, 'options of a strategy from a file')}")
        for f, defaults in (entry for entry in listed if entry[0].metadata["group"] == group):
            who = f" [{', '.join(defaults)}]" if defaults is not None else ""
            if defaults and len(set(defaults.values())) > 1:  # a strategy with a default of its own says so
                per = "; ".join(f"{value} {', '.join(s for s in defaults if defaults[s] == value)}"
                                for value in dict.fromkeys(defaults.values()))
                click.echo(f"  {f.name:<24} {'varies':<8} {f.metadata['help']} [default: {per}]")
            else:
                click.echo(f"  {f.name:<24} {f.default!s:<8} {f.metadata['help']}{who}")


@main.group()
def adapters() -> None:
    """Single-task adapters as files: export one from a run, fuse it into another run of the same
    base model with `casr run --adapter DIR`."""


@adapters.command(name="export")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.argument("task")
@click.argument("out_dir", type=click.Path())
@one_line_errors
def export_adapter_command(run_dir, task, out_dir) -> None:
    """Write the adapter of TASK in the run in RUN_DIR (from its checkpoint.pt) into the folder
    OUT_DIR: adapter_config.json and adapter_model.safetensors."""
    from .adapter_files import export_adapter

    adapter = export_adapter(Path(run_dir), task, Path(out_dir))
    click.echo(f"adapter '{adapter.task}' ({adapter.num_layers} layers, bottleneck {adapter.bottleneck}, "
               f"base model {adapter.base_fingerprint}) written to {out_dir}")


@adapters.command(name="show")
@click.argument("adapter_path", type=click.Path())
@one_line_errors
def show_adapter_command(adapter_path) -> None:
    """Print an exported adapter's metadata (a folder, or a version-1 .pt file)."""
    from .adapter_files import load_adapter

    adapter = load_adapter(Path(adapter_path))
    parameters = sum(t.numel() for t in adapter.tensors.values())
    click.echo(f"task: {adapter.task}\nbase model: {adapter.base_fingerprint}\n"
               f"dimensions: {adapter.num_layers} layers, d_model {adapter.d_model}, bottleneck {adapter.bottleneck} "
               f"({parameters} parameters)\nsource: " + ", ".join(f"{k} {v}" for k, v in adapter.source.items()))


main.add_command(sweep_command(
    "sweep", help="Run the runs of a sweep file (stream x strategy and config changes x seed), resumably, "
                  "and compare them: OUT/results.md, compare.csv, compare.png. See experiments/paper.yaml."))


if __name__ == "__main__":
    main()
