"""Parallelism run for real over torch.distributed (gloo, CPU processes).

Each run launches its processes once; the fork server that starts them is shared by the
whole file, so after the first launch a group starts in a fraction of a second.
"""
import pytest
import torch

from llmperf.measured.collectives import OPS, measure_collectives, timed_bytes
from llmperf.measured.distributed import launch, launch_overhead


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
    assert set(OPS) >= {"all_reduce", "all_gather", "all_to_all"}
