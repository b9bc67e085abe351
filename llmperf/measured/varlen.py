"""A ragged ("varlen") batch: one forward pass over the tokens of several sequences.

A serving iteration holds prompt chunks of some requests and one new token of others. Instead
of padding every row to the longest one, the iteration's tokens are laid end to end, N tokens
in all, each with its own position, as FlashAttention's varlen interface and vLLM do. A
`Piece` (seq, start, tokens) says that a sequence writes `tokens` new tokens at positions
start .. start + tokens - 1, and that its queries attend, causally, to its own positions
0 .. start + tokens - 1: its own keys, no other sequence's, no padding.

`RaggedBatch(cache, pieces)` describes one such pass over a KV store:

- a `PagedKVCache`: seq is the allocator's sequence id; token t of it lives in pool slot
  table[t // block_size] * block_size + t % block_size;
- a `KVCache` with one row (slot) per sequence: seq is the row; token t lives at (row, t).

It computes on the host, once for every layer, where each new token's K and V go
(`write`) and where each piece's keys are read from (`context`); the model
(`llmperf.measured.model.Transformer`) does the rest:

    batch = RaggedBatch(cache, [(seq, start, n), ...])
    logits = model(tokens, batch.positions, batch, last_only=True)  # (pieces, vocab)

What reading a piece's keys costs (`decode`, how decode pieces attend):

- "per_piece" (the default, plain PyTorch, no compilation): every piece attends on its own. A
  row of a `KVCache` is read in place (a view, no copy); a paged sequence whose blocks lie one
  after another in the pool is read in place too; otherwise its own blocks are gathered once
  per layer into a new tensor (a copy of its own context, rounded up to whole blocks, never
  another sequence's, never padded). A paged-attention kernel would read scattered blocks in
  place; PyTorch ships none for the CPU. Prompt chunks always attend this way.
- "compiled": every decode piece (one token) at once, in `decode_attention`, a
  gather-and-attend written in PyTorch and compiled by `torch.compile` (Inductor), which fuses
  the indexed reads into its loops: no key or value is copied, paged or not. The first call
  in a process compiles it (seconds), so it is an option, not the default.
"""
from __future__ import annotations

import functools
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from ..serving.paging import blocks_needed
from .quant import dequantize_groups, quantize_groups


class KVStore(Protocol):
    """A `llmperf.measured.cache.KVCache` (layout "rows") or `PagedKVCache` ("paged"), named
    by what this module reads of them, since the caches import the model, which imports
    this module."""

    layout: str
    k: torch.Tensor
    v: torch.Tensor

# per_piece: each decode piece attends alone (eager, read as `context` says); compiled: all
# decode pieces in one compiled gather-and-attend that reads their keys in place
DECODE_KERNELS = ("per_piece", "compiled")


@dataclass(frozen=True)
class Piece:
    """One sequence's share of a ragged batch: `tokens` new tokens at positions start ..
    start + tokens - 1, laid at offsets offset .. offset + tokens - 1 of the batch."""

    seq: int
    start: int
    tokens: int
    offset: int

    @property
    def end(self) -> int:
        """Positions this piece's last query attends to: 0 .. end - 1."""
        return self.start + self.tokens

    @property
    def rows(self) -> slice:
        """Its tokens in the flattened batch."""
        return slice(self.offset, self.offset + self.tokens)


def _pieces(pieces: Sequence) -> list[Piece]:
    """Checked `Piece`s, laid end to end in the order given."""
    if isinstance(pieces, (str, bytes)) or not isinstance(pieces, Sequence) or not pieces:
        raise ValueError("pieces must be a non-empty sequence of (seq, start, tokens), "
                         f"got {pieces!r}")
    out, offset = [], 0
    for piece in pieces:
        try:
            seq, start, tokens = (operator.index(x) for x in piece)
        except (TypeError, ValueError):
            raise ValueError(f"pieces must hold (seq, start, tokens) ints, got {piece!r}"
                             ) from None
        if start < 0 or tokens < 1:
            raise ValueError(f"pieces must have start >= 0 and tokens >= 1, got {piece!r}")
        out.append(Piece(seq, start, tokens, offset))
        offset += tokens
    seqs = [p.seq for p in out]
    if len(set(seqs)) < len(seqs):
        raise ValueError(f"pieces must name each seq once (two pieces of one sequence would "
                         f"write overlapping positions), got seqs {seqs}")
    return out


class RaggedBatch:
    """Where the tokens of one ragged forward pass write and read their keys and values.

    `positions` (N,) is each token's position (the model's RoPE angle); `keys_attended[i]`
    is the number of keys piece i's last query attends to (start + tokens); `last_rows` (S,)
    the batch index of each piece's last token (whose logits pick its next token).
    """

    def __init__(self, cache: KVStore, pieces: Sequence[tuple[int, int, int]],
                 decode: str = "per_piece") -> None:
        if decode not in DECODE_KERNELS:
            raise ValueError(f"decode must be one of {DECODE_KERNELS}, got {decode!r}")
        self.pieces = _pieces(pieces)
        # the store's own `layout` says which it is (no import of the caches: they import
        # the model, which imports this module)
        layout = getattr(cache, "layout", None)
        self.cache, self.paged = cache, layout == "paged"
        if layout not in ("paged", "rows"):
            raise ValueError("cache must be a llmperf.measured.cache.PagedKVCache or KVCache, "
                             f"got {type(cache).__name__}")
        device = cache.k.device
        self.num_tokens = sum(p.tokens for p in self.pieces)
        self.keys_attended = [p.end for p in self.pieces]
        self.positions = torch.cat([torch.arange(p.start, p.end) for p in self.pieces]).to(device)
        self.last_rows = torch.tensor([p.offset + p.tokens - 1 for p in self.pieces],
                                      device=device)
        self.masks = [_chunk_mask(p, device) for p in self.pieces]
        if self.paged:
            self._index_pool(cache)
        else:
            self._index_rows(cache)
        fused = [i for i, p in enumerate(self.pieces) if p.tokens == 1 and decode == "compiled"]
        self.one_by_one = [i for i in range(len(self.pieces)) if i not in set(fused)]
        self.fused = _FusedDecode(self, fused) if fused else None

    def _index_pool(self, cache: KVStore) -> None:
        """Pool slots of the new tokens, and each piece's blocks (a slice if consecutive)."""
        s, alloc = cache.block_size, cache.allocator
        write, self.reads = [], []
        for p in self.pieces:
            have = alloc.tokens.get(p.seq)
            if have is None or p.end > have:
                raise ValueError(f"pieces: sequence {p.seq} holds {have} tokens in the "
                                 f"allocator, fewer than {p.start} + {p.tokens}: allocate "
                                 f"or append first")
            table = alloc.tables[p.seq][:blocks_needed(p.end, s)]
            write += [table[t // s] * s + t % s for t in range(p.start, p.end)]
            consecutive = table == list(range(table[0], table[0] + len(table)))
            self.reads.append(slice(table[0] * s, table[0] * s + p.end) if consecutive
                              else torch.tensor(table, device=cache.k.device))
        self.write_slots = torch.tensor(write, device=cache.k.device)

    def _index_rows(self, cache: KVStore) -> None:
        """Row and position of each new token in a cache with one row per sequence."""
        for p in self.pieces:
            if not 0 <= p.seq < cache.batch:
                raise ValueError(f"pieces: seq must be a row of the KVCache, in [0, "
                                 f"{cache.batch}), got {p.seq}")
            if p.end > cache.max_seq_len:
                raise ValueError(f"pieces: seq {p.seq} writes up to position {p.end - 1}, "
                                 f"past the cache's max_seq_len={cache.max_seq_len}")
        self.write_rows = torch.cat([torch.full((p.tokens,), p.seq) for p in self.pieces]
                                    ).to(cache.k.device)

    def write(self, layer_index: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store the new tokens' k, v (kv_heads, N, d_head) of one layer in their slots."""
        c = self.cache
        if not self.paged:  # row seq, position p <- token (values as (N, kv_heads, d_head))
            c.k[layer_index][self.write_rows, :, self.positions] = k.transpose(0, 1)
            c.v[layer_index][self.write_rows, :, self.positions] = v.transpose(0, 1)
            return
        for new, store, scale in ((k, c.k, getattr(c, "k_scale", None)),
                                  (v, c.v, getattr(c, "v_scale", None))):
            if scale is None:
                store[layer_index].index_copy_(1, self.write_slots, new)
            else:
                codes, scales = quantize_groups(new, 8, scale.dtype)
                store[layer_index].index_copy_(1, self.write_slots, codes)
                scale[layer_index].index_copy_(1, self.write_slots, scales)

    def context(self, layer_index: int, i: int,
                dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Piece i's keys and values, positions 0 .. end - 1: (kv_heads, end, d_head)."""
        p, c = self.pieces[i], self.cache
        if not self.paged:  # a view of the row
            return c.k[layer_index, p.seq, :, :p.end], c.v[layer_index, p.seq, :, :p.end]
        if c.kv_dtype is None:
            return self._read(c.k[layer_index], i), self._read(c.v[layer_index], i)
        return (dequantize_groups(self._read(c.k[layer_index], i),
                                  self._read(c.k_scale[layer_index], i), dtype),
                dequantize_groups(self._read(c.v[layer_index], i),
                                  self._read(c.v_scale[layer_index], i), dtype))

    def attend_decodes(self, layer_index: int, q: torch.Tensor) -> torch.Tensor:
        """Attention of the fused decode pieces, q (R, kv_heads, G, d_head) (one query each,
        G query heads per KV head), reading their keys in place: (R, kv_heads, G, d_head)."""
        c, f = self.cache, self.fused
        if self.paged:
            stores = [c.k[layer_index], c.v[layer_index]]
            if c.kv_dtype is not None:
                stores += [c.k_scale[layer_index], c.v_scale[layer_index]]
        else:  # (kv_heads, rows, positions, d_head): a view
            stores = [c.k[layer_index].transpose(0, 1), c.v[layer_index].transpose(0, 1)]
        return compiled_decode_attention()(q, f.where, f.owner, *stores)

    def _read(self, pool: torch.Tensor, i: int) -> torch.Tensor:
        """Piece i's positions from one layer's (kv_heads, slots, ...) pool: a slice of it,
        or its own blocks gathered in table order (a copy)."""
        where, end = self.reads[i], self.pieces[i].end
        if isinstance(where, slice):
            return pool[:, where]
        H, s, rest = pool.shape[0], self.cache.block_size, pool.shape[2:]
        blocks = pool.view(H, -1, s, *rest).index_select(1, where)
        return blocks.view(H, -1, *rest)[:, :end]


class _FusedDecode:
    """Where the keys of some decode pieces lie, end to end: key j is position pos[j] of piece
    owner[j], at index `where` of the store after its heads (a pool slot, or row and position)."""

    def __init__(self, batch: RaggedBatch, fused: list[int]) -> None:
        pieces = [batch.pieces[i] for i in fused]
        device = batch.positions.device
        ends = torch.tensor([p.end for p in pieces])
        self.rows = torch.tensor([p.offset for p in pieces], device=device)
        owner = torch.repeat_interleave(torch.arange(len(pieces)), ends)
        pos = torch.arange(int(ends.sum())) - (ends.cumsum(0) - ends)[owner]
        self.owner = owner.to(device)
        if batch.paged:
            s, tables = batch.cache.block_size, batch.cache.allocator.tables
            own = [tables[p.seq][:blocks_needed(p.end, s)] for p in pieces]
            first = torch.tensor([0] + [len(t) for t in own[:-1]]).cumsum(0)  # each row's 1st
            flat = torch.tensor([b for t in own for b in t])
            self.where = ((flat[first[owner] + pos // s] * s + pos % s).to(device),)
        else:
            self.where = (torch.tensor([p.seq for p in pieces])[owner].to(device), pos.to(device))


def decode_attention(q: torch.Tensor, where: tuple[torch.Tensor, ...], owner: torch.Tensor,
                     k_store: torch.Tensor, v_store: torch.Tensor,
                     k_scale: torch.Tensor | None = None,
                     v_scale: torch.Tensor | None = None) -> torch.Tensor:
    """Attention of R rows of one query each, q (R, Hkv, G, D), over keys read where they lie.

    k_store, v_store: (Hkv, ..., D) with index `where` (LongTensors (L,) for the dimensions
    after the heads) naming every row's keys end to end, key j belonging to row owner[j];
    int8 stores come with their scales (Hkv, ...). A score per key, a softmax per row (its max
    and its sum gathered by row), then each row's values weighted by it: (R, Hkv, G, D).

    In plain PyTorch this materialises each key's query, (Hkv, L, G, D), and is slow;
    compiled (`compiled_decode_attention`) Inductor fuses the indexed reads into its loops, so
    no key or value is copied: the work of a paged-attention kernel, written as PyTorch.
    """
    R, Hkv, G, D = q.shape
    keys, values = k_store[(slice(None), *where)], v_store[(slice(None), *where)]  # (Hkv, L, D)
    if k_scale is not None:
        keys = keys.float() * k_scale[(slice(None), *where)].float()[..., None]
        values = values.float() * v_scale[(slice(None), *where)].float()[..., None]
    q_of_key = q.transpose(0, 1)[:, owner]                                    # (Hkv, L, G, D)
    scores = (q_of_key.float() * keys.float()[:, :, None]).sum(-1) * (1.0 / math.sqrt(D))
    by_row = owner[None, :, None].expand(Hkv, -1, G)                          # (Hkv, L, G)
    row_max = scores.new_full((Hkv, R, G), -math.inf).scatter_reduce(1, by_row, scores, "amax")
    weights = (scores - row_max[:, owner]).exp()
    total = scores.new_zeros(Hkv, R, G).index_add(1, owner, weights)
    out = scores.new_zeros(Hkv, R, G, D).index_add(
        1, owner, weights[..., None] * values.float()[:, :, None])
    return (out / total[..., None]).to(q.dtype).transpose(0, 1)


@functools.cache
def compiled_decode_attention():
    """`decode_attention` compiled once per process for every shape (dynamic), by Inductor."""
    return torch.compile(decode_attention, dynamic=True)


def _chunk_mask(piece: Piece, device: torch.device) -> torch.Tensor | None:
    """Which of its keys each query of a chunk sees: query t sees 0 .. start + t, (T, end);
    None where SDPA's own causal mask says the same (no cached tokens) or one query sees all."""
    if piece.start == 0 or piece.tokens == 1:
        return None
    return torch.ones(piece.tokens, piece.end, dtype=torch.bool, device=device).tril(
        diagonal=piece.start)
