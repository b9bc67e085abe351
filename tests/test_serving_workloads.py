"""Workload generators, goodput and properties of every simulated run."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmperf.serving import (
    Exponential,
    Fixed,
    LinearStepTime,
    LogNormal,
    Request,
    Uniform,
    chat_workload,
    goodput,
    simulate,
    throughput_workload,
    workload,
)

UNIT = LinearStepTime(base_s=1.0, per_token_s=0.0, per_kv_token_s=0.0)


def truncated_mean(mean, cap):
    """Mean of ceil(X), X exponential with mean `mean` redrawn until X <= cap.

    K = ceil(X) is geometric: P(K = k) = q^(k-1) (1 - q), q = exp(-1/mean). Given K <= cap
    it is q^(k-1) (1 - q) / (1 - q^cap) for k = 1..cap, whose mean is
    1 / (1 - q) - cap q^cap / (1 - q^cap).
    """
    q = math.exp(-1 / mean)
    return 1 / (1 - q) - cap * q**cap / (1 - q**cap)


def clipped_mean(mean, cap):
    """Mean of min(ceil(X), cap): the sum over k = 1..cap of P(K >= k) = q^(k-1)."""
    q = math.exp(-1 / mean)
    return (1 - q**cap) / (1 - q)


def test_truncated_and_clipped_means_by_hand():
    # Mean 128, cap 32: q^32 = exp(-0.25) = 0.77880 and 1 / (1 - q) = 128.50, so
    # truncated 128.50 - 32 x 0.77880 / 0.22120 = 15.83, clipped 0.22120 x 128.50 = 28.42.
    assert truncated_mean(128, 32) == pytest.approx(15.83, abs=0.01)
    assert clipped_mean(128, 32) == pytest.approx(28.42, abs=0.01)


@pytest.mark.parametrize("cap", [32, 128, 512])
def test_truncated_exponential_redraws_under_the_cap(cap):
    draws = Exponential(128, cap, truncate=True).sample(200_000, np.random.default_rng(5))
    assert draws.min() >= 1 and draws.max() <= cap
    # Standard error of the mean at most 128 / sqrt(200,000) = 0.29 tokens: 1.5 allows 5.
    assert abs(draws.mean() - truncated_mean(128, cap)) < 1.5
    # The cap itself is as rare as its neighbours (P = (q^(cap-1) - q^cap) / (1 - q^cap),
    # 3.5 % at 32): not the 78 % that clipping piles onto it.
    q = math.exp(-1 / 128)
    at_cap = (q ** (cap - 1) - q**cap) / (1 - q**cap)
    assert abs(np.mean(draws == cap) - at_cap) < 0.005
    clipped = Exponential(128, cap).sample(200_000, np.random.default_rng(5))
    assert abs(clipped.mean() - clipped_mean(128, cap)) < 1.5
    assert np.mean(clipped == cap) == pytest.approx(q ** (cap - 1), abs=0.005)


def test_throughput_workload_matches_the_published_setup():
    reqs = throughput_workload(cap_tokens=1536)
    outputs = np.array([r.output_tokens for r in reqs])
    assert len(reqs) == 1000 and all(r.arrival_s == 0 and r.prompt_tokens == 512 for r in reqs)
    # Exp(128) rounded up has mean about 128.5; the 1,536 cap (12 means) removes almost
    # nothing. The mean of 1,000 draws has a standard error of 128 / sqrt(1000) = 4.
    assert 116 < outputs.mean() < 141 and outputs.max() <= 1536 and outputs.min() >= 1
    # Anyscale's script redraws above the cap: at cap 32 the mean is 15.8 (by hand above),
    # not the 28.4 of clipping; the standard error of 1,000 draws is below 0.3.
    short = np.array([r.output_tokens for r in throughput_workload(cap_tokens=32)])
    assert short.max() <= 32 and abs(short.mean() - truncated_mean(128, 32)) < 1.5
    with pytest.raises(ValueError, match="cap_tokens"):
        throughput_workload(cap_tokens=100)


def test_chat_workload_means_and_arrivals():
    reqs = chat_workload(20_000, rate_per_s=5.0, seed=1)
    prompts = np.array([r.prompt_tokens for r in reqs])
    outputs = np.array([r.output_tokens for r in reqs])
    # log-normal, sigma 1: coefficient of variation sqrt(e - 1) = 1.31, so the mean of
    # 20,000 draws is within 1 % (one standard error) of 161.31 and 337.99, and the
    # 2,048 cap trims a few tokens; allow 6 %.
    assert prompts.mean() == pytest.approx(161.31, rel=0.06)
    assert outputs.mean() == pytest.approx(337.99, rel=0.06)
    gaps = np.diff([0.0] + [r.arrival_s for r in reqs])
    assert np.all(gaps >= 0) and gaps.mean() == pytest.approx(1 / 5.0, rel=0.03)


def test_workloads_are_seeded():
    a = workload(50, Uniform(1, 9), LogNormal(20, 0.5), rate_per_s=2.0, seed=7)
    assert a == workload(50, Uniform(1, 9), LogNormal(20, 0.5), rate_per_s=2.0, seed=7)
    assert a != workload(50, Uniform(1, 9), LogNormal(20, 0.5), rate_per_s=2.0, seed=8)
    # another rate moves the arrivals, not the lengths
    b = workload(50, Uniform(1, 9), LogNormal(20, 0.5), rate_per_s=4.0, seed=7)
    assert [(r.prompt_tokens, r.output_tokens) for r in a] == [
        (r.prompt_tokens, r.output_tokens) for r in b]
    assert all(1 <= r.prompt_tokens <= 9 for r in a)


@pytest.mark.parametrize("make, name", [
    (lambda: Fixed(0), "tokens"), (lambda: Uniform(5, 4), "high"),
    (lambda: Exponential(-1), "mean_tokens"), (lambda: Exponential(10, 0), "cap_tokens"),
    (lambda: Exponential(10, truncate=True), "cap_tokens"),
    (lambda: LogNormal(10, 0), "sigma"),
    (lambda: workload(0, Fixed(1), Fixed(1)), "n"),
    (lambda: workload(3, Fixed(1), Fixed(1), rate_per_s=0), "rate_per_s"),
])
def test_bad_workload_arguments(make, name):
    with pytest.raises(ValueError, match=name):
        make()


def toy(rate):
    return workload(40, Fixed(16), Fixed(8), rate_per_s=rate, seed=3)


STEP = LinearStepTime(base_s=0.01, per_token_s=0.001, per_kv_token_s=0.0)


def test_goodput_monotone_in_the_slo_and_the_batch():
    # Bisection on one seeded sample per rate: a looser limit meets the goal wherever a
    # stricter one does, so its bisection never ends lower.
    args = dict(policy="continuous", step_time=STEP)
    strict = goodput(toy, ttft_s=0.05, tpot_s=0.05, max_batch=8, **args)
    loose = goodput(toy, ttft_s=0.5, tpot_s=0.05, max_batch=8, **args)
    one_slot = goodput(toy, ttft_s=0.5, tpot_s=0.05, max_batch=1, **args)
    assert 0 < strict <= loose
    assert one_slot < loose
    # An isolated request: prefill 0.01 + 16 * 0.001 = 0.026 s, then decodes of 0.011 s:
    # a TTFT limit of 0.02 s is never met, so nothing meets the goal.
    assert goodput(toy, ttft_s=0.02, tpot_s=1.0, max_batch=8, **args) == 0.0


def test_goodput_needs_a_failing_upper_rate():
    with pytest.raises(ValueError, match="max_rate_per_s"):
        goodput(toy, ttft_s=100, tpot_s=100, max_rate_per_s=1.0, max_batch=8, step_time=STEP)
    with pytest.raises(ValueError, match="attainment"):
        goodput(toy, ttft_s=1, tpot_s=1, attainment=1.5, step_time=STEP)


requests_st = st.lists(st.builds(Request, st.floats(0, 10), st.integers(1, 30),
                                 st.integers(1, 12)), min_size=1, max_size=10)
policy_st = st.sampled_from(["static", "continuous", "chunked"])


@settings(max_examples=150, deadline=None)
@given(requests_st, policy_st, st.integers(1, 4), st.integers(0, 8),
       st.sampled_from([None, 45, 60]))
def test_every_run_is_consistent(reqs, policy, max_batch, extra_budget, capacity):
    budget = max_batch + extra_budget if policy == "chunked" else None
    step = LinearStepTime(0.5, 0.01, 0.001)
    run = simulate(reqs, policy=policy, max_batch=max_batch, token_budget=budget,
                   step_time=step, kv_capacity_tokens=capacity)
    prefilled, decoded = [0] * len(reqs), [0] * len(reqs)
    for it in run.iterations:
        for c in it.prefill:
            prefilled[c.request_id] += c.tokens
        for i in it.decode:
            decoded[i] += 1
        running = {c.request_id for c in it.prefill} | set(it.decode)
        assert len(running) <= max_batch
        if budget is not None:
            assert sum(c.tokens for c in it.prefill) + len(it.decode) <= budget
        if capacity is not None:
            assert sum(reqs[i].total_tokens for i in running) <= capacity
        assert it.end_s > it.start_s
    for r, res, p, d in zip(reqs, run.requests, prefilled, decoded):
        assert res.request is r and 0 <= res.slot < max_batch
        assert r.arrival_s <= res.admitted_s < res.first_token_s <= res.finish_s
        assert p == r.prompt_tokens                 # the whole prompt, once
        assert 1 + d == r.output_tokens             # first token, then one per decode
    # no two requests hold a slot at once
    spans = sorted((res.slot, res.admitted_s, res.finish_s) for res in run.requests)
    for (s1, _, end1), (s2, start2, _) in zip(spans, spans[1:]):
        assert s1 != s2 or start2 >= end1


@settings(max_examples=150, deadline=None)
@given(st.lists(st.builds(Request, st.just(0.0), st.integers(1, 20), st.integers(1, 20)),
                min_size=1, max_size=12), st.integers(1, 5))
def test_continuous_never_ends_later_than_static(reqs, max_batch):
    # Unit steps, all at time 0, unlimited memory. Static batch g starts at S_g, the sum of
    # the longest outputs of batches before it. Under continuous, by induction in FIFO
    # order, every request ahead has started no later than under static, so those of
    # earlier batches have finished by S_g and fewer than max_batch of its own batch hold
    # slots: it starts by S_g too, and takes the same output_tokens iterations.
    cont = simulate(reqs, policy="continuous", max_batch=max_batch, step_time=UNIT)
    static = simulate(reqs, policy="static", max_batch=max_batch, step_time=UNIT)
    assert cont.makespan_s <= static.makespan_s
    assert all(c.finish_s <= s.finish_s for c, s in zip(cont.requests, static.requests))
