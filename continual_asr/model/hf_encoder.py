"""A pretrained Hugging Face CTC model from a local folder as the frozen base (``base_model: hf:PATH``).

The folder is what ``save_pretrained`` writes for a CTC model and its processor: ``config.json``
and the weights, ``preprocessor_config.json`` (the feature extractor) and the character
tokenizer's ``vocab.json``. Nothing is downloaded.

- The model's transformer layers are the encoder layers: each gets an adapter bank and a
  combiner after it (a forward hook adds the combined correction to the layer's output), the
  same place as in casr's Conformer.
- Its input is 16 kHz audio normalised the way its feature extractor says (``do_normalize``:
  zero mean and unit variance over each utterance's own samples, as the extractor does for one
  utterance and fairseq did in training; padding 0), with an attention mask only where the
  extractor returns one (models trained without one must not get it).
- Its ``lm_head`` becomes casr's CTC head with the classes reordered so blank (the tokenizer's
  pad token, as Hugging Face's CTC loss has it) is class 0; :class:`HFCharacterTokenizer` maps
  token ids to match, so loss, greedy decoding and LwF's distillation are casr's own.
- The convolutional feature encoder never trains, also when the whole model does (full
  fine-tuning), as in Hugging Face's CTC fine-tuning recipe (``freeze_feature_encoder``);
  LayerDrop is off, so every layer (and its adapters) always runs.
"""

from __future__ import annotations

import functools
import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..config import HF_PREFIX as PREFIX
from ..errors import ConfigError
from .adaptable import AdaptableASR
from .heads import CTCHead

# model_type -> family: the architectures this wrapper is written and tested for.
FAMILIES = {"wav2vec2": "wav2vec 2.0", "hubert": "HuBERT", "wavlm": "WavLM"}
SAMPLE_RATE = 16000


def hf_folder(base_model: str) -> Path | None:
    """The folder ``base_model`` (a config value) names, or None for casr's own Conformer."""
    return Path(base_model[len(PREFIX):]).expanduser() if base_model.startswith(PREFIX) else None


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ConfigError("base_model hf:...: needs the transformers package "
                          "(pip install 'continual-asr[hf]')") from None
    transformers.logging.set_verbosity_error()  # its notes about unused weights are not casr's to show
    transformers.utils.logging.disable_progress_bar()  # nor its bar for loading a few weights
    # WavLM hands torch's attention a float bias with a bool padding mask; torch says so on every run.
    warnings.filterwarnings("ignore", message="Support for mismatched key_padding_mask and attn_mask")
    return transformers


def check_base_model(base_model: str) -> None:
    """ConfigError (one line) unless ``base_model`` is casr's own, names a usable model folder or
    an existing casr:FILE (whose contents load_base_file checks): before any data or training work."""
    from ..training.base_file import base_file, check_base_file  # training imports model: not at the top

    folder, file = hf_folder(base_model), base_file(base_model)
    if folder is not None:
        inspect_folder(folder)
    elif file is not None:
        check_base_file(file)


@dataclass(frozen=True)
class HFFolder:
    """A checked model folder: its parsed model config and feature extractor."""

    path: Path
    config: object  # transformers.PretrainedConfig
    extractor: object  # transformers.FeatureExtractionMixin

    @property
    def shown(self) -> str:
        return f"base_model hf:{self.path}"


def inspect_folder(folder: Path) -> HFFolder:
    """The folder checked for everything that can be told without loading the weights (files,
    model family, sample rate, safetensors), parsed once per folder state however often a run asks."""
    return _inspect(Path(folder), folder_fingerprint(folder) if Path(folder).is_dir() else "")


@functools.lru_cache(maxsize=8)
def _inspect(folder: Path, fingerprint: str) -> HFFolder:
    shown = f"base_model hf:{folder}"
    if not folder.is_dir():
        raise ConfigError(f"{shown}: no such folder (casr downloads nothing: save the model there first)")
    for name, what in (("config.json", "the model's config"), ("preprocessor_config.json", "its feature extractor"),
                       ("vocab.json", "its character tokenizer")):
        if not (folder / name).is_file():
            raise ConfigError(f"{shown}: {name} ({what}) is missing; save the model and its processor "
                              "with save_pretrained")
    transformers = _transformers()
    config = transformers.AutoConfig.from_pretrained(folder)
    if config.model_type not in FAMILIES:
        raise ConfigError(f"{shown}: model_type {config.model_type!r} is not one casr supports "
                          f"({', '.join(f'{k} ({v})' for k, v in FAMILIES.items())})")
    extractor = transformers.AutoFeatureExtractor.from_pretrained(folder)
    if extractor.sampling_rate != SAMPLE_RATE:
        raise ConfigError(f"{shown}: the feature extractor expects {extractor.sampling_rate} Hz audio; casr feeds "
                          f"{SAMPLE_RATE} Hz")
    if not any(folder.glob("*.safetensors")):  # a pickle from someone else could run code
        raise ConfigError(f"{shown}: no safetensors weights (model.safetensors); casr loads no pickled weights "
                          "(pytorch_model.bin): save the model again with save_pretrained")
    return HFFolder(folder, config, extractor)


def folder_fingerprint(folder: Path) -> str:
    """16 hex digits over the folder's files (names, sizes, modification times): what the
    stream data's fingerprint and the feature cache follow."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(folder)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


class HFCharacterTokenizer:
    """The model's own character tokenizer behind casr's tokenizer interface.

    casr's ids are the model's classes without blank, in the model's order: casr id t is model
    class ``classes[t + 1]``, where ``classes[0]`` is the blank (pad) class. Transcripts are
    lower case (text.normalize_text); a vocabulary of upper-case letters (wav2vec2-base-960h's)
    gets them upper-cased, and hypotheses come back lower case.
    """

    def __init__(self, tokenizer, num_classes: int, blank: int) -> None:
        self._tokenizer = tokenizer
        self.blank = blank
        self.classes = [blank] + [i for i in range(num_classes) if i != blank]
        self._casr_id = {cls: t - 1 for t, cls in enumerate(self.classes)}
        vocab = tokenizer.get_vocab()
        letters = [token for token in vocab if len(token) == 1 and token.isalpha()]
        self.upper = bool(letters) and all(token.isupper() for token in letters)
        self._symbols = {token for token, index in vocab.items() if len(token) == 1 and index < num_classes}
        self._delimiter = tokenizer.word_delimiter_token
        self.model_bytes = json.dumps(sorted(vocab.items(), key=lambda kv: kv[1])).encode() + f"|{blank}".encode()

    def __len__(self) -> int:
        return len(self.classes) - 1

    def _cased(self, text: str) -> str:
        return text.upper() if self.upper else text

    def encode(self, text: str) -> list[int]:
        ids = self._tokenizer.convert_tokens_to_ids(self._tokenizer.tokenize(self._cased(text)))
        return [self._casr_id[i] for i in ids]

    def decode(self, ids: list[int]) -> str:
        text = self._tokenizer.decode([self.classes[t + 1] for t in ids], group_tokens=False)
        return " ".join(text.lower().split())

    def unknown_characters(self, text: str) -> set[str]:
        """Characters of ``text`` the vocabulary cannot spell (the tokenizer maps them to <unk>)."""
        return {ch for ch in set(text) if ch != " " and self._cased(ch) not in self._symbols}


def load_hf_tokenizer(folder: Path) -> HFCharacterTokenizer:
    checked = inspect_folder(folder)
    tokenizer = _transformers().Wav2Vec2CTCTokenizer.from_pretrained(checked.path)
    return HFCharacterTokenizer(tokenizer, checked.config.vocab_size, checked.config.pad_token_id)


class HFEncoderASR(AdaptableASR):
    """A Hugging Face CTC model (``ctc_model``, e.g. ``Wav2Vec2ForCTC``) with casr's adapter
    banks, combiners and router; audio (B, S) in, encoder frames out (see the module's doc)."""

    takes_waveform = True

    def __init__(self, ctc_model: nn.Module, normalize: bool, attention_mask: bool, source: str,
                 adapter_dim: int = 32) -> None:
        super().__init__()
        config = ctc_model.config
        self.source = source
        self.hf = ctc_model.base_model  # Wav2Vec2Model, HubertModel or WavLMModel
        self.hf.config.layerdrop = 0.0
        self.hf.feature_extractor._freeze_parameters()
        self.d_model = config.hidden_size
        self.num_layers = len(self.hf.encoder.layers)
        self.normalize = normalize
        self.pass_attention_mask = attention_mask
        classes = [config.pad_token_id] + [i for i in range(config.vocab_size) if i != config.pad_token_id]
        self.head = CTCHead(config.hidden_size, config.vocab_size - 1)
        with torch.no_grad():
            self.head.weight.copy_(ctc_model.lm_head.weight[classes])
            self.head.bias.copy_(ctc_model.lm_head.bias[classes])
        self.init_adapters(adapter_dim)
        self._batch: dict | None = None  # what the layer hooks need during one encode
        for i, layer in enumerate(self.hf.encoder.layers):
            layer.register_forward_hook(self._after_layer(i))

    def base_modules(self) -> list[nn.Module]:
        return [self.hf, self.head]

    def frozen_parts(self) -> list[nn.Module]:
        return [self.hf.feature_extractor]

    def _after_layer(self, layer: int):
        def hook(module: nn.Module, inputs, output):
            batch = self._batch
            if batch is None:  # the Hugging Face model called on its own
                return None
            hidden = output if isinstance(output, torch.Tensor) else output[0]
            if batch["adapters"]:
                hidden = self.adapt(layer, hidden, batch["adapter_index"])
            batch["outputs"].append(hidden)
            return hidden if isinstance(output, torch.Tensor) else (hidden, *output[1:])
        return hook

    def encode(self, features: torch.Tensor, lengths: torch.Tensor, adapter_index: torch.Tensor | None = None,
               adapters: bool = True) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """audio (B, S) -> (every layer's output (B, T', D), adapters included; the encoder's
        output (after its final LayerNorm where the family has one); output lengths (B,))."""
        audio = features.float()
        valid = torch.arange(audio.shape[1], device=audio.device)[None, :] < lengths[:, None]
        if self.normalize:  # Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm, over each utterance's samples
            count = lengths.clamp(min=1).unsqueeze(-1).to(audio.dtype)
            mean = (audio * valid).sum(dim=1, keepdim=True) / count
            var = (((audio - mean) * valid) ** 2).sum(dim=1, keepdim=True) / count
            audio = torch.where(valid, (audio - mean) / torch.sqrt(var + 1e-7), 0.0)
        frames = int(self.hf._get_feat_extract_output_lengths(torch.tensor(audio.shape[1])))
        out_lengths = self.hf._get_feat_extract_output_lengths(lengths).clamp(min=1, max=frames)
        use_adapters = self.uses_adapters(adapters)
        self.begin_adapted_batch(torch.arange(frames, device=audio.device)[None, :] < out_lengths[:, None], adapters)
        self._batch = {"adapters": use_adapters, "adapter_index": adapter_index, "outputs": []}
        try:
            mask = valid.long() if self.pass_attention_mask else None
            encoded = self.hf(audio, attention_mask=mask).last_hidden_state
            outputs = self._batch["outputs"]
        finally:
            self._batch = None
        return outputs, encoded, out_lengths


def load_hf_model(folder: Path, adapter_dim: int = 32) -> HFEncoderASR:
    """The CTC model saved in ``folder`` (one line naming what is wrong otherwise)."""
    checked = inspect_folder(folder)
    transformers, folder, shown = _transformers(), checked.path, checked.shown
    try:
        ctc_model, loading = transformers.AutoModelForCTC.from_pretrained(
            folder, output_loading_info=True, use_safetensors=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{shown}: the weights do not load ({str(exc).splitlines()[0]})") from None
    missing = sorted(loading.get("missing_keys", []))
    if missing:  # e.g. a self-supervised checkpoint without a CTC head: its head would be random
        what = "no CTC head (lm_head): fine-tune it for CTC first" if any("lm_head" in k for k in missing) else (
            f"{len(missing)} weights missing ({missing[0]}, ...)")
        raise ConfigError(f"{shown}: the folder's model has {what}")
    return HFEncoderASR(ctc_model.eval(), normalize=bool(checked.extractor.do_normalize),
                        attention_mask=bool(checked.extractor.return_attention_mask), source=str(folder),
                        adapter_dim=adapter_dim)
