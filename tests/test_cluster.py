"""simulate_cluster: replicas behind a router, on timelines worked by hand, and against the
single-instance simulator it is built from.

Unless said otherwise every iteration lasts 1 s (LinearStepTime(1, 0, 0)).
"""
import pytest

import llmperf as lp
from llmperf.serving import LinearStepTime, Request, chat_workload, simulate
from llmperf.serving.cluster import ROUTERS, cluster_goodput, simulate_cluster
from llmperf.serving.parallel_steptime import TensorParallelStepTime

UNIT = LinearStepTime(base_s=1.0, per_token_s=0.0, per_kv_token_s=0.0)
# A step time that depends on the batch, so that replicas drift apart in time.
SLOPED = LinearStepTime(base_s=0.01, per_token_s=1e-4, per_kv_token_s=1e-6)


def timeline(run):
    return [(r.first_token_s, r.finish_s) for r in run.requests]


def test_round_robin_by_hand():
    # Requests 0 and 2 go to replica 0, 1 and 3 to replica 1; each replica prefills its two
    # at [0, 1] (first tokens at 1) and decodes them at [1, 2] and [2, 3].
    reqs = [Request(0.0, 8, 3) for _ in range(4)]
    run = simulate_cluster(reqs, replicas=2, router="round_robin", max_batch=4, step_time=UNIT)
    assert run.replica == (0, 1, 0, 1)
    assert timeline(run) == [(1, 3)] * 4
    assert run.requests_served() == [2, 2]
    assert run.makespan_s == 3 and run.slo_attainment(ttft_s=1, tpot_s=1) == 1.0
    assert sorted(run.iteration_replica) == [0, 0, 0, 1, 1, 1]


def test_least_loaded_by_hand():
    # R0 (8 + 10 tokens) at 0 -> replica 0 (both empty: the lower index).
    # R1 (8 + 1) at 0 -> replica 1 (0 against 18 outstanding).
    # R2 (8 + 2) at 0.5: both replicas are in iteration [0, 1], nothing done yet:
    #   18 against 9 -> replica 1, which admits it at 1 and prefills it in [1, 2].
    # R3 (8 + 1) at 1.5: replica 0 has done R0's prompt and first token (18 - 9 = 9 left);
    #   replica 1 has finished R1 but is prefilling R2 (10 left) -> replica 0.
    reqs = [Request(0.0, 8, 10), Request(0.0, 8, 1), Request(0.5, 8, 2), Request(1.5, 8, 1)]
    run = simulate_cluster(reqs, replicas=2, router="least_loaded", max_batch=4, step_time=UNIT)
    assert run.replica == (0, 1, 1, 0)
    # replica 0: R0 prefill [0, 1], decodes to 10; R3 admitted at 2, first token at 3.
    # replica 1: R1 done at 1; R2 prefill [1, 2], second token at 3.
    assert timeline(run) == [(1, 10), (1, 1), (2, 3), (3, 3)]
    rr = simulate_cluster(reqs, replicas=2, router="round_robin", max_batch=4, step_time=UNIT)
    assert rr.replica == (0, 1, 0, 1)


def test_requests_at_the_same_time_each_see_the_ones_before():
    reqs = [Request(0.0, 100, 100), Request(0.0, 10, 10), Request(0.0, 10, 10)]
    run = simulate_cluster(reqs, replicas=3, router="least_loaded", step_time=UNIT)
    assert run.replica == (0, 1, 2)
    reqs = [Request(0.0, 100, 100), Request(0.0, 10, 10), Request(0.0, 10, 10),
            Request(0.0, 10, 10)]
    run = simulate_cluster(reqs, replicas=2, router="least_loaded", step_time=UNIT)
    assert run.replica == (0, 1, 1, 1)  # 200 outstanding on replica 0 outweighs 20, then 40


@pytest.mark.parametrize("router", ["round_robin", "least_loaded"])
@pytest.mark.parametrize("kv_memory", ["reservation", "paged"])
def test_one_replica_is_the_single_instance_simulator(router, kv_memory):
    reqs = chat_workload(300, rate_per_s=40.0, seed=3)
    args = dict(policy="continuous", max_batch=16, step_time=SLOPED, kv_capacity_tokens=8192,
                kv_memory=kv_memory)
    alone = simulate(reqs, **args)
    cluster = simulate_cluster(reqs, replicas=1, router=router, **args)
    assert timeline(cluster) == timeline(alone)
    assert cluster.iterations == alone.iterations
    assert cluster.replica == (0,) * len(reqs)


@pytest.mark.parametrize("kv_memory", ["reservation", "paged"])
def test_round_robin_replicas_run_as_separate_instances(kv_memory):
    # Replicas share nothing, so each serves its share as simulate would on its own.
    reqs = chat_workload(200, rate_per_s=30.0, seed=1)
    args = dict(policy="chunked", max_batch=8, token_budget=256, step_time=SLOPED,
                kv_capacity_tokens=4096, kv_memory=kv_memory)
    run = simulate_cluster(reqs, replicas=3, router="round_robin", **args)
    for k in range(3):
        alone = simulate(reqs[k::3], **args)
        assert timeline(alone) == [(r.first_token_s, r.finish_s) for r in run.requests[k::3]]
        assert run.requests_served()[k] == len(reqs[k::3])


def test_least_loaded_beats_round_robin_on_a_skewed_workload():
    # Every other request is long: round robin sends all long ones to replica 0.
    reqs = [Request(0.1 * i, 16, 200 if i % 2 == 0 else 2) for i in range(40)]
    rr = simulate_cluster(reqs, 2, "round_robin", max_batch=4, step_time=SLOPED)
    ll = simulate_cluster(reqs, 2, "least_loaded", max_batch=4, step_time=SLOPED)
    assert set(rr.replica[::2]) == {0}
    assert set(ll.replica[::2]) == {0, 1}
    assert ll.makespan_s < rr.makespan_s


def test_the_result_reads_like_a_run_result():
    reqs = chat_workload(50, rate_per_s=10.0, seed=0)
    run = simulate_cluster(reqs, 2, "least_loaded", step_time=SLOPED)
    assert [r.request for r in run.requests] == reqs
    assert run.output_tokens == sum(r.output_tokens for r in reqs)
    assert run.percentile("ttft_s", 50) > 0
    assert len(run.iteration_replica) == len(run.iterations)
    with pytest.raises(AttributeError):
        run.no_such_metric  # noqa: B018


@pytest.mark.parametrize(("kwargs", "name"), [
    (dict(replicas=0), "replicas"),
    (dict(router="random"), "router"),
    (dict(max_batchsize=4), "max_batchsize"),
    (dict(step_time=None), "step_time"),
    (dict(policy="fifo"), "policy"),
    (dict(router="prefix"), "prefix_caching"),
])
def test_bad_arguments_are_named(kwargs, name):
    args = {"replicas": 2, "router": "least_loaded", "step_time": UNIT, **kwargs}
    with pytest.raises(ValueError, match=name):
        simulate_cluster([Request(0.0, 8, 3)], **args)


def test_no_requests_is_an_error():
    with pytest.raises(ValueError, match="requests"):
        simulate_cluster([], 2, step_time=UNIT)


def test_requests_are_checked_once_against_one_replica_memory():
    with pytest.raises(ValueError, match=r"requests\[1\]"):
        simulate_cluster([Request(0.0, 8, 3), Request(0.0, 100, 3)], 2, step_time=UNIT,
                         kv_capacity_tokens=64)


def test_routers_are_named():
    assert ROUTERS == ("round_robin", "least_loaded", "prefix")



def evenly_spaced(rate):
    """20 requests (prompt 8, output 2) every 1 / rate seconds."""
    return [Request(i / rate, 8, 2) for i in range(20)]


@pytest.mark.parametrize("router", ["round_robin", "least_loaded"])
def test_cluster_goodput_per_gpu(router):
    # One request at a time, two one-second iterations each: a replica meets TTFT 1 s for
    # every request up to one request every 2 s, not above. Two replicas serve twice the
    # rate: still 0.5 per GPU, 0.25 with two GPUs a replica.
    one = cluster_goodput(evenly_spaced, 1.001, 1.001, replicas=1, router=router, attainment=1.0,
                          max_batch=1, step_time=UNIT)
    two = cluster_goodput(evenly_spaced, 1.001, 1.001, replicas=2, router=router, attainment=1.0,
                          max_batch=1, step_time=UNIT)
    assert 0.49 <= one <= 0.501 and 0.49 <= two <= 0.501  # 1.001: rounding of the times
    wide = cluster_goodput(evenly_spaced, 1.001, 1.001, replicas=2, router=router,
                           gpus_per_replica=2, attainment=1.0, max_batch=1, step_time=UNIT)
    assert wide == pytest.approx(two / 2)


def _ids(start, n):
    return tuple(range(start, start + n))


def test_prefix_router_by_hand():
    # Blocks of 4 tokens. R0 (prompt A) and R1 (prompt B) at 0 go to replicas 0 and 1 (no
    # cache anywhere: least loaded) and are done by 2, leaving A cached on replica 0 and B
    # on replica 1. At 5, R2 and R3 extend B: replica 1 holds its 8 tokens (2 blocks; the
    # block of a prompt's last position is always computed), so both go there, although
    # replica 0 is the less loaded for R3. R4's prompt is cached nowhere: least loaded.
    b = _ids(100, 8)
    reqs = [Request(0.0, 8, 2, _ids(0, 8)), Request(0.0, 8, 2, b),
            Request(5.0, 12, 2, b + _ids(200, 4)), Request(5.0, 12, 2, b + _ids(300, 4)),
            Request(5.0, 8, 2, _ids(500, 8))]
    args = dict(step_time=UNIT, max_batch=4, kv_memory="paged", block_size=4,
                prefix_caching=True)
    run = simulate_cluster(reqs, 2, "prefix", **args)
    assert run.replica == (0, 1, 1, 1, 0)
    assert [r.cached_prompt_tokens for r in run.requests] == [0, 0, 8, 8, 0]
    ll = simulate_cluster(reqs, 2, "least_loaded", **args)
    assert ll.replica == (0, 1, 0, 1, 0)
    assert ll.cached_prompt_tokens == 8 < run.cached_prompt_tokens == 16


def test_tensor_parallel_step_time_by_hand():
    # Llama 2 7B: 32 layers, d_model 4096, fp16. An iteration of 8 prompt tokens over 2 GPUs
    # joined by a link of 10 us and 100 GB/s each way: half the one-GPU second, plus 64
    # all-reduces of 8 * 4096 * 2 bytes, each 2 (2 - 1) (10 us + m / (2 * 100 GB/s)).
    link = lp.Link("test", bandwidth=200e9, latency_s=10e-6, source="by hand")
    tp2 = TensorParallelStepTime(UNIT, "llama-2-7b", link, tp=2)
    run = simulate([Request(0.0, 8, 1)], step_time=tp2)
    m = 8 * 4096 * 2
    assert run.requests[0].finish_s == pytest.approx(0.5 + 64 * 2 * (10e-6 + m / (2 * 100e9)))
    tp1 = TensorParallelStepTime(UNIT, "llama-2-7b", link, tp=1)
    assert simulate([Request(0.0, 8, 3)], step_time=tp1).requests[0].finish_s == 3.0
    with pytest.raises(ValueError, match="tp"):
        TensorParallelStepTime(UNIT, "llama-2-7b", link, tp=3)
    with pytest.raises(ValueError, match="step_time"):
        TensorParallelStepTime(None, "llama-2-7b", link, tp=2)
