"""Tiled attention equals the standard algorithm; the chains run; the memory meter counts."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from llmperf.measured.kernels import (
    SoftmaxState,
    causal_mask,
    chain_inputs,
    flash_attention,
    online_softmax_update,
    peak_tensor_bytes,
    standard_attention,
)


def _qkv(n_q, n_k, d, seed, heads=2, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, heads, n, d, generator=g, dtype=dtype) for n in (n_q, n_k, n_k)]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 150), d=st.sampled_from([1, 4, 16]), block=st.integers(1, 70),
       causal=st.booleans(), seed=st.integers(0, 2**16))
def test_flash_equals_standard_any_length_and_block(n, d, block, causal, seed):
    q, k, v = _qkv(n, n, d, seed)
    expected = standard_attention(q, k, v, causal=causal)
    torch.testing.assert_close(flash_attention(q, k, v, causal=causal, block_size=block),
                               expected, rtol=1e-5, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(n_q=st.integers(1, 40), extra=st.integers(0, 90), block=st.integers(1, 33),
       seed=st.integers(0, 2**16))
def test_flash_causal_with_more_keys_than_queries(n_q, extra, block, seed):
    """Queries at the end of a longer key sequence (a chunk after cached tokens)."""
    q, k, v = _qkv(n_q, n_q + extra, 8, seed)
    torch.testing.assert_close(flash_attention(q, k, v, causal=True, block_size=block),
                               standard_attention(q, k, v, causal=True), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("n", [1, 63, 64, 65, 130, 200])
def test_both_match_pytorch_sdpa_in_fp32(n, causal):
    q, k, v = _qkv(n, n, 32, seed=n, dtype=torch.float32)
    reference = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    torch.testing.assert_close(standard_attention(q, k, v, causal), reference, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(flash_attention(q, k, v, causal, block_size=64), reference,
                               rtol=1e-4, atol=1e-5)


def test_half_precision_output_keeps_dtype():
    q, k, v = _qkv(70, 70, 16, seed=1, dtype=torch.bfloat16)
    out = flash_attention(q, k, v, causal=True, block_size=32)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), standard_attention(q, k, v, True).float(),
                               rtol=2e-2, atol=2e-2)


def test_fully_masked_block_changes_nothing():
    """A block whose scores are all -inf (masked) leaves the running state as it was, with no
    NaN; and a row that has seen only masked scores stays empty until a visible one arrives."""
    g = torch.Generator().manual_seed(0)
    state = SoftmaxState.empty((3,), 4, torch.device("cpu"))
    masked = torch.full((3, 5), -math.inf)
    values = torch.randn(5, 4, generator=g)
    state = online_softmax_update(state, masked, values)
    assert torch.all(state.row_max == -math.inf) and torch.all(state.row_sum == 0)
    assert torch.all(state.acc == 0)
    scores = torch.randn(3, 5, generator=g)
    state = online_softmax_update(state, scores, values)
    after = online_softmax_update(state, masked, values)
    for a, b in ((after.row_max, state.row_max), (after.row_sum, state.row_sum),
                 (after.acc, state.acc)):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(after.output(), torch.softmax(scores, -1) @ values)


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(1, 9), min_size=1, max_size=6), seed=st.integers(0, 2**16))
def test_online_softmax_over_any_split_is_the_softmax(sizes, seed):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(2, sum(sizes), generator=g, dtype=torch.float64) * 10
    values = torch.randn(sum(sizes), 3, generator=g, dtype=torch.float64)
    state = SoftmaxState.empty((2,), 3, torch.device("cpu"))
    start = 0
    for size in sizes:
        state = online_softmax_update(state, scores[:, start:start + size],
                                      values[start:start + size])
        start += size
    torch.testing.assert_close(state.output().double(), torch.softmax(scores, -1) @ values,
                               rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(state.row_max.double(), scores.amax(-1).float().double())


def test_causal_mask_aligns_queries_to_the_last_keys():
    assert causal_mask(2, 4).tolist() == [[True, True, True, False], [True, True, True, True]]
    assert torch.equal(causal_mask(3, 3), torch.ones(3, 3, dtype=torch.bool).tril())


def test_invalid_inputs_raise():
    q, k, v = _qkv(5, 3, 4, seed=0)
    with pytest.raises(ValueError, match="causal"):
        flash_attention(q, k, v, causal=True)
    with pytest.raises(ValueError, match="block_size"):
        flash_attention(q, k, v, block_size=0)
    with pytest.raises(ValueError, match="head size"):
        standard_attention(q, k[..., :2], v)


def test_peak_tensor_bytes_counts_what_is_alive_at_once():
    x = torch.zeros(1000)  # an input: not counted

    def two_then_one(t):
        a = t + 1          # 4,000 bytes
        b = a * 2          # 8,000 alive
        del a
        return b.sum()     # 4,000 + 4

    assert peak_tensor_bytes(two_then_one, x) == 8000


def test_standard_attention_holds_the_scores_and_tiled_does_not():
    n, d, heads = 256, 16, 2
    q, k, v = _qkv(n, n, d, seed=0, heads=heads, dtype=torch.float32)
    scores = heads * n * n * 4
    assert peak_tensor_bytes(standard_attention, q, k, v) >= 2 * scores  # S and P together
    assert peak_tensor_bytes(lambda *a: flash_attention(*a, block_size=32), q, k, v) < scores / 4


def test_chains_run_and_keep_shapes():
    inputs = chain_inputs("ref-tiny", tokens=8)
    assert set(inputs) == {"residual_norm", "swiglu_gate", "rotary", "masked_softmax"}
    h, y = inputs["residual_norm"].fn(*inputs["residual_norm"].args)
    assert h.shape == y.shape == (8, 128)
    assert inputs["swiglu_gate"].fn(*inputs["swiglu_gate"].args).shape == (8, 352)
    probs = inputs["masked_softmax"].fn(*inputs["masked_softmax"].args)
    torch.testing.assert_close(probs.sum(-1), torch.ones(1, 4, 8))
    assert probs[0, 0, 0, 1] == 0  # the first query sees only the first key
