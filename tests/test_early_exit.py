"""Early exit: per-layer logits through the model's own head, exit layers against a
threshold, the curve's statistics, and the expected layers of an exit profile."""
from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

import llmperf as lp  # noqa: E402
from llmperf.analytic.sparsity import batch_expected_layers, expected_layers  # noqa: E402
from llmperf.measured.early_exit import early_exit_curve, exit_layers, layer_logits  # noqa: E402
from llmperf.measured.model import Transformer  # noqa: E402

TINY = lp.ModelConfig(name="tiny", n_layers=3, d_model=32, n_heads=4, d_ff=48, vocab_size=50,
                      max_seq_len=32)


def test_last_layer_logits_are_the_models_output():
    model = Transformer(TINY, seed=1)
    x = torch.randint(0, 50, (2, 10), generator=torch.Generator().manual_seed(0))
    logits = layer_logits(model, x)
    assert logits.shape == (3, 2, 10, 50)
    with torch.inference_mode():
        assert torch.allclose(logits[-1], model(x), atol=1e-5)
    assert not torch.allclose(logits[0], logits[-1], atol=1e-3)


def test_exit_layer_is_the_first_confident_one():
    # 3 layers, 3 positions, vocabulary 2: top probabilities by layer
    strong, weak = torch.tensor([4.0, 0.0]), torch.tensor([0.2, 0.0])  # p = 0.982, 0.550
    logits = torch.stack([torch.stack([strong, weak, weak]),
                          torch.stack([weak, strong, weak]),
                          torch.stack([strong, strong, weak])])
    assert exit_layers(logits, 0.9).tolist() == [0, 1, 2]
    assert exit_layers(logits, 0.5).tolist() == [0, 0, 0]
    assert exit_layers(logits, 0.999).tolist() == [2, 2, 2]  # the last layer always answers
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="threshold"):
            exit_layers(logits, bad)


def test_curve_by_hand():
    strong, weak = torch.tensor([4.0, 0.0]), torch.tensor([0.2, 0.0])
    # position 0 exits at layer 1 on `strong`; position 1 waits for layer 2's `strong`
    logits = torch.stack([torch.stack([strong, weak]),
                          torch.stack([weak.flip(0), strong])])[:, None]   # (L 2, B 1, T 2, V 2)
    targets = torch.tensor([[0, 1]])
    (point,) = early_exit_curve(logits, targets, [0.9])
    assert point.exit_rate == 0.5 and point.mean_layers == 1.5
    assert point.exit_fractions == (0.5, 0.5) and point.layers_saved == 0.25
    p0 = 1 / (1 + math.exp(-4))  # probability of token 0 under `strong`
    assert point.loss_nats == pytest.approx(-(math.log(p0) + math.log(1 - p0)) / 2, rel=1e-5)
    assert point.agreement == 0.5  # position 0's full-depth argmax is token 1, its exit's 0
    with pytest.raises(ValueError, match="targets"):
        early_exit_curve(logits, torch.tensor([0, 0]), [0.9])


def test_threshold_one_never_exits_and_matches_the_full_model():
    model = Transformer(TINY, seed=2)
    x = torch.randint(0, 50, (2, 11), generator=torch.Generator().manual_seed(1))
    logits = layer_logits(model, x[:, :-1])
    (point,) = early_exit_curve(logits, x[:, 1:], [1.0])
    full = torch.nn.functional.cross_entropy(logits[-1].reshape(-1, 50), x[:, 1:].reshape(-1))
    assert point.exit_rate == 0.0 and point.mean_layers == 3.0
    assert point.loss_nats == pytest.approx(float(full), rel=1e-5) and point.agreement == 1.0


def test_expected_layers_of_a_profile():
    assert expected_layers([0.5, 0.0, 0.5]) == 2.0
    assert expected_layers([0, 0, 0, 1]) == 4.0
    # a batch waits for its slowest token: 2 tokens, each exits after layer 1 or 2 evenly
    assert batch_expected_layers([0.5, 0.5], 2) == pytest.approx(1 + (1 - 0.25))
    assert batch_expected_layers([0.5, 0.5], 1) == expected_layers([0.5, 0.5])
    deep = batch_expected_layers([0.9, 0.0, 0.0, 0.1], 64)  # one late token in 64 costs all
    assert deep == pytest.approx(1 + 3 * (1 - 0.9 ** 64))
    with pytest.raises(ValueError, match="sum to 1"):
        expected_layers([0.5, 0.2])
    with pytest.raises(ValueError, match="exit_fractions"):
        expected_layers([1.2, -0.2])
    with pytest.raises(ValueError, match="batch"):
        batch_expected_layers([1.0], 0)
