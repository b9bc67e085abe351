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
# # Chapter 3: State and dependencies
#
# Chapter 2 split a request into a {term}`prefill`, which reads the prompt in one pass, and a
# run of {term}`decode` steps, each of which produces one token. This chapter asks what a decode
# step has to remember from the steps before it, what it costs to remember it, and what
# it cannot start before. The answers explain most of what follows in the book: why
# decode is slow on hardware that is fast at prefill, why memory capacity limits how many
# requests a GPU can serve at once, and why the {term}`KV cache` is the first optimization every
# inference engine implements.
#
# :::{admonition} After this chapter you will be able to
# :class: tip
#
# - say which of the per-token vectors Q, K and V a transformer needs again later, and why
#   causality makes it safe to keep them;
# - show on a real model that generation with a KV cache and generation that recomputes
#   everything produce the same tokens, and predict and measure how their costs grow with
#   the number of generated tokens (quadratic against linear);
# - compute the memory a model needs for its parameters and its KV state, with and without
#   grouped-query attention ({term}`GQA`), and keep GB and GiB apart;
# - draw the dependency graph of prefill and decode, read off its critical path, and say how
#   much parallel work each phase exposes to the hardware.
# :::
#
# The chapter uses a GPU when one is present and runs on the CPU otherwise.

# %% slideshow={"slide_type": "-"}
from functools import partial

import matplotlib.pyplot as plt
import numpy as np
import torch

import llmperf as lp
from llmperf.plots import CRITICAL_NODE_COLOR, critical_path, new_axes, use_style

gib = partial(lp.format_bytes, binary=True)  # bytes in binary units (KiB, MiB, GiB)

use_style()
torch.manual_seed(0)
rng = np.random.default_rng(0)
device = "cuda" if torch.cuda.is_available() else "cpu"
llama = lp.get_model("llama-2-7b")
a10 = lp.get_accelerator("A10")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Notation
#
# The symbols this chapter uses, from the book's table in chapter 0, with the values of the
# running example: Llama 2 7B {cite:p}`touvron2023llama2`, whose shapes come from its
# configuration file {cite:p}`meta2023llama2config`, on an NVIDIA A10 {cite:p}`nvidia_a10`.
#
# | symbol | meaning | Llama 2 7B on an A10 |
# |---|---|---|
# | $L$ | decoder layers | 32 |
# | $D$ | model width, $D = h \cdot d$ | 4096 |
# | $h$, $h_{kv}$ | query heads, key/value heads | 32, 32 |
# | $d$ | width of one head | 128 |
# | $N$ | tokens held in context (prompt plus generated so far) | up to 4096 |
# | $S$, $G$ | prompt length, number of generated tokens | |
# | $b$ | bytes per element (2 for fp16) | 2 |
# | $P$ | parameters | 6,738,415,616 |
# | $\Pi$, $\beta$ | dense peak compute rate, memory bandwidth | 125 TFLOP/s (fp16), 600 GB/s |
# | $C$ | memory capacity | 24 GiB |
#
# We write $x^{(\ell)}_t$ for the hidden vector of token $t$ at the input of layer $\ell$;
# $x^{(0)}_t$ is the token's embedding and $x^{(L)}_t$, after the final norm and LM head,
# gives the logits of the next token.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 3.1 The state a token leaves behind
#
# Each layer begins with three projections of the normalised hidden vector of every token:
#
# $$
# q^{(\ell)}_t = x^{(\ell)}_t W^{(\ell)}_Q, \qquad
# k^{(\ell)}_t = x^{(\ell)}_t W^{(\ell)}_K, \qquad
# v^{(\ell)}_t = x^{(\ell)}_t W^{(\ell)}_V .
# $$
#
# So for every token and every layer there is a query, a key and a value vector. Attention
# then combines them *causally* {cite:p}`vaswani2017attention`: token $t$ looks at itself and at the tokens before it,
# never after,
#
# $$
# o^{(\ell)}_t = \sum_{s \le t} \operatorname{softmax}_s\!\left(\frac{q^{(\ell)}_t \cdot k^{(\ell)}_s}{\sqrt d}\right) v^{(\ell)}_s ,
# $$
#
# per head, followed by the output projection, the residual connection and the
# feed-forward network, all of which act on each token separately. Read the sum with the
# question "who uses what?" in mind:
#
# - the query $q_t$ appears only in the output of token $t$ itself. Once token $t$ has been
#   processed, its query is never read again;
# - the key $k_s$ and value $v_s$ appear in the output of *every later* token $t \ge s$.
#   They are needed again at every future step, for the whole life of the request.
#
# Causality gives a second fact that is just as important: nothing about token $s$ depends
# on tokens after it. By induction over layers, $x^{(\ell)}_s$, and therefore $k^{(\ell)}_s$
# and $v^{(\ell)}_s$, are functions of tokens $0, \dots, s$ only. Appending new tokens never
# changes them. So the keys and values computed once stay valid forever, and a decode step
# that has them at hand only needs to compute the new token's own $q$, $k$ and $v$.

# %% [markdown] slideshow={"slide_type": "fragment"}
# :::{important}
# Only K and V are state: Q is used once and thrown away, while every layer's K and V of
# every earlier token are read by every later step and never change.
# :::

# %% [markdown] slideshow={"slide_type": "-"}
# The lecture {cite:p}`krishnamurthy2024lecture` lists K, Q and V vectors among the memory
# requirements of inference; the argument above is why an implementation keeps only K and V,
# and why the KV cache {cite:p}`lages2023kvcaching` is the first optimization an inference
# engine implements. The cell below checks the
# first fact on one attention head in numpy: the output of the last token needs only its own
# query and the keys and values of all tokens. Section 3.2 checks the second on a real model.

# %% slideshow={"slide_type": "-"}
def causal_attention(q, k, v):
    """Causal softmax attention of one head: q, k, v are (N, d)."""
    scores = q @ k.T / np.sqrt(q.shape[1])
    scores = np.where(np.tril(np.ones_like(scores, dtype=bool)), scores, -np.inf)
    p = np.exp(scores - scores.max(axis=1, keepdims=True))
    return (p / p.sum(axis=1, keepdims=True)) @ v


n_tok, width, d_head = 12, 64, 16
x = rng.standard_normal((n_tok, width))
w_q, w_k, w_v = (rng.standard_normal((width, d_head)) / np.sqrt(width) for _ in range(3))
full = causal_attention(x @ w_q, x @ w_k, x @ w_v)

# The last token's output from its own query and everyone's K and V:
scores = (x[-1] @ w_q) @ (x @ w_k).T / np.sqrt(d_head)
weights = np.exp(scores - scores.max())
last = weights / weights.sum() @ (x @ w_v)

assert np.allclose(last, full[-1])
print("last token from (q_last, all K, all V) equals full attention:", np.allclose(last, full[-1]))

# %% [markdown] slideshow={"slide_type": "subslide"}
# Notice that the query matrix of the earlier tokens was never formed for the last token's
# output: one row of $Q$ against all rows of $K$ and $V$ is enough. That row-of-one shape is
# the decode step, and it returns in section 3.4.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 3.2 Regenerate or retain
#
# Because the computation is deterministic, state need not be kept: a decode step could
# rebuild every key and value from the token ids alone by running the whole sequence through
# the model again. That is generation *without* a KV cache. The alternative keeps the keys
# and values of every layer in memory, the **KV cache**, and feeds the model only the newest
# token. Both must produce the same tokens, since they compute the same function; they differ
# only in how much work they repeat.
#
# We check this on the course's reference model, a small Llama-style transformer built from
# the catalog config `ref-small`, with random weights and greedy sampling, so that the tokens
# are a deterministic function of the prompt.

# %% slideshow={"slide_type": "-"}
from llmperf.measured.cache import KVCache
from llmperf.measured.generate import generate
from llmperf.measured.model import Transformer

ref = lp.get_model("ref-small")
model = Transformer(ref, device=device, seed=0)
print(f"{ref.name}: {ref.n_layers} layers, D = {ref.d_model}, {ref.n_heads} query heads, "
      f"{ref.n_kv_heads} KV heads of d = {ref.d_head}; {ref.param_count():,} parameters")

# %% [markdown] slideshow={"slide_type": "subslide"}
# First the fact that makes a cache exact: appending tokens never changes the keys and values
# of earlier ones, at any layer. A `KVCache` holds the keys and values of every layer in two
# tensors of shape (layers, batch, KV heads, positions, $d$), filled by the model as it runs.
# Prefill 12 tokens into one cache and the same 12 tokens followed by 8 more into another;
# compare the last layer's keys and values at the first 12 positions.

# %% slideshow={"slide_type": "-"}
ids = torch.randint(0, ref.vocab_size, (1, 20), generator=torch.Generator().manual_seed(1)).to(device)
short, long = KVCache(model, batch=1, max_seq_len=12), KVCache(model, batch=1, max_seq_len=20)
with torch.inference_mode():
    model(ids[:, :12], 0, short)
    model(ids, 0, long)
unchanged = (torch.allclose(long.k[-1, :, :, :12], short.k[-1], atol=1e-5)
             and torch.allclose(long.v[-1, :, :, :12], short.v[-1], atol=1e-5))
assert unchanged
print(f"layer {ref.n_layers}: K and V of tokens 0-11 unchanged by appending 8 tokens: {unchanged}")

# %% [markdown] slideshow={"slide_type": "subslide"}
# The comparison allows for rounding in the last bits, since a prefill of 20 tokens runs
# matmuls of a different shape than one of 12. Now generate both ways.

# %% slideshow={"slide_type": "-"} tags=["nbval-ignore-output"]
S, G = 8, 64  # prompt length and tokens to generate
prompt = torch.randint(0, ref.vocab_size, (S,), generator=torch.Generator().manual_seed(0)).tolist()
generate(model, prompt, max_new_tokens=2, use_cache=True)  # warm-up: first calls allocate
generate(model, prompt, max_new_tokens=2, use_cache=False)
cached = generate(model, prompt, max_new_tokens=G, use_cache=True)
recomputed = generate(model, prompt, max_new_tokens=G, use_cache=False)
print("with cache:   ", cached.tokens[0, :16].tolist(), "...")
print("recomputation:", recomputed.tokens[0, :16].tolist(), "...")

# %% slideshow={"slide_type": "-"}
same = torch.equal(cached.tokens, recomputed.tokens)
assert same
print("identical tokens:", same)

# %% [markdown] slideshow={"slide_type": "subslide"}
# A model with random weights has learned nothing and soon repeats itself, but it computes
# the same function both ways, which is all this check needs. The token ids depend on the
# random weights and on the floating-point kernels of the machine, so the book does not
# compare them across machines; the assert that the two lists are identical holds
# everywhere. (The two methods add the same numbers in a different order, so their logits can
# differ in the last bits; with greedy decoding that only matters if two tokens tie almost
# exactly, which does not happen here.)

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### What recomputation costs
#
# Let $T_{\text{pre}}(n)$ be the time of a prefill of $n$ tokens and $T_{\text{dec}}(n)$ the
# time of one decode step with $n$ tokens already in the cache. Generating $G$ tokens from a
# prompt of $S$ tokens costs
#
# $$
# T_{\text{recompute}}(G) = \sum_{i=0}^{G-1} T_{\text{pre}}(S + i),
# \qquad
# T_{\text{cache}}(G) = T_{\text{pre}}(S) + \sum_{i=1}^{G-1} T_{\text{dec}}(S + i - 1).
# $$
#
# Without a cache, step $i$ is a prefill of the prompt plus the $i$ tokens generated so
# far. With one, only the first step is a prefill; every later step pushes one token through.
# In FLOPs, a prefill of $n$ tokens costs about $2Pn$ (chapter 1), so
#
# $$
# \text{FLOP}_{\text{recompute}} \approx 2P \sum_{i=0}^{G-1}(S+i) = 2P\left(GS + \tfrac{G(G-1)}{2}\right),
# \qquad
# \text{FLOP}_{\text{cache}} \approx 2P\,(S + G - 1),
# $$
#
# which are quadratic and linear in $G$. Their ratio grows like $G/2$ once $G \gg S$.
# (The attention term adds $\propto n^2$ per prefill, which makes recomputation cubic for
# very long sequences; at the lengths below it is small.)

# %% [markdown] slideshow={"slide_type": "fragment"}
# :::{important}
# Recomputing state makes generation quadratic in its length; keeping it makes it
# linear, at the price of memory.
# :::

# %% [markdown] slideshow={"slide_type": "-"}
# For Llama 2 7B on the lecture's A10, the {term}`roofline` model of `llmperf` gives both sums for a
# request of 350 prompt tokens and 150 generated ones: `lp.recompute_latency` runs a
# prefill of the whole sequence for every token, `lp.roofline_latency` one prefill and then
# a decode step per token as the cache grows. Both count attention with the lecture's
# standard algorithm, which writes the score matrix to memory and reads it back.

# %% slideshow={"slide_type": "-"}
t_re = lp.recompute_latency(llama, a10, 350, 150).total_s
t_ca = lp.roofline_latency(llama, a10, 350, 150).total_s
print(f"Llama 2 7B on A10, S = 350, G = 150: recompute {t_re:.2f} s, cache {t_ca:.2f} s, "
      f"ratio {t_re / t_ca:.1f}")

# %% slideshow={"slide_type": "skip"} tags=["hide-cell"]
# The paragraph below: the cache wins, by far less than the FLOP ratio of about 128 (problem 3).
flop_ratio = sum(350 + i for i in range(150)) / (350 + 149)
assert 1 < t_re / t_ca < flop_ratio / 10
assert round(llama.weight_bytes("fp16") / 1e9, 1) == 13.5

# %% [markdown] slideshow={"slide_type": "subslide"}
# On the A10 recomputation is not as hopeless as the FLOP ratio suggests, because
# each cached decode step is {term}`memory bound`: it reads all 13.5 GB of weights to do the work of
# one token, while a recomputing prefill does the work of hundreds of tokens for about the
# same weight traffic. The cache wins all the same, and wins more with every token.

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### Predict, then measure
#
# Now the same two sums on this machine. `measure_host()` measures the peak matmul rate $\Pi$
# and the memory bandwidth $\beta$ of the machine the notebook runs on and returns an
# `Accelerator`, on whose roofline the reference model's cost tables can be placed, step by
# step: `model.step_costs(phase, batch, seq_len).on(host).time_s`. The model's cost tables
# count attention the way it runs it (`model.attention_kernel`): its prefill calls one fused causal kernel that never writes the
# score matrix to memory, its decode step two matmuls and a softmax. Each generation records
# the time at which every token became available, so one run gives the whole curve against
# generated length. We run each way five times and keep, step by step, the fastest of the five:
# the roofline is an optimistic estimate, and interruptions by other programs only ever add
# time, so the minimum is the measurement to set beside it. The table also prints the total of
# the median run and the range of the five totals, which show how much the runs scattered. The
# machine's roofline is itself measured, three times, and the cells keep the median peak and
# the median bandwidth.

# %% slideshow={"slide_type": "-"} tags=["nbval-ignore-output"]

from IPython.display import display

from llmperf.measured.host import median_host
from llmperf.measured.load import watch_load
from llmperf.measured.measure import benchmark, measure_host

dtype = "fp32"
with watch_load() as load:
    probes = [measure_host(dtypes=(dtype,), device=device, progress=False) for _ in range(3)]
peaks, bandwidths = [a.peak(dtype) for a in probes], [a.mem_bandwidth for a in probes]
host = median_host(probes)
print(host.name, f"peak Pi = {lp.format_flop_rate(host.peak(dtype))} (three probes "
      f"{lp.format_flop_rate(min(peaks))} to {lp.format_flop_rate(max(peaks))}), "
      f"bandwidth beta = {lp.format_bandwidth(host.mem_bandwidth)} (three probes "
      f"{lp.format_bandwidth(min(bandwidths))} to {lp.format_bandwidth(max(bandwidths))})")
print(load.note())

# %% slideshow={"slide_type": "-"} tags=["nbval-ignore-output"]
pre, dec = model.attention_kernel["prefill"], model.attention_kernel["decode"]  # "fused", "standard"
lengths = np.arange(1, G + 1)
# Time until token G is available: the per-step roofline times, summed step by step.
pred_re = np.cumsum([model.step_costs("prefill", 1, S + i).on(host).time_s for i in range(G)])
pred_ca = np.cumsum([model.step_costs("prefill", 1, S).on(host).time_s]
                    + [model.step_costs("decode", 1, S + i - 1).on(host).time_s for i in range(1, G)])
# The last points are the library's totals for the whole request.
assert np.isclose(pred_re[-1], lp.recompute_latency(ref, host, S, G, dtype=dtype, attention=pre).total_s)
assert np.isclose(pred_ca[-1] - pred_ca[0],
                  lp.roofline_latency(ref, host, S, G, dtype=dtype, attention=dec).decode_s)


def step_times(use_cache, runs=5):
    """Seconds of each of the G steps (rows: runs), from the timestamps of `runs` generations."""
    gens = [generate(model, prompt, max_new_tokens=G, use_cache=use_cache) for _ in range(runs)]
    assert all(torch.equal(gen.tokens, cached.tokens) for gen in gens)
    return np.array([np.diff(gen.timestamps_s, prepend=0.0) for gen in gens])


with watch_load() as load:
    steps_re, steps_ca = step_times(use_cache=False), step_times(use_cache=True)
meas_re, meas_ca = np.cumsum(steps_re.min(axis=0)), np.cumsum(steps_ca.min(axis=0))  # fastest steps
totals = {"recompute": steps_re.sum(axis=1), "KV cache": steps_ca.sum(axis=1)}

times = ("recompute predicted", "recompute measured", "cache predicted", "cache measured")
display(lp.Table(["G", *times[:2], "recompute ratio", *times[2:], "cache ratio"],
                 [(g, pred_re[g - 1], meas_re[g - 1], meas_re[g - 1] / pred_re[g - 1],
                   pred_ca[g - 1], meas_ca[g - 1], meas_ca[g - 1] / pred_ca[g - 1])
                  for g in (1, 16, 32, 48, 64)],
                 title="Time until token G is available: roofline prediction, fastest steps of "
                       "five runs, ratio",
                 formats={**dict.fromkeys(times, lp.format_seconds), "recompute ratio": ".1f",
                          "cache ratio": ".1f"}))
for way, run_totals in totals.items():
    print(f"{way}, all {G} tokens, five runs: median {lp.format_seconds(float(np.median(run_totals)))}, "
          f"from {lp.format_seconds(run_totals.min())} to {lp.format_seconds(run_totals.max())}")


def growth(step_seconds):
    """Mean of the last 16 steps over the mean of steps 1 to 16 (step 0 is the prefill)."""
    return float(np.mean(step_seconds[-16:]) / np.mean(step_seconds[1:17]))


print(f"later steps against early ones (last 16 / steps 1-16): recompute measured "
      f"x{growth(np.diff(meas_re, prepend=0.0)):.2f}, predicted x{growth(np.diff(pred_re, prepend=0.0)):.2f}; "
      f"cache measured x{growth(np.diff(meas_ca, prepend=0.0)):.2f}, "
      f"predicted x{growth(np.diff(pred_ca, prepend=0.0)):.2f}")
off_re, off_ca = meas_re[-1] / pred_re[-1], meas_ca[-1] / pred_ca[-1]
print(f"what the cache buys at G = {G} (recompute / cache): predicted "
      f"{pred_re[-1] / pred_ca[-1]:.1f}, measured {meas_re[-1] / meas_ca[-1]:.1f}, measured / "
      f"predicted {off_re / off_ca:.2f}; each time alone, measured / predicted: recompute "
      f"{off_re:.1f}, cache {off_ca:.1f}")
print(load.note())

# %% slideshow={"slide_type": "fragment"}
use_style()
fig, axes = plt.subplots(2, 1, figsize=(7.0, 7.5), sharex=True, layout="constrained")
for ax, scale in zip(axes, ("linear", "log")):
    ax.plot(lengths, meas_re * 1e3, "o", ms=3, color="C3", label="recompute, measured")
    ax.plot(lengths, pred_re * 1e3, "-", color="C3", alpha=0.6, label="recompute, roofline prediction")
    ax.plot(lengths, meas_ca * 1e3, "o", ms=3, color="C0", label="KV cache, measured")
    ax.plot(lengths, pred_ca * 1e3, "-", color="C0", alpha=0.6, label="KV cache, roofline prediction")
    ax.set_yscale(scale)
    ax.set_ylabel("time until token G (ms)")
    ax.set_title(f"Recomputation against a KV cache ({scale} time axis)")
axes[1].set_xlabel("generated tokens G")
fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=2,
           fontsize="medium")
plt.show()

# %% [markdown] slideshow={"slide_type": "-"}
# **Figure 1.** Time until the $G$-th generated token is available, for the reference model
# on this machine, from a prompt of 8 tokens; the same data on a linear time axis (top) and a
# logarithmic one (bottom), where a constant factor between prediction and measurement is a
# constant vertical distance. Dots are measured (the fastest of five runs at every step),
# lines are the `llmperf` roofline prediction with this machine's measured $\Pi$ and
# $\beta$. A curve whose steps get longer bends upward; a curve whose steps stay the same is a
# straight line.
#
# Compare the *shapes* first. Recomputation's step $i$ is a prefill of $S + i$ tokens, so its
# steps grow once those prefills are {term}`compute bound` on the machine; a cached step pushes one
# token whatever $G$ is. The cell printed how much later steps cost than early ones, each way,
# measured and predicted: a factor well above one is the upward bend, a factor near one the
# straight line. Then the gap, which the ratio columns print. The roofline model is an
# optimistic estimate: it assumes every operator runs at the machine's peak FLOP rate or at its
# peak bandwidth, and a model this small falls short of both, so measured times above the
# prediction are what to expect. Each step runs a few dozen small operators (four layers of
# norms, projections, RoPE, attention, SwiGLU) whose fixed cost, a Python call and a kernel
# launch or thread wake-up each, is comparable to their work; and the skinny matrices of a
# decode step or a short prefill reach only a fraction of the peak that `measure_host()` found
# with large square ones. Because these overheads inflate both curves, the ratio of the two
# (what the cache buys) can come closer to its prediction than either time does: the printed
# line about what the cache buys sets the three factors side by side. On a machine shared with other work, taking
# the fastest run of each step removes most interruptions, but not a machine that stays busy
# for the whole cell (the load note says whether it was), and the range of the five totals
# shows how much the runs moved.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 3.3 Memory: parameters plus KV state
#
# A server keeps two things in accelerator memory for the whole life of a request: the
# parameters, shared by all requests, and the KV state of each request
# {cite:p}`pope2023scaling`. Per token, every
# layer stores one key and one value vector of width $D$, each element $b$ bytes:
#
# $$
# \text{KV bytes} = \underbrace{2}_{K,\,V} \cdot b \cdot L \cdot D \cdot N
# = 2 \cdot 2 \cdot L \cdot D \cdot N \text{ in fp16.}
# $$
#
# For Llama 2 7B at its full context of $N = 4096$:
#
# $$
# 2 \cdot 2 \cdot 32 \cdot 4096 \cdot 4096 = 2^{1+1+5+12+12} = 2^{31} = 2{,}147{,}483{,}648 \text{ bytes.}
# $$
#
# That is exactly 2 GiB (gibibytes, $2^{30}$ bytes each), or 2.15 GB (gigabytes, $10^9$
# bytes each). The two units differ by 7%, and both appear on one datasheet: bandwidths are
# decimal, but the "24 GB" of an A10's memory is 24 GiB, because memory chips come in binary
# sizes. `llmperf` stores capacities that way, and this book always says which unit it means.

# %% slideshow={"slide_type": "-"}
kv_hand = 2 * 2 * llama.n_layers * llama.d_model * 4096
assert kv_hand == llama.kv_cache_bytes(tokens=4096, dtype="fp16") == 2 * lp.GiB
print(f"Llama 2 7B, 4096 tokens: {llama.kv_cache_bytes(4096):,} bytes "
      f"= {gib(llama.kv_cache_bytes(4096))} = {lp.format_bytes(llama.kv_cache_bytes(4096))}")
print(f"per token: {llama.kv_bytes_per_token():,} bytes = {gib(llama.kv_bytes_per_token())}")
print(f"parameters in fp16: {lp.format_bytes(llama.weight_bytes('fp16'))}")

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### Grouped-query attention
#
# The formula charges $D$ numbers per token per layer for each of K and V because Llama 2 7B
# has as many key/value heads as query heads. Grouped-query attention (GQA)
# {cite:p}`ainslie2023gqa` lets a group of query heads share one key/value head. With
# $h_{kv}$ key/value heads of width $d$, the state per token per layer is $2\,h_{kv}\,d$ numbers instead of $2\,h\,d$:
#
# $$
# \text{KV bytes} = 2 \cdot b \cdot L \cdot h_{kv} \cdot d \cdot N .
# $$
#
# Mistral 7B and Llama 3 8B have the same $L = 32$ and $D = 4096$ as Llama 2 7B but only
# $h_{kv} = 8$ key/value heads for 32 query heads: a quarter of the KV state. Llama 2 70B,
# with 80 layers of width 8192 but 8 key/value heads, stores *less* per token than Llama 2 7B.
# Multi-query attention {cite:p}`shazeer2019mqa` is the extreme $h_{kv} = 1$. Mistral 7B
# also attends only to a sliding window of the last 4,096 tokens, so its cache, a rolling
# buffer of that many tokens per sequence, stops growing there (`ModelConfig.sliding_window`;
# `kv_cache_bytes` counts it).

# %% [markdown] slideshow={"slide_type": "fragment"}
# :::{important}
# KV state grows linearly with context and batch, and GQA divides it by $h / h_{kv}$.
# :::

# %% slideshow={"slide_type": "-"}
names = ["llama-2-7b", "llama-2-13b", "llama-2-70b", "mistral-7b", "llama-3-8b", "llama-3-70b",
         "mixtral-8x7b", "gpt2-xl"]
rows = []
for name in names:
    m = lp.get_model(name)
    hand = 2 * 2 * m.n_layers * m.n_kv_heads * m.d_head
    assert hand == m.kv_bytes_per_token("fp16")
    rows.append((m.name, m.n_layers, m.n_heads, m.n_kv_heads, m.d_head, m.kv_bytes_per_token(),
                 m.kv_cache_bytes(4096), m.weight_bytes("fp16")))
lp.Table(["model", "L", "h", "h_kv", "d", "KV per token", "KV at 4096 tokens", "weights"], rows,
         title="KV state per sequence in fp16 (binary units) and fp16 weights (decimal)",
         formats={"KV per token": gib, "KV at 4096 tokens": gib, "weights": lp.format_bytes})

# %% slideshow={"slide_type": "fragment"}
contexts = np.logspace(np.log10(256), np.log10(131072), 40)
groups = {}  # models with the same KV bytes per token and window share a line
for name in names[:-1]:
    m = lp.get_model(name)
    groups.setdefault((m.kv_bytes_per_token(), m.sliding_window or 0), []).append(m)
ax = new_axes("KV cache of one sequence (fp16)", "context length N (tokens)", "KV cache (GiB)",
             figsize=(7.0, 6.4))
for i, (_, ms) in enumerate(sorted(groups.items(), reverse=True)):
    m = ms[0]
    gqa = m.n_kv_heads < m.n_heads
    window = f", window {m.sliding_window:,}" if m.sliding_window else ""
    ax.loglog(contexts, [m.kv_cache_bytes(int(n)) / lp.GiB for n in contexts], "--" if gqa else "-",
              color=f"C{i}", label=f"{', '.join(x.name for x in ms)} (L = {m.n_layers}, "
                                   f"h_kv = {m.n_kv_heads}{window})")
mha_70b = lp.get_model("llama-2-70b").with_(name="llama-2-70b without GQA", n_kv_heads=64)
ax.loglog(contexts, contexts * mha_70b.kv_bytes_per_token() / lp.GiB, ":", color="grey",
          label="llama-2-70b if it had 64 KV heads (no GQA)")
free = a10.mem_capacity - llama.weight_bytes("fp16")
ax.axhline(free / lp.GiB, color="black", lw=0.8, label="A10's 24 GiB less Llama 2 7B's fp16 weights")
ax.axvline(4096, color="grey", lw=0.5, ls=":")
ax.figure.set_layout_engine("constrained")
ax.figure.legend(*ax.get_legend_handles_labels(), loc="outside lower center", fontsize="medium")
plt.show()

# %% [markdown] slideshow={"slide_type": "-"}
# **Figure 2.** KV cache of a single sequence against its context length, in GiB, for
# catalog models (log-log). Every line is straight with slope one, the state linear in $N$,
# except Mistral 7B's, which turns flat at its 4,096-token window. Solid lines are models with full multi-head attention, dashed ones use GQA; at equal
# size the GQA models sit a factor $h/h_{kv}$ lower (four for the 7-8B models, eight for
# Llama 2 70B against a hypothetical multi-head version of itself). The black horizontal line
# is what an A10 has left once Llama 2 7B's fp16 weights are loaded: a single Llama 2 7B sequence
# crosses it at the token count the next code cell prints.

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### How many sequences fit
#
# How many tokens of KV state fit beside the weights? The memory left, divided by the bytes
# per token: $\lfloor (C - \text{weights} - \text{reserve}) / \text{KV bytes per token} \rfloor$,
# which `lp.max_batch_size` computes for sequences of any length (here of one token, and of
# 4096). The reserve is memory the model cannot use. The first pair of columns takes the A10's
# full 24 GiB {cite:p}`nvidia_a10`. The second takes what `nvidia-smi` reports as the total
# memory of an A10, 23,028 MiB (`nvidia-smi --query-gpu=memory.total --format=csv` prints it).
# The missing gigabyte and a half is not kept by the driver: it holds error-correcting codes.
# The A10's GDDR6 memory has no spare chips for ECC, so with ECC on (the default on
# data-center parts) the codes are stored inline and take 1/16 of the memory: "on GPUs with
# GDDR memory with ECC enabled the available DRAM is reduced by 6.25 %", in the words of the
# *CUDA C++ Best Practices Guide* {cite:p}`nvidia_cuda_best_practices`. The catalog knows
# it: `a10.usable_capacity(ecc=True)` is
# $24{,}576 \times 15/16 = 23{,}040$ MiB, within a few MiB of what `nvidia-smi` shows (and what
# `lp.max_batch_size` counts unless given `ecc=False`, as the 24 GiB columns are); a T4 shows
# 15,360 MiB of its 16 GiB the same way. Turn ECC off (`nvidia-smi -e 0`, then a reboot) and the
# whole 24 GiB is usable, at the price of silent bit errors going undetected. HBM parts (A100,
# H100, H200) keep their ECC bits in dedicated storage and lose no capacity to it.

# %% slideshow={"slide_type": "-"}
usable = a10.usable_capacity(ecc=True)  # 15/16 of the memory: inline ECC takes the rest
smi_total = 23_028 * lp.MiB  # observed: "Memory-Usage ... / 23028MiB" in nvidia-smi on an A10, ECC on
assert usable == a10.mem_capacity * 15 / 16 and abs(usable - smi_total) < 16 * lp.MiB
ecc = a10.mem_capacity - smi_total  # what the observed total leaves out
print(f"A10: C = {gib(a10.mem_capacity)} = {lp.format_bytes(a10.mem_capacity)}; with ECC on, "
      f"usable_capacity {usable / lp.MiB:,.0f} MiB, nvidia-smi {smi_total / lp.MiB:,.0f} MiB "
      f"= {lp.format_bytes(smi_total)}; ECC takes {lp.format_bytes(ecc)}")
lp.Table(["model", "tokens (24 GiB)", "sequences of 4096 (24 GiB)",
          "tokens (23,028 MiB)", "sequences of 4096 (23,028 MiB)"],
         [(name, lp.max_batch_size(name, a10, 1, ecc=False), lp.max_batch_size(name, a10, 4096, ecc=False),
           lp.max_batch_size(name, a10, 1, reserved_bytes=ecc, ecc=False),
           lp.max_batch_size(name, a10, 4096, reserved_bytes=ecc, ecc=False))
          for name in ("llama-2-7b", "mistral-7b")],
         title="KV state that fits beside the fp16 weights on an A10")

# %% [markdown] slideshow={"slide_type": "subslide"}
# The lecture, after Baseten's guide {cite:p}`shenoy2023baseten`, counts "about 5" sequences
# of 4096 tokens for Llama 2 7B on an A10, and that is
# what 24 GiB gives on paper; on a real A10, 4 fit. The difference is not in the arithmetic
# of the KV cache but in how much memory is really there. The cell below
# divides the free memory by one sequence's 2 GiB for four readings of the capacity: the full
# 24 GiB, the usable memory `nvidia-smi` reports, 24 GB read as decimal, and the full
# capacity less a reserve of 2 GB for the runtime and the activations. The footer is the
# slack: the memory left over once five sequences are placed, so any reserve larger than it
# leaves four.

# %% slideshow={"slide_type": "-"}
seq_bytes = llama.kv_cache_bytes(4096)
free = a10.mem_capacity - llama.weight_bytes("fp16")
readings = {"24 GiB (the datasheet's 24 GB)": 0.0,
            "usable per nvidia-smi with ECC on (23,028 MiB)": ecc,
            "24 GB read as 24e9 bytes": a10.mem_capacity - 24e9,
            "24 GiB less 2 GB for runtime and activations": 2e9}
rows = []
for label, reserve in readings.items():
    fits = lp.max_batch_size(llama, a10, 4096, reserved_bytes=reserve, ecc=False)
    exact = (free - reserve) / seq_bytes
    assert fits == int(exact)
    rows.append((label, free - reserve, exact, fits))
on_paper = lp.max_batch_size(llama, a10, 4096, ecc=False)
slack = free - on_paper * seq_bytes
assert lp.max_batch_size(llama, a10, 4096, reserved_bytes=slack * 1.001, ecc=False) == on_paper - 1
lp.Table(["capacity read as", "free beside the weights", "free / 2 GiB", "sequences of 4096"], rows,
         title="Llama 2 7B on an A10: sequences of 4096 tokens for four readings of the capacity",
         formats={"free beside the weights": lp.format_bytes, "free / 2 GiB": ".2f"},
         footer=[(f"slack after {on_paper} sequences (ECC alone takes {lp.format_bytes(ecc)})",
                  slack, None, None)])

# %% [markdown] slideshow={"slide_type": "subslide"}
# So 24 GiB holds five sequences with a little room to spare, but less room than ECC
# takes: on a real A10 with ECC on, four fit, just. Reading the datasheet's GB as decimal also gives four,
# by a different route; a server that reserves memory for its runtime and activations, as
# every engine does, gets four whichever way the capacity is read. The token budget is shared
# by all requests in flight, which is why chapter 5's question, how large a batch can be, is a
# memory question first.

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### Predict, then measure: the reference model's cache
#
# A `KVCache` preallocates room for `batch` sequences of up to `max_seq_len` tokens (by
# default the model's), the way production engines reserve memory ahead of time. The
# formula predicts its size exactly; `.nbytes`, the size of the tensors it allocated, says
# what it really is.

# %% slideshow={"slide_type": "-"}
cache = KVCache(model, batch=4)
element = torch.tensor([], dtype=model.dtype).element_size()
predicted = ref.kv_cache_bytes(tokens=cache.max_seq_len, batch=cache.batch,
                               dtype={4: "fp32", 2: "bf16"}[element])
print(f"predicted {predicted:,} bytes, allocated {cache.nbytes:,} bytes "
      f"({cache.batch} x {cache.max_seq_len} tokens, {element}-byte elements)")
assert cache.nbytes == predicted

# %% [markdown] slideshow={"slide_type": "subslide"}
# Here prediction and measurement agree to the byte: memory needs no roofline, only
# counting. Real engines add a little on top (allocation granularity, the pages of a paged
# cache, {term}`PagedAttention`, chapter 6), but the bulk is this formula.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 3.4 Dependencies
#
# The lecture lists three dependencies of a decode step:
#
# 1. **across layers**: the output of layer $\ell$ is the input of layer $\ell + 1$, so the
#    layers of one token run one after another;
# 2. **across tokens, through the state**: at layer $\ell$, token $t$ needs
#    $k^{(\ell)}_s, v^{(\ell)}_s$ for every $s < t$, which were produced from
#    $x^{(\ell-1)}_s$, one layer down;
# 3. **through the output**: the input of decode step $t + 1$ is the token that step $t$
#    sampled from the last layer's output.
#
# In the prefill all tokens of the prompt are known from the start, so dependency 3 is
# absent. Write node $(t, \ell)$ for "layer $\ell$ of token $t$". In the prefill, node
# $(t, \ell)$ waits for nodes $(s, \ell-1)$ with $s \le t$: every token's layer $\ell$ can
# run as soon as layer $\ell - 1$ is done for the whole prompt, and all tokens of a layer run
# at once. In decode, node $(t+1, 1)$ also waits for node $(t, L)$, because the token it
# embeds is not known before the last layer of the previous token has run.
#
# The **critical path** is the longest chain of nodes that must run one after another; no
# amount of hardware makes a computation finish faster than its critical path. Counting
# layer evaluations:
#
# $$
# \text{critical path}_{\text{prefill}}(S) = L, \qquad
# \text{critical path}_{\text{decode}}(G) = (G - 1) \cdot L .
# $$
#
# The prefill's path is as deep as the model, whatever the prompt length. Of $G$ generated
# tokens the first comes out of the prefill (the book's convention since chapter 2), and each
# of the other $G - 1$ needs a decode step of $L$ layers that waits for the token before it,
# so decode's path grows with every token. The figure draws both.

# %% slideshow={"slide_type": "fragment"}
layers, G_fig = 4, 6  # the decode panel: the G - 1 = 5 steps that follow the prefill
assert len(critical_path(5, layers, decode=False)) == layers
assert len(critical_path(G_fig - 1, layers, decode=True)) == (G_fig - 1) * layers
fig, (ax_p, ax_d) = plt.subplots(2, 1, figsize=(7.0, 7.6), layout="constrained")
lp.plot_dependency_graph(ax_p, tokens=5, layers=layers, decode=False, title="prefill of 5 tokens")
lp.plot_dependency_graph(ax_d, tokens=G_fig - 1, layers=layers, decode=True,
                         title=f"G − 1 = {G_fig - 1} decode steps")
fig.legend(handles=[plt.Line2D([], [], color="black", lw=0.8, label="same token, next layer"),
                    plt.Line2D([], [], color="C0", lw=0.8, label="K, V of an earlier token"),
                    plt.Line2D([], [], color="C3", lw=1.8, label="critical path"),
                    plt.Line2D([], [], ls="", marker="o", ms=9, mec="black", color=CRITICAL_NODE_COLOR,
                               label="node on the critical path")],
           loc="outside lower center", ncol=2, fontsize="medium")
plt.show()

# %% [markdown] slideshow={"slide_type": "-"}
# **Figure 3.** The dependency graph of a 4-layer model over 5 tokens. Each circle is one
# layer of one token. Black arrows: the same token's next layer. Blue arrows: the keys and
# values of earlier tokens, computed from their outputs one layer down and read by attention.
# Red arrows (decode only): the token sampled from the last layer becomes the next step's
# input. Shaded: the critical path. In the prefill (top) every column of a row can run at
# once, and the longest chain is one column, $L = 4$ layers deep. In decode (bottom) each
# column is one decode step of a request that generates $G = 6$ tokens, the first of which
# came out of the prefill; the red arrows chain the $G - 1 = 5$ columns into a single path
# through all 20 nodes, $(G - 1) \cdot L$. (The prompt's own keys and values, which every
# decode step also reads, are left out of the drawing.)
#
# The blue arrows are why decode needs its cache and the red arrows are why it is slow: a
# cache removes the recomputation behind the blue arrows, but nothing removes the red ones.
# {term}`Speculative decoding <speculative decoding>` (chapter 8) is the technique in this book that attacks them, by
# guessing several tokens ahead and checking them in a prefill-like pass.

# %% slideshow={"slide_type": "-"}
S_demo, G_demo = 2048, 512
print(f"Llama 2 7B, prompt of {S_demo} tokens: prefill critical path = {llama.n_layers} layers deep")
print(f"Llama 2 7B, {G_demo} generated tokens: decode critical path = (G - 1) x L "
      f"= {G_demo - 1} x {llama.n_layers} = {(G_demo - 1) * llama.n_layers:,} layer evaluations")

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### How much parallel work each phase exposes
#
# The other side of the critical path is the work available at each point on it. In the
# prefill, every matmul of a layer multiplies a matrix of $S$ rows (one per prompt token)
# by a weight matrix: $S$ rows share each weight read from memory. In decode the same matmul
# has one row. The FLOPs per byte of weights therefore scale with the row count:
# for $X\,(N \times K)$ times $W\,(K \times M)$ in fp16, the {term}`arithmetic intensity` is
#
# $$
# I = \frac{2NKM}{2(NK + KM + NM)} \approx N \quad (N \ll K, M),
# $$
#
# about one FLOP per byte at $N = 1$, growing with $N$ (to 1024 for $N = 2048$ rows and a
# $4096 \times 4096$ weight, where $N$ is no longer small). `lp.step_costs` gives the whole table; here are the rows per matmul and the
# intensity of Llama 2 7B's query projection and FFN in both phases:

# %% slideshow={"slide_type": "-"}
rows_pre = lp.step_costs(llama, "prefill", batch=1, seq_len=S_demo).on(a10)
rows_dec = lp.step_costs(llama, "decode", batch=1, seq_len=S_demo).on(a10)
print(f"A10 ridge point I* = Pi / beta: {a10.ridge_point('fp16'):.1f} FLOP/B")
print(f"prefill time per prompt token {lp.format_seconds(rows_pre.time_s / S_demo)}, "
      f"decode time per token {lp.format_seconds(rows_dec.time_s)}")
lp.Table(["phase", "rows per matmul", "q_proj FLOP/B", "ffn_up FLOP/B", "step FLOP", "A10 time"],
         [(label, n, step["q_proj"].intensity, step["ffn_up"].intensity, step.total.flops, step.time_s)
          for label, step, n in (("prefill", rows_pre, S_demo), ("decode", rows_dec, 1))],
         title=f"Llama 2 7B in fp16, {S_demo} tokens of prompt or of cache",
         formats={"q_proj FLOP/B": ".1f", "ffn_up FLOP/B": ".1f", "step FLOP": lp.format_flops,
                  "A10 time": lp.format_seconds})

# %% slideshow={"slide_type": "skip"} tags=["hide-cell"]
# The paragraph below, from the tables above.
ridge = a10.ridge_point("fp16")
assert all(rows_pre[r].intensity > 4 * ridge for r in ("q_proj", "ffn_up"))
assert all(abs(rows_dec[r].intensity - 1) < 0.01 for r in ("q_proj", "ffn_up"))
assert rows_dec.time_s / (rows_pre.time_s / S_demo) > 100

# %% [markdown] slideshow={"slide_type": "subslide"}
# With 2048 rows the projections sit far above the A10's {term}`ridge point` and run
# compute bound;
# with one row they sit near one FLOP per byte, far below it, and run at the speed of memory.
# Per token, the prefill is more than a hundred times cheaper than a decode step,
# although the arithmetic per token is the same. This is chapter 4's subject; the point here
# is where it comes from.

# %% [markdown] slideshow={"slide_type": "fragment"}
# :::{important}
# The prefill exposes $S$ tokens of independent work at every layer, decode exposes one,
# because its next token does not exist yet.
# :::

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### Predict, then measure: one prefill against many decode steps
#
# Take a prompt of $S$ tokens and feed it to the reference model two ways: as one prefill,
# and token by token as $S$ decode steps, the way a model without a prefill phase would
# have to. Both leave the same cache behind. The roofline model predicts the ratio of
# the two times, counting attention as the model runs it (the fused kernel for the prefill,
# the decode kernel for every one-token step); the measurement checks it. Each is timed seven
# times, and the table shows the fastest run (`min_s`), for the reason given in section 3.2:
# interruptions by other programs only add time, and the roofline is an optimistic estimate.
# Below the table the cell prints how much the seven runs of each scattered (their IQR as a
# share of their median).

# %% slideshow={"slide_type": "-"} tags=["nbval-ignore-output"]
def one_prefill(tokens, cache):
    model(tokens, 0, cache, last_only=True)  # logits of the last token only, as in generation


def token_by_token(tokens, cache):
    for pos in range(tokens.shape[1]):
        model(tokens[:, pos:pos + 1], pos, cache)


sweep = (4, 16, 48)
pre_pred, pre_meas, seq_pred, seq_meas, spreads = [], [], [], [], []
with torch.inference_mode(), watch_load() as load:
    for n in sweep:
        tokens = torch.randint(0, ref.vocab_size, (1, n), device=device)
        cache = KVCache(model, batch=1, max_seq_len=n)  # each run overwrites it from position 0
        pre_pred.append(model.step_costs("prefill", 1, n).on(host).time_s)
        # The first token finds an empty cache; like every one-token forward, it runs the decode kernel.
        seq_pred.append(lp.prefill_time(ref, host, 1, dtype=dtype, attention=dec)
                        + sum(model.step_costs("decode", 1, p).on(host).time_s for p in range(1, n)))
        one = benchmark(partial(one_prefill, tokens, cache), warmup=1, repeat=7, device=device)
        steps = benchmark(partial(token_by_token, tokens, cache), warmup=1, repeat=7, device=device)
        pre_meas.append(one.min_s)
        seq_meas.append(steps.min_s)
        spreads += [one.spread, steps.spread]
times = ("prefill predicted", "prefill measured", "S decodes predicted", "S decodes measured")
display(lp.Table(["S", *times, "ratio predicted", "ratio measured"],
                 [(n, pp, pm, sp, sm, sp / pp, sm / pm)
                  for n, pp, pm, sp, sm in zip(sweep, pre_pred, pre_meas, seq_pred, seq_meas)],
                 title="A prompt of S tokens as one prefill or as S one-token steps (fastest of 7 runs)",
                 formats={**dict.fromkeys(times, lp.format_seconds),
                          "ratio predicted": ".1f", "ratio measured": ".1f"}))
ratios = [sm / pm for pm, sm in zip(pre_meas, seq_meas)]
print(f"IQR of the seven runs: {min(spreads):.0%} to {max(spreads):.0%} of their median")
print(f"measured ratio grows with S at every step: {all(np.diff(ratios) > 0)}")
print(load.note())

# %% slideshow={"slide_type": "fragment"}
ax = new_axes("Feeding S prompt tokens: one prefill against S decode steps",
              "prompt length S (tokens)", "time (ms)")
ax.loglog(sweep, np.array(pre_meas) * 1e3, "o-", color="C2", label="one prefill, measured")
ax.loglog(sweep, np.array(pre_pred) * 1e3, "--", color="C2", label="one prefill, roofline prediction")
ax.loglog(sweep, np.array(seq_meas) * 1e3, "o-", color="C1", label="S decode steps, measured")
ax.loglog(sweep, np.array(seq_pred) * 1e3, "--", color="C1", label="S decode steps, roofline prediction")
ax.set_xticks(sweep, [str(n) for n in sweep])
ax.xaxis.set_minor_locator(plt.NullLocator())
ax.figure.set_layout_engine("constrained")
ax.figure.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=2,
                 fontsize="medium")
plt.show()

# %% [markdown] slideshow={"slide_type": "-"}
# **Figure 4.** Time to push a prompt of $S$ tokens through the reference model on this
# machine, as one prefill (green) or as $S$ sequential single-token steps (orange), measured
# (dots) and predicted by the roofline model (dashed), on log-log axes. The predicted
# sequential line has slope one: $S$ steps, each paying to read all the weights. The predicted
# prefill line is much flatter for short prompts, where reading the weights once dominates, and
# steepens where the prefill turns compute bound on this machine, if it does within this range.
#
# The gap between the two lines is the value of parallel work. The prediction has it growing
# with $S$; the ratio columns, and the line printed under the table, say whether the measurement
# does too. Where the measured ratio departs from the predicted
# one, two effects pull in opposite directions. The fixed overhead of each forward call,
# which the roofline model leaves out, is paid $S$ times by the sequential path and once by
# the prefill, so it makes the measured ratio *larger*. On a CPU, a small model's weights may
# partly stay in the last-level cache from one step to the next, so a decode step reads them
# faster than the DRAM bandwidth `measure_host()` measured, which makes the sequential path
# cheaper and the ratio *smaller*. The table shows which wins on this machine.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Worked problems
#
# **Problem 1.** How many bytes of KV state does one token leave in Llama 2 13B
# ($L = 40$, $D = 5120$, full multi-head attention) in fp16? How many tokens fit in 10 GB?
#
# <details><summary>Answer</summary>
#
# $2 \cdot 2 \cdot 40 \cdot 5120 = 819{,}200$ bytes, exactly 800 KiB. Ten GB are
# $10^{10}$ bytes, so $\lfloor 10^{10} / 819{,}200 \rfloor = 12{,}207$ tokens: three
# sequences of 4096 tokens do not quite fit.
#
# </details>
#
# **Problem 2.** Llama 3 8B has $L = 32$, 32 query heads and 8 key/value heads of $d = 128$.
# What is its KV cache at its full context of 8192 tokens in fp16, and what would it be
# without GQA?
#
# <details><summary>Answer</summary>
#
# $2 \cdot 2 \cdot 32 \cdot 8 \cdot 128 \cdot 8192 = 2^{30}$ bytes, exactly 1 GiB. With 32
# key/value heads it would be four times as much, 4 GiB: Llama 2 7B's 512 KiB per token
# (same $L$ and $D$) over twice its context.
#
# </details>
#
# **Problem 3.** Without a cache, how many tokens in total does the model process to
# generate $G = 150$ tokens from a prompt of $S = 350$? With a cache? What is the ratio of
# FLOPs, ignoring attention's quadratic term?
#
# <details><summary>Answer</summary>
#
# Without: $\sum_{i=0}^{149}(350 + i) = 150 \cdot 350 + 149 \cdot 150/2 = 52{,}500 + 11{,}175
# = 63{,}675$ token passes. With: $350 + 149 = 499$. The ratio is $63{,}675 / 499 \approx 128$.
# The time ratio on an A10 is much smaller (computed in section 3.2), because decode steps
# are memory bound: the cache saves FLOPs that were cheap to begin with, and pays for each
# step with a full read of the weights.
#
# </details>
#
# **Problem 4.** A 32-layer model prefills a prompt of 2048 tokens and then generates 512.
# How many layer evaluations lie on the critical path of each phase? If one layer evaluation
# took 0.1 ms regardless of how many tokens it processed, how long would each phase take?
#
# <details><summary>Answer</summary>
#
# Prefill: 32, whatever the prompt length, so 3.2 ms. Decode: the prefill already yields the
# first of the 512 tokens, so $511 \cdot 32 = 16{,}352$ layer evaluations, 1.64 s. The assumption is the point: with enough parallel hardware, the prefill's time is
# set by its depth, while decode's is set by its length. Real hardware runs out of
# parallelism before 2048 tokens (the prefill turns compute bound), but never before one.
#
# </details>
#
# **Problem 5.** An A10's datasheet gives 24 GB of memory. Llama 2 7B's weights take
# 13.48 GB in fp16, and one sequence of 4096 tokens 2 GiB of KV state. The lecture estimates
# "about 5 sequences fit". How many fit on paper, how many on a real A10 with ECC on, and how
# large a reserve for ECC, the runtime and activations makes the difference?
#
# <details><summary>Answer</summary>
#
# The datasheet's GB of memory is GiB: $C = 24 \cdot 2^{30} = 25.77$ GB. Free beside the
# weights: $25.77 - 13.48 = 12.29$ GB; one sequence needs $2^{31}$ bytes $= 2.147$ GB, so on
# paper $\lfloor 12.29 / 2.147 \rfloor = \lfloor 5.72 \rfloor = 5$ fit (`lp.max_batch_size`
# with `ecc=False` gives 5), with $12.29 - 5 \cdot 2.147 = 1.56$ GB to spare. Any reserve above those 1.56 GB
# leaves 4. ECC alone takes more: with it on, `nvidia-smi` shows 23,028 MiB $= 24.15$ GB
# (1/16 of the memory holds the error-correcting codes; `a10.usable_capacity(ecc=True)`,
# 23,040 MiB, gives the same count, and so does `lp.max_batch_size`, which uses it by default), and
# $(24.15 - 13.48) / 2.147 = 4.97$, so 4 fit, just; with ECC off, 5. A reserve of 2 GB for the runtime and
# activations also gives 4, and so does misreading 24 GB as $24 \cdot 10^9$ bytes
# ($10.52 / 2.147 = 4.90$), which reaches the right count for the wrong reason.
#
# </details>

# %% slideshow={"slide_type": "skip"} tags=["hide-cell"]
# The worked problems' answers, checked against llmperf.
assert 2 * 2 * 40 * 5120 == lp.get_model("llama-2-13b").kv_bytes_per_token()
assert int(10e9 // lp.get_model("llama-2-13b").kv_bytes_per_token()) == 12_207
assert lp.get_model("llama-3-8b").kv_cache_bytes(8192) == lp.GiB
assert sum(350 + i for i in range(150)) == 63_675
assert (512 - 1) * 32 == 16_352 and round(16_352 * 0.1e-3, 2) == 1.64
assert round(a10.mem_capacity / 1e9, 2) == 25.77 and round(llama.weight_bytes("fp16") / 1e9, 2) == 13.48
assert lp.max_batch_size(llama, a10, 4096, ecc=False) == 5
assert round((a10.mem_capacity - llama.weight_bytes("fp16") - 5 * 2 * lp.GiB) / 1e9, 2) == 1.56
assert lp.max_batch_size(llama, a10, 4096, reserved_bytes=1.56e9, ecc=False) == 4
assert lp.max_batch_size(llama, a10, 4096, reserved_bytes=a10.mem_capacity - 23_028 * lp.MiB, ecc=False) == 4
assert round((23_028 * lp.MiB - llama.weight_bytes("fp16")) / (2 * lp.GiB), 2) == 4.97
assert lp.max_batch_size(llama, a10, 4096, reserved_bytes=2e9, ecc=False) == 4
assert round((24e9 - llama.weight_bytes("fp16")) / (2 * lp.GiB), 2) == 4.90
assert lp.max_batch_size(llama, a10, 4096) == 4  # the default counts usable_capacity(ecc=True)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Summary
#
# - Every token has a query, a key and a value vector at every layer. Causal attention reads
#   a token's query once, and its key and value at every later step; and because nothing
#   about a token depends on later tokens, its keys and values never change. They are the
#   state of a request.
# - Recomputing the state gives the same tokens as keeping it, and costs a prefill of growing
#   length per generated token: quadratic in the output length. A KV cache makes generation
#   linear. Section 3.2 measures both on your machine beside the roofline estimate, which a
#   small model's per-operator overhead keeps the measurement from reaching.
# - Memory holds the parameters plus $2 \cdot b \cdot L \cdot h_{kv} \cdot d$ bytes per token
#   of context: 512 KiB per token and exactly 2 GiB (2.15 GB) per 4096-token sequence for
#   Llama 2 7B in fp16. GQA divides the state by $h / h_{kv}$. On an A10, whose "24 GB" are
#   24 GiB, five such sequences fit beside the weights on paper and four once ECC's share
#   (1/16 of GDDR6 memory, on by default) is taken out.
# - Each layer waits for the one below; each decode step waits for the previous token. The
#   prefill's critical path is $L$ layers deep, decode's is $(G - 1) \cdot L$. The prefill gives
#   every matmul $S$ rows of work, decode gives it one: the origin of the compute-bound
#   prefill and memory-bound decode of chapter 4.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Exercises
#
# {doc}`Exercise set 3 </exercises/03_dependencies>` asks you to compute KV bytes per token and cache sizes with
# and without GQA, to write the KV cache update into a preallocated array, to count critical
# paths and to compare the cost of recomputation with that of caching. Run its visible checks
# in the notebook; `llmperf grade` scores a submission.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## References
#
# ```{bibliography}
# :filter: docname in docnames
# ```
