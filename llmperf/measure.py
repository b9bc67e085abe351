"""Timing helpers, and measured prefill and decode of the reference transformer.

`benchmark` times any function (synchronising a GPU around each call);
`measure_prefill` and `measure_decode` time one forward step of a
`llmperf.transformer.Transformer` and turn the time into rates using the FLOPs
and bytes that `llmperf.layer_costs` counts for the same model, batch, length
and dtype: the analytic and the measured side share one definition of the work.
`measure_host` (from `llmperf.host`) measures the machine's roofline.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch

from .cost import Cost
from .host import matmul_flops, measure_host, stream_bandwidth
from .layers import layer_costs
from .models import ModelConfig
from .hardware import Accelerator
from .transformer import ATTENTION_KERNEL, Transformer, dtype_name, synchronize
from .units import check_non_negative, check_positive, format_seconds

__all__ = ["Timing", "Measurement", "benchmark", "measure_host", "measure_prefill",
           "measure_decode", "matmul_flops", "stream_bandwidth"]


@dataclass(frozen=True)
class Timing:
    """Seconds of repeated calls: median, fastest, interquartile range, every sample."""

    median_s: float
    min_s: float
    iqr_s: float
    samples_s: tuple[float, ...]
    threads: int

    @property
    def spread(self) -> float:
        """Interquartile range relative to the median (0.05 = 5 %)."""
        return self.iqr_s / self.median_s if self.median_s > 0 else 0.0

    def __str__(self) -> str:
        return (f"median {format_seconds(self.median_s)} (IQR {format_seconds(self.iqr_s)}, "
                f"min {format_seconds(self.min_s)}, {len(self.samples_s)} runs, {self.threads} threads)")


def benchmark(fn: Callable[[], object], warmup: int = 2, repeat: int = 10,
              device: str | torch.device | None = None) -> Timing:
    """Call fn() `warmup` times untimed, then `repeat` times timed, one by one.

    With a CUDA or MPS device, queued work is waited for before the clock starts
    and before it stops, so each sample is the call's real duration.
    """
    if not callable(fn):
        raise ValueError(f"fn must be callable, got {fn!r}")
    check_non_negative("warmup", warmup, integer=True)
    check_positive("repeat", repeat, integer=True)
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        samples.append(time.perf_counter() - start)
    q1, _, q3 = statistics.quantiles(samples, n=4) if len(samples) > 1 else (samples[0],) * 3
    return Timing(statistics.median(samples), min(samples), q3 - q1, tuple(samples),
                  torch.get_num_threads())


@dataclass(frozen=True)
class Measurement:
    """One timed forward step and its rates, from the analytic cost of the same step.

    tokens_per_s: tokens processed (prefill: batch * prompt_len) or generated
    (decode: batch) per second of median step time. flops_per_s and bytes_per_s:
    cost.flops and cost.bytes from `layer_costs` divided by the median time.
    The cost counts attention the way the model runs it (`ATTENTION_KERNEL`): a fused
    causal kernel in prefill, matmuls and a softmax in decode.
    """

    phase: str
    model: str
    batch: int
    seq_len: int
    dtype: str
    timing: Timing
    tokens: int
    cost: Cost
    config: ModelConfig | None = None

    def predicted_s(self, accelerator: Accelerator | str) -> float:
        """Roofline seconds of the same step (same model, shape, dtype and attention
        kernel) on `accelerator`, e.g. `measure_host()`: the prediction to set beside
        `timing.median_s`."""
        if self.config is None:
            raise ValueError("this Measurement carries no model config to predict from")
        return layer_costs(self.config, self.phase, self.batch, self.seq_len, self.dtype,
                           accelerator=accelerator, attention=ATTENTION_KERNEL[self.phase]).time_s

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.timing.median_s

    @property
    def flops_per_s(self) -> float:
        return self.cost.flops / self.timing.median_s

    @property
    def bytes_per_s(self) -> float:
        return self.cost.bytes / self.timing.median_s


def _model_for(model: Transformer | ModelConfig | str, batch: int, context: int) -> Transformer:
    if isinstance(model, Transformer):
        if batch > model.max_batch:
            raise ValueError(f"batch ({batch}) must be <= the model's max_batch ({model.max_batch})")
        if context > model.max_seq_len:
            raise ValueError(f"context of {context} tokens is beyond the model's max_seq_len "
                             f"({model.max_seq_len})")
        return model
    return Transformer(model, max_batch=batch, max_seq_len=context)


def _measure(model: Transformer, phase: str, batch: int, seq_len: int, tokens: torch.Tensor,
             start_pos: int, warmup: int, repeat: int) -> Measurement:
    with torch.inference_mode():
        timing = benchmark(lambda: model(tokens, start_pos, True, last_only=True),
                           warmup=warmup, repeat=repeat, device=model.device)
    dtype = dtype_name(model.dtype)
    cost = layer_costs(model.config, phase, batch, seq_len, dtype=dtype,
                       attention=ATTENTION_KERNEL[phase]).total
    count = batch * seq_len if phase == "prefill" else batch
    return Measurement(phase, model.config.name, batch, seq_len, dtype, timing, count, cost,
                       model.config)


def measure_prefill(model: Transformer | ModelConfig | str, prompt_len: int, batch: int = 1,
                    warmup: int = 1, repeat: int = 5, seed: int = 0) -> Measurement:
    """Time the prefill of `batch` random prompts of `prompt_len` tokens (logits of the last only).

    A config or name builds a fp32 CPU Transformer; pass a Transformer for another
    device or dtype.
    """
    check_positive("prompt_len", prompt_len, integer=True)
    check_positive("batch", batch, integer=True)
    m = _model_for(model, batch, prompt_len)
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, m.config.vocab_size, (batch, prompt_len), generator=gen).to(m.device)
    return _measure(m, "prefill", batch, prompt_len, tokens, 0, warmup, repeat)


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
    m = _model_for(model, batch, context_len + 1)
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, m.config.vocab_size, (batch, 1), generator=gen).to(m.device)
    return _measure(m, "decode", batch, context_len, tokens, context_len, warmup, steps)
