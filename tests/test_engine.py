"""The engine serves each request as if it ran alone, on the simulator's schedule."""
import pytest
import torch

from llmperf.measured.engine import Engine
from llmperf.measured.generate import generate
from llmperf.measured.model import Transformer
from llmperf.serving import LinearStepTime, Request, simulate

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
    gap = 0.0 if arrivals == "at_once" else 0.004
    requests = [Request(i * gap, p, o) for i, (p, o) in enumerate(SHAPES)]
    prompts = prompts_for(requests, seed=1)
    engine = Engine(tiny, max_batch=3, policy=policy, token_budget=budget)
    run = engine.run(requests, prompts)
    for i, r in enumerate(requests):
        alone = generate(tiny, prompts[i], r.output_tokens).tokens[0].tolist()
        assert engine.outputs[i] == alone, f"request {i}"
        assert len(engine.outputs[i]) == r.output_tokens
    assert [r.request for r in run.requests] == requests


@pytest.mark.parametrize("policy,budget", POLICIES)
def test_the_run_has_the_simulators_iterations_for_requests_arriving_together(
        tiny, policy, budget):
    requests = [Request(0.0, p, o) for p, o in SHAPES]
    run = Engine(tiny, max_batch=3, policy=policy, token_budget=budget).run(requests)
    sim = simulate(requests, policy, max_batch=3, token_budget=budget,
                   step_time=LinearStepTime(1e-3, 0.0, 0.0))
    assert [(it.prefill, it.decode) for it in run.iterations] == \
        [(it.prefill, it.decode) for it in sim.iterations]
    assert [r.slot for r in run.requests] == [r.slot for r in sim.requests]


def test_wall_clock_stamps_are_ordered_and_one_sample_per_iteration(tiny):
    requests = [Request(0.01 * i, p, o) for i, (p, o) in enumerate(SHAPES)]
    engine = Engine(tiny, max_batch=2, policy="continuous")
    run = engine.run(requests)
    for it, nxt in zip(run.iterations, run.iterations[1:]):
        assert it.start_s <= it.end_s <= nxt.start_s
    for r in run.requests:
        assert r.arrival_s <= r.admitted_s < r.first_token_s <= r.finish_s
    assert len(engine.step_samples) == len(run.iterations)
    for (tokens, kv_tokens, seconds), it in zip(engine.step_samples, run.iterations):
        assert tokens == sum(c.tokens for c in it.prefill) + len(it.decode)
        assert kv_tokens >= tokens and seconds == pytest.approx(it.duration_s)


def test_seeded_sampling_gives_each_request_its_own_seeded_stream(tiny):
    requests = [Request(0.0, p, o) for p, o in SHAPES]
    prompts = prompts_for(requests, seed=3)
    engine = Engine(tiny, max_batch=4, temperature=1.0, top_k=20, seed=7)
    engine.run(requests, prompts)
    for i, r in enumerate(requests):
        alone = generate(tiny, prompts[i], r.output_tokens, temperature=1.0, top_k=20, seed=7 + i)
        assert engine.outputs[i] == alone.tokens[0].tolist()


def test_random_prompts_come_from_the_seed(tiny):
    requests = [Request(0.0, 6, 3), Request(0.0, 2, 4)]
    a, b, c = (Engine(tiny, max_batch=2, seed=s) for s in (0, 0, 1))
    for engine in (a, b, c):
        engine.run(requests)
    assert a.outputs == b.outputs and a.outputs != c.outputs


@pytest.mark.parametrize("kwargs,match", [
    (dict(policy="fifo"), "policy"), (dict(max_batch=0), "max_batch"),
    (dict(policy="chunked"), "token_budget"), (dict(policy="chunked", token_budget=2), "budget"),
    (dict(token_budget=8), "token_budget"), (dict(temperature=-1.0), "temperature"),
    (dict(top_k=0), "top_k"), (dict(seed=-1), "seed")])
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
