"""The model and its cost table agree: FLOPs that PyTorch counts in a forward pass against the
matmul rows of `step_costs`, for every catalog feature the model builds.

`torch.utils.flop_counter.FlopCounterMode` counts the matrix products a pass dispatches (mm,
addmm, bmm and the attention kernels it knows), per module, from the shapes that actually
reach each operator; `step_costs` derives its rows from the config alone. Compared rows:

- q_proj + k_proj + v_proj against the fused `wqkv` layers, o_proj against `wo`;
- ffn_gate + ffn_up against `w13` (SwiGLU) or ffn_up against `w1` (two-matrix MLP), ffn_down
  against `w2`, router against `router` (summed over the experts that ran: MoE rows count
  tokens * experts_per_token);
- lm_head against everything outside the layers (the output projection, or the tied
  embedding's F.linear);
- qk + sv (the standard algorithm) against the attention module's own products: decode's two
  matmuls, and prefill's SDPA run on PyTorch's math backend, which computes every score of the
  causal square as the standard rows count them.

Left out: the element-wise rows (norms, rope, softmax, activation, residuals, embedding),
which FlopCounterMode does not count at all, and the fused prefill row `attention`, which
counts only the causal pairs a fused kernel computes (FlopCounterMode sees no FLOPs in CPU's
flash kernel, and counts the whole square for CUDA's). Biases are in neither: step_costs
leaves them out and FlopCounterMode counts addmm as its product alone.
"""
import pytest

torch = pytest.importorskip("torch")

from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

import llmperf as lp  # noqa: E402
from llmperf.measured.cache import KVCache  # noqa: E402
from llmperf.measured.model import Transformer  # noqa: E402

BASE = lp.ModelConfig(name="base", n_layers=2, d_model=64, n_heads=4, d_ff=96, vocab_size=101,
                      max_seq_len=64)
CONFIGS = [
    BASE,
    BASE.with_(name="gqa", n_heads=8, n_kv_heads=2),
    BASE.with_(name="mqa-tied", n_heads=8, n_kv_heads=1, tied_embeddings=True),
    BASE.with_(name="wide-heads", n_heads=4, n_kv_heads=2, d_head=24),  # q_dim 96 != d_model
    BASE.with_(name="bias", bias=True),
    BASE.with_(name="relu-mlp", ffn_kind="mlp", activation="relu"),
    BASE.with_(name="gelu-mlp-bias", ffn_kind="mlp", activation="gelu", bias=True),
    BASE.with_(name="moe", n_experts=4, experts_per_token=2, n_kv_heads=2),
    BASE.with_(name="moe-relu", n_experts=3, experts_per_token=1, ffn_kind="mlp",
               activation="relu", tied_embeddings=True),
    lp.get_model("ref-moe-tiny"),
]
LINEARS = ("wqkv", "wo", "w13", "w1", "w2", "router")
BATCH, SEQ = 2, 12


def _measured(counter: FlopCounterMode, n_layers: int) -> dict[str, float]:
    """FLOPs by matrix kind, summed over the layers (and experts), from the per-module counts."""
    flops = {fqn: sum(ops.values()) for fqn, ops in counter.get_flop_counts().items()}
    out = dict.fromkeys(LINEARS, 0.0)
    for fqn, n in flops.items():
        if fqn.split(".")[-1] in LINEARS:
            out[fqn.split(".")[-1]] += n
    layers = sum(flops.get(f"Transformer.layers.{i}", 0) for i in range(n_layers))
    attention = sum(flops.get(f"Transformer.layers.{i}.attention", 0) for i in range(n_layers))
    out["attention"] = attention - out["wqkv"] - out["wo"]
    out["lm_head"] = flops["Global"] - layers
    out["total"] = flops["Global"]
    return out


def _predicted(config, phase: str) -> dict[str, float]:
    """The same kinds from the cost table of the standard algorithm (fp32, as the model runs)."""
    step = lp.step_costs(config, phase, BATCH, SEQ, dtype="fp32", attention="standard")
    rows = {r.name: r.flops for r in step}
    swiglu = config.ffn_kind == "swiglu"
    out = {"wqkv": rows["q_proj"] + rows["k_proj"] + rows["v_proj"], "wo": rows["o_proj"],
           "w13": rows["ffn_gate"] + rows["ffn_up"] if swiglu else 0.0,
           "w1": 0.0 if swiglu else rows["ffn_up"], "w2": rows["ffn_down"],
           "router": rows.get("router", 0.0), "attention": rows["qk"] + rows["sv"],
           "lm_head": rows["lm_head"]}
    out["total"] = sum(out.values())
    return out


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.name)
def test_counted_flops_equal_the_matmul_rows_of_step_costs(config):
    model = Transformer(config, max_seq_len=SEQ + 1, seed=3)
    tokens = torch.randint(0, config.vocab_size, (BATCH, SEQ + 1),
                           generator=torch.Generator().manual_seed(1))
    cache = KVCache(model, BATCH, SEQ + 1)
    with torch.inference_mode():
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as prefill:
            model(tokens[:, :SEQ], 0, cache, last_only=True)  # logits of the last position only
        with FlopCounterMode(display=False) as decode:  # one token after SEQ cached
            model(tokens[:, SEQ:], SEQ, cache)
    for phase, counter in (("prefill", prefill), ("decode", decode)):
        got, want = _measured(counter, config.n_layers), _predicted(config, phase)
        assert got == pytest.approx(want, rel=1e-12), (config.name, phase)


def test_the_comparison_sees_a_miscounted_model():
    """A model whose attention read one key too many, or whose head ran at every position,
    disagrees with the table (the test above can fail)."""
    model = Transformer(BASE, max_seq_len=SEQ + 2, seed=3)
    tokens = torch.randint(0, BASE.vocab_size, (BATCH, SEQ + 1))
    cache = KVCache(model, BATCH, SEQ + 2)
    with torch.inference_mode():
        model(tokens[:, :SEQ + 1], 0, cache)
        with FlopCounterMode(display=False) as late:  # SEQ + 1 cached, counted as SEQ
            model(tokens[:, SEQ:], SEQ + 1, cache)
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as every:
            model(tokens[:, :SEQ])  # logits at every position, not the last only
    assert _measured(late, 2)["attention"] != _predicted(BASE, "decode")["attention"]
    assert _measured(every, 2)["lm_head"] == SEQ * _predicted(BASE, "prefill")["lm_head"]


@pytest.mark.parametrize(("changes", "field"), [
    (dict(sliding_window=8), "sliding_window"),
    (dict(norm="layernorm"), "norm"),
    (dict(learned_positions=16), "learned_positions"),
])
def test_a_config_the_model_would_not_follow_is_refused(changes, field):
    with pytest.raises(ValueError, match=field):
        Transformer(BASE.with_(**changes), max_seq_len=8)
    with pytest.raises(ValueError, match="sliding_window"):
        Transformer("mistral-7b", device="meta")
