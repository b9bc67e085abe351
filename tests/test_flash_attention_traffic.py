"""The tiled-attention count against FlashAttention's Theorem 2 (Dao et al., arXiv 2205.14135).

Queries in the outer loop: blocks of B_r = floor(M / 4d) queries (M in elements), at most N,
keys in blocks of B_c = min(B_r, d). Q is read and O written once, K and V once per query
block: 2 N d + 2 N d ceil(N / B_r) elements per head, Theta(N^2 d^2 / M) for d <= M <= N d
(Theorem 2), falling to 4 N d once B_r >= N. Algorithm 1 caps only its inner block at d rows;
the block that the outer loop keeps on chip is uncapped, so the count has no floor at 2 N^2.
"""
from __future__ import annotations

import math

import pytest

import llmperf as lp
from llmperf.analytic.fusion import flash_attention_accesses, flash_attention_order

KiB = 1024
N, D = 4096, 64  # fp16 throughout: 2 bytes per element
SRAMS = [16 * KiB, 32 * KiB, 48 * KiB, 64 * KiB, 96 * KiB, 128 * KiB, 160 * KiB, 192 * KiB]


def test_traffic_falls_strictly_as_on_chip_memory_grows():
    traffic = [flash_attention_accesses(N, D, m) for m in SRAMS]
    assert all(a > b for a, b in zip(traffic, traffic[1:])), traffic
    # Never rises between those points either, a KiB at a time.
    fine = [flash_attention_accesses(N, D, k * KiB) for k in range(16, 193)]
    assert all(a >= b for a, b in zip(fine, fine[1:]))


def test_traffic_is_within_a_constant_of_the_theorem_s_order():
    # The leading term is 2 N d * N / B_r with B_r = M / 4d: 8 N^2 d^2 / M. The extra 2 N d
    # and the ceiling add at most an eighth here, so the ratio stays between 8 and 9.
    for m in SRAMS:
        ratio = flash_attention_accesses(N, D, m) / flash_attention_order(N, D, m)
        assert 8 <= ratio <= 9, (m, ratio)


def test_by_hand_at_48_kib():
    # 48 KiB = 49,152 bytes = 24,576 fp16 elements; B_r = floor(24,576 / (4 * 64)) = 96 queries,
    # B_c = min(96, 64) = 64 keys. ceil(4096 / 96) = ceil(42.67) = 43 query blocks.
    # Elements: 2 N d + 2 N d * 43 = 524,288 * 44 = 23,068,672.
    assert flash_attention_accesses(N, D, 48 * KiB) == 23_068_672
    assert lp.flash_attention_cost(N, D, sram_bytes=48 * KiB).bytes == 2 * 23_068_672


def test_tends_to_four_n_d_once_a_block_holds_every_query():
    # B_r >= N needs M >= 4 d N elements: 4 * 64 * 4096 * 2 bytes = 2 MiB.
    assert flash_attention_accesses(N, D, 2 * 1024 * KiB) == 4 * N * D
    assert flash_attention_accesses(N, D, 1e12) == 4 * N * D
    assert flash_attention_accesses(N, D, 2 * 1024 * KiB - 512) > 4 * N * D  # B_r = 4095
    # ... which is the fused kernel's count (Q, K, V read once, O written once).
    assert lp.flash_attention_cost(N, D, sram_bytes=1e12).bytes == \
        lp.fused_attention_cost(N, D, causal=False).bytes


def test_no_floor_at_two_n_squared():
    # The old count capped B_r at d, so it never fell below 2 N d * N / d = 2 N^2.
    # At 192 KiB: M = 98,304 elements, B_r = floor(98,304 / 256) = 384, ceil(4096 / 384) = 11,
    # so 2 N d (1 + 11) = 524,288 * 12 = 6,291,456 elements, under 2 N^2 = 33,554,432.
    at_192 = flash_attention_accesses(N, D, 192 * KiB)
    assert at_192 == 6_291_456
    assert at_192 < 2 * N * N
    # B_r = d happens at M = 4 d^2 elements (32 KiB in fp16): there the count is 2 N^2 + 2 N d,
    # and more memory takes it below: at 40 KiB, B_r = floor(20,480 / 256) = 80,
    # ceil(4096 / 80) = ceil(51.2) = 52, so 524,288 * 53 = 27,787,264 elements.
    assert flash_attention_accesses(N, D, 32 * KiB) == 2 * N * N + 2 * N * D
    assert flash_attention_accesses(N, D, 40 * KiB) == 27_787_264 < 2 * N * N


def test_a10_at_d_128_is_what_chapter_4_uses():
    # 100 KiB, d = 128: B_r = floor(102,400 / 1,024) = 100 < d, the same under the old cap.
    flops = (4 * 128 + 3) * N * N
    moved = (2 * N * 128 + 2 * N * 128 * math.ceil(N / 100)) * 2
    intensity = lp.flash_attention_cost(N, 128, sram_bytes=100 * KiB).intensity
    assert intensity == pytest.approx(flops / moved)
    assert intensity == pytest.approx(98.1, abs=0.05)  # chapter 4's tiled value at N = 4096


def test_too_little_memory_for_one_row_of_each_is_an_error():
    with pytest.raises(ValueError, match="sram_bytes"):
        lp.flash_attention_cost(N, D, sram_bytes=4 * D * 2 - 1)
    assert flash_attention_accesses(N, D, 4 * D * 2) == 2 * N * D + 2 * N * D * N  # B_r = 1
