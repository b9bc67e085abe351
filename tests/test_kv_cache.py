"""The paged KV cache gives the contiguous cache's outputs; the int8 cache's error is bounded."""
import pytest
import torch

from llmperf import get_model
from llmperf.analytic.quant import int8_kv_bytes_per_token
from llmperf.measured.cache import KV_SCALE_DTYPE, KVCache, PagedKVCache, paged_cache_for
from llmperf.measured.engine import Engine
from llmperf.measured.generate import generate, parallel_samples
from llmperf.measured.model import Transformer
from llmperf.measured.quant import dequantize_groups, quantize, quantize_groups
from llmperf.serving import BlockAllocator, Request, shared_sampling_blocks, workload
from llmperf.serving.paging import blocks_needed
from llmperf.serving.requests import Uniform


@pytest.fixture(scope="module")
def tiny():
    return Transformer("ref-tiny", max_seq_len=96, seed=3)


def test_a_paged_prefill_gives_the_logits_of_the_model_without_a_cache(tiny):
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, tiny.config.vocab_size, (3, 21), generator=gen)
    _, view = paged_cache_for(tiny, 3, 21, block_size=4)
    torch.testing.assert_close(tiny(x, 0, view), tiny(x), rtol=1e-5, atol=1e-5)


def test_paged_decode_in_scattered_blocks_equals_the_contiguous_cache(tiny):
    # two sequences whose blocks interleave in the pool (0: blocks 0, 2, 4..., 1: 1, 3, ...)
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, tiny.config.vocab_size, (2, 30), generator=gen)
    alloc = BlockAllocator(20, block_size=4)
    alloc.allocate(0, 1)
    alloc.allocate(1, 1)
    paged = PagedKVCache(tiny, alloc)
    contiguous = KVCache(tiny, 2, 30)
    for t in range(30):
        if t:
            alloc.append(0, 1)
            alloc.append(1, 1)
        want = tiny(x[:, t:t + 1], t, contiguous)
        got = tiny(x[:, t:t + 1], t, paged.view([0, 1], [t, t], 1))
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert alloc.tables[0][:3] == [0, 2, 4] and alloc.tables[1][:3] == [1, 3, 5]


def test_a_view_refuses_positions_its_blocks_do_not_hold(tiny):
    alloc = BlockAllocator(4, block_size=4)
    alloc.allocate(0, 5)
    cache = PagedKVCache(tiny, alloc)
    with pytest.raises(ValueError, match="append first"):
        cache.view([0], [5], 1)
    with pytest.raises(ValueError, match="append first"):
        cache.view([1], [0], 1)
    with pytest.raises(ValueError, match="allocator"):
        PagedKVCache(tiny, BlockAllocator(None, 4))
    with pytest.raises(ValueError, match="kv_dtype"):
        PagedKVCache(tiny, alloc, "int4")


def test_int8_round_trip_error_is_at_most_half_a_step():
    x = torch.randn(64, 8, 32, generator=torch.Generator().manual_seed(2)) * 3
    x[0, 0] = 0.0                                    # an all-zero vector stays zero
    x[1, 0, 5] = 200.0                               # an outlier coarsens its vector's step
    q, scale = quantize_groups(x, 8, KV_SCALE_DTYPE)
    assert q.dtype == torch.int8 and scale.shape == x.shape[:-1]
    assert scale.dtype == torch.float16 and float(scale[0, 0]) == 0.0
    back = dequantize_groups(q, scale, torch.float32)
    step = scale.float()[..., None]
    assert ((back - x).abs() <= step / 2 * (1 + 1e-3) + 1e-6).all()
    assert (back[0, 0] == 0).all()
    ideal = x.abs().amax(-1) / 127                  # the scale, before its fp16 rounding
    nonzero = ideal > 0
    assert ((scale.float() - ideal).abs()[nonzero] <= 2 ** -11 * ideal[nonzero]).all()
    assert (back[1, 0] - x[1, 0]).abs().max() > 10 * (back[2] - x[2]).abs().max()


def test_the_int8_cache_and_the_weights_round_alike_and_give_zeros_scale_zero(tiny):
    """Written by hand: a zero vector stores scale 0 and codes 0; a vector whose largest
    magnitude is 127 * 2^-4 stores scale 2^-4 (exact in fp16) and codes x / 2^-4. The
    cache's update and the weights' quantize both store exactly that."""
    heads, d = tiny.config.n_kv_heads, tiny.config.d_head
    codes = torch.arange(d) % 255 - 127                 # -127 .. 127, q_max included
    x = torch.zeros(1, heads, 2, d)
    x[0, :, 1] = codes * 2.0 ** -4                      # token 1 exact; token 0 all zero
    cache, view = paged_cache_for(tiny, 1, 2, block_size=4, kv_dtype="int8")
    view.update(0, 0, x, -x)
    slots = [cache.allocator.tables[0][0] * 4 + p for p in (0, 1)]
    for store, scale, sign in ((cache.k, cache.k_scale, 1), (cache.v, cache.v_scale, -1)):
        assert scale[0][:, slots].tolist() == [[0.0, 2.0 ** -4]] * heads
        assert torch.equal(store[0][:, slots[0]], torch.zeros(heads, d, dtype=torch.int8))
        assert torch.equal(store[0][:, slots[1]].long(), sign * codes.expand(heads, d))
    w = quantize(x[0, 0], bits=8)                       # the same two vectors as weight rows
    assert w.scales[:, 0].tolist() == [0.0, 2.0 ** -4]
    assert torch.equal(w.codes()[1].long(), codes) and not w.codes()[0].any()


def test_the_int8_cache_stores_a_quarter_of_fp32_plus_its_scales(tiny):
    fp32, _ = paged_cache_for(tiny, 2, 32, block_size=8)
    int8, _ = paged_cache_for(tiny, 2, 32, block_size=8, kv_dtype="int8")
    d = tiny.config.d_head
    assert int8.nbytes / fp32.nbytes == pytest.approx((d + 2) / (4 * d))
    slots = 2 * blocks_needed(32, 8) * 8
    assert int8.nbytes == slots * int8_kv_bytes_per_token(tiny.config)
    assert fp32.nbytes == slots * tiny.config.kv_bytes_per_token("fp32")


def test_int8_kv_bytes_per_token_by_hand():
    # Llama 2 7B: 2 * 32 layers * 32 KV heads * (128 + 2) bytes; fp16 would be 2 * 32 * 32 * 256
    llama = get_model("llama-2-7b")
    assert int8_kv_bytes_per_token(llama) == 266_240
    assert int8_kv_bytes_per_token(llama.with_(n_kv_heads=8)) == 266_240 // 4


def test_the_int8_cache_returns_keys_within_half_a_step(tiny):
    gen = torch.Generator().manual_seed(3)
    x = torch.randint(0, tiny.config.vocab_size, (2, 16), generator=gen)
    exact, view = paged_cache_for(tiny, 2, 16, block_size=4)
    tiny(x, 0, view)
    int8, view8 = paged_cache_for(tiny, 2, 16, block_size=4, kv_dtype="int8")
    tiny(x, 0, view8)
    # layer 0 sees the same input in both, so its stored keys differ by rounding alone
    k = exact.k[0].float()
    k8 = dequantize_groups(int8.k[0], int8.k_scale[0], torch.float32)
    assert ((k8 - k).abs() <= int8.k_scale[0].float()[..., None] / 2 * (1 + 1e-3) + 1e-6).all()
    assert not torch.equal(k8, k)


def _requests():
    return workload(10, Uniform(3, 20), Uniform(1, 30), seed=1)


@pytest.mark.parametrize("policy,budget", [("static", None), ("continuous", None), ("chunked", 16)])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_the_paged_engine_gives_each_requests_own_generation(tiny, policy, budget, temperature):
    # Whatever the batching and however often a request is preempted and recomputed, request
    # i's tokens are those of `generate` run on its prompt alone, seeded seed + i.
    reqs = _requests()
    top_k = 20 if temperature else None
    gen = torch.Generator().manual_seed(2)
    prompts = [torch.randint(0, tiny.config.vocab_size, (r.prompt_tokens,), generator=gen).tolist()
               for r in reqs]
    paged = Engine(tiny, max_batch=4, policy=policy, token_budget=budget,
                   temperature=temperature, top_k=top_k, seed=5, kv_memory="paged",
                   block_size=4, kv_capacity_tokens=64)
    run = paged.run(reqs, prompts)
    assert run.preemptions > 0                     # 64 slots: requests are recomputed
    for i, r in enumerate(reqs):
        alone = generate(tiny, prompts[i], r.output_tokens, temperature=temperature,
                         top_k=top_k, seed=5 + i).tokens[0].tolist()
        assert paged.outputs[i] == alone, f"request {i}"
    contiguous = Engine(tiny, max_batch=4, policy=policy, token_budget=budget)
    contiguous.run(reqs, prompts)
    assert paged.cache_bytes < contiguous.cache_bytes
    assert paged.peak_kv_held_bytes <= paged.cache_bytes


def test_the_int8_engine_runs_every_request_to_its_length(tiny):
    reqs = _requests()
    engine = Engine(tiny, max_batch=4, kv_memory="paged", block_size=4, kv_dtype="int8")
    engine.run(reqs)
    assert [len(o) for o in engine.outputs] == [r.output_tokens for r in reqs]


@pytest.mark.parametrize("kwargs,match", [
    (dict(kv_memory="disk"), "kv_memory"),
    (dict(kv_dtype="int8"), "kv_dtype"),
    (dict(kv_memory="paged", kv_dtype="fp8"), "kv_dtype"),
    (dict(kv_memory="paged", block_size=0), "block_size"),
])
def test_bad_kv_arguments_raise(tiny, kwargs, match):
    with pytest.raises(ValueError, match=match):
        Engine(tiny, **kwargs)


def test_a_request_longer_than_the_paged_capacity_raises(tiny):
    with pytest.raises(ValueError, match="more than"):
        Engine(tiny, kv_memory="paged", block_size=4, kv_capacity_tokens=8).run(
            [Request(0.0, 10, 5)])


@pytest.mark.parametrize("share", [True, False])
def test_parallel_samples_are_each_seeds_own_generation(tiny, share):
    prompt = list(range(1, 20))
    got = parallel_samples(tiny, prompt, 4, 10, temperature=1.0, top_k=20, seed=3,
                           block_size=4, share=share)
    alone = torch.cat([generate(tiny, prompt, 10, 1.0, 20, 3 + i).tokens for i in range(4)])
    assert torch.equal(got.tokens, alone)
    assert got.peak_blocks == shared_sampling_blocks(19, 10, 4, 4)[0 if share else 1]


def test_the_int8_cache_effect_is_small_and_not_zero(tiny):
    from llmperf.measured.experiments import kv_cache_effect
    gen = torch.Generator().manual_seed(4)
    tokens = torch.randint(0, tiny.config.vocab_size, (4 * 33 + 1,), generator=gen)
    exact = kv_cache_effect(tiny, tokens, None, seq_len=32, max_windows=4)
    assert exact.greedy_agreement == 1.0 and max(exact.attention_error) == 0.0
    int8 = kv_cache_effect(tiny, tokens, "int8", seq_len=32, max_windows=4)
    assert int8.tokens == 4 * 32 and len(int8.attention_error) == tiny.config.n_layers
    assert 0 < max(int8.attention_error) < 0.05
    assert int8.greedy_agreement > 0.9
    assert int8.loss_exact_nats == pytest.approx(exact.loss_changed_nats)
