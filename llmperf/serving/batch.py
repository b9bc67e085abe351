"""What one iteration of a serving instance does, as the scheduler decides it: a `Batch` of
prefill `Chunk`s and decode tokens, and the `Outcome` it yields (first tokens, requests
that leave). Token counts are in tokens. Torch-free.
"""
from __future__ import annotations

from dataclasses import dataclass


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
    cached: under prefix caching, the tokens each of them found cached (as `admitted`; their
    chunks start after them); () without prefix caching.
    preempted: requests whose KV was dropped before this iteration, to be recomputed.
    kv_held_tokens, kv_used_tokens: KV slots the memory policy holds during the iteration,
    and those holding a token once it has run.
    after_idle: the instance had nothing to run just before (or this is its first
    iteration), so it starts from idle; a step-time model may charge waking up
    (`LinearStepTime.wake_s`).
    """

    iteration: int
    prefill: tuple[Chunk, ...]
    decode: tuple[int, ...]
    decode_kv_tokens: int
    admitted: tuple[tuple[int, int], ...]
    preempted: tuple[int, ...] = ()
    kv_held_tokens: int = 0
    kv_used_tokens: int = 0
    cached: tuple[int, ...] = ()
    after_idle: bool = False

    @property
    def tokens(self) -> int:
        """Tokens processed: every prefill chunk's tokens plus one per decoding request."""
        tokens = len(self.decode)
        for chunk in self.prefill:  # a loop: most batches hold no chunk or one
            tokens += chunk.tokens
        return tokens

    @property
    def kv_tokens(self) -> int:
        """KV tokens read by the whole iteration: the chunks' and the decodes'."""
        kv_tokens = self.decode_kv_tokens
        for chunk in self.prefill:
            kv_tokens += chunk.start_tokens + chunk.tokens
        return kv_tokens


@dataclass(frozen=True)
class Outcome:
    """What an iteration produced: requests that got their first token, those that left,
    and how many tokens each of those generated in all (its output_tokens unless it met a
    stop token)."""

    first_token: tuple[int, ...]
    finished: tuple[int, ...]
    generated: tuple[int, ...] = ()  # tokens each finished request generated, as `finished`
