"""The accelerator and model catalogs: sources cited, lookups forgiving, configs readable."""
import math

import pytest

import llmperf as lp

REQUIRED_ACCELERATORS = ["T4", "L4", "A10", "A10G", "A100 40GB", "A100 80GB", "H100 SXM",
                         "H100 PCIe", "H200", "L40S", "RTX 4090", "MI300X"]
REQUIRED_MODELS = ["llama-2-7b", "llama-2-13b", "llama-2-70b", "llama-3-8b", "llama-3-70b",
                   "mistral-7b", "mixtral-8x7b", "opt-13b", "gpt2", "gpt2-medium", "gpt2-large",
                   "gpt2-xl"]


@pytest.mark.parametrize("name", REQUIRED_ACCELERATORS)
def test_accelerator_in_catalog_with_source(name):
    acc = lp.get_accelerator(name)
    assert acc.source.startswith("https://")
    assert acc.mem_bandwidth > 1e11 and acc.mem_capacity >= 16 * lp.GiB
    assert acc.mem_capacity % lp.GiB == 0  # memory comes in binary sizes
    assert {"fp32", "fp16", "int8"} <= set(acc.dtypes)


def test_peaks_are_ordered_by_precision_on_each_part():
    for acc in lp.ACCELERATORS:
        peaks = acc.peak_flops
        assert peaks["fp16"] >= peaks["fp32"], acc.name
        if "tf32" in peaks:
            assert peaks["fp32"] <= peaks["tf32"] <= peaks["fp16"], acc.name
        if "fp8" in peaks:
            assert peaks["fp8"] >= peaks["fp16"], acc.name


def test_lookup_forgives_case_and_punctuation():
    assert lp.get_accelerator("h100-sxm") is lp.get_accelerator("H100 SXM")
    assert lp.get_accelerator("a100_80gb").name == "A100 SXM 80GB"
    assert lp.get_model("Llama-2-7B") is lp.get_model("llama_2_7b")


def test_unknown_accelerator_lists_closest_names():
    with pytest.raises(ValueError, match="accelerator 'H1000'.*Closest.*H100"):
        lp.get_accelerator("H1000")


def test_unknown_model_names_the_argument():
    with pytest.raises(ValueError, match="model 'llama-9'"):
        lp.get_model("llama-9")


def test_t4_has_no_bf16_peak():
    with pytest.raises(ValueError, match="bf16.*T4"):
        lp.get_accelerator("T4").peak("bf16")


@pytest.mark.parametrize("name", REQUIRED_MODELS)
def test_model_in_catalog(name):
    m = lp.get_model(name)
    assert m.param_count() == sum(m.param_breakdown().values())
    assert m.active_param_count() <= m.param_count()


@pytest.mark.parametrize("name, expected", [
    # Parameter counts published with each model (Hugging Face model cards / papers).
    ("gpt2", 124_439_808),
    ("mistral-7b", 7_241_732_096),
    ("mixtral-8x7b", 46_702_792_704),
    ("llama-3-8b", 8_030_261_248),
])
def test_published_parameter_counts(name, expected):
    assert lp.get_model(name).param_count() == expected


def test_mixtral_active_parameters_are_about_13b():
    # Mistral AI's announcement: 46.7B total, 12.9B used per token.
    mixtral = lp.get_model("mixtral-8x7b")
    assert math.isclose(mixtral.active_param_count(), 12.9e9, rel_tol=0.01)


LLAMA_2_7B_CONFIG = {
    "model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008,
    "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32,
    "vocab_size": 32000, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
}


def test_from_hf_config_llama_matches_catalog():
    cfg = lp.ModelConfig.from_hf_config(LLAMA_2_7B_CONFIG, name="llama-2-7b")
    assert cfg == lp.get_model("llama-2-7b")


def test_from_hf_config_mixtral_reads_experts():
    d = dict(LLAMA_2_7B_CONFIG, model_type="mixtral", intermediate_size=14336, num_key_value_heads=8,
             max_position_embeddings=32768, rope_theta=1e6, num_local_experts=8, num_experts_per_tok=2)
    assert lp.ModelConfig.from_hf_config(d).param_count() == lp.get_model("mixtral-8x7b").param_count()


def test_from_hf_config_gpt2_and_opt():
    gpt2 = {"model_type": "gpt2", "n_embd": 768, "n_layer": 12, "n_head": 12, "n_inner": None,
            "vocab_size": 50257, "n_positions": 1024}
    assert lp.ModelConfig.from_hf_config(gpt2).param_count() == 124_439_808
    opt = {"model_type": "opt", "hidden_size": 5120, "num_hidden_layers": 40, "ffn_dim": 20480,
           "num_attention_heads": 40, "vocab_size": 50272, "max_position_embeddings": 2048,
           "word_embed_proj_dim": 5120}
    assert lp.ModelConfig.from_hf_config(opt).param_count() == lp.get_model("opt-13b").param_count()


def test_from_hf_config_rejects_unknown_architecture():
    with pytest.raises(ValueError, match="model_type"):
        lp.ModelConfig.from_hf_config({"model_type": "bert"})
