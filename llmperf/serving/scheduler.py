"""The iteration-level scheduler shared by the simulator and the engine.

Each iteration the driver loop (`llmperf.serving.driver.serve`, which `simulate` and the
engine share) does four things:

    scheduler.add(request_id, request)   # for every request that has arrived by now
    batch = scheduler.schedule()         # None: nothing to run until the next arrival
    ...run `batch` (simulated: a step-time model; real: a forward pass)...
    scheduler.finish_early(request_id)   # the engine: that request's new token is a stop token
    outcome = scheduler.complete(batch)  # which requests got their first token, which left

The scheduler knows nothing of clocks: the driver stamps times on what it returns. Token
counts are in tokens; iterations are numbered from 0.

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
A request's `output_tokens` is the most it may generate: the simulator knows each length and
runs every request to it, while an engine that meets a stop token (end of sequence) calls
`finish_early`, and the request leaves at the end of that iteration as if it were its last
token (its first token included). The scheduler never needs the real length in advance.
A slot is the index (0 .. max_batch - 1) of the batch row a request occupies: the lowest
free one when it is admitted.

KV memory (`llmperf.serving.memory`): under whole-request reservation a request is admitted
only when its reservation fits, and never runs out. Under paging it is admitted when blocks
for its prompt are free, and each decode takes blocks as it needs them; when none is left
the newest running request is preempted by recompute (after vLLM): its KV is dropped, it
returns to the head of the queue, and when admitted again its prompt and the tokens it had
yielded are prefilled together, the last prefill position yielding its next token.
With prefix caching (`PagedMemory(..., prefix_caching=True)`), `memory.admit` says how many
of those tokens it found cached: the prefill computes only the rest (its first chunk starts
there, so step times charge the computed tokens while the chunk's KV reads include the
cached ones; a chunked budget is spent on computed tokens), and as each chunk completes the
scheduler tells the memory (`memory.computed`), which caches the prompt blocks it filled.
"""
from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable

from ..units import check_positive
from .batch import Batch, Chunk, Outcome
from .memory import PagedMemory, ReservationMemory
from .requests import Request
from .sequence import Sequence

POLICIES = ("static", "continuous", "chunked")


class Scheduler:
    """Decides each iteration's batch under one policy; see the module docstring.

    The constructor and `add` check their arguments; a driver that has checked its requests
    once (`llmperf.serving.driver.serve`) queues them through `enqueue`, which does not.
    """

    def __init__(self, policy: str = "continuous", max_batch: int = 8,
                 token_budget: int | None = None,
                 memory: ReservationMemory | PagedMemory | None = None):
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
        check_positive("max_batch", max_batch, integer=True)
        if policy == "chunked":
            _check_budget(token_budget, max_batch)
        elif token_budget is not None:
            raise ValueError(f"token_budget applies to policy 'chunked' only, not {policy!r}")
        if memory is not None and not isinstance(memory, (ReservationMemory, PagedMemory)):
            raise ValueError(f"memory must be a ReservationMemory or a PagedMemory, got "
                             f"{type(memory).__name__}")
        self.policy, self.max_batch, self.token_budget = policy, int(max_batch), token_budget
        self.memory = memory if memory is not None else ReservationMemory(None)
        self._caching = getattr(self.memory, "prefix_caching", False)
        self.iteration = 0
        self._waiting: deque[Sequence] = deque()
        self._arrived = 0                             # requests queued so far
        self._prefilling: dict[int, Sequence] = {}    # admitted, prompt not finished
        self._decoding: dict[int, Sequence] = {}      # first token out, not finished
        self._decode_kv_tokens = 0                    # their KV reads in the next iteration
        self._prefill_tokens = 0                      # the prefilling ones' targets, summed
        self._finishing: dict[int, list[int]] = {}    # iteration -> ids whose last token it is
        self._growing: dict[int, list[Sequence]] = {}  # iteration -> those needing memory
        self._free_slots = list(range(self.max_batch))
        self._stopped: list[int] = []                 # finish_early this iteration
        self._batch: Batch | None = None              # the batch scheduled, not completed
        self.preemptions = 0
        self._idle = True  # an instance starts idle

    @property
    def running(self) -> int:
        """Requests holding a slot and not yet finished."""
        return len(self._prefilling) + len(self._decoding)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def add(self, request_id: int, request: Request) -> None:
        """Queue an arrived request; ValueError if it could never fit in the KV memory."""
        if not isinstance(request, Request):
            raise ValueError(f"request must be a Request, got {type(request).__name__}")
        self.memory.check_fit(request, f"request {request_id}")
        self.enqueue(Sequence(request_id, request))

    def enqueue(self, seq: Sequence) -> None:
        """Queue an arrived sequence the caller has checked (`memory.can_ever_fit`)."""
        seq.order, self._arrived = self._arrived, self._arrived + 1
        self._waiting.append(seq)

    def schedule(self) -> Batch | None:
        """The next iteration's batch, or None when nothing runs and nobody can be admitted.

        First every decoding request gets room for the token it writes, oldest first; when
        the memory has none, the newest running request is preempted (its KV dropped, to be
        recomputed when it is admitted again, ahead of every request behind it), as vLLM does.
        Only decodes passing their `memory.room` ask; the others already have it.
        An iteration that preempted admits nobody."""
        preempted = self._make_room() if self.iteration in self._growing else ()
        decode = tuple(self._decoding)
        budget = None if self.token_budget is None else self.token_budget - len(decode)
        chunks, budget = _chunks(self._prefilling.values(), budget)
        admitted = () if preempted else self._admit(budget)
        if admitted:
            new_chunks, _ = _chunks(admitted, budget)
            chunks += new_chunks
        elif not chunks and not decode:
            self._idle = True
            return None
        used = self._decode_kv_tokens + self._prefill_tokens
        cached = ()
        if self._caching:
            used -= self.memory.shared_tokens  # a shared block's slots hold its tokens once
            cached = tuple(s.cached for s in admitted)
        self._batch = batch = Batch(self.iteration, chunks, decode, self._decode_kv_tokens,
                                    tuple((s.id, s.slot) for s in admitted), preempted,
                                    self.memory.held_tokens, used, cached, self._idle)
        self._idle = False
        return batch

    def finish_early(self, request_id: int) -> None:
        """Mark `request_id` as finished by the batch scheduled last: the token it generated
        there (a decode's, or the one that follows its prompt) is a stop token. Call after
        running the batch and before `complete(batch)`, which then lets it leave at this
        iteration. ValueError unless that batch generates a token for it."""
        batch = self._batch
        if batch is None or batch.iteration != self.iteration:
            raise ValueError("finish_early needs a scheduled batch not yet completed")
        if request_id in self._stopped:
            raise ValueError(f"request_id {request_id!r} is already finished this iteration")
        if request_id not in self._decoding and not any(
                c.request_id == request_id and c.completes_prompt for c in batch.prefill):
            raise ValueError(f"request_id {request_id!r} generates no token in iteration "
                             f"{self.iteration}: it must decode, or complete its prompt")
        self._stopped.append(request_id)

    def _make_room(self) -> tuple[int, ...]:
        it, preempted = self.iteration, []
        due = sorted(self._growing.pop(it), key=lambda s: s.order)
        for seq in due:
            seq.grow_at = -1
        for seq in due:
            while (seq.id in self._decoding
                   and not self.memory.grow(seq.id, seq.kv_tokens_at(it))):
                running = [*self._decoding.values(), *self._prefilling.values()]
                victim = max(running, key=lambda s: s.order)
                self._preempt(victim)
                preempted.append(victim.id)
            if seq.id in self._decoding:
                self._plan_growth(seq)
        return tuple(preempted)

    def _plan_growth(self, seq: Sequence) -> None:
        """Note the iteration at which `seq`'s decode first passes its memory's room."""
        room = self.memory.room(seq.id)
        if room is None:
            return
        it = room - seq.kv_tokens_at(0) + 1          # kv_tokens_at(it) = room + 1
        if it <= seq.finish_iteration:
            seq.grow_at = it
            self._growing.setdefault(it, []).append(seq)

    def _preempt(self, seq: Sequence) -> None:
        it = self.iteration
        if seq.id in self._decoding:
            del self._decoding[seq.id]
            self._decode_kv_tokens -= seq.kv_tokens_at(it)
            self._finishing[seq.finish_iteration].remove(seq.id)
            if seq.grow_at >= 0:
                self._growing[seq.grow_at].remove(seq)
                seq.grow_at = -1
            seq.generated = seq.kv_tokens_at(it) - seq.request.prompt_tokens
        else:
            del self._prefilling[seq.id]
            self._prefill_tokens -= seq.target
        self.memory.release(seq.id)
        heapq.heappush(self._free_slots, seq.slot)
        seq.slot = -1
        self._waiting.appendleft(seq)
        self.preemptions += 1

    def _admit(self, budget: int | None) -> list[Sequence]:
        """FIFO into free slots while the head fits in memory (and some budget is left)."""
        if self.policy == "static" and (self._prefilling or self._decoding):
            return []
        admitted = []
        while self._waiting and self._free_slots and (budget is None or budget > 0):
            seq = self._waiting[0]
            target = seq.request.prompt_tokens + seq.generated
            if not self.memory.fits(seq.request, target):
                break
            self._waiting.popleft()
            seq.cached = seq.prefilled = self.memory.admit(seq.id, seq.request, target)
            seq.slot, seq.target = heapq.heappop(self._free_slots), target
            self._prefilling[seq.id] = seq
            self._prefill_tokens += target
            admitted.append(seq)
            if budget is not None:
                budget -= target - seq.cached
        return admitted

    def complete(self, batch: Batch) -> Outcome:
        """Advance every request in `batch` by what the iteration did; return what it yielded.

        A recomputed request's prefill yields a token too, but not its first."""
        if batch.iteration != self.iteration:
            raise ValueError(f"batch is for iteration {batch.iteration}, the scheduler is at "
                             f"{self.iteration}: complete each batch once, in order")
        it = self.iteration
        first = []
        for chunk in batch.prefill:
            seq = self._prefilling[chunk.request_id]
            seq.prefilled += chunk.tokens
            if self._caching:
                self.memory.computed(seq.id, seq.request, seq.prefilled)
            if chunk.completes_prompt:
                self._start_decoding(seq, it)
                if seq.generated == 0:
                    first.append(seq.id)
        finished = self._finishing.pop(it, [])
        if self._stopped:
            finished += self._stop_early(it)
        # leave in arrival order, however each learned it was done (its known length, a cap
        # or a stop token): the order blocks are released in is the cached blocks' LRU order
        finished.sort(key=lambda request_id: self._decoding[request_id].order)
        generated = []
        for request_id in finished:
            generated.append(self._leave(request_id, it))
        # every request still decoding gained a token, so reads one more KV token next time
        self._decode_kv_tokens += len(self._decoding)
        self.iteration += 1
        self._batch = None
        return Outcome(tuple(first), tuple(finished), tuple(generated))

    def _stop_early(self, it: int) -> list[int]:
        """Take the requests stopped at `it` (finish_early) off their planned finish and
        memory growth; those not finishing at `it` anyway, in the order they stopped."""
        stopped, self._stopped = self._stopped, []
        early = []
        for request_id in stopped:
            seq = self._decoding[request_id]
            if seq.finish_iteration == it:  # its cap: already in the list
                continue
            self._finishing[seq.finish_iteration].remove(request_id)
            if seq.grow_at >= 0:
                self._growing[seq.grow_at].remove(seq)
                seq.grow_at = -1
            early.append(request_id)
        return early

    def _start_decoding(self, seq: Sequence, it: int) -> None:
        del self._prefilling[seq.id]
        self._prefill_tokens -= seq.target
        seq.base_iteration, seq.base_generated = it, seq.generated + 1
        self._finishing.setdefault(seq.finish_iteration, []).append(seq.id)
        self._decoding[seq.id] = seq
        self._decode_kv_tokens += seq.kv_tokens_at(it)
        self._plan_growth(seq)

    def _leave(self, request_id: int, it: int) -> int:
        """Release a request whose last token `it` yielded; the tokens it generated."""
        seq = self._decoding.pop(request_id)
        self._decode_kv_tokens -= seq.kv_tokens_at(it)
        self.memory.release(request_id)
        heapq.heappush(self._free_slots, seq.slot)
        return seq.base_generated + it - seq.base_iteration


def _chunks(seqs: Iterable[Sequence],
            budget: int | None) -> tuple[tuple[Chunk, ...], int | None]:
    """Prefill chunks for `seqs` in order, each as large as the remaining budget allows."""
    chunks = []
    for seq in seqs:
        if budget is not None and budget <= 0:
            break
        remaining = seq.target - seq.prefilled
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
