"""Single-task adapters as files: export one from a run, fuse it into another run of the same base.

An exported adapter is a folder laid out as peft and AdapterHub lay theirs out:
``adapter_config.json`` (format and version, the task it was trained on, its dimensions, where it
came from, the fingerprint of the base model it was trained on: a hash of the base weights) and
``adapter_model.safetensors`` (the tensors of every layer, named ``LAYER.PARAMETER``). Nothing in
it is pickle, so a folder from someone else is read without running any of their code. An
adapter is a small correction to one particular base model's hidden states, meaningless on any
other, so importing refuses a different fingerprint.

``casr adapters export RUN_DIR TASK OUT_DIR`` writes one; ``casr run ... --adapter OUT_DIR`` adds
it to the bank before the first task, so that every composition of the run fuses it too. The
single ``.pt`` files of format version 1 still load (``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import CasrError
from .model import AdaptableASR
from .model.encoder import BASE_STATE_PREFIXES

FORMAT = "casr-adapter"
VERSION = 2  # a folder: adapter_config.json + adapter_model.safetensors
LEGACY_VERSION = 1  # one torch.save file
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
CONFIG_FIELDS = ("task", "d_model", "bottleneck", "num_layers", "base_fingerprint", "source")
IMPORTED = "imported:"  # bank name prefix of an imported adapter (it has no task in the stream)


def base_fingerprint(state_dict: dict[str, torch.Tensor]) -> str:
    """16 hex digits of SHA-256 over the base model's state (names, dtypes, shapes, bytes)."""
    digest = hashlib.sha256()
    for name in sorted(k for k in state_dict if k.startswith(BASE_STATE_PREFIXES)):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


@dataclass
class AdapterFile:
    path: Path
    task: str
    d_model: int
    bottleneck: int
    num_layers: int
    base_fingerprint: str
    source: dict
    tensors: dict[str, torch.Tensor]  # "layer.parameter" -> weights

    def digest(self) -> str:
        """16 hex digits of SHA-256 over the weights: what a resumed run checks it got again."""
        digest = hashlib.sha256()
        for name in sorted(self.tensors):
            digest.update(name.encode())
            digest.update(self.tensors[name].contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()[:16]


def _load_checkpoint(run_dir: Path) -> dict:
    path = Path(run_dir) / "checkpoint.pt"
    if not path.is_file():
        raise CasrError(f"{run_dir} holds no checkpoint.pt (not a run folder, or a run from before checkpoints)")
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:
        raise CasrError(f"{path}: unreadable checkpoint ({exc.__class__.__name__})") from None


def export_adapter(run_dir: Path, task: str, out: Path) -> AdapterFile:
    """Write the adapter of ``task`` in the run in ``run_dir`` to ``out``."""
    checkpoint = _load_checkpoint(run_dir)
    names = list(checkpoint.get("adapter_tasks", []))
    if task not in names:
        have = ", ".join(names) or "none: not an adapter strategy, or no task finished yet"
        raise CasrError(f"run {run_dir} has no adapter for task '{task}' (its adapters: {have})")
    index = names.index(task)
    state = checkpoint["state_dict"]
    tensors: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")  # banks.<layer>.adapters.<index>.<parameter>
        if parts[0] == "banks" and parts[2] == "adapters" and int(parts[3]) == index:
            tensors[f"{parts[1]}.{parts[4]}"] = value.clone()
    results = checkpoint["results"]
    adapter = AdapterFile(
        path=Path(out), task=task.removeprefix(IMPORTED), d_model=int(tensors["0.up_bias"].shape[0]),
        bottleneck=int(tensors["0.down"].shape[1]), num_layers=len({k.split(".")[0] for k in tensors}),
        base_fingerprint=base_fingerprint(state),
        source={"run": str(run_dir), "stream": results["stream"]["name"], "strategy": results["strategy"],
                "seed": results["seed"], "bank_name": task},
        tensors=tensors)
    _write_folder(adapter, Path(out))
    return adapter


def _write_folder(adapter: AdapterFile, out: Path) -> None:
    """Both files into a temporary folder beside ``out``, renamed into place: a reader never
    sees half an adapter, and an earlier export into ``out`` is replaced whole."""
    if out.exists() and not (out.is_dir() and (out / CONFIG_FILE).is_file()):
        raise CasrError(f"{out} exists and is not an adapter folder; export into a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    config = {"format": FORMAT, "format_version": VERSION, **{f: getattr(adapter, f) for f in CONFIG_FIELDS}}
    (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    save_file({name: t.contiguous() for name, t in adapter.tensors.items()}, str(tmp / WEIGHTS_FILE),
              metadata={"format": FORMAT, "task": adapter.task})
    old = out.with_name(f".{out.name}.old{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def load_adapter(path: Path) -> AdapterFile:
    """An exported adapter folder (or a version-1 ``.pt`` file), checked; one-line errors."""
    path = Path(path)
    if path.is_dir():
        return _load_folder(path)
    if not path.is_file():
        raise CasrError(f"adapter {path} not found")
    try:
        payload = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:
        raise CasrError(f"{path}: not a readable adapter file ({exc.__class__.__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CasrError(f"{path} is not a casr adapter (write one with 'casr adapters export')")
    if payload.get("version") != LEGACY_VERSION:
        raise CasrError(f"{path}: adapter file version {payload.get('version')}, this casr reads folders "
                        f"(version {VERSION}) and version-{LEGACY_VERSION} files")
    return AdapterFile(path=path, task=payload["task"], d_model=payload["d_model"], bottleneck=payload["bottleneck"],
                       num_layers=payload["num_layers"], base_fingerprint=payload["base_fingerprint"],
                       source=payload["source"], tensors=payload["tensors"])


def _load_folder(path: Path) -> AdapterFile:
    config_path, weights_path = path / CONFIG_FILE, path / WEIGHTS_FILE
    for needed in (config_path, weights_path):
        if not needed.is_file():
            raise CasrError(f"{path} is not a casr adapter folder: {needed.name} is missing")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise CasrError(f"{config_path}: not readable JSON ({exc.__class__.__name__})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CasrError(f"{config_path}: not a casr adapter config (format {config.get('format') if isinstance(config, dict) else None!r})")
    if config.get("format_version") != VERSION:
        raise CasrError(f"{config_path}: format_version {config.get('format_version')}, this casr reads {VERSION}")
    missing = [f for f in CONFIG_FIELDS if f not in config]
    if missing:
        raise CasrError(f"{config_path}: missing field(s) {', '.join(missing)}")
    try:
        tensors = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CasrError(f"{weights_path}: not a readable safetensors file ({exc})") from None
    adapter = AdapterFile(path=path, tensors=tensors, **{f: config[f] for f in CONFIG_FIELDS})
    layers = {name.split(".")[0] for name in tensors}
    if len(layers) != adapter.num_layers or tensors.get("0.up_bias", torch.empty(0)).shape != (adapter.d_model,):
        raise CasrError(f"{weights_path}: its tensors do not match {CONFIG_FILE} "
                        f"({len(layers)} layers for {adapter.num_layers}, or not d_model {adapter.d_model})")
    return adapter


def check_fits(adapter: AdapterFile, model: AdaptableASR) -> None:
    """Refuse, in one line, an adapter trained on another base model or with another bottleneck."""
    fingerprint = base_fingerprint(model.state_dict())
    if adapter.base_fingerprint != fingerprint:
        raise CasrError(f"adapter {adapter.path} ('{adapter.task}') was trained on base model {adapter.base_fingerprint}, "
                        f"this run's base model is {fingerprint}: an adapter only fits the base model it was trained on")
    bottleneck = model.banks[0].bottleneck
    if adapter.bottleneck != bottleneck:
        raise CasrError(f"adapter {adapter.path} has bottleneck {adapter.bottleneck}, this run's adapter_dim is "
                        f"{bottleneck} (pass --set adapter_dim={adapter.bottleneck})")


def import_adapters(strategy, adapters: list[AdapterFile]) -> None:
    """Add ``adapters`` to the strategy's bank (before its first task: every composition of the
    run then fuses them; they have no task, and so no WER column, in this stream)."""
    from .training.adapters import AdapterStrategy

    if adapters and not isinstance(strategy, AdapterStrategy):
        raise CasrError(f"--adapter needs an adapter strategy (adapter-*): {type(strategy).__name__} has no adapter bank")
    for adapter in adapters:
        check_fits(adapter, strategy.model)
        strategy.import_adapter(IMPORTED + adapter.task, adapter.tensors)
