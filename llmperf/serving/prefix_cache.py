"""Automatic prefix caching over paged KV memory (after vLLM's automatic prefix caching).

A full block of a prompt is identified by its tokens and by everything before them (the
content of the prefix it continues); `PrefixCachingAllocator` keeps such blocks after their
sequences leave, hands them to a new sequence whose prompt begins alike, and evicts the least
recently used when it needs blocks. Torch-free.
"""
from __future__ import annotations

from collections import OrderedDict
from heapq import heappop, heappush

from .paging import BlockAllocator, OutOfBlocks

BlockKey = tuple[int, tuple[int, ...]]  # (the content id of the prefix before it, its tokens)


class PrefixCachingAllocator(BlockAllocator):
    """A `BlockAllocator` that remembers the content of full blocks, after vLLM's automatic
    prefix caching (https://docs.vllm.ai/en/latest/design/prefix_caching/).

    A full block is known by its key: its tokens, and the content id of everything before
    it (-1 for the first block). `register` gives a computed block a content id, unique
    for the run, so a key names the whole prefix up to the block's end: the chain of
    vLLM's hash(parent hash, block tokens), held as exact dictionary keys, so that two
    different prefixes never share an entry (a bare 64-bit hash could collide).

    A cached block no table holds stays cached, and evictable: its KV remains until a
    block is needed and no free one is left, then the least recently released cached
    block is evicted and its key forgotten (which makes the blocks cached after it
    unreachable: a lookup walks the chain from the start). Free never-cached blocks go
    first. A table is released from its last block to its first, so a prefix's deepest
    blocks are evicted before its shared beginning. `refcount` and `used_blocks` count
    only blocks some table holds; `evictable_blocks` are the cached ones nobody holds,
    and `free_blocks` counts both (either can be taken).
    """

    def __init__(self, num_blocks: int | None, block_size: int = 16) -> None:
        super().__init__(num_blocks, block_size)
        self._cached: dict[BlockKey, tuple[int, int]] = {}  # key -> (block, content id)
        self._key_of: dict[int, BlockKey] = {}              # cached block -> its key
        self._evictable: OrderedDict[int, None] = OrderedDict()  # least recent first
        self._next_content_id = 0
        self.shared_refs = 0  # references beyond a block's first, summed over blocks
        self.evictions = 0

    @property
    def free_blocks(self) -> int | None:
        return None if self.num_blocks is None else len(self._free) + len(self._evictable)

    @property
    def evictable_blocks(self) -> int:
        return len(self._evictable)

    def _available(self) -> int:
        return len(self._free) + len(self._evictable)

    def _pop(self) -> int:
        """A block to fill: the lowest free one, else (an unlimited pool) a new one, else the
        least recent evictable one (evicted: its key forgotten). Memory is never needed in an
        unlimited pool, so it evicts nothing."""
        if self._free:
            return heappop(self._free)
        if self.num_blocks is None:
            return self._mint()
        if self._evictable:
            block = self._evictable.popitem(last=False)[0]
            del self._cached[self._key_of.pop(block)]
            self.evictions += 1
            return block
        return self._mint()

    def _take(self, n: int) -> list[int]:
        if self.num_blocks is not None and self._available() < n:
            raise OutOfBlocks(f"{n} blocks needed, {self._available()} free")
        blocks = [self._pop() for _ in range(n)]
        for block in blocks:
            self.refcount[block] = 1
        self.peak_blocks = max(self.peak_blocks, len(self.refcount))
        return blocks

    def _add_block(self, seq_id: int) -> bool:
        if self.num_blocks is not None and not self._available():
            return False
        block = self._pop()
        self.refcount[block] = 1
        self.tables[seq_id].append(block)
        self.tokens[seq_id] += self.block_size
        self.peak_blocks = max(self.peak_blocks, len(self.refcount))
        return True

    def _hold(self, block: int) -> None:
        """One more reference on `block`, a cached one taken back from eviction if idle."""
        if block in self.refcount:
            self.refcount[block] += 1
            self.shared_refs += 1
        else:
            del self._evictable[block]
            self.refcount[block] = 1

    def _drop(self, block: int) -> None:
        count = self.refcount[block] - 1
        if count:
            self.refcount[block] = count
            self.shared_refs -= 1
            return
        del self.refcount[block]
        if block in self._key_of:
            self._evictable[block] = None  # the most recent
        else:
            heappush(self._free, block)

    def _free_table(self, seq_id: int) -> None:
        for block in reversed(self.tables.pop(seq_id)):
            self._drop(block)
        del self.tokens[seq_id]

    def fork(self, parent_id: int, child_id: int) -> None:
        super().fork(parent_id, child_id)
        self.shared_refs += len(self.tables[child_id])

    def lookup(self, parent_id: int, tokens: tuple[int, ...]) -> tuple[int, int] | None:
        """(block, content id) of the cached block holding `tokens` after the prefix
        `parent_id` (-1: at the start), or None. Reads only: no recency, no reference."""
        return self._cached.get((parent_id, tokens))

    def register(self, block: int, parent_id: int, tokens: tuple[int, ...]) -> int:
        """Cache `block`, whose KV now holds `tokens` (a whole block) after the prefix
        `parent_id`; return the content id of that prefix-and-block. If another block
        already caches the same content, that one stays and `block` is left uncached."""
        key = (parent_id, tokens)
        entry = self._cached.get(key)
        if entry is not None:
            return entry[1]
        if block in self._key_of:
            raise ValueError(f"block {block} is already cached")
        content_id, self._next_content_id = self._next_content_id, self._next_content_id + 1
        self._cached[key] = (block, content_id)
        self._key_of[block] = key
        return content_id

    def _new_table_from(self, seq_id: int, prefix: list[int], tokens: int) -> None:
        """A table for `seq_id` of `tokens` tokens whose first blocks are the cached
        `prefix` (held, not copied), then new blocks. Unchecked, as `_new_table`."""
        for block in prefix:
            self._hold(block)
        rest = self._take(-(-tokens // self.block_size) - len(prefix))
        self.tables[seq_id] = [*prefix, *rest]
        self.tokens[seq_id] = tokens
        self.peak_blocks = max(self.peak_blocks, len(self.refcount))

    def check(self) -> None:
        """`BlockAllocator.check`, and: evictable blocks are cached, neither free nor held;
        shared_refs matches the reference counts."""
        super().check()
        idle = set(self._evictable)
        assert not idle & set(self._free) and not idle & set(self.refcount)
        assert idle <= set(self._key_of)
        assert all(self._cached[key][0] == block for block, key in self._key_of.items())
        assert self.shared_refs == sum(c - 1 for c in self.refcount.values())
