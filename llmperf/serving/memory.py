"""KV memory policies the scheduler admits, grows and releases requests against.

Both count memory in token slots (multiply by `ModelConfig.kv_bytes_per_token` for bytes)
and answer the same calls:

    can_ever_fit(request)            # could it run alone in the whole capacity? (the one check)
    fits(request, tokens)            # admit it now, its prefill caching `tokens` tokens?
    admit(request_id, request, tokens) -> int  # tokens already cached (prefix hits), else 0
    room(request_id) -> int | None   # cached tokens it can reach without asking for more
    grow(request_id, tokens) -> bool # room for `tokens` cached tokens? False: no change
    release(request_id)
    held_tokens                      # slots set aside

The scheduler asks `grow` only when a decode would pass `room`, so a policy is called a few
times per request, not once per token; it counts the tokens cached itself.

- `ReservationMemory`: at admission a request reserves slots for its whole length (its
  prompt plus output, known to the simulator, as an oracle would; or a fixed
  `reserve_tokens`, the maximum length a system without that knowledge must reserve: the
  Orca (Oracle) and Orca (Max) baselines of vLLM's Figure 2). It never grows, never preempts.
- `PagedMemory`: blocks of `block_size` slots from a `BlockAllocator`, taken as tokens
  arrive; `grow` fails when the free list is short, and the scheduler then preempts.
  With `prefix_caching=True` (after vLLM's automatic prefix caching) its full prompt
  blocks stay cached by content, and a request admitted later with the same prompt prefix
  reuses them: see `PagedMemory`.

A request caches at most prompt + output - 1 tokens: its last token is never fed back.
The constructors check their arguments; the calls above, made by the scheduler in its loop,
do not.
"""
from __future__ import annotations

from ..units import check_positive
from .paging import BlockAllocator
from .prefix_cache import PrefixCachingAllocator
from .requests import Request

MEMORY_POLICIES = ("reservation", "paged")


class _KVMemory:
    """What both policies share: the one test of whether a request can ever run."""

    max_request_tokens: int | None  # the longest total_tokens it can ever hold (None: any)

    def can_ever_fit(self, request: Request) -> bool:
        """Whether `request` fits the whole memory on its own (else it never runs)."""
        longest = self.max_request_tokens
        return longest is None or request.total_tokens <= longest

    def check_fit(self, request: Request, name: str = "request") -> None:
        """ValueError naming `name` unless `can_ever_fit(request)`."""
        if not self.can_ever_fit(request):
            raise ValueError(f"{name} needs {request.total_tokens} KV tokens (prompt + "
                             f"output), more than one request can hold with "
                             f"{self._limits()} (at most {self.max_request_tokens})")

    def _limits(self) -> str:
        raise NotImplementedError


class ReservationMemory(_KVMemory):
    """Slots reserved for the whole request at admission (see the module docstring).

    capacity_tokens None: unlimited. Each request reserves its total_tokens (its true length:
    an oracle); or, with reserve_tokens, every request reserves reserve_tokens (and one
    longer can never fit); or, with reserve_output_tokens, each reserves its prompt and that
    many output tokens (the cap a server knows, `max_tokens`, not the length it will reach).
    """

    def __init__(self, capacity_tokens: int | None = None,
                 reserve_tokens: int | None = None,
                 reserve_output_tokens: int | None = None) -> None:
        if capacity_tokens is not None:
            check_positive("kv_capacity_tokens", capacity_tokens, integer=True)
            capacity_tokens = int(capacity_tokens)
        if reserve_tokens is not None:
            check_positive("reserve_tokens", reserve_tokens, integer=True)
            reserve_tokens = int(reserve_tokens)
        if reserve_output_tokens is not None:
            check_positive("reserve_output_tokens", reserve_output_tokens, integer=True)
            if reserve_tokens is not None:
                raise ValueError("give reserve_tokens or reserve_output_tokens, not both")
            reserve_output_tokens = int(reserve_output_tokens)
        self.capacity_tokens, self.reserve_tokens = capacity_tokens, reserve_tokens
        self.reserve_output_tokens = reserve_output_tokens
        if reserve_tokens is None:
            self.max_request_tokens = capacity_tokens
        else:  # a reservation larger than the whole memory admits nobody
            fits = capacity_tokens is None or reserve_tokens <= capacity_tokens
            self.max_request_tokens = reserve_tokens if fits else 0
        self.held_tokens = 0
        self._held: dict[int, int] = {}

    def _limits(self) -> str:
        return (f"kv_capacity_tokens={self.capacity_tokens}, reserve_tokens="
                f"{self.reserve_tokens}, reserve_output_tokens={self.reserve_output_tokens}")

    def can_ever_fit(self, request: Request) -> bool:
        """Whether `request` fits the whole memory on its own, its true length and its
        reservation both (else it never runs)."""
        return super().can_ever_fit(request) and (
            self.capacity_tokens is None or self.reservation(request) <= self.capacity_tokens)

    def reservation(self, request: Request) -> int:
        """Slots `request` reserves at admission."""
        if self.reserve_tokens is not None:
            return self.reserve_tokens
        if self.reserve_output_tokens is not None:
            return request.prompt_tokens + max(self.reserve_output_tokens,
                                               request.output_tokens)
        return request.total_tokens

    def fits(self, request: Request, tokens: int | None = None) -> bool:
        return (self.capacity_tokens is None
                or self.held_tokens + self.reservation(request) <= self.capacity_tokens)

    def admit(self, request_id: int, request: Request, tokens: int | None = None) -> int:
        """Reserve the request's slots; 0: nothing of it is cached yet."""
        held = self._held[request_id] = self.reservation(request)
        self.held_tokens += held
        return 0

    def room(self, request_id: int) -> None:
        """None: the reservation holds every token the request will cache."""
        return None

    def grow(self, request_id: int, tokens: int) -> bool:
        return True

    def release(self, request_id: int) -> None:
        self.held_tokens -= self._held.pop(request_id)


class PagedMemory(_KVMemory):
    """Blocks of `block_size` slots, floor(capacity_tokens / block_size) of them (None:
    unlimited), allocated as tokens arrive. `allocator` holds every request's block table:
    `allocator.tables[request_id]`, its block ids in order (cached ones it shares included).

    A request claims whole blocks: its count in the allocator runs to the end of its last
    block (so `room` is that count, and a cache may write up to it), and grows a block at
    a time when a decode passes it.

    prefix_caching (after vLLM's automatic prefix caching, over a `PrefixCachingAllocator`):
    a full block of a prompt is known by its tokens and everything before it, and requests
    need their `Request.prompt_ids` for it (those without never hit, nor are cached).
    - Admission (`fits`, `admit`) reuses the cached blocks of the longest cached prefix of
      the tokens its prefill would cache, holding them (a reference each, no copy), and
      the prefill computes only the rest: `admit` returns the tokens hit. The hit stops at
      whole blocks strictly before the block holding the last position the prefill
      caches, so that position is computed (its logits yield the next token) and every
      position a request writes lies in a block of its own: no shared block is ever
      written, and no copy on write is needed. A prompt of 32 tokens in blocks of 16,
      wholly cached, hits 16 and recomputes tokens 16..31.
    - Only prompt blocks are cached (the tokens a request generates have no ids in the
      simulator; vLLM also caches full blocks of generated tokens): after a preemption, a
      request's recomputed prefill may hit its prompt's blocks, not its output's.
    - A block is cached once its KV has been computed (`computed`, which the scheduler
      calls when an iteration completes), so a request never hits a block that another
      is still prefilling: two requests admitted in the same iteration share nothing.
    - Cached blocks that no request holds stay until a block is needed and no free one is
      left, then the least recently released goes first; they count as free in `fits`,
      `grow` and `held_tokens` (a hit on one of them takes it off that count).
    `cached_prefix_tokens(request)` answers, without changing anything, how many prompt
    tokens a request would hit if admitted now.
    """

    def __init__(self, capacity_tokens: int | None = None, block_size: int = 16,
                 prefix_caching: bool = False) -> None:
        check_positive("block_size", block_size, integer=True)
        if capacity_tokens is not None:
            check_positive("kv_capacity_tokens", capacity_tokens, integer=True)
            if capacity_tokens < block_size:
                raise ValueError(f"kv_capacity_tokens ({capacity_tokens}) must hold at least "
                                 f"one block of block_size={block_size} tokens")
        if prefix_caching not in (True, False):
            raise ValueError(f"prefix_caching must be True or False, got {prefix_caching!r}")
        blocks = None if capacity_tokens is None else int(capacity_tokens) // int(block_size)
        self.capacity_tokens, self.block_size = capacity_tokens, int(block_size)
        self.prefix_caching = bool(prefix_caching)
        self.allocator = (PrefixCachingAllocator if prefix_caching
                          else BlockAllocator)(blocks, block_size)
        # it caches total_tokens - 1 tokens
        self.max_request_tokens = None if blocks is None else blocks * self.block_size + 1
        self._progress: dict[int, list[int]] = {}  # request id -> [blocks cached, last id]
        self._lookup: tuple = (None, 0, [], -1)    # fits' hit, for the admit that follows

    def _limits(self) -> str:
        return f"kv_capacity_tokens={self.capacity_tokens} in blocks of {self.block_size}"

    @property
    def held_tokens(self) -> int:
        """Slots of the blocks some request holds (idle cached blocks count as free)."""
        return len(self.allocator.refcount) * self.block_size

    @property
    def shared_tokens(self) -> int:
        """Slots counted more than once by requests that share cached blocks: one block's
        slots for each reference beyond its first (0 without prefix caching)."""
        return self.allocator.shared_refs * self.block_size if self.prefix_caching else 0

    def _whole_blocks(self, tokens: int) -> int:
        return -(-tokens // self.block_size) * self.block_size

    def fits(self, request: Request, tokens: int) -> bool:
        allocator = self.allocator
        if allocator.num_blocks is None:
            return True
        need = -(-tokens // self.block_size)
        if not self.prefix_caching:
            return need <= len(allocator._free)
        hits, parent = self._hits(request, tokens)
        self._lookup = (request, tokens, hits, parent)
        idle_hits = sum(block not in allocator.refcount for block in hits)
        return need - len(hits) <= allocator._available() - idle_hits

    def admit(self, request_id: int, request: Request, tokens: int) -> int:
        """Give the request blocks for `tokens` tokens; the tokens of them already cached
        (its prefix hit, a whole number of blocks; 0 without prefix caching)."""
        if not self.prefix_caching:
            self.allocator._new_table(request_id, self._whole_blocks(tokens))
            return 0
        last = self._lookup
        if last[0] is request and last[1] == tokens:
            hits, parent = last[2], last[3]
        else:
            hits, parent = self._hits(request, tokens)
        self._lookup = (None, 0, [], -1)
        self.allocator._new_table_from(request_id, hits, self._whole_blocks(tokens))
        if request.prompt_ids is not None:
            self._progress[request_id] = [len(hits), parent]
        return len(hits) * self.block_size

    def _hits(self, request: Request, tokens: int) -> tuple[list[int], int]:
        """The cached blocks a prefill of `tokens` tokens of `request` may reuse, in order,
        and the content id of the last (-1: none). At most the prompt's full blocks, and
        only blocks before the one holding position tokens - 1 (see the class docstring)."""
        ids = request.prompt_ids
        if ids is None:
            return [], -1
        size, lookup = self.block_size, self.allocator.lookup
        limit = min(len(ids), tokens - 1) // size
        hits, parent = [], -1
        for i in range(limit):
            entry = lookup(parent, ids[i * size:(i + 1) * size])
            if entry is None:
                break
            hits.append(entry[0])
            parent = entry[1]
        return hits, parent

    def cached_prefix_tokens(self, request: Request) -> int:
        """Prompt tokens `request` would find cached if admitted now (its first admission,
        whose prefill caches its prompt): a whole number of blocks, at most
        prompt_tokens - 1. Changes nothing. 0 without prefix caching or prompt_ids."""
        if not self.prefix_caching:
            return 0
        return len(self._hits(request, request.prompt_tokens)[0]) * self.block_size

    def computed(self, request_id: int, request: Request, tokens: int) -> None:
        """The request's first `tokens` tokens now hold their KV: cache its prompt's full
        blocks among them that are not cached yet (the scheduler calls this as each
        prefill chunk completes; nothing happens without prefix caching or prompt_ids)."""
        progress = self._progress.get(request_id)
        if progress is None:
            return
        self._lookup = (None, 0, [], -1)  # what is cached changes
        ids, size = request.prompt_ids, self.block_size
        done, parent = progress
        full = min(tokens, len(ids)) // size
        if done >= full:
            return
        table, register = self.allocator.tables[request_id], self.allocator.register
        for i in range(done, full):
            parent = register(table[i], parent, ids[i * size:(i + 1) * size])
        progress[0], progress[1] = full, parent

    def room(self, request_id: int) -> int:
        return self.allocator.tokens[request_id]

    def grow(self, request_id: int, tokens: int) -> bool:
        """Whole blocks for `tokens` cached tokens; False (no change) if too few are free."""
        allocator = self.allocator
        need = -(-(tokens - allocator.tokens[request_id]) // self.block_size)
        if (allocator.num_blocks is not None and need > len(allocator._free)
                and (not self.prefix_caching or need > allocator._available())):
            return False  # (idle cached blocks are asked for only when the free list is short)
        for _ in range(need):
            allocator._add_block(request_id)
        if need and self.prefix_caching:
            self._lookup = (None, 0, [], -1)  # it may have evicted a block
        return True

    def release(self, request_id: int) -> None:
        """Drop the request's table (its cached blocks stay cached, evictable)."""
        self.allocator._free_table(request_id)
        if self.prefix_caching:
            self._progress.pop(request_id, None)
            self._lookup = (None, 0, [], -1)  # which cached blocks are idle changes


def make_memory(kind: str, capacity_tokens: int | None, block_size: int = 16,
                reserve_tokens: int | None = None, prefix_caching: bool = False,
                reserve_output_tokens: int | None = None) -> ReservationMemory | PagedMemory:
    """The memory policy `kind` ("reservation" or "paged") over capacity_tokens slots;
    prefix_caching applies to "paged" only, reserve_tokens and reserve_output_tokens to
    "reservation" only."""
    if kind == "reservation":
        if prefix_caching:
            raise ValueError("prefix_caching applies to kv_memory 'paged' only")
        return ReservationMemory(capacity_tokens, reserve_tokens, reserve_output_tokens)
    if kind == "paged":
        if reserve_tokens is not None or reserve_output_tokens is not None:
            raise ValueError("reserve_tokens and reserve_output_tokens apply to kv_memory "
                             "'reservation' only")
        return PagedMemory(capacity_tokens, block_size, prefix_caching)
    raise ValueError(f"kv_memory must be one of {MEMORY_POLICIES}, got {kind!r}")
