"""Parameter counts checked against full-size PyTorch models built on the meta device.

The meta device records shapes without allocating memory, so a 70B model costs nothing.
Hugging Face transformers (a test-only dependency) supplies independent reference builds;
the book's own `llmperf.measured.model.Transformer` is built at full size the same way.
"""
import pytest

import llmperf as lp

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def meta_param_count(config) -> int:
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def test_llama_2_7b_on_meta_device():
    config = transformers.LlamaConfig(
        hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_hidden_layers=32,
        num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096,
        tie_word_embeddings=False)
    assert meta_param_count(config) == lp.get_model("llama-2-7b").param_count() == 6_738_415_616


def test_llama_2_70b_gqa_on_meta_device():
    config = transformers.LlamaConfig(
        hidden_size=8192, intermediate_size=28672, num_attention_heads=64, num_hidden_layers=80,
        num_key_value_heads=8, vocab_size=32000, tie_word_embeddings=False)
    assert meta_param_count(config) == lp.get_model("llama-2-70b").param_count()


def test_mixtral_on_meta_device():
    config = transformers.MixtralConfig(
        hidden_size=4096, intermediate_size=14336, num_attention_heads=32, num_hidden_layers=32,
        num_key_value_heads=8, vocab_size=32000, num_local_experts=8, num_experts_per_tok=2)
    assert meta_param_count(config) == lp.get_model("mixtral-8x7b").param_count()


@pytest.mark.parametrize("name, layers, width, heads",
                         [("gpt2", 12, 768, 12), ("gpt2-xl", 48, 1600, 25)])
def test_gpt2_on_meta_device(name, layers, width, heads):
    config = transformers.GPT2Config(n_layer=layers, n_embd=width, n_head=heads)
    assert meta_param_count(config) == lp.get_model(name).param_count()


def test_opt_13b_on_meta_device():
    config = transformers.OPTConfig(
        hidden_size=5120, num_hidden_layers=40, ffn_dim=20480, num_attention_heads=40,
        vocab_size=50272, max_position_embeddings=2048, word_embed_proj_dim=5120)
    assert meta_param_count(config) == lp.get_model("opt-13b").param_count()


def reference_on_meta(config):
    from llmperf.measured.model import Transformer  # needs torch, found above

    return Transformer(config, device="meta")


@pytest.mark.parametrize("name", ["llama-2-7b", "llama-2-70b", "mixtral-8x7b"])
def test_reference_model_on_meta_device(name):
    config = lp.get_model(name)
    model = reference_on_meta(config)
    assert all(p.is_meta for p in model.parameters())
    assert model.num_parameters() == config.param_count()


def test_reference_model_and_hugging_face_llama_agree_on_meta_device():
    from llmperf.measured.hf import llama_config

    for name in ("llama-2-7b", "llama-2-70b"):
        config = lp.get_model(name)
        assert meta_param_count(llama_config(config)) == reference_on_meta(config).num_parameters()
