"""The engine serves each request as if it ran alone, on schedules worked by hand."""
import pytest
import torch

from llmperf.measured.engine import Engine
from llmperf.measured.generate import generate
from llmperf.measured.model import Transformer
from llmperf.serving import LinearStepTime, Request, SimulatedClock, simulate

UNIT = LinearStepTime(base_s=1.0, per_token_s=0.0, per_kv_token_s=0.0)

POLICIES = [("static", None), ("continuous", None), ("chunked", 6)]
# prompt and output lengths: prompts of different lengths, outputs from 1 token to 9
SHAPES = [(5, 7), (9, 3), (3, 9), (12, 1), (7, 6), (4, 4), (10, 2)]


@pytest.fixture(scope="module")
def tiny():
    return Transformer("ref-tiny", max_seq_len=64, seed=2)


def prompts_for(requests, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 512, (r.prompt_tokens,), generator=gen).tolist() for r in requests]


@pytest.mark.parametrize("policy,budget", POLICIES)
@pytest.mark.parametrize("arrivals", ["at_once", "staggered"])
def test_each_request_gets_the_tokens_of_generating_it_alone(tiny, policy, budget, arrivals):
    # Greedy tokens equal exactly: rows at other positions and masked keys change only the
    # float rounding of the logits (~1e-7 here), far below the gaps between top logits.
    # Staggered arrivals run on a simulated clock of 1 s per iteration, so that who joins
    # which batch does not depend on how fast this machine is, and nothing sleeps.
    gap, clock = (0.0, None) if arrivals == "at_once" else (1.5, SimulatedClock(UNIT))
    requests = [Request(i * gap, p, o) for i, (p, o) in enumerate(SHAPES)]
    prompts = prompts_for(requests, seed=1)
    engine = Engine(tiny, max_batch=3, policy=policy, token_budget=budget)
    run = engine.run(requests, prompts, clock=clock)
    for i, r in enumerate(requests):
        alone = generate(tiny, prompts[i], r.output_tokens).tokens[0].tolist()
        assert engine.outputs[i] == alone, f"request {i}"
        assert len(engine.outputs[i]) == r.output_tokens
    assert [r.request for r in run.requests] == requests


# Four requests at time 0, prompts of 8 tokens, outputs 1, 2, 3 and 10, max_batch 2: each
# iteration's prefill chunks (request, first token, tokens) and decodes, worked by hand
# (the timelines of tests/test_serving.py).
FOUR = [Request(0.0, 8, g) for g in (1, 2, 3, 10)]
BY_HAND = {
    # R0, R1 prefill; R1 decodes; R0 and R1 gone: R2, R3 prefill; decode to R3's 10th token
    "static": [([(0, 0, 8), (1, 0, 8)], ()), ([], (1,)), ([(2, 0, 8), (3, 0, 8)], ()),
               ([], (2, 3)), ([], (2, 3))] + [([], (3,))] * 7,
    # R2 takes R0's slot at once, R3 R1's one iteration later
    "continuous": [([(0, 0, 8), (1, 0, 8)], ()), ([(2, 0, 8)], (1,)), ([(3, 0, 8)], (2,)),
                   ([], (2, 3))] + [([], (3,))] * 8,
    # budget 6: decodes first, then the started prompt, then newly admitted ones
    "chunked": [([(0, 0, 6)], ()), ([(0, 6, 2), (1, 0, 4)], ()), ([(1, 4, 4), (2, 0, 2)], ()),
                ([(2, 2, 5)], (1,)), ([(2, 7, 1), (3, 0, 5)], ()), ([(3, 5, 3)], (2,)),
                ([], (2, 3))] + [([], (3,))] * 8,
}
BY_HAND_TIMES = {"static": [(1, 1), (1, 2), (3, 5), (3, 12)],
                 "continuous": [(1, 1), (1, 2), (2, 4), (3, 12)],
                 "chunked": [(2, 2), (3, 4), (5, 7), (6, 15)]}


def schedule(run):
    return [([(c.request_id, c.start_tokens, c.tokens) for c in it.prefill], it.decode)
            for it in run.iterations]


@pytest.mark.parametrize("policy,budget", POLICIES)
def test_engine_and_simulator_both_run_the_hand_worked_schedule(tiny, policy, budget):
    engine_run = Engine(tiny, max_batch=2, policy=policy, token_budget=budget).run(FOUR)
    sim_run = simulate(FOUR, policy, max_batch=2, token_budget=budget, step_time=UNIT)
    assert schedule(engine_run) == BY_HAND[policy]
    assert schedule(sim_run) == BY_HAND[policy]
    slots = [0, 1, 0, 1]                      # R2 and R3 reuse the slots R0 and R1 left
    assert [r.slot for r in engine_run.requests] == slots
    assert [r.slot for r in sim_run.requests] == slots


@pytest.mark.parametrize("policy,budget", POLICIES)
def test_the_engine_on_a_simulated_clock_stamps_the_hand_worked_times(tiny, policy, budget):
    engine = Engine(tiny, max_batch=2, policy=policy, token_budget=budget)
    run = engine.run(FOUR, clock=SimulatedClock(UNIT))
    assert [(r.first_token_s, r.finish_s) for r in run.requests] == BY_HAND_TIMES[policy]
    assert [s[2] for s in engine.step_samples] == [1.0] * len(BY_HAND[policy])


def test_late_arrivals_join_on_the_simulated_clock(tiny):
    # R0 at 0 (3 tokens), R1 at 0.5 (1 token), R2 at 7 (2 tokens); continuous, 4 slots.
    # it 0 [0,1]: prefill R0. it 1 [1,2]: prefill R1 (first = finish at 2), decode R0.
    # it 2 [2,3]: decode R0, finishes at 3. Idle until 7. it 3 [7,8], it 4 [8,9]: R2.
    reqs = [Request(0.0, 8, 3), Request(0.5, 8, 1), Request(7.0, 8, 2)]
    engine = Engine(tiny, max_batch=4)
    run = engine.run(reqs, clock=SimulatedClock(UNIT))
    assert [(r.first_token_s, r.finish_s) for r in run.requests] == [(1, 3), (2, 2), (8, 9)]
    assert [it.start_s for it in run.iterations] == [0, 1, 2, 7, 8]
    assert [len(o) for o in engine.outputs] == [3, 1, 2]


def test_wall_clock_stamps_are_ordered_and_one_sample_per_iteration(tiny):
    # R0 (prompt 5, 3 tokens) and R1 (prompt 3, 2 tokens) at time 0, continuous, 2 slots.
    # it 0: both prompts, 8 tokens, 8 keys. it 1: both decode, 2 tokens reading 5 + 1 and
    # 3 + 1 keys; R1 leaves. it 2: R0 decodes 1 token reading 5 + 2 keys, and leaves.
    engine = Engine(tiny, max_batch=2, policy="continuous")
    run = engine.run([Request(0.0, 5, 3), Request(0.0, 3, 2)])
    for it, nxt in zip(run.iterations, run.iterations[1:]):
        assert it.start_s <= it.end_s <= nxt.start_s
    for r in run.requests:
        assert r.arrival_s <= r.admitted_s < r.first_token_s <= r.finish_s
    assert [(tokens, kv) for tokens, kv, _, _ in engine.step_samples] == [(8, 8), (2, 10), (1, 7)]
    assert all(seconds > 0 for _, _, seconds, _ in engine.step_samples)
    # the first iteration starts from idle, the others right after one another
    assert [after_idle for *_, after_idle in engine.step_samples] == [True, False, False]


def test_seeded_sampling_gives_each_request_its_own_seeded_stream(tiny):
    requests = [Request(0.0, p, o) for p, o in SHAPES]
    prompts = prompts_for(requests, seed=3)
    engine = Engine(tiny, max_batch=4, temperature=1.0, top_k=20, seed=7)
    engine.run(requests, prompts)
    for i, r in enumerate(requests):
        alone = generate(tiny, prompts[i], r.output_tokens, temperature=1.0, top_k=20, seed=7 + i)
        assert engine.outputs[i] == alone.tokens[0].tolist()


def test_random_prompts_come_from_the_seed(tiny):
    # With no prompts, the engine draws them with torch.randint from a generator seeded
    # with `seed`, request after request; its outputs are those of generating each alone.
    requests = [Request(0.0, 6, 3), Request(0.0, 2, 4)]
    drawn = {}
    for seed in (0, 1):
        gen = torch.Generator().manual_seed(seed)
        drawn[seed] = [torch.randint(0, tiny.config.vocab_size, (r.prompt_tokens,),
                                     generator=gen).tolist() for r in requests]
        engine = Engine(tiny, max_batch=2, seed=seed)
        engine.run(requests)
        for i, r in enumerate(requests):
            alone = generate(tiny, drawn[seed][i], r.output_tokens).tokens[0].tolist()
            assert engine.outputs[i] == alone
    assert drawn[0] != drawn[1]


def test_a_request_beyond_the_kv_capacity_is_refused_by_the_shared_check(tiny):
    # reservation: each request reserves the longest one's 8 + 4 = 12 slots, more than 10
    with pytest.raises(ValueError, match=r"requests\[0\] needs 12 KV tokens.*at most 0"):
        Engine(tiny, kv_capacity_tokens=10).run([Request(0.0, 8, 4)])


@pytest.mark.parametrize("kwargs,match", [
    (dict(policy="fifo"), "policy"), (dict(max_batch=0), "max_batch"),
    (dict(policy="chunked"), "token_budget"), (dict(policy="chunked", token_budget=2), "budget"),
    (dict(token_budget=8), "token_budget"), (dict(temperature=-1.0), "temperature"),
    (dict(top_k=0), "top_k"), (dict(seed=-1), "seed"), (dict(decode="fused"), "decode")])
def test_bad_engine_arguments_raise(tiny, kwargs, match):
    with pytest.raises(ValueError, match=match):
        Engine(tiny, **kwargs)


def test_bad_model_raises():
    with pytest.raises(ValueError, match="model"):
        Engine("ref-tiny")


@pytest.mark.parametrize("requests,prompts,match", [
    ([], None, "requests"), ([(0.0, 4, 2)], None, "requests"),
    ([Request(0.0, 60, 10)], None, "max_seq_len"),
    ([Request(0.0, 3, 2)], [[1, 2]], "prompts\\[0\\]"),
    ([Request(0.0, 3, 2)], [[1, 2, 3], [1, 2, 3]], "prompts"),
    ([Request(0.0, 2, 2)], [[1, 512]], "prompt")])
def test_bad_run_arguments_raise(tiny, requests, prompts, match):
    with pytest.raises(ValueError, match=match):
        Engine(tiny).run(requests, prompts)


@pytest.mark.parametrize("kv_memory", ["reservation", "paged"])
@pytest.mark.parametrize("policy,budget", POLICIES)
def test_one_forward_pass_per_iteration_and_each_row_reads_its_own_context(
        tiny, policy, budget, kv_memory):
    # The iteration's chunks and decodes go through the model together: one call of the
    # model per iteration. Row by row, a chunk attends to its cached prompt and itself, a
    # decode to its prompt and the tokens generated so far (P + g), never to the longest
    # row's length: the keys of an iteration sum to the scheduler's own count.
    calls = []
    hook = tiny.register_forward_hook(lambda *_: calls.append(1))
    try:
        engine = Engine(tiny, max_batch=3, policy=policy, token_budget=budget,
                        kv_memory=kv_memory, block_size=4)
        requests = [Request(0.0, p, o) for p, o in SHAPES]
        run = engine.run(requests, prompts_for(requests))
    finally:
        hook.remove()
    assert len(calls) == len(run.iterations)
    for it, keys, (_, kv_tokens, _, _) in zip(run.iterations, engine.keys_attended,
                                              engine.step_samples):
        chunks = [c.start_tokens + c.tokens for c in it.prefill]
        assert keys[:len(chunks)] == chunks
        assert len(keys) == len(chunks) + len(it.decode)
        assert sum(keys) == kv_tokens
    # a decode of request i at its g-th generated token reads P_i + g keys
    first_decode = {}
    for it, keys in zip(run.iterations, engine.keys_attended):
        for i, k in zip(it.decode, keys[len(it.prefill):]):
            first_decode.setdefault(i, k)
    for i, k in first_decode.items():
        assert k == requests[i].prompt_tokens + 1


@pytest.mark.parametrize("kv_memory", ["reservation", "paged"])
@pytest.mark.parametrize("policy,budget", [("static", None), ("continuous", None), ("chunked", 8)])
def test_paged_and_contiguous_engines_give_each_request_its_tokens_alone(tiny, kv_memory, policy,
                                                                         budget):
    requests = [Request(0.0, p, o) for p, o in SHAPES]
    prompts = prompts_for(requests, seed=5)
    engine = Engine(tiny, max_batch=4, policy=policy, token_budget=budget, kv_memory=kv_memory,
                    block_size=4, kv_capacity_tokens=16 if kv_memory == "paged" else None)
    run = engine.run(requests, prompts)
    if kv_memory == "paged":
        assert run.preemptions > 0  # 16 slots cannot hold four of these at once: preemptions
    for i, r in enumerate(requests):
        assert engine.outputs[i] == generate(tiny, prompts[i], r.output_tokens).tokens[0].tolist()


@pytest.mark.parametrize("kv_memory", ["reservation", "paged"])
@pytest.mark.parametrize("policy,budget", POLICIES)
def test_a_stop_token_ends_a_request_where_generating_it_alone_would_draw_it(tiny, policy, budget,
                                                                             kv_memory):
    # Find, for each request, the greedy tokens it would generate alone; pick as stop token
    # the third token of request 0. Every request then ends at its first occurrence of that
    # token (kept as its last), or at its cap if it never draws it.
    requests = [Request(0.0, p, 9) for p, _ in SHAPES]
    prompts = prompts_for(requests, seed=1)
    alone = [generate(tiny, p, 9).tokens[0].tolist() for p in prompts]
    stop = alone[0][2]
    engine = Engine(tiny, max_batch=3, policy=policy, token_budget=budget, kv_memory=kv_memory,
                    block_size=4, stop_tokens={stop})
    run = engine.run(requests, prompts)
    for i, tokens in enumerate(alone):
        expected = tokens[:tokens.index(stop) + 1] if stop in tokens else tokens
        assert engine.outputs[i] == expected, f"request {i}"
        assert run.requests[i].generated_tokens == len(expected)
    assert len(engine.outputs[0]) == 3


def test_a_request_whose_first_token_is_a_stop_token_finishes_in_its_prefill_iteration(tiny):
    prompts = prompts_for([Request(0.0, 6, 1)], seed=4)
    first = generate(tiny, prompts[0], 1).tokens[0].tolist()[0]
    engine = Engine(tiny, max_batch=2, stop_tokens=[first])
    run = engine.run([Request(0.0, 6, 5)], prompts, clock=SimulatedClock(UNIT))
    assert engine.outputs[0] == [first]
    assert (run.requests[0].first_token_s, run.requests[0].finish_s) == (1.0, 1.0)
    assert len(run.iterations) == 1


@pytest.mark.parametrize("stop_tokens", [5, [512], [-1], ["a"], [True], [2.0]])
def test_bad_stop_tokens_raise(tiny, stop_tokens):
    with pytest.raises(ValueError, match="stop_tokens"):
        Engine(tiny, stop_tokens=stop_tokens)


@pytest.mark.parametrize("policy,budget", POLICIES)
def test_prefix_caching_reuses_a_shared_prompt_and_changes_no_token(tiny, policy, budget):
    # Six requests share a 12-token system prompt (three blocks of 4) and add 2 to 5 tokens
    # of their own; they arrive one second apart on a simulated clock, so each finds the
    # first one's full blocks computed. Cached blocks are not computed again: the prefill
    # chunks of later requests start after the hit, and every token equals generating alone.
    gen = torch.Generator().manual_seed(9)
    system = torch.randint(0, 512, (12,), generator=gen).tolist()
    prompts = [system + torch.randint(0, 512, (n,), generator=gen).tolist()
               for n in (2, 5, 3, 4, 2, 5)]
    requests = [Request(float(i), len(p), 3) for i, p in enumerate(prompts)]
    engine = Engine(tiny, max_batch=3, policy=policy, token_budget=budget, kv_memory="paged",
                    block_size=4, prefix_caching=True)
    run = engine.run(requests, prompts, clock=SimulatedClock(UNIT))
    for i, prompt in enumerate(prompts):
        assert engine.outputs[i] == generate(tiny, prompt, 3).tokens[0].tolist()
    first_chunk = {}
    for it in run.iterations:
        for c in it.prefill:
            first_chunk.setdefault(c.request_id, c.start_tokens)
    assert first_chunk[0] == 0
    assert all(first_chunk[i] == 12 for i in range(1, 6))
    assert [r.cached_prompt_tokens for r in run.requests] == [0] + [12] * 5
    assert run.prefix_hit_rate == pytest.approx(60 / sum(len(p) for p in prompts))


def test_prefix_caching_needs_paged_memory(tiny):
    with pytest.raises(ValueError, match="prefix_caching"):
        Engine(tiny, prefix_caching=True)
