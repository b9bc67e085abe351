"""A step split by the kind of its FLOPs and by the data its bytes are, under both algorithms.

The expected values are counted by hand from Llama 2 7B's shape (L = 32, D = 4096, 32 heads of
128, d_ff = 11008, V = 32000, untied embedding and LM head) and Mixtral 8x7B's.
"""

import pytest

import llmperf as lp

ALGORITHMS = ("standard", "fused")
# Per layer: q, k, v, o (4 * 4096^2) and gate, up, down (3 * 4096 * 11008); then the LM head.
LLAMA_MATMUL_PARAMS = 32 * (4 * 4096**2 + 3 * 4096 * 11008) + 4096 * 32000
assert LLAMA_MATMUL_PARAMS == 6_607_077_376
LLAMA_WEIGHT_BYTES = 2 * 6_738_415_616  # every parameter in fp16
EMBEDDING_TABLE_BYTES = 2 * 32000 * 4096
NORM_BYTES = 2 * (2 * 32 + 1) * 4096  # two RMSNorm scales per layer and the final one
KV_BYTES_PER_TOKEN = 2 * 2 * 32 * 4096  # K and V, 32 layers, 4096 wide, 2 bytes


@pytest.mark.parametrize("attention", ALGORITHMS)
@pytest.mark.parametrize("context", [1, 350, 2048])
def test_dense_decode_splits_into_weights_kv_and_activations(attention, context):
    step = lp.step_costs("llama-2-7b", "decode", 1, context, attention=attention)
    matmul_weights = sum(r.weight_bytes for r in step if r.kind == "matmul")
    # The products read every weight matrix once: the model's weights less the embedding
    # table (a lookup) and the norm scales (element-wise rows).
    assert matmul_weights == 2 * LLAMA_MATMUL_PARAMS
    assert matmul_weights == LLAMA_WEIGHT_BYTES - EMBEDDING_TABLE_BYTES - NORM_BYTES
    parts = step.bytes_by_data()
    # All weights a step reads: those, the norm scales, and one row of the embedding table.
    assert parts["weights"] == LLAMA_WEIGHT_BYTES - EMBEDDING_TABLE_BYTES + 2 * 4096
    # Attention reads K and V of the cached tokens and of the new token's own.
    assert parts["kv"] == KV_BYTES_PER_TOKEN * (context + 1)
    assert sum(parts.values()) == pytest.approx(step.total.bytes, rel=1e-12)
    assert parts["activations"] > 0
    kinds = step.flops_by_kind()
    assert set(kinds) == {"matmul", "attention", "elementwise"}
    assert kinds["matmul"] == 2 * LLAMA_MATMUL_PARAMS  # one multiply-add per weight
    # A score and a weighted value per key, d = 128 each, and 3 FLOPs of softmax per score,
    # for 32 heads in 32 layers; the one query sees all context + 1 keys either way.
    assert kinds["attention"] == (4 * 128 + 3) * (context + 1) * 32 * 32
    assert sum(kinds.values()) == pytest.approx(step.total.flops, rel=1e-12)


def test_the_two_algorithms_differ_only_in_the_attention_parts():
    for phase, seq_len in (("decode", 1000), ("prefill", 512)):
        std = lp.step_costs("llama-2-7b", phase, 2, seq_len)
        fused = lp.step_costs("llama-2-7b", phase, 2, seq_len, attention="fused")
        assert std.bytes_by_data()["weights"] == fused.bytes_by_data()["weights"]
        assert std.bytes_by_data()["kv"] == fused.bytes_by_data()["kv"]
        assert std.flops_by_kind()["matmul"] == fused.flops_by_kind()["matmul"]
        assert std.flops_by_kind()["elementwise"] == fused.flops_by_kind()["elementwise"]
    # Prefill: the fused kernel skips the causal half of the scores, and keeps S and P on
    # chip: 4 * B * h * N^2 * L bytes fewer (S written and read, P written and read).
    std = lp.step_costs("llama-2-7b", "prefill", 2, 512)
    fused = lp.step_costs("llama-2-7b", "prefill", 2, 512, attention="fused")
    assert std.flops_by_kind()["attention"] == (4 * 128 + 3) * 512 * 512 * 32 * 2 * 32
    assert fused.flops_by_kind()["attention"] == (4 * 128 + 3) * (512 * 513 // 2) * 32 * 2 * 32
    saved = std.bytes_by_data()["activations"] - fused.bytes_by_data()["activations"]
    assert saved == 4 * 2 * 2 * 32 * 512 * 512 * 32


def test_prefill_reads_kv_once_per_sequence_and_the_batch_shares_weights():
    # 4 prompts of 300 tokens: K and V of 4 * 300 tokens; weights read once for all.
    step = lp.step_costs("llama-2-7b", "prefill", 4, 300)
    parts = step.bytes_by_data()
    assert parts["kv"] == KV_BYTES_PER_TOKEN * 4 * 300
    assert parts["weights"] == LLAMA_WEIGHT_BYTES - EMBEDDING_TABLE_BYTES + 4 * 300 * 2 * 4096


def test_moe_decode_reads_the_experts_its_token_uses():
    # Mixtral 8x7B: q and o 4096^2, k and v 4096 x 1024 (8 KV heads), a router of 4096 x 8,
    # and one token's 2 experts of 3 matrices 4096 x 14336, in 32 layers; the LM head.
    per_layer = 2 * 4096**2 + 2 * 4096 * 1024 + 4096 * 8 + 2 * 3 * 4096 * 14336
    step = lp.step_costs("mixtral-8x7b", "decode", 1, 128)
    matmul_weights = sum(r.weight_bytes for r in step if r.kind == "matmul")
    assert matmul_weights == pytest.approx(2 * (32 * per_layer + 4096 * 32000), rel=1e-12)
    assert step.bytes_by_data()["kv"] == 2 * 2 * 32 * 1024 * 129


def test_rows_carry_kinds_and_parts_through_placement():
    step = lp.step_costs("gpt2", "prefill", 1, 64)
    placed = step.on("A10")
    for row, placed_row in zip(step, placed):
        assert (row.kind, row.weight_bytes, row.kv_bytes) == (
            placed_row.kind, placed_row.weight_bytes, placed_row.kv_bytes)
        assert sum(row.bytes_by_data().values()) == pytest.approx(row.bytes, rel=1e-12)
    # GPT-2's learned positions are a table too: one row of it per token, as weights.
    assert step["positions"].weight_bytes == 64 * 768 * 2
    assert step["positions"].kind == "elementwise"
    assert step["attn_norm"].weight_bytes == 12 * 2 * 768 * 2  # LayerNorm: scale and bias
    assert placed.flops_by_kind() == step.flops_by_kind()
    assert placed.bytes_by_data() == step.bytes_by_data()


def test_a_row_without_a_split_is_refused_by_name():
    row = lp.OpRow("qk", "attention", lp.Cost(10.0, 8.0), 1)
    assert row.kind == "attention" and not row.has_split  # the kind follows the row's name
    with pytest.raises(ValueError, match="weight_bytes"):
        row.bytes_by_data()
    step = lp.step_costs("llama-2-7b", "decode", 1, 16)
    mixed = lp.StepCosts(step.model, step.phase, 1, 16, "fp16", "fp16", "standard",
                         step.rows + (row,))
    with pytest.raises(ValueError, match="qk"):
        mixed.bytes_by_data()


def test_attention_op_rows_are_the_rows_step_costs_uses():
    for attention in ALGORITHMS:
        step = lp.step_costs("mistral-7b", "decode", 3, 700, attention=attention)
        rows = lp.attention_op_rows("mistral-7b", 1, 701, 3, attention=attention)
        assert all(step[r.name] == r for r in rows)


@pytest.mark.parametrize("attention", ["standard", "fused"])
def test_a_verification_step_splits_its_bytes_too(attention):
    # gamma + 1 = 5 appended positions over 1,000 cached tokens, batch 4: the weights are read
    # once as in any step, and the KV cache of 1,005 tokens once per sequence.
    from llmperf.analytic.speculative import verify_step_costs

    llama = lp.get_model("llama-2-7b")
    step = verify_step_costs(llama, 4, 5, 1000, attention=attention)
    parts = step.bytes_by_data()
    assert sum(parts.values()) == pytest.approx(step.total.bytes)
    assert parts["kv"] == 4 * 1005 * llama.kv_bytes_per_token("fp16")
    assert parts["weights"] == lp.step_costs(llama, "decode", 20, 1000).bytes_by_data()["weights"]
