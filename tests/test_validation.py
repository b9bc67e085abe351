"""Bad inputs raise ValueError naming the argument; nothing silently wrong."""

import math

import pytest

import llmperf as lp


@pytest.mark.parametrize(
    "call, argument",
    [
        (lambda: lp.matmul_cost(0, 4, 4), "n"),
        (lambda: lp.matmul_cost(4, -1, 4), "k"),
        (lambda: lp.matmul_cost(4, 4, 2.5), "m"),
        (lambda: lp.attention_cost(0, 128), "seq_len"),
        (lambda: lp.attention_cost(16, 0), "d_head"),
        (lambda: lp.attention_cost(16, 64, heads=6, kv_heads=4), "heads"),
        (lambda: lp.get_model("llama-2-7b").kv_cache_bytes(tokens=0), "tokens"),
        (lambda: lp.get_model("llama-2-7b").kv_cache_bytes(tokens=10, batch=-2), "batch"),
        (lambda: lp.step_costs("llama-2-7b", "decode", batch=0, seq_len=8), "batch"),
        (lambda: lp.step_costs("llama-2-7b", "decode", seq_len=-5), "seq_len"),
        (lambda: lp.step_costs("llama-2-7b", "training", seq_len=8), "phase"),
        (lambda: lp.simple_latency("llama-2-7b", "A10", 0, 10), "prompt_tokens"),
        (lambda: lp.simple_latency("llama-2-7b", "A10", 10, float("nan")), "output_tokens"),
        (lambda: lp.max_batch_size("llama-2-7b", "A10", seq_len=0), "seq_len"),
        (lambda: lp.max_batch_size("llama-2-7b", "A10", 8, ecc="off"), "ecc"),
        (lambda: lp.memory_report("llama-2-7b", "A10", 0, 8), "batch"),
        (lambda: lp.memory_report("llama-2-7b", "A10", 1, 0), "seq_len"),
        (lambda: lp.memory_report("llama-2-7b", "A10", 1, 8, reserved_bytes=-1), "reserved"),
        (lambda: lp.memory_report("llama-2-7b", "A10", 1, 8, attention="flash"), "attention"),
        (lambda: lp.memory_report("llama-2-7b", "A10", 1, 8, prefill_tokens=0), "prefill_tokens"),
        (lambda: lp.OpRow("mystery", "other", lp.Cost(1.0, 1.0), 1), "kind"),
        (lambda: lp.OpRow("qk", "attention", lp.Cost(1.0, 1.0), 1, kind="gemm"), "kind"),
        (lambda: lp.OpRow("qk", "attention", lp.Cost(1.0, 1.0), 1, weight_bytes=0.0,
                          kv_bytes=2.0), "bytes"),
        (lambda: lp.attainable_flops(-1.0, "A10"), "intensity"),
        (lambda: lp.flash_attention_cost(1024, 128, sram_bytes=0), "sram_bytes"),
        (lambda: lp.softmax_cost(0), "seq_len"),
        (lambda: lp.attention_scores_cost(8, 64, kv_len=0), "kv_len"),
        (lambda: lp.fused_attention_cost(8, 64, window=0), "window"),
        (lambda: lp.attended_pairs(8, 4, causal=True), "kv_len"),
        (lambda: lp.step_costs("llama-2-7b", "decode", seq_len=8, attention="flash"), "attention"),
        (lambda: lp.step_costs("llama-2-7b", "decode", 1, 8).block_total("mlp"), "block"),
        (lambda: lp.step_costs("llama-2-7b", "decode", 1, 8).on("A1000"), "accelerator"),
        (lambda: lp.ModelConfig("x", 2, 64, 4, 128, 100, sliding_window=0), "sliding_window"),
        (lambda: lp.ModelConfig("x", 2, 64, 4, 128, 100, sliding_window=2.5), "sliding_window"),
        (lambda: lp.get_model("llama-2-7b").cached_tokens(0), "tokens"),
        (lambda: lp.storage_bytes(-1, "fp16"), "elements"),
        (lambda: lp.Table([], []), "columns"),
        (lambda: lp.Table(["a", "b"], [(1,)]), "rows"),
        (lambda: lp.Table(["a"], [(1,)], formats={"b": ".1f"}), "formats"),
        (lambda: lp.flash_attention_cost(1024, 128, sram_bytes=100), "sram_bytes"),
        (lambda: lp.Cost(-1.0, 0.0), "flops"),
        (lambda: lp.Cost(1.0, math.inf), "bytes"),
        (lambda: lp.ModelConfig("x", 0, 64, 4, 128, 100), "n_layers"),
        (lambda: lp.ModelConfig("x", 2, 64, 4, 128, 100, n_kv_heads=3), "n_heads"),
        (lambda: lp.ModelConfig("x", 2, 64, 4, 128, 100, ffn_kind="conv"), "ffn_kind"),
        (
            lambda: lp.ModelConfig("x", 2, 64, 4, 128, 100, n_experts=2, experts_per_token=3),
            "experts_per_token",
        ),
        (
            lambda: lp.Accelerator("x", {"fp16": 1e12}, mem_bandwidth=0, mem_capacity=1e9),
            "mem_bandwidth",
        ),
        (lambda: lp.Accelerator("x", {"fp17": 1e12}, mem_bandwidth=1e9, mem_capacity=1e9), "dtype"),
    ],
)
def test_bad_input_names_the_argument(call, argument):
    with pytest.raises(ValueError, match=argument):
        call()


@pytest.mark.parametrize("dtype", ["fp12", "int3", "", "float128"])
def test_unknown_dtype_lists_the_allowed_ones(dtype):
    with pytest.raises(ValueError, match="dtype must be one of"):
        lp.bytes_per_element(dtype)
    with pytest.raises(ValueError, match="dtype"):
        lp.matmul_cost(4, 4, 4, dtype=dtype)


def test_dtype_aliases_are_accepted():
    assert lp.bytes_per_element("bfloat16") == lp.bytes_per_element("bf16") == 2
    assert lp.bytes_per_element("float32") == 4
    assert lp.bytes_per_element("int4") == 0.5
    assert lp.storage_bytes(3, "int4") == 2 and lp.storage_bytes(4, "int4") == 2
    assert lp.storage_bytes(3, "bf16") == 6


def test_model_too_big_for_the_card_fits_zero_sequences():
    assert lp.max_batch_size("llama-2-70b", "A10", seq_len=4096) == 0


def test_step_costs_without_seq_len_names_it():
    # No silent default: a step's cost depends on the tokens it runs over or attends to.
    for phase in ("prefill", "decode"):
        with pytest.raises(TypeError, match="seq_len"):
            lp.step_costs("llama-2-7b", phase)
        with pytest.raises(TypeError, match="seq_len"):
            lp.step_costs("llama-2-7b", phase, batch=4, attention="fused")


def test_zero_cost_has_zero_intensity_not_nan():
    assert lp.Cost(0, 0).intensity == 0.0
    assert lp.Cost(1.0, 0).intensity == math.inf


@pytest.mark.parametrize(
    "formatter, argument",
    [
        (lp.format_bytes, "n_bytes"),
        (lp.format_flops, "flops"),
        (lp.format_flop_rate, "flop_per_s"),
        (lp.format_bandwidth, "bytes_per_s"),
        (lp.format_seconds, "seconds"),
    ],
)
@pytest.mark.parametrize("value", [math.nan, math.inf, -1.0, -1e-9])
def test_formatters_refuse_meaningless_values(formatter, argument, value):
    with pytest.raises(ValueError, match=argument):
        formatter(value)


def test_formatters_pick_readable_units():
    assert lp.format_seconds(0.0) == "0.00 s"
    assert lp.format_seconds(2.5e-8) == "25.00 ns"
    assert lp.format_seconds(3e-5) == "30.00 us"
    assert lp.format_seconds(0.02205) == "22.05 ms"
    assert lp.format_seconds(75.0) == "75.00 s"
    assert lp.format_flops(14.3e9) == "14.30 GFLOP"
    assert lp.format_bandwidth(600e9) == "600.00 GB/s"


def test_numpy_numbers_are_accepted_where_python_numbers_are():
    import numpy as np

    assert lp.format_bytes(np.int64(2**31)) == "2.15 GB"
    assert lp.matmul_cost(np.int64(4), 4, 4).flops == 128


def test_units_are_distinct():
    assert lp.GB == 1e9 and lp.GiB == 2**30
    assert lp.format_bytes(2**31) == "2.15 GB"
    assert lp.format_bytes(2**31, binary=True) == "2.00 GiB"
