"""The trained models: committed weights, their hashes and losses, loading, the training path."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

import llmperf as lp  # noqa: E402
from llmperf.trained import (  # noqa: E402
    NAMES,
    CharTokenizer,
    corpus_matches,
    evaluate,
    load,
    manifest,
    model_config,
    sample,
    split_text,
    validate,
)
from llmperf.trained.load import EVAL_SLICE_WINDOWS, WEIGHTS_DIR  # noqa: E402
from llmperf.trained.train import TrainSettings, train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TRAINED = tuple(manifest()["models"])  # the models whose weights are committed
needs_corpus = pytest.mark.skipif(not corpus_matches(),
                                  reason="this Python ships another pydoc_data.topics")


@pytest.fixture(scope="module")
def info():
    # The first Transformer a process builds on the meta device imports torch's reference
    # operators (seconds, once); the load-time test times the loads after it.
    from llmperf.measured.model import Transformer
    Transformer("ref-tiny", device="meta")
    return manifest()


def test_tokenizer_round_trips_the_corpus():
    tok = CharTokenizer.from_text(split_text("train"))
    text = split_text("validation")[:5000]
    ids = tok.encode(text)
    assert min(ids) >= 1 and max(ids) < tok.vocab_size
    assert tok.decode(ids) == text
    assert tok.decode(tok.encode_tensor("def f(x):\n    return x")) == "def f(x):\n    return x"


def test_tokenizer_unknown_and_bad_input():
    tok = CharTokenizer("ab")
    assert tok.encode("abz") == [1, 2, 0]
    with pytest.raises(ValueError, match="ids"):
        tok.decode([3])
    with pytest.raises(ValueError, match="vocab"):
        CharTokenizer("aa")
    with pytest.raises(ValueError, match="split"):
        split_text("test")


def test_committed_tokenizer_is_the_corpus_tokenizer(info):
    tok = load("draft").tokenizer
    assert tok.vocab_size == info["tokenizer"]["vocab_size"] == model_config("draft").vocab_size
    if corpus_matches():
        assert tok.vocab == CharTokenizer.from_text(split_text("train")).vocab


def test_the_core_models_are_committed():
    assert {"target", "draft", "relu", "moe"} <= set(TRAINED) <= set(NAMES)


@pytest.mark.parametrize("name", TRAINED)
def test_weights_match_hashes_and_configs(name, info):
    m = load(name)
    assert m.config == model_config(name)
    assert m.model.num_parameters() == m.config.param_count() == info["models"][name]["params"]
    assert not m.model.training
    assert not any(p.requires_grad for p in m.model.parameters())
    assert m.val_loss == info["models"][name]["val_loss_nats"]
    assert math.isclose(m.val_loss_bits, m.val_loss / math.log(2))
    assert lp.step_costs(m.config, phase="decode", batch=1, seq_len=128)


def test_a_changed_file_is_refused(tmp_path, info):
    folder = WEIGHTS_DIR
    for f in ("manifest.json", "tokenizer.json", info["models"]["draft"]["file"]):
        (tmp_path / f).write_bytes((folder / f).read_bytes())
    path = tmp_path / info["models"]["draft"]["file"]
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256"):
        load("draft", weights_dir=tmp_path)
    with pytest.raises(ValueError, match="name"):
        load("giant")


@needs_corpus
@pytest.mark.parametrize("name", TRAINED)
def test_validation_loss_reproduces_the_card(name, info):
    got = validate(load(name), max_windows=EVAL_SLICE_WINDOWS)
    assert got.tokens == EVAL_SLICE_WINDOWS * 256
    assert got.loss_nats == pytest.approx(info["models"][name]["val_slice_loss_nats"], abs=2e-3)


def test_the_models_have_learned(info):
    m = info["models"]
    uniform = math.log(info["tokenizer"]["vocab_size"])
    assert all(rec["val_loss_nats"] < 0.6 * uniform for rec in m.values())
    assert m["target"]["val_loss_nats"] < m["draft"]["val_loss_nats"] - 0.1
    assert m["draft"]["params"] * 10 <= m["target"]["params"]
    assert model_config("student").param_count() * 4 <= m["target"]["params"]
    assert 0.5 < m["draft"]["agreement_with_target"]["greedy"] <= 1.0
    moe, target = model_config("moe"), model_config("target")
    assert abs(moe.active_param_count() / target.param_count() - 1) < 0.01


def test_relu_activations_are_exactly_zero_often():
    m = load("relu")
    seen = []
    hook = m.model.layers[0].feed_forward.w1.register_forward_hook(
        lambda mod, inp, out: seen.append(torch.relu(out)))
    m.model(m.tokenizer.encode_tensor(split_text("validation")[:256])[None])
    hook.remove()
    assert (seen[0] == 0).float().mean() > 0.5


def test_sample_continues_the_prompt():
    m = load("draft")
    text = sample(m, "The ", max_new_tokens=40, temperature=0.0)
    assert len(text) == 40
    assert text == sample(m, "The ", max_new_tokens=40, temperature=0.0)
    with pytest.raises(ValueError, match="prompt"):
        sample(m, "")


def test_training_lowers_the_loss():
    tokens = CharTokenizer.from_text(split_text("train")).encode_tensor(split_text("train"))
    before = evaluate(train(model_config("draft"), tokens, TrainSettings(steps=1, batch=4,
                                                                          seq_len=64)).model,
                      tokens[:4000], seq_len=64)
    result = train(model_config("draft"), tokens, TrainSettings(steps=30, batch=4, seq_len=64))
    after = evaluate(result.model, tokens[:4000], seq_len=64)
    assert after.loss_nats < before.loss_nats - 0.3
    assert sum(result.losses[-5:]) < sum(result.losses[:5])
    assert not any(p.requires_grad for p in result.model.parameters())


def _short(steps: int = 2) -> TrainSettings:
    return TrainSettings(steps=steps, batch=2, seq_len=32)


def test_training_follows_its_generator_and_leaves_global_state_alone():
    tokens = torch.randint(0, 104, (2000,), generator=torch.Generator().manual_seed(3))
    torch.rand(1)  # move the global state off any seed's starting point
    before = torch.get_rng_state()
    runs = [train(model_config("draft"), tokens, _short(),
                  generator=torch.Generator().manual_seed(s)).losses for s in (7, 7, 8)]
    assert torch.equal(torch.get_rng_state(), before)
    assert runs[0] == runs[1] != runs[2]
    default = train(model_config("draft"), tokens, _short()).losses  # settings.seed = 0
    assert default == train(model_config("draft"), tokens, _short(),
                            generator=torch.Generator().manual_seed(0)).losses
    with pytest.raises(ValueError, match="generator"):
        train(model_config("draft"), tokens, _short(), generator=7)


def test_moe_training_runs_the_models_own_layer_densely(monkeypatch):
    """Training an MoE config goes through MoEFeedForward's dense form (the routed form is
    made to fail here), and the trained model routes again."""
    from llmperf.measured.model import MoEFeedForward

    def fail(*args):
        raise AssertionError("the routed form ran during training")

    tokens = torch.randint(0, 104, (2000,), generator=torch.Generator().manual_seed(4))
    config = model_config("moe").with_(name="tiny-moe", n_layers=1, d_model=32, n_heads=4,
                                       d_ff=16)
    monkeypatch.setattr(MoEFeedForward, "_routed", fail)
    model = train(config, tokens, _short(3)).model
    monkeypatch.undo()
    assert not any(m.dense for m in model.modules() if isinstance(m, MoEFeedForward))
    assert model(tokens[:16][None]).shape == (1, 16, 104)


def test_training_script_rebuilds_a_model(tmp_path):
    spec = importlib.util.spec_from_file_location("train_models", ROOT / "tools/train_models.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = script.main(["--models", "draft", "--steps", "12", "--batch", "4", "--out",
                       str(tmp_path)])
    rec = out["models"]["draft"]
    assert rec["train_settings"]["steps"] == 12
    assert rec["val_loss_nats"] < math.log(out["tokenizer"]["vocab_size"])
    assert (tmp_path / "MODEL_CARD.md").read_text().count("| draft |") == 1
    assert load("draft", weights_dir=tmp_path).val_loss == rec["val_loss_nats"]
    with pytest.raises(ValueError, match="steps"):
        TrainSettings(steps=0)
