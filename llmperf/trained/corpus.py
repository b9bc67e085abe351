"""The training text: the documentation topics CPython ships in its standard library.

`pydoc_data.topics` holds the text of the language reference sections that `help()` shows
(for example `help("assert")`), generated from CPython's documentation. It is on every
machine with Python, so nothing is downloaded; the text is read at run time and never copied
into this repository. Licence: the Python Software Foundation License (CPython's
documentation, https://docs.python.org/3/license.html).

The topics differ slightly between Python versions. The models were trained on the version
whose SHA-256 is `TRAINED_SHA256`; `corpus_matches()` says whether the running Python has it.
The split is fixed: the topics are joined in sorted order, the first 90 % of the characters
are the training split and the rest the validation split.
"""
from __future__ import annotations

import hashlib

TRAINED_SHA256 = "71f2ff5d99bdc1f9c48c5c2353ad138201c5ca1c377e0226857ef8fa89b8bcee"
TRAINED_PYTHON = "3.11.7"
TRAIN_FRACTION = 0.9
SPLITS = ("train", "validation")


def corpus_text() -> str:
    """Every topic of pydoc_data.topics, in sorted order of its name, separated by a blank line."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[name] for name in sorted(topics))


def corpus_sha256(text: str | None = None) -> str:
    """SHA-256 of the corpus text, UTF-8 encoded (of the running Python's corpus by default)."""
    text = corpus_text() if text is None else text
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def corpus_matches() -> bool:
    """Whether the running Python ships the corpus the models were trained on."""
    return corpus_sha256() == TRAINED_SHA256


def split_text(split: str, text: str | None = None) -> str:
    """The "train" (first 90 % of the characters) or "validation" (the rest) split."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    text = corpus_text() if text is None else text
    cut = int(len(text) * TRAIN_FRACTION)
    return text[:cut] if split == "train" else text[cut:]
