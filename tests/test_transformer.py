"""The reference model is a real Llama: counts, cache, generation, and Hugging Face logits."""
import ast
from pathlib import Path

import pytest
import torch

import llmperf as lp
from llmperf.measured.generate import (
    Generation,
    KVCache,
    generate,
    next_token_distribution,
    sample_next,
)
from llmperf.measured.model import Transformer

TINY = lp.get_model("ref-tiny")
GQA = TINY.with_(name="gqa", n_heads=8, n_kv_heads=2, d_model=64, d_ff=96, vocab_size=97,
                 max_seq_len=64)
MQA = GQA.with_(name="mqa", n_kv_heads=1, tied_embeddings=True)
BIAS = GQA.with_(name="bias", n_kv_heads=8, bias=True)
MOE = lp.get_model("ref-moe-tiny")


def random_tokens(config, shape, seed=0):
    return torch.randint(0, config.vocab_size, shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def tiny():
    return Transformer(TINY, max_seq_len=64)


@pytest.mark.parametrize("config", [TINY, GQA, MQA, BIAS, MOE, lp.get_model("ref-small")],
                         ids=lambda c: c.name)
def test_parameter_count_matches_the_analytic_count(config):
    assert Transformer(config, max_seq_len=8).num_parameters() == config.param_count()


@pytest.mark.parametrize("config", [TINY, GQA, MQA, MOE], ids=lambda c: c.name)
def test_incremental_decode_gives_the_logits_of_a_full_forward(config):
    model = Transformer(config, max_seq_len=32, seed=1)
    tokens = random_tokens(config, (2, 12))
    cache = KVCache(model, batch=2, max_seq_len=12)
    with torch.inference_mode():
        full = model(tokens)
        steps = [model(tokens[:, :5], 0, cache)]
        steps += [model(tokens[:, i:i + 1], i, cache) for i in range(5, 12)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("config", [TINY, GQA, BIAS], ids=lambda c: c.name)
def test_chunked_prefill_after_cached_tokens_equals_one_shot_prefill(config):
    model = Transformer(config, max_seq_len=32, seed=4)
    tokens = random_tokens(config, (2, 15), seed=2)
    chunked = KVCache(model, batch=2, max_seq_len=15)
    whole = KVCache(model, batch=2, max_seq_len=15)
    with torch.inference_mode():
        one_shot = model(tokens, 0, whole)
        parts = [model(tokens[:, a:b], a, chunked) for a, b in ((0, 4), (4, 11), (11, 15))]
    torch.testing.assert_close(torch.cat(parts, dim=1), one_shot, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(chunked.k, whole.k, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(chunked.v, whole.v, rtol=1e-5, atol=1e-6)


def test_last_only_returns_the_last_position_of_each_row(tiny):
    tokens = random_tokens(TINY, (3, 7), seed=8)
    with torch.inference_mode():
        torch.testing.assert_close(tiny(tokens, last_only=True), tiny(tokens)[:, -1:])


@pytest.mark.parametrize("config", [TINY, MOE], ids=lambda c: c.name)
def test_generation_with_and_without_the_cache_gives_the_same_tokens(config):
    model = Transformer(config, max_seq_len=40)
    prompt = random_tokens(config, (2, 6), seed=3)
    cached = generate(model, prompt, 12)
    uncached = generate(model, prompt, 12, use_cache=False)
    assert torch.equal(cached.tokens, uncached.tokens)
    sampled = [generate(model, prompt, 12, temperature=0.8, top_k=20, seed=5, use_cache=c)
               for c in (True, False)]
    assert torch.equal(sampled[0].tokens, sampled[1].tokens)


def test_greedy_generation_continues_with_the_argmax_of_a_full_forward(tiny):
    prompt = random_tokens(TINY, (1, 5), seed=9)
    out = generate(tiny, prompt, 4).tokens
    seq = prompt
    with torch.inference_mode():
        for _ in range(4):
            seq = torch.cat([seq, tiny(seq)[:, -1:].argmax(-1)], dim=1)
    assert torch.equal(out, seq[:, 5:])


def test_generation_records_a_timestamp_per_token(tiny):
    out = generate(tiny, [1, 2, 3], 5)
    assert isinstance(out, Generation) and out.tokens.shape == (1, 5) and out.prompt_len == 3
    assert len(out.timestamps_s) == 5 and out.timestamps_s == sorted(out.timestamps_s)
    assert out.ttft_s > 0 and out.tpot_s >= 0


def test_sampling_is_seeded_and_respects_top_k(tiny):
    prompt = [[5, 6, 7]]
    a = generate(tiny, prompt, 8, temperature=1.0, seed=11)
    b = generate(tiny, prompt, 8, temperature=1.0, seed=11)
    assert torch.equal(a.tokens, b.tokens)
    greedy = generate(tiny, prompt, 8)
    assert torch.equal(generate(tiny, prompt, 8, temperature=1.0, top_k=1).tokens, greedy.tokens)


def test_a_batch_of_prompts_matches_running_each_alone(tiny):
    prompts = random_tokens(TINY, (3, 6), seed=4).tolist()
    together = generate(tiny, prompts, 7).tokens
    alone = torch.cat([generate(tiny, [p], 7).tokens for p in prompts])
    assert torch.equal(together, alone)


@pytest.mark.parametrize("config", [TINY, MQA, BIAS], ids=lambda c: c.name)
def test_logits_equal_hugging_face_llama_with_the_same_weights(config):
    transformers = pytest.importorskip("transformers")
    from llmperf.measured.hf import llama_config, load_hf_state_dict, to_hf_state_dict

    hf_config = llama_config(config)
    hf = transformers.LlamaForCausalLM(hf_config).eval()
    assert lp.ModelConfig.from_hf_config(hf_config.to_dict()).param_count() == config.param_count()
    ours = Transformer(config, max_seq_len=32, seed=2)
    hf.load_state_dict(to_hf_state_dict(ours), strict=not config.tied_embeddings)
    if config.tied_embeddings:
        hf.tie_weights()
    tokens = random_tokens(config, (2, 16), seed=1)
    cache = KVCache(ours, batch=2, max_seq_len=16)
    with torch.inference_mode():
        expected = hf(tokens).logits
        torch.testing.assert_close(ours(tokens), expected, rtol=1e-4, atol=1e-5)
        steps = [ours(tokens[:, :10], 0, cache)] + [ours(tokens[:, i:i + 1], i, cache)
                                                     for i in range(10, 16)]
        torch.testing.assert_close(torch.cat(steps, dim=1), expected, rtol=1e-4, atol=1e-5)
    # and back: Hugging Face weights load into our model
    other = Transformer(config, max_seq_len=32, seed=9)
    load_hf_state_dict(other, hf.state_dict())
    with torch.inference_mode():
        torch.testing.assert_close(other(tokens), expected, rtol=1e-4, atol=1e-5)


def test_hf_conversion_rejects_incomplete_state_and_moe_models():
    from llmperf.measured.hf import load_hf_state_dict, to_hf_state_dict

    model = Transformer(TINY, max_seq_len=8)
    state = to_hf_state_dict(model)
    with pytest.raises(ValueError, match="missing"):
        load_hf_state_dict(model, {k: v for k, v in state.items() if "q_proj" not in k})
    state["model.norm.weight"] = torch.ones(3)
    with pytest.raises(ValueError, match="model.norm.weight"):
        load_hf_state_dict(model, state)
    with pytest.raises(ValueError, match="dense"):
        to_hf_state_dict(Transformer(MOE, max_seq_len=8))


def test_bf16_runs_and_stays_close_to_fp32():
    tokens = random_tokens(TINY, (1, 10))
    with torch.inference_mode():
        fp32 = Transformer(TINY, max_seq_len=16)(tokens)
        bf16 = Transformer(TINY, max_seq_len=16, dtype="bf16")(tokens)
    assert bf16.dtype == torch.bfloat16
    assert (bf16.float() - fp32).abs().max() < 0.05 * fp32.abs().max() + 0.02


def test_compiled_model_runs_prefill_and_decode_in_one_graph_each():
    model = Transformer(TINY, max_seq_len=16, seed=3)
    compiled = torch.compile(model, backend="eager", fullgraph=True)  # fails on any graph break
    tokens = random_tokens(TINY, (2, 9), seed=6)
    caches = [KVCache(model, batch=2, max_seq_len=9) for _ in range(2)]
    with torch.inference_mode():
        got = [compiled(tokens[:, :6], 0, caches[0]), compiled(tokens[:, 6:8], 6, caches[0]),
               compiled(tokens[:, 8:], 8, caches[0])]
        want = [model(tokens[:, :6], 0, caches[1]), model(tokens[:, 6:8], 6, caches[1]),
                model(tokens[:, 8:], 8, caches[1])]
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def test_kv_cache_bytes_match_the_analytic_size():
    model = Transformer(TINY, max_seq_len=64)
    assert KVCache(model, batch=3, max_seq_len=40).nbytes == TINY.kv_cache_bytes(40, 3, "fp32")
    bf16 = Transformer(TINY, max_seq_len=64, dtype="bf16")
    assert KVCache(bf16, batch=2).nbytes == TINY.kv_cache_bytes(64, 2, "bf16")


def test_step_costs_count_attention_as_the_model_runs_it(tiny):
    for phase, kernel in (("prefill", "fused"), ("decode", "standard")):
        assert tiny.attention_kernel[phase] == kernel
        expected = lp.step_costs(TINY, phase, 2, 32, dtype="fp32", attention=kernel)
        assert tiny.step_costs(phase, batch=2, seq_len=32).total == expected.total
    assert tiny.step_costs("prefill", 1, 32).total != lp.step_costs(TINY, "prefill", 1, 32,
                                                                      dtype="fp32").total


def test_the_model_file_does_not_use_numpy():
    source = (Path(lp.__file__).parent / "measured" / "model.py").read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert "torch" in imported and "numpy" not in imported


@pytest.mark.parametrize("field,value", [("norm", "layernorm"), ("position", "learned"),
                                         ("activation", "gelu")])
def test_unsupported_configs_name_the_field(field, value):
    extra = {"learned_positions": 512} if value == "learned" else {}
    config = TINY.with_(**{field: value}, **extra)
    with pytest.raises(ValueError, match=field):
        Transformer(config)


@pytest.mark.parametrize("kwargs,match", [
    (dict(max_seq_len=-1), "max_seq_len"), (dict(max_seq_len=2.5), "max_seq_len"),
    (dict(dtype="int8"), "dtype"), (dict(dtype="fp16"), "dtype"), (dict(device="tpu"), "device"),
    (dict(device="cuda:0"), "device"), (dict(config="no-such-model"), "model"),
])
def test_bad_construction_arguments_raise(kwargs, match):
    if kwargs.get("device") == "cuda:0" and torch.cuda.is_available():
        pytest.skip("CUDA is present here")
    args = {"config": TINY, **kwargs}
    with pytest.raises(ValueError, match=match):
        Transformer(**args)


@pytest.mark.parametrize("kwargs,match", [
    (dict(max_new_tokens=0), "max_new_tokens"), (dict(max_new_tokens=70), "max_seq_len"),
    (dict(temperature=-1.0), "temperature"), (dict(temperature=float("nan")), "temperature"),
    (dict(temperature=1.0, top_k=0), "top_k"), (dict(top_k=TINY.vocab_size + 1), "top_k"),
    (dict(prompt=[[]]), "prompt"), (dict(prompt=[[1, 2], [3]]), "one length"),
    (dict(prompt=[TINY.vocab_size]), rf"\[0, {TINY.vocab_size}\)"), (dict(prompt=[-1]), "prompt"),
    (dict(prompt=torch.tensor([[1.0]])), "prompt"), (dict(prompt="abc"), "prompt"),
    (dict(model="ref-tiny"), "model"),
])
def test_bad_generate_arguments_raise(tiny, kwargs, match):
    args = {"model": tiny, "prompt": [1, 2], "max_new_tokens": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        generate(**args)


def test_a_step_after_position_zero_needs_the_cache(tiny):
    with pytest.raises(ValueError, match="start_pos"):
        tiny(torch.tensor([[1]]), 5)


def test_bad_cache_arguments_raise(tiny):
    for kwargs, match in ((dict(batch=0), "batch"), (dict(max_seq_len=0), "max_seq_len")):
        with pytest.raises(ValueError, match=match):
            KVCache(tiny, **kwargs)
    with pytest.raises(ValueError, match="model"):
        KVCache(TINY)


def test_next_token_distribution_applies_temperature_and_top_k():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    plain = next_token_distribution(logits, temperature=1.0)
    assert torch.allclose(plain, logits.softmax(-1))
    cold = next_token_distribution(logits, temperature=0.5)
    assert cold[0, 0] > plain[0, 0]  # a lower temperature sharpens
    top2 = next_token_distribution(logits, temperature=1.0, top_k=2)
    assert top2[0, 2:].sum() == 0 and torch.isclose(top2.sum(), torch.tensor(1.0))
    assert torch.isclose(top2[0, 0], torch.tensor(1 / (1 + torch.e ** -1)))
    with pytest.raises(ValueError, match="temperature"):
        next_token_distribution(logits, temperature=0.0)


def test_sample_next_is_greedy_at_zero_temperature_and_seeded_above():
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(1))
    greedy = sample_next(logits, 0.0, None, torch.Generator())
    assert torch.equal(greedy, logits.argmax(-1))
    draws = [sample_next(logits, 1.0, 5, torch.Generator().manual_seed(7)) for _ in range(2)]
    assert torch.equal(draws[0], draws[1])
    top5 = logits.topk(5, dim=-1).indices
    assert all(draws[0][b] in top5[b] for b in range(3))


def test_relu_mlp_variant_builds_counts_and_zeroes_activations():
    config = lp.get_model("ref-small").with_(name="ref-small-relu", ffn_kind="mlp",
                                             activation="relu")
    model = Transformer(config, max_seq_len=32)
    assert model.num_parameters() == config.param_count()
    hidden = {}
    ffn = model.layers[0].feed_forward
    ffn.w1.register_forward_hook(lambda mod, args, out: hidden.update(h=ffn.act(out)))
    model(torch.randint(0, config.vocab_size, (1, 8)))
    zero_share = (hidden["h"] == 0).float().mean().item()
    assert 0.3 < zero_share < 0.7  # ReLU of roughly symmetric pre-activations


def test_swiglu_needs_silu():
    with pytest.raises(ValueError, match="activation"):
        Transformer(lp.get_model("ref-small").with_(name="bad", activation="relu"), max_seq_len=8)


def _prefill_slots(model, cache, prompts, slots):
    """Each prompt alone (batch 1) into its own slot of `cache`."""
    for prompt, slot in zip(prompts, slots):
        model(prompt[None], 0, cache.slots([slot], len(prompt)))


@pytest.mark.parametrize("config", [TINY, GQA, MQA, MOE], ids=lambda c: c.name)
@pytest.mark.parametrize("slots", [[2, 0, 3], [1, 2, 3]], ids=["scattered", "consecutive"])
def test_rows_at_their_own_positions_decode_as_each_alone(config, slots):
    # Within float rounding of the longer, masked key rows: 1e-5 on logits of size ~1.
    model = Transformer(config, max_seq_len=32, seed=5)
    lengths = [5, 11, 2]
    prompts = [random_tokens(config, (n,), seed=n) for n in lengths]
    nxt = random_tokens(config, (3, 1), seed=9)
    cache = KVCache(model, batch=4, max_seq_len=16)
    with torch.inference_mode():
        _prefill_slots(model, cache, prompts, slots)
        got = model(nxt, torch.tensor(lengths), cache.slots(slots, max(lengths) + 1))
        for b, prompt in enumerate(prompts):
            alone = model(torch.cat([prompt, nxt[b]])[None])[:, -1:]
            torch.testing.assert_close(got[b:b + 1], alone, rtol=1e-4, atol=1e-5)


def test_per_row_chunks_extend_each_row_from_its_own_position(tiny):
    lengths, chunk = [3, 7], random_tokens(TINY, (2, 4), seed=3)
    prompts = [random_tokens(TINY, (n,), seed=n) for n in lengths]
    cache = KVCache(tiny, batch=2, max_seq_len=16)
    with torch.inference_mode():
        _prefill_slots(tiny, cache, prompts, [1, 0])
        got = tiny(chunk, torch.tensor(lengths), cache.slots([1, 0], max(lengths) + 4))
        for b, prompt in enumerate(prompts):
            alone = tiny(torch.cat([prompt, chunk[b]])[None])[:, -4:]
            torch.testing.assert_close(got[b:b + 1], alone, rtol=1e-4, atol=1e-5)


def test_a_slot_view_writes_into_the_shared_cache_and_only_its_rows(tiny):
    prompt = random_tokens(TINY, (1, 6), seed=4)
    cache, alone = KVCache(tiny, batch=3, max_seq_len=8), KVCache(tiny, batch=1, max_seq_len=8)
    with torch.inference_mode():
        tiny(prompt, 0, cache.slots([2], 6))
        tiny(prompt, 0, alone)
    torch.testing.assert_close(cache.k[:, 2:], alone.k)
    assert cache.k[:, :2].abs().sum() == 0 and cache.v[:, :2].abs().sum() == 0


def test_compiled_model_decodes_rows_at_their_own_positions_in_one_graph():
    model = Transformer(TINY, max_seq_len=16, seed=3)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    prompts = [random_tokens(TINY, (n,), seed=n) for n in (4, 7)]
    nxt, positions = random_tokens(TINY, (2, 1), seed=8), torch.tensor([4, 7])
    caches = [KVCache(model, batch=2, max_seq_len=8) for _ in range(2)]
    with torch.inference_mode():
        for cache in caches:
            _prefill_slots(model, cache, prompts, [0, 1])
        got = compiled(nxt, positions, caches[0].slots([0, 1], 8))
        want = model(nxt, positions, caches[1].slots([0, 1], 8))
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("slots,length,match", [
    ([], 4, "slots"), ([0, 0], 4, "slots"), ([3], 4, "slots"), ([-1], 4, "slots"),
    ([0], 0, "length"), ([0], 9, "length"), ([0], 2.5, "length")])
def test_bad_slot_views_raise(tiny, slots, length, match):
    with pytest.raises(ValueError, match=match):
        KVCache(tiny, batch=3, max_seq_len=8).slots(slots, length)


def test_per_row_positions_need_a_cache(tiny):
    with pytest.raises(ValueError, match="start_pos"):
        tiny(torch.tensor([[1], [2]]), torch.tensor([0, 0]))
