"""Block allocation, the paged memory policy, and preemption on the simulator's clock."""
import heapq
import random

import pytest

from llmperf import serving as sv
from llmperf.serving import BlockAllocator, OutOfBlocks, Request

ONE_SECOND = sv.LinearStepTime(base_s=1.0, per_token_s=0.0, per_kv_token_s=0.0)


@pytest.mark.parametrize("tokens,size,blocks,waste", [
    (0, 16, 0, 0), (1, 16, 1, 15), (16, 16, 1, 0), (17, 16, 2, 15), (100, 16, 7, 12),
    (100, 1, 100, 0), (5, 8, 1, 3)])
def test_blocks_needed_and_internal_fragmentation(tokens, size, blocks, waste):
    assert sv.blocks_needed(tokens, size) == blocks
    assert sv.internal_fragmentation(tokens, size) == waste


def test_requests_that_fit_under_reservation_and_paging():
    # 20,480 slots: 10 reservations of 2,048; 1,280 blocks of 16, 19 blocks per 300 tokens
    assert sv.reserved_requests_that_fit(20_480, 2048) == 10
    assert sv.paged_requests_that_fit(20_480, 300, 16) == 67
    assert sv.paged_requests_that_fit(20_480, 2048, 16) == 10
    assert sv.paged_requests_that_fit(15, 1, 16) == 0  # not even one block


@pytest.mark.parametrize("call,match", [
    (lambda: sv.blocks_needed(-1, 16), "tokens"),
    (lambda: sv.blocks_needed(3, 0), "block_size"),
    (lambda: sv.blocks_needed(2.5, 16), "tokens"),
    (lambda: sv.reserved_requests_that_fit(100, 0), "reserve_tokens"),
    (lambda: sv.paged_requests_that_fit(100, 10, 0), "block_size"),
    (lambda: sv.paged_requests_that_fit(100, 0, 16), "tokens"),
    (lambda: sv.kv_utilization(5, 4), "used_tokens"),
    (lambda: BlockAllocator(0, 16), "num_blocks"),
    (lambda: BlockAllocator(4, -2), "block_size"),
])
def test_bad_block_arithmetic_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_allocation_takes_the_lowest_free_blocks_and_freeing_returns_them():
    a = BlockAllocator(6, block_size=4)
    assert a.allocate(0, 9) == [0, 1, 2]      # ceil(9 / 4) = 3 blocks
    assert a.allocate(1, 4) == [3]
    assert a.free_blocks == 2 and a.used_blocks == 4
    a.free(0)
    assert a.free_blocks == 5
    assert a.allocate(2, 5) == [0, 1]         # the freed blocks, lowest first
    a.check()


def test_append_takes_a_block_only_when_the_last_is_full():
    a = BlockAllocator(4, block_size=4)
    a.allocate(0, 3)
    assert a.blocks_to_append(0, 1) == 0
    assert a.append(0, 1) == [] and a.tables[0] == [0]
    assert a.blocks_to_append(0, 1) == 1
    a.append(0, 1)
    assert a.tables[0] == [0, 1] and a.tokens[0] == 5
    a.check()


def test_running_out_raises_and_changes_nothing():
    a = BlockAllocator(2, block_size=4)
    a.allocate(0, 8)
    assert not a.can_append(0, 1) and not a.can_allocate(1)
    with pytest.raises(OutOfBlocks):
        a.append(0, 1)
    with pytest.raises(OutOfBlocks):
        a.allocate(1, 1)
    assert a.tokens[0] == 8 and a.tables == {0: [0, 1]}
    a.check()


def test_fork_shares_every_block_and_copy_on_write_splits_only_the_partial_last():
    a = BlockAllocator(8, block_size=4)
    a.allocate(0, 6)                          # blocks 0 (full) and 1 (2 of 4 slots)
    a.fork(0, 1)
    assert a.refcount == {0: 2, 1: 2} and a.used_blocks == 2
    copies = a.append(1, 1)                   # writes into shared block 1: copy it first
    assert copies == [(1, 2)] and a.tables[1] == [0, 2]
    assert a.refcount == {0: 2, 1: 1, 2: 1}
    assert a.append(0, 1) == []               # block 1 is now the parent's alone
    a.check()


def test_a_shared_full_block_is_never_copied():
    a = BlockAllocator(8, block_size=4)
    a.allocate(0, 4)
    a.fork(0, 1)
    assert a.append(1, 1) == [] and a.tables[1] == [0, 1]   # a new block, block 0 shared
    assert a.refcount[0] == 2
    a.check()


def test_a_shared_block_is_freed_with_its_last_reference():
    a = BlockAllocator(3, block_size=4)
    a.allocate(0, 4)
    a.fork(0, 1)
    a.fork(0, 2)
    a.free(0)
    a.free(1)
    assert a.refcount == {0: 1} and a.free_blocks == 2
    a.free(2)
    assert a.refcount == {} and a.free_blocks == 3
    a.check()


def test_copy_on_write_needs_a_free_block():
    a = BlockAllocator(2, block_size=4)
    a.allocate(0, 2)
    a.fork(0, 1)
    a.allocate(2, 1)                          # the last free block
    assert a.blocks_to_append(1, 1) == 1 and not a.can_append(1, 1)
    with pytest.raises(OutOfBlocks):
        a.append(1, 1)
    a.check()


@pytest.mark.parametrize("call,match", [
    (lambda a: a.allocate(0, 1), "already has"),
    (lambda a: a.append(7, 1), "has no"),
    (lambda a: a.free(7), "has no"),
    (lambda a: a.fork(7, 8), "has no"),
    (lambda a: a.fork(0, 0), "already has"),
    (lambda a: a.append(0, -1), "tokens"),
])
def test_bad_allocator_calls_raise(call, match):
    a = BlockAllocator(4, block_size=4)
    a.allocate(0, 3)
    with pytest.raises(ValueError, match=match):
        call(a)
    a.check()


def test_random_operations_keep_counts_exact_and_no_block_double_owned():
    rng = random.Random(0)
    a = BlockAllocator(40, block_size=4)
    live, next_id = [], 0
    for _ in range(2000):
        op = rng.choice(["allocate", "append", "fork", "free"])
        if op == "allocate" and a.can_allocate(n := rng.randint(0, 9)):
            a.allocate(next_id, n)
            live.append(next_id)
            next_id += 1
        elif op == "append" and live:
            s, n = rng.choice(live), rng.randint(1, 6)
            if a.can_append(s, n):
                a.append(s, n)
        elif op == "fork" and live:
            a.fork(rng.choice(live), next_id)
            live.append(next_id)
            next_id += 1
        elif op == "free" and live:
            a.free(live.pop(rng.randrange(len(live))))
        a.check()
        assert a.used_blocks + a.free_blocks == 40
    assert a.peak_blocks <= 40


def test_parallel_samples_share_the_prompt():
    # prompt 19 tokens in blocks of 4: 4 full blocks and one of 3; 4 samples each add 9
    # cached tokens. Shared: 4 full prompt blocks once, each sample 28 tokens from its own
    # copy of block 4 on: ceil(28/4) - 4 = 3 blocks each -> 4 + 12 = 16. Alone: 4 x 7 = 28.
    assert sv.shared_sampling_blocks(19, 10, 4, 4) == (16, 28)
    assert sv.shared_sampling_blocks(19, 10, 1, 4) == (7, 7)


def test_requests_share_a_system_prompt():
    # a 1,000-token prefix: 62 full blocks and one of 8 tokens, held once. Request 0 adds 100
    # tokens from its own copy of the partial block: ceil(108 / 16) = 7 blocks; request 1 adds
    # 20: 2 blocks; request 2 adds none and copies nothing. Alone: 69 + 64 + 63 blocks.
    assert sv.shared_prefix_blocks(1000, [100, 20, 0], 16) == (72, 196)
    assert sv.shared_prefix_blocks(32, [1, 1], 16) == (4, 6)   # a full prefix is never copied
    with pytest.raises(ValueError, match="own_tokens"):
        sv.shared_prefix_blocks(32, [], 16)
    with pytest.raises(ValueError, match="own_tokens"):
        sv.shared_prefix_blocks(32, [-1], 16)


# ---- the paged policy on the simulator -----------------------------------------------------

def tokens_yielded(run, request_id):
    """Tokens a run gave request_id: one per decode, one per prefill chunk ending its prompt."""
    return sum((request_id in it.decode)
               + sum(c.request_id == request_id and c.completes_prompt for c in it.prefill)
               for it in run.iterations)


def test_hand_worked_preemption_timeline():
    # 12 slots in blocks of 4 = 3 blocks. Two requests of 4 prompt and 6 output tokens.
    # it 0: both prompts prefill, one block each; both yield their first token (t = 1 s).
    # it 1: request 0 needs a 5th slot, takes the last block; request 1 needs one too:
    #       none left, so the newest running request, 1, is preempted.
    # it 1-5: request 0 decodes tokens 2..6, leaves at t = 6 s (9 tokens cached: 3 blocks).
    # it 6: request 1 re-prefills its 4 prompt tokens and its 1 generated token (5 slots,
    #       2 blocks), which yields its token 2; it 7-10 yield 3..6: it leaves at t = 11 s.
    reqs = [Request(0.0, 4, 6), Request(0.0, 4, 6)]
    run = sv.simulate(reqs, "continuous", max_batch=4, step_time=ONE_SECOND,
                      kv_capacity_tokens=12, kv_memory="paged", block_size=4)
    assert [it.preempted for it in run.iterations] == [()] + [(1,)] + [()] * 9
    assert [(r.first_token_s, r.finish_s) for r in run.requests] == [(1.0, 6.0), (1.0, 11.0)]
    assert run.iterations[6].prefill == (sv.Chunk(1, 0, 5, True),)
    assert [it.kv_held_tokens for it in run.iterations[:2]] == [8, 8]
    assert run.iterations[5].kv_used_tokens == 9 and run.iterations[5].kv_held_tokens == 12
    assert [it.kv_unused_tokens for it in run.iterations[:3]] == [0, 3, 2]
    assert run.preemptions == 1
    assert [tokens_yielded(run, i) for i in range(2)] == [6, 6]


def test_the_victim_is_the_newest_request_not_the_one_that_needs_a_block():
    # 3 blocks of 4. Request 0 (prompt 4) arrives first; request 1 (prompt 1) at 0.5 s joins
    # in iteration 1. In iteration 5 request 0 reaches 9 tokens and needs a third block while
    # request 1, at 5 tokens, would need its second: none is free. The older request grows
    # first, so the newest, request 1, is preempted although it did not ask first; it had
    # yielded 4 tokens (iterations 1-4), so it comes back as a prefill of 1 + 4 tokens once
    # request 0 has left (end of iteration 7), and yields its tokens 5-8 in iterations 8-11.
    reqs = [Request(0.0, 4, 8), Request(0.5, 1, 8)]
    run = sv.simulate(reqs, "continuous", max_batch=4, step_time=ONE_SECOND,
                      kv_capacity_tokens=12, kv_memory="paged", block_size=4)
    assert [i for i, it in enumerate(run.iterations) if it.preempted] == [5]
    assert run.iterations[5].preempted == (1,) and run.iterations[5].decode == (0,)
    assert run.iterations[8].prefill == (sv.Chunk(1, 0, 5, True),)
    assert [(r.first_token_s, r.finish_s) for r in run.requests] == [(1.0, 8.0), (2.0, 12.0)]


def test_reservation_runs_the_same_requests_one_at_a_time():
    # each reserves 4 + 6 = 10 of the 12 slots: the second waits for the first to leave
    reqs = [Request(0.0, 4, 6), Request(0.0, 4, 6)]
    run = sv.simulate(reqs, "continuous", max_batch=4, step_time=ONE_SECOND,
                      kv_capacity_tokens=12, kv_memory="reservation")
    assert [(r.first_token_s, r.finish_s) for r in run.requests] == [(1.0, 6.0), (7.0, 12.0)]
    assert run.preemptions == 0
    assert {it.kv_held_tokens for it in run.iterations} == {10}
    assert run.iterations[0].kv_used_tokens == 4 and run.iterations[5].kv_used_tokens == 9


def test_a_fixed_reservation_holds_the_maximum_length():
    run = sv.simulate([Request(0.0, 4, 6)], max_batch=2, step_time=ONE_SECOND,
                      kv_capacity_tokens=64, reserve_tokens=32)
    assert {it.kv_held_tokens for it in run.iterations} == {32}
    assert run.kv_utilization == pytest.approx(sum(range(4, 10)) / (6 * 32))
    with pytest.raises(ValueError, match="reserve_tokens"):
        sv.simulate([Request(0.0, 30, 6)], step_time=ONE_SECOND, reserve_tokens=32)


@pytest.mark.parametrize("policy,budget", [("static", None), ("continuous", None), ("chunked", 24)])
def test_every_request_finishes_with_its_whole_output_under_preemption(policy, budget):
    reqs = sv.workload(40, sv.Uniform(1, 30), sv.Uniform(1, 40), rate_per_s=2.0, seed=4)
    run = sv.simulate(reqs, policy, max_batch=8, step_time=ONE_SECOND, token_budget=budget,
                      kv_capacity_tokens=96, kv_memory="paged", block_size=8)
    assert run.preemptions > 0
    for i, r in enumerate(run.requests):
        assert tokens_yielded(run, i) == r.request.output_tokens, i
        assert r.first_token_s <= r.finish_s
    for it in run.iterations:
        assert 0 <= it.kv_used_tokens <= it.kv_held_tokens <= 96
        assert it.kv_held_tokens % 8 == 0


def test_paging_holds_less_than_a_maximum_reservation_and_runs_more_requests():
    reqs = sv.workload(60, sv.Uniform(10, 60), sv.Uniform(5, 120), seed=2)
    common = dict(max_batch=32, step_time=ONE_SECOND, kv_capacity_tokens=2048)
    reserved = sv.simulate(reqs, reserve_tokens=256, **common)
    paged = sv.simulate(reqs, kv_memory="paged", block_size=16, **common)
    assert reserved.kv_utilization < 0.5 < 0.9 < paged.kv_utilization
    assert paged.mean_in_flight > 2 * reserved.mean_in_flight
    assert paged.makespan_s < reserved.makespan_s


def unit_continuous_finish_times(outputs, max_batch):
    """By hand: requests at time 0, unlimited memory, 1 s iterations. A request admitted at
    s (its prefill is iteration s) finishes at s + output; its slot is free from then on.
    FIFO: each starts in the earliest free slot, never before the request ahead of it."""
    free, finish, start = [0] * max_batch, [], 0
    for g in outputs:
        start = max(heapq.heappop(free), start)
        finish.append(start + g)
        heapq.heappush(free, start + g)
    return finish


@pytest.mark.parametrize("kv_memory", ["reservation", "paged"])
def test_unlimited_memory_runs_the_hand_computed_schedule(kv_memory):
    reqs = sv.workload(20, sv.Uniform(1, 30), sv.Uniform(1, 30), seed=5)
    run = sv.simulate(reqs, max_batch=6, step_time=ONE_SECOND, kv_memory=kv_memory)
    expected = unit_continuous_finish_times([r.output_tokens for r in reqs], 6)
    assert [r.finish_s for r in run.requests] == expected
    assert run.preemptions == 0


def test_the_reference_schedule_itself():
    # outputs 3, 1, 2, 2 on 2 slots: R0 [0, 3], R1 [0, 1], R2 from 1 to 3, R3 from 3 to 5
    assert unit_continuous_finish_times([3, 1, 2, 2], 2) == [3, 1, 3, 5]


def test_freed_blocks_come_back_lowest_first_whatever_the_order_they_were_freed():
    a = BlockAllocator(8, block_size=1)
    for i in range(8):
        a.allocate(i, 1)                      # sequence i holds block i
    for i in (6, 1, 4, 3):
        a.free(i)
    assert a.allocate(10, 3) == [1, 3, 4]     # a heap, not the order of the frees
    assert a.allocate(11, 1) == [6]
    a.check()


def test_paged_memory_claims_whole_blocks_and_grows_a_block_at_a_time():
    m = sv.PagedMemory(capacity_tokens=12, block_size=4)    # 3 blocks
    m.admit(0, Request(0.0, 5, 4), 5)                     # 5 tokens: 2 blocks, room 8
    assert m.room(0) == 8 and m.held_tokens == 8 and m.allocator.tables[0] == [0, 1]
    assert m.grow(0, 8) and m.room(0) == 8                # still inside its blocks
    assert m.grow(0, 9) and m.room(0) == 12 and m.allocator.tables[0] == [0, 1, 2]
    assert not m.grow(0, 13) and m.room(0) == 12          # no block left: no change
    m.release(0)
    assert m.held_tokens == 0 and m.allocator.free_blocks == 3
    m.allocator.check()


def test_the_scheduler_asks_the_memory_only_when_a_decode_passes_its_room():
    # prompt 4, output 10, blocks of 4: it caches 4 + 9 = 13 tokens, passing room 4 at its
    # 5th token, 8 at its 9th and 12 at its 13th: three calls, one block each.
    calls = []

    class Counting(sv.PagedMemory):
        def grow(self, request_id, tokens):
            calls.append(tokens)
            return super().grow(request_id, tokens)

    scheduler = sv.Scheduler("continuous", 1, memory=Counting(64, block_size=4))
    run = sv.serve([sv.Sequence(0, Request(0.0, 4, 10))], scheduler,
                   sv.SimulatedClock(ONE_SECOND))
    assert calls == [5, 9, 13]
    assert run.requests[0].finish_s == 10
    assert [it.kv_held_tokens for it in run.iterations] == [4] * 1 + [8] * 4 + [12] * 4 + [16]


@pytest.mark.parametrize("kwargs,match", [
    (dict(kv_memory="virtual"), "kv_memory"),
    (dict(kv_memory="paged", block_size=0), "block_size"),
    (dict(kv_memory="paged", kv_capacity_tokens=8, block_size=16), "one block"),
    (dict(kv_memory="paged", reserve_tokens=64), "reserve_tokens"),
    (dict(kv_memory="paged", kv_capacity_tokens=32, block_size=16), "more than"),
])
def test_bad_memory_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sv.simulate([Request(0.0, 30, 10)], step_time=ONE_SECOND, **kwargs)
