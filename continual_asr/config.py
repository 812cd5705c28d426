"""Run configuration: model and training sizes, chosen by preset independently of the stream.

Every field carries its help text; values are validated in ``__post_init__`` so a bad
``--set key=value`` fails with one line naming the field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError


# Every field belongs to one group. Cache keys and run identity are built from groups, never
# from hand-kept lists of names, so a new field joins the keys its group belongs to.
GROUPS = {
    "model": "the Conformer encoder and its features (the frozen base's architecture)",
    "head": "the output head's architecture (part of the base model)",
    "pretraining": "base-model pretraining",
    "training": "batching and data of every training phase (pretraining, extraction, composition, fine-tuning)",
    "data": "which utterances a task may hold",
    "numerics": "arithmetic precision (changes the numbers on a GPU)",
    "extraction": "single-task adapters (knowledge extraction)",
    "composition": "combiner training after each task (knowledge composition)",
    "memory": "the memory of earlier tasks' utterances",
    "finetune": "the whole-model baselines",
    "ewc": "elastic weight consolidation",
    "lwf": "learning without forgetting",
    "router": "the learned utterance router",
    "evaluation": "decoding and scoring the test and dev sets",
    "run": "which base model a run starts from",
    "runtime": "how a run executes, not what it computes (a resumed run may change them)",
}


def _opt(group: str, default: Any, help: str, **checks: Any) -> Any:
    return field(default=default, metadata={"group": group, "help": help, **checks})


def _kind(f: dataclasses.Field) -> type:
    """The value type of a config field (annotations are strings here: postponed evaluation)."""
    return {"bool": bool, "int": int, "str": str}.get(getattr(f.type, "__name__", f.type), float)


@dataclass
class RunConfig:
    n_mels: int = _opt("model", 80, "log-mel bins of the frontend", min=8)
    subsampling_channels: int = _opt(
        "model", 36, "channels of the two stride-2 convolutions (4x subsampling); their cost grows with the square",
        min=4)
    d_model: int = _opt("model", 144, "Conformer width", min=8)
    num_layers: int = _opt("model", 4, "Conformer layers", min=1)
    num_heads: int = _opt("model", 4, "attention heads (must divide d_model)", min=1)
    ffn_dim: int = _opt("model", 576, "feed-forward width inside each Conformer layer", min=8)
    conv_kernel: int = _opt("model", 15, "depthwise convolution kernel (odd)", min=3)
    # Off by default: on 2 CPU cores drawing dropout masks cost ~20% of a training step, and
    # SpecAugment plus fresh sentences regularise enough at this size.
    dropout: float = _opt("model", 0.0, "dropout inside the Conformer layers", min=0.0, max=0.9)
    vocab_size: int = _opt("model", 256, "SentencePiece vocabulary size (an upper bound on tiny text)", min=16)
    # Output head (part of the frozen base; adapters and combiners live in the encoder either way)
    head: str = _opt("head", "ctc", "output head: ctc (one linear layer, CTC loss) or rnnt (transducer: LSTM "
                     "prediction network and joiner, RNN-T loss; slower to train and decode)", choices=("ctc", "rnnt"))
    rnnt_pred_dim: int = _opt(
        "head", 128, "rnnt: width of the prediction network (token embedding and one LSTM layer)", min=4)
    rnnt_joint_dim: int = _opt(
        "head", 128, "rnnt: width of the joiner that encoder and prediction network are projected to", min=4)
    rnnt_max_symbols: int = _opt(
        "evaluation", 4, "rnnt: most tokens greedy decoding emits per encoder frame (40 ms)", min=1)
    pretrain_epochs: int = _opt("pretraining", 18, "epochs of base-model pretraining on the base task", min=1)
    pretrain_lr: float = _opt("pretraining", 2e-3, "peak learning rate of pretraining (one-cycle schedule)", min=0.0)
    pretrain_seed: int = _opt(
        "run", -1, "seed of base-model pretraining (-1 = the run's seed); a sweep fixes it so that every seed "
                   "starts from one base model, as the paper's runs start from one pretrained model", min=-1)
    adapter_dim: int = _opt("extraction", 32, "bottleneck width of each single-task adapter", min=1)
    adapter_epochs: int = _opt("extraction", 10, "epochs of single-task adapter training per task", min=1)
    adapter_lr: float = _opt("extraction", 3e-3, "peak learning rate of adapter training", min=0.0)
    fusion_epochs: int = _opt(
        "composition", 1, "epochs of combiner training after each task (over the task-balanced data)", min=0)
    fusion_lr: float = _opt("composition", 2e-3, "peak learning rate of combiner training", min=0.0)
    # fusion_layernorm and fusion_warm_start: chosen on dev by the recipe study (experiments/recipe.yaml,
    # docs/results.md): without the LayerNorm and from a fresh combiner per task, A-AF's dev mean WER on
    # accents-then-noise was 53.78 +- 0.31 over seeds 0 and 1, against 55.99 +- 0.12 with both (the
    # defaults before 2026-11-30); each alone gave 55.17 +- 0.10 (no LayerNorm) and 55.56 (fresh, seed 0).
    fusion_layernorm: bool = _opt("composition", False, "LayerNorm on the fused output before the residual add")
    fusion_null_adapter: bool = _opt(
        "composition", True, "let fusion attend to a zero 'no adapter' slot, so base-task speech can bypass adapters")
    train_adapters: bool = _opt("composition", False, "also update the adapters while the combiner trains")
    memory_per_task: int = _opt(
        "memory", 100, "utterances kept from each earlier task (base included) for composition", min=0)
    # The composition recipe (AdapterHub's options, and the paper's protocol)
    composition_data: str = _opt(
        "composition", "memory",
        "what composition trains on besides the new task: 'memory' (memory_per_task utterances of each earlier task) "
        "or 'all' (every earlier task's full training data), each task repeated to about the new task's size",
        choices=("memory", "all"))
    composition_schedule: str = _opt(
        "composition", "every-task",
        "'every-task' (the continual protocol: compose after each task) or 'once' (the paper's: extract every "
        "task's adapter, compose once after the last, from a fresh combiner)", choices=("every-task", "once"))
    fusion_warm_start: bool = _opt(
        "composition", False, "start each composition from the previous task's combiner (false: a fresh one)")
    fusion_value_reg: float = _opt(
        "composition", 0.0, "weight of AdapterHub's value regulariser, sum over layers of ||I - V||^2, in the "
                            "composition loss (0: off)", min=0.0)
    fusion_decay: str = _opt(
        "composition", "zero", "weight decay of the fusion projections: 'zero' (AdamW's, towards 0), 'none', or "
                               "'identity' (V decays towards the identity, Q and K not at all)",
        choices=("zero", "none", "identity"))
    fusion_temperature: float = _opt(
        "composition", 1.0, "softmax temperature of fusion's attention over the adapters (scores / T; large T: "
                            "towards the mean)", min=0.01)
    finetune_epochs: int = _opt("finetune", 6, "epochs per task of the whole-model baselines", min=1)
    finetune_lr: float = _opt("finetune", 5e-4, "peak learning rate of the whole-model baselines", min=0.0)
    ewc_lambda: float = _opt(
        "ewc", 1e4, "ewc: weight of the penalty sum_i F_i (w_i - w*_i)^2 per earlier task (F: mean squared loss "
                    "gradient)", min=0.0)
    lwf_alpha: float = _opt(
        "lwf", 1.0, "lwf: weight of the distillation of the previous model's posteriors (per frame; rnnt: per "
                    "lattice node)", min=0.0)
    lwf_temperature: float = _opt("lwf", 2.0, "lwf: softmax temperature of that distillation", min=0.1)
    router_epochs: int = _opt(
        "router", 30, "epochs of router training after each task (on the task-balanced data's pooled features, "
                      "computed once)", min=0)
    router_lr: float = _opt("router", 3e-3, "peak learning rate of router training", min=0.0)
    router_hidden: int = _opt("router", 64, "hidden units of the router's utterance classifier", min=1)
    batch_frames: int = _opt(
        "training", 6000, "feature frames (10 ms) per training batch; batches are length-bucketed", min=100)
    eval_batch_frames: int = _opt("evaluation", 20000, "feature frames per evaluation batch", min=100)
    weight_decay: float = _opt("training", 0.01, "AdamW weight decay", min=0.0)
    specaugment: bool = _opt("training", True, "SpecAugment (frequency and time masks) while training")
    max_train_utterances: int = _opt(
        "training", 0, "cap on training utterances per task (0 = as the stream says; a manifest task: its first N)",
        min=0)
    max_test_utterances: int = _opt(
        "evaluation", 0, "cap on test utterances per task (0 = as the stream says; a manifest task: its first N)",
        min=0)
    # Longer utterances are almost always a bad segmentation (a whole recording in one line), and
    # one of them would take a batch's whole frame budget; they are bad data like a corrupt file.
    max_utterance_seconds: float = _opt(
        "data", 20.0, "longest utterance accepted, in seconds; a longer one is bad data (an error, or skipped with "
                      "--skip-bad)", min=0.1)
    threads: int = _opt("runtime", 0, "torch CPU threads (0 = torch's default)", min=0)
    share_adapters: bool = _opt(
        "runtime", True, "adapter strategies reuse a single-task adapter an earlier run trained on the same base, "
                         "task data, extraction settings and seed (the cache folder's adapters/); the weights are the "
                         "same as training it")
    # Devices (--device, and several processes: continual_asr/distributed.py)
    num_workers: int = _opt(
        "runtime", -1, "DataLoader worker processes per process (-1 = auto: none on the CPU, up to 4 per GPU, "
                       "collating into pinned memory)", min=-1)
    mixed_precision: bool = _opt(
        "numerics", True, "bf16 autocast of forward pass and loss on a GPU (no effect on the CPU)")

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            expected = _kind(f)
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
                setattr(self, f.name, value)
            if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                raise ConfigError(f"config field '{f.name}' must be {expected.__name__}, got {value!r}")
            if "min" in f.metadata and value < f.metadata["min"]:
                raise ConfigError(f"config field '{f.name}' must be >= {f.metadata['min']}, got {value!r}")
            if "max" in f.metadata and value > f.metadata["max"]:
                raise ConfigError(f"config field '{f.name}' must be <= {f.metadata['max']}, got {value!r}")
            if "choices" in f.metadata and value not in f.metadata["choices"]:
                raise ConfigError(f"config field '{f.name}' must be one of {', '.join(f.metadata['choices'])}, "
                                  f"got {value!r}")
        if self.d_model % self.num_heads:
            raise ConfigError(f"config field 'num_heads' ({self.num_heads}) must divide d_model ({self.d_model})")
        if self.conv_kernel % 2 == 0:
            raise ConfigError(f"config field 'conv_kernel' must be odd, got {self.conv_kernel}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def subset(self, names: list[str]) -> dict[str, Any]:
        return {n: getattr(self, n) for n in names}


def fields_of(*groups: str) -> list[str]:
    """The config fields of ``groups``, in declaration order."""
    unknown = set(groups) - set(GROUPS)
    if unknown:
        raise ValueError(f"no config group {sorted(unknown)}")
    return [f.name for f in fields(RunConfig) if f.metadata["group"] in groups]


# The groups every strategy reads; the others are strategies' options (registry.register_strategy).
SHARED_GROUPS = ("model", "head", "pretraining", "training", "data", "numerics", "evaluation", "run", "runtime")
RUNTIME_FIELDS = tuple(fields_of("runtime"))
MODEL_FIELDS = fields_of("model")
# The head's fields, keyed by head: part of the base model's identity. CTC adds none, so the
# keys of base models cached before heads were selectable stay valid.
HEAD_FIELDS: dict[str, list[str]] = {"ctc": [], "rnnt": fields_of("head")}
PRETRAIN_FIELDS = fields_of("model", "pretraining", "training")

PRESETS: dict[str, dict[str, Any]] = {
    # What the built-in streams are sized for: about 10 minutes of pretraining on 2 cores.
    "default": {},
    # Any stream in a minute or two: smoke runs and tests.
    "tiny": dict(
        subsampling_channels=16, d_model=32, num_layers=2, num_heads=2, ffn_dim=64, conv_kernel=7, vocab_size=64,
        pretrain_epochs=80, pretrain_lr=3e-3, adapter_dim=8, adapter_epochs=10, fusion_epochs=3,
        finetune_epochs=3, memory_per_task=8, batch_frames=1000, max_train_utterances=64,
        max_test_utterances=12, rnnt_pred_dim=32, rnnt_joint_dim=32,
    ),
}


def field_help() -> dict[str, str]:
    return {f.name: f.metadata["help"] for f in fields(RunConfig)}


def _parse_value(name: str, raw: str, kind: type) -> Any:
    text = raw.strip()
    if kind is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"config field '{name}' must be true or false, got {raw!r}")
    try:
        return kind(text)
    except ValueError:
        raise ConfigError(f"config field '{name}' must be {kind.__name__}, got {raw!r}") from None


def make_config(preset: str = "default", overrides: dict[str, Any] | None = None) -> RunConfig:
    """Build a validated config from a preset name plus ``key=value`` overrides."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset '{preset}' (valid: {', '.join(PRESETS)})")
    values = dict(PRESETS[preset])
    types = {f.name: _kind(f) for f in fields(RunConfig)}
    for key, raw in (overrides or {}).items():
        if key not in types:
            raise ConfigError(f"unknown config field '{key}' (valid: {', '.join(types)})")
        values[key] = _parse_value(key, raw, types[key]) if isinstance(raw, str) else raw
    return RunConfig(**values)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """The config fields of a YAML mapping (``--config``); ``--set`` overrides them."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"--config {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"--config {path}: not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path} must be a mapping of config fields, got {type(data).__name__}")
    valid = [f.name for f in fields(RunConfig)]
    for key, value in data.items():
        if key not in valid:
            raise ConfigError(f"unknown config field '{key}' in {path} (valid: {', '.join(valid)})")
        if isinstance(value, (dict, list)) or value is None:
            raise ConfigError(f"config field '{key}' in {path} must be a single value, got {value!r}")
    return data


def parse_overrides(pairs: tuple[str, ...] | list[str]) -> dict[str, str]:
    """Parse ``--set key=value`` pairs."""
    out: dict[str, str] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key.strip()] = value
    return out
