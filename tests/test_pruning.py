"""Pruning masks (exact sparsity, the 2:4 pattern), Wanda's score, and structured pruning
into a smaller model equal to the masked dense one."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import llmperf as lp  # noqa: E402
from llmperf.analytic.sparsity import pruned_config, pruned_size, two_four_bytes  # noqa: E402
from llmperf.measured.model import Transformer  # noqa: E402
from llmperf.measured.pruning import (  # noqa: E402
    importance,
    input_norms,
    magnitude_scores,
    mask_structured,
    prune,
    prune_levels,
    prune_structured,
    shrink,
    top_indices,
    two_four_mask,
    unstructured_mask,
    wanda_scores,
    weight_sparsity,
)

TINY = lp.ModelConfig(name="tiny", n_layers=2, d_model=32, n_heads=4, d_ff=48, vocab_size=50,
                      max_seq_len=32)
TINY_RELU = TINY.with_(name="tiny-relu", ffn_kind="mlp", activation="relu")


def tokens(batch=2, length=16, seed=0):
    return torch.randint(0, 50, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("sparsity", [0.0, 0.25, 0.5, 0.7, 0.9])
def test_unstructured_mask_removes_exactly_the_lowest_of_each_row(sparsity):
    scores = torch.randn(8, 20, generator=torch.Generator().manual_seed(1)).abs()
    mask = unstructured_mask(scores, sparsity)
    pruned = round(sparsity * 20)
    assert (~mask).sum(dim=1).tolist() == [pruned] * 8
    for row in range(8):  # every kept score is at least every removed one
        if 0 < pruned < 20:
            assert scores[row][mask[row]].min() >= scores[row][~mask[row]].max()


def test_magnitude_pruning_reaches_the_requested_sparsity_on_a_model():
    model = Transformer(TINY)
    pruned = prune(model, 0.5)
    assert weight_sparsity(pruned) == pytest.approx(0.5, abs=1e-12)
    assert weight_sparsity(model) == 0.0  # the original is untouched
    ffn = prune(model, 0.75, ffn_only=True)
    assert weight_sparsity(ffn, ffn_only=True) == 0.75
    assert bool((ffn.layers[0].attention.wqkv.weight != 0).all())  # attention left dense
    kept = pruned.layers[0].feed_forward.w2.weight != 0  # each row's largest magnitudes survive
    w = model.layers[0].feed_forward.w2.weight.abs()
    for row in range(w.shape[0]):
        assert w[row][kept[row]].min() >= w[row][~kept[row]].max()


def test_two_four_mask_keeps_the_two_largest_of_every_group_of_four():
    scores = torch.tensor([[4.0, 1.0, 3.0, 2.0, 0.1, 0.4, 0.3, 0.2]])
    assert two_four_mask(scores).tolist() == [[True, False, True, False,
                                               False, True, True, False]]
    big = torch.randn(16, 64, generator=torch.Generator().manual_seed(2))
    groups = two_four_mask(big.abs()).reshape(16, 16, 4)
    assert (groups.sum(dim=-1) == 2).all()
    pruned = prune(Transformer(TINY), pattern="2:4")
    w = pruned.layers[1].attention.wqkv.weight
    assert ((w != 0).reshape(w.shape[0], -1, 4).sum(-1) == 2).all()


def test_wanda_score_weighs_each_column_by_its_input_norm():
    w = torch.tensor([[1.0, -2.0], [-3.0, 0.5]])
    assert wanda_scores(w, torch.tensor([10.0, 1.0])).tolist() == [[10.0, 2.0], [30.0, 0.5]]
    # magnitude removes column 0 of row 0; Wanda, with column 0's large input, removes column 1
    assert unstructured_mask(magnitude_scores(w), 0.5)[0].tolist() == [False, True]
    assert unstructured_mask(wanda_scores(w, torch.tensor([10.0, 1.0])), 0.5)[0].tolist() == \
        [True, False]


def test_wanda_with_precomputed_norms_equals_wanda_with_tokens():
    model = Transformer(TINY, seed=6)
    x = tokens()
    once = prune(model, 0.5, "wanda", norms=input_norms(model, x))
    again = prune(model, 0.5, "wanda", calibration=x)
    assert all(torch.equal(a, b) for a, b in zip(once.parameters(), again.parameters()))
    assert not torch.equal(once.layers[0].attention.wqkv.weight,
                           prune(model, 0.5).layers[0].attention.wqkv.weight)


def test_pruning_several_levels_at_once_equals_pruning_each():
    model = Transformer(TINY, seed=7)
    x = tokens()
    norms = input_norms(model, x)
    levels = [0.0, 0.3, 0.6, 0.9]
    for method in ("magnitude", "wanda"):
        many = prune_levels(model, levels, method, norms=norms)
        for s, pruned in zip(levels, many):
            one = prune(model, s, method, norms=norms)
            assert all(torch.equal(a, b) for a, b in zip(pruned.parameters(), one.parameters()))
    assert weight_sparsity(many[2]) == pytest.approx(
        sum(round(0.6 * lin.in_features) * lin.out_features for lin in
            (m for m in model.layers.modules() if isinstance(m, torch.nn.Linear)))
        / sum(m.weight.numel() for m in model.layers.modules() if isinstance(m, torch.nn.Linear)))
    with pytest.raises(ValueError, match="sparsities"):
        prune_levels(model, [0.5, 1.0])


def test_input_norms_are_the_norms_of_what_each_layer_reads():
    model = Transformer(TINY)
    x = tokens()
    norms = input_norms(model, x)
    seen = {}
    h = model.layers[0].attention_norm.register_forward_hook(
        lambda m, a, out: seen.setdefault("x", out))
    model(x)
    h.remove()
    expected = seen["x"].reshape(-1, 32).norm(dim=0)
    assert torch.allclose(norms["layers.0.attention.wqkv"], expected, rtol=1e-5)


def test_bad_pruning_arguments_are_rejected():
    model = Transformer(TINY)
    with pytest.raises(ValueError, match="sparsity"):
        unstructured_mask(torch.ones(2, 4), 1.0)
    with pytest.raises(ValueError, match="sparsity"):
        unstructured_mask(torch.ones(2, 4), -0.1)
    with pytest.raises(ValueError, match="multiple of 4"):
        two_four_mask(torch.ones(2, 6))
    with pytest.raises(ValueError, match="calibration"):
        prune(model, 0.5, method="wanda")
    with pytest.raises(ValueError, match="method"):
        prune(model, 0.5, method="random")
    with pytest.raises(ValueError, match="input_norm"):
        wanda_scores(torch.ones(3, 4), torch.ones(3))


@pytest.mark.parametrize("config", [TINY, TINY_RELU])
def test_structured_model_is_smaller_and_equals_the_masked_dense_model(config):
    model = Transformer(config, seed=3)
    x = tokens()
    neuron_scores, head_scores = importance(model, x)
    neurons, heads = top_indices(neuron_scores, 20), top_indices(head_scores, 3)
    small = shrink(model, neurons, heads)
    assert small.config.d_ff == 20 and small.config.n_heads == 3 and small.config.d_head == 8
    assert small.num_parameters() == pruned_config(config, 20, 3).param_count()
    assert small.num_parameters() < model.num_parameters()
    assert small.layers[0].feed_forward.w2.weight.shape == (32, 20)
    masked = mask_structured(model, neurons, heads)
    with torch.inference_mode():
        assert torch.allclose(small(x), masked(x), atol=1e-5)
        assert not torch.allclose(small(x), model(x), atol=1e-3)


def test_keeping_everything_changes_nothing():
    model = Transformer(TINY, seed=4)
    x = tokens()
    same = prune_structured(model, x, d_ff=48, n_heads=4)
    with torch.inference_mode():
        assert torch.allclose(same(x), model(x), atol=1e-6)


def test_structured_sizes_match_a_hand_count():
    # target-like: 4 layers, d 256, 4 heads of 64, SwiGLU; halve d_ff, drop one head
    cfg = lp.ModelConfig(name="t", n_layers=4, d_model=256, n_heads=4, d_ff=688, vocab_size=104)
    size = pruned_size(cfg, d_ff=344, n_heads=3, dtype="fp16")
    per_layer = 256 * (3 * 64) * 3 + (3 * 64) * 256 + 3 * 256 * 344 + 2 * 256
    assert size.params_after == 4 * per_layer + 2 * 104 * 256 + 256
    assert size.bytes_after == 2 * size.params_after
    assert size.params_before == cfg.param_count()
    gqa = cfg.with_(n_kv_heads=2)  # grouped-query attention keeps its KV heads
    assert pruned_config(gqa, d_ff=344).n_kv_heads == 2
    assert pruned_size(gqa, d_ff=344).params_after == gqa.param_count() - 4 * 3 * 256 * 344
    with pytest.raises(ValueError, match="d_ff"):
        pruned_config(cfg, d_ff=700)
    with pytest.raises(ValueError, match="n_kv_heads"):
        pruned_config(cfg.with_(n_kv_heads=2), n_heads=2)


def test_two_four_storage_is_half_the_values_plus_two_bit_indices():
    assert two_four_bytes(4096 * 4096, "fp16") == 4096 * 4096 * (2 + 0.25) / 2
    assert two_four_bytes(4096 * 4096, "fp16") / (4096 * 4096 * 2) == 0.5625
    assert two_four_bytes(8, "int8") == 4 * 1 + 4 * 0.25
    with pytest.raises(ValueError, match="multiple of 4"):
        two_four_bytes(6)
    with pytest.raises(ValueError, match="16- or 8-bit"):  # 32-bit types use 1:2, not 2:4
        two_four_bytes(8, "fp32")


def test_grouped_query_models_shrink_their_ffn_and_keep_every_head():
    gqa = TINY.with_(name="tiny-gqa", n_kv_heads=2)
    model = Transformer(gqa, seed=5)
    x = tokens()
    neuron_scores, head_scores = importance(model, x)
    neurons, heads = top_indices(neuron_scores, 24), top_indices(head_scores, 4)
    small = shrink(model, neurons, heads)
    assert small.config.n_kv_heads == 2 and small.config.d_ff == 24
    with torch.inference_mode():
        assert torch.allclose(small(x), mask_structured(model, neurons, heads)(x), atol=1e-5)
    with pytest.raises(ValueError, match="n_kv_heads"):
        shrink(model, neurons, top_indices(head_scores, 2))
    with pytest.raises(ValueError, match="keep"):
        top_indices(neuron_scores, 49)
    with pytest.raises(ValueError, match="same count"):
        shrink(model, [neurons[0], neurons[1][:5]], heads)
