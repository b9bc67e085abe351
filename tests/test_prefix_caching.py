"""Automatic prefix caching in llmperf.serving (PagedMemory(prefix_caching=True)), on cases
worked by hand.

Blocks of 16 tokens throughout. Unless said otherwise every iteration lasts 1 s, so
iteration k runs from k to k + 1 s. Prompt ids are built from blocks of 16 distinct ids
named by a letter: A is ids 0..15, B 16..31, and so on.
"""
import pytest

from llmperf.serving import (
    Fixed,
    LinearStepTime,
    PagedMemory,
    PrefixCachingAllocator,
    Request,
    Scheduler,
    Sequence,
    SimulatedClock,
    Uniform,
    chat_workload,
    make_memory,
    multi_turn_workload,
    serve,
    shared_prefix_workload,
    simulate,
)

UNIT = LinearStepTime(base_s=1.0, per_token_s=0.0, per_kv_token_s=0.0)
PER_TOKEN = LinearStepTime(base_s=0.0, per_token_s=1.0, per_kv_token_s=0.0)


def ids(blocks: str, extra: int = 0, start: int = 1000) -> tuple[int, ...]:
    """The ids of the named 16-token blocks, then `extra` ids of this request's own."""
    out = []
    for name in blocks:
        k = ord(name) - ord("A")
        out += range(16 * k, 16 * k + 16)
    return tuple(out) + tuple(range(start, start + extra))


def request(arrival_s, blocks, extra=0, output=1, start=1000):
    prompt = ids(blocks, extra, start)
    return Request(arrival_s, len(prompt), output, prompt)


def run_paged(requests, capacity=None, max_batch=8, step_time=UNIT, **scheduler_args):
    """simulate's loop with the memory at hand, checked at the end."""
    memory = PagedMemory(capacity, 16, prefix_caching=True)
    scheduler = Scheduler(max_batch=max_batch, memory=memory, **scheduler_args)
    run = serve([Sequence(i, r) for i, r in enumerate(requests)], scheduler,
                SimulatedClock(step_time))
    memory.allocator.check()
    assert all(it.kv_used_tokens <= it.kv_held_tokens for it in run.iterations)
    return run, memory


def test_a_later_request_reuses_the_shared_prefix_and_computes_the_rest():
    # R0: AB + 8 own (40 tokens) at 0, output 4. it 0 [0, 1] computes its prompt; blocks A
    # and B (its two full blocks) are cached when the iteration completes.
    # R1: AB + 8 others at 1.5, admitted at it 2 [2, 3]: it hits A and B (32 tokens) and
    # computes 8, a chunk starting at 32 that attends to 40 keys; first token at 3.
    r0 = request(0.0, "AB", 8, output=4)
    r1 = request(1.5, "AB", 8, output=4, start=2000)
    run, memory = run_paged([r0, r1])
    chunk = run.iterations[2].prefill[0]
    assert (chunk.request_id, chunk.start_tokens, chunk.tokens) == (1, 32, 8)
    assert chunk.kv_tokens == 40
    assert [r.cached_prompt_tokens for r in run.requests] == [0, 32]
    assert [(r.first_token_s, r.finish_s) for r in run.requests] == [(1, 4), (3, 6)]
    # it 2 holds R0's 3 blocks and R1's own 1 (A and B shared): 64 slots. Used: R0's
    # decode reads 42 tokens, R1's prefill caches 40, of which the shared 32 count once.
    assert run.iterations[2].kv_held_tokens == 64
    assert run.iterations[2].kv_used_tokens == 42 + 40 - 32
    assert (run.prompt_tokens, run.cached_prompt_tokens) == (80, 32)
    assert run.prefix_hit_rate == pytest.approx(32 / 80)


def test_the_step_time_charges_only_the_computed_tokens():
    # One second per token processed. R0 (40 tokens, output 1) takes [0, 40]. R1 arrives at
    # 40 and computes 8 of its 40 tokens: [40, 48]. Without caching it would take 40 s.
    reqs = [request(0.0, "AB", 8), request(40.0, "AB", 8, start=2000)]
    run, _ = run_paged(reqs, step_time=PER_TOKEN)
    assert [r.first_token_s for r in run.requests] == [40, 48]
    plain = simulate(reqs, step_time=PER_TOKEN, kv_memory="paged")
    assert [r.first_token_s for r in plain.requests] == [40, 80]


def test_requests_admitted_in_the_same_iteration_share_nothing():
    # Both arrive at 0 and are prefilled in it 0: R0's blocks are not computed when R1 is
    # admitted, so R1 hits nothing and computes its whole prompt.
    reqs = [request(0.0, "AB", 8), request(0.0, "AB", 8, start=2000)]
    run, memory = run_paged(reqs)
    assert [(c.start_tokens, c.tokens) for c in run.iterations[0].prefill] == [(0, 40), (0, 40)]
    assert run.prefix_hit_rate == 0.0
    # both registered A and B; the second finds them already cached and keeps its own
    # copies uncached: two cached blocks in all, idle once both have left
    assert memory.allocator.evictable_blocks == 2


def test_a_chunked_prompt_is_hit_only_where_its_chunks_have_run():
    # Chunked, budget 16: R0 (AB + 8, 40 tokens) runs chunks 0..15 (it 0), 16..31 (it 1),
    # 32..39 (it 2). R1 (AB + 8) arrives at 1: at it 1 the budget is spent on R0's chunk, so
    # it waits. R1 is admitted at it 2 beside R0's last chunk of 8: the 8 tokens left of
    # the budget. By then A and B have run (end of it 1): R1 hits 32 and computes 8.
    reqs = [request(0.0, "AB", 8, output=3), request(1.0, "AB", 8, output=3, start=2000)]
    run, _ = run_paged(reqs, policy="chunked", token_budget=16)
    assert [(c.request_id, c.start_tokens, c.tokens) for c in run.iterations[2].prefill] == [
        (0, 32, 8), (1, 32, 8)]
    assert run.requests[1].cached_prompt_tokens == 32


def test_a_wholly_cached_prompt_recomputes_its_last_block():
    # R0: AB (32 tokens), output 1, leaves at 1 with A and B cached. R1: the same 32 tokens
    # at 2. Its last token must be computed (its logits give the first token), and the
    # hit stops at whole blocks before the block holding it: A hits (16), B's 16 tokens
    # are computed again, into a block of R1's own (no cached block is written).
    reqs = [request(0.0, "AB"), request(2.0, "AB", output=2)]
    run, memory = run_paged(reqs)
    chunk = run.iterations[1].prefill[0]
    assert (chunk.start_tokens, chunk.tokens, chunk.kv_tokens) == (16, 16, 32)
    assert run.requests[1].cached_prompt_tokens == 16
    assert memory.cached_prefix_tokens(Request(0.0, 32, 1, ids("AB"))) == 16
    # 33 tokens (AB and one more) may hit both blocks: the block holding token 32 is new
    assert memory.cached_prefix_tokens(Request(0.0, 33, 1, ids("AB", 1))) == 32


def test_a_block_is_hit_only_with_everything_before_it():
    # B is cached after A; a prompt starting with B (after nothing) or with CB misses it.
    run, memory = run_paged([request(0.0, "AB", 1)])
    assert memory.cached_prefix_tokens(request(0.0, "AB", 5)) == 32
    assert memory.cached_prefix_tokens(request(0.0, "BA", 5)) == 0
    assert memory.cached_prefix_tokens(request(0.0, "CB", 5)) == 0
    assert memory.cached_prefix_tokens(request(0.0, "AC", 5)) == 16
    assert memory.cached_prefix_tokens(Request(0.0, 40, 1)) == 0      # no prompt_ids
    assert PagedMemory(None).cached_prefix_tokens(request(0.0, "AB", 5)) == 0


def test_lru_eviction_order_free_blocks_first_and_deepest_first():
    # Four blocks, driven by hand. A table is released from its last block to its first.
    memory = PagedMemory(64, 16, prefix_caching=True)
    alloc = memory.allocator
    assert isinstance(alloc, PrefixCachingAllocator)

    def run_alone(request_id, req):
        assert memory.fits(req, req.prompt_tokens)
        hit = memory.admit(request_id, req, req.prompt_tokens)
        memory.computed(request_id, req, req.prompt_tokens)
        table = list(alloc.tables[request_id])
        memory.release(request_id)
        return hit, table

    assert run_alone(0, request(0.0, "AB")) == (0, [0, 1])  # idle, oldest first: B, A
    assert run_alone(1, request(0.0, "CD")) == (0, [2, 3])  # B, A, D, C; nothing free
    assert list(alloc._evictable) == [1, 0, 3, 2]
    # AB + 1: hits A and B (taking them back from the idle list), needs one more block:
    # none is free, so the least recent idle block, D (3), is evicted.
    assert run_alone(2, request(0.0, "AB", 1)) == (32, [0, 1, 3])
    assert alloc.evictions == 1
    # Its third block held no full prompt block: released, it is free, not cached.
    assert list(alloc._evictable) == [2, 1, 0] and alloc._free == [3]
    # EFG: three blocks: the free 3 first, then C (2), then B (1); A stays.
    assert run_alone(3, request(0.0, "EFG")) == (0, [3, 2, 1])
    assert alloc.evictions == 3
    assert memory.cached_prefix_tokens(request(0.0, "AB", 1)) == 16
    assert memory.cached_prefix_tokens(request(0.0, "CD", 1)) == 0
    assert memory.cached_prefix_tokens(request(0.0, "EFG", 1)) == 48
    alloc.check()


def test_a_lookup_changes_nothing():
    memory = PagedMemory(64, 16, prefix_caching=True)
    req = request(0.0, "AB", 1)
    memory.admit(0, req, 33)
    memory.computed(0, req, 33)
    memory.release(0)
    before = (list(memory.allocator._evictable), dict(memory.allocator.refcount))
    assert memory.cached_prefix_tokens(req) == 32
    assert (list(memory.allocator._evictable), dict(memory.allocator.refcount)) == before


def test_idle_cached_blocks_count_as_free_for_admission():
    # Four blocks. R0 (ABCD, 64 tokens, output 1) leaves at 1 with all four cached and
    # idle. R1 (EFGH) arrives at 1 and needs all four: they are free to take (evicted), so
    # it runs at once, [1, 2]. Had idle blocks counted as held, it could never run.
    run, memory = run_paged([request(0.0, "ABCD"), request(1.0, "EFGH")], capacity=64)
    assert [r.first_token_s for r in run.requests] == [1, 2]
    assert memory.allocator.evictions == 4
    assert run.iterations[1].kv_held_tokens == 64 and memory.held_tokens == 0


def test_a_hit_on_idle_blocks_does_not_count_them_twice():
    # Four blocks: a running request holds one, A and B are cached and idle, one is free.
    # AB + 32 own tokens needs 4 blocks: it hits A and B and needs 2 more, but only the
    # free one is left besides its own hits: it does not fit. AB + 16 (3 blocks) does.
    memory = PagedMemory(64, 16, prefix_caching=True)
    ab = request(0.0, "AB")
    memory.admit(0, ab, 32)
    memory.computed(0, ab, 32)
    memory.release(0)
    memory.admit(1, Request(0.0, 16, 1), 16)             # takes block 2, leaves 3 free
    assert memory.allocator.free_blocks == 3             # one free, two idle cached
    assert not memory.fits(request(0.0, "AB", 32), 64)
    assert memory.fits(request(0.0, "AB", 16), 48)


def test_a_preempted_request_hits_its_own_blocks_when_readmitted():
    # Five blocks, max_batch 2. R0 (AB) and R1 (CD), output 20, both at 0: it 0 computes
    # them (blocks 0, 1 and 2, 3; A B C D cached). At it 1 each needs a third block for
    # position 32: R0 takes the free one, R1 finds none and is preempted (C, D idle).
    # R0 later takes D for its 4th block (position 48): the least recent idle block
    # (released last to first: D before C). R1 returns when R0 leaves at 20; its prefill
    # caches its prompt and its first token, 33 tokens: it hits C (D was evicted) and
    # computes tokens 16..32.
    reqs = [request(0.0, "AB", output=20), request(0.0, "CD", output=20)]
    run, memory = run_paged(reqs, capacity=80, max_batch=2)
    assert run.iterations[1].preempted == (1,)
    readmitted = [(it.index, c) for it in run.iterations[1:] for c in it.prefill]
    assert len(readmitted) == 1
    index, chunk = readmitted[0]
    assert (chunk.request_id, chunk.start_tokens, chunk.tokens) == (1, 16, 17)
    assert run.iterations[index].start_s == run.requests[0].finish_s == 20
    # the hit rate counts first admissions only: neither hit then
    assert run.prefix_hit_rate == 0.0


def test_hit_rate_of_a_shared_system_prompt():
    # Four requests, a 32-token system prompt and 8 tokens of their own, all at 0, one at a
    # time (max_batch 1): the first computes its 40 tokens, the next three hit 32 each.
    reqs = shared_prefix_workload(4, 32, Fixed(8), Fixed(2), seed=1)
    run = simulate(reqs, max_batch=1, step_time=UNIT, kv_memory="paged", prefix_caching=True)
    assert [r.cached_prompt_tokens for r in run.requests] == [0, 32, 32, 32]
    assert run.prefix_hit_rate == pytest.approx(96 / 160)
    # each of the three computes 8 tokens, not 40: prefill iterations charge 40 + 3 * 8
    prefilled = sum(c.tokens for it in run.iterations for c in it.prefill)
    assert prefilled == 40 + 3 * 8


def test_multi_turn_conversations_hit_their_previous_turn():
    # Two conversations of three turns, 16-token system prompt, 20-token user messages,
    # 10-token replies, a turn every 10 s (each turn is done well before). Turn 0: 36
    # tokens; turn 1: 36 + 10 + 20 = 66, hitting turn 0's two full blocks (32); turn 2:
    # 96, hitting turn 1's four full blocks (64). Both turn 0s run at 0 together: no hit.
    reqs = multi_turn_workload(2, 3, Fixed(20), Fixed(10), think_s=10.0, system_tokens=16)
    assert [r.prompt_tokens for r in reqs] == [36, 66, 96] * 2
    assert [r.arrival_s for r in reqs] == [0, 10, 20] * 2
    run = simulate(reqs, step_time=UNIT, kv_memory="paged", prefix_caching=True)
    assert [r.cached_prompt_tokens for r in run.requests] == [0, 32, 64] * 2
    assert run.prefix_hit_rate == pytest.approx(2 * 96 / (2 * 198))


def test_workload_prompts_begin_alike_where_they_should():
    reqs = shared_prefix_workload(5, 24, Uniform(1, 9), Fixed(3), rate_per_s=2.0, seed=3)
    system = reqs[0].prompt_ids[:24]
    assert all(r.prompt_ids[:24] == system for r in reqs)
    assert len({r.prompt_ids[24:] for r in reqs}) == 5
    assert all(r.prompt_tokens == len(r.prompt_ids) for r in reqs)
    assert reqs == shared_prefix_workload(5, 24, Uniform(1, 9), Fixed(3), rate_per_s=2.0,
                                          seed=3)
    assert reqs != shared_prefix_workload(5, 24, Uniform(1, 9), Fixed(3), rate_per_s=2.0,
                                          seed=4)
    turns = multi_turn_workload(3, 4, Uniform(1, 9), Uniform(1, 5), think_s=2.0,
                                rate_per_s=1.0, seed=3, vocab_size=50)
    for c in range(3):
        conv = turns[4 * c:4 * c + 4]
        for before, after in zip(conv, conv[1:]):
            n = before.prompt_tokens
            assert after.prompt_ids[:n] == before.prompt_ids
            assert after.prompt_tokens > n + before.output_tokens
            assert after.arrival_s == pytest.approx(before.arrival_s + 2.0)
    assert max(t for r in turns for t in r.prompt_ids) < 50


@pytest.mark.parametrize("bad, match", [
    (dict(prompt_ids=(1, 2, 3)), "prompt_tokens=4"),
    (dict(prompt_ids=(1, 2, 3, -1)), "non-negative"),
    (dict(prompt_ids=(1, 2, 3, 4.5)), "integer"),
    (dict(prompt_ids=5), "integer"),
])
def test_prompt_ids_are_checked(bad, match):
    with pytest.raises(ValueError, match=match):
        Request(0.0, 4, 2, **bad)


def test_prompt_ids_become_a_tuple():
    assert Request(0.0, 3, 1, [5, 6, 7]).prompt_ids == (5, 6, 7)


def test_prefix_caching_needs_paged_memory():
    with pytest.raises(ValueError, match="prefix_caching"):
        make_memory("reservation", None, prefix_caching=True)
    with pytest.raises(ValueError, match="prefix_caching"):
        PagedMemory(None, 16, prefix_caching="yes")


def run_signature(run):
    return ([(r.slot, r.admitted_s, r.first_token_s, r.finish_s) for r in run.requests],
            [(it.prefill, it.decode, it.preempted, it.kv_held_tokens, it.kv_used_tokens)
             for it in run.iterations])


def test_without_hits_prefix_caching_changes_nothing():
    # A paged run that preempts: without prompt_ids nothing can hit, and the run with
    # prefix caching is the run without it, iteration by iteration.
    reqs = chat_workload(60, rate_per_s=4.0, seed=2)
    step = LinearStepTime(0.01, 1e-4, 1e-6)
    args = dict(policy="continuous", max_batch=16, step_time=step, kv_capacity_tokens=4096,
                kv_memory="paged")
    plain = simulate(reqs, **args)
    cached = simulate(reqs, prefix_caching=True, **args)
    assert plain.preemptions > 0
    assert run_signature(plain) == run_signature(cached)
    assert cached.prefix_hit_rate == 0.0


def test_prompt_ids_change_nothing_without_prefix_caching():
    reqs = shared_prefix_workload(40, 64, Uniform(1, 64), Uniform(1, 64), rate_per_s=8.0)
    bare = [Request(r.arrival_s, r.prompt_tokens, r.output_tokens) for r in reqs]
    step = LinearStepTime(0.01, 1e-4, 1e-6)
    args = dict(policy="chunked", token_budget=64, max_batch=8, step_time=step,
                kv_capacity_tokens=1024, kv_memory="paged")
    assert run_signature(simulate(reqs, **args)) == run_signature(simulate(bare, **args))
    hit = simulate(reqs, prefix_caching=True, **args)
    assert hit.prefix_hit_rate > 0
    assert hit.makespan_s < simulate(reqs, **args).makespan_s


@pytest.mark.parametrize("policy, budget", [("continuous", None), ("chunked", 48),
                                            ("static", None)])
def test_a_busy_cached_run_keeps_its_books(policy, budget):
    # Multi-turn chat under memory pressure: every block count and reference stays right
    # (run_paged checks the allocator and used <= held), and every request finishes.
    reqs = multi_turn_workload(12, 3, Uniform(4, 40), Uniform(1, 30), think_s=0.5,
                               rate_per_s=6.0, system_tokens=20)
    run, memory = run_paged(reqs, capacity=512, max_batch=6, policy=policy,
                            token_budget=budget, step_time=LinearStepTime(0.02, 1e-3, 0.0))
    assert all(r.finish_s >= r.first_token_s >= r.arrival_s for r in run.requests)
    assert memory.held_tokens == 0 and memory.allocator.tables == {}
    assert 0 < run.prefix_hit_rate < 1


def test_the_allocator_keeps_one_block_per_content():
    alloc = PrefixCachingAllocator(4, block_size=2)
    alloc.allocate(0, 4)                                   # blocks 0, 1
    alloc.allocate(1, 2)                                   # block 2
    first = alloc.register(0, -1, (7, 8))
    second = alloc.register(1, first, (9, 9))
    assert alloc.lookup(-1, (7, 8)) == (0, first) and alloc.lookup(first, (9, 9)) == (1, second)
    assert alloc.register(2, -1, (7, 8)) == first          # same content: block 2 stays uncached
    assert alloc.lookup(second, (7, 8)) is None            # same tokens, another prefix
    with pytest.raises(ValueError, match="already cached"):
        alloc.register(0, -1, (5, 5))
    alloc.fork(0, 3)                                       # shares blocks 0 and 1
    assert alloc.shared_refs == 2
    alloc.free(0)
    alloc.free(1)                                          # block 2, never cached: free
    assert alloc.evictable_blocks == 0 and alloc.free_blocks == 2
    alloc.free(3)                                          # 0 and 1 idle, last block first
    assert list(alloc._evictable) == [1, 0] and alloc.free_blocks == 4
    alloc.check()


def test_a_request_stopped_at_its_first_token_leaves_its_prompt_cached():
    # R0 (AB + 8, cap 10) meets a stop token as its first token: it leaves at 1, and its
    # blocks A and B, computed, stay cached. R1 (AB + 8) at 1 hits them.
    memory = PagedMemory(None, 16, prefix_caching=True)
    scheduler = Scheduler(max_batch=4, memory=memory)

    def execute(batch):
        if batch.iteration == 0:
            scheduler.finish_early(0)

    reqs = [request(0.0, "AB", 8, output=10), request(1.0, "AB", 8, output=2, start=2000)]
    run = serve([Sequence(i, r) for i, r in enumerate(reqs)], scheduler,
                SimulatedClock(UNIT), execute)
    assert [(r.finish_s, r.generated_tokens) for r in run.requests] == [(1, 1), (3, 2)]
    assert [r.cached_prompt_tokens for r in run.requests] == [0, 32]


@pytest.mark.parametrize("capacity", [None, 1024])
def test_an_unlimited_pool_evicts_nothing_and_hits_as_a_large_one(capacity):
    # R0 (blocks A B, then 8 of its own) at 0 s, R1 (C D, 8 of its own) at 10 s, R2 (R0's
    # prompt again) at 20 s: R2 finds A and B cached, 32 tokens, whatever R1 took meanwhile.
    # An unlimited pool must not reuse R0's finished blocks for R1 (memory is never needed).
    r0 = Request(0.0, 40, 2, ids("AB", 8))
    r1 = Request(10.0, 40, 2, ids("CD", 8, start=2000))
    r2 = Request(20.0, 40, 2, ids("AB", 8))
    run = simulate([r0, r1, r2], step_time=UNIT, kv_memory="paged", prefix_caching=True,
                   kv_capacity_tokens=capacity)
    assert [r.cached_prompt_tokens for r in run.requests] == [0, 0, 32]


def test_requests_finishing_together_leave_in_arrival_order():
    # R0 (cap 5) and R1 (cap 2) prefill in iteration 0 and decode in iteration 1, where R1
    # reaches its cap and R0 draws a stop token: both leave, R0 first (arrival order), so
    # the engine, which learns of R0's end during the iteration, releases their blocks in
    # the order a simulator that knew R0's length would.
    scheduler = Scheduler("continuous", 2, memory=PagedMemory(64, 16, prefix_caching=True))
    for i, cap in enumerate((5, 2)):
        scheduler.enqueue(Sequence(i, Request(0.0, 8, cap, tuple(range(8 * i, 8 * i + 8)))))
    scheduler.complete(scheduler.schedule())
    batch = scheduler.schedule()
    scheduler.finish_early(0)
    assert scheduler.complete(batch).finished == (0, 1)
