"""KV memory policies the scheduler admits, grows and releases requests against.

Both count memory in token slots (multiply by `ModelConfig.kv_bytes_per_token` for bytes)
and answer the same calls:

    can_ever_fit(request)            # could it run alone in the whole capacity?
    fits(request, tokens)            # admit it now, its prefill writing `tokens` tokens?
    admit(request_id, request, tokens)
    grow(request_id, tokens) -> bool # room for `tokens` cached tokens? False: no change
    release(request_id)
    held_tokens, used_tokens         # slots set aside, and slots holding a token

- `ReservationMemory`: at admission a request reserves slots for its whole length (its
  prompt plus output, known to the simulator, as an oracle would; or a fixed
  `reserve_tokens`, the maximum length a system without that knowledge must reserve, as
  FasterTransformer and Orca do in vLLM's comparison). It never grows, never preempts.
- `PagedMemory`: blocks of `block_size` slots from a `BlockAllocator`, taken as tokens
  arrive; `grow` fails when the free list is empty, and the scheduler then preempts.

A request caches at most prompt + output - 1 tokens: its last token is never fed back.
"""
from __future__ import annotations

from ..units import check_positive
from .paging import BlockAllocator, blocks_needed
from .requests import Request

MEMORY_POLICIES = ("reservation", "paged")


class ReservationMemory:
    """Slots reserved for the whole request at admission (see the module docstring).

    capacity_tokens None: unlimited. reserve_tokens None: each request reserves its
    total_tokens; otherwise every request reserves reserve_tokens (and one longer can never
    fit).
    """

    def __init__(self, capacity_tokens: int | None = None,
                 reserve_tokens: int | None = None) -> None:
        if capacity_tokens is not None:
            check_positive("kv_capacity_tokens", capacity_tokens, integer=True)
        if reserve_tokens is not None:
            check_positive("reserve_tokens", reserve_tokens, integer=True)
        self.capacity_tokens, self.reserve_tokens = capacity_tokens, reserve_tokens
        self.held_tokens = 0
        self.used_tokens = 0
        self._held: dict[int, int] = {}
        self._used: dict[int, int] = {}

    def reservation(self, request: Request) -> int:
        return request.total_tokens if self.reserve_tokens is None else self.reserve_tokens

    def can_ever_fit(self, request: Request) -> bool:
        if self.reserve_tokens is not None and request.total_tokens > self.reserve_tokens:
            return False
        return self.capacity_tokens is None or self.reservation(request) <= self.capacity_tokens

    def fits(self, request: Request, tokens: int | None = None) -> bool:
        return (self.capacity_tokens is None
                or self.held_tokens + self.reservation(request) <= self.capacity_tokens)

    def admit(self, request_id: int, request: Request, tokens: int | None = None) -> None:
        self._held[request_id] = self.reservation(request)
        self.held_tokens += self._held[request_id]
        self.grow(request_id, request.prompt_tokens if tokens is None else tokens)

    def grow(self, request_id: int, tokens: int) -> bool:
        self.used_tokens += tokens - self._used.get(request_id, 0)
        self._used[request_id] = tokens
        return True

    def release(self, request_id: int) -> None:
        self.held_tokens -= self._held.pop(request_id)
        self.used_tokens -= self._used.pop(request_id)


class PagedMemory:
    """Blocks of `block_size` slots, floor(capacity_tokens / block_size) of them (None:
    unlimited), allocated as tokens arrive. `allocator` holds every request's block table."""

    def __init__(self, capacity_tokens: int | None = None, block_size: int = 16) -> None:
        check_positive("block_size", block_size, integer=True)
        if capacity_tokens is not None:
            check_positive("kv_capacity_tokens", capacity_tokens, integer=True)
            if capacity_tokens < block_size:
                raise ValueError(f"kv_capacity_tokens ({capacity_tokens}) must hold at least "
                                 f"one block of block_size={block_size} tokens")
        blocks = None if capacity_tokens is None else capacity_tokens // block_size
        self.capacity_tokens, self.block_size = capacity_tokens, int(block_size)
        self.allocator = BlockAllocator(blocks, block_size)
        self.used_tokens = 0

    @property
    def held_tokens(self) -> int:
        return self.allocator.used_blocks * self.block_size

    def can_ever_fit(self, request: Request) -> bool:
        blocks = self.allocator.num_blocks
        return blocks is None or blocks_needed(request.total_tokens - 1, self.block_size) <= blocks

    def fits(self, request: Request, tokens: int) -> bool:
        return self.allocator.can_allocate(tokens)

    def admit(self, request_id: int, request: Request, tokens: int) -> None:
        self.allocator.allocate(request_id, tokens)
        self.used_tokens += tokens

    def grow(self, request_id: int, tokens: int) -> bool:
        extra = tokens - self.allocator.tokens[request_id]
        if extra < 0:
            raise ValueError(f"tokens must be >= the {self.allocator.tokens[request_id]} "
                             f"request {request_id} holds, got {tokens}")
        if not self.allocator.can_append(request_id, extra):
            return False
        self.allocator.append(request_id, extra)
        self.used_tokens += extra
        return True

    def release(self, request_id: int) -> None:
        self.used_tokens -= self.allocator.tokens[request_id]
        self.allocator.free(request_id)


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
