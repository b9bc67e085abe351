"""Generation with the reference model: a KV cache, sampling, and the prefill-decode loop.

`generate` runs one prefill over the prompts, then one decode step per new token,
with greedy, temperature or top-k sampling, and records when each token was ready.
Every argument is checked here, once, before the model runs.
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .device import synchronize
from .model import Transformer
from .units import check_positive


def _check_model(model: Transformer) -> None:
    if not isinstance(model, Transformer):
        raise ValueError(f"model must be a llmperf.model.Transformer, got {type(model).__name__}")


class KVCache:
    """Keys and values of every layer's past tokens, in two buffers allocated once.

    k and v have shape (layers, batch, kv_heads, max_seq_len, d_head), in the model's
    dtype and on its device.
    """

    def __init__(self, model: Transformer, batch: int = 1, max_seq_len: int | None = None) -> None:
        _check_model(model)
        check_positive("batch", batch, integer=True)
        max_seq_len = model.max_seq_len if max_seq_len is None else max_seq_len
        check_positive("max_seq_len", max_seq_len, integer=True)
        c = model.config
        self.batch, self.max_seq_len = int(batch), int(max_seq_len)
        shape = (c.n_layers, self.batch, c.n_kv_heads, self.max_seq_len, c.d_head)
        self.k = torch.zeros(shape, dtype=model.dtype, device=model.device)
        self.v = torch.zeros(shape, dtype=model.dtype, device=model.device)

    def update(self, layer_index: int, start_pos: int, k: torch.Tensor,
               v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (batch, kv_heads, T, d_head) of one layer at positions start_pos..
        start_pos+T-1 in place; return views of that layer's positions 0..start_pos+T-1."""
        end = start_pos + k.shape[2]
        self.k[layer_index, :, :, start_pos:end] = k
        self.v[layer_index, :, :, start_pos:end] = v
        return self.k[layer_index, :, :, :end], self.v[layer_index, :, :, :end]

    @property
    def nbytes(self) -> int:
        """Bytes of the K and V buffers together."""
        return self.k.nbytes + self.v.nbytes

    def slots(self, slots: Sequence[int], length: int) -> SlotView:
        """Rows `slots` of this cache, read up to `length` positions (see `SlotView`)."""
        return SlotView(self, slots, length)


class SlotView:
    """Some rows (slots) of a KVCache, for a batch whose row b is the sequence in slots[b].

    A serving engine keeps one sequence per slot, each at its own position. `update` writes
    row b's keys and values at its positions (start_pos: an int for every row, or a
    LongTensor (B,) of per-row starts) and returns those rows' positions 0..start_pos+T-1
    (int) or 0..length-1 (per row). `length`, the longest sequence after this step, is a
    host-side int, so reading waits for no device; the model masks each row's later keys. A run of
    consecutive slots is a view of the cache; scattered slots are gathered (a copy).
    """

    def __init__(self, cache: KVCache, slots: Sequence[int], length: int) -> None:
        slots = [int(s) for s in slots]
        if not slots or min(slots) < 0 or max(slots) >= cache.batch or len(set(slots)) < len(slots):
            raise ValueError(f"slots must be distinct rows in [0, {cache.batch}), got {slots}")
        check_positive("length", length, integer=True)
        if length > cache.max_seq_len:
            raise ValueError(f"length must be <= max_seq_len={cache.max_seq_len}, got {length}")
        self.cache, self.length = cache, int(length)
        self.index = torch.tensor(slots, device=cache.k.device)
        consecutive = slots == list(range(slots[0], slots[0] + len(slots)))
        self.rows = slice(slots[0], slots[0] + len(slots)) if consecutive else self.index

    def update(self, layer_index: int, start_pos: int | torch.Tensor, k: torch.Tensor,
               v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (B, kv_heads, T, d_head) at each row's positions start_pos..+T-1;
        return K and V (B, kv_heads, length, d_head) of the batch's slots."""
        T = k.shape[2]
        keys, values = self.cache.k[layer_index], self.cache.v[layer_index]
        if isinstance(start_pos, int) and isinstance(self.rows, slice):
            keys[self.rows, :, start_pos:start_pos + T] = k
            values[self.rows, :, start_pos:start_pos + T] = v
        else:  # row b, position t -> (slots[b], start_pos[b] + t): values as (B, T, kv_heads, D)
            pos = torch.as_tensor(start_pos, device=k.device).view(-1, 1) + torch.arange(
                T, device=k.device)
            rows = self.index[:, None]
            keys[rows, :, pos] = k.transpose(1, 2)
            values[rows, :, pos] = v.transpose(1, 2)
        end = start_pos + T if isinstance(start_pos, int) else self.length
        if isinstance(self.rows, slice):
            return keys[self.rows, :, :end], values[self.rows, :, :end]
        # index_select copies whole rows; x[index] indexes element by element, ~5x slower
        return (keys[:, :, :end].index_select(0, self.index),
                values[:, :, :end].index_select(0, self.index))


@dataclass(frozen=True)
class Generation:
    """New tokens (B, max_new_tokens) and when each step's tokens were ready.

    timestamps_s[i] is the time from the start of `generate` until the i-th new
    tokens were on the host: timestamps_s[0] is the time to first token (TTFT).
    """

    tokens: torch.Tensor
    timestamps_s: list[float]
    prompt_len: int

    @property
    def ttft_s(self) -> float:
        return self.timestamps_s[0]

    @property
    def tpot_s(self) -> float:
        """Mean time per output token after the first (0 with a single token)."""
        n = len(self.timestamps_s) - 1
        return (self.timestamps_s[-1] - self.timestamps_s[0]) / n if n else 0.0


def next_token_distribution(logits: torch.Tensor, temperature: float = 1.0,
                            top_k: int | None = None) -> torch.Tensor:
    """Probabilities (B, V) that sampling draws from: softmax(logits / temperature),
    with every token outside the top_k most likely set to probability 0."""
    check_positive("temperature", temperature)
    logits = logits.float() / temperature
    if top_k is not None:
        check_positive("top_k", top_k, integer=True)
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    return logits.softmax(dim=-1)


def sample_next(logits: torch.Tensor, temperature: float, top_k: int | None,
                generator: torch.Generator) -> torch.Tensor:
    """Next token ids (B,) from the last logits (B, V): argmax at temperature 0, else
    a draw from `next_token_distribution` with `generator` (so a seed fixes the draw)."""
    if temperature == 0.0:
        return logits.float().argmax(dim=-1)
    probs = next_token_distribution(logits, temperature, top_k)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def prompt_tensor(prompt: torch.Tensor | Sequence[int] | Sequence[Sequence[int]],
                  vocab_size: int) -> torch.Tensor:
    """Prompts as a (B, T) LongTensor on the CPU: from a (B, T) or (T,) integer tensor, a
    list of token ids, or a list of equal-length lists; ids must lie in [0, vocab_size)."""
    if isinstance(prompt, torch.Tensor):
        tokens = prompt.unsqueeze(0) if prompt.dim() == 1 else prompt
        integer = tokens.dtype in (torch.int32, torch.int64)
        if tokens.dim() != 2 or not integer or tokens.numel() == 0:
            raise ValueError("prompt must be a non-empty (batch, T) integer tensor, got "
                             f"{prompt.dtype} {tuple(prompt.shape)}")
        tokens = tokens.to("cpu", torch.int64)
    else:
        rows = list(prompt)
        rows = [rows] if rows and all(isinstance(t, int) for t in rows) else [list(r) for r in rows]
        if not rows or not rows[0] or not all(isinstance(t, int) for r in rows for t in r):
            raise ValueError("prompt must be a LongTensor (B, T), a list of token ids, or a list "
                             "of non-empty lists of token ids")
        if len({len(r) for r in rows}) != 1:
            raise ValueError(f"prompt rows must have one length, got {[len(r) for r in rows]}")
        tokens = torch.tensor(rows, dtype=torch.int64)
    lo, hi = int(tokens.min()), int(tokens.max())
    if lo < 0 or hi >= vocab_size:
        raise ValueError(f"prompt token ids must lie in [0, {vocab_size}), got [{lo}, {hi}]")
    return tokens


def _check_sampling(temperature: float, top_k: int | None, vocab_size: int) -> None:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
            or not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
    if top_k is not None:
        check_positive("top_k", top_k, integer=True)
        if top_k > vocab_size:
            raise ValueError(f"top_k must be <= vocab_size ({vocab_size}), got {top_k}")


@torch.inference_mode()
def generate(model: Transformer, prompt: torch.Tensor | Sequence[int] | Sequence[Sequence[int]],
             max_new_tokens: int, temperature: float = 0.0, top_k: int | None = None,
             seed: int = 0, use_cache: bool = True) -> Generation:
    """Extend each prompt (all of one length) by max_new_tokens tokens.

    temperature 0 is greedy (argmax); above 0 samples from softmax(logits / temperature),
    restricted to the top_k most likely tokens when top_k is given, with a generator
    seeded by `seed`. Without the cache every step runs the whole sequence again,
    which is slower and gives the same tokens.
    """
    _check_model(model)
    check_positive("max_new_tokens", max_new_tokens, integer=True)
    _check_sampling(temperature, top_k, model.config.vocab_size)
    tokens = prompt_tensor(prompt, model.config.vocab_size)
    (B, T), dev = tokens.shape, model.device
    total = T + max_new_tokens - 1  # the last new token is never fed back
    if total > model.max_seq_len:
        raise ValueError(f"prompt ({T} tokens) + max_new_tokens - 1 = {total} is beyond "
                         f"max_seq_len={model.max_seq_len}")
    seq = torch.zeros(B, total + 1, dtype=torch.int64, device=dev)
    seq[:, :T] = tokens.to(dev)
    cache = KVCache(model, B, total) if use_cache else None
    gen = torch.Generator(device=dev).manual_seed(seed)
    out, stamps = [], []
    start = time.perf_counter()
    logits = model(seq[:, :T], 0, cache, last_only=True)
    for i in range(max_new_tokens):
        nxt = sample_next(logits[:, -1], temperature, top_k, gen)
        out.append(nxt)
        synchronize(dev)
        stamps.append(time.perf_counter() - start)
        if i == max_new_tokens - 1:
            break
        pos = T + i
        seq[:, pos] = nxt
        if use_cache:
            logits = model(seq[:, pos:pos + 1], pos, cache)
        else:
            logits = model(seq[:, :pos + 1], 0, None, last_only=True)
    return Generation(torch.stack(out, dim=1).cpu(), stamps, T)
