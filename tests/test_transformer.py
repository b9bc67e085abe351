"""The reference transformer is a real Llama: counts, cache, batching, and Hugging Face logits."""
import pytest
import torch

import llmperf as lp
from llmperf.transformer import Generation, Transformer, generate, next_token_distribution, sample_next

TINY = lp.get_model("ref-tiny")
GQA = TINY.with_(name="gqa", n_heads=8, n_kv_heads=2, d_model=64, d_ff=96, vocab_size=97, max_seq_len=64)
MQA = GQA.with_(name="mqa", n_kv_heads=1, tied_embeddings=True)
BIAS = GQA.with_(name="bias", n_kv_heads=8, bias=True)
MOE = lp.get_model("ref-moe-tiny")


@pytest.fixture(scope="module")
def tiny():
    return Transformer(TINY, max_batch=3, max_seq_len=64)


@pytest.mark.parametrize("config", [TINY, GQA, MQA, BIAS, MOE, lp.get_model("ref-small")],
                         ids=lambda c: c.name)
def test_parameter_count_matches_the_analytic_count(config):
    assert Transformer(config, max_seq_len=8).num_parameters() == config.param_count()


@pytest.mark.parametrize("config", [TINY, MQA, MOE], ids=lambda c: c.name)
def test_incremental_decode_gives_the_logits_of_a_full_forward(config):
    model = Transformer(config, max_batch=2, max_seq_len=32, seed=1)
    tokens = torch.randint(0, config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        full = model(tokens, use_cache=False)
        steps = [model(tokens[:, :5])] + [model(tokens[:, i:i + 1], i) for i in range(5, 12)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("config", [TINY, MOE], ids=lambda c: c.name)
def test_generation_with_and_without_the_cache_gives_the_same_tokens(config):
    model = Transformer(config, max_batch=2, max_seq_len=40)
    prompt = torch.randint(0, config.vocab_size, (2, 6), generator=torch.Generator().manual_seed(3))
    cached = generate(model, prompt, 12)
    uncached = generate(model, prompt, 12, use_cache=False)
    assert torch.equal(cached.tokens, uncached.tokens)
    sampled = [generate(model, prompt, 12, temperature=0.8, top_k=20, seed=5, use_cache=c) for c in (True, False)]
    assert torch.equal(sampled[0].tokens, sampled[1].tokens)


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


def test_batched_sequences_of_different_lengths_match_running_each_alone(tiny):
    gen = torch.Generator().manual_seed(4)
    prompts = [torch.randint(0, TINY.vocab_size, (n,), generator=gen).tolist() for n in (3, 9, 6)]
    together = generate(tiny, prompts, 7).tokens
    alone = torch.cat([generate(tiny, [p], 7).tokens for p in prompts])
    assert torch.equal(together, alone)
    assert torch.equal(generate(tiny, prompts, 7, use_cache=False).tokens, together)


def test_decode_with_per_sequence_positions_matches_each_alone(tiny):
    gen = torch.Generator().manual_seed(6)
    seqs = [torch.randint(0, TINY.vocab_size, (1, n), generator=gen) for n in (4, 10)]
    with torch.inference_mode():
        alone = [tiny(s, use_cache=False)[:, -1] for s in seqs]
        padded = torch.zeros(2, 9, dtype=torch.int64)
        padded[0, :3], padded[1, :9] = seqs[0][0, :3], seqs[1][0, :9]
        tiny(padded)  # prefill both; row 0's padding is overwritten before it is read
        last = torch.cat([seqs[0][:, 3:4], seqs[1][:, 9:10]])
        batched = tiny(last, torch.tensor([3, 9]))[:, -1]
    torch.testing.assert_close(batched, torch.cat(alone), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("config", [TINY, MQA, BIAS], ids=lambda c: c.name)
def test_logits_equal_hugging_face_llama_with_the_same_weights(config):
    transformers = pytest.importorskip("transformers")
    hf_config = transformers.LlamaConfig(
        vocab_size=config.vocab_size, hidden_size=config.d_model, intermediate_size=config.d_ff,
        num_hidden_layers=config.n_layers, num_attention_heads=config.n_heads,
        num_key_value_heads=config.n_kv_heads, head_dim=config.d_head,
        max_position_embeddings=config.max_seq_len, rms_norm_eps=config.norm_eps,
        rope_theta=config.rope_theta, tie_word_embeddings=config.tied_embeddings,
        attention_bias=config.bias, mlp_bias=config.bias)
    hf = transformers.LlamaForCausalLM(hf_config).eval()
    assert lp.ModelConfig.from_hf_config(hf_config.to_dict()).param_count() == config.param_count()
    ours = Transformer(config, max_batch=2, max_seq_len=32, seed=2)
    hf.load_state_dict(ours.hf_state_dict(), strict=not config.tied_embeddings)
    if config.tied_embeddings:
        hf.tie_weights()
    tokens = torch.randint(0, config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = hf(tokens).logits
        torch.testing.assert_close(ours(tokens, use_cache=False), expected, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(ours(tokens), expected, rtol=1e-4, atol=1e-5)
    # and back: Hugging Face weights load into our model
    other = Transformer(config, max_batch=2, max_seq_len=32, seed=9)
    other.load_hf_state_dict(hf.state_dict())
    with torch.inference_mode():
        torch.testing.assert_close(other(tokens), expected, rtol=1e-4, atol=1e-5)


def test_bf16_runs_and_stays_close_to_fp32():
    tokens = torch.randint(0, TINY.vocab_size, (1, 10), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        fp32 = Transformer(TINY, max_seq_len=16)(tokens)
        bf16 = Transformer(TINY, max_seq_len=16, dtype="bf16")(tokens)
    assert bf16.dtype == torch.bfloat16
    assert (bf16.float() - fp32).abs().max() < 0.05 * fp32.abs().max() + 0.02


@pytest.mark.parametrize("field,value", [("norm", "layernorm"), ("position", "learned"),
                                         ("ffn_kind", "mlp"), ("activation", "gelu")])
def test_unsupported_configs_name_the_field(field, value):
    config = TINY.with_(**{field: value}, **({"learned_positions": 512} if value == "learned" else {}))
    with pytest.raises(ValueError, match=field):
        Transformer(config)


@pytest.mark.parametrize("kwargs,match", [
    (dict(max_batch=0), "max_batch"), (dict(max_seq_len=-1), "max_seq_len"),
    (dict(dtype="int8"), "dtype"), (dict(dtype="fp16"), "dtype"), (dict(device="tpu"), "device"),
    (dict(device="cuda:0"), "device"), (dict(config="no-such-model"), "model"),
])
def test_bad_construction_arguments_raise(kwargs, match):
    if kwargs.get("device") == "cuda:0" and torch.cuda.is_available():
        pytest.skip("CUDA is present here")
    args = {"config": TINY, **kwargs}
    with pytest.raises(ValueError, match=match):
        Transformer(**args)


def test_bad_forward_and_generate_inputs_raise(tiny):
    ok = torch.tensor([[1, 2]])
    with pytest.raises(ValueError, match="beyond the cache"):
        tiny(ok, 63)
    with pytest.raises(ValueError, match="max_batch"):
        tiny(torch.zeros(4, 1, dtype=torch.int64))
    with pytest.raises(ValueError, match="tokens"):
        tiny(torch.tensor([[1.0]]))
    with pytest.raises(ValueError, match="tokens"):
        tiny(torch.tensor([[TINY.vocab_size]]))
    with pytest.raises(ValueError, match="start_pos"):
        tiny(ok, -1)
    with pytest.raises(ValueError, match="start_pos"):
        tiny(ok, 3, use_cache=False)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(tiny, [1, 2], 0)
    with pytest.raises(ValueError, match="temperature"):
        generate(tiny, [1, 2], 3, temperature=-1.0)
    with pytest.raises(ValueError, match="top_k"):
        generate(tiny, [1, 2], 3, temperature=1.0, top_k=0)
    with pytest.raises(ValueError, match="max_seq_len"):
        generate(tiny, [1, 2], 70)
    with pytest.raises(ValueError, match="prompt"):
        generate(tiny, [[]], 3)


def test_full_size_model_on_the_meta_device_matches_the_analytic_count():
    llama = lp.get_model("llama-2-7b")
    model = Transformer(llama, device="meta")
    assert all(p.is_meta for p in model.parameters())
    assert model.num_parameters() == llama.param_count() == 6_738_415_616


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


def test_kv_cache_bytes_match_the_analytic_size():
    cfg = lp.get_model("ref-tiny")
    model = Transformer(cfg, max_batch=3, max_seq_len=40)
    assert model.kv_cache_bytes() == cfg.kv_cache_bytes(tokens=40, batch=3, dtype="fp32")


@pytest.mark.parametrize("name", ["ref-tiny", "ref-moe-tiny"])
def test_cpu_gemv_path_gives_the_same_decode_logits(name):
    fast = Transformer(name, max_seq_len=32, seed=3, cpu_gemv=True)
    plain = Transformer(name, max_seq_len=32, seed=3, cpu_gemv=False)
    prompt = torch.randint(0, fast.config.vocab_size, (1, 10), generator=torch.Generator().manual_seed(0))
    threads = torch.get_num_threads()
    with torch.inference_mode():
        for model in (fast, plain):
            model(prompt, 0)
        a = fast(prompt[:, -1:], 10)
        b = plain(prompt[:, -1:], 10)
    assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)
    assert torch.get_num_threads() == threads  # the thread count is restored
    assert generate(fast, prompt[0].tolist(), 6).tokens.tolist() == generate(plain, prompt[0].tolist(), 6).tokens.tolist()


def test_cpu_gemv_default_follows_the_openblas_timeout_variable(monkeypatch):
    monkeypatch.delenv("OPENBLAS_THREAD_TIMEOUT", raising=False)
    assert Transformer("ref-tiny", max_seq_len=8).cpu_gemv is False
    monkeypatch.setenv("OPENBLAS_THREAD_TIMEOUT", "4")
    assert Transformer("ref-tiny", max_seq_len=8).cpu_gemv is True
    assert Transformer("ref-tiny", max_seq_len=8, cpu_gemv=False).cpu_gemv is False
