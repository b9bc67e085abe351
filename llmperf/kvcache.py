"""A paged KV cache for the reference model, optionally stored in int8.

`PagedKVCache` keeps every layer's keys and values in one pool of blocks, (layers,
kv_heads, num_blocks * block_size, d_head), block b holding slots b * block_size onwards;
which blocks hold which sequence is decided by a
torch-free `llmperf.serving.BlockAllocator` (its block tables), after vLLM's PagedAttention
(Kwon et al., SOSP 2023). `cache.view(seq_ids, starts, tokens)` gives the model the object
it calls `update(layer_index, start_pos, k, v)` on, as it does a `KVCache`: the view writes
each row's new keys into that row's blocks and returns its positions gathered back in order,
(B, kv_heads, length, d_head), so attention runs unchanged on the same numbers.

With kv_dtype "int8" each cached key or value vector (one token, one head: d_head numbers)
is stored as int8 with one fp16 scale, symmetric: scale = max|x| / 127, q = round(x / scale),
read back as q * scale. Bytes per token and head: d_head + 2 for K and for V, against
2 d_head in fp16/bf16 and 4 d_head in fp32. The rounding error of each element is at most
scale / 2 (plus the scale's own fp16 rounding, relative 2^-11).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .generate import _check_model, _check_sampling, prompt_tensor, sample_next
from .hooks import removed_after
from .model import Transformer
from .models import ModelConfig
from .serving.paging import BlockAllocator, blocks_needed
from .units import check_non_negative, check_positive

KV_DTYPES = (None, "int8")
INT8_MAX = 127
INT8_SCALE_BYTES = 2  # one fp16 scale per token, head, and K or V


def int8_kv_bytes_per_token(config: ModelConfig) -> int:
    """KV bytes per token of the int8 cache: 2 L h_kv (d_head + 2), the codes and one fp16
    scale for each of K and V in every layer and KV head (against 2 L h_kv d_head b_kv in
    a dtype of b_kv bytes, `ModelConfig.kv_bytes_per_token`)."""
    return 2 * config.n_layers * config.n_kv_heads * (config.d_head + INT8_SCALE_BYTES)


def quantize_int8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 over the last dimension: (q int8, scale fp16 of shape x.shape[:-1]).

    scale = max|x| / 127 rounded to fp16 (1 for an all-zero vector), q = round(x / scale)."""
    amax = x.detach().abs().amax(dim=-1).float()
    scale = torch.where(amax > 0, amax / INT8_MAX, torch.ones_like(amax)).to(torch.float16)
    q = torch.round(x.float() / scale.float()[..., None]).clamp(-INT8_MAX, INT8_MAX)
    return q.to(torch.int8), scale


def dequantize_int8(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """q * scale, in `dtype`."""
    return (q.float() * scale.float()[..., None]).to(dtype)


class PagedKVCache:
    """A pool of KV blocks for `model`, shared by the sequences of `allocator`'s tables."""

    def __init__(self, model: Transformer, allocator: BlockAllocator,
                 kv_dtype: str | None = None) -> None:
        _check_model(model)
        if not isinstance(allocator, BlockAllocator) or allocator.num_blocks is None:
            raise ValueError("allocator must be a BlockAllocator with a finite num_blocks")
        if kv_dtype not in KV_DTYPES:
            raise ValueError(f"kv_dtype must be one of {KV_DTYPES}, got {kv_dtype!r}")
        c = model.config
        self.model, self.allocator, self.kv_dtype = model, allocator, kv_dtype
        self.block_size = allocator.block_size
        # heads outside the slots: a gathered (B, heads, length, d_head) needs no second copy
        shape = (c.n_layers, c.n_kv_heads, allocator.num_blocks * self.block_size, c.d_head)
        store = torch.int8 if kv_dtype == "int8" else model.dtype
        self.k = torch.zeros(shape, dtype=store, device=model.device)
        self.v = torch.zeros(shape, dtype=store, device=model.device)
        if kv_dtype == "int8":
            self.k_scale = torch.ones(shape[:-1], dtype=torch.float16, device=model.device)
            self.v_scale = torch.ones(shape[:-1], dtype=torch.float16, device=model.device)

    @property
    def nbytes(self) -> int:
        """Bytes of the whole pool, scales included."""
        extra = self.k_scale.nbytes + self.v_scale.nbytes if self.kv_dtype == "int8" else 0
        return self.k.nbytes + self.v.nbytes + extra

    @property
    def bytes_per_block(self) -> int:
        return self.nbytes // self.allocator.num_blocks

    def copy_blocks(self, copies: Sequence[tuple[int, int]]) -> None:
        """Copy block src to block dst in every layer (copy on write of a shared block)."""
        s = self.block_size
        tensors = [self.k, self.v] + ([self.k_scale, self.v_scale] if self.kv_dtype else [])
        for src, dst in copies:
            for t in tensors:
                t[:, :, dst * s:(dst + 1) * s] = t[:, :, src * s:(src + 1) * s]

    def view(self, seq_ids: Sequence[int], starts: Sequence[int], tokens: int) -> PagedView:
        """The rows `seq_ids`, each writing `tokens` new tokens at its own start."""
        return PagedView(self, seq_ids, starts, tokens)


class PagedView:
    """What the model's attention calls `update` on for one forward pass (see the module).

    Row b writes positions starts[b] .. starts[b] + tokens - 1 and reads 0 .. length - 1,
    length = max(starts) + tokens, gathered as whole blocks; a shorter row's extra positions
    read whatever its last block (or block 0, past its table) holds, which the model masks.
    The index tensors are built once, on the host, for all layers.
    """

    def __init__(self, cache: PagedKVCache, seq_ids: Sequence[int], starts: Sequence[int],
                 tokens: int) -> None:
        seq_ids, starts = [int(i) for i in seq_ids], [int(p) for p in starts]
        if not seq_ids or len(starts) != len(seq_ids):
            raise ValueError(f"seq_ids and starts must be non-empty and of one length, got "
                             f"{len(seq_ids)} and {len(starts)}")
        check_positive("tokens", tokens, integer=True)
        for i, p in zip(seq_ids, starts):
            check_non_negative("starts", p, integer=True)
            have = cache.allocator.tokens.get(i)
            if have is None or p + tokens > have:
                raise ValueError(f"sequence {i} holds {have} tokens, fewer than "
                                 f"{p} + {tokens}: allocate or append first")
        self.cache, self.tokens = cache, int(tokens)
        self.length = max(starts) + self.tokens
        s, B = cache.block_size, len(seq_ids)
        blocks = blocks_needed(self.length, s)
        table = torch.zeros(B, blocks, dtype=torch.int64)   # block 0 past a row's own blocks
        for b, i in enumerate(seq_ids):
            own = cache.allocator.tables[i][:blocks]
            table[b, :len(own)] = torch.tensor(own, dtype=torch.int64)
        new = torch.tensor(starts)[:, None] + torch.arange(self.tokens)  # (B, T) positions
        write = table.gather(1, new // s) * s + new % s                  # their pool slots
        self.write_index = write.flatten().to(cache.k.device)
        # block (head h, table[b, j]) of the pool viewed as (heads * num_blocks, block, ...),
        # in (b, h, j) order: the gather comes out as (B, heads, length) with no second copy
        heads, pool_blocks = cache.k.shape[1], cache.allocator.num_blocks
        read = torch.arange(heads)[None, :, None] * pool_blocks + table[:, None, :]
        self.read_blocks = read.flatten().to(cache.k.device)
        self.batch, self.blocks = B, blocks

    def update(self, layer_index: int, start_pos: int | torch.Tensor, k: torch.Tensor,
               v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (B, kv_heads, T, d_head) into the rows' blocks; return K, V (B, kv_heads,
        length, d_head). start_pos is the model's; the view's own starts place the tokens."""
        B, H, T, D = k.shape
        if B != self.batch or T != self.tokens:
            raise ValueError(f"k must be ({self.batch}, heads, {self.tokens}, d_head), got "
                             f"{tuple(k.shape)}")
        c = self.cache
        out = []
        for new, store, scale in ((k, c.k, getattr(c, "k_scale", None)),
                                  (v, c.v, getattr(c, "v_scale", None))):
            rows = new.transpose(0, 1).reshape(H, B * T, D)
            if scale is None:
                store[layer_index].index_copy_(1, self.write_index, rows)
                got = self._gather(store[layer_index])
            else:
                q, s = quantize_int8(rows)
                store[layer_index].index_copy_(1, self.write_index, q)
                scale[layer_index].index_copy_(1, self.write_index, s)
                got = dequantize_int8(self._gather(store[layer_index]),
                                      self._gather(scale[layer_index]), k.dtype)
            out.append(got)
        return out[0], out[1]

    def _gather(self, pool: torch.Tensor) -> torch.Tensor:
        """Every row's blocks in table order from one layer's (heads, slots, ...) pool, as
        (B, heads, length, ...): one copy of whole blocks."""
        H, s, rest = pool.shape[0], self.cache.block_size, pool.shape[2:]
        blocks = pool.view(-1, s, *rest).index_select(0, self.read_blocks)
        return blocks.view(self.batch, H, self.blocks * s, *rest)[:, :, :self.length]


def paged_cache_for(model: Transformer, batch: int, tokens: int, block_size: int = 16,
                    kv_dtype: str | None = None) -> tuple[PagedKVCache, PagedView]:
    """A cache holding `batch` sequences (ids 0..batch-1) of `tokens` tokens, and the view
    that prefills all of them from position 0: `model(x, 0, view)` runs a whole window
    through the paged (or int8) cache, to compare with the model without one."""
    allocator = BlockAllocator(batch * blocks_needed(tokens, block_size), block_size)
    for i in range(batch):
        allocator.allocate(i, tokens)
    cache = PagedKVCache(model, allocator, kv_dtype)
    return cache, cache.view(range(batch), [0] * batch, tokens)


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
    _check_model(model)
    check_positive("samples", samples, integer=True)
    check_positive("max_new_tokens", max_new_tokens, integer=True)
    _check_sampling(temperature, top_k, model.config.vocab_size)
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


@dataclass(frozen=True)
class CacheEffect:
    """What storing the KV cache in another form changes, over `tokens` predicted positions.

    greedy_agreement: share of positions whose argmax is the exact cache's; loss_*: mean
    next-token loss (nats) with the exact and the changed cache; attention_error[l]: relative
    error ||y' - y|| / ||y|| of layer l's attention output."""

    greedy_agreement: float
    loss_exact_nats: float
    loss_changed_nats: float
    attention_error: tuple[float, ...]
    tokens: int


@torch.inference_mode()
def kv_cache_effect(model: Transformer, tokens: torch.Tensor, kv_dtype: str = "int8",
                    seq_len: int = 128, max_windows: int = 8, block_size: int = 16) -> CacheEffect:
    """Run windows of `tokens` through the model twice, with an exact paged cache and one in
    `kv_dtype`, every position attending to the stored keys and values (as decode would)."""
    from .trained.evaluate import windows
    win = windows(tokens, seq_len, max_windows).to(model.device)
    x, target = win[:, :-1], win[:, 1:]
    outputs, logits = {}, {}
    for kind in (None, kv_dtype):
        captured: list[torch.Tensor] = []
        hooks = [layer.attention.register_forward_hook(
            lambda _m, _i, out, store=captured: store.append(out.float()))
            for layer in model.layers]
        with removed_after(hooks):
            _, view = paged_cache_for(model, len(x), seq_len, block_size, kind)
            logits[kind] = model(x, 0, view).float()
        outputs[kind] = captured
    exact, changed = logits[None], logits[kv_dtype]
    errors = tuple(float((b - a).norm() / a.norm()) for a, b in zip(outputs[None],
                                                                     outputs[kv_dtype]))

    def loss(lg: torch.Tensor) -> float:
        return float(torch.nn.functional.cross_entropy(lg.reshape(-1, lg.shape[-1]),
                                                       target.reshape(-1)))

    agree = float((exact.argmax(-1) == changed.argmax(-1)).float().mean())
    return CacheEffect(agree, loss(exact), loss(changed), errors, target.numel())
