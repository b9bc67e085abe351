"""Contextual sparsity: the traced activations, the gathered FFN equal to the dense one on
the active set, the low-rank predictor, and the oracle's counted savings."""
from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

import llmperf as lp  # noqa: E402
from llmperf.analytic.sparsity import (  # noqa: E402
    active_neurons,
    gathered_ffn_cost,
    sparse_ffn_cost,
    sparsity_savings,
)
from llmperf.measured.model import Transformer  # noqa: E402
from llmperf.measured.sparsity import (  # noqa: E402
    GatheredFFN,
    LowRankPredictor,
    fit_predictors,
    pre_activation_basis,
    predicted_ffn,
    prediction_quality,
    trace_ffn,
)

RELU = lp.ModelConfig(name="tiny-relu", n_layers=2, d_model=32, n_heads=4, d_ff=64,
                      vocab_size=50, max_seq_len=32, ffn_kind="mlp", activation="relu")


def tokens(batch=2, length=16, seed=0):
    return torch.randint(0, 50, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_trace_sees_what_relu_zeroes():
    model = Transformer(RELU, seed=1)
    trace = trace_ffn(model, tokens())
    mlp = model.layers[1].feed_forward
    assert torch.equal(trace.hidden[1], torch.relu(mlp.w1(trace.inputs[1])))
    s = trace.sparsity()[1]
    assert s.shape == (32,) and 0.2 < float(s.mean()) < 0.8  # random weights: about half zero


def test_gathered_ffn_equals_dense_on_the_active_set():
    model = Transformer(RELU, seed=2)
    trace = trace_ffn(model, tokens())
    mlp = model.layers[0].feed_forward
    sparse = GatheredFFN(mlp)
    with torch.inference_mode():
        for t in (0, 5, 17):
            x = trace.inputs[0][t:t + 1]                          # one token
            active = trace.active(0)[t].nonzero().squeeze(1)
            assert 0 < len(active) < 64
            assert torch.allclose(sparse(x, active), mlp(x), atol=1e-6)
            dropped = sparse(x, active[1:])                       # one active neuron missing
            assert not torch.allclose(dropped, mlp(x), atol=1e-6)
        x = trace.inputs[0][:4]                                   # four tokens: their union
        union = trace.active(0)[:4].any(0).nonzero().squeeze(1)
        assert torch.allclose(sparse(x, union), mlp(x), atol=1e-6)
    with pytest.raises(ValueError, match="active"):
        sparse(x, torch.ones(3))
    with pytest.raises(ValueError, match="ReLU"):
        GatheredFFN(Transformer(RELU.with_(ffn_kind="swiglu", activation="silu"))
                    .layers[0].feed_forward)


def test_full_rank_predictor_is_exact_and_low_rank_is_not():
    model = Transformer(RELU, seed=3)
    trace = trace_ffn(model, tokens())
    mlp = model.layers[0].feed_forward
    full = LowRankPredictor(mlp, trace.inputs[0], rank=32)
    q = prediction_quality(full.predict(trace.inputs[0]), trace.active(0))
    assert q.recall == 1.0 and q.computed == pytest.approx(q.true_active, abs=1e-6)
    low = LowRankPredictor(mlp, trace.inputs[0], rank=2)
    q2 = prediction_quality(low.predict(trace.inputs[0]), trace.active(0))
    assert q2.recall < 1.0
    wide = prediction_quality(low.predict(trace.inputs[0], margin=10.0), trace.active(0))
    assert wide.recall == 1.0 and wide.computed == 1.0  # a huge margin computes everything
    with pytest.raises(ValueError, match="rank"):
        LowRankPredictor(mlp, trace.inputs[0], rank=33)
    # the basis from R W_up^T is the SVD basis of the pre-activations themselves
    pre = trace.inputs[0] @ mlp.w1.weight.T
    direct = torch.linalg.svd(pre, full_matrices=False).Vh[:8]
    basis = pre_activation_basis(mlp, trace.inputs[0])[:8]
    assert torch.allclose((basis @ direct.T).abs(), torch.eye(8), atol=1e-4)


def test_prediction_quality_by_hand():
    pred = torch.tensor([True, True, False, False])
    true = torch.tensor([True, False, True, False])
    q = prediction_quality(pred, true)
    assert (q.recall, q.computed, q.true_active) == (0.5, 0.5, 0.5)


def test_predicted_ffn_drops_only_misses_and_restores_the_model():
    model = Transformer(RELU, seed=4)
    x = tokens()
    with torch.inference_mode():
        dense = model(x)
        predictors = fit_predictors(model, x, ranks=(1, 32))
        with predicted_ffn(model, predictors[32]):
            exact = model(x)  # full rank: every active neuron predicted
        with predicted_ffn(model, predictors[1]):
            lossy = model(x)
        assert torch.allclose(exact, dense, atol=1e-5)
        assert not torch.allclose(lossy, dense, atol=1e-3)
        assert torch.equal(model(x), dense)  # hooks removed


def test_swiglu_models_are_refused():
    with pytest.raises(ValueError, match="ReLU"):
        trace_ffn(Transformer(RELU.with_(ffn_kind="swiglu", activation="silu")), tokens())


def test_oracle_cost_matches_step_costs_when_dense_and_a_hand_count_when_sparse():
    m = lp.get_model("opt-13b")  # ReLU MLP
    rows = lp.step_costs(m, "decode", batch=1, seq_len=128, dtype="fp16")
    dense = rows["ffn_up"].cost + rows["ffn_down"].cost
    mine = sparse_ffn_cost(m, 0.0, tokens=1, dtype="fp16")
    assert mine.flops == pytest.approx(dense.flops) and mine.bytes == pytest.approx(dense.bytes)
    # one token, 90% sparsity, RELU (d 32, d_ff 64, 2 layers, fp16): a = 6 neurons
    assert active_neurons(64, 0.9) == 6
    c = sparse_ffn_cost(RELU, 0.9, tokens=1, dtype="fp16")
    per_matrix_flops = 2 * 32 * 6
    per_matrix_bytes = 2 * (32 + 6) + 2 * 6 * 32
    assert c.flops == 2 * 2 * per_matrix_flops
    assert c.bytes == pytest.approx(2 * 2 * per_matrix_bytes)


def test_batched_tokens_read_the_union_of_their_active_neurons():
    s = sparsity_savings(RELU, 0.9, tokens=8, dtype="fp16")
    a = 6
    union = 64 * (1 - (1 - a / 64) ** 8)
    weight_bytes = 2 * 2 * union * 32 * 2          # 2 layers, 2 matrices, fp16
    act_bytes = 2 * 2 * 8 * (32 + a) * 2
    assert s.sparse.bytes == pytest.approx(weight_bytes + act_bytes)
    assert s.flops_saved == pytest.approx(s.dense.flops * (1 - a / 64))
    assert s.bytes_saved > 0
    huge = sparsity_savings(RELU, 0.9, tokens=4096)  # a big batch touches every neuron
    assert huge.sparse.bytes == pytest.approx(huge.dense.bytes - 2 * 2 * 4096 * 58 * 2,
                                              rel=1e-6)
    assert math.isclose(huge.flops_saved / huge.dense.flops, 58 / 64)


def test_bad_sparsity_is_rejected():
    for bad in (-0.1, 1.0, float("nan")):
        with pytest.raises(ValueError, match="sparsity"):
            active_neurons(64, bad)
    with pytest.raises(ValueError, match="dense"):
        sparse_ffn_cost("mixtral-8x7b", 0.5)


def test_the_gathered_ffn_moves_the_oracles_bytes_plus_one_copy_of_the_up_rows():
    c = gathered_ffn_cost(RELU, 0.9, "fp32")
    oracle = sparse_ffn_cost(RELU, 0.9, 1, "fp32")
    assert c.flops == oracle.flops
    assert c.bytes - oracle.bytes == 2 * (2 * 6 * 32) * 4  # 2 layers, write + read of 6 rows


def test_the_trained_relu_model_is_mostly_zero_on_real_text():
    pytest.importorskip("safetensors")
    from llmperf.trained import load
    from llmperf.trained.load import validation_tokens

    relu = load("relu")
    text = validation_tokens(relu.tokenizer)[:512].reshape(2, 256)
    trace = trace_ffn(relu.model, text)
    for layer, s in enumerate(trace.sparsity()):
        assert float(s.mean()) > 0.5, f"layer {layer + 1} is mostly active"
        assert float(s.max()) < 1.0  # no token switches its whole FFN off
