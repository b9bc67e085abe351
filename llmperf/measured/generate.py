"""Generation with the reference model: sampling and the prefill-decode loop.

`generate` runs one prefill over the prompts, then one decode step per new token on a
`KVCache`, with greedy, temperature or top-k sampling, and records when each token was ready.
`parallel_samples` draws several continuations of one prompt on a paged cache, sharing the
prompt's blocks. Every argument is checked here, once, before the model runs.
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..serving.paging import BlockAllocator, blocks_needed
from ..units import check_non_negative, check_positive
from .cache import KVCache, PagedKVCache
from .device import synchronize
from .model import Transformer, check_model


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
    """Probabilities (..., V) that sampling draws from: softmax(logits / temperature) over
    the last dimension, with every token outside the top_k most likely set to probability 0."""
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise ValueError(f"logits must be a floating-point tensor (..., V), got "
                         f"{getattr(logits, 'dtype', type(logits).__name__)}")
    check_positive("temperature", temperature)
    if top_k is not None:
        check_positive("top_k", top_k, integer=True)
    return sampling_distribution(logits, temperature, top_k)


def sampling_distribution(logits: torch.Tensor, temperature: float,
                          top_k: int | None) -> torch.Tensor:
    """`next_token_distribution` without its checks, for loops that checked once before."""
    logits = logits.float() / temperature
    if top_k is not None:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    return logits.softmax(dim=-1)


def sample_next(logits: torch.Tensor, temperature: float, top_k: int | None,
                generator: torch.Generator) -> torch.Tensor:
    """Next token ids (B,) from the last logits (B, V): argmax at temperature 0, else
    a draw from `next_token_distribution` with `generator` (so a seed fixes the draw).

    Called once per token, it checks nothing: run `check_sampling` once before the loop."""
    if temperature == 0.0:
        return logits.float().argmax(dim=-1)
    probs = sampling_distribution(logits, temperature, top_k)
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


def check_sampling(temperature: float, top_k: int | None, vocab_size: int) -> None:
    """ValueError unless temperature is a finite number >= 0 and top_k None or an integer in
    [1, vocab_size]: the check a generation loop runs once, before `sample_next`."""
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
    check_model(model)
    check_positive("max_new_tokens", max_new_tokens, integer=True)
    check_sampling(temperature, top_k, model.config.vocab_size)
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


@dataclass(frozen=True)
class ParallelSamples:
    """`samples` continuations of one prompt (samples, max_new_tokens), and the most KV
    blocks they held at once (`BlockAllocator.peak_blocks`)."""

    tokens: torch.Tensor
    peak_blocks: int
    block_size: int


@torch.inference_mode()
def parallel_samples(model: Transformer, prompt: Sequence[int], samples: int,
                     max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                     seed: int = 0, block_size: int = 16, share: bool = True) -> ParallelSamples:
    """Sample `samples` continuations of `prompt` together, on a paged cache.

    share: the prompt is prefilled once and its blocks forked to every sample, which copies
    the last, partly filled prompt block on its first write (copy on write); otherwise every
    sample prefills and holds its own copy. Sample i draws from a generator seeded seed + i,
    so its tokens are those of `generate(model, prompt, max_new_tokens, temperature, top_k,
    seed + i)`, up to the rounding of batched against single-row arithmetic."""
    check_model(model)
    check_positive("samples", samples, integer=True)
    check_positive("max_new_tokens", max_new_tokens, integer=True)
    check_sampling(temperature, top_k, model.config.vocab_size)
    check_non_negative("seed", seed, integer=True)
    prompt = prompt_tensor(prompt, model.config.vocab_size)[:1].to(model.device)
    P, dev = prompt.shape[1], model.device
    if P + max_new_tokens - 1 > model.max_seq_len:
        raise ValueError(f"prompt ({P}) + max_new_tokens - 1 is beyond max_seq_len="
                         f"{model.max_seq_len}")
    per_sample = blocks_needed(P + max_new_tokens - 1, block_size)
    allocator = BlockAllocator(samples * per_sample, block_size)
    cache = PagedKVCache(model, allocator)
    ids = list(range(samples))
    for i in ids[:1] if share else ids:
        allocator.allocate(i, P)
        last = model(prompt, 0, cache.view([i], [0], P), last_only=True)[:, -1]
    for i in ids[1:] if share else []:
        allocator.fork(0, i)
    gens = [torch.Generator(device=dev).manual_seed(seed + i) for i in ids]
    logits = last.expand(samples, -1)
    out = []
    for step in range(max_new_tokens):
        new = torch.cat([sample_next(logits[i:i + 1], temperature, top_k, gens[i]) for i in ids])
        out.append(new)
        if step == max_new_tokens - 1:
            break
        for i in ids:
            cache.copy_blocks(allocator.append(i, 1))
        pos = P + step
        logits = model(new[:, None], pos, cache.view(ids, [pos] * samples, 1))[:, -1]
    return ParallelSamples(torch.stack(out, dim=1).cpu(), allocator.peak_blocks, block_size)
