"""Invariants of the cost and roofline models, checked on random inputs with hypothesis."""

from hypothesis import given, settings
from hypothesis import strategies as st

import llmperf as lp

sizes = st.integers(min_value=1, max_value=8192)
dtypes = st.sampled_from(["fp32", "fp16", "bf16", "int8"])
accelerators = st.sampled_from(lp.list_accelerators())
amounts = st.one_of(st.just(0.0), st.floats(1.0, 1e15))
costs = st.builds(lp.Cost, amounts, amounts)


@given(costs, costs)
def test_costs_add_componentwise(a, b):
    total = a + b
    assert total.flops == a.flops + b.flops and total.bytes == a.bytes + b.bytes
    assert sum([a, b]) == total


@given(costs, st.integers(0, 1000))
def test_scaling_a_cost_keeps_its_intensity(cost, factor):
    scaled = cost * factor
    assert scaled.flops == cost.flops * factor
    if factor and cost.bytes and cost.flops:
        assert abs(scaled.intensity - cost.intensity) <= 1e-9 * cost.intensity


@given(st.integers(1, 4096), st.integers(256, 8192), st.integers(256, 8192), dtypes)
def test_intensity_grows_with_batch_for_a_weight_bound_matmul(n, k, m, dtype):
    assert lp.matmul_cost(n + 1, k, m, dtype).intensity > lp.matmul_cost(n, k, m, dtype).intensity


@given(costs, accelerators)
def test_roofline_time_is_the_larger_of_its_two_terms(cost, name):
    acc = lp.get_accelerator(name)
    t = lp.roofline_time(cost, acc, "fp16")
    assert t == max(cost.flops / acc.peak("fp16"), cost.bytes / acc.mem_bandwidth)
    assert t >= 0
    assert (lp.bound(cost, acc) == "compute") == (
        cost.flops / acc.peak("fp16") > cost.bytes / acc.mem_bandwidth
    )


@given(st.floats(0, 1e5), accelerators)
def test_attainable_flops_never_exceeds_peak_or_bandwidth_line(intensity, name):
    acc = lp.get_accelerator(name)
    y = lp.attainable_flops(intensity, acc, "fp16")
    assert y <= acc.peak("fp16") and y <= intensity * acc.mem_bandwidth * (1 + 1e-12)


@given(sizes, sizes, sizes)
def test_matmul_cost_is_monotone_in_each_size(n, k, m):
    base = lp.matmul_cost(n, k, m)
    for bigger in (
        lp.matmul_cost(n + 1, k, m),
        lp.matmul_cost(n, k + 1, m),
        lp.matmul_cost(n, k, m + 1),
    ):
        assert bigger.flops > base.flops and bigger.bytes > base.bytes


@given(st.integers(1, 4096), st.sampled_from([32, 64, 128, 256]))
def test_attention_cost_is_monotone_in_length(n, d):
    a, b = lp.attention_cost(n, d), lp.attention_cost(n + 1, d)
    assert b.flops > a.flops and b.bytes > a.bytes


@settings(max_examples=25, deadline=None)
@given(
    st.sampled_from(["llama-2-7b", "llama-3-8b", "mixtral-8x7b", "gpt2"]),
    st.integers(1, 64),
    st.integers(1, 8192),
)
def test_decode_step_grows_with_context_and_batch(name, batch, context):
    t = lp.decode_step_time(name, "A10", context, batch)
    assert lp.decode_step_time(name, "A10", context + 64, batch) > t
    assert lp.decode_step_time(name, "A10", context, batch + 1) > t
    assert t > 0


@settings(max_examples=25, deadline=None)
@given(
    st.sampled_from(["llama-2-7b", "mistral-7b", "mixtral-8x7b", "opt-13b"]),
    st.sampled_from(["prefill", "decode"]),
    st.integers(1, 16),
    st.integers(1, 4096),
)
def test_step_total_is_the_sum_of_its_rows_and_blocks(name, phase, batch, seq_len):
    step = lp.step_costs(name, phase, batch, seq_len)
    total = step.total
    assert sum(r.flops for r in step) == total.flops
    blocks = sum(step.block_total(b).flops for b in ("attention", "ffn", "other"))
    assert abs(blocks - total.flops) <= 1e-9 * total.flops
    placed = step.on("A10")
    assert all(r.time_s > 0 for r in placed)
    assert placed.time_s >= max(total.flops / 125e12, total.bytes / 600e9) * (1 - 1e-12)


@given(st.integers(1, 40), st.integers(0, 40), st.one_of(st.none(), st.integers(1, 50)))
def test_attended_pairs_count_the_pairs_a_mask_allows(seq_len, extra_keys, window):
    kv_len = seq_len + extra_keys
    allowed = sum(
        1
        for p in range(extra_keys, kv_len)
        for key in range(p + 1)
        if window is None or p - key < window
    )
    assert lp.attended_pairs(seq_len, kv_len, causal=True, window=window) == allowed


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 20_000), st.integers(1, 8192))
def test_kv_cache_never_holds_more_than_the_window(tokens, window):
    m = lp.get_model("mistral-7b").with_(sliding_window=window)
    assert m.kv_cache_bytes(tokens) == min(tokens, window) * m.kv_bytes_per_token("fp16")


@given(
    st.lists(
        st.tuples(
            st.text("abcxyz _-.", max_size=8), st.integers(-(10**6), 10**6), st.floats(0, 1e12)
        ),
        max_size=6,
    )
)
def test_table_lines_line_up(rows):
    table = lp.Table(["name", "count", "size"], rows, formats={"size": lp.format_bytes})
    lines = str(table).splitlines()
    header, rule = lines[0], lines[1]
    assert len(lines) == len(rows) + 2
    # The numeric columns end where their rule segment ends.
    ends = [i + 1 for i, (a, b) in enumerate(zip(rule, rule[1:] + " ")) if a == "-" and b == " "]
    assert header.rstrip().endswith("size") and len(header.rstrip()) == ends[-1]
    for line in lines[2:]:
        assert len(line) == ends[-1]


@given(st.integers(1, 100_000), st.sampled_from(["fp16", "fp8", "int4"]))
def test_kv_cache_is_linear_in_tokens_and_batch(tokens, dtype):
    m = lp.get_model("llama-3-8b")
    assert m.kv_cache_bytes(tokens, batch=3, dtype=dtype) == 3 * tokens * m.kv_bytes_per_token(
        dtype
    )
