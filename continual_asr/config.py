"""Run configuration: model and training sizes, chosen by preset independently of the stream.

``RunConfig`` holds what every strategy reads (model, head, pretraining, batching, data,
evaluation, runtime). A strategy's own options are a dataclass beside it (its module, or its
family's: training/template.py, training/adapters.py, training/memory.py), made of
:func:`option` fields and registered with it (continual_asr/registry.py). On the command line,
in config files, sweep files and results.json both kinds are flat fields with one namespace.

Every field carries its help text and bounds; values are validated in ``__post_init__`` so a bad
``--set key=value`` fails with one line naming the field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError, read_yaml

# base_model's kinds of value besides empty (pretrain): a local Hugging Face model folder, casr's
# own base model file, or the stream's reference file (NAME.base.pt beside its YAML), which
# training.base_file.with_reference_base makes a casr:FILE where the run meets its stream
HF_PREFIX = "hf:"
CASR_PREFIX = "casr:"
REFERENCE_BASE = "reference"


# Every field belongs to one group. Cache keys and run identity are built from groups and options
# classes, never from hand-kept lists of names, so a new field joins the keys its group belongs to.
# The general groups are RunConfig's; the others name the options of a strategy family.
GROUPS = {
    "model": "the Conformer encoder and its features (the frozen base's architecture)",
    "head": "the output head's architecture (part of the base model)",
    "pretraining": "base-model pretraining",
    "transducer": "how a transducer head's base model is pretrained, and its lattice (no effect with the CTC head)",
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
    "fusion": "Audio-AdapterFusion's attention over the adapters",
    "evaluation": "decoding and scoring the test and dev sets",
    "run": "which base model a run starts from",
    "runtime": "how a run executes, not what it computes (a resumed run may change them)",
}


def option(group: str, default: Any, help: str, **checks: Any) -> Any:
    """A config field: its group (GROUPS, or a new name for a user's strategy), default, help
    text and checks (``min``, ``max``, ``choices``)."""
    return field(default=default, metadata={"group": group, "help": help, **checks})


def field_kind(f: dataclasses.Field) -> type:
    """The value type of a config field (annotations may be strings: postponed evaluation)."""
    return {"bool": bool, "int": int, "str": str}.get(getattr(f.type, "__name__", f.type), float)


def check_fields(values: Any) -> None:
    """Validate (and coerce int to float where a float is due) every field of a config
    dataclass against its type and checks: one line naming the first bad field."""
    for f in fields(values):
        value = getattr(values, f.name)
        expected = field_kind(f)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
            setattr(values, f.name, value)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ConfigError(f"config field '{f.name}' must be {expected.__name__}, got {value!r}")
        if "min" in f.metadata and value < f.metadata["min"]:
            raise ConfigError(f"config field '{f.name}' must be >= {f.metadata['min']}, got {value!r}")
        if "max" in f.metadata and value > f.metadata["max"]:
            raise ConfigError(f"config field '{f.name}' must be <= {f.metadata['max']}, got {value!r}")
        if "choices" in f.metadata and value not in f.metadata["choices"]:
            raise ConfigError(f"config field '{f.name}' must be one of {', '.join(map(str, f.metadata['choices']))}, "
                              f"got {value!r}")


@dataclass
class Options:
    """Base of a strategy's options dataclass: its fields are :func:`option` fields, checked on
    construction. Families (whole-model, extraction, composition, memory) are Options classes
    too, and a strategy's class lists the families it reads as bases."""

    def __post_init__(self) -> None:
        check_fields(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class RunConfig:
    n_mels: int = option("model", 80, "log-mel bins of the frontend", min=8)
    subsampling_channels: int = option(
        "model", 36, "channels of the subsampling convolutions; their cost grows with the square", min=4)
    subsampling_factor: int = option(
        "model", 4, "frame rate reduction of the convolutional front end: 4 (40 ms encoder frames), 6 (60 ms) or 8 "
                    "(80 ms, FastConformer's): fewer frames are cheaper, but CTC needs a frame per token "
                    "(docs/performance-runs.md)", choices=(4, 6, 8))
    d_model: int = option("model", 144, "Conformer width", min=8)
    num_layers: int = option("model", 4, "Conformer layers", min=1)
    num_heads: int = option("model", 4, "attention heads (must divide d_model)", min=1)
    ffn_dim: int = option("model", 576, "feed-forward width inside each Conformer layer", min=8)
    conv_kernel: int = option("model", 15, "depthwise convolution kernel (odd)", min=3)
    # Off by default: on 2 CPU cores drawing dropout masks cost ~20% of a training step, and
    # SpecAugment plus fresh sentences regularise enough at this size.
    dropout: float = option("model", 0.0, "dropout inside the Conformer layers", min=0.0, max=0.9)
    vocab_size: int = option("model", 256, "SentencePiece vocabulary size (an upper bound on tiny text)", min=16)
    # Output head (part of the frozen base; adapters and combiners live in the encoder either way)
    head: str = option("head", "ctc", "output head: ctc (one linear layer, CTC loss) or rnnt (transducer: LSTM "
                     "prediction network and joiner, RNN-T loss; slower to train and decode) or hat (the paper's: rnnt "
                     "with blank a sigmoid apart from the tokens' softmax)", choices=("ctc", "rnnt", "hat"))
    rnnt_pred_dim: int = option(
        "head", 128, "rnnt: width of the prediction network (token embedding and one LSTM layer)", min=4)
    rnnt_joint_dim: int = option(
        "head", 128, "rnnt: width of the joiner that encoder and prediction network are projected to", min=4)
    rnnt_max_symbols: int = option(
        "evaluation", 4, "rnnt: most tokens greedy decoding emits per encoder frame (40 ms; 1 on the monotonic lattice)",
        min=1)
    # Transducers trained on little data mostly delete words (blank wins too often); a penalty on
    # blank's log-probability at search time is the usual remedy (icefall's and sherpa's --blank-penalty).
    # 0.5 chosen on dev: the best or level with it in four of the five settings measured (hat and
    # rnnt, tiny and default presets), never worse than none (docs/results-transducer.md, "A blank penalty
    # chosen on dev"); a decoding setting, so cached base models stay valid.
    rnnt_blank_penalty: float = option(
        "evaluation", 0.5, "rnnt/hat: subtracted from blank's log-probability in greedy search (0: none)", min=0.0)
    # Regular at the default preset; the tiny preset's is monotonic (chosen on dev there,
    # docs/results-transducer.md, "A monotonic lattice"). A transducer group field: a CTC model
    # has no lattice, so its base models and adapters are keyed without it.
    rnnt_lattice: str = option(
        "transducer", "regular", "rnnt/hat: the loss's lattice: regular (a frame may emit several tokens before blank "
                                 "moves on) or monotonic (each frame emits blank or one token and moves on, and greedy "
                                 "search likewise)", choices=("regular", "monotonic"))
    # Both chosen on dev (tiny preset, 3 seeds): base-task dev WER of rnnt 64.8 from scratch,
    # 18.9 with both (CTC: 15.1); hat 64.2 -> 36.5. docs/results-transducer.md.
    transducer_ctc_weight: float = option(
        "transducer", 0.3, "rnnt/hat: weight of an auxiliary CTC loss on the encoder during pretraining (hybrid "
                           "CTC/transducer training; its linear layer is dropped afterwards): loss = transducer + "
                           "weight x CTC", min=0.0)
    transducer_init: str = option(
        "transducer", "ctc", "rnnt/hat: pretraining starts from random weights (scratch) or from the encoder of "
                                 "this stream's CTC base model of the same config and seed (ctc; pretrained first "
                                 "if not cached)", choices=("scratch", "ctc"))
    # 0.25 chosen on dev (tiny preset, seeds 0-2): hat's base-task dev WER 37.7 -> 29.6; rnnt's
    # within its seed spread (22.0 -> 22.7), 0.5 worse (26.4). docs/results-transducer.md.
    transducer_warmup: float = option(
        "transducer", 0.25, "rnnt/hat with transducer_init=ctc: share of pretrain_epochs that train only the "
                            "prediction network and joiner, the encoder held at the CTC base model's weights (a random "
                            "joiner's first gradients would otherwise undo what the encoder learned)", min=0.0, max=0.9)
    transducer_epochs: int = option(
        "transducer", 0, "rnnt/hat with transducer_init=ctc: epochs of the transducer's pretraining from the CTC "
                         "base model (0: pretrain_epochs); the CTC base model's own epochs come before them", min=0)
    pretrain_epochs: int = option("pretraining", 18, "epochs of base-model pretraining on the base task", min=1)
    pretrain_lr: float = option("pretraining", 2e-3, "peak learning rate of pretraining (one-cycle schedule)", min=0.0)
    pretrain_seed: int = option(
        "run", -1, "seed of base-model pretraining (-1 = the run's seed); a sweep fixes it so that every seed "
                   "starts from one base model, as the paper's runs start from one pretrained model", min=-1)
    base_model: str = option(
        "run", "", "the frozen base: empty for casr's Conformer pretrained on the base task (cached); casr:FILE for "
                   "one written by casr pretrain --export FILE, so that runs on any machine start from the same "
                   "weights (its model fields and head must match); reference for the stream's own such file, "
                   "NAME.base.pt beside its YAML (pretrained, as with empty, where the stream has none); or hf:PATH "
                   "for a local Hugging Face CTC model folder (wav2vec 2.0, HuBERT, WavLM; docs/pretrained.md), used "
                   "as it is: the model fields, head and pretraining are then unused")
    batch_frames: int = option(
        "training", 6000, "feature frames (10 ms) per training batch; batches are length-bucketed", min=100)
    batch_length_jitter: float = option(
        "training", 0.2, "relative spread of the random factor on each utterance's length when training batches "
                         "are bucketed anew each epoch (0.2: x0.9 to x1.1): more varies batches from epoch to "
                         "epoch and keeps a repeated memory's copies apart; less pads less", min=0.0, max=1.0)
    eval_batch_frames: int = option("evaluation", 20000, "feature frames per evaluation batch", min=100)
    weight_decay: float = option("training", 0.01, "AdamW weight decay", min=0.0)
    specaugment: bool = option("training", True, "SpecAugment (frequency and time masks) while training")
    max_train_utterances: int = option(
        "training", 0, "cap on training utterances per task (0 = as the stream says; a manifest task: its first N)",
        min=0)
    max_test_utterances: int = option(
        "evaluation", 0, "cap on test utterances per task (0 = as the stream says; a manifest task: its first N)",
        min=0)
    # Longer utterances are almost always a bad segmentation (a whole recording in one line), and
    # one of them would take a batch's whole frame budget; they are bad data like a corrupt file.
    max_utterance_seconds: float = option(
        "data", 20.0, "longest utterance accepted, in seconds; a longer one is bad data (an error, or skipped with "
                      "--skip-bad)", min=0.1)
    threads: int = option("runtime", 0, "torch CPU threads (0 = torch's default)", min=0)
    synthesis_processes: int = option(
        "runtime", 0, "processes that synthesize a stream's audio and compute its features into an empty cache "
                      "(0 = one per CPU core); the data are the same for any number", min=0)
    share_adapters: bool = option(
        "runtime", True, "adapter strategies reuse a single-task adapter an earlier run trained on the same base, "
                         "task data, extraction settings and seed (the cache folder's adapters/); the weights are the "
                         "same as training it")
    # Devices (--device, and several processes: continual_asr/distributed.py)
    num_workers: int = option(
        "runtime", -1, "DataLoader worker processes per process (-1 = auto: none on the CPU, up to 4 per GPU, "
                       "collating into pinned memory)", min=-1)
    mixed_precision: bool = option(
        "numerics", True, "bf16 autocast of forward pass and loss on a GPU (the CPU: cpu_precision)")
    cpu_precision: str = option(
        "numerics", "float32", "arithmetic on the CPU: float32; bf16 (autocast of forward pass and loss, attention and "
                               "weights in float32); auto: bf16 where the CPU has AMX (the only CPUs where it is faster), "
                               "float32 elsewhere. Why float32 is the default: docs/performance.md", choices=("auto", "float32", "bf16"))

    def __post_init__(self) -> None:
        check_fields(self)
        if self.d_model % self.num_heads:
            raise ConfigError(f"config field 'num_heads' ({self.num_heads}) must divide d_model ({self.d_model})")
        if self.conv_kernel % 2 == 0:
            raise ConfigError(f"config field 'conv_kernel' must be odd, got {self.conv_kernel}")
        if self.base_model not in ("", REFERENCE_BASE) and not any(
                self.base_model.startswith(p) and self.base_model[len(p):].strip() for p in (HF_PREFIX, CASR_PREFIX)):
            raise ConfigError(f"config field 'base_model' must be empty, {REFERENCE_BASE} (the stream's NAME.base.pt), "
                              f"{HF_PREFIX}PATH (a local Hugging Face model folder) or {CASR_PREFIX}FILE (casr pretrain "
                              f"--export FILE), got {self.base_model!r}")
        if self.base_model.startswith(HF_PREFIX) and self.head != "ctc":
            raise ConfigError(f"config field 'head' must be ctc with base_model={self.base_model} (a Hugging Face "
                              f"CTC model brings its own head), got {self.head!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def subset(self, names: list[str]) -> dict[str, Any]:
        return {n: getattr(self, n) for n in names}

    def key_subset(self, names: list[str]) -> dict[str, Any]:
        """``subset`` as a cache key reads it: a field added later is left out at the value every
        model before it had (UNKEYED_DEFAULTS), so the keys of what was cached before stay valid."""
        return {n: v for n, v in self.subset(names).items() if n not in UNKEYED_DEFAULTS or v != UNKEYED_DEFAULTS[n]}


# Fields added after base models and adapters were cached, at the value those had: keys
# leave them out at that value (RunConfig.key_subset), base model files that lack them have it.
UNKEYED_DEFAULTS: dict[str, Any] = {"subsampling_factor": 4, "rnnt_lattice": "regular", "batch_length_jitter": 0.2}


def precision_key(cpu_precision: str) -> dict[str, str]:
    """How ``cpu_precision`` enters a cache key: bf16 weights are other weights; float32 adds
    nothing, so float32 keys stay those cached before the field existed."""
    return {"precision": "bf16-cpu"} if cpu_precision == "bf16" else {}


def fields_of(*groups: str) -> list[str]:
    """RunConfig's fields of ``groups``, in declaration order."""
    unknown = set(groups) - set(SHARED_GROUPS)
    if unknown:
        raise ValueError(f"no group {sorted(unknown)} in RunConfig")
    return [f.name for f in fields(RunConfig) if f.metadata["group"] in groups]


# RunConfig's groups, which every strategy reads; the others group strategies' options.
SHARED_GROUPS = ("model", "head", "transducer", "pretraining", "training", "data", "numerics", "evaluation", "run",
                 "runtime")
GENERAL_FIELDS = frozenset(f.name for f in fields(RunConfig))
RUNTIME_FIELDS = tuple(fields_of("runtime"))
# What only a transducer head reads (its network, its pretraining, its search): a CTC run ignores them.
TRANSDUCER_FIELDS = tuple(f.name for f in fields(RunConfig) if f.name.startswith(("rnnt_", "transducer_")))


# Fields added with one default that later changed: the value every run from before the field
# existed ran with (such a run does not record it). fusion_scope came in per frame, the only
# behaviour there had been, and became 'utterance' by default on 2026-11-30; ewc_importance came
# in as Avalanche's 'batch' and became 'utterance' (the empirical Fisher) on 2026-12-08.
BEFORE_THE_FIELD: dict[str, Any] = {"fusion_scope": "frame", "ewc_importance": "batch"}


def config_as_run(recorded: dict, defaults: dict) -> dict:
    """The config a run ran with, as resuming and comparing read it: a field it did not record
    (newer than the run) at the value runs had before the field (BEFORE_THE_FIELD, else its
    default), and without the fields that never make two runs different: how it ran (threads,
    workers) and, with the CTC head, the transducer's (a new default of one leaves CTC runs alone)."""
    before = {k: v for k, v in BEFORE_THE_FIELD.items() if k in defaults}
    config = {**defaults, **before, **recorded}
    unread = RUNTIME_FIELDS + (TRANSDUCER_FIELDS if config.get("head", "ctc") == "ctc" else ())
    return {k: v for k, v in config.items() if k not in unread}
MODEL_FIELDS = fields_of("model")
# The head's fields, keyed by head: part of the base model's identity. CTC adds none, so the
# keys of base models cached before heads were selectable stay valid. The transducer group is
# in no other key: it only changes the base model's weights, which adapter keys hash.
HEAD_FIELDS: dict[str, list[str]] = {"ctc": [], "rnnt": fields_of("head", "transducer"),
                                     "hat": fields_of("head", "transducer")}
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
        # Chosen on dev (3 seeds, 80 dev utterances): base-task dev WER rnnt 20.6 -> 14.3, hat 24.9
        # -> 15.4 (CTC 12.9); at the default preset no consistent gain. docs/results-transducer.md.
        rnnt_lattice="monotonic",
    ),
}


def parse_value(name: str, raw: str, kind: type) -> Any:
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


def build_fields(cls: type, preset: str = "default", overrides: dict[str, Any] | None = None) -> Any:
    """An instance of the config dataclass ``cls`` (RunConfig, or a strategy's options) from a
    preset name plus ``key=value`` overrides (strings are parsed by the field's type). The preset
    sets the fields ``cls`` has; an override ``cls`` does not have is an error."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset '{preset}' (valid: {', '.join(PRESETS)})")
    types = {f.name: field_kind(f) for f in fields(cls)}
    values = {key: value for key, value in PRESETS[preset].items() if key in types}
    for key, raw in (overrides or {}).items():
        if key not in types:
            raise ConfigError(f"unknown config field '{key}' (valid: {', '.join(types) or 'none'})")
        values[key] = parse_value(key, raw, types[key]) if isinstance(raw, str) else raw
    return cls(**values)


def make_config(preset: str = "default", overrides: dict[str, Any] | None = None) -> RunConfig:
    """The general config from a preset name plus ``key=value`` overrides of its fields (a
    strategy's options: ``registry.StrategyInfo.settings``, or ``build_fields(Options, ...)``)."""
    return build_fields(RunConfig, preset, overrides)


def load_config_file(path: str | Path, known: set[str] | frozenset[str] = GENERAL_FIELDS) -> dict[str, Any]:
    """The config fields of a YAML mapping (``--config``); ``--set`` overrides them. ``known``:
    the valid field names (registry.all_fields(): RunConfig's and every strategy's options)."""
    path = Path(path)
    data = read_yaml(path, f"--config {path}", ConfigError)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path} must be a mapping of config fields, got {type(data).__name__}")
    for key, value in data.items():
        if key not in known:
            raise ConfigError(f"unknown config field '{key}' in {path} (valid: {', '.join(sorted(known))})")
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
