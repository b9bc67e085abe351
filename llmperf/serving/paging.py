"""Paged KV memory, after vLLM's PagedAttention (Kwon et al., "Efficient Memory Management
for Large Language Model Serving with PagedAttention", SOSP 2023, arXiv 2309.06180).

The cache is cut into blocks of `block_size` tokens. A sequence owns a block table, the list
of its blocks in order; token t of the sequence lives in block table[t // block_size] at
offset t % block_size. Blocks are taken from a free list as tokens arrive and go back when
the sequence leaves, so a sequence of n tokens holds ceil(n / block_size) blocks and wastes
at most block_size - 1 slots, all in its last block (internal fragmentation).

Sequences may share blocks (a common prompt prefix, or parallel samples of one prompt):
`fork` gives a child the parent's table and counts a reference on every block. A block is
freed when its last reference goes. Appending to a sequence whose last block is shared and
not full copies that block first (copy on write): `append` returns the (source,
destination) copies a cache must perform before writing.

Torch-free: the block arithmetic below is what the chapter and the exercises compute.
"""
from __future__ import annotations

from heapq import heappop, heappush

from ..units import check_non_negative, check_positive


def blocks_needed(tokens: int, block_size: int) -> int:
    """Blocks that hold `tokens` tokens: ceil(tokens / block_size) (0 for 0 tokens)."""
    check_non_negative("tokens", tokens, integer=True)
    check_positive("block_size", block_size, integer=True)
    return -(-int(tokens) // int(block_size))


def internal_fragmentation(tokens: int, block_size: int) -> int:
    """Slots held but empty in the last block: blocks_needed * block_size - tokens."""
    return blocks_needed(tokens, block_size) * int(block_size) - int(tokens)


def reserved_requests_that_fit(capacity_tokens: int, reserve_tokens: int) -> int:
    """Requests that fit when each reserves `reserve_tokens` slots: floor(capacity / reserve)."""
    check_non_negative("capacity_tokens", capacity_tokens, integer=True)
    check_positive("reserve_tokens", reserve_tokens, integer=True)
    return int(capacity_tokens) // int(reserve_tokens)


def paged_requests_that_fit(capacity_tokens: int, tokens: int, block_size: int) -> int:
    """Requests of `tokens` tokens that fit in floor(capacity / block_size) blocks, each
    holding blocks_needed(tokens, block_size) of them."""
    check_non_negative("capacity_tokens", capacity_tokens, integer=True)
    check_positive("tokens", tokens, integer=True)
    check_positive("block_size", block_size, integer=True)
    return (int(capacity_tokens) // int(block_size)) // blocks_needed(tokens, block_size)


class OutOfBlocks(RuntimeError):
    """The free list cannot supply the blocks asked for (check `can_append` first)."""


class BlockAllocator:
    """Block tables over a pool of `num_blocks` blocks of `block_size` tokens (None: unlimited).

    Blocks are numbered 0 .. num_blocks - 1 and handed out lowest first (the free list is a
    heap: taking or returning a block costs O(log free), never a sort). Every sequence id
    has a table and a token count; `refcount[b]` counts the tables holding block b.

    The public methods check their arguments; `_new_table`, `_add_block` and `_free_table`
    do not: they serve the paged memory policy's hot path (`llmperf.serving.memory`), whose
    requests were checked once, where the run began.
    """

    def __init__(self, num_blocks: int | None, block_size: int = 16) -> None:
        if num_blocks is not None:
            check_positive("num_blocks", num_blocks, integer=True)
        check_positive("block_size", block_size, integer=True)
        self.num_blocks, self.block_size = num_blocks, int(block_size)
        self._free: list[int] = list(range(num_blocks or 0))  # a heap: _free[0] is the lowest
        self._next_new = num_blocks or 0  # unlimited pools mint new ids past the end
        self.refcount: dict[int, int] = {}
        self.tables: dict[int, list[int]] = {}
        self.tokens: dict[int, int] = {}
        self.peak_blocks = 0

    @property
    def free_blocks(self) -> int | None:
        return None if self.num_blocks is None else len(self._free)

    @property
    def used_blocks(self) -> int:
        """Blocks held by at least one sequence."""
        return len(self.refcount)

    def _available(self) -> int:
        """Blocks a table can take now (a bounded pool)."""
        return len(self._free)

    def _take(self, n: int) -> list[int]:
        """n blocks off the free list, lowest first; OutOfBlocks (no change) if too few."""
        if self.num_blocks is not None and self._available() < n:
            raise OutOfBlocks(f"{n} blocks needed, {self._available()} free")
        blocks = [heappop(self._free) if self._free else self._mint() for _ in range(n)]
        for block in blocks:
            self.refcount[block] = 1
        self.peak_blocks = max(self.peak_blocks, len(self.refcount))
        return blocks

    def _mint(self) -> int:
        self._next_new += 1
        return self._next_new - 1

    def _drop(self, block: int) -> None:
        self.refcount[block] -= 1
        if self.refcount[block] == 0:
            del self.refcount[block]
            heappush(self._free, block)

    def _check_id(self, seq_id: int, exists: bool) -> None:
        if (seq_id in self.tables) != exists:
            state = "has no" if exists else "already has a"
            raise ValueError(f"seq_id {seq_id!r} {state} block table")

    def _blocks_to_append(self, seq_id: int, tokens: int) -> int:
        have, table, size = self.tokens[seq_id], self.tables[seq_id], self.block_size
        new = -(-(have + tokens) // size) - len(table)
        return new + (have % size != 0 and tokens > 0 and self.refcount[table[-1]] > 1)

    def blocks_to_append(self, seq_id: int, tokens: int = 1) -> int:
        """New blocks that appending `tokens` tokens to `seq_id` takes, copy on write included."""
        self._check_id(seq_id, True)
        check_non_negative("tokens", tokens, integer=True)
        return self._blocks_to_append(seq_id, int(tokens))

    def can_append(self, seq_id: int, tokens: int = 1) -> bool:
        return (self.num_blocks is None
                or self.blocks_to_append(seq_id, tokens) <= self._available())

    def can_allocate(self, tokens: int) -> bool:
        need = blocks_needed(tokens, self.block_size)
        return self.num_blocks is None or need <= self._available()

    def allocate(self, seq_id: int, tokens: int) -> list[int]:
        """A new table for `seq_id` holding `tokens` tokens; OutOfBlocks if they do not fit."""
        self._check_id(seq_id, False)
        check_non_negative("tokens", tokens, integer=True)
        self._new_table(seq_id, int(tokens))
        return list(self.tables[seq_id])

    def _new_table(self, seq_id: int, tokens: int) -> None:
        self.tables[seq_id] = self._take(-(-tokens // self.block_size))
        self.tokens[seq_id] = tokens

    def append(self, seq_id: int, tokens: int = 1) -> list[tuple[int, int]]:
        """Grow `seq_id` by `tokens` tokens; return the (source, destination) block copies
        made by copy on write. OutOfBlocks (and no change) if the blocks do not fit."""
        self._check_id(seq_id, True)
        check_non_negative("tokens", tokens, integer=True)
        return self._grow_table(seq_id, int(tokens))

    def _grow_table(self, seq_id: int, tokens: int) -> list[tuple[int, int]]:
        need = self._blocks_to_append(seq_id, tokens)
        if self.num_blocks is not None and need > self._available():
            raise OutOfBlocks(f"{need} blocks needed, {self._available()} free")
        table, copies = self.tables[seq_id], []
        have = self.tokens[seq_id]
        if need > -(-(have + tokens) // self.block_size) - len(table):  # copy on write
            shared = table[-1]
            table[-1] = self._take(1)[0]
            self._drop(shared)
            copies.append((shared, table[-1]))
            need -= 1
        table += self._take(need)
        self.tokens[seq_id] = have + tokens
        return copies

    def _add_block(self, seq_id: int) -> bool:
        """One more block at the end of `seq_id`'s table, its count growing by a whole block;
        False (no change) if none is free. Unchecked, for a caller whose sequence claims
        whole blocks, so no partial last block is ever shared (no copy on write)."""
        free = self._free
        if free:
            block = heappop(free)
        elif self.num_blocks is None:
            block = self._mint()
        else:
            return False
        self.refcount[block] = 1
        self.tables[seq_id].append(block)
        self.tokens[seq_id] += self.block_size
        if len(self.refcount) > self.peak_blocks:
            self.peak_blocks = len(self.refcount)
        return True

    def fork(self, parent_id: int, child_id: int) -> None:
        """Give `child_id` the parent's blocks and token count, sharing every block."""
        self._check_id(parent_id, True)
        self._check_id(child_id, False)
        self.tables[child_id] = list(self.tables[parent_id])
        self.tokens[child_id] = self.tokens[parent_id]
        for block in self.tables[child_id]:
            self.refcount[block] += 1

    def free(self, seq_id: int) -> None:
        """Drop `seq_id`'s table; blocks no other table holds return to the free list."""
        self._check_id(seq_id, True)
        self._free_table(seq_id)

    def _free_table(self, seq_id: int) -> None:
        for block in self.tables.pop(seq_id):
            self._drop(block)
        del self.tokens[seq_id]

    def check(self) -> None:
        """AssertionError unless every reference count equals the tables holding the block,
        none is below 1, and no block is both free and held."""
        counts: dict[int, int] = {}
        for table in self.tables.values():
            for block in table:
                counts[block] = counts.get(block, 0) + 1
        assert counts == self.refcount, (counts, self.refcount)
        assert all(c >= 1 for c in self.refcount.values())
        assert not set(self._free) & set(self.refcount)
        for seq_id, table in self.tables.items():
            assert len(table) == blocks_needed(self.tokens[seq_id], self.block_size)


def kv_utilization(used_tokens: float, held_tokens: float) -> float:
    """Share of held KV slots that hold a token: used / held (1.0 when nothing is held)."""
    check_non_negative("used_tokens", used_tokens)
    check_non_negative("held_tokens", held_tokens)
    if used_tokens > held_tokens:
        raise ValueError(f"used_tokens ({used_tokens}) must be <= held_tokens ({held_tokens})")
    return 1.0 if held_tokens == 0 else used_tokens / held_tokens


def shared_sampling_blocks(prompt_tokens: int, output_tokens: int, samples: int,
                           block_size: int) -> tuple[int, int]:
    """Blocks held at the end of `samples` parallel samples of one prompt: (with sharing,
    without). Run on a `BlockAllocator`: the prompt is cached once and forked, then every
    sample appends its own output_tokens - 1 cached tokens (copy on write in the last
    prompt block); without sharing each sample holds its own copy of the prompt."""
    check_positive("prompt_tokens", prompt_tokens, integer=True)
    check_positive("output_tokens", output_tokens, integer=True)
    check_positive("samples", samples, integer=True)
    shared = BlockAllocator(None, block_size)
    shared.allocate(0, prompt_tokens)
    for i in range(1, samples):
        shared.fork(0, i)
    for i in range(samples):
        shared.append(i, output_tokens - 1)
    alone = samples * blocks_needed(prompt_tokens + output_tokens - 1, block_size)
    return shared.used_blocks, alone


def shared_prefix_blocks(prefix_tokens: int, own_tokens: list[int],
                         block_size: int) -> tuple[int, int]:
    """Blocks held by requests that all begin with the same `prefix_tokens` tokens (a system
    prompt), request i then caching own_tokens[i] tokens of its own: (with sharing, without).
    Run on a `BlockAllocator`: the prefix is cached once and kept; each request forks it and
    appends its own tokens (copy on write of the prefix's partly filled last block)."""
    check_positive("prefix_tokens", prefix_tokens, integer=True)
    if not own_tokens:
        raise ValueError("own_tokens must list at least one request's own tokens")
    shared = BlockAllocator(None, block_size)
    shared.allocate("prefix", prefix_tokens)
    for i, n in enumerate(own_tokens):
        check_non_negative("own_tokens", n, integer=True)
        shared.fork("prefix", i)
        shared.append(i, n)
    alone = sum(blocks_needed(prefix_tokens + n, block_size) for n in own_tokens)
    return shared.used_blocks, alone

