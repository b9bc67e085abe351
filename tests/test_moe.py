"""Mixture of experts: the catalog against Mixtral's published sizes, routing recorded by hooks,
experts touched by a batch, and decode steps beside their analytic bytes."""
from __future__ import annotations

import pytest
import torch

import llmperf as lp
from llmperf.measured.model import Transformer
from llmperf.measured.moe import Routing, decode_steps, record_routing
from llmperf.models import ModelConfig


def test_mixtral_catalog_matches_the_paper():
    """Jiang et al. 2024 (https://arxiv.org/abs/2401.04088): 47B parameters, 13B active per
    token; Mistral AI's announcement gives 46.7B and 12.9B."""
    m = lp.get_model("mixtral-8x7b")
    assert (m.n_experts, m.experts_per_token) == (8, 2)
    assert round(m.param_count() / 1e9, 1) == 46.7
    assert round(m.active_param_count() / 1e9, 1) == 12.9


def _tiny_moe(seed: int = 0) -> Transformer:
    cfg = ModelConfig(name="tiny-moe", n_layers=2, d_model=32, n_heads=2, d_ff=16, vocab_size=11,
                      max_seq_len=64, n_experts=4, experts_per_token=2)
    return Transformer(cfg, seed=seed)


def _tokens(n: int, vocab: int = 11, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed))


def test_routing_counts_every_token_k_times_per_layer():
    model = _tiny_moe()
    r = record_routing(model, _tokens(3 * 16 + 1), seq_len=16, max_windows=None)
    assert r.choices.shape == (2, 48, 2)
    assert torch.equal(r.counts().sum(dim=1), torch.full((2,), 48 * 2))
    assert bool((r.choices[..., 0] != r.choices[..., 1]).all())  # two distinct experts
    assert torch.allclose(r.shares().sum(dim=1), torch.ones(2, dtype=torch.float64))


def test_recorded_routing_is_the_routing_the_layer_used():
    """Rebuild each layer's output from the recorded experts and the router's weights: it must
    equal what the layer computed (captured by a hook on the layer itself)."""
    model = _tiny_moe(seed=3)
    tokens = _tokens(17, seed=1)
    inputs, outputs = [], []

    def keep(module, args, out):
        inputs.append(args[0].reshape(-1, args[0].shape[-1]))
        outputs.append(out.reshape(-1, out.shape[-1]))

    hooks = [b.feed_forward.register_forward_hook(keep) for b in model.layers]
    r = record_routing(model, tokens, seq_len=16, max_windows=None)
    for h in hooks:
        h.remove()
    for layer, block in enumerate(model.layers):
        ffn, x = block.feed_forward, inputs[layer]
        chosen = r.choices[layer]
        scores = ffn.router(x).float().gather(1, chosen)
        weights = scores.softmax(dim=-1)
        rebuilt = torch.stack([sum(weights[t, s] * ffn.experts[int(chosen[t, s])](x[t])
                                   for s in range(2)) for t in range(x.shape[0])])
        assert torch.allclose(rebuilt, outputs[layer], atol=1e-6)


def test_touched_by_one_token_is_k_and_grows_to_the_experts_used():
    model = _tiny_moe()
    r = record_routing(model, _tokens(65), seq_len=64, max_windows=None)
    assert torch.equal(r.touched(1), torch.full((2,), 2.0, dtype=torch.float64))
    used = torch.tensor([len(set(r.choices[layer].flatten().tolist())) for layer in range(2)],
                        dtype=torch.float64)
    assert torch.equal(r.touched(64, samples=3), used)
    series = torch.stack([r.touched(b) for b in (1, 2, 4, 8, 16)])
    assert bool((series[1:] >= series[:-1] - 0.05).all())


def test_uniform_routing_touches_what_the_formula_predicts():
    """Random top-2 choices of 8 experts: mean distinct experts against E (1 - (1 - k/E)^B);
    400 samples give a standard error under 0.05, the tolerance is 0.25."""
    gen = torch.Generator().manual_seed(0)
    choices = torch.stack([torch.randperm(8, generator=gen)[:2] for _ in range(5_000)])[None]
    r = Routing(choices, 8)
    for batch in (1, 2, 3, 5, 8, 20):
        assert float(r.touched(batch)[0]) == pytest.approx(lp.experts_touched(batch, 8, 2),
                                                           abs=0.25)


def test_routing_rejects_bad_input():
    dense = Transformer(ModelConfig(name="tiny", n_layers=1, d_model=16, n_heads=2, d_ff=32,
                                    vocab_size=11, max_seq_len=32))
    with pytest.raises(ValueError, match="MoE"):
        record_routing(dense, _tokens(40), seq_len=16)
    r = record_routing(_tiny_moe(), _tokens(17), seq_len=16)
    with pytest.raises(ValueError, match="batch"):
        r.touched(17)
    with pytest.raises(ValueError, match="batch"):
        r.touched(0)


def test_decode_steps_carry_the_analytic_bytes():
    model = _tiny_moe()
    rows = decode_steps(model, [1, 2, 8], context=16, steps=2)
    assert [r.batch for r in rows] == [1, 2, 8]
    assert all(r.median_s > 0 for r in rows)
    for r in rows:
        expected = lp.step_costs(model.config, "decode", r.batch, 16, dtype="fp32").total.bytes
        assert r.predicted_bytes == pytest.approx(expected, rel=0.02)  # fused vs standard attn
        assert r.experts_touched == pytest.approx(lp.experts_touched(r.batch, 4, 2))
    assert rows[0].predicted_bytes < rows[1].predicted_bytes < rows[2].predicted_bytes


def test_the_dense_form_computes_the_routed_function():
    """Every expert on every token, the unchosen weighted 0 (`dense = True`, what training
    runs), against the routed form: the same outputs, and gradients reach only the chosen."""
    model = _tiny_moe(seed=5)
    x = torch.randn(3, 7, 32, generator=torch.Generator().manual_seed(2))
    ffn = model.layers[0].feed_forward
    routed = ffn(x)
    ffn.dense = True
    dense = ffn(x)
    ffn.dense = False
    torch.testing.assert_close(dense, routed, rtol=1e-5, atol=1e-6)
    ffn.requires_grad_(True)
    ffn.dense = True
    ffn(x[:, :1]).sum().backward()  # 3 tokens, 2 of 4 experts each
    chosen = set(ffn.route(x[:, :1].reshape(-1, 32))[0].flatten().tolist())
    grads = [e.w2.weight.grad for e in ffn.experts]
    assert {i for i, g in enumerate(grads) if g is not None and g.abs().sum() > 0} == chosen
