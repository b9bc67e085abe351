"""KV memory policies the scheduler admits, grows and releases requests against.

Both count memory in token slots (multiply by `ModelConfig.kv_bytes_per_token` for bytes)
and answer the same calls:

    can_ever_fit(request)            # could it run alone in the whole capacity? (the one check)
    fits(request, tokens)            # admit it now, its prefill caching `tokens` tokens?
    admit(request_id, request, tokens)
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

A request caches at most prompt + output - 1 tokens: its last token is never fed back.
The constructors check their arguments; the calls above, made by the scheduler in its loop,
do not.
"""
from __future__ import annotations

from ..units import check_positive
from .paging import BlockAllocator
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

    capacity_tokens None: unlimited. reserve_tokens None: each request reserves its
    total_tokens; otherwise every request reserves reserve_tokens (and one longer can never
    fit).
    """

    def __init__(self, capacity_tokens: int | None = None,
                 reserve_tokens: int | None = None) -> None:
        if capacity_tokens is not None:
            check_positive("kv_capacity_tokens", capacity_tokens, integer=True)
            capacity_tokens = int(capacity_tokens)
        if reserve_tokens is not None:
            check_positive("reserve_tokens", reserve_tokens, integer=True)
            reserve_tokens = int(reserve_tokens)
        self.capacity_tokens, self.reserve_tokens = capacity_tokens, reserve_tokens
        if reserve_tokens is None:
            self.max_request_tokens = capacity_tokens
        else:  # a reservation larger than the whole memory admits nobody
            fits = capacity_tokens is None or reserve_tokens <= capacity_tokens
            self.max_request_tokens = reserve_tokens if fits else 0
        self.held_tokens = 0
        self._held: dict[int, int] = {}

    def _limits(self) -> str:
        return f"kv_capacity_tokens={self.capacity_tokens}, reserve_tokens={self.reserve_tokens}"

    def reservation(self, request: Request) -> int:
        """Slots `request` reserves at admission."""
        return request.total_tokens if self.reserve_tokens is None else self.reserve_tokens

    def fits(self, request: Request, tokens: int | None = None) -> bool:
        return (self.capacity_tokens is None
                or self.held_tokens + self.reservation(request) <= self.capacity_tokens)

    def admit(self, request_id: int, request: Request, tokens: int | None = None) -> None:
        held = self._held[request_id] = self.reservation(request)
        self.held_tokens += held

    def room(self, request_id: int) -> None:
        """None: the reservation holds every token the request will cache."""
        return None

    def grow(self, request_id: int, tokens: int) -> bool:
        return True

    def release(self, request_id: int) -> None:
        self.held_tokens -= self._held.pop(request_id)


class PagedMemory(_KVMemory):
    """Blocks of `block_size` slots, floor(capacity_tokens / block_size) of them (None:
    unlimited), allocated as tokens arrive. `allocator` holds every request's block table.

    A request claims whole blocks: its count in the allocator runs to the end of its last
    block (so `room` is that count, and a cache may write up to it), and grows a block at
    a time when a decode passes it.
    """

    def __init__(self, capacity_tokens: int | None = None, block_size: int = 16) -> None:
        check_positive("block_size", block_size, integer=True)
        if capacity_tokens is not None:
            check_positive("kv_capacity_tokens", capacity_tokens, integer=True)
            if capacity_tokens < block_size:
                raise ValueError(f"kv_capacity_tokens ({capacity_tokens}) must hold at least "
                                 f"one block of block_size={block_size} tokens")
        blocks = None if capacity_tokens is None else int(capacity_tokens) // int(block_size)
        self.capacity_tokens, self.block_size = capacity_tokens, int(block_size)
        self.allocator = BlockAllocator(blocks, block_size)
        # it caches total_tokens - 1 tokens
        self.max_request_tokens = None if blocks is None else blocks * self.block_size + 1

    def _limits(self) -> str:
        return f"kv_capacity_tokens={self.capacity_tokens} in blocks of {self.block_size}"

    @property
    def held_tokens(self) -> int:
        return len(self.allocator.refcount) * self.block_size

    def _whole_blocks(self, tokens: int) -> int:
        return -(-tokens // self.block_size) * self.block_size

    def fits(self, request: Request, tokens: int) -> bool:
        allocator = self.allocator
        return (allocator.num_blocks is None
                or -(-tokens // self.block_size) <= len(allocator._free))

    def admit(self, request_id: int, request: Request, tokens: int) -> None:
        self.allocator._new_table(request_id, self._whole_blocks(tokens))

    def room(self, request_id: int) -> int:
        return self.allocator.tokens[request_id]

    def grow(self, request_id: int, tokens: int) -> bool:
        """Whole blocks for `tokens` cached tokens; False (no change) if too few are free."""
        allocator = self.allocator
        need = -(-(tokens - allocator.tokens[request_id]) // self.block_size)
        if allocator.num_blocks is not None and need > len(allocator._free):
            return False
        for _ in range(need):
            allocator._add_block(request_id)
        return True

    def release(self, request_id: int) -> None:
        self.allocator._free_table(request_id)


def make_memory(kind: str, capacity_tokens: int | None, block_size: int = 16,
                reserve_tokens: int | None = None) -> ReservationMemory | PagedMemory:
    """The memory policy `kind` ("reservation" or "paged") over capacity_tokens slots."""
    if kind == "reservation":
        return ReservationMemory(capacity_tokens, reserve_tokens)
    if kind == "paged":
        if reserve_tokens is not None:
            raise ValueError("reserve_tokens applies to kv_memory 'reservation' only")
        return PagedMemory(capacity_tokens, block_size)
    raise ValueError(f"kv_memory must be one of {MEMORY_POLICIES}, got {kind!r}")
