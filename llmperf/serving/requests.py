"""Requests and seeded workload generators.

A workload is a list of `Request`s: when each arrives, how long its prompt is and
how many tokens it generates. Arrivals are all at time 0 (an offline batch) or a
Poisson process at a given rate. Lengths come from one of four distributions; each
draw is rounded up to a whole token, so every length is at least 1. A cap on a length
either clips the draws (a draw above it becomes the cap) or, for `Exponential` with
`truncate=True`, redraws them until they fall under it (a truncated distribution).
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field

import numpy as np

from ..units import check_non_negative, check_positive


@dataclass(frozen=True)
class Request:
    """One request: arrival time in seconds, prompt length and output length in tokens.

    output_tokens is the most the request may generate. The simulator runs every request
    to it (a known length, as a study tool may assume); an engine with stop tokens ends a
    request earlier, at its first stop token (`Scheduler.finish_early`).

    prompt_ids: the prompt's token ids (prompt_tokens non-negative integers, kept as a
    tuple), or None. Only prefix caching reads them, to find prompts that begin alike;
    without them a request never hits the cache. The simulator never needs real ids:
    synthetic ones that repeat where prompts repeat (`shared_prefix_workload`,
    `multi_turn_workload`) are enough.
    """

    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    prompt_ids: tuple[int, ...] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        check_non_negative("arrival_s", self.arrival_s)
        check_positive("prompt_tokens", self.prompt_tokens, integer=True)
        check_positive("output_tokens", self.output_tokens, integer=True)
        if self.prompt_ids is not None:
            object.__setattr__(self, "prompt_ids", _token_ids(self.prompt_ids,
                                                              int(self.prompt_tokens)))

    @property
    def total_tokens(self) -> int:
        """Prompt plus output: the KV cache the request holds when it finishes."""
        return int(self.prompt_tokens) + int(self.output_tokens)


def _token_ids(ids, length: int) -> tuple[int, ...]:
    """`ids` as a tuple of `length` non-negative ints; ValueError naming prompt_ids if not."""
    try:
        ids = tuple(operator.index(t) for t in ids)
    except TypeError:
        raise ValueError("prompt_ids must be a sequence of integer token ids") from None
    if len(ids) != length:
        raise ValueError(f"prompt_ids must hold prompt_tokens={length} ids, got {len(ids)}")
    if ids and min(ids) < 0:
        raise ValueError(f"prompt_ids must be non-negative, got {min(ids)}")
    return ids


@dataclass(frozen=True)
class Fixed:
    """Every length equals `tokens`."""

    tokens: int

    def __post_init__(self) -> None:
        check_positive("tokens", self.tokens, integer=True)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return np.full(n, int(self.tokens), dtype=np.int64)


@dataclass(frozen=True)
class Uniform:
    """Lengths uniform on the whole numbers low..high, both included."""

    low: int
    high: int

    def __post_init__(self) -> None:
        check_positive("low", self.low, integer=True)
        check_positive("high", self.high, integer=True)
        if self.high < self.low:
            raise ValueError(f"high must be >= low ({self.low}), got {self.high}")

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.integers(int(self.low), int(self.high) + 1, size=n, dtype=np.int64)


def _whole_tokens(x: np.ndarray, cap: int | None) -> np.ndarray:
    """Round draws up to whole tokens (at least 1), then cap them."""
    tokens = np.maximum(np.ceil(x), 1).astype(np.int64)
    return tokens if cap is None else np.minimum(tokens, int(cap))


@dataclass(frozen=True)
class Exponential:
    """Exponential lengths with mean `mean_tokens`, rounded up, capped at `cap_tokens`.

    Rounding up adds about half a token to the mean. The cap either clips the draws
    (`truncate=False`: a draw above the cap counts as the cap, so the cap itself is
    common) or, with `truncate=True`, redraws every draw above it until it falls at or
    under it: the exponential truncated at the cap, as Anyscale's benchmark script draws
    its "capped_exponential" output lengths. Truncation lowers the mean far more: for a
    mean of 128 and a cap of 32, clipping gives about 28.4 tokens and truncation 15.8.
    """

    mean_tokens: float
    cap_tokens: int | None = None
    truncate: bool = False

    def __post_init__(self) -> None:
        check_positive("mean_tokens", self.mean_tokens)
        if self.cap_tokens is not None:
            check_positive("cap_tokens", self.cap_tokens, integer=True)
        elif self.truncate:
            raise ValueError("truncate=True needs a cap_tokens to truncate at")

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        x = rng.exponential(self.mean_tokens, size=n)
        if self.truncate:
            # Rounded up, a draw is at most the cap exactly when the draw itself is.
            over = x > self.cap_tokens
            while over.any():
                x[over] = rng.exponential(self.mean_tokens, size=int(over.sum()))
                over = x > self.cap_tokens
        return _whole_tokens(x, self.cap_tokens)


@dataclass(frozen=True)
class LogNormal:
    """Log-normal lengths with mean `mean_tokens` and log-space spread `sigma`.

    The underlying normal has mu = ln(mean) - sigma^2 / 2, so the mean of the
    continuous draw is `mean_tokens`; rounding up and `cap_tokens` shift it slightly.
    """

    mean_tokens: float
    sigma: float = 1.0
    cap_tokens: int | None = None

    def __post_init__(self) -> None:
        check_positive("mean_tokens", self.mean_tokens)
        check_positive("sigma", self.sigma)
        if self.cap_tokens is not None:
            check_positive("cap_tokens", self.cap_tokens, integer=True)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        mu = math.log(self.mean_tokens) - self.sigma**2 / 2
        return _whole_tokens(rng.lognormal(mu, self.sigma, size=n), self.cap_tokens)


LengthDistribution = Fixed | Uniform | Exponential | LogNormal


def poisson_arrivals(n: int, rate_per_s: float, rng: np.random.Generator) -> np.ndarray:
    """Arrival times of a Poisson process: cumulative exponential gaps of mean 1/rate."""
    check_positive("n", n, integer=True)
    check_positive("rate_per_s", rate_per_s)
    return np.cumsum(rng.exponential(1.0 / rate_per_s, size=n))


def workload(n: int, prompt: LengthDistribution, output: LengthDistribution,
             rate_per_s: float | None = None, seed: int = 0) -> list[Request]:
    """`n` requests; Poisson arrivals at `rate_per_s`, or all at time 0 when it is None.

    The same seed gives the same requests. Arrivals, prompts and outputs are drawn
    from separate streams, so changing the rate moves arrivals and keeps the lengths.
    """
    check_positive("n", n, integer=True)
    check_non_negative("seed", seed, integer=True)
    arrivals_rng, prompt_rng, output_rng = (np.random.default_rng([seed, k]) for k in range(3))
    arrivals = (np.zeros(n) if rate_per_s is None
                else poisson_arrivals(n, rate_per_s, arrivals_rng))
    prompts = prompt.sample(n, prompt_rng)
    outputs = output.sample(n, output_rng)
    return [Request(float(a), int(p), int(o)) for a, p, o in zip(arrivals, prompts, outputs)]


# Anyscale, "How continuous batching enables 23x throughput in LLM inference while reducing
# p50 latency" (Daniel, Shen, Liang, Liaw, 2023),
# https://www.anyscale.com/blog/continuous-batching-llm-inference : throughput test of
# 1,000 requests sent at once, 512-token prompts, outputs exponential with mean 128 tokens,
# capped at 32, 128, 512 or 1,536 in four datasets. Their script
# (https://github.com/anyscale/llm-continuous-batching-benchmarks, benchmark_throughput.py,
# gen_random_response_lens, distribution "capped_exponential") redraws a length until it is
# at most the cap: a truncated exponential, not a clipped one. (It rounds to the nearest
# token; the library rounds up, so no length is 0.)
THROUGHPUT_CAPS_TOKENS = (32, 128, 512, 1536)


def throughput_workload(cap_tokens: int = 1536, n: int = 1000, seed: int = 0) -> list[Request]:
    """Anyscale's throughput test: `n` requests at time 0, prompt 512, output Exp(128)
    truncated at `cap_tokens` (redrawn until under it, as their script draws it)."""
    if cap_tokens not in THROUGHPUT_CAPS_TOKENS:
        raise ValueError(f"cap_tokens must be one of {THROUGHPUT_CAPS_TOKENS}, got {cap_tokens!r}")
    output = Exponential(128, cap_tokens, truncate=True)
    return workload(n, Fixed(512), output, rate_per_s=None, seed=seed)


# ShareGPT as reported in the vLLM paper (Kwon et al., "Efficient Memory Management for Large
# Language Model Serving with PagedAttention", SOSP 2023, arXiv 2309.06180): mean 161.31 prompt
# and 337.99 output tokens. The paper gives means; the log-normal shape (sigma 1) and the
# 2,048-token caps, which keep a request inside Llama 2's 4,096-token context, are this
# book's choices.
SHAREGPT_MEAN_PROMPT_TOKENS = 161.31
SHAREGPT_MEAN_OUTPUT_TOKENS = 337.99
CHAT_CAP_TOKENS = 2048


def chat_workload(n: int, rate_per_s: float | None, seed: int = 0,
                  sigma: float = 1.0) -> list[Request]:
    """Chat-like requests: log-normal lengths with ShareGPT's means, Poisson arrivals."""
    prompt = LogNormal(SHAREGPT_MEAN_PROMPT_TOKENS, sigma, CHAT_CAP_TOKENS)
    output = LogNormal(SHAREGPT_MEAN_OUTPUT_TOKENS, sigma, CHAT_CAP_TOKENS)
    return workload(n, prompt, output, rate_per_s=rate_per_s, seed=seed)


# Synthetic token ids for prefix caching: only their equality matters (which prompts begin
# alike), so they are drawn uniformly from the vocabulary. Llama 2's tokenizer has 32,000
# tokens (Touvron et al., "Llama 2: Open Foundation and Fine-Tuned Chat Models", 2023,
# arXiv 2307.09288, section 2.2); pass a model's own vocab_size to feed its engine.
DEFAULT_VOCAB_SIZE = 32_000


def _ids(rng: np.random.Generator, n: int, vocab_size: int) -> tuple[int, ...]:
    return tuple(rng.integers(0, vocab_size, size=int(n)).tolist())


def _check_workload_args(n_name: str, n: int, seed: int, vocab_size: int) -> None:
    check_positive(n_name, n, integer=True)
    check_non_negative("seed", seed, integer=True)
    check_positive("vocab_size", vocab_size, integer=True)


def shared_prefix_workload(n: int, system_tokens: int, user: LengthDistribution,
                           output: LengthDistribution, rate_per_s: float | None = None,
                           seed: int = 0,
                           vocab_size: int = DEFAULT_VOCAB_SIZE) -> list[Request]:
    """`n` requests whose prompts begin with the same `system_tokens` tokens (a system
    prompt), then a user part of their own drawn from `user`; outputs from `output`.

    Arrivals Poisson at `rate_per_s` or all at time 0 (None). Token ids are synthetic
    (uniform in 0 .. vocab_size - 1, `prompt_ids`): the system prompt's are drawn once, each
    user part's afresh. Seeded: the same seed gives the same requests, and arrivals,
    lengths and ids come from separate streams (changing the rate keeps the prompts).
    """
    _check_workload_args("n", n, seed, vocab_size)
    check_positive("system_tokens", system_tokens, integer=True)
    arrivals_rng, user_rng, output_rng, ids_rng = (np.random.default_rng([seed, k])
                                                   for k in range(4))
    arrivals = (np.zeros(n) if rate_per_s is None
                else poisson_arrivals(n, rate_per_s, arrivals_rng))
    users, outputs = user.sample(n, user_rng), output.sample(n, output_rng)
    system = _ids(ids_rng, system_tokens, vocab_size)
    return [Request(float(a), int(system_tokens + u), int(o),
                    system + _ids(ids_rng, u, vocab_size))
            for a, u, o in zip(arrivals, users, outputs)]


def multi_turn_workload(conversations: int, turns: int, user: LengthDistribution,
                        output: LengthDistribution, think_s: float,
                        rate_per_s: float | None = None, system_tokens: int = 0,
                        seed: int = 0, vocab_size: int = DEFAULT_VOCAB_SIZE) -> list[Request]:
    """Chat conversations of `turns` turns each: turn k's prompt is turn k - 1's prompt,
    then its reply (output_tokens synthetic ids), then a new user message drawn from
    `user`; so the prompt grows turn by turn and each begins with the one before.

    Turn 0's prompt is a system prompt of `system_tokens` tokens shared by every
    conversation (0: none), then the first user message. Conversations start at Poisson
    arrivals of `rate_per_s` (None: all at 0); turn k arrives k * think_s seconds after its
    conversation's start. A workload is fixed before the run, so a turn cannot wait for
    the reply it follows: choose think_s longer than a reply takes, or a turn arrives
    before the one it continues has been computed (and finds less of it cached). Token ids
    are synthetic, as in `shared_prefix_workload`. Returns the requests conversation by
    conversation: turn k of conversation c is requests[c * turns + k].
    """
    _check_workload_args("conversations", conversations, seed, vocab_size)
    check_positive("turns", turns, integer=True)
    check_non_negative("think_s", think_s)
    check_non_negative("system_tokens", system_tokens, integer=True)
    arrivals_rng, user_rng, output_rng, ids_rng = (np.random.default_rng([seed, k])
                                                   for k in range(4))
    starts = (np.zeros(conversations) if rate_per_s is None
              else poisson_arrivals(conversations, rate_per_s, arrivals_rng))
    users = user.sample(conversations * turns, user_rng).reshape(conversations, turns)
    outputs = output.sample(conversations * turns, output_rng).reshape(conversations, turns)
    system = _ids(ids_rng, system_tokens, vocab_size)
    requests = []
    for c, start in enumerate(starts):
        context: tuple[int, ...] = system
        for k in range(turns):
            prompt = context + _ids(ids_rng, users[c, k], vocab_size)
            out = int(outputs[c, k])
            requests.append(Request(float(start + k * think_s), len(prompt), out, prompt))
            context = prompt + _ids(ids_rng, out, vocab_size)
    return requests
