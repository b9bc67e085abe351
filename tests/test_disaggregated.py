"""simulate_disaggregated: prefill and decode pools with a KV transfer between them, on
timelines worked by hand. Unless said otherwise every iteration lasts 1 s on both sides."""
import pytest

import llmperf as lp
from llmperf.serving import LinearStepTime, Request, chat_workload
from llmperf.serving.disaggregated import (
    disaggregated_goodput,
    kv_transfer,
    simulate_disaggregated,
)

UNIT = LinearStepTime(base_s=1.0, per_token_s=0.0, per_kv_token_s=0.0)
SLOPED = LinearStepTime(base_s=0.01, per_token_s=1e-4, per_kv_token_s=1e-6)


def half_second(request):
    return 0.5


def timeline(run):
    return [(r.first_token_s, r.finish_s) for r in run.requests]


def test_the_issue_example():
    # Prefill [0, 1]: first token at 1.0. KV arrives at 1.5; the idle decode instance starts
    # at once: token 2 at 2.5, token 3 at 3.5. TPOT (3.5 - 1.0) / 2 = 1.25 s.
    run = simulate_disaggregated([Request(0.0, 8, 3)], 1, 1, UNIT, UNIT, half_second)
    r = run.requests[0]
    assert (r.first_token_s, r.finish_s) == (1.0, 3.5)
    assert r.ttft_s == 1.0 and r.tpot_s == pytest.approx(1.25)
    assert run.kv_arrival_s == (1.5,) and run.decode_replica == (0,)
    assert [(it.start_s, it.end_s) for it in run.decode.iterations] == [(1.5, 2.5), (2.5, 3.5)]
    # the decode instance computes its first output token on the transferred prompt: a
    # one-token chunk at position 8, which a step-time model costs like a decode
    joined, decoded = run.decode.iterations
    assert [(c.start_tokens, c.tokens) for c in joined.prefill] == [(8, 1)] and not joined.decode
    assert decoded.decode == (0,) and not decoded.prefill


def test_one_token_output_finishes_at_its_prefill():
    run = simulate_disaggregated([Request(0.0, 8, 1), Request(0.0, 8, 2)], 1, 1, UNIT, UNIT,
                                 half_second, max_batch=2)
    assert timeline(run) == [(1.0, 1.0), (1.0, 2.5)]
    assert run.decode_replica == (-1, 0)
    assert run.kv_arrival_s == (1.0, 1.5)
    alone = simulate_disaggregated([Request(0.0, 8, 1)], 1, 1, UNIT, UNIT, half_second)
    assert alone.decode is None and timeline(alone) == [(1.0, 1.0)]


def test_a_request_joins_the_running_batch_at_the_next_boundary():
    # Prefill instance: A (prompt 8, output 5) in [0, 1]; B (prompt 4, output 3) arrives at
    # 0.2 and is prefilled in [1, 2]. A's KV reaches the decode instance at 1.5 (0.5 s):
    # tokens 2..5 at 2.5, 3.5, 4.5, 5.5. B's reaches it at 2.7 (0.7 s), during [2.5, 3.5]:
    # it joins at 3.5, tokens 2 and 3 at 4.5 and 5.5.
    reqs = [Request(0.0, 8, 5), Request(0.2, 4, 3)]
    run = simulate_disaggregated(reqs, 1, 1, UNIT, UNIT,
                                 lambda r: 0.5 if r.prompt_tokens == 8 else 0.7, max_batch=4)
    assert timeline(run) == [(1.0, 5.5), (2.0, 5.5)]
    assert run.requests[1].tpot_s == pytest.approx(1.75)
    assert run.kv_arrival_s == (1.5, pytest.approx(2.7))


def test_transfers_overlap():
    # Both prompts finish at 1.0; both caches arrive at 1.5, not one after the other.
    reqs = [Request(0.0, 8, 2), Request(0.0, 8, 2)]
    run = simulate_disaggregated(reqs, 1, 1, UNIT, UNIT, half_second, max_batch=2)
    assert run.kv_arrival_s == (1.5, 1.5)
    assert timeline(run) == [(1.0, 2.5), (1.0, 2.5)]


def test_each_pool_routes_to_its_least_loaded_instance():
    reqs = [Request(0.0, 8, 10), Request(0.0, 8, 10), Request(0.0, 8, 2)]
    run = simulate_disaggregated(reqs, 2, 2, UNIT, UNIT, half_second, max_batch=4)
    assert run.prefill_replica == (0, 1, 0)
    # R0 and R1 reach the decode pool at 1.5, R2 (prefilled with R0) too; ties go low:
    # R0 -> 0, R1 -> 1 (0 has 9 left), R2 -> 0 (9 against 9: the lower index).
    assert run.decode_replica == (0, 1, 0)


def test_a_slow_transfer_delays_only_the_later_tokens():
    fast = simulate_disaggregated([Request(0.0, 8, 4)], 1, 1, UNIT, UNIT, lambda r: 0.0)
    slow = simulate_disaggregated([Request(0.0, 8, 4)], 1, 1, UNIT, UNIT, lambda r: 2.0)
    assert fast.requests[0].ttft_s == slow.requests[0].ttft_s == 1.0
    assert slow.requests[0].finish_s - fast.requests[0].finish_s == 2.0


@pytest.mark.parametrize("kv_memory", ["reservation", "paged"])
def test_a_chat_workload_runs_to_the_end(kv_memory):
    reqs = chat_workload(200, rate_per_s=40.0, seed=2)
    run = simulate_disaggregated(reqs, 2, 2, SLOPED, SLOPED,
                                 lambda r: 1e-3 + 1e-6 * r.prompt_tokens, max_batch=16,
                                 kv_capacity_tokens=8192, kv_memory=kv_memory)
    assert [r.request for r in run.requests] == reqs
    for r, arrival in zip(run.requests, run.kv_arrival_s):
        assert r.arrival_s < r.first_token_s <= arrival <= r.finish_s
    assert 0 <= run.slo_attainment(ttft_s=1.0, tpot_s=0.1) <= 1
    assert run.decode.preemptions >= 0


def test_kv_transfer_from_a_link():
    llama = lp.get_model("llama-2-7b")  # 2 * 32 layers * 4096 * 2 bytes = 524,288 B a token
    send = kv_transfer(llama, "InfiniBand NDR")
    expected = 2.7e-6 + 1000 * 524_288 / 50e9
    assert send(Request(0.0, 1000, 5)) == pytest.approx(expected)
    assert lp.kv_transfer_time(llama, 1000, "NDR") == pytest.approx(expected)


@pytest.mark.parametrize(("kwargs", "name"), [
    (dict(prefill_replicas=0), "prefill_replicas"),
    (dict(decode_replicas=1.5), "decode_replicas"),
    (dict(prefill_step_time=None), "prefill_step_time"),
    (dict(decode_step_time=object()), "decode_step_time"),
    (dict(kv_transfer_s=0.5), "kv_transfer_s"),
    (dict(kv_transfer_s=lambda r: -1.0), "kv_transfer_s"),
    (dict(step_time=UNIT), "step_time"),
    (dict(max_batchsize=2), "max_batchsize"),
    (dict(kv_memory="virtual"), "kv_memory"),
])
def test_bad_arguments_are_named(kwargs, name):
    args = {"prefill_replicas": 1, "decode_replicas": 1, "prefill_step_time": UNIT,
            "decode_step_time": UNIT, "kv_transfer_s": half_second, **kwargs}
    with pytest.raises(ValueError, match=name):
        simulate_disaggregated([Request(0.0, 8, 3)], **args)


def test_requests_must_fit_a_decode_instance():
    with pytest.raises(ValueError, match=r"requests\[0\]"):
        simulate_disaggregated([Request(0.0, 60, 10)], 1, 1, UNIT, UNIT, half_second,
                               kv_capacity_tokens=64)


def evenly_spaced(rate):
    """20 requests (prompt 8, output 2) every 1 / rate seconds."""
    return [Request(i / rate, 8, 2) for i in range(20)]


def test_goodput_per_gpu_of_the_two_pools():
    # One-second iterations, one request at a time, no transfer time: the prefill instance
    # serves a prompt a second, the decode instance a token a second, so every request meets
    # TTFT 1 s and TPOT 1 s up to 1 request/s and not above: 0.5 per GPU over 2 GPUs.
    per_gpu = disaggregated_goodput(evenly_spaced, 1.001, 1.001, 1, 1, UNIT, UNIT, lambda r: 0.0,
                                    attainment=1.0, max_batch=1)
    assert 0.49 <= per_gpu <= 0.501  # the SLOs at 1.001 s: rounding of the times
    two_gpu_decode = disaggregated_goodput(
        evenly_spaced, 1.001, 1.001, 1, 1, UNIT, UNIT, lambda r: 0.0, gpus_per_decode_replica=2,
        attainment=1.0, max_batch=1)
    assert two_gpu_decode == pytest.approx(per_gpu * 2 / 3)
