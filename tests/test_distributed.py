"""Parallelism run for real over torch.distributed (gloo, CPU processes).

Each run launches its processes once; the fork server that starts them is shared by the
whole file, so after the first launch a group starts in a fraction of a second.
"""
import pytest
import torch

import llmperf as lp
from llmperf.measured.collectives import OPS, measure_collectives, timed_bytes
from llmperf.measured.distributed import launch, launch_overhead
from llmperf.measured.expert_parallel import expert_ranges, run_expert_parallel
from llmperf.measured.generate import generate
from llmperf.measured.model import Transformer
from llmperf.measured.pipeline_parallel import run_pipeline_parallel, stage_layers
from llmperf.measured.tensor_parallel import (
    head_shard,
    run_tensor_parallel,
    shard_attention,
    shard_feed_forward,
)
from llmperf.models import get_model


def _rank_and_sum(rank, world_size):
    import torch.distributed as dist
    x = torch.tensor([float(rank + 1)])
    dist.all_reduce(x)
    return rank, float(x)


def test_launch_returns_each_ranks_result_in_rank_order():
    run = launch(_rank_and_sum, 3)
    assert run.results == ((0, 6.0), (1, 6.0), (2, 6.0))
    assert run.threads == 1 and run.world_size == 3
    assert 0 < run.startup_s <= run.wall_s


def test_launch_overhead_is_timed():
    runs = launch_overhead(2, repeats=2)
    assert len(runs) == 2 and all(r.wall_s > 0 for r in runs)


def test_measure_collectives_returns_a_positive_median_per_op_and_size():
    ops = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "send")
    rows = measure_collectives(ops, world_size=2, sizes_bytes=(8, 4096, 1 << 16), repeats=3,
                               warmup=1)
    assert [(r.op, r.message_bytes) for r in rows] == [(op, s) for op in ops
                                                       for s in (8, 4096, 1 << 16)]
    assert all(r.median_s > 0 and 0 < r.min_s <= r.median_s for r in rows)
    assert all(r.world_size == 2 and r.backend == "gloo" for r in rows)


def test_split_ops_round_up_to_whole_elements_per_rank():
    assert timed_bytes("all_reduce", 4, 4, 4) == 4
    assert timed_bytes("all_gather", 4, 4, 4) == 16       # one fp32 element per rank
    assert timed_bytes("all_to_all", 20, 2, 4) == 24
    assert timed_bytes("all_to_all", 24, 2, 4) == 24


@pytest.mark.parametrize("kwargs, name", [
    ({"world_size": 0}, "world_size"),
    ({"world_size": 1.5}, "world_size"),
    ({"ops": ("broadcast",)}, "ops"),
    ({"ops": "all_reduce"}, "ops"),
    ({"sizes_bytes": ()}, "sizes_bytes"),
    ({"sizes_bytes": (0,)}, "sizes_bytes"),
    ({"repeats": 0}, "repeats"),
    ({"ops": ("send",), "world_size": 1}, "world_size"),
])
def test_measure_collectives_refuses_bad_input(kwargs, name):
    with pytest.raises(ValueError, match=name):
        measure_collectives(**kwargs)


def test_launch_refuses_bad_input():
    with pytest.raises(ValueError, match="world_size"):
        launch(_rank_and_sum, 0)
    with pytest.raises(ValueError, match="backend"):
        launch(_rank_and_sum, 2, backend="mpi")
    with pytest.raises(ValueError, match="start_method"):
        launch(_rank_and_sum, 2, start_method="fork")
    with pytest.raises(ValueError, match="fn must be a module-level function"):
        launch(lambda rank, world_size: rank, 2)
    assert set(OPS) >= {"all_reduce", "all_gather", "all_to_all"}


# ---- tensor parallelism -------------------------------------------------------------------

TINY = get_model("ref-tiny")                                  # 4 query heads, 2 KV heads
ONE_KV = TINY.with_(name="tiny-mqa", n_kv_heads=1)           # every rank needs the one KV head
WIDE_GQA = TINY.with_(name="tiny-gqa8", n_heads=8, n_kv_heads=2, d_head=16)


def _prompt(vocab, batch, length, seed=0):
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("config, world_size, expected", [
    (TINY, 2, [(range(0, 2), range(0, 1)), (range(2, 4), range(1, 2))]),
    (ONE_KV, 2, [(range(0, 2), range(0, 1)), (range(2, 4), range(0, 1))]),
    (WIDE_GQA, 4, [(range(0, 2), range(0, 1)), (range(2, 4), range(0, 1)),
                   (range(4, 6), range(1, 2)), (range(6, 8), range(1, 2))]),
])
def test_head_shard_gives_each_rank_the_kv_heads_its_queries_read(config, world_size, expected):
    shards = [head_shard(config, r, world_size) for r in range(world_size)]
    assert [(s.q_heads, s.kv_heads) for s in shards] == expected
    group = config.n_heads // config.n_kv_heads
    for s in shards:
        assert {q // group for q in s.q_heads} == set(s.kv_heads)
        assert len(s.kv_heads) / config.n_kv_heads == lp.kv_head_share(config, world_size)


@pytest.mark.parametrize("config, world_size", [(TINY, 2), (ONE_KV, 2), (WIDE_GQA, 4),
                                                (WIDE_GQA, 8)])
def test_shards_partial_sums_add_up_to_the_full_layer(config, world_size):
    model = Transformer(config, max_seq_len=16, seed=3)
    block = model.layers[1]
    x = torch.randn(2, 5, config.d_model, generator=torch.Generator().manual_seed(1))
    cos, sin = model.rope(0, 5)
    with torch.inference_mode():
        attention = sum(shard_attention(block.attention, config, r, world_size)(
            x, cos, sin, 0, None, None) for r in range(world_size))
        ffn = sum(shard_feed_forward(block.feed_forward, config, r, world_size)(x)
                  for r in range(world_size))
        torch.testing.assert_close(attention, block.attention(x, cos, sin, 0, None, None))
        torch.testing.assert_close(ffn, block.feed_forward(x))


@pytest.mark.parametrize("config", [TINY, ONE_KV], ids=["gqa-split", "kv-replicated"])
def test_tensor_parallel_tokens_equal_single_process_greedy(config):
    model = Transformer(config, max_seq_len=64, seed=1)
    prompt = _prompt(config.vocab_size, 2, 7)
    run = run_tensor_parallel(model, 2, prompt, new_tokens=8)
    assert torch.equal(run.tokens, generate(model, prompt, 8).tokens)
    assert run.all_reduces_per_step == 2 * config.n_layers
    assert run.all_reduce_bytes == 2 * config.d_model * 4
    assert len(run.per_rank) == 2 and run.threads == 1
    assert run.decode.communication_s > 0 and run.decode.step_s > 0


def test_tensor_parallel_on_one_rank_has_no_communication():
    model = Transformer(TINY, max_seq_len=64, seed=2)
    prompt = _prompt(TINY.vocab_size, 1, 5)
    run = run_tensor_parallel(model, 1, prompt, new_tokens=4, threads=1)
    assert torch.equal(run.tokens, generate(model, prompt, 4).tokens)
    assert run.decode.communication_s == 0 and run.all_reduces_per_step == 0


@pytest.mark.parametrize("world_size, new_tokens, name", [
    (0, 4, "world_size"), (3, 4, "world_size"), (2, 1, "new_tokens"), (2, 0, "new_tokens"),
])
def test_tensor_parallel_refuses_bad_input(world_size, new_tokens, name):
    model = Transformer(TINY, max_seq_len=64)
    with pytest.raises(ValueError, match=name):
        run_tensor_parallel(model, world_size, [1, 2, 3], new_tokens)


def test_tensor_parallel_refuses_an_moe_model_and_uneven_kv_heads():
    with pytest.raises(ValueError, match="model must be dense"):
        run_tensor_parallel(Transformer("ref-moe-tiny", max_seq_len=32), 2, [1, 2], 2)
    six = TINY.with_(name="six-heads", n_heads=6, n_kv_heads=2, d_head=16)
    with pytest.raises(ValueError, match="world_size must divide n_kv_heads"):
        run_tensor_parallel(Transformer(six, max_seq_len=32), 3, [1, 2], 2)


# ---- pipeline parallelism -----------------------------------------------------------------
@pytest.mark.parametrize("stages, micro_batches, passes, expected", [
    (4, 4, 1, 3 / 7),            # GPipe: (p - 1) / (m + p - 1)
    (2, 1, 1, 1 / 2),
    (2, 1, 2, 1 / 2),            # one micro-batch: one stage works at a time
    (2, 4, 5, 1 - 20 / 21),      # m >= p: only the first fill and the last drain are idle
    (4, 2, 3, 1 - 6 / 13),       # m < p: 3 trips of 4 stage-times, then 2 - 1 more
    (1, 3, 4, 0.0),
])
def test_pipeline_bubble_by_hand(stages, micro_batches, passes, expected):
    assert lp.pipeline_bubble_fraction(stages, micro_batches, passes) == pytest.approx(expected)


@pytest.mark.parametrize("stages, micro_batches", [(1, 1), (2, 1), (2, 8), (4, 3), (8, 8)])
def test_one_pass_is_the_gpipe_bubble(stages, micro_batches):
    assert lp.pipeline_bubble_fraction(stages, micro_batches) == pytest.approx(
        (stages - 1) / (micro_batches + stages - 1))


def test_stage_layers_are_contiguous_and_even():
    assert stage_layers(4, 2) == [range(0, 2), range(2, 4)]
    assert stage_layers(5, 3) == [range(0, 2), range(2, 4), range(4, 5)]
    with pytest.raises(ValueError, match="stages"):
        stage_layers(2, 3)


@pytest.mark.parametrize("stages, micro_batches", [(2, 2), (2, 4)])
def test_pipeline_parallel_tokens_equal_single_process_greedy(stages, micro_batches):
    model = Transformer(TINY, max_seq_len=64, seed=4)
    prompts = _prompt(TINY.vocab_size, 4, 6, seed=2)
    run = run_pipeline_parallel(model, stages, prompts, new_tokens=5,
                                micro_batches=micro_batches)
    assert torch.equal(run.tokens, generate(model, prompts, 5).tokens)
    assert run.layers == (range(0, 1), range(1, 2))
    assert run.prefill.passes == 1 and run.decode.passes == 4
    predicted = lp.pipeline_bubble_fraction(2, micro_batches)
    assert run.prefill.predicted_idle == pytest.approx(predicted)
    for phase in (run.prefill, run.decode):
        assert len(phase.idle) == 2 and all(0 <= i < 1 for i in phase.idle)
        assert all(0 < b <= phase.span_s for b in phase.busy_s)


def test_pipeline_on_one_stage_has_no_bubble_and_one_token_no_decode_phase():
    model = Transformer(TINY, max_seq_len=64, seed=5)
    prompts = _prompt(TINY.vocab_size, 2, 4)
    run = run_pipeline_parallel(model, 1, prompts, new_tokens=1, micro_batches=1, threads=1)
    assert torch.equal(run.tokens, generate(model, prompts, 1).tokens)
    assert run.decode is None and run.prefill.idle[0] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("stages, micro_batches, name", [
    (0, 2, "stages"), (3, 2, "stages"), (2, 3, "micro_batches"), (2, 0, "micro_batches"),
])
def test_pipeline_parallel_refuses_bad_input(stages, micro_batches, name):
    model = Transformer(TINY, max_seq_len=64)
    with pytest.raises(ValueError, match=name):
        run_pipeline_parallel(model, stages, _prompt(TINY.vocab_size, 4, 3), 2,
                              micro_batches=micro_batches)


# ---- expert parallelism -------------------------------------------------------------------
@pytest.mark.parametrize("world_size", [2, 4])
def test_expert_parallel_logits_equal_the_single_process_model(world_size):
    model = Transformer("ref-moe-tiny", max_seq_len=32, seed=6)
    prompts = _prompt(model.config.vocab_size, 4, 12, seed=3)
    run = run_expert_parallel(model, world_size, prompts, repeats=1)
    with torch.inference_mode():
        torch.testing.assert_close(run.logits, model(prompts))
    c = model.config
    every_slot = 2 * prompts.numel() * c.experts_per_token * c.d_model * 4 * c.n_layers
    assert run.bytes_if_all_leave == every_slot
    assert run.bytes_uniform == pytest.approx(every_slot * (world_size - 1) / world_size)
    assert 0 < run.bytes_exchanged < every_slot      # some rows stay on their own rank
    # every (token, expert) pair is run once, on the rank holding the expert
    assert sum(run.rows_run) == prompts.numel() * c.experts_per_token * c.n_layers
    assert run.experts == tuple(expert_ranges(c.n_experts, world_size))


def test_expert_parallel_on_one_rank_exchanges_nothing():
    model = Transformer("ref-moe-tiny", max_seq_len=32, seed=7)
    prompts = _prompt(model.config.vocab_size, 2, 5)
    run = run_expert_parallel(model, 1, prompts, repeats=1, threads=1)
    with torch.inference_mode():
        torch.testing.assert_close(run.logits, model(prompts))
    assert run.bytes_exchanged == 0 and run.bytes_uniform == 0


@pytest.mark.parametrize("model, world_size, rows, name", [
    ("ref-tiny", 2, 4, "model must be a mixture of experts"),
    ("ref-moe-tiny", 3, 6, "world_size"),
    ("ref-moe-tiny", 0, 4, "world_size"),
    ("ref-moe-tiny", 2, 3, "prompts"),
])
def test_expert_parallel_refuses_bad_input(model, world_size, rows, name):
    with pytest.raises(ValueError, match=name):
        run_expert_parallel(Transformer(model, max_seq_len=32), world_size,
                            _prompt(512, rows, 4))
