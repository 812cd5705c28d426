"""What a run keeps between its steps: its identity, the checkpoint, and resuming from it.

A run folder holds one run. Its identity (stream, task order, strategy, seed, config, imported
adapters) is stored in the checkpoint; a rerun into the same folder continues after the last
finished step if the identity matches and refuses otherwise. A finished run archived without its
checkpoint (``casr archive``) is read back from its results.json.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .config import Options, RunConfig, config_as_run
from .data.prepare import SYNTH_VERSION
from .errors import CasrError
from .evaluation.summary import attach_metrics
from .reporting import write_run_outputs
from .reporting.intervals import EDITS
from .reporting.runs import load_results
from .results import save_torch_atomic, write_json_atomic
from .stream import StreamSpec
from .training.base_file import base_file, recorded_weights
from .training.pretrain import save_checkpoint

CHECKPOINT = "checkpoint.pt"
IDENTITY_DEFAULTS = {"imported_adapters": []}  # what runs from before a key existed had


def run_identity(stream: StreamSpec, strategy: str, seed: int, config: RunConfig, options: Options,
                 imported: list) -> dict:
    """What makes two runs the same run (the stream by its tasks' content, not its file's path);
    its config is the general one and the strategy's options, flat."""
    synthesized = any(not t.from_manifests for t in stream.eval_tasks)
    return {"stream": {"name": stream.name, "description": stream.description,
                       "tasks": {t.name: t.fingerprint() for t in stream.eval_tasks},
                       # another version speaks other test voices: WERs across versions do not compare
                       "synthesis_version": SYNTH_VERSION if synthesized else None},
            "task_order": list(stream.order),
            "strategy": strategy, "seed": seed, "config": {**config.to_dict(), **options.to_dict()},
            "imported_adapters": [{"task": a.task, "digest": a.digest()} for a in imported]}


def same_run_value(key: str, previous, value, read: dict[str, Any]) -> bool:
    """Config fields that did not exist when the earlier run began (it ran as their default
    does), fields of how a run executes (threads, workers) and fields the strategy does not read
    (``read``: the fields it reads, with their defaults) do not make it another run."""
    if key == "stream" and isinstance(previous, dict):  # where the YAML file lies is not the run's identity
        return all(previous.get(name, value[name]) == value[name] for name in value)
    if key == "task_order" and previous is None:  # runs from before task orders took the YAML order
        return value == list(range(1, len(value) + 1))
    if key != "config" or not isinstance(previous, dict):
        return previous == value
    return not config_changes(previous, value, read)


def config_changes(previous: dict, value: dict, read: dict[str, Any]) -> list[str]:
    """The config fields that make ``value`` another run than ``previous`` (as ``same_run_value``
    judges them), each as 'name OLD there, NEW now', for the refusal to name."""
    return [f"{name} {old!r} there, {value[name]!r} now" for name, old in config_as_run(previous, read).items()
            if name in value and name in read and old != value[name]]


def load_previous(out_dir: Path, identity: dict, read: dict[str, Any]) -> dict | None:
    """The checkpoint of an earlier run into ``out_dir``, if it is the same run (``read``: the
    config fields that decide it, with their defaults, see ``same_run_value``); else None."""
    path = out_dir / CHECKPOINT
    if path.is_file():
        try:
            checkpoint = torch.load(path, weights_only=True, map_location="cpu")
        except Exception as exc:  # a torn or foreign file: never guess, say so
            raise CasrError(f"{path}: unreadable checkpoint ({exc.__class__.__name__}); pass --overwrite to start over") from None
    else:
        checkpoint = archived_run(out_dir)
        if checkpoint is None:
            return None
    previous = checkpoint["results"] = same_base_file(checkpoint["results"], identity, out_dir)
    for key, value in identity.items():
        recorded = previous.get(key, IDENTITY_DEFAULTS.get(key))
        if not same_run_value(key, recorded, value, read):
            changes = config_changes(recorded, value, read) if key == "config" and isinstance(recorded, dict) else []
            detail = f" ({'; '.join(changes)})" if changes else ""
            raise CasrError(f"--out {out_dir} holds a run with a different {key}{detail}; use another --out or pass --overwrite")
    return checkpoint


def same_base_file(previous: dict, identity: dict, out_dir: Path) -> dict:
    """``previous`` (an earlier run's results) as if it had named this run's casr:FILE base model,
    where the file this run names holds the weights that run started from: where a base model file
    lies is not the run's identity (moved or copied into a repository or onto a cluster node, it is
    the same base model, as a stream's YAML file elsewhere is the same stream), its weights are. So
    is a run that pretrained its own base model (``base_model`` empty) where the file holds the very
    weights it pretrained (a sweep's runs from before it named the stream's reference file). A file
    of other weights, under any path, is another run: CasrError. Runs from before weights were
    recorded, and a file that cannot be read here, are judged by the path as before."""
    old, new = (previous.get("config") or {}).get("base_model", ""), identity["config"].get("base_model", "")
    started_from = (previous.get("base_model") or {}).get("weights")
    if (old and base_file(old) is None) or base_file(new) is None or started_from is None:
        return previous
    holds = recorded_weights(new)
    if holds is None:
        return previous
    if holds != started_from:
        raise CasrError(f"--out {out_dir} holds a run that started from base model weights {started_from}; "
                        f"{base_file(new)} holds {holds}: use another --out or pass --overwrite")
    return {**previous, "config": {**previous["config"], "base_model": new}}


def archived_run(out_dir: Path) -> dict | None:
    """A finished run kept without its checkpoint (``casr archive``): its results, as a checkpoint
    that holds nothing to resume from, so a rerun or a sweep reads it back instead of training it
    again. An unfinished run without a checkpoint has nothing to resume: None."""
    try:
        results = load_results(out_dir)
    except CasrError:
        return None
    return {"results": results, "archived": True} if results.get("complete") else None


def clear_stale_events(out_dir: Path) -> None:
    """A fresh start: TensorBoard events of an earlier run into ``out_dir`` would mix in."""
    for stale in out_dir.glob("events.out.tfevents.*"):
        stale.unlink()


def save_step(out_dir: Path, model, cl_strategy, results: dict, edits: dict) -> None:
    """Checkpoint first, then edits.json and results.json, then the CSVs, plots and report: all
    atomic; the checkpoint holds the results, the edits and the Avalanche clock (the x of the
    logged metrics) too."""
    attach_metrics(results)
    clock = {k: v for k, v in vars(cl_strategy.clock).items() if isinstance(v, int)}
    save_checkpoint(model, out_dir / CHECKPOINT, results=results, strategy_state=cl_strategy.resume_state(),
                    clock=clock, edits=edits)
    write_json_atomic(out_dir / EDITS, edits, compact=True)  # per step and set: each utterance's [words, S, D, I]
    write_json_atomic(out_dir / "results.json", results)
    write_run_outputs(results, out_dir)


def refresh_finished(out_dir: Path, checkpoint: dict, references: dict | None) -> dict:
    """A finished run asked again: new references (if given) and metrics into its checkpoint and
    results.json, and every output file rewritten."""
    results = checkpoint["results"]
    if references is not None:
        results["references"] = references
    attach_metrics(results)
    if not checkpoint.get("archived"):
        save_torch_atomic(checkpoint, out_dir / CHECKPOINT)
    write_json_atomic(out_dir / "results.json", results)
    write_run_outputs(results, out_dir)
    return results


def resume(previous: dict, cl_strategy, model, experiences: list, matrix_metrics: list,
           columns: list[str]) -> tuple[dict, dict]:
    """Strategy, weights, clock and the WER-matrix metrics as they were after the checkpoint's
    last step; returns its results and edit counts."""
    results = previous["results"]
    done = len(results["wer_matrix"])
    # A run from before edit counts were kept has none for its finished steps.
    edits = previous.get("edits") or {"columns": columns, "steps": [None] * (done + 1)}
    edits.setdefault("dev_steps", [None] * len(edits["steps"]))  # dev edits were not kept before
    cl_strategy.restore(previous["strategy_state"], experiences[:done])
    model.load_state_dict(previous["state_dict"])
    for name, value in previous.get("clock", {"train_exp_counter": done}).items():
        setattr(cl_strategy.clock, name, value)
    for row in [[results["base_wer"][c] for c in columns], *results["wer_matrix"]]:
        for metric in matrix_metrics:
            metric.update(row)
    return results, edits
