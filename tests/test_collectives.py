"""Collectives under the alpha-beta model, the link catalog, the fit of alpha and B, and the
tensor- and pipeline-parallel answers built on them: hand-worked cases."""
from __future__ import annotations

import math

import numpy as np
import pytest

import llmperf as lp

# alpha = 10 us, B = 100 GB/s one way (200 GB/s both ways, as a Link counts it)
LINK = lp.Link("test link", bandwidth=200e9, latency_s=10e-6, source="by hand")


def test_all_reduce_of_1_mb_over_4_ranks_by_hand():
    expected = 2 * 3 * (10e-6 + 1e6 / (4 * 100e9))
    assert lp.collective_time("all_reduce", 1e6, 4, LINK) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("op", ["all_gather", "reduce_scatter", "all_to_all"])
def test_one_pass_collectives_take_p_minus_1_steps(op):
    expected = 3 * (10e-6 + 1e6 / (4 * 100e9))
    assert lp.collective_time(op, 1e6, 4, LINK) == pytest.approx(expected, rel=1e-12)


def test_send_is_alpha_plus_m_over_b():
    assert lp.collective_time("send", 1e6, 2, LINK) == pytest.approx(10e-6 + 1e6 / 100e9)


@pytest.mark.parametrize("op", lp.COLLECTIVES)
def test_one_rank_costs_nothing(op):
    assert lp.collective_time(op, 1e9, 1, LINK) == 0.0
    assert lp.bytes_sent_per_rank(op, 1e9, 1) == 0.0


def test_a_zero_byte_message_still_pays_the_latency():
    assert lp.collective_time("all_reduce", 0, 8, LINK) == pytest.approx(14 * 10e-6)


def test_bytes_sent_agree_with_the_ring_all_reduce_of_chapter_4():
    assert lp.bytes_sent_per_rank("all_reduce", 1000, 4) == lp.ring_allreduce_bytes(1000, 4) == 1500
    assert lp.collective_steps("all_reduce", 8) == 14
    assert lp.collective_steps("send", 8) == 1


def test_catalog_links_take_a_name():
    nvlink = lp.get_link("nvlink 4")
    assert nvlink.name == "NVLink 4 (H100 SXM)"
    assert lp.collective_time("all_reduce", 16384, 8, "NVLink 4") == pytest.approx(
        14 * 0.6e-6 + 2 * 7 / 8 * 16384 / 450e9)


def test_catalog_links_cite_bandwidth_and_latency():
    names = set(lp.list_links())
    assert {"NVLink 4 (H100 SXM)", "NVLink 3 (A100 SXM)", "PCIe Gen5 x16", "PCIe Gen4 x16",
            "InfiniBand NDR (400 Gb/s)", "InfiniBand HDR (200 Gb/s)"} <= names
    for link in lp.LINKS:
        assert link.source.startswith("https://") and link.latency_source.startswith("https://")
        assert 0 < link.latency_s < 1e-4
    assert lp.get_link("NDR").one_way == 50e9  # 400 Gb/s each way
    assert lp.get_link("HDR").one_way == 25e9
    assert lp.INTERCONNECTS == lp.LINKS[:4]  # chapter 4's table is unchanged


@pytest.mark.parametrize(("args", "name"), [
    (("all_sum", 1e6, 4, LINK), "op"),
    (("all_reduce", -1, 4, LINK), "message_bytes"),
    (("all_reduce", 1e6, 0, LINK), "world_size"),
    (("all_reduce", 1e6, 2.5, LINK), "world_size"),
    (("all_reduce", 1e6, 4, 100e9), "link"),
    (("all_reduce", 1e6, 4, "carrier pigeon"), "link"),
])
def test_bad_arguments_are_named(args, name):
    with pytest.raises(ValueError, match=name):
        lp.collective_time(*args)


def test_a_link_checks_its_numbers():
    with pytest.raises(ValueError, match="bandwidth"):
        lp.Link("x", bandwidth=0, latency_s=1e-6, source="s")
    with pytest.raises(ValueError, match="latency_s"):
        lp.Link("x", bandwidth=1e9, latency_s=-1e-6, source="s")


@pytest.mark.parametrize("op", ["all_reduce", "all_gather", "all_to_all", "send"])
def test_fit_recovers_alpha_and_b_from_noiseless_times(op):
    sizes = 4 * 4.0 ** np.arange(13)  # 4 B to 64 MiB
    times = [lp.collective_time(op, m, 4, LINK) for m in sizes]
    fitted = lp.fit_alpha_beta(sizes, times, op, 4)
    assert fitted.latency_s == pytest.approx(10e-6, rel=1e-9)
    assert fitted.one_way == pytest.approx(100e9, rel=1e-9)
    assert lp.collective_time(op, 1e6, 4, fitted) == pytest.approx(
        lp.collective_time(op, 1e6, 4, LINK), rel=1e-9)


def test_fit_weighs_small_and_large_messages_alike():
    # 5 % noise on every time: alpha comes from the small messages, B from the large ones,
    # both within 10 % (an absolute least squares would let the 64 MiB times swamp alpha).
    rng = np.random.default_rng(0)
    sizes = np.repeat(4 * 4.0 ** np.arange(13), 3)
    times = [lp.collective_time("all_reduce", m, 4, LINK) * (1 + 0.05 * rng.standard_normal())
             for m in sizes]
    fitted = lp.fit_alpha_beta(sizes, times, "all_reduce", 4)
    assert fitted.latency_s == pytest.approx(10e-6, rel=0.1)
    assert fitted.one_way == pytest.approx(100e9, rel=0.1)


def test_fit_refuses_what_it_cannot_fit():
    with pytest.raises(ValueError, match="different sizes"):
        lp.fit_alpha_beta([1e6, 1e6], [1e-3, 2e-3], "all_reduce", 4)
    with pytest.raises(ValueError, match="world_size"):
        lp.fit_alpha_beta([1, 1e6], [1e-5, 1e-3], "all_reduce", 1)
    with pytest.raises(ValueError, match="seconds"):
        lp.fit_alpha_beta([1, 1e6], [0.0, 1e-3], "all_reduce", 4)
    with pytest.raises(ValueError, match="not a link"):  # bigger messages faster
        lp.fit_alpha_beta([1, 1e6, 2e6], [1e-3, 1e-4, 1e-5], "all_reduce", 4)


def test_pipeline_bubble_by_hand():
    assert lp.pipeline_bubble_fraction(4, 8) == pytest.approx(3 / 11)
    assert lp.pipeline_bubble_fraction(1, 8) == 0.0
    assert lp.pipeline_bubble_fraction(8, 1) == pytest.approx(7 / 8)
    with pytest.raises(ValueError, match="microbatches"):
        lp.pipeline_bubble_fraction(4, 0)


def test_kv_heads_split_or_replicate():
    assert lp.kv_head_share("llama-2-70b", 8) == 1 / 8  # 8 KV heads, one per GPU
    assert lp.kv_head_share("llama-2-70b", 1) == 1.0
    tiny = lp.get_model("llama-2-70b").with_(name="few kv heads", n_kv_heads=2)
    assert lp.kv_head_share(tiny, 8) == 1 / 2  # each of 2 heads on 4 GPUs
    with pytest.raises(ValueError, match="tp"):
        lp.kv_head_share("llama-2-70b", 3)


def test_tensor_parallel_decode_of_llama_2_70b_by_hand():
    llama, h100 = lp.get_model("llama-2-70b"), lp.get_accelerator("H100 SXM")
    nvlink = lp.get_link("NVLink 4")
    one = lp.tensor_parallel_decode(llama, h100, nvlink, tp=1, batch=1, seq_len=1024)
    eight = lp.tensor_parallel_decode(llama, h100, nvlink, tp=8, batch=1, seq_len=1024)
    # memory: 138 GB of fp16 weights do not fit one 80 GiB GPU; an eighth does
    assert not one.fits and one.max_batch == 0
    assert eight.weight_bytes_per_gpu == llama.weight_bytes("fp16") / 8 and eight.fits
    assert eight.max_batch == lp.requests_that_fit(
        h100.usable_capacity(), llama.weight_bytes("fp16") / 8,
        llama.kv_cache_bytes(1024, 1, "fp16") / 8)
    # communication: 2 all-reduces per layer of d_model fp16 values
    per_allreduce = 14 * 0.6e-6 + 2 * 7 / 8 * (8192 * 2) / 450e9
    assert eight.communication_s == pytest.approx(160 * per_allreduce)
    assert one.communication_s == 0.0
    assert eight.bytes_sent_per_gpu == lp.tensor_parallel_bytes_per_token(llama, 8)
    # compute: one GPU does the whole step; eight split all but the norms and residuals
    whole = lp.decode_step_time(llama, h100, 1024, attention="fused")
    assert one.compute_s == pytest.approx(whole)
    assert whole / 8 < eight.compute_s < whole / 7
    assert eight.step_s == eight.compute_s + eight.communication_s
    assert eight.tokens_per_s_per_gpu == pytest.approx(1 / eight.step_s / 8)
    assert 0 < eight.communication_share < 1


def test_tensor_parallel_decode_batch_scales_the_messages():
    small = lp.tensor_parallel_decode("llama-2-70b", "H100 SXM", "PCIe Gen5", 4, 1, 512)
    big = lp.tensor_parallel_decode("llama-2-70b", "H100 SXM", "PCIe Gen5", 4, 64, 512)
    bandwidth_s = 160 * 2 * 3 / 4 * 8192 * 2 / 64e9
    assert big.communication_s - small.communication_s == pytest.approx(63 * bandwidth_s)
    assert big.tokens_per_s > small.tokens_per_s
    assert math.isclose(big.kv_bytes_per_gpu, 64 * small.kv_bytes_per_gpu)


def test_tensor_parallel_all_reduces_carry_16_bit_activations_whatever_the_weights():
    # int8 weights halve the weights' bytes, not the activations the all-reduces carry
    int8 = lp.tensor_parallel_decode("llama-2-70b", "H100 SXM", "NVLink 4", 8, 64, 2048,
                                     dtype="int8")
    fp16 = lp.tensor_parallel_decode("llama-2-70b", "H100 SXM", "NVLink 4", 8, 64, 2048)
    assert int8.communication_s == fp16.communication_s
    assert int8.bytes_sent_per_gpu == fp16.bytes_sent_per_gpu
    assert int8.weight_bytes_per_gpu < 0.6 * fp16.weight_bytes_per_gpu
