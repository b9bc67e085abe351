"""The lecture's numbers, reproduced through llmperf's public API."""

import pytest

import llmperf as lp


def test_a10_ridge_point_is_125_tflops_over_600_gbs():
    a10 = lp.get_accelerator("A10")
    assert a10.ridge_point("fp16") == pytest.approx(125e12 / 600e9)
    assert round(a10.ridge_point("fp16"), 1) == 208.3


def test_standard_attention_intensity_is_62_at_d128_n4096():
    cost = lp.attention_cost(seq_len=4096, d_head=128, dtype="fp16")
    d, n = 128, 4096
    assert cost.flops == 2 * d * n * n + 3 * n * n + 2 * n * n * d
    assert (
        cost.bytes
        == 2 * 2 * d * n + 2 * n * n + 2 * n * n + 2 * n * n + 2 * (n * n + n * d) + 2 * n * d
    )
    assert round(cost.intensity, 1) == 62.4


def test_attention_simplified_forms():
    d, n = 64, 1000
    cost = lp.attention_cost(seq_len=n, d_head=d)
    assert cost.flops == (4 * d + 3) * n * n
    assert cost.bytes == 8 * n * n + 8 * n * d


def test_square_gemm_is_1365_flop_per_byte():
    cost = lp.matmul_cost(4096, 4096, 4096, dtype="fp16")
    assert cost.flops == 2 * 4096**3
    assert cost.bytes == 2 * 3 * 4096**2
    assert round(cost.intensity, 1) == 1365.3


def test_gemv_is_about_one_flop_per_byte():
    assert lp.matmul_cost(1, 4096, 4096, dtype="fp16").intensity == pytest.approx(1.0, rel=1e-3)
    a10 = lp.get_accelerator("A10")
    assert lp.bound(lp.matmul_cost(1, 4096, 4096), a10) == "memory"
    assert lp.bound(lp.matmul_cost(4096, 4096, 4096), a10) == "compute"


def test_kv_cache_is_2_2_layers_d_tokens_bytes():
    llama = lp.get_model("llama-2-7b")
    layers, d, n = 32, 4096, 4096
    assert llama.kv_cache_bytes(tokens=n, dtype="fp16") == 2 * 2 * layers * d * n == 2_147_483_648
    assert llama.kv_cache_bytes(tokens=n, dtype="fp16") == 2 * lp.GiB


def test_kv_cache_under_gqa_uses_kv_heads():
    llama3 = lp.get_model("llama-3-8b")  # 8 KV heads of 128 against 32 query heads
    assert llama3.kv_bytes_per_token("fp16") == 2 * 2 * 32 * 8 * 128
    assert llama3.kv_bytes_per_token("fp16") * 4 == lp.get_model("llama-2-7b").kv_bytes_per_token(
        "fp16"
    )


def test_llama_2_7b_param_count():
    assert lp.get_model("llama-2-7b").param_count() == 6_738_415_616


def test_simple_model_has_the_lectures_two_terms():
    llama, a10 = lp.get_model("llama-2-7b"), lp.get_accelerator("A10")
    params = 6_738_415_616
    est = lp.simple_latency(llama, a10, prompt_tokens=350, output_tokens=150)
    assert est.prefill_s == pytest.approx(350 * 2 * params / 125e12)
    # The prefill yields the first of the 150 tokens: 149 decode steps of 2P / BW each,
    # 149 * 13.477e9 B / 600e9 B/s = 3.347 s. The lecture's G * 2P / BW (3.369 s) rounds
    # the first token's step in.
    assert est.decode_steps == 149
    assert est.decode_s == pytest.approx(149 * 2 * params / 600e9)
    assert round(est.decode_s, 3) == 3.347
    assert est.total_s == pytest.approx(est.prefill_s + est.decode_s)
    # Decode dominates: about 3.35 s of the 3.38 s total on an A10.
    assert est.decode_s > 50 * est.prefill_s


def test_the_simple_decode_step_is_2p_over_bw():
    params = 6_738_415_616
    step = lp.simple_decode_step_time("llama-2-7b", "A10")
    assert step == pytest.approx(2 * params / 600e9)
    assert round(step * 1e3, 2) == 22.46
    # One output token is the prefill's: no decode step at all. Two tokens: one step.
    one = lp.simple_latency("llama-2-7b", "A10", 1, 1)
    assert one.decode_s == 0 and one.decode_steps == 0 and one.tpot_s == 0
    assert lp.simple_latency("llama-2-7b", "A10", 1, 2).tpot_s == pytest.approx(step)
    # int8 weights: half the bytes per step; MoE: only the active parameters are read.
    assert lp.simple_decode_step_time("llama-2-7b", "A10", "int8") == pytest.approx(step / 2)
    mixtral = lp.get_model("mixtral-8x7b")
    assert lp.simple_decode_step_time(mixtral, "A10") == pytest.approx(
        2 * mixtral.active_param_count() / 600e9)


def test_simple_and_roofline_models_charge_the_same_decode_steps():
    for output_tokens in (1, 2, 150):
        simple = lp.simple_latency("llama-2-7b", "A10", 350, output_tokens)
        roof = lp.roofline_latency("llama-2-7b", "A10", 350, output_tokens)
        assert simple.decode_steps == roof.decode_steps == output_tokens - 1


def test_per_step_roofline_is_below_the_simple_decode_term_at_the_lectures_context():
    # Lecture example: 350 prompt tokens on the A10. The simple model charges 2P / BW per
    # decode step; the per-step roofline reads fewer bytes at this context (no
    # embedding table, only 350 tokens of KV cache), so "lower bound" would be wrong.
    params = 6_738_415_616
    per_token_simple = 2 * params / 600e9
    est = lp.simple_latency("llama-2-7b", "A10", prompt_tokens=350, output_tokens=150)
    assert est.tpot_s == pytest.approx(per_token_simple)
    assert lp.decode_step_time("llama-2-7b", "A10", 350) < per_token_simple
    assert lp.decode_step_time("llama-2-7b", "A10", 3500) > per_token_simple


def test_about_four_or_five_requests_of_4k_fit_on_an_a10():
    llama, a10 = lp.get_model("llama-2-7b"), lp.get_accelerator("A10")
    # The A10's "24 GB" is 24 GiB of GDDR6. With ECC on (the default), 1/16 holds check
    # bits: 22.5 GiB = 24.159e9 B are usable, and (24.159e9 - 13.477e9) / 2.147e9 = 4.97,
    # so four fit. ECC off, the whole 25.770e9 B: (25.770e9 - 13.477e9) / 2.147e9 = 5.72,
    # five: the lecture's "about 5".
    assert a10.mem_capacity == 24 * lp.GiB
    assert a10.usable_capacity() == 22.5 * lp.GiB
    assert lp.max_batch_size(llama, a10, seq_len=4096) == 4
    assert lp.max_batch_size(llama, a10, seq_len=4096, ecc=False) == 5
    # Read as 24e9 bytes, or with 2 GB kept for the runtime and activations, four fit
    # even with ECC off: the GB/GiB gap and the reserve that the batching chapter explains.
    decimal_card = lp.Accelerator("A10 (24e9 B)", dict(a10.peak_flops), a10.mem_bandwidth, 24e9)
    assert lp.max_batch_size(llama, decimal_card, seq_len=4096) == 4
    assert lp.max_batch_size(llama, a10, seq_len=4096, reserved_bytes=2 * lp.GB, ecc=False) == 4


def test_shorter_requests_fit_by_the_usable_memory():
    # 640-token requests of Llama 2 7B: 640 * 524,288 B = 335.5 MB of KV each.
    # ECC on: (24,159,191,040 - 13,476,831,232) / 335,544,320 = 31.8 -> 31.
    # ECC off: (25,769,803,776 - 13,476,831,232) / 335,544,320 = 36.6 -> 36.
    assert lp.max_batch_size("llama-2-7b", "A10", 640) == 31
    assert lp.max_batch_size("llama-2-7b", "A10", 640, ecc=False) == 36
    # Tokens of KV: 10,682,359,808 / 524,288 = 20,374.9 and 12,292,972,544 / 524,288 = 23,446.9.
    from llmperf.analytic import batching as bt

    assert bt.kv_capacity_tokens("llama-2-7b", "A10") == 20_374
    assert bt.kv_capacity_tokens("llama-2-7b", "A10", ecc=False) == 23_446
    # HBM keeps its ECC bits aside: an A100's count is the same either way.
    for ecc in (True, False):
        assert lp.max_batch_size("llama-2-7b", "A100 SXM 80GB", 640, ecc=ecc) == (
            (80 * 2**30 - 13_476_831_232) // 335_544_320)
