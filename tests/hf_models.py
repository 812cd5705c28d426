"""Tiny random-weight Hugging Face CTC models saved the way a user's checkpoint folder is
(``save_pretrained`` of the model, its feature extractor and its character tokenizer)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import transformers

# wav2vec2-base-960h's vocabulary: upper-case letters, "|" between words, pad (the CTC blank) first.
VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|", *"ETAONIHSRDLUMWCFGYPBVK'XJQZ"]
FAMILIES = {  # model_type: (config class, CTC model class, does its extractor return an attention mask)
    "wav2vec2": (transformers.Wav2Vec2Config, transformers.Wav2Vec2ForCTC, False),
    "hubert": (transformers.HubertConfig, transformers.HubertForCTC, False),
    "wavlm": (transformers.WavLMConfig, transformers.WavLMForCTC, True),
}
# Three convolutions instead of seven, with the real models' 320x stride (20 ms frames); two 32-wide layers.
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            conv_dim=(16, 16, 16), conv_kernel=(10, 8, 8), conv_stride=(5, 8, 8), num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=4, vocab_size=len(VOCAB), pad_token_id=0, mask_time_prob=0.0)


def save_tiny_model(folder: Path, family: str, seed: int = 0) -> Path:
    config_class, model_class, attention_mask = FAMILIES[family]
    torch.manual_seed(seed)
    model_class(config_class(**TINY)).save_pretrained(folder)
    vocab = folder / "vocab.json"
    vocab.write_text(json.dumps({token: i for i, token in enumerate(VOCAB)}), encoding="utf-8")
    transformers.Wav2Vec2CTCTokenizer(str(vocab)).save_pretrained(folder)
    transformers.Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=attention_mask).save_pretrained(folder)
    return folder
