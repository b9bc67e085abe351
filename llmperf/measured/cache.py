"""Every KV cache of the reference model: contiguous, paged, and paged in int8.

`KVCache` holds each layer's keys and values in two buffers allocated once, one row (slot) per
sequence; `SlotView` lets a padded batch address some of its rows, each at its own position
(the engine itself reads each row's own context through `llmperf.measured.varlen.RaggedBatch`).

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
read back as q * scale, by the weights' quantizer (`llmperf.measured.quant.quantize_groups`,
scale 0 for an all-zero vector). Bytes per token and head: d_head + 2 for K and for V, against
2 d_head in fp16/bf16 and 4 d_head in fp32. The rounding error of each element is at most
scale / 2 (plus the scale's own fp16 rounding, relative 2^-11).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from ..serving.paging import BlockAllocator, blocks_needed
from ..units import check_non_negative, check_positive
from .model import Transformer, check_model
from .quant import dequantize_groups, quantize_groups

KV_DTYPES = (None, "int8")
KV_SCALE_DTYPE = torch.float16  # one scale per token, head, and K or V


class PagedKVCache:
    """A pool of KV blocks for `model`, shared by the sequences of `allocator`'s tables."""

    layout = "paged"  # how a RaggedBatch finds a token's slot: through the block tables

    def __init__(self, model: Transformer, allocator: BlockAllocator,
                 kv_dtype: str | None = None) -> None:
        check_model(model)
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
            # an unwritten slot reads as an all-zero vector: codes 0, scale 0
            self.k_scale = torch.zeros(shape[:-1], dtype=KV_SCALE_DTYPE, device=model.device)
            self.v_scale = torch.zeros(shape[:-1], dtype=KV_SCALE_DTYPE, device=model.device)

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
                q, s = quantize_groups(rows, 8, KV_SCALE_DTYPE)
                store[layer_index].index_copy_(1, self.write_index, q)
                scale[layer_index].index_copy_(1, self.write_index, s)
                got = dequantize_groups(self._gather(store[layer_index]),
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


class KVCache:
    """Keys and values of every layer's past tokens, in two buffers allocated once.

    k and v have shape (layers, batch, kv_heads, max_seq_len, d_head), in the model's
    dtype and on its device.
    """

    layout = "rows"  # how a RaggedBatch finds a token's slot: row seq, its position

    def __init__(self, model: Transformer, batch: int = 1, max_seq_len: int | None = None) -> None:
        check_model(model)
        check_positive("batch", batch, integer=True)
        max_seq_len = model.max_seq_len if max_seq_len is None else max_seq_len
        check_positive("max_seq_len", max_seq_len, integer=True)
        c = model.config
        self.batch, self.max_seq_len = int(batch), int(max_seq_len)
        shape = (c.n_layers, self.batch, c.n_kv_heads, self.max_seq_len, c.d_head)
        self.k = torch.zeros(shape, dtype=model.dtype, device=model.device)
        self.v = torch.zeros(shape, dtype=model.dtype, device=model.device)

    def rollback(self, length: int) -> None:
        """Mark positions >= length stale (a speculative step's rejected drafts). No data moves:
        the next forward pass writes its own tokens there before attention reads them, since
        `update` writes first and then returns positions 0..end-1. (Tests poison them here.)"""

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
