"""The drafts of speculative decoding: a small model, or a lookup in the text itself.

Each draft has `start(prompt, capacity)`, `propose(seq, gamma, temperature, top_k, generator)`
(up to gamma tokens and their distributions q, None when one-hot) and `rollback(length)`, and
counts the seconds its model's forward passes took in `forward_s`:

- `ModelDraft`: a small `Transformer` decoding one token at a time on its own KV cache;
- `NgramDraft`: "prompt lookup", the tokens that followed the latest earlier occurrence of the
  text's last n tokens; no model at all.

`timed_forward` runs a model and times it, waiting for its GPU work before and after;
`draft_distribution` is the distribution a draft or the target samples from (one-hot when
greedy). `llmperf.measured.speculative` runs the loop that verifies the drafts.
"""
from __future__ import annotations

import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..units import check_positive
from .cache import KVCache
from .device import synchronize
from .generate import sampling_distribution
from .model import Transformer, check_model


def timed_forward(model: Transformer, *args, **kwargs) -> tuple[torch.Tensor, float]:
    """model(*args, **kwargs) and its seconds: work queued on the model's GPU before the call
    is waited for first (it belongs to the host part before it), and the call's own after."""
    synchronize(model.device)
    start = time.perf_counter()
    out = model(*args, **kwargs)
    synchronize(model.device)
    return out, time.perf_counter() - start


def draft_distribution(logits: torch.Tensor, temperature: float, top_k: int | None) -> torch.Tensor:
    """(n, V) probabilities: one-hot at the argmax when greedy, else the sampling distribution."""
    if temperature == 0.0:
        return F.one_hot(logits.float().argmax(-1), logits.shape[-1]).double()
    return sampling_distribution(logits, temperature, top_k).double()


class ModelDraft:
    """A small Transformer as the draft, decoding one token at a time on its own KV cache.
    forward_s: seconds spent in the model's forward passes so far (`timed_forward`)."""

    def __init__(self, model: Transformer) -> None:
        check_model(model)
        self.model, self.cache, self.cached, self.forward_s = model, None, 0, 0.0

    def _run(self, *args, **kwargs) -> torch.Tensor:
        out, seconds = timed_forward(self.model, *args, **kwargs)
        self.forward_s += seconds
        return out

    def start(self, prompt: list[int], capacity: int) -> None:
        self.cache = KVCache(self.model, 1, capacity)
        self.cached = len(prompt) - 1
        if self.cached:
            self._run(torch.tensor([prompt[:-1]], device=self.model.device), 0, self.cache,
                      last_only=True)

    def propose(self, seq: list[int], gamma: int, temperature: float, top_k: int | None,
                generator: torch.Generator) -> tuple[list[int], torch.Tensor | None]:
        """gamma tokens drawn from the draft, and their distributions q (gamma, V); greedy
        drafts are argmaxes, returned with q None (one-hot, as for a lookup)."""
        dev = self.model.device
        logits = self._run(torch.tensor([seq[self.cached:]], device=dev), self.cached,
                           self.cache, last_only=True)
        tokens, qs = [], []
        for i in range(gamma):
            if temperature == 0.0:
                x = int(logits[0, -1].argmax())
            else:
                q = draft_distribution(logits[0, -1:], temperature, top_k)[0].cpu()
                x = int(torch.multinomial(q, 1, generator=generator))
                qs.append(q)
            tokens.append(x)
            if i < gamma - 1:
                logits = self._run(torch.tensor([[x]], device=dev), len(seq) + i, self.cache)
        self.cached = len(seq) + gamma - 1  # the last draft is never fed
        return tokens, (torch.stack(qs) if qs else None)

    def rollback(self, length: int) -> None:
        """Keep cached positions < length (the committed text minus its last token)."""
        self.cached = min(self.cached, length)
        self.cache.rollback(self.cached)


class NgramDraft:
    """Prompt lookup: find the latest earlier occurrence of the text's last n tokens (n from
    max_ngram down to min_ngram) and propose the tokens that followed it. Its q is one-hot.
    It runs no model: its forward_s stays 0, and the lookup counts as host time."""

    forward_s = 0.0

    def __init__(self, max_ngram: int = 3, min_ngram: int = 1) -> None:
        check_positive("max_ngram", max_ngram, integer=True)
        check_positive("min_ngram", min_ngram, integer=True)
        if min_ngram > max_ngram:
            raise ValueError(f"min_ngram must be <= max_ngram={max_ngram}, got {min_ngram}")
        self.max_ngram, self.min_ngram = int(max_ngram), int(min_ngram)

    def start(self, prompt: list[int], capacity: int) -> None:
        pass

    def lookup(self, seq: Sequence[int], gamma: int) -> list[int]:
        """Up to gamma tokens that followed an earlier match of the longest suffix that has one:
        the latest match followed by gamma tokens, else the latest match (fewer tokens)."""
        seq = list(seq)
        for n in range(min(self.max_ngram, len(seq) - 1), self.min_ngram - 1, -1):
            suffix = seq[-n:]
            matches = [i for i in range(len(seq) - n - 1, -1, -1) if seq[i:i + n] == suffix]
            if matches:
                full = [i for i in matches if i + n + gamma <= len(seq)]
                i = full[0] if full else matches[0]
                return seq[i + n:i + n + gamma]
        return []

    def propose(self, seq: list[int], gamma: int, temperature: float, top_k: int | None,
                generator: torch.Generator) -> tuple[list[int], torch.Tensor | None]:
        return self.lookup(seq, gamma), None

    def rollback(self, length: int) -> None:
        pass
