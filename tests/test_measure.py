"""Timing helpers and the measured roofline: shapes of results and validation, never speed."""
import sys

import pytest
import torch

import llmperf as lp
from llmperf.measured.measure import (
    Measurement,
    Timing,
    benchmark,
    measure_decode,
    measure_host,
    measure_prefill,
)
from llmperf.measured.model import Transformer


def test_benchmark_returns_consistent_statistics():
    calls = []
    timing = benchmark(lambda: calls.append(1), warmup=3, repeat=7)
    assert isinstance(timing, Timing) and len(calls) == 10
    assert len(timing.samples_s) == 7 and all(s >= 0 for s in timing.samples_s)
    assert timing.min_s <= timing.median_s <= max(timing.samples_s)
    assert timing.iqr_s >= 0 and timing.spread >= 0
    assert timing.threads == torch.get_num_threads()
    assert "median" in str(timing)
    assert len(benchmark(lambda: None, warmup=0, repeat=1).samples_s) == 1


@pytest.mark.parametrize("kwargs,match", [(dict(warmup=-1), "warmup"), (dict(repeat=0), "repeat"),
                                          (dict(repeat=2.5), "repeat")])
def test_benchmark_rejects_bad_counts(kwargs, match):
    with pytest.raises(ValueError, match=match):
        benchmark(lambda: None, **kwargs)
    with pytest.raises(ValueError, match="fn"):
        benchmark(42)


def test_measure_host_quick_is_a_valid_accelerator():
    acc = measure_host(quick=True)
    assert isinstance(acc, lp.Accelerator) and "this machine" in acc.name
    assert acc.peak("fp32") > 1e8 and acc.mem_bandwidth > 1e8 and acc.mem_capacity > 1e8
    assert acc.ridge_point("fp32") > 0
    # every roofline tool takes it
    assert lp.decode_step_time("ref-tiny", acc, context=16, dtype="fp32") > 0
    assert lp.step_costs("ref-tiny", "prefill", 1, 16, dtype="fp32").on(acc).time_s > 0


def test_measure_host_rejects_unknown_dtypes():
    with pytest.raises(ValueError, match="dtype"):
        measure_host(dtypes=("fp8",), quick=True)
    with pytest.raises(ValueError, match="device"):
        measure_host(quick=True, device="tpu")


@pytest.fixture(scope="module")
def tiny():
    return Transformer("ref-tiny", max_seq_len=64)


def test_measure_decode_uses_the_analytic_cost_of_the_same_step(tiny):
    m = measure_decode(tiny, context_len=32, batch=2, steps=3)
    assert isinstance(m, Measurement) and m.phase == "decode" and m.tokens == 2
    assert m.cost == lp.step_costs("ref-tiny", "decode", 2, 32, dtype="fp32").total
    assert m.costs.attention == "standard" and m.costs.batch == 2 and m.costs.seq_len == 32
    assert m.tokens_per_s == pytest.approx(2 / m.timing.median_s)
    assert m.bytes_per_s == pytest.approx(m.cost.bytes / m.timing.median_s)
    assert len(m.timing.samples_s) == 3


def test_measure_prefill_counts_every_prompt_token(tiny):
    m = measure_prefill(tiny, prompt_len=16, batch=2, repeat=2)
    assert m.phase == "prefill" and m.tokens == 32 and m.dtype == "fp32"
    assert m.flops_per_s == pytest.approx(m.cost.flops / m.timing.median_s)
    fused = lp.step_costs("ref-tiny", "prefill", 2, 16, dtype="fp32", attention="fused")
    assert m.cost == fused.total
    built = measure_prefill("ref-tiny", prompt_len=8, repeat=1)  # a name builds a model
    assert built.model == "ref-tiny"


@pytest.mark.parametrize("call,match", [
    (lambda m: measure_decode(m, context_len=64), "context"),
    (lambda m: measure_decode(m, context_len=8, batch=0), "batch"),
    (lambda m: measure_decode(m, context_len=8, steps=0), "steps"),
    (lambda m: measure_decode(m, context_len=8, warmup=-1), "warmup"),
    (lambda m: measure_prefill(m, prompt_len=0), "prompt_len"),
    (lambda m: measure_prefill(m, prompt_len=65), "context"),
    (lambda m: measure_prefill(m, prompt_len=8, batch=1.5), "batch"),
    (lambda m: measure_prefill(Transformer("ref-tiny", device="meta"), prompt_len=8), "meta"),
])
def test_measurements_reject_bad_sizes(tiny, call, match):
    with pytest.raises(ValueError, match=match):
        call(tiny)


def test_import_llmperf_does_not_import_torch():
    import subprocess

    code = "import sys, llmperf; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_measurement_counts_attention_as_the_model_runs_it():
    model = Transformer("ref-tiny", max_seq_len=32)
    m = measure_prefill(model, prompt_len=32, batch=1, warmup=0, repeat=1)
    fused = lp.step_costs("ref-tiny", "prefill", 1, 32, dtype="fp32", attention="fused")
    assert model.attention_kernel["prefill"] == "fused"
    assert m.cost == fused.total
    standard = lp.step_costs("ref-tiny", "prefill", 1, 32, dtype="fp32", attention="standard")
    assert m.cost != standard.total  # the kernel changes the count, so the choice matters
    a10 = lp.get_accelerator("A10")
    assert m.predicted_s(a10) == pytest.approx(fused.on(a10).time_s)
    assert m.predicted_s("A10") > 0


def test_bf16_measurement_is_costed_in_bf16():
    model = Transformer("ref-tiny", max_seq_len=16, dtype="bf16")
    m = measure_decode(model, context_len=8, steps=1, warmup=0)
    assert m.dtype == "bf16"
    assert m.cost == lp.step_costs("ref-tiny", "decode", 1, 8, dtype="bf16").total


def test_stream_buffers_outgrow_the_cache_but_fit_in_memory():
    from llmperf.measured.host import _stream_buffer_bytes

    mib, gib = 2**20, 2**30
    assert _stream_buffer_bytes(32 * mib, 16 * gib, quick=False) >= 4 * 32 * mib
    # a guest that reports its host's whole L3 (480 MiB) on a 23 GiB machine
    assert _stream_buffer_bytes(480 * mib, 23 * gib, quick=False) <= 23 * gib / 16
    assert _stream_buffer_bytes(480 * mib, 8 * gib, quick=False) <= 8 * gib / 16
    assert _stream_buffer_bytes(480 * mib, 23 * gib, quick=True) <= 256 * mib
