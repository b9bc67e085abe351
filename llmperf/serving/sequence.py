"""A request's running state: one class for the scheduler and the engine.

The scheduler moves a `Sequence` through waiting, prefilling and decoding (and back to
waiting when it is preempted); the engine reads the same object to find its prompt, its
slot and its position, and appends the tokens it generates. The simulator's sequences
have no prompt token ids and generate none: only their counts matter.
"""
from __future__ import annotations

from .requests import Request


class Sequence:
    """One request in a run. Token counts are in tokens, iterations count from 0.

    Set once: `id` (its index in the run), `request`, `prompt` (token ids, the engine's;
    None when simulated) and `generator` (the engine's random generator for sampling).
    The scheduler's: `order` (place in arrival order), `slot` (-1 while not admitted),
    `generated` (tokens it had yielded when last admitted, recomputed with its prompt
    after a preemption), `target` (tokens its prefill caches: prompt + generated),
    `cached` (of them, those found in the prefix cache when last admitted, never
    computed), `prefilled` (of them, those cached so far, hits included),
    `base_iteration` and `base_generated` (the iteration that yielded its
    base_generated-th token, its last prefill's), and
    `grow_at` (the iteration at which it next needs more KV memory; -1: none pending).
    The engine's: `output`, the token ids generated so far.
    """

    __slots__ = ("id", "request", "prompt", "generator", "output", "order", "slot",
                 "generated", "target", "cached", "prefilled", "base_iteration", "base_generated",
                 "grow_at")

    def __init__(self, seq_id: int, request: Request, prompt: list[int] | None = None,
                 generator: object = None) -> None:
        self.id, self.request, self.prompt, self.generator = seq_id, request, prompt, generator
        self.output: list[int] = []
        self.order = self.slot = -1
        self.generated = self.cached = self.prefilled = self.base_generated = 0
        self.target = request.prompt_tokens
        self.base_iteration = self.grow_at = -1

    def kv_tokens_at(self, iteration: int) -> int:
        """KV tokens a decode reads at `iteration` while decoding, P + g having generated g
        tokens: its cache and its new token, which this step writes."""
        return (self.request.prompt_tokens + self.base_generated
                + iteration - self.base_iteration - 1)

    @property
    def finish_iteration(self) -> int:
        """The iteration that yields its output_tokens-th token (its cap), once it decodes;
        a stop token may end it sooner (`Scheduler.finish_early`)."""
        return self.base_iteration + self.request.output_tokens - self.base_generated

    @property
    def tokens(self) -> list[int]:
        """Its prompt and the tokens generated so far (engine only)."""
        return self.prompt + self.output

    @property
    def position(self) -> int:
        """Where the next decode step's input, the last generated token, goes in the cache
        (engine only)."""
        return len(self.prompt) + len(self.output) - 1
