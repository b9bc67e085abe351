# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Exercises 1: the components of a transformer
#
# Fill in each function where it says so, then run the cell below it: the visible checks print
# PASS or FAIL at once. The grader runs further, hidden checks with other arguments, so make your
# functions general, not just right for the examples. You may use `llmperf` for catalog look-ups
# (`lp.get_model(name)` gives a `ModelConfig`), but do not call the function that answers the
# question itself (for example `param_count()` in question 2): the point is to derive it.
#
# Notation as in the chapter: $L$ layers, width $D$, $h$ query heads and $h_{kv}$ key/value heads
# of width $d$, FFN width $D_{\text{ff}}$, vocabulary $V$, context $N$.

# %%
import math

import llmperf as lp
from llmperf.grading import case, question

# %% [markdown]
# ## Question 1: parameters of one attention block (1 point)
#
# Return the number of parameters of one layer's self-attention without biases: $W_Q$, $W_K$,
# $W_V$ and $W_O$, with grouped-query attention when `n_kv_heads < n_heads`.

# %%
def attention_params(d_model: int, n_heads: int, n_kv_heads: int, d_head: int) -> int:
    ### BEGIN SOLUTION
    q_dim, kv_dim = n_heads * d_head, n_kv_heads * d_head
    return d_model * q_dim + 2 * d_model * kv_dim + q_dim * d_model
    ### END SOLUTION

# %%
question("attention_params", points=1,
         visible=[(4096, 32, 32, 128), (512, 8, 4, 64)],
         hidden=[case(8192, 64, 8, 128, why="Llama 2 70B's shape: 8 KV heads for 64 query heads"),
                 case(4096, 32, 8, 128, why="Llama 3 8B's shape: 8 KV heads for 32 query heads"),
                 case(128, 4, 2, 32, why="a tiny model: 4 query heads share 2 KV heads"),
                 case(1024, 16, 1, 64, why="multi-query attention: one KV head for 16 query heads")],
         reference=lambda d, h, hkv, dh: lp.ModelConfig("q", 1, d, h, 4 * d, 100, n_kv_heads=hkv,
                                                        d_head=dh).attention_params(),
         forbid=["llmperf.ModelConfig.attention_params"], on_forbidden="fail")

# %% [markdown]
# ## Question 2: parameters of a Llama-style model (2 points)
#
# Return all parameters of a Llama-style decoder: embedding table, `n_layers` blocks (attention
# as above with $D = h\,d$, a SwiGLU FFN with three matrices, two RMSNorm weight vectors), the
# final RMSNorm, and the LM head, which shares the embedding's storage when `tied` is true.
# Check: Llama 2 7B has 6,738,415,616.

# %%
def llama_params(n_layers: int, d_model: int, n_heads: int, n_kv_heads: int, d_ff: int,
                 vocab_size: int, tied: bool = False) -> int:
    ### BEGIN SOLUTION
    d_head = d_model // n_heads
    per_layer = attention_params(d_model, n_heads, n_kv_heads, d_head) + 3 * d_model * d_ff + 2 * d_model
    head = 0 if tied else vocab_size * d_model
    return n_layers * per_layer + d_model + vocab_size * d_model + head
    ### END SOLUTION

# %%
def _params_reference(layers, d, h, hkv, ff, vocab, tied=False):
    return lp.ModelConfig("q", layers, d, h, ff, vocab, n_kv_heads=hkv,
                          tied_embeddings=tied).param_count()


question("llama_params", points=2,
         visible=[(32, 4096, 32, 32, 11008, 32000), (4, 512, 8, 4, 1408, 8000)],
         hidden=[case(40, 5120, 40, 40, 13824, 32000, why="Llama 2 13B's shape"),
                 case(80, 8192, 64, 8, 28672, 32000, why="Llama 2 70B's shape: GQA, 8 KV heads"),
                 case(32, 4096, 32, 8, 14336, 128256,
                      why="Llama 3 8B's shape: GQA and a vocabulary of 128,256"),
                 case(2, 128, 4, 2, 352, 512, tied=True,
                      why="a tiny model whose LM head shares the embedding (tied=True)"),
                 case(16, 2048, 32, 8, 8192, 128256, tied=True,
                      why="a tied 16-layer GQA model (Llama 3.2 1B's shape)")],
         reference=_params_reference,
         forbid=["llmperf.ModelConfig.param_count", "llmperf.ModelConfig.param_breakdown",
                 "llmperf.ModelConfig.layer_params"], on_forbidden="fail")

# %% [markdown]
# ## Question 3: the FFN's share (1 point)
#
# For a catalog model name, return the fraction (a float between 0 and 1) of all its parameters
# that sit in the FFN blocks: every layer's FFN with its biases where the model has them (one per
# output of each matrix), and, for a mixture of experts, all its experts and its router
# ($D \times E$, no bias). `lp.get_model(name)` returns the model's `ModelConfig`; you may use its
# fields (`n_layers`, `d_model`, `d_ff`, `ffn_matrices`: 3 for SwiGLU, 2 for a plain MLP; `bias`;
# `n_experts`) and its `param_count()`, but not `param_breakdown()`.

# %%
def ffn_share(name: str) -> float:
    ### BEGIN SOLUTION
    m = lp.get_model(name)
    per_expert = m.ffn_matrices * m.d_model * m.d_ff
    if m.bias:
        per_expert += (m.ffn_matrices - 1) * m.d_ff + m.d_model
    router = m.d_model * m.n_experts if m.n_experts > 1 else 0
    return m.n_layers * (m.n_experts * per_expert + router) / m.param_count()
    ### END SOLUTION

# %%
question("ffn_share", points=1,
         visible=["llama-2-7b", "mistral-7b"],
         hidden=[case("llama-2-70b", why="Llama 2 70B: GQA makes attention a smaller share"),
                 case("mixtral-8x7b", why="a mixture of experts: all 8 experts and the routers"),
                 case("gpt2", why="GPT-2: a two-matrix MLP with biases"),
                 case("ref-small", why="the small reference model, where the embedding is large"),
                 case("opt-13b", why="OPT-13B: a two-matrix MLP with biases")],
         reference=lambda n: lp.get_model(n).param_breakdown()["ffn"] / lp.get_model(n).param_count(),
         rel=1e-4, forbid=["llmperf.ModelConfig.param_breakdown"], on_forbidden="fail")

# %% [markdown]
# ## Question 4: FLOPs of one decode token (2 points)
#
# Return the FLOPs of one forward step for a single new token of catalog model `name` when the
# context holds `context` tokens (the new token attends to those and to itself: $N$ = context + 1
# keys). Count the matrix products with weights (two FLOPs per multiply-add; the embedding lookup
# costs nothing, the LM head does cost) and attention's $QK^\top$ and $PV$; leave out norms,
# softmax and other element-wise work. The grader accepts answers within 1 % of the full
# operator-by-operator count of `lp.step_costs` (which you may not call). Take the models as
# Llama-style (SwiGLU, no biases); the config's `q_dim` is $h\,d$, its `kv_dim` $h_{kv} d$, and a
# mixture of experts runs `experts_per_token` experts per token. A model whose `sliding_window`
# is not None (Mistral 7B: 4,096) lets each token attend to at most that many keys, itself
# included. Return the FLOPs as a number.

# %%
def decode_flops(name: str, context: int) -> float:
    ### BEGIN SOLUTION
    m = lp.get_model(name)
    attn = m.d_model * (m.q_dim + 2 * m.kv_dim) + m.q_dim * m.d_model
    ffn = m.experts_per_token * 3 * m.d_model * m.d_ff
    weights = m.n_layers * (attn + ffn) + m.vocab_size * m.d_model
    keys = context + 1 if m.sliding_window is None else min(context + 1, m.sliding_window)
    return 2 * weights + 4 * m.n_layers * keys * m.q_dim
    ### END SOLUTION

# %%
question("decode_flops", points=2,
         visible=[("llama-2-7b", 4096), ("ref-small", 512)],
         hidden=[case("llama-2-7b", 100_000, why="a context of 100,000: attention outweighs the weights"),
                 case("llama-2-70b", 2048, why="Llama 2 70B: GQA narrows the K and V projections"),
                 case("mistral-7b", 32768, why="Mistral 7B at 32,768: its window of 4,096 caps the keys"),
                 case("llama-3-8b", 8, why="a context of 8: the weights, with a vocabulary of 128,256"),
                 case("ref-medium", 1500, why="the medium reference model")],
         reference=lambda n, c: lp.step_costs(n, "decode", 1, c).total.flops,
         rel=0.01, forbid=["llmperf.step_costs"], on_forbidden="fail")

# %% [markdown]
# ## Question 5: where the 2P rule breaks (1 point)
#
# For catalog model `name`, return the context length $N^*$ (a float) at which the attention
# term $4LNhd$ of one decode token equals the weight term $2P_{\text{layers}} + 2VD$, where
# $P_{\text{layers}}$ counts the parameters inside the blocks (norms included; the config's
# `layer_params()` gives one block's). Tolerance 0.1 %.

# %%
def crossover_context(name: str) -> float:
    ### BEGIN SOLUTION
    m = lp.get_model(name)
    weights = 2 * m.n_layers * m.layer_params() + 2 * m.vocab_size * m.d_model
    return weights / (4 * m.n_layers * m.q_dim)
    ### END SOLUTION

# %%
question("crossover_context", points=1,
         visible=["llama-2-7b"],
         hidden=[case("llama-2-70b", why="Llama 2 70B: GQA shrinks the weights, not attention's term"),
                 case("mistral-7b", why="Mistral 7B: GQA and a wider FFN"),
                 case("ref-small", why="the small reference model: the embedding weighs a lot"),
                 case("llama-3-8b", why="Llama 3 8B: a vocabulary of 128,256 in the weight term")],
         rel=1e-3, forbid=["llmperf.step_costs"], on_forbidden="fail")

# %% [markdown]
# ## Question 6: shapes through one block (1 point)
#
# A batch of `batch` sequences of `seq_len` tokens enters a block. Return a dict of shapes, each
# a list of ints: `"queries"` (batch, seq_len, heads, head width), `"keys"` (the same with the
# key/value heads), `"scores"` (batch, heads, seq_len, seq_len), `"ffn_hidden"` (the activation
# between the FFN's up and down projections) and `"output"` (what leaves the block).

# %%
def block_shapes(batch: int, seq_len: int, d_model: int, n_heads: int, n_kv_heads: int,
                 d_ff: int) -> dict:
    ### BEGIN SOLUTION
    d = d_model // n_heads
    return {"queries": [batch, seq_len, n_heads, d], "keys": [batch, seq_len, n_kv_heads, d],
            "scores": [batch, n_heads, seq_len, seq_len], "ffn_hidden": [batch, seq_len, d_ff],
            "output": [batch, seq_len, d_model]}
    ### END SOLUTION

# %%
question("block_shapes", points=1,
         visible=[(2, 16, 512, 8, 4, 1408)],
         hidden=[case(1, 4096, 4096, 32, 32, 11008, why="one sequence of 4,096 through Llama 2 7B's block"),
                 case(3, 7, 8192, 64, 8, 28672, why="3 sequences of 7 tokens through a GQA block"),
                 case(1, 1, 128, 4, 2, 352, why="a single token (a decode step) through a tiny block")])

# %% [markdown]
# ## Question 7: RMSNorm (2 points)
#
# Implement RMSNorm for one token vector: $y_i = x_i g_i / \sqrt{\frac1D \sum_j x_j^2 + \epsilon}$.
# `x` and `weight` are lists of floats of equal length; return a list of floats. (Plain Python or
# torch, as you like; return plain floats.)

# %%
def rmsnorm(x: list, weight: list, eps: float = 1e-5) -> list:
    ### BEGIN SOLUTION
    scale = 1.0 / math.sqrt(sum(v * v for v in x) / len(x) + eps)
    return [v * scale * g for v, g in zip(x, weight)]
    ### END SOLUTION

# %%
question("rmsnorm", points=2,
         visible=[([3.0, 4.0], [1.0, 1.0]), ([1.0, -2.0, 2.0, 0.5], [0.5, 1.0, 2.0, 1.0])],
         hidden=[case([1e-3, 2e-3, -1e-3], [1.0, 1.0, 1.0], why="tiny values, where eps matters"),
                 case([10.0] * 8, [1.0] * 8, eps=0.0, why="eps=0.0 given by keyword"),
                 case([0.0, 0.0, 0.0, 0.0], [1.0, 2.0, 3.0, 4.0],
                      why="a zero vector: only eps keeps the division finite"),
                 case([-7.0, 2.5, 0.1], [0.3, -1.0, 2.0], why="negative values and weights")],
         rel=1e-6, abs=1e-9)

# %% [markdown]
# ## Question 8: how large is a prefill? (1 point)
#
# Chapter 1 showed that a prefill of $S$ tokens of Llama 2 7B on an A10 is compute bound. Set
# `prefill_tflop` to the FLOPs, in TFLOP ($10^{12}$), of a prefill of 2,000 tokens of Llama 2 7B
# by the standard attention algorithm (full $S \times S$ scores, LM head for the last position
# only), counting weight products and $QK^\top$, $PV$. Within 1 % of `lp.step_costs`.

# %%
### BEGIN SOLUTION
_m = lp.get_model("llama-2-7b")
prefill_tflop = (2 * _m.n_layers * (4 * _m.d_model ** 2 + 3 * _m.d_model * _m.d_ff) * 2000
                 + 2 * _m.vocab_size * _m.d_model
                 + 4 * _m.n_layers * 2000 ** 2 * _m.q_dim) / 1e12
### END SOLUTION

# %%
question("prefill_tflop", points=1,
         reference=lambda: lp.step_costs("llama-2-7b", "prefill", 1, 2000).total.flops / 1e12,
         rel=0.01, forbid=["llmperf.step_costs"], on_forbidden="fail")
