"""End-to-end latency models of one request, and how many requests fit.

Two models, from coarse to fine; both are optimistic estimates (every operator at
its datasheet peak or bandwidth), and neither is a bound on the other or on reality:
- `simple_latency`, the lecture's: prefill is compute bound, decode memory bound,
      time = S * 2P / FLOPS + (G - 1) * 2P / BW
  (2P FLOPs per prompt token; all P parameters, 2P bytes in fp16, read per decode
  step; nothing else). The prefill yields the first of the G output tokens, so there
  are G - 1 decode steps; the lecture writes G * 2P / BW, rounding the first token's
  step in.
- `roofline_latency`: the sum of per-operator roofline times from `step_costs`,
  for the prefill and for each of the G - 1 decode steps as the KV cache grows. It
  adds what the simple model leaves out (attention's N^2 work, the KV cache reads, the
  element-wise operators) and drops what a step does not do: the embedding is a
  lookup of one row per token, not a read of the whole table, and the prefill runs
  the LM head for the last position only.

Which is larger depends on the context. For Llama 2 7B in fp16 on an A10, a decode
step costs 22.05 ms at 1 cached token and 22.35 ms at 350, below the simple model's
2P / BW = 22.46 ms (`simple_decode_step_time`), because the embedding table (262 MB)
is not read; from 470 cached tokens the KV cache reads outweigh it and the per-step
roofline is the larger.

Both return a `LatencyEstimate` that says whether the request fits in memory
(`fits`, from `memory_report`: weights, KV cache, activations against the usable
memory); the times are given either way, as if it did.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

from ..hardware import Accelerator, get_accelerator
from ..models import ModelConfig, get_model
from ..units import (
    bytes_per_element,
    check_non_negative,
    check_positive,
    format_seconds,
    normalize_dtype,
)
from .cost import matmul_cost
from .layers import step_costs
from .memory import MemoryReport, memory_report, usable_bytes


class DoesNotFitWarning(UserWarning):
    """A time was asked for a step whose weights, KV cache and activations exceed the memory."""


@dataclass(frozen=True, repr=False)
class LatencyEstimate:
    """Seconds for one request: prefill (the time to first token) and the decode steps.

    The prefill yields the first of the output_tokens, so decode_steps defaults to
    output_tokens - 1, for both the simple and the roofline model. `memory` is the
    `MemoryReport` of the request (None when the estimate was built without one), and
    `fits` says whether it fits: False means the times are those of a request the
    accelerator cannot hold.
    """

    prefill_s: float
    decode_s: float
    output_tokens: int
    decode_steps: int | None = None
    memory: MemoryReport | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.decode_steps is None:
            object.__setattr__(self, "decode_steps", self.output_tokens - 1)

    @property
    def total_s(self) -> float:
        return self.prefill_s + self.decode_s

    @property
    def ttft_s(self) -> float:
        """Time to first token: the prefill."""
        return self.prefill_s

    @property
    def tpot_s(self) -> float:
        """Mean time per decode step (0 when there is none)."""
        return self.decode_s / self.decode_steps if self.decode_steps > 0 else 0.0

    @property
    def fits(self) -> bool | None:
        """Whether the request fits in the usable memory (None: no memory report)."""
        return None if self.memory is None else self.memory.fits

    def __repr__(self) -> str:
        return (f"LatencyEstimate(prefill_s={self.prefill_s!r}, decode_s={self.decode_s!r}, "
                f"output_tokens={self.output_tokens!r}, decode_steps={self.decode_steps!r}, "
                f"fits={self.fits!r})")

    def __str__(self) -> str:
        text = (f"prefill {format_seconds(self.prefill_s)}, {self.decode_steps} decode steps "
                f"{format_seconds(self.decode_s)}, total {format_seconds(self.total_s)}")
        return text if self.memory is None else f"{text}; {self.memory.summary()}"


def _request_memory(model: ModelConfig | str, accelerator: Accelerator | str,
                    prompt_tokens: int, output_tokens: int, batch: int, dtype: str,
                    kv_dtype: str | None, attention: str, ecc: bool) -> MemoryReport:
    """The memory of `batch` requests: the cache at the last step (S + G - 1 tokens) and
    the activations of the prefill of S tokens."""
    return memory_report(model, accelerator, batch, prompt_tokens + output_tokens - 1, dtype,
                         kv_dtype, ecc, attention=attention, prefill_tokens=prompt_tokens)


def simple_decode_step_time(model: ModelConfig | str, accelerator: Accelerator | str,
                            dtype: str = "fp16") -> float:
    """The simple model's decode step: P * bytes per parameter / bandwidth (2P / BW in fp16).

    P counts the parameters a token uses (the active ones for MoE).
    """
    m, acc = get_model(model), get_accelerator(accelerator)
    return m.active_param_count() * bytes_per_element(dtype) / acc.mem_bandwidth


def simple_latency(model: ModelConfig | str, accelerator: Accelerator | str, prompt_tokens: int,
                   output_tokens: int, dtype: str = "fp16", *,
                   ecc: bool = True) -> LatencyEstimate:
    """The lecture's model: S * 2P / peak FLOP/s + (G - 1) * (P * bytes per parameter) / BW.

    P counts the parameters a token uses (the active ones for MoE). The prefill yields
    the first of the G output tokens, so G - 1 decode steps are charged, each
    `simple_decode_step_time`; the lecture's formula, G * 2P / BW in fp16, rounds the
    first token's step in. An optimistic estimate under its two assumptions (prefill at
    the peak, decode at the bandwidth, reading every parameter and nothing else), not a
    lower bound: see the module docstring for when `roofline_latency` comes out below it.
    `fits` (and `memory`) say whether one request of S + G - 1 tokens fits
    (`memory_report`, standard attention, `usable_capacity(ecc)`).
    """
    m, acc = get_model(model), get_accelerator(accelerator)
    check_positive("prompt_tokens", prompt_tokens, integer=True)
    check_positive("output_tokens", output_tokens, integer=True)
    prefill_s = prompt_tokens * 2 * m.active_param_count() / acc.peak(dtype)
    decode_s = (output_tokens - 1) * simple_decode_step_time(m, acc, dtype)
    memory = _request_memory(m, acc, prompt_tokens, output_tokens, 1, dtype, None, "standard",
                             ecc)
    return LatencyEstimate(prefill_s, decode_s, output_tokens, memory=memory)


def decode_step_time(model: ModelConfig | str, accelerator: Accelerator | str, context: int,
                     batch: int = 1, dtype: str = "fp16", kv_dtype: str | None = None,
                     attention: str = "standard") -> float:
    """Roofline seconds of one decode step with `context` >= 1 tokens already cached.

    There is no decode step with an empty cache: the first token comes from `prefill_time`.
    Whether the batch fits is not checked (sweeps past the memory are deliberate):
    ask `memory_report`.
    """
    step = step_costs(model, "decode", batch, context, dtype, kv_dtype, attention)
    return step.on(accelerator).time_s


def _prefill_s(model, accelerator, prompt_tokens, batch, dtype, kv_dtype, attention) -> float:
    return step_costs(model, "prefill", batch, prompt_tokens, dtype, kv_dtype,
                      attention).on(accelerator).time_s


def prefill_time(model: ModelConfig | str, accelerator: Accelerator | str, prompt_tokens: int,
                 batch: int = 1, dtype: str = "fp16", kv_dtype: str | None = None,
                 attention: str = "standard", *, ecc: bool = True) -> float:
    """Roofline seconds of the prefill of `batch` prompts of `prompt_tokens` tokens.

    Warns (`DoesNotFitWarning`, with `memory_report`'s "does not fit: needs X of Y
    usable" line) when the weights, the prompts' KV cache and the prefill's activations
    exceed `usable_capacity(ecc)`; the time is returned either way.
    """
    seconds = _prefill_s(model, accelerator, prompt_tokens, batch, dtype, kv_dtype, attention)
    memory = memory_report(model, accelerator, batch, prompt_tokens, dtype, kv_dtype, ecc,
                           attention=attention)
    if not memory.fits:
        warnings.warn(f"{memory.model} on {memory.accelerator}, prefill of {memory.batch} x "
                      f"{memory.seq_len} tokens {memory.summary()}", DoesNotFitWarning,
                      stacklevel=2)
    return seconds


def roofline_latency(model: ModelConfig | str, accelerator: Accelerator | str, prompt_tokens: int,
                     output_tokens: int, batch: int = 1, dtype: str = "fp16",
                     kv_dtype: str | None = None, attention: str = "standard", *,
                     ecc: bool = True) -> LatencyEstimate:
    """Per-step roofline model of a batch of identical requests.

    The prefill yields the first token; each of the remaining output_tokens - 1
    decode steps attends to the prompt plus the tokens generated so far. Each step
    is `step_costs(...).on(accelerator).time_s`: optimistic, not a bound. `fits` (and
    `memory`) say whether the batch fits: the cache at the last step, S + G - 1 tokens
    per sequence, beside the weights and the prefill's activations, in
    `usable_capacity(ecc)`.
    """
    check_positive("prompt_tokens", prompt_tokens, integer=True)
    check_positive("output_tokens", output_tokens, integer=True)
    prefill_s = _prefill_s(model, accelerator, prompt_tokens, batch, dtype, kv_dtype, attention)
    decode_s = sum(
        decode_step_time(model, accelerator, prompt_tokens + step, batch, dtype, kv_dtype,
                         attention)
        for step in range(output_tokens - 1)
    )
    memory = _request_memory(model, accelerator, prompt_tokens, output_tokens, batch, dtype,
                             kv_dtype, attention, ecc)
    return LatencyEstimate(prefill_s, decode_s, output_tokens, memory=memory)


def recompute_latency(model: ModelConfig | str, accelerator: Accelerator | str, prompt_tokens: int,
                      output_tokens: int, batch: int = 1, dtype: str = "fp16",
                      kv_dtype: str | None = None, attention: str = "standard", *,
                      ecc: bool = True) -> LatencyEstimate:
    """Per-step roofline model of generation *without* a KV cache.

    Every token after the first re-runs a prefill over the whole sequence so far
    (prompt + tokens generated), so the work grows quadratically with the output.
    Compare `roofline_latency`, which keeps K and V and runs one-token decode steps.
    `fits` (and `memory`) check the last re-run: a prefill of S + G - 1 tokens per sequence.
    """
    check_positive("prompt_tokens", prompt_tokens, integer=True)
    check_positive("output_tokens", output_tokens, integer=True)
    prefill_s = _prefill_s(model, accelerator, prompt_tokens, batch, dtype, kv_dtype, attention)
    decode_s = sum(
        _prefill_s(model, accelerator, prompt_tokens + step, batch, dtype, kv_dtype, attention)
        for step in range(1, output_tokens)
    )
    # the last re-run prefills S + G - 1 tokens: its activations and its K and V
    memory = memory_report(model, accelerator, batch, prompt_tokens + output_tokens - 1, dtype,
                           kv_dtype, ecc, attention=attention)
    return LatencyEstimate(prefill_s, decode_s, output_tokens, memory=memory)


def max_batch_size(model: ModelConfig | str, accelerator: Accelerator | str, seq_len: int,
                   dtype: str = "fp16", kv_dtype: str | None = None,
                   reserved_bytes: float = 0.0, ecc: bool = True) -> int:
    """Sequences of `seq_len` tokens whose KV cache fits beside the weights.

    floor((usable - weights - reserved) / KV bytes per sequence), with usable =
    `accelerator.usable_capacity(ecc)`: on a GDDR6 part with ECC on (the default), 15/16
    of `mem_capacity`; `ecc=False` counts all of it. 0 when the weights alone do not fit.
    `reserved_bytes` sets aside memory for activations, the runtime and fragmentation
    (`memory_report` estimates the activations).
    """
    m, acc = get_model(model), get_accelerator(accelerator)
    check_positive("seq_len", seq_len, integer=True)
    return requests_that_fit(usable_bytes(acc, ecc), m.weight_bytes(dtype),
                             m.kv_cache_bytes(seq_len, 1, kv_dtype or dtype), reserved_bytes)


def requests_that_fit(capacity_bytes: float, weight_bytes: float, kv_bytes_per_request: float,
                      reserved_bytes: float = 0.0) -> int:
    """Whole requests whose KV cache fits beside the weights: floor((C - W - R) / kv); 0 if none.

    The one count of what fits: `max_batch_size` (requests of seq_len tokens) and
    `batching.kv_capacity_tokens` (a token is a request of one) call it, both with C the
    accelerator's `usable_capacity(ecc)`. Bytes throughout."""
    check_positive("capacity_bytes", capacity_bytes)
    check_non_negative("weight_bytes", weight_bytes)
    check_positive("kv_bytes_per_request", kv_bytes_per_request)
    check_non_negative("reserved_bytes", reserved_bytes)
    free = capacity_bytes - weight_bytes - reserved_bytes
    return max(0, math.floor(free / kv_bytes_per_request))


def ffn_critical_batch(model: ModelConfig | str, accelerator: Accelerator | str,
                        dtype: str = "fp16") -> int:
    """Smallest decode batch at which the FFN matmuls turn compute bound on this part.

    For X (n, d) @ W (d, d_ff) with n << d, the intensity is about 2n / bytes per
    element, so n is near ridge * bytes / 2 (about 208 for fp16 on an A10). In an MoE
    layer each expert sees only n * k / E of the batch's tokens (routing spread
    evenly), so the batch must be E / k times larger for the experts to turn compute bound.
    """
    m, acc = get_model(model), get_accelerator(accelerator)
    dtype = normalize_dtype(dtype)
    ridge = acc.ridge_point(dtype)
    if matmul_cost(2**20, m.d_model, m.d_ff, dtype).intensity < ridge:
        raise ValueError(f"accelerator {acc.name}: no batch makes the FFN of {m.name} "
                         "compute bound")
    lo, hi = 1, 2**20
    while lo < hi:  # intensity grows with rows, so bisect for the first row count past the ridge
        mid = (lo + hi) // 2
        if matmul_cost(mid, m.d_model, m.d_ff, dtype).intensity >= ridge:
            hi = mid
        else:
            lo = mid + 1
    return math.ceil(lo * m.n_experts / m.experts_per_token)
