"""Fusion's byte counts and attention's traffic, against cases worked by hand."""
import math

import pytest

import llmperf as lp
from llmperf.analytic.fusion import (
    CHAINS,
    chain_cost,
    chain_costs,
    chain_table,
    decode_attention,
    flash_attention_accesses,
    flash_attention_order,
    splits_to_fill,
    standard_attention_accesses,
)


def test_chain_bytes_by_hand():
    # residual add + RMSNorm over 10 values in fp16, weight of 5 elements (10 bytes):
    # eager add (2 reads, 1 write), rms_norm (1, 1), weight multiply (1, 1) = 7 passes;
    # fused reads x and branch, writes h and y = 4 passes.
    c = chain_cost("residual_norm", 10, "fp16", extra_bytes=10)
    assert c.unfused.bytes == 7 * 10 * 2 + 10
    assert c.fused.bytes == 4 * 10 * 2 + 10
    assert c.saved_bytes == 60
    # rotary: x*cos (2), neg of half (1), cat (2), *sin (2), add (3) = 10 passes against 2
    r = chain_cost("rotary", 100, "fp32", instances=3)
    assert r.unfused.bytes == 3 * 10 * 100 * 4 and r.fused.bytes == 3 * 2 * 100 * 4
    assert r.kernels_saved == 3 * 4
    assert CHAINS["masked_softmax"].unfused_passes == 6
    assert CHAINS["swiglu_gate"].unfused_passes == 5


def test_fused_chains_are_the_cost_tables_rows():
    """The fused kernels move what llmperf.step_costs already charges for those operators."""
    for phase, seq in (("prefill", 512), ("decode", 1000)):
        rows = lp.step_costs("llama-2-7b", phase, batch=2, seq_len=seq)
        chains = {c.name: c for c in chain_costs("llama-2-7b", phase, batch=2, seq_len=seq)}
        assert chains["swiglu_gate"].fused.bytes == rows["activation"].bytes
        assert chains["rotary"].fused.bytes == rows["rope"].bytes
        assert chains["masked_softmax"].fused.bytes == rows["softmax"].bytes
        # two residual + norm pairs per layer; add and norm rows count 3 + 2 passes, fused 4
        pair = rows["attn_residual"].bytes + rows["ffn_norm"].bytes
        weights = 32 * 4096 * 2
        assert chains["residual_norm"].fused.bytes == pytest.approx(
            2 * ((pair - weights) * 4 / 5 + weights))


def test_llama_prefill_chain_bytes_by_hand():
    T, D, F, L = 2048, 4096, 11008, 32
    c = {x.name: x for x in chain_costs("llama-2-7b", "prefill", 1, T)}
    assert c["swiglu_gate"].unfused.bytes == L * 5 * T * F * 2
    assert c["rotary"].elements == T * (D + D)
    assert c["masked_softmax"].unfused.bytes == L * 6 * 32 * T * T * 2
    assert c["residual_norm"].instances == 2 * L
    fused = chain_costs("llama-2-7b", "prefill", 1, T, attention="fused")
    assert "masked_softmax" not in {x.name for x in fused}


def test_decode_chains_use_the_cached_keys():
    c = {x.name: x for x in chain_costs("mistral-7b", "decode", 1, 10_000)}
    assert c["masked_softmax"].elements == 32 * 4096  # the sliding window caps the keys


def test_chain_table_has_times_on_an_accelerator():
    text = chain_table("llama-2-7b", "decode", accelerator="A10").to_text()
    assert "time fused" in text and "masked_softmax" in text


def test_attention_accesses_by_hand():
    N, d = 1024, 64
    assert standard_attention_accesses(N, d) == 4 * N * N + 4 * N * d
    # 64 KiB of fp16 is M = 32,768 elements: queries outer, B_r = M / 4d = 128 (< N), so
    # 1024 / 128 = 8 query blocks, each reading K and V once
    assert flash_attention_accesses(N, d, 64 * 1024) == 2 * N * d + 2 * N * d * 8
    # A10 figure from chapter 4: 100 KiB, d = 128: B_r = floor(102400 / 1024) = 100
    N = 4096
    assert flash_attention_accesses(N, 128, 100 * 1024) == 2 * N * 128 * (1 + math.ceil(N / 100))
    assert flash_attention_order(N, 128, 100 * 1024) == N**2 * 128**2 / 51200


def test_flash_accesses_scale_as_the_theorem_says():
    """Theta(N^2 d^2 / M) while B_r < N: doubling M halves the quadratic term."""
    N, d = 8192, 128
    small, large = (flash_attention_accesses(N, d, m) - 2 * N * d for m in (32 * 1024, 64 * 1024))
    assert small / large == pytest.approx(2.0, rel=0.02)
    ratio = flash_attention_accesses(N, d, 32 * 1024) / flash_attention_order(N, d, 32 * 1024)
    assert 1 < ratio < 20  # within a constant of the order


def test_decode_attention_split_k_by_hand():
    # Llama 2 7B, 32 heads, batch 1 on 72 SMs: 32 pieces, 32/72 of the bandwidth
    d = decode_attention("llama-2-7b", "A10", kv_len=4096, sms=72)
    kv = 2 * 32 * 4096 * 128 * 2
    assert d.bytes == kv + 2 * 32 * 128 * 2
    assert d.busy_fraction == pytest.approx(32 / 72)
    assert splits_to_fill("llama-2-7b", 72) == 3
    split = decode_attention("llama-2-7b", "A10", kv_len=4096, sms=72, splits=3)
    assert split.busy_fraction == 1.0
    assert d.time_s / split.time_s == pytest.approx(72 / 32)
    assert splits_to_fill("llama-2-7b", 72, batch=4) == 1


def test_validation():
    with pytest.raises(ValueError, match="name"):
        chain_cost("gelu", 10)
    with pytest.raises(ValueError, match="elements"):
        chain_cost("rotary", 0)
    with pytest.raises(ValueError, match="splits"):
        decode_attention("llama-2-7b", "A10", kv_len=4, sms=72, splits=5)
    with pytest.raises(ValueError, match="phase"):
        chain_costs("llama-2-7b", "train")
