"""Padded against ragged decode: what one decode step reads when contexts differ.

A batch of B requests decodes one token each; request i holds contexts[i] tokens once its new
token is written. Two ways to run that step on a contiguous `KVCache` (one row per request):

- padded: the batch as B rows of one token, every row reading as many keys as the longest
  context (`KVCache.slots`), the shorter rows' extra keys masked: B * max(contexts) keys;
- ragged: one `RaggedBatch` in which each request reads its own row up to its own context
  (`llmperf.measured.varlen`), as the engine does: sum(contexts) keys.

`compare_decode_layouts` times both, alternating, and counts the keys each reads; KV bytes
are those keys times `ModelConfig.kv_bytes_per_token`.
"""
from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..units import check_positive
from .cache import KVCache
from .device import dtype_name
from .model import Transformer, check_model
from .timing import benchmark
from .varlen import RaggedBatch


def check_contexts(contexts: Sequence[int], max_seq_len: int) -> list[int]:
    """`contexts` as a list of ints in [1, max_seq_len]."""
    contexts = [int(c) for c in contexts]
    if not contexts or min(contexts) < 1 or max(contexts) > max_seq_len:
        raise ValueError(f"contexts must be a non-empty list of token counts in [1, "
                         f"{max_seq_len}], got {contexts}")
    return contexts


def padded_decode(model: Transformer, cache: KVCache, contexts: list[int]) -> Callable:
    """One decode step of rows 0..B-1, each at its own position, reading max(contexts) keys."""
    tokens = torch.zeros(len(contexts), 1, dtype=torch.long, device=model.device)
    starts = torch.tensor([c - 1 for c in contexts], device=model.device)
    return lambda: model(tokens, starts, cache.slots(range(len(contexts)), max(contexts)))[:, -1]


def ragged_decode(model: Transformer, cache: KVCache | object, contexts: list[int],
                  decode: str = "per_piece") -> Callable:
    """One ragged decode step, request i (row or sequence i) reading its contexts[i] keys;
    the batch description is built inside each call, as an engine builds it each step."""
    tokens = torch.zeros(1, len(contexts), dtype=torch.long, device=model.device)
    pieces = [(i, c - 1, 1) for i, c in enumerate(contexts)]

    def step() -> torch.Tensor:
        batch = RaggedBatch(cache, pieces, decode)
        return model(tokens, batch.positions, batch, last_only=True)
    return step


@dataclass(frozen=True)
class DecodeLayouts:
    """Medians of one decode step padded and ragged (seconds), and the keys each reads."""

    contexts: tuple[int, ...]
    padded_s: float
    ragged_s: float
    padded_kv_tokens: int
    ragged_kv_tokens: int
    kv_bytes_per_token: int

    @property
    def padded_kv_bytes(self) -> int:
        return self.padded_kv_tokens * self.kv_bytes_per_token

    @property
    def ragged_kv_bytes(self) -> int:
        return self.ragged_kv_tokens * self.kv_bytes_per_token


@torch.inference_mode()
def compare_decode_layouts(model: Transformer, contexts: Sequence[int], repeat: int = 10,
                           rounds: int = 3) -> DecodeLayouts:
    """Time one decode step of `contexts` padded and ragged on one contiguous cache, in
    `rounds` alternating rounds of `repeat` calls each; medians. Both give the same logits
    (checked here, to fp32 rounding)."""
    check_model(model)
    contexts = check_contexts(contexts, model.max_seq_len)
    check_positive("repeat", repeat, integer=True)
    check_positive("rounds", rounds, integer=True)
    cache = KVCache(model, len(contexts), max(contexts))
    padded, ragged = padded_decode(model, cache, contexts), ragged_decode(model, cache, contexts)
    torch.testing.assert_close(ragged(), padded(), rtol=1e-4, atol=1e-4)
    times = {"padded": [], "ragged": []}
    for _ in range(rounds):
        for name, step in (("padded", padded), ("ragged", ragged)):
            times[name].append(benchmark(step, warmup=1, repeat=repeat).median_s)
    return DecodeLayouts(tuple(contexts), statistics.median(times["padded"]),
                         statistics.median(times["ragged"]), len(contexts) * max(contexts),
                         sum(contexts),
                         model.config.kv_bytes_per_token(dtype_name(model.dtype)))
