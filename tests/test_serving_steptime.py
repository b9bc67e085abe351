"""Step-time models of llmperf.serving: the roofline against step_costs, the linear fit."""
import numpy as np
import pytest

import llmperf as lp
from llmperf.serving import (
    Batch,
    Chunk,
    LinearStepTime,
    Request,
    RooflineStepTime,
    fit_linear_step_time,
    simulate,
)

LLAMA, A10 = lp.get_model("llama-2-7b"), lp.get_accelerator("A10")


def decode_batch(contexts):
    """Decodes only; a request with c cached tokens reads c + 1 KV tokens."""
    return Batch(0, (), tuple(range(len(contexts))), sum(c + 1 for c in contexts), ())


def prefill_batch(*prompts):
    return Batch(0, tuple(Chunk(i, 0, p, True) for i, p in enumerate(prompts)), (), 0, ())


def costs(phase, batch, seq_len, attention="fused", model=LLAMA, acc=A10):
    """step_costs' time; fused attention, RooflineStepTime's default."""
    return lp.step_costs(model, phase, batch=batch, seq_len=seq_len,
                         attention=attention).on(acc).time_s


@pytest.fixture(scope="module")
def roofline():
    return RooflineStepTime(LLAMA, A10, dtype="fp16")


@pytest.fixture(scope="module")
def standard():
    return RooflineStepTime(LLAMA, A10, dtype="fp16", attention="standard")


def test_default_attention_is_fused(roofline, standard):
    # Servers run fused attention. The standard algorithm writes and reads the score
    # matrices: 32 heads x 4096^2 scores x 2 bytes = 1.07 GB per layer for a 4,096-token
    # prompt, written and read around the softmax, so its prefill is slower; a decode's
    # one row of scores per head is small, and the two agree within 1 %.
    assert roofline.attention == "fused" and standard.attention == "standard"
    fused_s, standard_s = (m.iteration_s(prefill_batch(4096)) for m in (roofline, standard))
    assert standard_s > 1.2 * fused_s
    assert fused_s == pytest.approx(costs("prefill", 1, 4096), rel=1e-9)
    assert standard_s == pytest.approx(costs("prefill", 1, 4096, "standard"), rel=1e-9)
    decodes = [m.iteration_s(decode_batch([1000] * 8)) for m in (roofline, standard)]
    assert decodes[0] == pytest.approx(decodes[1], rel=0.01)


@pytest.mark.parametrize("attention", ["fused", "standard"])
@pytest.mark.parametrize("cached", [1, 100, 2047, 4000])
def test_single_decode_equals_step_costs(roofline, standard, attention, cached):
    model = roofline if attention == "fused" else standard
    expected = costs("decode", 1, cached, attention)
    assert model.iteration_s(decode_batch([cached])) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("attention", ["fused", "standard"])
@pytest.mark.parametrize("batch, cached", [(8, 512), (64, 1000)])
def test_uniform_decode_batch_equals_step_costs(roofline, standard, attention, batch, cached):
    # The same operators, weights once, B sequences' attention: step_costs' own batch.
    model = roofline if attention == "fused" else standard
    expected = costs("decode", batch, cached, attention)
    assert model.iteration_s(decode_batch([cached] * batch)) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("attention", ["fused", "standard"])
@pytest.mark.parametrize("prompt", [1, 37, 512, 4096])
def test_single_prefill_equals_step_costs(roofline, standard, attention, prompt):
    model = roofline if attention == "fused" else standard
    expected = costs("prefill", 1, prompt, attention)
    assert model.iteration_s(prefill_batch(prompt)) == pytest.approx(expected, rel=1e-9)


def test_roofline_grows_with_batch_and_context(roofline):
    by_batch = [roofline.iteration_s(decode_batch([512] * b)) for b in (1, 2, 8, 32, 128)]
    by_context = [roofline.iteration_s(decode_batch([c] * 8)) for c in (16, 256, 1024, 4000)]
    assert np.all(np.diff(by_batch) > 0) and np.all(np.diff(by_context) > 0)


def test_mixed_iteration_reads_the_weights_once(roofline):
    # A prefill of 256 beside 16 decodes costs less than the two run apart (the weights,
    # about 13.5 GB at 600 GB/s or 22 ms, are read once), and more than either alone.
    mixed = Batch(0, (Chunk(0, 0, 256, True),), tuple(range(1, 17)), 16 * 513, ())
    alone = [roofline.iteration_s(prefill_batch(256)), roofline.iteration_s(
        decode_batch([512] * 16))]
    weights_s = LLAMA.weight_bytes("fp16") / A10.mem_bandwidth
    together = roofline.iteration_s(mixed)
    assert together < sum(alone) - 0.9 * weights_s
    assert together > max(alone)


@pytest.mark.parametrize("attention, rows", [("fused", ("attention",)),
                                             ("standard", ("qk", "softmax", "sv"))])
def test_chunk_costs_its_share_of_the_prompts_attention(roofline, standard, attention, rows):
    # Second half of a 1024-token prompt: dense work of 512 tokens, half the attention of a
    # 1024-token prefill, one LM head row.
    model = roofline if attention == "fused" else standard
    whole = lp.step_costs(LLAMA, "prefill", batch=1, seq_len=1024, attention=attention).on(A10)
    attention_s = sum(whole[n].time_s for n in rows)
    first_half = lp.step_costs(LLAMA, "prefill", batch=1, seq_len=512,
                               attention=attention).on(A10)
    dense = first_half.time_s - sum(first_half[n].time_s for n in rows)
    got = model.iteration_s(Batch(0, (Chunk(0, 512, 512, True),), (), 0, ()))
    assert got == pytest.approx(dense + attention_s / 2, rel=1e-9)


def test_mixture_of_experts_falls_back_to_exact_counts():
    mixtral, h100 = lp.get_model("mixtral-8x7b"), lp.get_accelerator("H100 SXM")
    model = RooflineStepTime(mixtral, h100)
    for batch in (1, 5, 40):
        expected = costs("decode", batch, 300, model=mixtral, acc=h100)
        assert model.iteration_s(decode_batch([300] * batch)) == pytest.approx(expected, 1e-9)


def test_sliding_window_is_refused():
    # Mistral's decode reads at most 4,096 cached tokens: not linear in the context.
    with pytest.raises(ValueError, match="not linear"):
        RooflineStepTime("mistral-7b", "A10")


def test_roofline_refuses_contexts_beyond_the_model():
    with pytest.raises(ValueError, match="context"):
        simulate([Request(0.0, 4000, 200)], step_time=RooflineStepTime(LLAMA, A10))


def test_roofline_simulation_of_one_request(roofline):
    # One request, prompt 100, output 3: prefill, then decodes with 100 and 101 cached.
    run = simulate([Request(0.0, 100, 3)], max_batch=1, step_time=roofline)
    steps = [costs("prefill", 1, 100), costs("decode", 1, 100), costs("decode", 1, 101)]
    r = run.requests[0]
    assert r.first_token_s == pytest.approx(steps[0], rel=1e-9)
    assert r.finish_s == pytest.approx(sum(steps), rel=1e-9)


def test_fit_recovers_known_coefficients():
    # seconds = 5 ms + 20 us per token + 0.1 us per KV token, with 1 % noise.
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 2048, size=200)
    kv = rng.integers(1, 200_000, size=200)
    seconds = (5e-3 + 20e-6 * tokens + 1e-7 * kv) * (1 + 0.01 * rng.standard_normal(200))
    fit = fit_linear_step_time(zip(tokens, kv, seconds))
    assert fit.base_s == pytest.approx(5e-3, rel=0.05)
    assert fit.per_token_s == pytest.approx(20e-6, rel=0.02)
    assert fit.per_kv_token_s == pytest.approx(1e-7, rel=0.02)


def test_fit_is_exact_on_exact_samples():
    samples = [(t, k, 1.0 + 2.0 * t + 3.0 * k) for t, k in [(1, 1), (2, 5), (7, 3), (4, 4)]]
    fit = fit_linear_step_time(samples)
    assert (fit.base_s, fit.per_token_s, fit.per_kv_token_s) == pytest.approx((1, 2, 3))


def test_fit_rejects_negative_coefficients_and_degenerate_samples():
    falling = [(t, k, 10.0 - 0.5 * t + 0.1 * k) for t, k in [(1, 1), (2, 5), (7, 3), (4, 9)]]
    with pytest.raises(ValueError, match="negative"):
        fit_linear_step_time(falling)
    on_a_line = [(t, 2 * t, 1.0 + t) for t in (1, 2, 3, 4)]
    with pytest.raises(ValueError, match="vary"):
        fit_linear_step_time(on_a_line)
    with pytest.raises(ValueError, match="finite"):
        fit_linear_step_time([(1, 1, -1.0), (2, 3, 1.0), (3, 1, 1.0)])


def test_linear_step_time_refuses_negative_costs():
    with pytest.raises(ValueError, match="per_kv_token_s"):
        LinearStepTime(1.0, 0.0, -1e-9)


def test_fit_recovers_the_cost_of_waking_from_idle():
    # seconds = 1 + 2 tokens + 3 kv, plus 0.5 for the iterations that start from idle
    points = [(1, 1, 0), (2, 5, 1), (7, 3, 0), (4, 4, 1), (3, 8, 0), (5, 2, 1)]
    samples = [(t, k, 1.0 + 2.0 * t + 3.0 * k + 0.5 * idle, bool(idle)) for t, k, idle in points]
    fit = fit_linear_step_time(samples)
    assert (fit.base_s, fit.per_token_s, fit.per_kv_token_s, fit.wake_s) == pytest.approx(
        (1, 2, 3, 0.5))
    # none from idle: wake_s cannot be told apart from nothing, and is 0
    busy = [(t, k, s, False) for t, k, s, _ in samples]
    assert fit_linear_step_time(busy).wake_s == 0.0


def test_wake_is_charged_to_the_first_iteration_and_to_each_after_idling():
    # R0 at 0 (2 tokens), R1 at 10 (1 token); 1 s per iteration, 0.5 s more from idle:
    # it 0 from idle [0, 1.5], it 1 [1.5, 2.5]; idle until 10; it 2 from idle [10, 11.5]
    step = LinearStepTime(base_s=1.0, per_token_s=0.0, per_kv_token_s=0.0, wake_s=0.5)
    run = simulate([Request(0.0, 4, 2), Request(10.0, 4, 1)], step_time=step)
    assert [it.after_idle for it in run.iterations] == [True, False, True]
    assert [(it.start_s, it.end_s) for it in run.iterations] == [(0, 1.5), (1.5, 2.5),
                                                                 (10, 11.5)]
    with pytest.raises(ValueError, match="wake_s"):
        LinearStepTime(1.0, 0.0, 0.0, wake_s=-1.0)
