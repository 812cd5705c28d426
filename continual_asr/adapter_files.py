"""Single-task adapters as files: export one from a run, fuse it into another run of the same base.

A file holds one adapter's tensors (every layer) and its metadata: the task it was trained on,
its dimensions, where it came from, and the fingerprint of the base model it was trained on (a
hash of the base weights). An adapter is a small correction to one particular base model's
hidden states, meaningless on any other, so importing refuses a different fingerprint. Files
load with ``torch.load(weights_only=True)``: tensors and plain values only, never code.

``casr adapters export RUN_DIR TASK out.pt`` writes one; ``casr run ... --adapter out.pt`` adds
it to the bank before the first task, so that every composition of the run fuses it too.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import CasrError
from .model import ConformerASR
from .model.encoder import BASE_STATE_PREFIXES
from .results import save_torch_atomic

FORMAT = "casr-adapter"
VERSION = 1
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
    payload = {"format": FORMAT, "version": VERSION, "task": adapter.task, "d_model": adapter.d_model,
               "bottleneck": adapter.bottleneck, "num_layers": adapter.num_layers,
               "base_fingerprint": adapter.base_fingerprint, "source": adapter.source, "tensors": tensors}
    save_torch_atomic(payload, Path(out))
    return adapter


def load_adapter(path: Path) -> AdapterFile:
    path = Path(path)
    if not path.is_file():
        raise CasrError(f"adapter file {path} not found")
    try:
        payload = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:
        raise CasrError(f"{path}: not a readable adapter file ({exc.__class__.__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CasrError(f"{path} is not a casr adapter file (write one with 'casr adapters export')")
    if payload.get("version") != VERSION:
        raise CasrError(f"{path}: adapter file version {payload.get('version')}, this casr reads version {VERSION}")
    return AdapterFile(path=path, task=payload["task"], d_model=payload["d_model"], bottleneck=payload["bottleneck"],
                       num_layers=payload["num_layers"], base_fingerprint=payload["base_fingerprint"],
                       source=payload["source"], tensors=payload["tensors"])


def check_fits(adapter: AdapterFile, model: ConformerASR) -> None:
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
