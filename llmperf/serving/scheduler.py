"""The iteration-level scheduler shared by the simulator and the engine.

Each iteration its driver (the simulator, or an engine running a model) does four things:

    scheduler.add(request_id, request)   # for every request that has arrived by now
    batch = scheduler.schedule()         # None: nothing to run until the next arrival
    ...run `batch` (simulated: a step-time model; real: a forward pass)...
    outcome = scheduler.complete(batch)  # which requests got their first token, which left

The scheduler knows nothing of clocks: the driver stamps times on what it returns.

Policies (every admission is FIFO, and stops at the first waiting request that does not
fit: no request overtakes another):

- "static": only when nothing runs, take up to `max_batch` waiting requests and prefill
  their whole prompts together in one iteration; then decode them together until the
  longest has finished. A finished request leaves (its `finish_s` is stamped) but its slot
  stays empty, and admits nobody, until the whole batch is done. An empty slot does no
  work: later iterations decode only the unfinished requests (an engine that pads the
  batch would compute it, and its step time would grow accordingly).
- "continuous" (iteration-level scheduling, after Orca: Yu et al., OSDI 2022): at the start
  of every iteration, requests that finished in the previous one have left, and waiting
  requests are admitted into free slots; an admitted request's whole prompt is prefilled in
  that iteration together with one decode token of every running request.
- "chunked" (after Sarathi-Serve: Agrawal et al., OSDI 2024): continuous with a budget of
  `token_budget` tokens per iteration. Every decoding request's token goes first; prefill
  chunks fill the rest, first those of prompts already started (oldest first), then those of
  newly admitted requests. A prompt may span several iterations.

In every policy a request yields its first token at the end of the iteration that processes
the last token of its prompt, then one token in each following iteration, and leaves at the
end of the iteration that yields its last token (a one-token output leaves with its first).
A slot is the index (0 .. max_batch - 1) of the batch row a request occupies: the lowest
free one when it is admitted.
"""
from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass

from ..units import check_positive
from .requests import Request

POLICIES = ("static", "continuous", "chunked")


@dataclass(frozen=True)
class Chunk:
    """Prompt tokens start_tokens .. start_tokens + tokens - 1 of one request, run in one step."""

    request_id: int
    start_tokens: int
    tokens: int
    completes_prompt: bool

    @property
    def kv_tokens(self) -> int:
        """Keys the chunk's queries attend to: the cached prompt before it, and itself."""
        return self.start_tokens + self.tokens


@dataclass(frozen=True)
class Batch:
    """One iteration's work: prefill chunks, and one decode token per decoding request.

    decode_kv_tokens: the KV tokens the decodes read, summed over them; a request that has
    generated g tokens from a prompt of P reads P + g (its cache, and its new token).
    admitted: (request id, slot) of the requests admitted this iteration.
    """

    iteration: int
    prefill: tuple[Chunk, ...]
    decode: tuple[int, ...]
    decode_kv_tokens: int
    admitted: tuple[tuple[int, int], ...]

    @property
    def tokens(self) -> int:
        """Tokens processed: every prefill chunk's tokens plus one per decoding request."""
        return sum(c.tokens for c in self.prefill) + len(self.decode)

    @property
    def kv_tokens(self) -> int:
        """KV tokens read by the whole iteration: the chunks' and the decodes'."""
        return sum(c.kv_tokens for c in self.prefill) + self.decode_kv_tokens


@dataclass(frozen=True)
class Outcome:
    """What an iteration produced: requests that got their first token, and those that left."""

    first_token: tuple[int, ...]
    finished: tuple[int, ...]


class ReservationMemory:
    """KV memory reserved for the whole request at admission: prompt plus output tokens.

    A request is admitted only if the reservations of all admitted requests, its own
    included, fit in `capacity_tokens` (None: unlimited); it frees its reservation when it
    leaves. Paged allocation with preemption can replace this object: the scheduler only
    calls `fits`, `admit` and `release`.
    """

    def __init__(self, capacity_tokens: int | None = None) -> None:
        if capacity_tokens is not None:
            check_positive("kv_capacity_tokens", capacity_tokens, integer=True)
        self.capacity_tokens = capacity_tokens
        self.used_tokens = 0
        self._held: dict[int, int] = {}

    def can_ever_fit(self, request: Request) -> bool:
        return self.capacity_tokens is None or request.total_tokens <= self.capacity_tokens

    def fits(self, request: Request) -> bool:
        return (self.capacity_tokens is None
                or self.used_tokens + request.total_tokens <= self.capacity_tokens)

    def admit(self, request_id: int, request: Request) -> None:
        self._held[request_id] = request.total_tokens
        self.used_tokens += request.total_tokens

    def release(self, request_id: int) -> None:
        self.used_tokens -= self._held.pop(request_id)


class _Sequence:
    """A request inside the scheduler: its slot and how far its prompt has been processed."""

    __slots__ = ("id", "request", "slot", "prefilled", "first_iteration")

    def __init__(self, request_id: int, request: Request, slot: int) -> None:
        self.id, self.request, self.slot = request_id, request, slot
        self.prefilled = 0
        self.first_iteration = -1

    def kv_tokens_at(self, iteration: int) -> int:
        """KV a decode reads at `iteration`: P + g, having generated g = iteration - first."""
        return self.request.prompt_tokens + iteration - self.first_iteration


class Scheduler:
    """Decides each iteration's batch under one policy; see the module docstring."""

    def __init__(self, policy: str = "continuous", max_batch: int = 8,
                 token_budget: int | None = None, memory: ReservationMemory | None = None):
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
        check_positive("max_batch", max_batch, integer=True)
        if policy == "chunked":
            _check_budget(token_budget, max_batch)
        elif token_budget is not None:
            raise ValueError(f"token_budget applies to policy 'chunked' only, not {policy!r}")
        self.policy, self.max_batch, self.token_budget = policy, int(max_batch), token_budget
        self.memory = memory if memory is not None else ReservationMemory(None)
        self.iteration = 0
        self._waiting: deque[tuple[int, Request]] = deque()
        self._prefilling: dict[int, _Sequence] = {}   # admitted, prompt not finished
        self._decoding: dict[int, _Sequence] = {}     # first token out, not finished
        self._decode_kv_tokens = 0                    # their KV reads in the next iteration
        self._finishing: dict[int, list[int]] = {}    # iteration -> ids whose last token it is
        self._free_slots = list(range(self.max_batch))

    @property
    def running(self) -> int:
        """Requests holding a slot and not yet finished."""
        return len(self._prefilling) + len(self._decoding)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def add(self, request_id: int, request: Request) -> None:
        """Queue an arrived request; ValueError if it could never fit in the KV memory."""
        if not self.memory.can_ever_fit(request):
            raise ValueError(f"request {request_id} needs {request.total_tokens} KV tokens, "
                             f"more than kv_capacity_tokens={self.memory.capacity_tokens}")
        self._waiting.append((request_id, request))

    def schedule(self) -> Batch | None:
        """The next iteration's batch, or None when nothing runs and nobody can be admitted."""
        decode = tuple(self._decoding)
        budget = None if self.token_budget is None else self.token_budget - len(decode)
        chunks, budget = _chunks(list(self._prefilling.values()), budget)
        admitted = self._admit(budget)
        new_chunks, _ = _chunks(admitted, budget)
        if not chunks and not new_chunks and not decode:
            return None
        slots = tuple((s.id, s.slot) for s in admitted)
        return Batch(self.iteration, chunks + new_chunks, decode, self._decode_kv_tokens, slots)

    def _admit(self, budget: int | None) -> list[_Sequence]:
        """FIFO into free slots while the head fits in memory (and some budget is left)."""
        if self.policy == "static" and self.running:
            return []
        admitted = []
        while (self._waiting and self._free_slots and (budget is None or budget > 0)
               and self.memory.fits(self._waiting[0][1])):
            request_id, request = self._waiting.popleft()
            self.memory.admit(request_id, request)
            seq = _Sequence(request_id, request, heapq.heappop(self._free_slots))
            self._prefilling[request_id] = seq
            admitted.append(seq)
            if budget is not None:
                budget -= request.prompt_tokens
        return admitted

    def complete(self, batch: Batch) -> Outcome:
        """Advance every request in `batch` by what the iteration did; return what it yielded."""
        if batch.iteration != self.iteration:
            raise ValueError(f"batch is for iteration {batch.iteration}, the scheduler is at "
                             f"{self.iteration}: complete each batch once, in order")
        it = self.iteration
        first = []
        for chunk in batch.prefill:
            seq = self._prefilling[chunk.request_id]
            seq.prefilled += chunk.tokens
            if chunk.completes_prompt:
                first.append(self._start_decoding(seq, it))
        finished = self._finishing.pop(it, [])
        for request_id in finished:
            self._leave(request_id, it)
        # every request still decoding gained a token, so reads one more KV token next time
        self._decode_kv_tokens += len(self._decoding)
        self.iteration += 1
        return Outcome(tuple(first), tuple(finished))

    def _start_decoding(self, seq: _Sequence, it: int) -> int:
        del self._prefilling[seq.id]
        seq.first_iteration = it
        self._finishing.setdefault(it + seq.request.output_tokens - 1, []).append(seq.id)
        self._decoding[seq.id] = seq
        self._decode_kv_tokens += seq.kv_tokens_at(it)
        return seq.id

    def _leave(self, request_id: int, it: int) -> None:
        seq = self._decoding.pop(request_id)
        self._decode_kv_tokens -= seq.kv_tokens_at(it)
        self.memory.release(request_id)
        heapq.heappush(self._free_slots, seq.slot)


def _chunks(seqs: list[_Sequence], budget: int | None) -> tuple[tuple[Chunk, ...], int | None]:
    """Prefill chunks for `seqs` in order, each as large as the remaining budget allows."""
    chunks = []
    for seq in seqs:
        if budget is not None and budget <= 0:
            break
        remaining = seq.request.prompt_tokens - seq.prefilled
        tokens = remaining if budget is None else min(remaining, budget)
        chunks.append(Chunk(seq.id, seq.prefilled, tokens, tokens == remaining))
        if budget is not None:
            budget -= tokens
    return tuple(chunks), budget


def _check_budget(token_budget: int | None, max_batch: int) -> None:
    """The budget must hold every decode of a full batch, or decodes would stall."""
    if token_budget is None:
        raise ValueError("token_budget is required for policy 'chunked'")
    check_positive("token_budget", token_budget, integer=True)
    if token_budget < max_batch:
        raise ValueError(f"token_budget must be >= max_batch ({max_batch}) so that every "
                         f"decode token fits in an iteration, got {token_budget}")
