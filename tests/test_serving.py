"""Scheduling policies and metrics of llmperf.serving, on timelines worked by hand.

Unless said otherwise every iteration lasts 1 s (LinearStepTime(1, 0, 0)), so an
iteration k (counting from 0, no idle time) runs from k to k + 1 s, and a token yielded
by it is stamped k + 1.
"""
import pytest

from llmperf.serving import (
    LinearStepTime,
    PagedMemory,
    Request,
    ReservationMemory,
    Scheduler,
    Sequence,
    SimulatedClock,
    serve,
    simulate,
)

UNIT = LinearStepTime(base_s=1.0, per_token_s=0.0, per_kv_token_s=0.0)


def four_requests():
    return [Request(arrival_s=0.0, prompt_tokens=8, output_tokens=n) for n in (1, 2, 3, 10)]


def timeline(run):
    return [(r.first_token_s, r.finish_s) for r in run.requests]


@pytest.mark.parametrize("policy", ["static", "continuous"])
def test_batch_of_four_fits_every_request(policy):
    # max_batch 4: all four are prefilled in iteration 0 [0, 1] and get their first
    # token at 1. The 1-token output leaves at 1; the others yield one token per
    # iteration: the 2-token one finishes at 2, the 3-token one at 3, the 10-token one at 10.
    # Nothing waits, so static and continuous agree.
    run = simulate(four_requests(), policy=policy, max_batch=4, step_time=UNIT)
    assert timeline(run) == [(1, 1), (1, 2), (1, 3), (1, 10)]
    assert run.makespan_s == 10
    assert [r.slot for r in run.requests] == [0, 1, 2, 3]


def test_static_batch_of_two():
    # Batch {R0, R1}: iteration 0 [0, 1] prefills both (first tokens at 1; R0 leaves at 1),
    # iteration 1 [1, 2] decodes R1, which finishes at 2. Only now is the batch done.
    # Batch {R2, R3}: iteration 2 [2, 3] prefills (first tokens at 3); R2's 2 more tokens
    # come at 4 and 5; R3's 9 more at 4 .. 12.
    run = simulate(four_requests(), policy="static", max_batch=2, step_time=UNIT)
    assert timeline(run) == [(1, 1), (1, 2), (3, 5), (3, 12)]
    assert [r.slot for r in run.requests] == [0, 1, 0, 1]
    assert run.makespan_s == 12
    assert run.throughput_tok_s == pytest.approx(16 / 12)


def test_continuous_batch_of_two():
    # Iteration 0 [0, 1]: prefill R0, R1; first tokens at 1, R0 leaves at 1.
    # Iteration 1 [1, 2]: R2 takes R0's slot 0, prefilled beside R1's decode: R2's first
    # token at 2, R1 finishes at 2.
    # Iteration 2 [2, 3]: R3 takes slot 1; R2's second token at 3; R3's first at 3.
    # R2's third token at 4 (finish); R3's tenth at 3 + 9 = 12.
    run = simulate(four_requests(), policy="continuous", max_batch=2, step_time=UNIT)
    assert timeline(run) == [(1, 1), (1, 2), (2, 4), (3, 12)]
    assert [r.slot for r in run.requests] == [0, 1, 0, 1]
    # R2 waited 1 s less than under static (first token at 2, not 3)
    assert [r.admitted_s for r in run.requests] == [0, 0, 1, 2]


def test_continuous_iterations_record_prefill_and_decode():
    # The Gantt data of the run above: which requests ran as prefill and as decode.
    run = simulate(four_requests(), policy="continuous", max_batch=2, step_time=UNIT)
    its = run.iterations
    assert [(c.request_id, c.tokens) for c in its[0].prefill] == [(0, 8), (1, 8)]
    assert its[0].decode == ()
    assert [c.request_id for c in its[1].prefill] == [2] and its[1].decode == (1,)
    assert [c.request_id for c in its[2].prefill] == [3] and its[2].decode == (2,)
    assert its[3].prefill == () and its[3].decode == (2, 3)
    assert len(its) == 12 and its[-1].decode == (3,)
    assert [(i.start_s, i.end_s) for i in its[:3]] == [(0, 1), (1, 2), (2, 3)]


def test_chunked_splits_prompts():
    # token_budget 6, max_batch 2, prompts of 8 tokens.
    # it 0 [0,1]: no decodes; admit R0, chunk 0..5 (6 tokens). Budget spent: R1 waits.
    # it 1 [1,2]: R0's last 2 tokens (first token at 2; one-token output, leaves at 2);
    #             4 left: admit R1, chunk 0..3.
    # it 2 [2,3]: R1's last 4 (first token at 3); 2 left: admit R2 (slot 0), chunk 0..1.
    # it 3 [3,4]: decode R1 (finishes at 4); 5 left: R2 chunk 2..6. Slots full.
    # it 4 [4,5]: R2's last token (first at 5); 5 left: admit R3, chunk 0..4.
    # it 5 [5,6]: decode R2; R3's last 3 (first at 6).
    # it 6 [6,7]: decode R2 (third token: finishes at 7) and R3; R3 finishes at 6 + 9 = 15.
    run = simulate(four_requests(), policy="chunked", max_batch=2, token_budget=6,
                   step_time=UNIT)
    assert timeline(run) == [(2, 2), (3, 4), (5, 7), (6, 15)]
    chunks = [[(c.request_id, c.start_tokens, c.tokens) for c in it.prefill]
              for it in run.iterations[:6]]
    assert chunks == [[(0, 0, 6)], [(0, 6, 2), (1, 0, 4)], [(1, 4, 4), (2, 0, 2)],
                      [(2, 2, 5)], [(2, 7, 1), (3, 0, 5)], [(3, 5, 3)]]


def test_chunked_with_a_large_budget_never_splits_a_prompt():
    # A budget above every iteration's tokens (2 prompts of 8 + decodes < 64) never splits:
    # the timeline is test_continuous_batch_of_two's, worked by hand there.
    run = simulate(four_requests(), policy="chunked", max_batch=2, token_budget=64,
                   step_time=UNIT)
    assert timeline(run) == [(1, 1), (1, 2), (2, 4), (3, 12)]
    assert all(c.start_tokens == 0 and c.tokens == 8 for it in run.iterations for c in it.prefill)


def test_clock_jumps_to_the_next_arrival():
    # R0 at 0 (3 tokens), R1 at 0.5 (1 token), R2 at 7 (2 tokens); continuous, 4 slots.
    # it 0 [0,1]: prefill R0 (first at 1). R1 arrives mid-iteration and waits.
    # it 1 [1,2]: prefill R1 (first = finish at 2) + decode R0 (second token at 2).
    # it 2 [2,3]: decode R0: finishes at 3. Nobody waits; the clock jumps to 7.
    # it 3 [7,8]: prefill R2 (first at 8); it 4 [8,9]: R2 finishes at 9.
    reqs = [Request(0.0, 8, 3), Request(0.5, 8, 1), Request(7.0, 8, 2)]
    run = simulate(reqs, policy="continuous", max_batch=4, step_time=UNIT)
    assert timeline(run) == [(1, 3), (2, 2), (8, 9)]
    assert [r.ttft_s for r in run.requests] == [1, 1.5, 1]
    assert run.iterations[3].start_s == 7
    assert run.makespan_s == 9
    assert run.throughput_tok_s == pytest.approx(6 / 9)


def test_requests_keep_the_given_order_when_arrivals_are_not_sorted():
    # R0 arrives at 2, R1 at 0: R1 runs first ([0,1], finishes at 1); idle until 2;
    # R0 runs [2,3].
    run = simulate([Request(2.0, 4, 1), Request(0.0, 4, 1)], policy="continuous",
                   max_batch=1, step_time=UNIT)
    assert timeline(run) == [(3, 3), (1, 1)]


def test_kv_capacity_reservation():
    # Reservations (prompt + output): R0 9, R1 10, R2 11, R3 18; capacity 20 tokens.
    # it 0 [0,1]: admit R0 (9), R1 (19); R2 would need 30 > 20 and blocks the queue.
    #             first tokens at 1; R0 leaves at 1 (10 held).
    # it 1 [1,2]: R2 needs 21 > 20: waits. Decode R1: finishes at 2 (0 held).
    # it 2 [2,3]: admit R2 (11); R3 needs 29: waits. R2's first token at 3.
    # it 3, 4: R2's tokens at 4 and 5 (finish 5).
    # it 5 [5,6]: admit R3: first at 6, finish at 6 + 9 = 15.
    run = simulate(four_requests(), policy="continuous", max_batch=4, step_time=UNIT,
                   kv_capacity_tokens=20)
    assert timeline(run) == [(1, 1), (1, 2), (3, 5), (6, 15)]


def test_request_larger_than_the_kv_capacity_is_refused():
    with pytest.raises(ValueError, match="kv_capacity_tokens"):
        simulate(four_requests(), policy="continuous", max_batch=4, step_time=UNIT,
                 kv_capacity_tokens=17)  # R3 needs 18


def test_linear_step_time_counts_tokens_and_kv_reads():
    # One request, prompt 4, output 3.
    # Seconds = KV tokens read: prefill reads 4 -> [0, 4]; first decode reads its 4 cached
    # prompt tokens and 1 generated = 5 -> [4, 9]; second decode 6 -> [9, 15].
    reqs = [Request(0.0, 4, 3)]
    run = simulate(reqs, policy="continuous", max_batch=1, step_time=LinearStepTime(0, 0, 1))
    assert timeline(run) == [(4, 15)]
    # Seconds = tokens processed: 4 for the prefill, then 1 per decode -> first 4, finish 6.
    run = simulate(reqs, policy="continuous", max_batch=1, step_time=LinearStepTime(0, 1, 0))
    assert timeline(run) == [(4, 6)]


def test_metric_definitions():
    # Static, max_batch 2 (timeline in test_static_batch_of_two): first/finish
    # (1,1) (1,2) (3,5) (3,12), all arriving at 0.
    # TTFT 1, 1, 3, 3. TPOT: None (one token), (2-1)/1 = 1, (5-3)/2 = 1, (12-3)/9 = 1.
    run = simulate(four_requests(), policy="static", max_batch=2, step_time=UNIT)
    assert [r.ttft_s for r in run.requests] == [1, 1, 3, 3]
    assert [r.tpot_s for r in run.requests] == [None, 1, 1, 1]
    assert [r.latency_s for r in run.requests] == [1, 2, 5, 12]
    # median of 1, 1, 3, 3 interpolates to 2; TPOT percentiles skip the None
    assert run.percentile("ttft_s", 50) == 2
    assert run.percentile("latency_s", 100) == 12
    assert list(run.values("tpot_s")) == [1, 1, 1]
    # TTFT <= 2 s: R0 and R1; both have TPOT <= 1 (R0 has none) -> 0.5
    assert run.slo_attainment(ttft_s=2, tpot_s=1) == 0.5
    # TPOT <= 0.5 s: R1 fails; R0, judged on TTFT alone, meets -> 0.25
    assert run.slo_attainment(ttft_s=2, tpot_s=0.5) == 0.25
    assert run.slo_attainment(ttft_s=3, tpot_s=1) == 1


def test_tpot_with_varying_step_times():
    # One request, prompt 2, output 3, seconds = 1 + KV tokens read: prefill 1 + 2 = 3 ->
    # [0, 3]; decodes read 3 and 4 -> [3, 7], [7, 12]. TPOT = (12 - 3) / 2 = 4.5.
    run = simulate([Request(0.0, 2, 3)], policy="continuous", max_batch=1,
                   step_time=LinearStepTime(1, 0, 1))
    assert run.requests[0].tpot_s == 4.5


@pytest.mark.parametrize("kwargs, name", [
    (dict(max_batch=0), "max_batch"),
    (dict(policy="fifo"), "policy"),
    (dict(policy="chunked"), "token_budget"),
    (dict(policy="chunked", token_budget=0), "token_budget"),
    (dict(policy="chunked", max_batch=4, token_budget=3), "token_budget"),
    (dict(policy="static", token_budget=8), "token_budget"),
    (dict(kv_capacity_tokens=0), "kv_capacity_tokens"),
    (dict(step_time=None), "step_time"),
])
def test_bad_simulate_arguments(kwargs, name):
    args = dict(policy="continuous", max_batch=4, step_time=UNIT)
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        simulate(four_requests(), **args)


@pytest.mark.parametrize("kwargs, name", [
    (dict(arrival_s=-1.0), "arrival_s"),
    (dict(arrival_s=float("nan")), "arrival_s"),
    (dict(prompt_tokens=0), "prompt_tokens"),
    (dict(prompt_tokens=-3), "prompt_tokens"),
    (dict(output_tokens=0), "output_tokens"),
    (dict(output_tokens=2.5), "output_tokens"),
])
def test_bad_requests(kwargs, name):
    args = dict(arrival_s=0.0, prompt_tokens=8, output_tokens=4)
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        Request(**args)


def test_empty_workload_and_bad_metric_arguments():
    with pytest.raises(ValueError, match="requests"):
        simulate([], step_time=UNIT)
    run = simulate(four_requests(), policy="continuous", max_batch=4, step_time=UNIT)
    with pytest.raises(ValueError, match="metric"):
        run.percentile("ttft", 50)
    with pytest.raises(ValueError, match="q"):
        run.percentile("ttft_s", 101)
    with pytest.raises(ValueError, match="ttft_s"):
        run.slo_attainment(ttft_s=0, tpot_s=1)


def test_negative_step_time_is_refused():
    class Broken:
        def iteration_s(self, batch):
            return -1.0

    with pytest.raises(ValueError, match="step_time"):
        simulate(four_requests(), step_time=Broken())


# ---- the one driver loop, and the one "can it ever fit" check ------------------------------

def test_the_driver_runs_each_batch_then_asks_the_clock_when_it_ended():
    # A clock of 2 s per iteration, written here: the loop needs nothing else from it.
    # R0 (prompt 8, 2 tokens) at 0, R1 (1 token) at 5; 4 slots.
    # it 0 [0, 2]: prefill R0, first token at 2. it 1 [2, 4]: decode R0, finishes at 4.
    # Nothing runs, nobody waits: wait until 5. it 2 [5, 7]: prefill R1, first = finish at 7.
    events = []

    class TwoSeconds:
        t = 0.0

        def now(self):
            return self.t

        def end_of(self, batch):
            events.append(("end", batch.iteration))
            self.t += 2.0
            return self.t

        def wait_until(self, t_s):
            events.append(("wait", t_s))
            self.t = max(self.t, t_s)

    reqs = [Request(0.0, 8, 2), Request(5.0, 8, 1)]
    run = serve([Sequence(i, r) for i, r in enumerate(reqs)], Scheduler("continuous", 4),
                TwoSeconds(), execute=lambda batch: events.append(("run", batch.iteration)))
    assert events == [("run", 0), ("end", 0), ("run", 1), ("end", 1), ("wait", 5.0),
                      ("run", 2), ("end", 2)]
    assert timeline(run) == [(2, 4), (7, 7)]
    assert [(it.start_s, it.end_s) for it in run.iterations] == [(0, 2), (2, 4), (5, 7)]


def test_a_simulated_clock_of_one_second_per_iteration():
    clock = SimulatedClock(UNIT)
    run = serve([Sequence(i, r) for i, r in enumerate(four_requests())],
                Scheduler("continuous", 2), clock)
    assert timeline(run) == [(1, 1), (1, 2), (2, 4), (3, 12)]   # test_continuous_batch_of_two
    assert clock.now() == 12


@pytest.mark.parametrize("memory, longest", [
    (ReservationMemory(20), 20),                  # its prompt + output
    (ReservationMemory(64, reserve_tokens=32), 32),
    (ReservationMemory(16, reserve_tokens=32), 0),  # no reservation fits at all
    (PagedMemory(36, block_size=16), 33),         # 2 blocks cache 32 tokens; the last is not
    (PagedMemory(None), None),
])
def test_the_longest_request_each_memory_can_ever_hold(memory, longest):
    for total in (2, 20, 21, 32, 33, 34, 10_000):
        request = Request(0.0, 1, total - 1)
        assert memory.can_ever_fit(request) == (longest is None or total <= longest), total


def test_the_scheduler_and_simulate_refuse_with_the_same_check():
    memory = ReservationMemory(20)
    scheduler = Scheduler("continuous", 4, memory=memory)
    scheduler.add(0, Request(0.0, 10, 10))                       # 20: fits
    with pytest.raises(ValueError, match=r"request 1 needs 21 KV tokens.*at most 20"):
        scheduler.add(1, Request(0.0, 10, 11))
    with pytest.raises(ValueError, match=r"requests\[1\] needs 21 KV tokens.*at most 20"):
        simulate([Request(0.0, 10, 10), Request(0.0, 10, 11)], step_time=UNIT,
                 kv_capacity_tokens=20)
    with pytest.raises(ValueError, match="Request"):
        scheduler.add(2, (0.0, 4, 4))


# Stop tokens: the engine calls finish_early for a request whose new token is a stop token,
# after running the batch and before complete. `stop_after` plays that engine: request i
# meets a stop token as its stop_after[i]-th generated token (a recomputed prompt's token
# counts: it is the next one, not a repeat).

def serve_with_stops(requests, stop_after, scheduler=None):
    scheduler = scheduler or Scheduler("continuous", 4)
    made = [0] * len(requests)

    def execute(batch):
        yielding = [*batch.decode, *(c.request_id for c in batch.prefill if c.completes_prompt)]
        for i in yielding:
            made[i] += 1
            if made[i] == stop_after.get(i):
                scheduler.finish_early(i)

    run = serve([Sequence(i, r) for i, r in enumerate(requests)], scheduler,
                SimulatedClock(UNIT), execute)
    return run, scheduler


def test_a_request_stopped_after_three_tokens_finishes_at_three_seconds():
    # Cap 10. it 0 [0,1] prefill: token 1 at 1; it 1: token 2 at 2; it 2: token 3, a stop
    # token, at 3: it leaves at 3 having generated 3, TPOT (3 - 1) / (3 - 1) = 1 s.
    run, scheduler = serve_with_stops([Request(0.0, 8, 10)], {0: 3})
    r = run.requests[0]
    assert (r.first_token_s, r.finish_s, r.generated_tokens) == (1, 3, 3)
    assert r.tpot_s == 1.0
    assert run.output_tokens == 3 and run.throughput_tok_s == 1.0
    assert len(run.iterations) == 3 and scheduler.running == 0


def test_a_stop_token_as_the_first_token_ends_the_request_in_its_prefill():
    run, _ = serve_with_stops([Request(0.0, 8, 10)], {0: 1})
    r = run.requests[0]
    assert (r.first_token_s, r.finish_s, r.generated_tokens, r.tpot_s) == (1, 1, 1, None)
    assert len(run.iterations) == 1


def test_a_stopped_request_leaves_while_the_others_continue():
    # R0 stops at its 2nd token (at 2), R1 runs to its cap of 5 (at 5), R2 stops at its
    # cap exactly (the stop and the cap agree: it leaves once, at 4).
    reqs = [Request(0.0, 8, 10), Request(0.0, 8, 5), Request(0.0, 8, 4)]
    run, _ = serve_with_stops(reqs, {0: 2, 2: 4})
    assert timeline(run) == [(1, 2), (1, 5), (1, 4)]
    assert [r.generated_tokens for r in run.requests] == [2, 5, 4]
    assert [it.decode for it in run.iterations[1:]] == [(0, 1, 2), (1, 2), (1, 2), (1,)]


def test_a_stopped_request_frees_its_slot_for_the_next_iteration():
    # One slot. R0 (cap 10) stops at its 2nd token, at 2. R1 is admitted in it 2 [2,3]:
    # first token at 3, its 3 tokens end at 5. Without the stop R1 would start at 10.
    reqs = [Request(0.0, 8, 10), Request(0.0, 8, 3)]
    run, _ = serve_with_stops(reqs, {0: 2}, Scheduler("continuous", 1))
    assert timeline(run) == [(1, 2), (3, 5)]
    assert [r.admitted_s for r in run.requests] == [0, 2]


def test_a_stopped_request_gives_back_its_blocks_and_never_grows():
    # Blocks of 4, prompt 4, cap 10: its decodes would take a block at its 2nd token (the
    # 5th KV token) and more later. It stops at its 3rd token: nothing is held at the end,
    # and the run holds at most 2 blocks (8 slots).
    memory = PagedMemory(64, block_size=4)
    run, scheduler = serve_with_stops([Request(0.0, 4, 10)], {0: 3},
                                      Scheduler("continuous", 2, memory=memory))
    assert run.requests[0].finish_s == 3
    assert memory.allocator.tables == {} and memory.held_tokens == 0
    assert run.peak_kv_held_tokens == 8
    assert scheduler._growing == {} or all(not v for v in scheduler._growing.values())


def test_static_batching_keeps_a_stopped_requests_slot_empty():
    # Static, two slots: R0 stops at its first token (at 1); R2 still waits for R1 (cap 3,
    # at 3), then runs [3, 4] and finishes at 4.
    reqs = [Request(0.0, 8, 10), Request(0.0, 8, 3), Request(0.0, 8, 1)]
    run, _ = serve_with_stops(reqs, {0: 1}, Scheduler("static", 2))
    assert timeline(run) == [(1, 1), (1, 3), (4, 4)]


def test_finish_early_refuses_a_request_that_yields_no_token():
    scheduler = Scheduler("chunked", 2, token_budget=4)
    scheduler.add(0, Request(0.0, 8, 3))
    with pytest.raises(ValueError, match="scheduled batch"):
        scheduler.finish_early(0)
    batch = scheduler.schedule()                        # chunk 0..3 of an 8-token prompt
    with pytest.raises(ValueError, match="generates no token"):
        scheduler.finish_early(0)
    with pytest.raises(ValueError, match="generates no token"):
        scheduler.finish_early(7)
    scheduler.complete(batch)
    batch = scheduler.schedule()                        # chunk 4..7: the first token
    scheduler.finish_early(0)
    with pytest.raises(ValueError, match="already"):
        scheduler.finish_early(0)
    outcome = scheduler.complete(batch)
    assert (outcome.first_token, outcome.finished, outcome.generated) == ((0,), (0,), (1,))


def test_a_stop_token_from_a_recomputed_prefill_ends_the_request():
    # Blocks of 4, 3 blocks (12 slots), max_batch 2; R0, R1: prompt 4, cap 8, both at 0.
    # it 0 prefills both (a block each), first tokens at 1. it 1: each decode writes
    # position 4 and needs a 2nd block: R0 takes the last one, so R1 (the newest) is
    # preempted. R0 runs alone to its cap (8 at 8). R1 returns at it 8 [8, 9], recomputing
    # its prompt and its first token; the token that prefill yields, its 2nd, is a stop
    # token: it leaves in that iteration, at 9, having generated 2.
    memory = PagedMemory(12, block_size=4)
    reqs = [Request(0.0, 4, 8), Request(0.0, 4, 8)]
    run, _ = serve_with_stops(reqs, {1: 2}, Scheduler("continuous", 2, memory=memory))
    assert run.preemptions == 1 and run.iterations[1].preempted == (1,)
    assert [(c.request_id, c.tokens) for c in run.iterations[8].prefill] == [(1, 5)]
    assert timeline(run) == [(1, 8), (1, 9)]
    assert [r.generated_tokens for r in run.requests] == [8, 2]
    assert len(run.iterations) == 9 and memory.allocator.tables == {}


def test_reserving_the_cap_holds_prompt_plus_cap_whatever_the_true_length():
    # Capacity 40, prompts of 8, true outputs 2, a cap of 24: the oracle holds 10 slots a
    # request (four at once), the cap 32 (one at once). 1-second iterations: with the cap the
    # four requests run one after another, 2 iterations each.
    unit = LinearStepTime(base_s=1.0, per_token_s=0.0, per_kv_token_s=0.0)
    requests = [Request(0.0, 8, 2) for _ in range(4)]
    oracle = simulate(requests, max_batch=4, step_time=unit, kv_capacity_tokens=40)
    capped = simulate(requests, max_batch=4, step_time=unit, kv_capacity_tokens=40,
                      reserve_output_tokens=24)
    assert [r.finish_s for r in oracle.requests] == [2, 2, 2, 2]
    assert [r.finish_s for r in capped.requests] == [2, 4, 6, 8]
    with pytest.raises(ValueError, match="reserve_output_tokens"):  # 8 + 40 > 40: never fits
        simulate(requests, step_time=unit, kv_capacity_tokens=40, reserve_output_tokens=40)
    with pytest.raises(ValueError, match="not both"):
        simulate(requests, step_time=unit, reserve_tokens=10, reserve_output_tokens=2)
    with pytest.raises(ValueError, match="reservation"):
        simulate(requests, step_time=unit, kv_memory="paged", reserve_output_tokens=2)
