# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown] slideshow={"slide_type": "slide"}
# # Chapter 1: The components of a transformer
#
# Before we can say where the time goes when a large language model answers a request, we
# need to know what the model *is*: which matrices it holds, which multiplications it performs
# on each token, and in what order. This chapter takes a decoder-only transformer apart. We
# follow one batch of tokens through one block of a small Llama-style model that runs on your
# machine, count the parameters of every component by hand, check the count for Llama 2 7B
# against a full-size model built without allocating a single weight, and derive how many
# floating-point operations a token costs. The chapter ends by naming the two workloads,
# {term}`prefill` and {term}`autoregression <decode>`, that the rest of the book analyses.
#
# :::{admonition} After this chapter you will be able to
# :class: tip
#
# - name the parts of a Llama-style decoder (embedding, RMSNorm, self-attention, SwiGLU
#   feed-forward network, residual connections, LM head) and give the shape of every tensor
#   that flows between them;
# - count the parameters of any such model from its configuration, and say which component
#   holds most of them;
# - estimate the FLOPs of a forward pass per token as about twice the parameter count, add the
#   attention term, and say at which context length that rule of thumb breaks;
# - predict the prefill time of a model on your own machine from its FLOPs and check the
#   prediction by measurement.
# :::
#
# **Notation** (used throughout the book; the Llama 2 7B column is its published configuration
# {cite:p}`meta2023llama2config`)
#
# | symbol | meaning | Llama 2 7B |
# |---|---|---|
# | $L$ | number of decoder layers (blocks) | 32 |
# | $D$ | model width, `d_model` | 4096 |
# | $h$ | number of query heads | 32 |
# | $h_{kv}$ | number of key/value heads ($h_{kv} < h$: {term}`grouped-query attention <GQA>`) | 32 |
# | $d$ | width of one head, $D = h\,d$ for most models | 128 |
# | $D_{\text{ff}}$ | hidden width of the feed-forward network, `d_ff` | 11008 |
# | $V$ | vocabulary size | 32000 |
# | $N$ | sequence length (tokens in the context) | up to 4096 |
# | $P$ | number of parameters | 6.74 B |
# | $S$, $G$ | prompt tokens, generated tokens | |
# | $b$ | bytes per element (2 in fp16, 4 in fp32) | 2 |
# | $\Pi$, $\beta$ | peak compute rate (FLOP/s), memory bandwidth (B/s) of a machine | |
#
# The code below uses a GPU when one is present and the CPU otherwise; every measured number
# is printed by the cell that measured it, so what you read in the outputs is your machine.

# %% slideshow={"slide_type": "-"}
import statistics
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import display

import llmperf as lp
from llmperf.measured.load import watch_load
from llmperf.plots import legend_below, new_axes, use_style

use_style()
torch.manual_seed(0)
np.random.seed(0)
device = "cuda" if torch.cuda.is_available() else "cpu"
llama = lp.get_model("llama-2-7b")
ref = lp.get_model("ref-small")
print(f"device: {device}; torch {torch.__version__}")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 1.1 The picture: a stack of identical blocks
#
# A decoder-only transformer, the decoder half of the original architecture
# {cite:p}`vaswani2017attention`, turns a sequence of $N$ token ids into $N$ probability
# distributions over the vocabulary, one for each position, each predicting the token that
# follows. It does so in four stages.
#
# 1. **Embedding.** Each token id selects one row of an embedding table $E \in \mathbb{R}^{V \times D}$.
#    The result is the *residual stream* $x \in \mathbb{R}^{N \times D}$, one vector of width
#    $D$ per token. The lookup is a memory read; it does no arithmetic.
# 2. **$L$ decoder blocks**, all of the same shape, each reading the residual stream and
#    adding something to it. A block has two halves, and these are the two primary
#    components of the model:
#    - the **self-attention block**, the only place where tokens exchange information;
#    - the **feed-forward network (FFN) block**, which transforms each token on its own.
# 3. **A final normalisation** of the residual stream.
# 4. **The LM head**, a matrix $W_{\text{out}} \in \mathbb{R}^{D \times V}$ that maps each
#    token's vector to $V$ logits; a softmax turns logits into next-token probabilities.
#
# Each half of a block is wrapped the same way, in the *pre-norm* arrangement that Llama uses
# {cite:p}`touvron2023llama2`:
#
# $$
# x \leftarrow x + \operatorname{Attention}\big(\operatorname{RMSNorm}(x)\big), \qquad
# x \leftarrow x + \operatorname{FFN}\big(\operatorname{RMSNorm}(x)\big).
# $$
#
# The additions are the **residual connections**: each block writes an update into the stream
# instead of replacing it, which keeps a deep stack trainable. **RMSNorm**
# {cite:p}`zhang2019rmsnorm` rescales each token's vector to unit root-mean-square and multiplies by a learned
# per-channel gain $g \in \mathbb{R}^D$:
#
# $$
# \operatorname{RMSNorm}(x)_i = \frac{x_i}{\sqrt{\tfrac{1}{D}\sum_{j} x_j^2 + \epsilon}}\; g_i .
# $$
#
# Unlike LayerNorm it subtracts no mean and has no bias, so it holds $D$ parameters, not $2D$.
#
# **Self-attention.** Three projections turn the normalised stream into queries, keys and
# values, $Q = x W_Q$, $K = x W_K$, $V = x W_V$ with $W_Q \in \mathbb{R}^{D \times hd}$ and
# $W_K, W_V \in \mathbb{R}^{D \times h_{kv} d}$. The columns are split into heads of width $d$.
# Llama rotates each query and key by a position-dependent angle (rotary position embedding,
# RoPE {cite:p}`su2021roformer`), which costs a few element-wise operations and no parameters. Each
# head then computes
#
# $$
# S = \frac{Q K^\top}{\sqrt d}, \qquad P = \operatorname{softmax}(S + \mathcal{M}), \qquad O = P V,
# $$
#
# where the causal mask $\mathcal{M}$ puts $-\infty$ above the diagonal so that no token sees
# its future. (Here, as in the lecture's attention algorithm, $S$ and $P$ are the score and
# probability matrices; elsewhere in the book they are prompt tokens and parameters.) The heads' outputs are concatenated and projected back to width $D$ by
# $W_O \in \mathbb{R}^{hd \times D}$. When $h_{kv} < h$ (grouped-query attention, GQA
# {cite:p}`ainslie2023gqa`), groups of $h/h_{kv}$ query heads share one key head and one value
# head; Llama 2 7B has $h_{kv} = h$, its larger sibling Llama 2 70B and the course's reference
# models use GQA.
#
# **Feed-forward network.** Llama uses the gated SwiGLU form {cite:p}`shazeer2020glu`: two matrices
# expand the token from $D$ to $D_{\text{ff}}$, one of them goes through the SiLU nonlinearity and gates
# the other element by element, and a third matrix projects back to $D$:
#
# $$
# \operatorname{FFN}(x) = \big(\operatorname{SiLU}(x W_{\text{gate}}) \odot x W_{\text{up}}\big)\, W_{\text{down}},
# \qquad W_{\text{gate}}, W_{\text{up}} \in \mathbb{R}^{D\times D_{\text{ff}}},\; W_{\text{down}} \in \mathbb{R}^{D_{\text{ff}} \times D}.
# $$
#
# Llama 2 7B expands $D = 4096$ to $D_{\text{ff}} = 11008$ and projects back. GPT-2 and OPT use the older
# two-matrix MLP with $D_{\text{ff}} = 4D$; the catalog in `llmperf` knows both.
#
# Everything that follows in this book rests on one observation about these formulas: apart
# from the two products $QK^\top$ and $PV$ inside attention, **every multiplication is a token
# vector times a weight matrix**. Those products are where the parameters live and where
# almost all of the arithmetic happens.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 1.2 Shapes through one block of the reference model
#
# The book's measured experiments use small Llama-style models built from the same
# `ModelConfig` that the analytic calculators read. The default is `ref-small`:

# %% slideshow={"slide_type": "-"}
print(ref)
print(f"q_dim = h*d = {ref.q_dim}, kv_dim = h_kv*d = {ref.kv_dim}, "
      f"query heads per key/value head = {ref.n_heads // ref.n_kv_heads}")

# %% [markdown] slideshow={"slide_type": "-"}
# From the formulas of §1.1 we can write down the shape of every tensor in one block before
# running anything. With a batch of $B$ sequences of $N$ tokens, the residual stream is
# $(B, N, D)$; the queries split into $h$ heads of width $d$; keys and values into $h_{kv}$
# heads; the attention scores are $(B, h, N, N)$; the FFN's hidden activation is $(B, N, D_{\text{ff}})$.
# The cell below lists those predictions; the next one builds the model, runs a batch through
# it and records what each submodule of the first block actually produced.

# %% slideshow={"slide_type": "-"}
B, N = 2, 16
D, h, hkv, d, D_ff = ref.d_model, ref.n_heads, ref.n_kv_heads, ref.d_head, ref.d_ff
expected = {
    "input to the block (residual stream)": (B, N, D),
    "queries, split into heads": (B, N, h, d),
    "keys and values, split into heads": (B, N, hkv, d),
    "attention scores S and probabilities P": (B, h, N, N),
    "attention output before W_O": (B, N, h * d),
    "FFN hidden (after gate * up)": (B, N, D_ff),
    "output of the block": (B, N, D),
    "logits": (B, N, ref.vocab_size),
}
lp.Table(["tensor", "predicted shape"], [(what, str(shape)) for what, shape in expected.items()])

# %% slideshow={"slide_type": "-"}
from llmperf.measured.model import Transformer

model = Transformer(ref, device=device, max_seq_len=64, seed=0)
block = model.layers[0]
seen = {}

def record(name, use_input=False):
    def hook(module, inputs, output):
        seen[name] = tuple((inputs[0] if use_input else output).shape)
    return hook

probes = {  # (module, name, record its input instead of its output)
    "embedding lookup": (model.tok_embeddings, False),
    "RMSNorm before attention": (block.attention_norm, False),
    "fused projection x [W_Q W_K W_V]": (block.attention.wqkv, False),
    "attention output before W_O": (block.attention.wo, True),
    "W_O (attention's update)": (block.attention.wo, False),
    "fused projection x [W_gate W_up]": (block.feed_forward.w13, False),
    "FFN hidden (after gate * up)": (block.feed_forward.w2, True),
    "W_down (FFN's update)": (block.feed_forward.w2, False),
    "output of the block": (block, False),
    "logits": (model.output, False),
}
handles = [m.register_forward_hook(record(n, inp)) for n, (m, inp) in probes.items()]
tokens = torch.randint(0, ref.vocab_size, (B, N))
with torch.inference_mode():
    logits = model(tokens)  # the whole sequence at once, no cache
for hnd in handles:
    hnd.remove()
assert seen["fused projection x [W_Q W_K W_V]"] == (B, N, ref.q_dim + 2 * ref.kv_dim)
assert seen["attention output before W_O"] == expected["attention output before W_O"]
assert seen["FFN hidden (after gate * up)"] == expected["FFN hidden (after gate * up)"]
assert seen["output of the block"] == expected["output of the block"]
assert seen["logits"] == expected["logits"]
lp.Table(["output of", "measured shape"], [(name, str(shape)) for name, shape in seen.items()])

# %% [markdown] slideshow={"slide_type": "-"}
# What to notice:
#
# - The residual stream keeps its shape $(B, N, D)$ from the embedding to the last block: each
#   half of a block reads it and adds an update of the same shape.
# - The implementation fuses $W_Q$, $W_K$ and $W_V$ into one matrix of $h\,d + 2\,h_{kv} d$
#   columns (here $512 + 2 \times 256$), and $W_{\text{gate}}$, $W_{\text{up}}$ into one of
#   $2D_{\text{ff}}$ columns. One
#   large product is faster than three small ones and gives the same numbers; the parameter count
#   does not change. The output is then split and reshaped into heads.
# - The scores $S$ and probabilities $P$ of shape $(B, h, N, N)$ never appear: PyTorch's
#   `scaled_dot_product_attention` computes attention in one call and, on most devices, never
#   stores the $N \times N$ matrices in full. The lecture's standard algorithm does store them;
#   chapter 4 shows why that matters and chapter 7 how tiled attention avoids it.
# - The widest activation inside a block is the output of the fused gate/up projection,
#   $2D_{\text{ff}}$ = 2816 columns per token; after the gating the FFN's hidden activation is
#   $D_{\text{ff}}$ = 1408 wide, still wider than the stream. The logits ($V$ = 8000 per token)
#   are the widest activation in the model.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 1.3 Counting parameters
#
# The shapes give the parameter count directly: a weight matrix of shape $(a, b)$ holds $ab$
# numbers. Per layer, attention holds the four projections,
#
# $$
# P_{\text{attn}} = \underbrace{D\,hd}_{W_Q} + \underbrace{2\,D\,h_{kv} d}_{W_K,\,W_V} + \underbrace{hd\,D}_{W_O}
# \;\overset{h_{kv}=h,\; hd = D}{=}\; 4D^2 ,
# $$
#
# the SwiGLU FFN holds three matrices, $P_{\text{ffn}} = 3D\,D_{\text{ff}}$, and the two RMSNorms hold $2D$.
# Outside the layers there are the embedding table ($VD$), the final norm ($D$) and the LM head
# ($VD$, unless it is *tied* to the embedding and shares its storage, as in GPT-2 and OPT).
# Altogether, for an untied model such as Llama,
#
# $$
# P = L\,\big(P_{\text{attn}} + 3D\,D_{\text{ff}} + 2D\big) + D + 2VD ,
# $$
#
# and $VD$ less for a tied one. For Llama 2 7B, by hand:

# %% slideshow={"slide_type": "-"}
L_, D_, Dff_, V_ = llama.n_layers, llama.d_model, llama.d_ff, llama.vocab_size
attn = 4 * D_ * D_
ffn = 3 * D_ * Dff_
norms = 2 * D_
by_hand = L_ * (attn + ffn + norms) + D_ + 2 * V_ * D_
assert by_hand == llama.param_count() == 6_738_415_616
assert llama.param_breakdown() == {"embedding": V_ * D_, "attention": L_ * attn, "ffn": L_ * ffn,
                                   "norms": L_ * norms + D_, "lm_head": V_ * D_}
lp.Table(["part", "parameters"], [
    ("attention per layer", attn),
    ("FFN per layer", ffn),
    ("norms per layer", norms),
    ("embedding + LM head", 2 * V_ * D_),
], footer=[("total by hand", by_hand), ("llmperf", llama.param_count())])

# %% [markdown] slideshow={"slide_type": "fragment"}
# :::{important}
# Llama 2 7B has $32\,(4D^2 + 3D\,D_{\text{ff}} + 2D) + D + 2VD = 6{,}738{,}415{,}616$ parameters,
# and two thirds of them sit in the FFN.
# :::

# %% [markdown] slideshow={"slide_type": "-"}
# A formula checked against another formula proves little if both share a mistake. The
# strongest check is to build the real model and count its tensors. A 6.7-billion-parameter
# model would need 27 GB of memory in fp32, more than many laptops have, but PyTorch's `meta`
# device {cite:p}`pytorch_meta` creates tensors that carry a shape and a dtype and no storage at all. The same
# `Transformer` class that runs on your machine is built here at full Llama 2 7B size:

# %% slideshow={"slide_type": "-"}
build_s = []
with watch_load() as machine:
    for _ in range(3):  # three builds: the time is this machine's, and varies
        start = time.perf_counter()
        full_size = Transformer(llama, device="meta")  # shapes and dtypes, no storage
        build_s.append(time.perf_counter() - start)
assert all(p.is_meta for p in full_size.parameters())
counts = {
    "embedding": full_size.tok_embeddings.weight.numel(),
    "layers": sum(p.numel() for p in full_size.layers.parameters()),
    "final norm": full_size.norm.weight.numel(),
    "lm_head": full_size.output.weight.numel(),
}
total = full_size.num_parameters()
assert total == sum(counts.values()) == llama.param_count() == 6_738_415_616
assert model.num_parameters() == ref.param_count()
lp.Table(["tensors of", "parameters"], list(counts.items()),
         footer=[("total", total), ("llmperf", llama.param_count())])

# %% slideshow={"slide_type": "-"} tags=["nbval-ignore-output"]
print(f"built in {statistics.median(build_s):.3f} s (3 builds: {min(build_s):.3f} to "
      f"{max(build_s):.3f} s); bytes of storage allocated: 0 "
      f"(fp32 would need {lp.format_bytes(llama.weight_bytes('fp32'))})")
print(machine.note())

# %% [markdown] slideshow={"slide_type": "-"}
# The full-size model has exactly the number of parameters the formula gives, and so does the
# small model we ran above (`model.num_parameters()` equals `ref.param_count()`, asserted in the
# cell). It is the very `Transformer` class that runs on your machine, built at full size, so
# the formula, the analytic calculators and the code that runs cannot disagree about what a
# model is.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 1.4 Where the parameters live
#
# The same breakdown for every model in the `llmperf` catalog shows how the split changes with
# scale and with design choices. Each bar is one model; the segments are the fractions of its
# parameters in each component.

# %% slideshow={"slide_type": "fragment"}
names = [n for n in lp.list_models() if not n.startswith("ref-") or n == "ref-small"]
parts = ["embedding", "attention", "ffn", "norms", "lm_head"]
shares = np.array([[lp.get_model(n).param_breakdown()[p] / lp.get_model(n).param_count()
                    for p in parts] for n in names])
ax = new_axes("Where the parameters live", "share of all parameters", None, figsize=(7.0, 6.0))
left = np.zeros(len(names))
for j, part in enumerate(parts):
    ax.barh(names, shares[:, j], left=left, label=part)
    left += shares[:, j]
for i, n in enumerate(names):
    ax.text(1.01, i, f"{lp.get_model(n).param_count() / 1e9:.2g}B", va="center")
ax.set_xlim(0, 1.12)
ax.invert_yaxis()  # the catalog's order, top to bottom
legend_below(ax, ncol=5)
plt.show()

# %% slideshow={"slide_type": "-"}
lp.Table(["model", *parts], [(n, *row) for n, row in zip(names, shares)],
         formats={p: ".1%" for p in parts})

# %% [markdown] slideshow={"slide_type": "-"}
# **Figure 1.** Share of each model's parameters by component; the label beside each bar is the
# total count. In every large model the FFN holds the majority and attention most of the rest;
# the norms are invisible. Embedding and LM head matter for small models with large vocabularies
# (GPT-2, the course's `ref-small`) and for Llama 3, whose vocabulary grew to 128,256 tokens.
# Mixtral 8x7B stands out: eight expert FFNs per layer put nearly all of its parameters in the
# FFN, though each token uses only two of them (chapter 8).
#
# Three design choices move the bars. *Grouped-query attention* shrinks $W_K$ and $W_V$ by
# $h/h_{kv}$, which is why Mistral 7B and Llama 3 8B spend a smaller share on attention than
# Llama 2 7B. A *wider FFN* ($D_{\text{ff}}/D$ = 3.5 for Mistral against 2.7 for Llama 2) moves weight
# into the FFN. {term}`Mixture of experts <mixture of experts>` multiplies the FFN without multiplying the work per token.
# The table below the figure gives the exact shares.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 1.5 FLOPs per token: about twice the parameters, plus attention
#
# Multiplying a token vector of length $a$ by a matrix of shape $(a, b)$ costs $ab$
# multiply-adds, which the book counts as $2ab$ FLOPs. Every weight matrix in the model is used
# exactly once per token, so the matrix products with weights cost **two FLOPs per parameter
# per token**. Two corrections make this exact:
#
# - The embedding is a lookup, not a product: its $VD$ parameters cost nothing. The LM head is
#   a product and costs $2VD$ per token that needs logits, even when it shares its storage with
#   the embedding (tied, as in GPT-2), so a tied table is counted once in $P$ and used twice.
# - Attention's two products with token data, $QK^\top$ and $PV$, use no parameters. For one
#   new token attending to $N$ earlier ones, each of the $h$ heads does $2Nd$ FLOPs for the
#   scores and $2Nd$ for the weighted sum of values.
#
# Write $P_{\text{layers}} = L(P_{\text{attn}} + 3D\,D_{\text{ff}} + 2D)$ for the parameters inside the blocks.
# Adding the norms, the softmax and the other element-wise work (a few FLOPs per element, small
# beside the matrix products) gives the cost of one token at context length $N$:
#
# $$
# C_{\text{token}}(N) \;\approx\; 2\,P_{\text{layers}} \;+\; 2VD \;+\; 4\,L\,N\,h\,d ,
# $$
#
# which for an untied model is $2(P - VD) + 4LNhd$, and for a tied one $2P + 4LNhd$. The first
# terms are the famous rule *FLOPs per token $\approx 2P$* of {cite:t}`kaplan2020scaling` (their
# Table 1), which inference guides use throughout {cite:p}`shenoy2023baseten,chen2022arithmetic`;
# the last grows with the context. Kaplan et al.'s table writes the context term as
# $2\,n_{\text{layer}}\,n_{\text{ctx}}\,d_{\text{attn}}$, half of our $4LNhd$. Theirs is one row, the
# attention scores $QK^\top$ of a token against the context; the weighted sum of the values
# $PV$ costs as much again, and we count both for a token that attends to all $N$ cached tokens,
# as a decode step does. (Averaged over a causal training sequence, in which the token at
# position $t$ attends to $t$ tokens, both products together also come to about
# $2\,n_{\text{layer}}\,n_{\text{ctx}}\,d_{\text{attn}}$ per token: the two counts answer different
# questions.) For a model with $hd = D$ the attention term matches the weight term at
#
# $$
# N^* = \frac{2P_{\text{layers}} + 2VD}{4 L D} \approx \frac{P}{2LD}\,,
# $$
#
# which for Llama 2 7B is about 25,000 tokens. Up to a thousand tokens or so the $2P$ rule is good
# to a few per cent; at Llama 2's full context of 4,096 tokens attention adds about a seventh;
# far beyond, attention dominates. `lp.step_costs` counts every operator of
# a forward step separately; the next cell checks the formula against it.

# %% slideshow={"slide_type": "-"}
def flops_per_token(m: lp.ModelConfig, context: int) -> float:
    """2 P_layers + 2 V D + 4 L N h d: weight products, LM head, the two attention products."""
    p_layers = m.n_layers * m.layer_params()
    return 2 * p_layers + 2 * m.vocab_size * m.d_model + 4 * m.n_layers * context * m.q_dim

rows = []
for context in (512, 4096, 32768):
    counted = lp.step_costs(llama, "decode", batch=1, seq_len=context).total.flops
    formula = flops_per_token(llama, context + 1)  # the new token attends to itself too
    assert abs(formula / counted - 1) < 0.01
    rows.append((context, counted / 1e9, formula / 1e9, 2 * llama.param_count() / 1e9,
                 formula / counted))
n_star = flops_per_token(llama, 0) / (4 * llama.n_layers * llama.q_dim)
print(f"attention term equals the weight term at N* = {n_star:,.0f} tokens")
lp.Table(["N", "step_costs GFLOP", "formula GFLOP", "2P GFLOP", "formula / step_costs"], rows,
         formats={"step_costs GFLOP": ".2f", "formula GFLOP": ".2f", "2P GFLOP": ".2f",
                  "formula / step_costs": ".4f"})

# %% [markdown] slideshow={"slide_type": "-"}
# The formula and the operator-by-operator table agree to better than one per cent; what is left
# is the norms, softmax, RoPE and residual additions. Figure 2 shows the ratio of the full count
# to the $2P$ rule as the context grows, for models of very different sizes.

# %% slideshow={"slide_type": "fragment"}
contexts = np.unique(np.logspace(5, 17, 40, base=2).astype(int))
ax = new_axes("When does 'FLOPs per token = 2P' hold?", "context length N (tokens)",
              "FLOPs per token / 2P")
for name in ("gpt2", "ref-small", "mistral-7b", "llama-2-7b", "llama-2-70b"):
    m = lp.get_model(name)
    ratio = [lp.step_costs(m, "decode", 1, int(n)).total.flops / (2 * m.param_count())
             for n in contexts]
    ax.plot(contexts, ratio, label=name)
ax.axhline(1.0, color="black", lw=0.8)
ax.set_xscale("log", base=2)
ax.set_yscale("log")
ax.legend()
plt.show()

# %% [markdown] slideshow={"slide_type": "-"}
# **Figure 2.** FLOPs of one decode token, counted operator by operator by `lp.step_costs`,
# divided by $2P$, against the number of tokens in the context. Where a curve sits on the black
# line the rule of thumb is exact. A curve starts below 1 where an untied embedding table is a
# large share of the model (`ref-small`: a fifth of its parameters do no arithmetic); GPT-2's
# tied table is used as the LM head, so it starts near 1. The curves bend upward once
# $4LNhd$ becomes comparable with $2P$: early for small models (GPT-2's $N^*$ is a few thousand
# tokens), late for Llama 2 70B, whose grouped-query attention does not reduce attention FLOPs
# but whose weights grow faster than $LD$. Mistral 7B's curve goes flat instead: each of its
# tokens attends to a sliding window of at most 4,096 tokens {cite:p}`jiang2023mistral`, so
# past that context its attention stops growing and the $4LNhd$ term holds at $N = 4096$.

# %% [markdown] slideshow={"slide_type": "fragment"}
# :::{important}
# A forward pass costs $2P_{\text{layers}} + 2VD$ FLOPs per token plus $4LNhd$ for
# attention (that is $2(P - VD) + 4LNhd$ with untied embeddings, $2P + 4LNhd$ with tied ones); the
# "$2P$" rule holds while $N$ is well below $P/(2LD)$.
# :::

# %% [markdown] slideshow={"slide_type": "-"}
# A prefill of $N$ prompt tokens processes all of them at once. Token $i$ attends to positions
# $1, \dots, i$, so a kernel that skips the masked scores does $\sum_i 4Lid \cdot h =
# 2LN(N+1)hd \approx 2LN^2hd$ FLOPs of attention products, half of what the standard algorithm
# computes, since it fills the whole $N \times N$ score matrix and masks afterwards.
# `lp.step_costs` counts the standard algorithm by default, as the lecture does;
# `attention="fused"` counts one fused causal kernel instead (scores and probabilities stay on
# chip, masked pairs are skipped). The next cell checks the half against the library.

# %% slideshow={"slide_type": "-"}
N_ = 2048
standard = lp.step_costs(llama, "prefill", 1, N_)
fused = lp.step_costs(llama, "prefill", 1, N_, attention="fused")
by_hand = 2 * llama.n_layers * N_ * (N_ + 1) * llama.q_dim  # 2 L N (N+1) h d
products = standard["qk"].flops + standard["sv"].flops
assert by_hand == 4 * llama.n_layers * llama.n_heads * llama.d_head * lp.attended_pairs(N_, N_, causal=True)
assert abs(by_hand / products - 0.5) < 1e-3
assert abs(fused["attention"].flops / by_hand - 1) < 0.01  # the rest is the softmax
lp.Table([f"N = {N_}", "FLOP", "/ standard QK^T + PV"], [
    ("standard QK^T + PV (llmperf)", products, 1.0),
    ("causal, by hand", by_hand, by_hand / products),
    ("fused causal kernel (llmperf, with the softmax)", fused["attention"].flops,
     fused["attention"].flops / products),
], formats={"FLOP": ".3e", "/ standard QK^T + PV": ".4f"})

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 1.6 Predict, then measure: prefill time from FLOPs
#
# If arithmetic is the bottleneck, the time of a prefill should be its FLOPs divided by the
# rate at which the machine does arithmetic. `measure_host()` measures that rate on your machine
# (a large matrix multiplication) together with its memory bandwidth, and returns an
# `Accelerator`, so every calculator in `llmperf` applies to it.

# %% slideshow={"slide_type": "-"} tags=["nbval-ignore-output"]
from llmperf.measured.measure import measure_host, measure_prefill

dtype = "fp32"  # the reference model runs in fp32
with watch_load() as machine:  # three measurements; the one of median peak is the machine's
    hosts = sorted((measure_host(dtypes=(dtype,), device=device, progress=False)
                    for _ in range(3)), key=lambda h: h.peak(dtype))
host = hosts[1]
print(f"{host.name}: {lp.format_flop_rate(host.peak(dtype))} in {dtype} (3 runs: "
      f"{lp.format_flop_rate(hosts[0].peak(dtype))} to {lp.format_flop_rate(hosts[-1].peak(dtype))}), "
      f"{lp.format_bandwidth(host.mem_bandwidth)}")
print(machine.note())

# %% [markdown] slideshow={"slide_type": "-"}
# **Prediction.** The reference model runs the attention of a prefill as one fused causal
# kernel (`scaled_dot_product_attention`), so the prediction counts attention that way:
# `model.step_costs("prefill", batch, S)` counts the step the way the model runs it (its
# `model.attention_kernel` names the kernel of each phase). A prefill of $S$ tokens of `ref-small` costs about
# $\text{FLOPs}_{\text{prefill}} = 2P_{\text{layers}}S + 2VD + 2LS(S+1)hd$ (the LM head for the
# last position only), and if it ran at the measured peak it would take
# $\text{FLOPs}_{\text{prefill}}/\Pi$ seconds. (The lecture's standard
# algorithm stays the count for the A10 analysis of §1.7.)
#
# **Measurement.** `measure_prefill`
# times one forward pass over $S$ random tokens, nine times after a warm-up, and reports the
# median, which a busy machine disturbs less than the mean. The `Measurement` it returns counts
# the same work (asserted below) and gives the achieved rate, `flops_per_s`, as FLOPs over the
# median time.

# %% slideshow={"slide_type": "-"} tags=["nbval-ignore-output"]
lengths = [8, 32, 128, 384]
prefill_model = Transformer(ref, device=device, max_seq_len=max(lengths), seed=0)
flops = [prefill_model.step_costs("prefill", 1, S).total.flops for S in lengths]
predicted = [c / host.peak(dtype) for c in flops]
with watch_load() as machine:
    runs = [measure_prefill(prefill_model, S, repeat=9) for S in lengths]
assert all(m.cost.flops == c for m, c in zip(runs, flops))  # the measurement counts the same work
measured = [m.timing.median_s for m in runs]
achieved = [m.flops_per_s for m in runs]
display(lp.Table(["S", "FLOP", "predicted", "measured (median of 9)", "IQR",
                  "measured / predicted", "achieved"],
                 list(zip(lengths, flops, predicted, measured, [m.timing.iqr_s for m in runs],
                          [t / p for t, p in zip(measured, predicted)], achieved)),
                 formats={"FLOP": ".3e", "predicted": lp.format_seconds,
                          "measured (median of 9)": lp.format_seconds, "IQR": lp.format_seconds,
                          "measured / predicted": ".2f", "achieved": lp.format_flop_rate}))
shares = [rate / host.peak(dtype) for rate in achieved]
print(f"measured / predicted: {measured[0] / predicted[0]:.2f} at S = {lengths[0]}, "
      f"{measured[-1] / predicted[-1]:.2f} at S = {lengths[-1]}; share of the peak reached: "
      f"{min(shares):.0%} to {max(shares):.0%}")
print(machine.note())

# %% slideshow={"slide_type": "fragment"}
fig, (top, bottom) = plt.subplots(2, 1, figsize=(7.0, 7.0))
top.loglog(lengths, measured, "o-", label="measured")
top.loglog(lengths, predicted, "s--", label="FLOPs / measured peak")
top.set_title("Prefill of ref-small")
top.set_xlabel("prompt length S (tokens)")
top.set_ylabel("time (s)")
top.legend()
bottom.semilogx(lengths, shares, "o-")
bottom.axhline(1, color="gray", lw=0.8)
bottom.set_ylim(0, max(1.05, 1.1 * max(shares)))  # a share above 1 stays in view
bottom.set_title("Share of the peak the prefill reaches")
bottom.set_xlabel("prompt length S (tokens)")
bottom.set_ylabel("achieved FLOP/s / peak")
for axis in (top, bottom):
    axis.set_xscale("log", base=2)
    axis.set_xticks(lengths, [str(n) for n in lengths])
    axis.minorticks_off()
fig.tight_layout()
plt.show()

# %% [markdown] slideshow={"slide_type": "-"}
# **Figure 3.** Top: measured prefill time (median of 9 runs) of the reference model and the
# time its FLOPs, counted with the fused causal attention the model runs, would take at the
# peak rate `measure_host()` found. Bottom: the achieved arithmetic rate as a share of that
# peak. The prediction charges every FLOP at the peak rate, so expect it to be optimistic, by
# an amount that depends on the prompt length; what to look for is how the ratio of measured
# to predicted time moves with $S$ (printed under the table). For short prompts the model does
# little arithmetic per weight it reads (a few tokens share each weight), so memory traffic and
# fixed per-operator costs, not arithmetic, set the time, and the measured time should be a
# large multiple of the prediction. As $S$ grows each weight is reused across more tokens, the
# matrix products become large enough to keep the arithmetic units busy, and the achieved
# share should rise. Expect it to stay below one: the peak was measured on one large square
# matrix product, while a transformer also runs attention, norms and activations, and products
# whose narrow dimension ($D = 512$ here) use the hardware less well. A share above one means
# the peak itself was measured low: the three runs of `measure_host` above show how much it
# moved, and the note under them whether the machine was busy.

# %% [markdown] slideshow={"slide_type": "fragment"}
# :::{important}
# FLOPs divided by the peak rate give an optimistic estimate of a prefill's time; the
# estimate becomes close only when the prompt is long enough for arithmetic to dominate.
# :::

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 1.7 Two workloads: prefill and autoregression
#
# Serving a request runs the model in two different ways.
#
# - **Prefill** ingests the prompt: all $S$ tokens are known, so one forward pass processes them
#   together. Each weight matrix multiplies a matrix of $S$ token vectors: a matrix-matrix
#   product (GEMM), with $S$ multiply-adds for every weight read from memory.
# - **Autoregression** (decode) generates the answer one token at a time. Token $t+1$ cannot be
#   computed before token $t$ is known, so each step is a forward pass over a single new token:
#   every weight matrix multiplies one vector (GEMV), one multiply-add per weight read.
#
# Both do the same FLOPs per token. What differs is how many FLOPs they do per byte fetched from
# memory, the {term}`arithmetic intensity`, and so which resource limits them. The table below uses
# `lp.step_costs` for Llama 2 7B on the lecture's A10 GPU, for a prefill of 350 tokens and for
# one decode step at the same context.

# %% slideshow={"slide_type": "-"}
a10 = lp.get_accelerator("A10")
rows = []
for phase, tokens in (("prefill", 350), ("decode", 1)):
    t = lp.step_costs(llama, phase, batch=1, seq_len=350, dtype="fp16").on(a10)
    rows.append((phase, tokens, t.total.flops, t.total.bytes, t.total.intensity, t.time_s,
                 t.time_s / tokens))
print(f"A10 ridge point: {a10.ridge_point('fp16'):.1f} FLOP/B")
lp.Table(["phase", "tokens", "FLOP", "bytes", "intensity FLOP/B", "time", "per token"], rows,
         formats={"FLOP": ".3e", "bytes": ".3e", "intensity FLOP/B": ".1f",
                  "time": lp.format_seconds, "per token": lp.format_seconds})

# %% [markdown] slideshow={"slide_type": "-"}
# The prefill does hundreds of FLOPs per byte, above the A10's {term}`ridge point`, so it is
# {term}`compute bound`; the decode step does about one FLOP per byte and waits on memory
# ({term}`memory bound`). Per token, decode is
# many times slower than prefill on the same hardware, although the arithmetic is the same.
# Chapter 2 measures both phases on your machine; chapter 4 explains the ridge point and the
# {term}`roofline` in full.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Worked problems
#
# **Problem 1.** Count the parameters of Llama 2 13B ($L = 40$, $D = 5120$, $h = h_{kv} = 40$,
# $D_{\text{ff}} = 13824$, $V = 32000$, untied) by hand.
#
# <details><summary>Answer</summary>
#
# Per layer: attention $4D^2 = 104{,}857{,}600$; FFN $3D\,D_{\text{ff}} = 212{,}336{,}640$; norms
# $2D = 10{,}240$; together $317{,}204{,}480$. Times 40 layers: $12{,}688{,}179{,}200$. Add the
# final norm ($5{,}120$) and embedding plus LM head ($2VD = 327{,}680{,}000$):
# $P = 13{,}015{,}864{,}320$, which is `lp.get_model("llama-2-13b").param_count()`.
#
# </details>
#
# **Problem 2.** Mistral 7B has the shapes of Llama 2 7B except $h_{kv} = 8$ and $D_{\text{ff}} = 14336$.
# By how much does GQA shrink its attention parameters per layer, and where did the parameters
# go?
#
# <details><summary>Answer</summary>
#
# $W_Q$ and $W_O$ keep $D^2$ each; $W_K$ and $W_V$ shrink from $D^2$ to $D \cdot h_{kv} d = D^2/4$.
# Attention per layer falls from $4D^2 = 67.1$ M to $2.5D^2 = 41.9$ M parameters. The wider FFN
# adds $3D(14336 - 11008) = 40.9$ M per layer, more than GQA saved, so Mistral 7B has more
# parameters (7.24 B) than Llama 2 7B (6.74 B). Figure 1 shows the shift.
#
# </details>
#
# **Problem 3.** Llama 2 7B answers a 2,000-token prompt. About how many FLOPs does the prefill
# take, and what share of them is attention's $QK^\top$ and $PV$ (standard algorithm, full
# $N \times N$ scores)?
#
# <details><summary>Answer</summary>
#
# Weights inside the blocks: $2P_{\text{layers}}N \approx 2 \times 6.48\text{ B} \times 2000 \approx
# 2.59 \times 10^{13}$ FLOPs; the LM head runs for the last position only ($2VD$, negligible).
# Attention: $4LN^2hd = 4 \times 32 \times 2000^2 \times 4096 \approx 2.1 \times 10^{12}$. Total
# about $2.80 \times 10^{13}$, of which attention is about 7.5 %. Check:
# `lp.step_costs(llama, "prefill", 1, 2000)`, rows `qk` and `sv`.
#
# </details>
#
# **Problem 4.** At what context length does one decode token of GPT-2 (124 M parameters,
# $L = 12$, $D = 768$, tied embeddings) cost twice what the $2P$ rule says?
#
# <details><summary>Answer</summary>
#
# GPT-2's weight terms are $2P_{\text{layers}} + 2VD \approx 170.1\text{ M} + 77.2\text{ M} =
# 247.3$ M FLOPs, within one per cent of $2P = 248.9$ M (the learned position table of 1024 rows
# does no arithmetic). We need $247.3\text{ M} + 4 \times 12 \times 768\,N = 4P = 497.8$ M, so
# $N \approx 6{,}800$ tokens; `lp.step_costs(lp.get_model("gpt2"), "decode", 1, 6700)` agrees
# once the softmax and norms are counted. That is beyond GPT-2's context of 1024 tokens, where
# attention already adds about 15 % (Figure 2).
#
# </details>

# %% slideshow={"slide_type": "skip"} tags=["hide-cell"]
# The worked problems' answers, checked against llmperf.
p13 = lp.get_model("llama-2-13b")
assert p13.param_count() == 13_015_864_320
mistral = lp.get_model("mistral-7b")
assert round(llama.attention_params() / 1e6, 1) == 67.1
assert round(mistral.attention_params() / 1e6, 1) == 41.9
assert round(llama.param_count() / 1e9, 2) == 6.74 and round(mistral.param_count() / 1e9, 2) == 7.24
t3 = lp.step_costs(llama, "prefill", 1, 2000)
assert round(t3.total.flops / 1e13, 2) == 2.80
assert abs((t3["qk"].flops + t3["sv"].flops) / t3.total.flops - 0.075) < 0.0015
gpt2 = lp.get_model("gpt2")
assert abs(lp.step_costs(gpt2, "decode", 1, 6700).total.flops / (2 * gpt2.param_count()) - 2) < 0.03
assert abs(lp.step_costs(gpt2, "decode", 1, 1024).total.flops / (2 * gpt2.param_count()) - 1.15) < 0.01

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Summary
#
# - A decoder-only transformer is an embedding lookup, $L$ identical blocks, a final norm and an
#   LM head. Each block is a self-attention half and a feed-forward half, each pre-normalised
#   with RMSNorm and added back to the residual stream.
# - Parameters: $L(P_{\text{attn}} + 3D\,D_{\text{ff}} + 2D) + D + 2VD$, with $P_{\text{attn}} = 4D^2$ without
#   GQA. For Llama 2 7B this is 6,738,415,616, confirmed by a full-size model built on the `meta`
#   device. The FFN holds about two thirds; GQA and MoE shift the balance further.
# - FLOPs per token: $2P_{\text{layers}} + 2VD + 4LNhd$, which is $2(P - VD) + 4LNhd$ for untied
#   embeddings and $2P + 4LNhd$ for tied ones; close to $2P$ until the context approaches $P/(2LD)$.
# - Prefill is a large matrix-matrix workload and can approach the machine's arithmetic rate
#   (section 1.6 measures how closely); decode multiplies one vector per weight matrix and is
#   limited by memory.
#
# **Exercises:** {doc}`Exercise set 1 </exercises/01_components>` (count parameters of a configuration, FLOPs per
# token, the crossover length, shapes of a block).

# %% [markdown] slideshow={"slide_type": "slide"}
# ## References
#
# ```{bibliography}
# :filter: docname in docnames
# ```
