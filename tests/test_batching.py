"""The closed forms of llmperf.analytic.batching against step_costs, and their edge cases."""
import math

import pytest

import llmperf as lp
from llmperf.analytic import batching as bt

# Dense catalog models of 7B parameters and more: there the embedding table is a few percent
# of P and the activations are small beside the weights, which is what the forms assume.
LARGE = ("llama-2-7b", "llama-2-13b", "llama-3-8b", "opt-13b", "llama-2-70b", "llama-3-70b")
BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def _contexts(m):
    return (1, 128, 512, 2048, m.max_seq_len - 1)


@pytest.mark.parametrize("name", LARGE)
@pytest.mark.parametrize("attention", lp.ATTENTION_ALGORITHMS)
def test_step_intensity_matches_step_costs(name, attention):
    """Within 11 % up to B = 64, within 25 % up to B = 256 (the activations the form omits
    grow like B / D)."""
    m = lp.get_model(name)
    for batch in BATCHES:
        for n in _contexts(m):
            counted = lp.step_costs(m, "decode", batch, n, attention=attention).total.intensity
            closed = bt.decode_step_intensity(m, batch, n)
            assert closed == pytest.approx(counted, rel=0.11 if batch <= 64 else 0.25), (batch, n)


@pytest.mark.parametrize("name", LARGE)
def test_step_flops_match_step_costs(name):
    """FLOPs: 2P per token plus 4LNhd; step_costs adds norms, softmax, RoPE (under 8 %)."""
    m = lp.get_model(name)
    for batch in (1, 16, 256):
        for n in _contexts(m):
            flops, _ = bt.decode_step_flops_bytes(m, batch, n)
            counted = lp.step_costs(m, "decode", batch, n).total.flops
            assert flops == pytest.approx(counted, rel=0.08)


def test_step_formula_by_hand():
    m = lp.get_model("llama-2-7b")
    P, L, h, d = m.param_count(), 32, 32, 128
    B, N = 8, 1000
    flops, moved = bt.decode_step_flops_bytes(m, B, N)
    assert flops == B * (2 * P + 4 * L * N * h * d)
    assert moved == 2 * P + 2 * 2 * L * N * h * d * B
    assert bt.decode_step_intensity(m, B, N) == flops / moved


def test_intensity_grows_with_batch_towards_the_limit():
    for name in LARGE:
        m = lp.get_model(name)
        for n in (128, 2048):
            values = [bt.decode_step_intensity(m, b, n) for b in BATCHES]
            assert values == sorted(values)
            limit = bt.decode_intensity_limit(m, n)
            assert values[-1] < limit
            assert bt.decode_step_intensity(m, 10**9, n) == pytest.approx(limit, rel=1e-5)


@pytest.mark.parametrize("name", LARGE + ("ref-small", "ref-tiny"))
def test_attention_intensity_is_h_over_hkv(name):
    """Fused (no score traffic) within 3 %. The standard algorithm also writes and reads the
    scores and probabilities, 4bhN bytes per layer beside the 2bh_kv dN of K and V: it matches
    the form divided by 1 + 2h / (h_kv d), within 3 %."""
    m = lp.get_model(name)
    closed = bt.decode_attention_intensity(m)
    assert closed == m.n_heads / m.n_kv_heads  # fp16: 2h / (2 h_kv)
    for batch in (1, 64):
        for n in (512, 2000):
            score_traffic = 2 * m.n_heads / (m.n_kv_heads * m.d_head)
            for attention, expected in (("fused", closed),
                                        ("standard", closed / (1 + score_traffic))):
                rows = [r for r in lp.step_costs(m, "decode", batch, n, attention=attention)
                        if r.name in ("qk", "softmax", "sv", "attention")]
                counted = sum(r.flops for r in rows) / sum(r.bytes for r in rows)
                assert expected == pytest.approx(counted, rel=0.03), (batch, n, attention)


def test_attention_intensity_with_an_int8_cache():
    assert bt.decode_attention_intensity("llama-3-8b", kv_dtype="int8") == 8.0


def test_critical_batch():
    a10 = lp.get_accelerator("A10")
    llama = lp.get_model("llama-2-7b")
    b1 = bt.step_critical_batch(llama, a10, 1)
    # near the FFN's own critical batch at a tiny context
    assert abs(b1 - lp.ffn_critical_batch(llama, a10)) / lp.ffn_critical_batch(llama, a10) < 0.1
    for n in (1, 32, 64):
        b = bt.step_critical_batch(llama, a10, n)
        ridge = a10.ridge_point("fp16")
        assert bt.decode_step_intensity(llama, b, n) >= ridge
        assert b == 1 or bt.decode_step_intensity(llama, b - 1, n) < ridge
    # past the context where the ceiling drops below the ridge, no batch is enough
    assert bt.decode_intensity_limit(llama, 4096) < a10.ridge_point("fp16")
    assert bt.step_critical_batch(llama, a10, 4096) is None
    # grouped-query attention keeps a critical batch at longer contexts
    assert bt.step_critical_batch("llama-3-8b", a10, 256) is not None
    assert bt.step_critical_batch(llama, a10, 256) is None


def test_moe_is_refused():
    with pytest.raises(ValueError, match="mixture of experts"):
        bt.decode_step_intensity("mixtral-8x7b", 8, 100)


def test_sliding_window_caps_the_context():
    m = lp.get_model("mistral-7b")
    assert bt.decode_step_intensity(m, 8, 20000) == bt.decode_step_intensity(m, 8, 4096)


def test_kv_capacity_tokens_matches_max_batch_size():
    for name, acc in (("opt-13b", "A100 SXM 40GB"), ("llama-2-7b", "A10"),
                      ("llama-3-8b", "L4"), ("llama-2-70b", "H100 SXM")):
        assert bt.kv_capacity_tokens(name, acc) == lp.max_batch_size(name, acc, 1)
        assert (bt.kv_capacity_tokens(name, acc, ecc=False)
                == lp.max_batch_size(name, acc, 1, ecc=False))
    assert bt.kv_capacity_tokens("llama-2-70b", "A10") == 0


def test_requests_that_fit():
    m = lp.get_model("llama-2-7b")
    a10 = lp.get_accelerator("A10")
    fit = lp.requests_that_fit(a10.mem_capacity, m.weight_bytes(), m.kv_cache_bytes(4096))
    assert fit == lp.max_batch_size(m, a10, 4096, ecc=False) == 5
    usable = lp.requests_that_fit(a10.usable_capacity(), m.weight_bytes(), m.kv_cache_bytes(4096))
    assert usable == lp.max_batch_size(m, a10, 4096) == 4
    # the study's round numbers: 40 GB - 26 GB leaves 14 GB, 1 MB per token
    assert lp.requests_that_fit(40e9, 26e9, 1e6) == 14_000
    assert lp.requests_that_fit(10e9, 26e9, 1e6) == 0
    assert math.isclose(lp.requests_that_fit(40e9, 26e9, 1e6, reserved_bytes=4e9), 10_000)
