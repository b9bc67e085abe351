"""End-to-end latency models of one request, and how many requests fit.

Two models, from coarse to fine; both are optimistic estimates (every operator at
its datasheet peak or bandwidth), and neither is a bound on the other or on reality:
- `simple_latency`, the lecture's: prefill is compute bound, decode memory bound,
      time = S * 2P / FLOPS + G * 2P / BW
  (2P FLOPs per prompt token; all P parameters, 2P bytes in fp16, read per
  generated token; nothing else).
- `roofline_latency`: the sum of per-operator roofline times from `step_costs`,
  for the prefill and for every decode step as the KV cache grows. It adds what
  the simple model leaves out (attention's N^2 work, the KV cache reads, the
  element-wise operators) and drops what a step does not do: the embedding is a
  lookup of one row per token, not a read of the whole table, and the prefill runs
  the LM head for the last position only.

Which is larger depends on the context. For Llama 2 7B in fp16 on an A10, a decode
step costs 22.05 ms at 1 cached token and 22.35 ms at 350, below the simple model's
2P / BW = 22.46 ms, because the embedding table (262 MB) is not read; from 470
cached tokens the KV cache reads outweigh it and the per-step roofline is the larger.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..hardware import Accelerator, get_accelerator
from ..models import ModelConfig, get_model
from ..units import bytes_per_element, check_non_negative, check_positive, normalize_dtype
from .cost import matmul_cost
from .layers import step_costs


@dataclass(frozen=True)
class LatencyEstimate:
    """Seconds for one request: prefill (the time to first token) and the decode steps.

    decode_steps defaults to output_tokens - 1 (the prefill yields the first token);
    the lecture's simple model charges output_tokens steps instead.
    """

    prefill_s: float
    decode_s: float
    output_tokens: int
    decode_steps: int | None = None

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


def simple_latency(model: ModelConfig | str, accelerator: Accelerator | str, prompt_tokens: int,
                   output_tokens: int, dtype: str = "fp16") -> LatencyEstimate:
    """The lecture's model: S * 2P / peak FLOP/s + G * (P * bytes per parameter) / bandwidth.

    P counts the parameters a token uses (the active ones for MoE). With fp16
    weights the decode term is the lecture's G * 2P / BW. Like the lecture, it
    charges G decode steps for G generated tokens. An optimistic estimate under its
    two assumptions (prefill at the peak, decode at the bandwidth, reading every
    parameter and nothing else), not a lower bound: see the module docstring for
    when `roofline_latency` comes out below it.
    """
    m, acc = get_model(model), get_accelerator(accelerator)
    check_positive("prompt_tokens", prompt_tokens, integer=True)
    check_positive("output_tokens", output_tokens, integer=True)
    params = m.active_param_count()
    prefill_s = prompt_tokens * 2 * params / acc.peak(dtype)
    decode_s = output_tokens * params * bytes_per_element(dtype) / acc.mem_bandwidth
    return LatencyEstimate(prefill_s, decode_s, output_tokens, decode_steps=output_tokens)


def decode_step_time(model: ModelConfig | str, accelerator: Accelerator | str, context: int,
                     batch: int = 1, dtype: str = "fp16", kv_dtype: str | None = None,
                     attention: str = "standard") -> float:
    """Roofline seconds of one decode step with `context` >= 1 tokens already cached.

    There is no decode step with an empty cache: the first token comes from `prefill_time`.
    """
    step = step_costs(model, "decode", batch, context, dtype, kv_dtype, attention)
    return step.on(accelerator).time_s


def prefill_time(model: ModelConfig | str, accelerator: Accelerator | str, prompt_tokens: int,
                 batch: int = 1, dtype: str = "fp16", kv_dtype: str | None = None,
                 attention: str = "standard") -> float:
    """Roofline seconds of the prefill of `batch` prompts of `prompt_tokens` tokens."""
    return step_costs(model, "prefill", batch, prompt_tokens, dtype, kv_dtype,
                      attention).on(accelerator).time_s


def roofline_latency(model: ModelConfig | str, accelerator: Accelerator | str, prompt_tokens: int,
                     output_tokens: int, batch: int = 1, dtype: str = "fp16",
                     kv_dtype: str | None = None, attention: str = "standard") -> LatencyEstimate:
    """Per-step roofline model of a batch of identical requests.

    The prefill yields the first token; each of the remaining output_tokens - 1
    decode steps attends to the prompt plus the tokens generated so far. Each step
    is `step_costs(...).on(accelerator).time_s`: optimistic, not a bound.
    """
    check_positive("prompt_tokens", prompt_tokens, integer=True)
    check_positive("output_tokens", output_tokens, integer=True)
    prefill_s = prefill_time(model, accelerator, prompt_tokens, batch, dtype, kv_dtype, attention)
    decode_s = sum(
        decode_step_time(model, accelerator, prompt_tokens + step, batch, dtype, kv_dtype,
                         attention)
        for step in range(output_tokens - 1)
    )
    return LatencyEstimate(prefill_s, decode_s, output_tokens)


def recompute_latency(model: ModelConfig | str, accelerator: Accelerator | str, prompt_tokens: int,
                      output_tokens: int, batch: int = 1, dtype: str = "fp16",
                      kv_dtype: str | None = None, attention: str = "standard") -> LatencyEstimate:
    """Per-step roofline model of generation *without* a KV cache.

    Every token after the first re-runs a prefill over the whole sequence so far
    (prompt + tokens generated), so the work grows quadratically with the output.
    Compare `roofline_latency`, which keeps K and V and runs one-token decode steps.
    """
    check_positive("prompt_tokens", prompt_tokens, integer=True)
    check_positive("output_tokens", output_tokens, integer=True)
    prefill_s = prefill_time(model, accelerator, prompt_tokens, batch, dtype, kv_dtype, attention)
    decode_s = sum(
        prefill_time(model, accelerator, prompt_tokens + step, batch, dtype, kv_dtype, attention)
        for step in range(1, output_tokens)
    )
    return LatencyEstimate(prefill_s, decode_s, output_tokens)


def max_batch_size(model: ModelConfig | str, accelerator: Accelerator | str, seq_len: int,
                   dtype: str = "fp16", kv_dtype: str | None = None,
                   reserved_bytes: float = 0.0) -> int:
    """Sequences of `seq_len` tokens whose KV cache fits beside the weights.

    floor((capacity - weights - reserved) / KV bytes per sequence); 0 when the
    weights alone do not fit. `reserved_bytes` sets aside memory for activations,
    the runtime and fragmentation.
    """
    m, acc = get_model(model), get_accelerator(accelerator)
    check_positive("seq_len", seq_len, integer=True)
    return requests_that_fit(acc.mem_capacity, m.weight_bytes(dtype),
                             m.kv_cache_bytes(seq_len, 1, kv_dtype or dtype), reserved_bytes)


def requests_that_fit(capacity_bytes: float, weight_bytes: float, kv_bytes_per_request: float,
                      reserved_bytes: float = 0.0) -> int:
    """Whole requests whose KV cache fits beside the weights: floor((C - W - R) / kv); 0 if none.

    The one count of what fits: `max_batch_size` (requests of seq_len tokens) and
    `batching.kv_capacity_tokens` (a token is a request of one) call it. Bytes throughout."""
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
