"""SentencePiece tokenizer trained on a stream's base-task training transcripts."""

from __future__ import annotations

import io
from pathlib import Path

import sentencepiece as spm


class Tokenizer:
    """Wraps a SentencePiece model; ids are 0..len-1 (the CTC head adds blank as class 0)."""

    def __init__(self, model_bytes: bytes) -> None:
        self.model_bytes = model_bytes
        self._sp = spm.SentencePieceProcessor(model_proto=model_bytes)

    def __len__(self) -> int:
        return self._sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text)

    def decode(self, ids: list[int]) -> str:
        return self._sp.decode(ids)

    def unknown_characters(self, text: str) -> set[str]:
        """Characters of ``text`` the vocabulary cannot spell (mapped to <unk>)."""
        return {ch for ch in set(text.replace(" ", "")) if self._sp.piece_to_id(ch) == self._sp.unk_id()
                and self._sp.piece_to_id("\u2581" + ch) == self._sp.unk_id()}

    @classmethod
    def train(cls, sentences: list[str], vocab_size: int, required_chars: str = "") -> "Tokenizer":
        """Unigram model over ``sentences``; ``required_chars`` are spellable even if they never occur."""
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences), model_writer=model, vocab_size=vocab_size,
            model_type="unigram", character_coverage=1.0, hard_vocab_limit=False,
            bos_id=-1, eos_id=-1, unk_id=0, num_threads=1, minloglevel=2, required_chars=required_chars,
        )
        return cls(model.getvalue())

    def save(self, path: Path) -> None:
        path.write_bytes(self.model_bytes)

    @classmethod
    def load(cls, path: Path) -> "Tokenizer":
        model_bytes = path.read_bytes()
        if not model_bytes:  # SentencePiece would take it for an empty model
            raise ValueError(f"{path} is empty")
        return cls(model_bytes)
