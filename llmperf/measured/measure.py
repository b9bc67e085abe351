"""Measured prefill and decode steps of the reference model, beside their analytic cost.

`measure_prefill` and `measure_decode` time one forward step of a
`llmperf.measured.model.Transformer` and turn the time into rates using the FLOPs and bytes
that `Transformer.step_costs` counts for the same model, batch, length, dtype and
attention kernel: the analytic and the measured side share one definition of the
work. `benchmark` (from `llmperf.measured.timing`) times any function; `measure_host` (from
`llmperf.measured.host`) measures the machine's roofline.
`windows` cuts a token stream into the evaluation windows the experiments and the trained
models' evaluation share. The experiments themselves are in `llmperf.measured.experiments`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..analytic.cost import Cost
from ..analytic.layers import StepCosts
from ..hardware import Accelerator
from ..models import ModelConfig
from ..units import check_positive
from .cache import KVCache
from .host import matmul_flops, measure_host, stream_bandwidth
from .model import Transformer
from .timing import Timing, benchmark

__all__ = ["Timing", "Measurement", "benchmark", "measure_host", "measure_prefill",
           "measure_decode", "matmul_flops", "stream_bandwidth"]


@dataclass(frozen=True)
class Measurement:
    """One timed forward step and its rates, from the analytic cost of the same step.

    tokens_per_s: tokens processed (prefill: batch * prompt_len) or generated
    (decode: batch) per second of median step time. flops_per_s and bytes_per_s:
    the FLOPs and bytes of `costs` (the model's `step_costs`) over the median time.
    """

    phase: str
    model: str
    batch: int
    seq_len: int
    dtype: str
    timing: Timing
    tokens: int
    costs: StepCosts

    @property
    def cost(self) -> Cost:
        """FLOPs and bytes of the whole step."""
        return self.costs.total

    def predicted_s(self, accelerator: Accelerator | str) -> float:
        """Roofline seconds of the same step (same model, shape, dtype and attention
        kernel) on `accelerator`, e.g. `measure_host()`: the prediction to set beside
        `timing.median_s`."""
        return self.costs.on(accelerator).time_s

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.timing.median_s

    @property
    def flops_per_s(self) -> float:
        return self.cost.flops / self.timing.median_s

    @property
    def bytes_per_s(self) -> float:
        return self.cost.bytes / self.timing.median_s


def _model_for(model: Transformer | ModelConfig | str, context: int) -> Transformer:
    if isinstance(model, Transformer):
        if model.device.type == "meta":
            raise ValueError("model must hold weights to be timed, got one on the meta device")
        if context > model.max_seq_len:
            raise ValueError(f"context of {context} tokens is beyond the model's max_seq_len "
                             f"({model.max_seq_len})")
        return model
    return Transformer(model, max_seq_len=context)


def _measure(model: Transformer, phase: str, seq_len: int, tokens: torch.Tensor, start_pos: int,
             warmup: int, repeat: int) -> Measurement:
    batch = tokens.shape[0]
    cache = KVCache(model, batch, start_pos + tokens.shape[1])
    with torch.inference_mode():
        timing = benchmark(lambda: model(tokens, start_pos, cache, last_only=True),
                           warmup=warmup, repeat=repeat, device=model.device)
    costs = model.step_costs(phase, batch=batch, seq_len=seq_len)
    count = batch * seq_len if phase == "prefill" else batch
    return Measurement(phase, model.config.name, batch, seq_len, costs.dtype, timing, count, costs)


def _random_tokens(model: Transformer, batch: int, length: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, model.config.vocab_size, (batch, length), generator=gen)
    return tokens.to(model.device)


def measure_prefill(model: Transformer | ModelConfig | str, prompt_len: int, batch: int = 1,
                    warmup: int = 1, repeat: int = 5, seed: int = 0) -> Measurement:
    """Time the prefill of `batch` random prompts of `prompt_len` tokens (logits of the last only).

    A config or name builds a fp32 CPU Transformer; pass a Transformer for another
    device or dtype.
    """
    check_positive("prompt_len", prompt_len, integer=True)
    check_positive("batch", batch, integer=True)
    m = _model_for(model, prompt_len)
    tokens = _random_tokens(m, batch, prompt_len, seed)
    return _measure(m, "prefill", prompt_len, tokens, 0, warmup, repeat)


def measure_decode(model: Transformer | ModelConfig | str, context_len: int, batch: int = 1,
                   steps: int = 8, warmup: int = 2, seed: int = 0) -> Measurement:
    """Time one decode step: a new token for each of `batch` sequences after `context_len` cached.

    Each of the `steps` timed calls repeats the same step (position context_len), so
    every sample does the same work. The cache holds whatever it holds: the values
    of keys and values change no FLOP or byte.
    """
    check_positive("context_len", context_len, integer=True)
    check_positive("batch", batch, integer=True)
    check_positive("steps", steps, integer=True)
    m = _model_for(model, context_len + 1)
    tokens = _random_tokens(m, batch, 1, seed)
    return _measure(m, "decode", context_len, tokens, context_len, warmup, steps)


def windows(tokens: torch.Tensor, seq_len: int = 256,
            max_windows: int | None = None) -> torch.Tensor:
    """(N, seq_len + 1) consecutive windows of 1-D `tokens` (the first max_windows of them)."""
    check_positive("seq_len", seq_len, integer=True)
    if tokens.dim() != 1:
        raise ValueError(f"tokens must be 1-D, got shape {tuple(tokens.shape)}")
    n = (len(tokens) - 1) // seq_len
    if max_windows is not None:
        check_positive("max_windows", max_windows, integer=True)
        n = min(n, max_windows)
    if n == 0:
        raise ValueError(f"tokens must hold more than seq_len = {seq_len} tokens")
    return torch.stack([tokens[i * seq_len:i * seq_len + seq_len + 1] for i in range(n)])
