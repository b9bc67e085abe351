"""The accelerator and model catalogs: sources cited, lookups forgiving, configs readable."""

import math

import pytest

import llmperf as lp

REQUIRED_ACCELERATORS = [
    "T4",
    "L4",
    "A10",
    "A10G",
    "A100 40GB",
    "A100 80GB",
    "H100 SXM",
    "H100 PCIe",
    "H200",
    "L40S",
    "RTX 4090",
    "MI300X",
]
REQUIRED_MODELS = [
    "llama-2-7b",
    "llama-2-13b",
    "llama-2-70b",
    "llama-3-8b",
    "llama-3-70b",
    "mistral-7b",
    "mixtral-8x7b",
    "opt-13b",
    "gpt2",
    "gpt2-medium",
    "gpt2-large",
    "gpt2-xl",
]


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


@pytest.mark.parametrize(
    "name, candidates",
    [
        ("a100", ["A100 SXM 40GB", "A100 SXM 80GB"]),
        ("H100", ["H100 SXM", "H100 PCIe"]),
    ],
)
def test_ambiguous_name_lists_the_candidates(name, candidates):
    with pytest.raises(ValueError, match="ambiguous") as info:
        lp.get_accelerator(name)
    for candidate in candidates:
        assert candidate in str(info.value)


def test_every_alias_names_one_part_or_raises():
    for acc in lp.ACCELERATORS:
        for alias in acc.aliases:
            sharing = [
                other.name
                for other in lp.ACCELERATORS
                if alias.lower() in (a.lower() for a in other.aliases)
            ]
            if len(sharing) == 1:
                assert lp.get_accelerator(alias) is acc
            else:
                with pytest.raises(ValueError, match="ambiguous"):
                    lp.get_accelerator(alias)


def test_the_returned_name_says_which_part():
    assert lp.get_accelerator("H200").name == "H200 SXM"
    assert lp.get_accelerator("A100 40GB").name == "A100 SXM 40GB"


def test_capacities_are_binary_as_the_parts_report_them():
    # nvidia-smi reports an H200's total as 143,771 MiB: more than 141e9 bytes (134,466 MiB).
    h200 = lp.get_accelerator("H200")
    assert h200.mem_capacity == 141 * lp.GiB
    assert h200.mem_capacity > 143_771 * lp.MiB > 141e9


def test_inline_ecc_takes_a_sixteenth_of_gddr6_and_nothing_of_hbm():
    a10, t4 = lp.get_accelerator("A10"), lp.get_accelerator("T4")
    assert a10.usable_capacity() == 23_040 * lp.MiB  # nvidia-smi shows 23,028 MiB
    assert abs(a10.usable_capacity() / lp.MiB - 23_028) < 16
    assert t4.usable_capacity() == 15_360 * lp.MiB
    assert a10.usable_capacity(ecc=False) == 24 * lp.GiB
    for name in ("A100 SXM 80GB", "H100 SXM", "H200"):
        acc = lp.get_accelerator(name)
        assert acc.usable_capacity() == acc.mem_capacity
    assert "ECC" in a10.notes


@pytest.mark.parametrize("name, watts", [("T4", 70), ("L4", 72)])
def test_power_capped_parts_say_so(name, watts):
    notes = lp.get_accelerator(name).notes
    assert f"{watts} W" in notes and "peak" in notes


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


@pytest.mark.parametrize(
    "name, expected",
    [
        # Parameter counts published with each model (Hugging Face model cards / papers).
        ("gpt2", 124_439_808),
        ("mistral-7b", 7_241_732_096),
        ("mixtral-8x7b", 46_702_792_704),
        ("llama-3-8b", 8_030_261_248),
    ],
)
def test_published_parameter_counts(name, expected):
    assert lp.get_model(name).param_count() == expected


def test_mixtral_active_parameters_are_about_13b():
    # Mistral AI's announcement: 46.7B total, 12.9B used per token.
    mixtral = lp.get_model("mixtral-8x7b")
    assert math.isclose(mixtral.active_param_count(), 12.9e9, rel_tol=0.01)


LLAMA_2_7B_CONFIG = {
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32000,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
}


def test_from_hf_config_llama_matches_catalog():
    cfg = lp.ModelConfig.from_hf_config(LLAMA_2_7B_CONFIG, name="llama-2-7b")
    assert cfg == lp.get_model("llama-2-7b")


def test_from_hf_config_mixtral_reads_experts():
    d = dict(
        LLAMA_2_7B_CONFIG,
        model_type="mixtral",
        intermediate_size=14336,
        num_key_value_heads=8,
        max_position_embeddings=32768,
        rope_theta=1e6,
        num_local_experts=8,
        num_experts_per_tok=2,
    )
    assert (
        lp.ModelConfig.from_hf_config(d).param_count() == lp.get_model("mixtral-8x7b").param_count()
    )


def test_from_hf_config_gpt2_and_opt():
    gpt2 = {
        "model_type": "gpt2",
        "n_embd": 768,
        "n_layer": 12,
        "n_head": 12,
        "n_inner": None,
        "vocab_size": 50257,
        "n_positions": 1024,
    }
    assert lp.ModelConfig.from_hf_config(gpt2).param_count() == 124_439_808
    opt = {
        "model_type": "opt",
        "hidden_size": 5120,
        "num_hidden_layers": 40,
        "ffn_dim": 20480,
        "num_attention_heads": 40,
        "vocab_size": 50272,
        "max_position_embeddings": 2048,
        "word_embed_proj_dim": 5120,
    }
    assert lp.ModelConfig.from_hf_config(opt).param_count() == lp.get_model("opt-13b").param_count()


MISTRAL_7B_V01_CONFIG = (
    dict(  # https://huggingface.co/mistralai/Mistral-7B-v0.1/blob/main/config.json
        LLAMA_2_7B_CONFIG,
        model_type="mistral",
        intermediate_size=14336,
        num_key_value_heads=8,
        max_position_embeddings=32768,
        rope_theta=10000.0,
        sliding_window=4096,
    )
)


def test_from_hf_config_reads_the_sliding_window():
    cfg = lp.ModelConfig.from_hf_config(MISTRAL_7B_V01_CONFIG, name="mistral-7b")
    assert cfg.sliding_window == 4096
    assert cfg == lp.get_model("mistral-7b")
    # A null window (later Mistral and Mixtral checkpoints) means full attention.
    unwindowed = lp.ModelConfig.from_hf_config(dict(MISTRAL_7B_V01_CONFIG, sliding_window=None))
    assert unwindowed.sliding_window is None
    assert unwindowed.kv_cache_bytes(32768) == 8 * cfg.kv_cache_bytes(32768)
    assert lp.get_model("mixtral-8x7b").sliding_window is None


@pytest.mark.parametrize("dtype", ["fp32", "fp16", "fp8", "int8", "int4"])
def test_byte_counts_are_whole_numbers(dtype):
    for name in lp.list_models():
        m = lp.get_model(name)
        for value in (
            m.weight_bytes(dtype),
            m.kv_bytes_per_token(dtype),
            m.kv_cache_bytes(7, 3, dtype),
        ):
            assert isinstance(value, int)
    # int4 packs two parameters per byte; an odd count needs one more byte.
    odd = lp.ModelConfig(
        "odd",
        1,
        7,
        1,
        3,
        4,
        position="learned",
        ffn_kind="mlp",
        activation="relu",
        tied_embeddings=True,
    )
    assert odd.param_count() == 4 * 49 + 2 * 7 * 3 + 3 * 7 + 4 * 7 == 287
    assert odd.weight_bytes("int4") == (odd.param_count() + 1) // 2


def test_from_hf_config_rejects_unknown_architecture():
    with pytest.raises(ValueError, match="model_type"):
        lp.ModelConfig.from_hf_config({"model_type": "bert"})
