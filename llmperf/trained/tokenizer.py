"""A character tokenizer: one id per character of the training split, id 0 for any other."""
from __future__ import annotations

import json
from pathlib import Path

import torch

UNKNOWN = "\ufffd"  # what id 0 decodes to


class CharTokenizer:
    """Ids 1..n for the n distinct characters of the vocabulary, 0 for an unknown character.

    Text made of vocabulary characters round-trips: decode(encode(s)) == s.
    """

    def __init__(self, vocab: str) -> None:
        if not isinstance(vocab, str) or not vocab:
            raise ValueError("vocab must be a non-empty string of distinct characters")
        if len(set(vocab)) != len(vocab) or UNKNOWN in vocab:
            raise ValueError(f"vocab must hold distinct characters other than {UNKNOWN!r}")
        self.vocab = vocab
        self._ids = {ch: i + 1 for i, ch in enumerate(vocab)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """The tokenizer whose vocabulary is the sorted set of characters of `text`."""
        return cls("".join(sorted(set(text) - {UNKNOWN})))

    @property
    def vocab_size(self) -> int:
        """Number of ids, the unknown id included."""
        return len(self.vocab) + 1

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise ValueError(f"text must be a str, got {type(text).__name__}")
        return [self._ids.get(ch, 0) for ch in text]

    def encode_tensor(self, text: str) -> torch.Tensor:
        """encode(text) as a 1-D int64 tensor."""
        return torch.tensor(self.encode(text), dtype=torch.int64)

    def decode(self, ids) -> str:
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        if any(not 0 <= int(i) < self.vocab_size for i in ids):
            raise ValueError(f"ids must lie in [0, {self.vocab_size})")
        return "".join(self.vocab[i - 1] if i else UNKNOWN for i in map(int, ids))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"kind": "char", "vocab": self.vocab},
                                         ensure_ascii=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> CharTokenizer:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(data["vocab"])
