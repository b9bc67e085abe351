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
# # Chapter 5: Batching
#
# Chapter 4 ended on an uncomfortable fact: a {term}`decode` step reads every weight of the model to
# produce one token, and the arithmetic units sit idle more than 99 % of the time. The obvious
# remedy is to give each weight read more work: decode several requests in the same step, so
# that one pass over the weights serves all of them. This chapter asks how far that remedy
# goes (when does batching stop paying, and how many requests even fit in memory), and then
# how a server should form its batches when requests arrive at random and leave after
# outputs of very different lengths. The second question has a famous answer,
# {term}`continuous batching`, which a widely read study credited with up to 23 times the
# {term}`throughput` of naive batching {cite:p}`daniel2023anyscale`; we rebuild that study in simulation and check where
# its numbers come from.
#
# :::{admonition} After this chapter you will be able to
# :class: tip
#
# - say which operators of {term}`prefill` and decode gain {term}`arithmetic intensity`
#   from a larger batch, and compute the batch at which decode turns {term}`compute bound`;
# - derive the intensity of a whole decode step in the batch $B$ and the context $N$, and
#   explain why it saturates, and why grouped-query attention ({term}`GQA`) matters for
#   bandwidth;
# - count how many requests fit in an accelerator's memory beside the weights;
# - draw the timelines of {term}`static <static batching>` and continuous batching, read
#   {term}`TTFT` and {term}`TPOT` off them, and explain the prefill stall and
#   {term}`chunked prefill`;
# - measure a serving configuration by throughput, latency percentiles, SLO attainment
#   and {term}`goodput`, and rank configurations on a throughput-latency plot;
# - explain what a ragged (varlen) batch, stop tokens and prefix caching change in a real
#   engine, and measure each on this machine beside the simulator.
# :::
#
# Notation follows chapter 4. New or used more heavily here:
#
# | symbol | meaning | Llama 2 7B / A10 |
# |---|---|---|
# | $B$ | sequences decoded together in one step (the batch) | |
# | $N$ | tokens in one sequence's {term}`KV cache` | |
# | $h$, $h_{kv}$ | query heads, key/value heads | 32, 32 |
# | $b$, $b_{kv}$ | bytes per weight element, per KV cache element | 2, 2 |
# | $I(B, N)$ | arithmetic intensity of one decode step | |
# | $C$ | memory capacity | 24 GiB |
# | TTFT, TPOT | time to first token; mean time per later output token | |
#
# The measured parts run the reference model `ref-small` on a GPU when one is present and on
# the CPU otherwise; everything else is analytic or simulated and prints the same numbers on
# every machine.

# %% slideshow={"slide_type": "-"}
import matplotlib.pyplot as plt
import numpy as np
import torch

import llmperf as lp
from llmperf import serving as sv
from llmperf.analytic import batching as bt
from llmperf.plots import legend_below, new_axes, use_style

use_style()
torch.manual_seed(0)
np.random.seed(0)
device = "cuda" if torch.cuda.is_available() else "cpu"
mdtype = "fp16" if device == "cuda" else "fp32"
tdtype = torch.float16 if device == "cuda" else torch.float32


def plain_log_ticks(axis, values):
    """Ticks 1, 2, 5 times a power of ten around `values` on a log axis, as plain numbers."""
    lo, hi = min(values) / 1.5, max(values) * 1.5
    ticks = [m * 10.0**e for e in range(-3, 7) for m in (1, 2, 5) if lo <= m * 10.0**e <= hi]
    axis.set_ticks(ticks, [f"{t:,g}" for t in ticks])
    axis.set_minor_formatter(plt.NullFormatter())


llama = lp.get_model("llama-2-7b")
llama3 = lp.get_model("llama-3-8b")
opt = lp.get_model("opt-13b")
a10 = lp.get_accelerator("A10")
a100 = lp.get_accelerator("A100 SXM 40GB")
print(f"device for the measurements: {device}, dtype {mdtype}")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 5.1 Why batching pays, and until when
#
# A matrix product reuses an operand when the same values meet several rows of the other.
# Two kinds of reuse matter in a transformer. **A weight** is reused by every token that goes
# through its layer in the same step: $X W_Q$, $X W_K$, $X W_V$, the output projection and
# the FFN matrices all multiply the same $W$ by however many token vectors $X$ holds. **A
# token's state** is reused by every later query that attends to it: in prefill the key of
# token 0 meets the queries of tokens 1, 2, 3 and so on. Batching across requests adds rows to
# $X$, so it multiplies the first kind of reuse. It adds nothing to the second: request A's
# keys and values are never attended to by request B's queries, so each request's KV cache is
# read for that request alone.
#
# The lecture's cross product $[\text{prefill}, \text{decode}] \times [\text{attention},
# \text{FFN}]$ makes this concrete. The cell below takes, from `lp.step_costs`, the
# intensity of the matrix products with weights (the four projections and the FFN: call them
# the *linear* operators) and of the attention proper (scores, softmax, weighted values), for
# a batch of $B$ prompts of 512 tokens in prefill and of $B$ sequences with 1024 cached
# tokens in decode.

# %% slideshow={"slide_type": "-"}
BATCHES = [1, 2, 4, 8, 16, 32, 64, 128, 256]
LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "ffn_gate", "ffn_up", "ffn_down")
ATTENTION = ("qk", "softmax", "sv", "attention")
PHASE_LEN = {"prefill": 512, "decode": 1024}


def intensity_of(table, names):
    """FLOP per byte of the rows of a cost table whose names are in `names`."""
    rows = [r for r in table if r.name in names]
    return sum(r.flops for r in rows) / sum(r.bytes for r in rows)


def cross_product(step_costs):
    """{(phase, part): [intensity at each batch]} from a function (phase, batch, n) -> table."""
    curves = {}
    for phase, n in PHASE_LEN.items():
        tables = [step_costs(phase, b, n) for b in BATCHES]
        curves[(phase, "linear")] = [intensity_of(t, LINEAR) for t in tables]
        curves[(phase, "attention")] = [intensity_of(t, ATTENTION) for t in tables]
    return curves


catalog_curves = cross_product(lambda phase, b, n: lp.step_costs(llama, phase, b, n))
lp.Table(["phase", "operators", *[f"B={b}" for b in BATCHES]],
         [(phase, part, *values) for (phase, part), values in catalog_curves.items()],
         title="Llama 2 7B, fp16: arithmetic intensity (FLOP/byte) against batch size",
         formats={f"B={b}": ".1f" for b in BATCHES})

# %% [markdown] slideshow={"slide_type": "subslide"}
# Read the four rows. Prefill's linear operators are far past the A10's {term}`ridge <ridge point>` (208 FLOP/byte)
# already at $B = 1$, because the 512 tokens of one prompt share each weight read; more
# prompts add little. Prefill's attention stays where chapter 4 left it, set by the head
# dimension and not by the batch. Decode's attention does not move at all: each sequence
# brings its own keys and values. Only decode's linear operators climb, about one FLOP per
# byte per sequence in the batch, and that row is the whole case for batching.
#
# The same analysis applies to your machine, with the reference model as it runs here
# (`model.step_costs` counts attention with the kernel the model actually uses in each
# phase), against the ridge that `measure_host()` finds. The quick probe takes about a second
# and gives a rough roof, enough to place the ridge; the cell runs it three times, keeps the
# median peak and bandwidth, and prints the range of the three.

# %% slideshow={"slide_type": "-"} tags=["nbval-ignore-output"]

from IPython.display import display

from llmperf.measured.host import median_host
from llmperf.measured.load import watch_load
from llmperf.measured.measure import measure_decode, measure_host
from llmperf.measured.model import Transformer

with watch_load() as load:
    probes = [measure_host(dtypes=(mdtype,), quick=True, device=device, progress=False)
              for _ in range(3)]
host = median_host(probes)
if mdtype not in host.dtypes:  # a GPU without fast fp16: fall back to fp32
    mdtype, tdtype = "fp32", torch.float32
ref = lp.get_model("ref-small")
model = Transformer(ref, device=device, dtype=tdtype, max_seq_len=1040, seed=0)
host_curves = cross_product(lambda phase, b, n: model.step_costs(phase, b, n))
print(f"{host.name}: {lp.format_flop_rate(host.peak(mdtype))} {mdtype}, "
      f"{lp.format_bandwidth(host.mem_bandwidth)}, ridge {host.ridge_point(mdtype):.1f} FLOP/byte "
      f"(medians of three probes)")
ridges = [a.ridge_point(mdtype) for a in probes if mdtype in a.dtypes]
print(f"ridge of the three probes: {min(ridges):.1f} to {max(ridges):.1f} FLOP/byte")
print(load.note())

# %% slideshow={"slide_type": "fragment"}
fig, axes = plt.subplots(2, 1, figsize=(7.0, 8.0), sharex=True, sharey=True, layout="constrained")
panels = ((axes[0], catalog_curves, a10.ridge_point("fp16"), "Llama 2 7B (fp16) against the A10"),
          (axes[1], host_curves, host.ridge_point(mdtype), f"ref-small ({mdtype}) on this machine"))
for ax, curves, ridge, title in panels:
    for (phase, part), values in curves.items():
        ax.plot(BATCHES, values, "o-" if phase == "decode" else "s--", label=f"{phase}, {part}")
    ax.axhline(ridge, color="gray", linestyle=":", label="ridge point")
    ax.set(yscale="log", title=f"{title}: ridge {ridge:.0f} FLOP/byte",
           ylabel="arithmetic intensity (FLOP/byte)")
    ax.set_xscale("log", base=2)
axes[1].set_xlabel("batch size B (sequences)")
fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=3,
           fontsize="medium")
plt.show()

# %% [markdown] slideshow={"slide_type": "-"}
# **Figure 1.** Arithmetic intensity against batch size for the four corners of the cross
# product: prefill (squares, dashed) with 512-token prompts and decode (circles) with 1024
# cached tokens. Top: Llama 2 7B in fp16 against the A10's ridge. Bottom: the reference model
# as it runs on your machine, against the ridge just measured. Look for the one rising line,
# decode's linear operators, and where it crosses the dotted ridge: that is the batch at which
# decode's matrix products stop being {term}`memory bound`. Decode attention is flat on both sides;
# the reference model's decode attention sits at $2h/(b\,h_{kv})$, 2 FLOP/byte in fp16 and 1 in
# fp32, because its 8 query heads share 4 key/value heads (more on that below). The bottom
# panel's ridge and its crossing depend on your machine; the shape does not.
#
# Where decode's linear line crosses the ridge is the **{term}`critical batch`**. For a product
# $X(B, K) \cdot W(K, M)$ with $B \ll K, M$ the intensity is about $2B/b$ (chapter 4,
# section 4.4), so the crossing is near $B \approx I^{*} b / 2$: the ridge itself in 16-bit
# formats. `lp.ffn_critical_batch` solves it exactly for the FFN's shapes.

# %% slideshow={"slide_type": "-"}
critical = {name: lp.ffn_critical_batch(llama, name) for name in ("A10", "L4", "A100 SXM 40GB",
                                                                    "H100 SXM")}
lp.Table(["accelerator", "ridge (FLOP/byte)", "critical batch (FFN, fp16)"],
         [(name, lp.get_accelerator(name).ridge_point("fp16"), b) for name, b in critical.items()],
         title="Llama 2 7B: the decode batch at which the FFN's products turn compute bound",
         formats={"ridge (FLOP/byte)": ".1f"})

# %% [markdown] slideshow={"slide_type": "subslide"}
# A couple of hundred sequences on every part: close to the ridge, as the approximation
# says. But these are the FFN's products alone. The rest of the step has not been counted.

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### The whole decode step in closed form
#
# Count one decode step of $B$ sequences, each holding $N$ tokens in its cache, for a dense
# model with $P$ parameters. The FLOPs are $2P$ per token for the weights (one multiply-add
# per parameter) plus the attention: in each of the $L$ layers each of the $h$ query heads
# computes $N$ scores of length $d$ and a weighted sum of $N$ value vectors of length $d$,
# $2Nd + 2Nd$ FLOPs. The bytes are the weights, read **once for the whole batch**, and the
# keys and values, read **once per sequence**: $2 N h_{kv} d$ elements per layer. So
#
# $$
# \text{FLOPs} = B\,(2P + 4LNhd), \qquad
# \text{bytes} = bP + 2\,b_{kv} L N h_{kv} d\, B ,
# $$
#
# $$
# I(B, N) = \frac{B\,(2P + 4LNhd)}{bP + 2\,b_{kv} L N h_{kv} d\,B} .
# $$
#
# While the weight term dominates the denominator, $I$ grows linearly with $B$, at about
# $2B/b$ as for the FFN alone. Once $2 b_{kv} L N h_{kv} d B$ outgrows $bP$, every added
# sequence brings as many bytes as FLOPs and $I$ flattens towards a ceiling that does not
# depend on $B$:
#
# $$
# \lim_{B\to\infty} I(B, N) = \frac{2P + 4LNhd}{2\,b_{kv} L N h_{kv} d}
#   = \frac{P}{b_{kv} L N h_{kv} d} + \frac{2h}{b_{kv}\, h_{kv}} .
# $$
#
# The second term is the attention's own intensity. Its FLOPs per cached token and layer are
# $4hd$ and its bytes $2 b_{kv} h_{kv} d$, so $I_{\text{attn}} = 2h/(b_{kv} h_{kv})$, which is
# $h/h_{kv}$ in 16-bit: 1 FLOP/byte for Llama 2 7B, 4 for Llama 3 8B (8 key/value heads for 32
# query heads), whatever $B$ and $N$ are. The first term shrinks as $1/N$. The closed form
# leaves out the activations, the element-wise operators and (under the standard algorithm)
# the score matrices' traffic, and charges the embedding table as read; `llmperf.analytic.batching`
# holds it, and the cell checks it against `lp.step_costs` term by term and in total.

# %% slideshow={"slide_type": "-"}
B, N = 16, 1024
P, L, h, h_kv, d = llama.param_count(), llama.n_layers, llama.n_heads, llama.n_kv_heads, llama.d_head
flops, moved = bt.decode_step_flops_bytes(llama, B, N)
assert flops == B * (2 * P + 4 * L * N * h * d)
assert moved == 2 * P + 2 * 2 * L * N * h_kv * d * B
counted = lp.step_costs(llama, "decode", B, N).total
assert abs(bt.decode_step_intensity(llama, B, N) / counted.intensity - 1) < 0.11
assert bt.decode_attention_intensity(llama) == h / h_kv
assert bt.decode_attention_intensity(llama3) == llama3.n_heads / llama3.n_kv_heads
print(f"Llama 2 7B, B = {B}, N = {N}: closed form {bt.decode_step_intensity(llama, B, N):.2f}, "
      f"step_costs {counted.intensity:.2f} FLOP/byte")
rows = []
for m in (llama, llama3):
    for n in (128, 512, 1024, 4096):
        critical_b = bt.step_critical_batch(m, a10, n)
        rows.append((m.name, n, bt.decode_intensity_limit(m, n),
                     "never" if critical_b is None else critical_b, lp.max_batch_size(m, a10, n + 1)))
lp.Table(["model", "N", "ceiling of I (FLOP/byte)", "critical batch, whole step (A10)",
          "sequences that fit (A10)"], rows,
         title="Decode on the A10 (ridge 208.3): the ceiling of I(B, N) and the batch that reaches it",
         formats={"ceiling of I (FLOP/byte)": ".1f"})

# %% slideshow={"slide_type": "skip"} tags=["hide-cell"]
# The paragraph below, from the closed form.
below = next(n for n in range(1, 4097) if bt.decode_intensity_limit(llama, n) < a10.ridge_point("fp16"))
assert 100 < below < 150  # "a little over a hundred cached tokens"
assert 15 <= lp.max_batch_size(llama, a10, 1025) <= 25  # "about twenty sequences"
longest = max(n for n in range(1, 4097) if bt.step_critical_batch(llama3, a10, n) is not None)
assert 300 < longest < 1000  # "up to several hundred tokens of context"

# %% [markdown] slideshow={"slide_type": "subslide"}
# The table is the chapter's first surprise. For Llama 2 7B on an A10 the ceiling of $I(B, N)$
# falls below the ridge at a little over a hundred cached tokens: beyond that, **no batch
# size makes the decode step compute bound**, because the KV reads grow as fast as the
# FLOPs. (The FFN's products alone still cross the ridge near $B = 224$; the step does not,
# because its attention drags it back.) And before any of that matters, capacity stops the
# batch: at 1024 tokens only about twenty sequences fit beside the weights. Llama 3 8B keeps a
# critical batch up to several hundred tokens of context, because each of its sequences
# reads a quarter of the KV bytes: grouped-query attention is a bandwidth optimization for
# decode, not only a saving of memory.

# %% [markdown] slideshow={"slide_type": "fragment"}
# :::{important}
# Batching shares the weight reads, not the KV reads: a decode step's intensity grows with
# the batch only until the KV cache's bytes catch up with the weights', and then saturates at
# a ceiling that falls as $1/N$. Decode attention itself stays near $h/h_{kv}$ FLOP/byte
# whatever the batch.
# :::

# %% [markdown] slideshow={"slide_type": "-"}
# The figure draws $I(B, N)$ from the closed form as lines and from `lp.step_costs` as
# points, for both models, at three contexts.

# %% slideshow={"slide_type": "fragment"}
fig, axes = plt.subplots(2, 1, figsize=(7.0, 8.0), sharex=True, sharey=True, layout="constrained")
batch_axis = np.unique(np.logspace(0, 10, 60, base=2).astype(int))
for ax, m in zip(axes, (llama, llama3)):
    for i, n in enumerate((128, 1024, 4096)):
        ax.plot(batch_axis, [bt.decode_step_intensity(m, int(b), n) for b in batch_axis],
                color=f"C{i}")
        ax.plot(BATCHES, [lp.step_costs(m, "decode", b, n).total.intensity for b in BATCHES],
                "o", color=f"C{i}", markersize=4)
        ax.axhline(bt.decode_intensity_limit(m, n), color=f"C{i}", linestyle="--", linewidth=0.8)
    ax.axhline(a10.ridge_point("fp16"), color="gray", linestyle=":")
    ax.set(yscale="log", ylabel="decode step intensity (FLOP/byte)",
           title=f"{m.name}: h = {m.n_heads}, h_kv = {m.n_kv_heads}")
    ax.set_xscale("log", base=2)
axes[1].set_xlabel("batch size B (sequences)")
key = [plt.Line2D([], [], color=f"C{i}", lw=4, label=f"N = {n}") for i, n in enumerate((128, 1024, 4096))]
key += [plt.Line2D([], [], color="gray", label="closed form"),
        plt.Line2D([], [], color="gray", ls="", marker="o", markersize=4, label="lp.step_costs"),
        plt.Line2D([], [], color="gray", ls="--", lw=0.8, label="ceiling as B grows"),
        plt.Line2D([], [], color="gray", ls=":", label="A10 ridge")]
fig.legend(handles=key, loc="outside lower center", ncol=4, fontsize="medium")
plt.show()

# %% [markdown] slideshow={"slide_type": "-"}
# **Figure 2.** The decode step's intensity against the batch, closed form (lines) beside the
# per-operator count (points), with each context's ceiling dashed. Each curve rises with
# slope one while the weights dominate the bytes, bends where the KV bytes catch up, and
# levels off at its ceiling. The longer the context, the earlier the bend and the lower the
# ceiling. In the bottom panel, grouped-query attention lifts every ceiling more than fourfold: four
# times from $h/h_{kv}$, the rest because Llama 3 8B has more parameters to share. The points
# fall slightly below the lines at large batches: there the activations, which the closed
# form leaves out, add bytes.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 5.2 How many requests fit
#
# Capacity bounds the batch before intensity does. A request holds its KV cache for as long
# as it runs, $b_{kv} \cdot 2 L h_{kv} d$ bytes per token, and the weights take their share
# first:
#
# $$
# B_{\max} = \left\lfloor \frac{C - bP}{N \cdot 2\, b_{kv} L h_{kv} d} \right\rfloor .
# $$
#
# For the running example, Llama 2 7B in fp16 on an A10 with requests of 4096 tokens: the
# A10's 24 GiB is 25.8 GB, the weights take 13.5 GB, and each request's cache is
# $4096 \times 0.52$ MB $= 2.15$ GB. With inline ECC on, which data-center A10s run with, a
# sixteenth of the memory holds check bits ([chapter 3](03_dependencies.ipynb), section 3.3).

# %% slideshow={"slide_type": "-"}
fit_rows = []
for label, capacity in (("24 GiB", a10.mem_capacity),
                        ("24 GiB less ECC", a10.usable_capacity(ecc=True))):
    fit_rows.append((label, capacity, llama.weight_bytes("fp16"), llama.kv_cache_bytes(4096),
                     lp.requests_that_fit(capacity, llama.weight_bytes("fp16"),
                                          llama.kv_cache_bytes(4096))))
assert fit_rows[0][-1] == lp.max_batch_size(llama, a10, 4096, ecc=False)
assert fit_rows[1][-1] == lp.max_batch_size(llama, a10, 4096)  # the default: usable_capacity(ecc=True)
lp.Table(["A10 memory", "capacity", "weights", "KV per request", "requests that fit"], fit_rows,
         title="Llama 2 7B, fp16, 4096-token requests on an A10",
         formats={"capacity": lp.format_bytes, "weights": lp.format_bytes,
                  "KV per request": lp.format_bytes})

# %% [markdown] slideshow={"slide_type": "subslide"}
# `lp.memory_report` adds the same terms for one batch, and a third that the count above leaves
# out: the activations a step holds at its peak (an estimate; for a prefill of the whole batch
# at once, the FFN's hidden tensors dominate). Four requests of 4096 tokens, prefilled together
# with fused attention ({term}`FlashAttention`), against the usable memory:

# %% slideshow={"slide_type": "-"}
print(lp.memory_report(llama, a10, batch=4, seq_len=4096, attention="fused"))

# %% [markdown] slideshow={"slide_type": "subslide"}
# Five requests fit in the nominal 24 GiB, four once ECC takes its sixteenth: the answer
# turns on a gigabyte, so the units must be right. Either way it is about fifty times below
# the critical batch of section 5.1. Long requests on a 24 GiB part are bound by
# capacity first and by bandwidth second; they never get near compute.
#
# The continuous-batching study did the same arithmetic for OPT-13B on one A100 with 40 GB,
# as the reason batching is limited by memory: 40 GB less 26 GB of fp16 weights leaves
# 14 GB, at nearly 1 MB of KV cache per token about 14,000 tokens
# {cite:p}`daniel2023anyscale`. The library's units give a different answer.

# %% slideshow={"slide_type": "-"}
study = lp.requests_that_fit(40e9, 26e9, 1e6)  # the study's round numbers, in tokens
ours = bt.kv_capacity_tokens(opt, a100)
assert ours == lp.max_batch_size(opt, a100, 1)
steps = [
    ("the study: 40 GB - 26 GB, 1 MB per token", 40e9, 26e9, 1e6),
    ("exact weights (P = 12.85 billion, fp16)", 40e9, opt.weight_bytes("fp16"), 1e6),
    ("exact KV per token, 2 L D b = 0.82 MB", 40e9, opt.weight_bytes("fp16"),
     opt.kv_bytes_per_token("fp16")),
    ("40 GiB instead of 40 GB (llmperf)", a100.mem_capacity, opt.weight_bytes("fp16"),
     opt.kv_bytes_per_token("fp16")),
]
lp.Table(["assumption", "capacity", "weights", "KV per token", "tokens that fit"],
         [(what, c, w, kv, lp.requests_that_fit(c, w, kv)) for what, c, w, kv in steps],
         title="OPT-13B on one A100 40GB: KV tokens beside the weights",
         formats={"capacity": lp.format_bytes, "weights": lp.format_bytes,
                  "KV per token": lp.format_bytes, "tokens that fit": ","})

# %% slideshow={"slide_type": "skip"} tags=["hide-cell"]
# Sections 5.1 and 5.2's prose, from the library: Figure 2's ceilings, the A10's count, the study's.
assert all(bt.decode_intensity_limit(llama3, n) / bt.decode_intensity_limit(llama, n) > 4
           for n in (128, 1024, 4096))
assert [row[-1] for row in fit_rows] == [5, 4]
assert 40 < lp.ffn_critical_batch(llama, a10) / 5 and lp.ffn_critical_batch(llama, a10) / 4 < 60
assert round(opt.weight_bytes("fp16") / 1e9, 1) == 25.7 and round(opt.kv_bytes_per_token("fp16") / 1e6, 2) == 0.82
assert round(a100.mem_capacity / 1e9, 1) == 42.9 and study == 14_000
exact_kv = lp.requests_that_fit(40e9, opt.weight_bytes("fp16"), opt.kv_bytes_per_token("fp16"))
assert 0.15 < 1 - lp.requests_that_fit(40e9, opt.weight_bytes("fp16"), 1e6) / exact_kv < 0.2
assert round(ours, -3) == 21_000 and round(ours / study, 1) == 1.5

# %% [markdown] slideshow={"slide_type": "subslide"}
# Three roundings, all in the same direction, explain the gap. The study rounds the weights
# up from 25.7 to 26 GB, and the KV per token up from 0.82 to 1 MB, which alone removes
# nearly a fifth of the tokens. And the card's "40 GB" is 40 GiB, 42.9 GB: memory comes in binary
# sizes. The library's figure, about 21,000 tokens, is half as large again as the study's.
# Neither is what a server gets: the runtime, the activations of the largest batch and
# fragmentation all take some memory, which `reserved_bytes` sets aside. The simulator below
# uses the library's figure as `kv_capacity_tokens`.

# %% [markdown] slideshow={"slide_type": "fragment"}
# :::{important}
# Requests that fit $= \lfloor (C - bP) / \text{KV bytes per request} \rfloor$, with $C$ in the
# same units as the rest: a GB/GiB slip or a rounded megabyte per token moves the answer by
# tens of percent.
# :::

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 5.3 Predict, then measure: decode against batch size
#
# The {term}`roofline` predicts a decode step's time from its FLOPs and bytes; the prediction for the
# reference model on your machine is `Measurement.predicted_s(host)`. While the weights
# dominate, the step time should barely grow with $B$, so tokens per second should grow
# almost linearly with it; once the KV cache and the activations weigh in, or the products
# turn compute bound, the step time grows and throughput levels off. `measure_decode` times
# one decode step of $B$ sequences with 128 cached tokens each, nine times; the table prints the
# median and the interquartile range, and below it the two numbers Figure 3 is about: how much
# the step time grew from the smallest batch to the largest, and the measured-to-predicted
# ratio at both ends.

# %% slideshow={"slide_type": "-"} tags=["nbval-ignore-output"]
measured_batches = [1, 4, 16, 64]
with watch_load() as load:
    decode_runs = {b: measure_decode(model, 128, batch=b, steps=9, warmup=1) for b in measured_batches}
display(lp.Table(["B", "predicted step", "measured step (median)", "IQR", "measured / predicted",
                  "predicted tokens/s", "measured tokens/s"],
                 [(b, r.predicted_s(host), r.timing.median_s, r.timing.iqr_s,
                   r.timing.median_s / r.predicted_s(host), b / r.predicted_s(host), r.tokens_per_s)
                  for b, r in decode_runs.items()],
                 title=f"ref-small decode, 128 cached tokens, {mdtype}, on {device}",
                 formats={"predicted step": lp.format_seconds,
                          "measured step (median)": lp.format_seconds, "IQR": lp.format_seconds,
                          "measured / predicted": ".2f", "predicted tokens/s": ",.0f",
                          "measured tokens/s": ",.0f"}))
first, last = decode_runs[measured_batches[0]], decode_runs[measured_batches[-1]]
print(f"step time from B = {measured_batches[0]} to B = {measured_batches[-1]}: predicted "
      f"x{last.predicted_s(host) / first.predicted_s(host):.1f}, measured "
      f"x{last.timing.median_s / first.timing.median_s:.1f}")
print(f"measured / predicted: {first.timing.median_s / first.predicted_s(host):.2f} at "
      f"B = {measured_batches[0]}, {last.timing.median_s / last.predicted_s(host):.2f} at "
      f"B = {measured_batches[-1]}")
print(load.note())

# %% slideshow={"slide_type": "fragment"}
fig, axes = plt.subplots(2, 1, figsize=(7.0, 7.0), sharex=True, layout="constrained")
runs = list(decode_runs.values())
axes[0].plot(measured_batches, [r.predicted_s(host) * 1e3 for r in runs], "o-", label="predicted")
axes[0].plot(measured_batches, [r.timing.median_s * 1e3 for r in runs], "s--",
             label="measured (median)")
axes[0].set(ylabel="decode step time (ms)", title="Step time")
axes[1].plot(measured_batches, [b / r.predicted_s(host) for b, r in decode_runs.items()], "o-")
axes[1].plot(measured_batches, [r.tokens_per_s for r in runs], "s--")
axes[1].set(ylabel="tokens per second", title="Throughput", xlabel="batch size B (sequences)")
for ax in axes:
    ax.set_yscale("log")
    ax.set_xscale("log", base=2)
fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=2,
           fontsize="medium")
plt.show()

# %% [markdown] slideshow={"slide_type": "-"}
# **Figure 3.** One decode step of the reference model on your machine against the batch
# size, predicted from the measured roofline (circles) and measured (squares). Look at the
# slopes rather than the levels. The predicted step time is nearly flat at small batches
# (the weight reads are shared), so predicted throughput rises with slope close to one; the
# first line printed under the table says how much the measured step grew over the same range.
# The table's ratio column says where the measured points sit against the prediction: a ratio
# above 1 is the gap chapter 4 explained (achieved bandwidth below the probe's, per-step
# overhead), and a ratio far above it, or a wide IQR, on a machine the load note calls busy
# is other programs' doing. Do not expect the ratio to fall steadily with $B$: a fixed cost
# per step is shared by more tokens, but larger batches also bring activations and KV reads
# that run below the probe's bandwidth, so on some machines the ratio grows over part of the
# range. The second printed line compares it at the smallest and the largest $B$. How far the
# measured throughput keeps rising before it bends depends on your machine's ridge: on a CPU,
# whose ridge is low, the products turn compute bound at a few dozen sequences.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 5.4 Forming batches: static and continuous
#
# Everything so far assumed $B$ sequences decoding in lockstep. Real requests arrive at
# random times with prompts and outputs of different lengths, and the server must decide,
# step by step, which of them share a batch. `llmperf.serving` holds the pieces: `Request`
# (arrival time, prompt and output lengths), a `Scheduler` that decides each iteration's
# batch under a policy, and `simulate`, which runs the scheduler on a clock whose iterations
# last what a step-time model says. The same scheduler drives the real engine later.
#
# **Naive (static) batching.** Collect up to `max_batch` requests, prefill their prompts
# together, then decode them together until *all* have finished; only then take the next
# group. A request that finishes early leaves its slot empty for the rest of the batch, and a
# request that arrives meanwhile waits for the whole batch to drain. A real implementation
# also pads prompts of different lengths to the longest, and often keeps computing the
# finished rows; our simulator charges neither, so it flatters static batching.
#
# **Continuous batching** {cite:p}`yu2022orca`, introduced by Orca as *iteration-level
# scheduling*: the scheduler decides at every iteration. A request that finishes leaves at
# once, and a waiting request takes its slot in the next iteration, whose batch then holds the
# newcomer's whole prompt (its prefill) beside one decode token for every running request.
#
# The cell runs both policies on the same eight requests, four slots, and a step time of one
# second per iteration, whatever it holds, so that the timeline counts iterations.

# %% slideshow={"slide_type": "-"}
outputs = [6, 2, 3, 8, 2, 5, 4, 1]
toy = [sv.Request(arrival_s=0.0, prompt_tokens=4, output_tokens=g) for g in outputs]
one_second = sv.LinearStepTime(base_s=1.0, per_token_s=0.0, per_kv_token_s=0.0)
toy_runs = {policy: sv.simulate(toy, policy, max_batch=4, step_time=one_second)
            for policy in ("static", "continuous")}


def slot_use(run, max_batch):
    """Share of slot-iterations that hold a request (prefilling or decoding)."""
    busy = sum(len(it.decode) + len(it.prefill) for it in run.iterations)
    return busy / (max_batch * len(run.iterations))


lp.Table(["policy", "iterations", "slots in use", "throughput (tokens/iteration)",
          "median TTFT", "median TPOT"],
         [(p, len(r.iterations), slot_use(r, 4), r.throughput_tok_s,
           r.percentile("ttft_s", 50), r.percentile("tpot_s", 50)) for p, r in toy_runs.items()],
         title="Eight requests, four slots, one second per iteration",
         formats={"slots in use": ".0%", "throughput (tokens/iteration)": ".2f",
                  "median TTFT": lambda v: f"{v:.1f} s", "median TPOT": lambda v: f"{v:.2f} s"})

# %% slideshow={"slide_type": "fragment"}
def gantt(ax, run, max_batch, title):
    """Slots (rows) over time: each request a bar from admission to finish, prefill darker."""
    for i, r in enumerate(run.requests):
        color = f"C{i % 10}"
        ax.barh(r.slot, r.finish_s - r.admitted_s, left=r.admitted_s, color=color, alpha=0.45,
                edgecolor="black")
        ax.barh(r.slot, r.first_token_s - r.admitted_s, left=r.admitted_s, color=color,
                edgecolor="black", hatch="//")
        ax.text((r.admitted_s + r.finish_s) / 2, r.slot, f"R{i} ({r.request.output_tokens})",
                ha="center", va="center", fontsize=9,
                bbox=dict(facecolor="white", edgecolor="none", alpha=0.8, pad=1))
    ax.set(yticks=range(max_batch), yticklabels=[f"slot {s}" for s in range(max_batch)],
           xlabel="time (iterations of one second)", title=title)
    ax.invert_yaxis()


fig, axes = plt.subplots(2, 1, figsize=(7.0, 5.6), sharex=True)
for ax, (policy, run) in zip(axes, toy_runs.items()):
    gantt(ax, run, 4, f"{policy} batching: {len(run.iterations)} iterations, "
                      f"{slot_use(run, 4):.0%} of slot-iterations in use")
axes[0].set_xlim(0, max(r.finish_s for run in toy_runs.values() for r in run.requests) + 0.5)
plt.tight_layout()
plt.show()

# %% [markdown] slideshow={"slide_type": "-"}
# **Figure 4.** The same eight requests (R0 to R7, output lengths in brackets) in four slots,
# under static batching (top) and continuous batching (bottom). A hatched cell is the
# iteration that prefills the request's prompt and yields its first token; each further cell
# yields one more token. Look at the white space. Under static batching, R1 (2 tokens) and R2
# (3 tokens) leave early but their slots stay empty until R3, the longest of the first group,
# finishes, and R4 to R7 wait for all of it. Under continuous batching a slot is refilled in
# the iteration after it frees, so the same work ends sooner and the later requests get
# their first token earlier.
#
# How much static batching wastes depends on how unequal the outputs are. A batch lasts as
# long as its longest output; with exponentially distributed outputs, the longest of $B$ has
# mean about $\bar G \cdot (1 + \tfrac12 + \dots + \tfrac1B)$, so with $B = 16$ a static batch
# runs more than three times as long as its average request. The study of section 5.6 built
# its workloads to vary exactly this.

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### The prefill stall, and chunked prefill
#
# Continuous batching has its own cost. An iteration that admits a request runs that
# request's whole prompt, and every running request waits for it before getting its next
# token. A long prompt therefore opens a gap in everyone else's stream: the **prefill
# stall**. Sarathi-Serve {cite:p}`agrawal2024sarathi` bounds it by **chunked prefill**: each
# iteration gets a budget of tokens; every running request's decode token is scheduled first,
# and prompts fill what remains, in chunks, over as many iterations as they need. The cell
# uses `RooflineStepTime`, which prices each iteration from `lp.step_costs` on a catalog
# accelerator, with fused attention, the kernel that serving systems run (its default;
# [chapter 7](07_fusion.ipynb), section 7.2), for Llama 2 7B on the A10: eight requests
# decode, and a 3,000-token prompt arrives one second in.

# %% slideshow={"slide_type": "-"}
a10_steps = sv.RooflineStepTime(llama, a10)
stall = [sv.Request(0.0, 100, 200) for _ in range(8)] + [sv.Request(1.0, 3000, 50)]
stall_runs = {
    "continuous": sv.simulate(stall, "continuous", max_batch=16, step_time=a10_steps),
    "chunked, 256-token budget": sv.simulate(stall, "chunked", max_batch=16, step_time=a10_steps,
                                             token_budget=256),
}


def decode_gaps(run, ids):
    """Durations of the iterations in which any of `ids` decoded: their inter-token gaps."""
    ids = set(ids)
    return [it.duration_s for it in run.iterations if ids & set(it.decode)]


lp.Table(["policy", "longest gap between tokens (R0-R7)", "median gap", "TTFT of the long prompt",
          "makespan"],
         [(p, max(decode_gaps(r, range(8))), float(np.median(decode_gaps(r, range(8)))),
           r.requests[8].ttft_s, r.makespan_s) for p, r in stall_runs.items()],
         title="Llama 2 7B on the A10: a 3,000-token prompt joins eight running decodes",
         formats={c: lp.format_seconds for c in ("longest gap between tokens (R0-R7)",
                                                 "median gap", "TTFT of the long prompt",
                                                 "makespan")})

# %% slideshow={"slide_type": "fragment"}
ax = new_axes("Iteration durations when a long prompt arrives (Llama 2 7B, A10)",
              "time since the first arrival (s)", "iteration duration (ms)")
for (policy, run), style in zip(stall_runs.items(), (dict(marker="o", markersize=6, mfc="none"),
                                                    dict(marker="s", markersize=3))):
    ax.plot([it.start_s for it in run.iterations], [it.duration_s * 1e3 for it in run.iterations],
            ls="", label=policy, **style)
ax.axvline(1.0, color="gray", linestyle=":", label="the long prompt arrives")
ax.set_yscale("log")
ax.set_yticks([20, 50, 100, 200, 500], ["20", "50", "100", "200", "500"])
ax.yaxis.set_minor_formatter(plt.NullFormatter())
ax.set_xlim(0.5, 2.5)
legend_below(ax, ncol=3)
plt.show()

# %% [markdown] slideshow={"slide_type": "-"}
# **Figure 5.** The duration of each iteration around the arrival of the long prompt; an
# iteration's duration is the gap between two tokens of every request it decodes. Under
# continuous batching one iteration carries the whole 3,000-token prefill, and eight users
# see their stream freeze for that long. With chunking the prefill is spread over a dozen
# iterations that each carry up to 256 tokens (the eight decodes and 248 tokens of the prompt),
# each less than twice as long as a plain decode step: the worst gap shrinks by about the
# ratio of prompt to budget. The long prompt's own first token comes only a little later
# (compare the table's two TTFTs: about a tenth): the same prompt work is done, spread over
# iterations that also carry the eight decodes, and its last, short chunk takes as long as a
# decode step. The budget sets the trade: a larger one finishes prompts sooner, a smaller one
# keeps the streams smoother.

# %% slideshow={"slide_type": "skip"} tags=["hide-cell"]
# The numbers of the paragraph above, from the simulated runs.
plain_s = float(np.median(decode_gaps(stall_runs["continuous"], range(8))))
worst = {p: max(decode_gaps(r, range(8))) for p, r in stall_runs.items()}
long_ttft = {p: r.requests[8].ttft_s for p, r in stall_runs.items()}
carrying = [it for it in stall_runs["chunked, 256-token budget"].iterations
            if any(c.request_id == 8 for c in it.prefill)]
assert len([it for it in stall_runs["continuous"].iterations
            if any(c.request_id == 8 for c in it.prefill)]) == 1
assert 11 <= len(carrying) <= 13 and all(it.duration_s < 2 * plain_s for it in carrying)
assert all(sum(c.tokens for c in it.prefill) + len(it.decode) <= 256 for it in carrying)
assert abs(worst["continuous"] / worst["chunked, 256-token budget"] / (3000 / 256) - 1) < 0.15
assert 1.0 < long_ttft["chunked, 256-token budget"] / long_ttft["continuous"] < 1.15
assert sum(1 / k for k in range(1, 17)) > 3  # section 5.4: the longest of 16 exponential outputs

# %% [markdown] slideshow={"slide_type": "fragment"}
# :::{important}
# Static batching wastes the slots that early finishers leave; continuous batching refills
# them every iteration but lets a long prefill stall everyone's next token; chunked prefill
# caps that stall with a per-iteration token budget.
# :::

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 5.5 Service-level objectives: TTFT, TPOT, attainment and goodput
#
# A user of a chat service notices two things (chapter 2): how long until the first token
# (TTFT, which now includes the time a request waits in the queue), and how fast the rest
# follow (TPOT, the mean gap between later tokens,
# $(t_{\text{finish}} - t_{\text{first}})/(G - 1)$). A service sets a limit on each, a
# service-level objective (SLO), and counts the share of requests that meet both, the **SLO
# attainment**. Its **goodput** is the highest request rate at which the attainment stays
# above a goal, say 90 % {cite:p}`zhong2024distserve`: throughput that users would accept.
#
# The experiment: chat-like requests (log-normal prompt and output lengths with the means of
# the ShareGPT conversations used to evaluate vLLM {cite:p}`kwon2023vllm`, 161 and 338 tokens)
# arrive as a Poisson process at a given rate, and Llama 2 7B serves them on one A10 with the
# KV capacity of section 5.2. SLOs: TTFT at most 2 s, TPOT at most 50 ms (a little over twice a
# batch-1 decode step, 22 ms on this card).
#
# Memory is managed by the simulator's default policy, `kv_memory="reservation"`: when a
# request is admitted it reserves KV slots for its prompt and its *true* output length, which
# the simulator knows in advance and a real server does not. That is the Orca (Oracle)
# baseline of {cite:t}`kwon2023vllm` (their Figure 2 and section 6.1): the best a server that
# reserves memory per request could do, an upper bound for Orca-style reservation, not a
# description of one. [Chapter 6](06_memory.ipynb) compares it with reserving the maximum
# length and with paged memory ({term}`PagedAttention`).

# %% slideshow={"slide_type": "-"}
TTFT_SLO, TPOT_SLO = 2.0, 0.050
a10_kv = bt.kv_capacity_tokens(llama, a10)
policies = {
    "static, B = 16": dict(policy="static", max_batch=16),
    "continuous, B = 16": dict(policy="continuous", max_batch=16),
    "chunked, B = 16, budget 256": dict(policy="chunked", max_batch=16, token_budget=256),
}
rates = [0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
attainment = {name: [] for name in policies}
for rate in rates:
    requests = sv.chat_workload(150, rate_per_s=rate, seed=0)
    for name, config in policies.items():
        run = sv.simulate(requests, step_time=a10_steps, kv_capacity_tokens=a10_kv, **config)
        attainment[name].append(run.slo_attainment(TTFT_SLO, TPOT_SLO))
goodputs = {name: sv.goodput(lambda rate: sv.chat_workload(150, rate_per_s=rate, seed=0),
                             TTFT_SLO, TPOT_SLO, attainment=0.9, max_rate_per_s=8.0,
                             tolerance_per_s=0.05, step_time=a10_steps,
                             kv_capacity_tokens=a10_kv, **config)
            for name, config in policies.items()}
lp.Table(["policy", "goodput at 90 % attainment (requests/s)"], list(goodputs.items()),
         title=f"Llama 2 7B on an A10, chat requests, TTFT <= {TTFT_SLO:.0f} s, "
               f"TPOT <= {TPOT_SLO * 1e3:.0f} ms",
         formats={"goodput at 90 % attainment (requests/s)": ".2f"})

# %% slideshow={"slide_type": "fragment"}
ax = new_axes("SLO attainment against request rate (Llama 2 7B, A10, simulated)",
              "request rate (requests/s)", "share of requests meeting both SLOs")
for (name, values), marker in zip(attainment.items(), ("o", "s", "^")):
    line, = ax.plot(rates, values, marker + "-", label=name)
    ax.axvline(goodputs[name], color=line.get_color(), linestyle=":", linewidth=1)
ax.axhline(0.9, color="gray", linestyle="--", linewidth=1, label="90 % goal")
ax.set_ylim(0, 1.05)
legend_below(ax)
plt.show()

# %% [markdown] slideshow={"slide_type": "-"}
# **Figure 6.** The share of requests that meet both SLOs as the arrival rate grows, with each
# policy's goodput (dotted): the rate at which its curve crosses the 90 % goal. Static
# batching fails at every rate, even the lowest: a request that arrives while a batch runs
# waits for that batch's longest output, tens of seconds with these output lengths, so TTFT
# blows the limit. Continuous batching holds the goal until the card runs out of bandwidth or
# KV memory, and then attainment falls off a cliff as queues build. Chunking changes little
# here, because these prompts are short and TPOT is a mean over the whole output, which
# smooths one stall away; it matters for long prompts and for limits on the *worst* gap
# (Figure 5).

# %% slideshow={"slide_type": "skip"} tags=["hide-cell"]
# The numbers of the paragraphs above, from the simulated runs.
decode_1_s = lp.step_costs(llama, "decode", 1, 338, attention="fused").on(a10).time_s
assert round(decode_1_s * 1e3) == 22 and 2 * decode_1_s < TPOT_SLO < 2.5 * decode_1_s
assert max(attainment["static, B = 16"]) < 0.9 and goodputs["static, B = 16"] == 0.0
assert abs(goodputs["chunked, B = 16, budget 256"] - goodputs["continuous, B = 16"]) < 0.2

# %% [markdown] slideshow={"slide_type": "fragment"}
# :::{important}
# Throughput alone does not describe a server: goodput, the highest load at which most
# requests still meet their TTFT and TPOT limits, does.
# :::

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 5.6 The published study, in simulation
#
# {cite:t}`daniel2023anyscale` served OPT-13B on one A100 40GB and compared serving systems on a
# throughput test built to vary output lengths: 1,000 requests sent at once, each with a
# 512-token prompt and an output length drawn from an exponential distribution of mean 128
# tokens, capped at 32, 128, 512 or 1,536 tokens in four datasets (the end-of-sequence token
# ignored, so each request generates exactly its drawn length). Their script caps by
# redrawing: a length above the cap is thrown away and drawn again, so the lengths follow an
# exponential *truncated* at the cap (`capped_exponential` in its `benchmark_throughput.py`)
# {cite:p}`anyscale2023benchmarks`. Clipping the draws at the cap would be another workload:
# at a cap of 32 it sets nearly four draws in five to exactly 32, for a mean of about 28
# tokens, where the truncated lengths average about 16. Their throughput, in tokens per
# second, counts the prompt tokens as well as the output tokens of every request over the
# run's duration (`calculate_throughput` in the same script); our comparison counts the same
# way. Their baseline is naive
# static batching with Hugging Face pipelines, at batch sizes of 16, 12, 8 and 4 for the four
# caps in their scripts {cite:p}`anyscale2023benchmarks`. They report, over that baseline, up
# to 23x the throughput with vLLM (continuous batching with paged KV memory), about 8x with
# continuous batching in Ray Serve and in Hugging Face's text-generation-inference, and about
# 4x with NVIDIA's FasterTransformer (an optimized implementation, static batching).
#
# `sv.throughput_workload(cap)` draws the same workload, truncated as theirs;
# `RooflineStepTime` prices OPT-13B on the A100 40GB; the static batch sizes are theirs, and
# continuous batching gets as many slots as the KV memory of section 5.2 admits.

# %% slideshow={"slide_type": "-"}
a100_steps = sv.RooflineStepTime(opt, a100)
opt_kv = bt.kv_capacity_tokens(opt, a100)
STATIC_BATCH = dict(zip(sv.THROUGHPUT_CAPS_TOKENS, (16, 12, 8, 4)))  # the study's scripts
study_rows, study_runs, study_tok_s = [], {}, {}
for cap in sv.THROUGHPUT_CAPS_TOKENS:
    requests = sv.throughput_workload(cap)
    static = sv.simulate(requests, "static", max_batch=STATIC_BATCH[cap], step_time=a100_steps,
                         kv_capacity_tokens=opt_kv)
    continuous = sv.simulate(requests, "continuous", max_batch=256, step_time=a100_steps,
                             kv_capacity_tokens=opt_kv)
    study_runs[cap] = (static, continuous)
    tokens = sum(r.total_tokens for r in requests)  # prompt + output, as the study counts
    study_tok_s[cap] = (tokens / static.makespan_s, tokens / continuous.makespan_s)
    resident = max(len(it.decode) + len(it.prefill) for it in continuous.iterations)
    study_rows.append((cap, np.mean([r.output_tokens for r in requests]), STATIC_BATCH[cap],
                       study_tok_s[cap][0], resident, study_tok_s[cap][1],
                       study_tok_s[cap][1] / study_tok_s[cap][0]))
lp.Table(["output cap", "mean output", "static B", "static tokens/s",
          "continuous: most running", "continuous tokens/s", "continuous / static"], study_rows,
         title="OPT-13B on one A100 40GB (roofline step times): the study's throughput test, "
               "tokens/s counting prompt + output tokens",
         formats={"mean output": ".1f", "static tokens/s": ",.0f", "continuous tokens/s": ",.0f",
                  "continuous / static": lambda v: v if isinstance(v, str) else f"{v:.1f}x"},
         footer=[("published", None, "16 .. 4", None, None, None,
                  "about 8x (TGI, Ray Serve); up to 23x (vLLM)")])

# %% slideshow={"slide_type": "fragment"}
ax = new_axes("The study's throughput test in simulation (OPT-13B, A100 40GB)",
              "cap on output length (tokens)", "throughput (prompt + output tokens/s)")
caps = list(sv.THROUGHPUT_CAPS_TOKENS)
ax.plot(caps, [study_tok_s[c][0] for c in caps], "s--", label="static, the study's batch sizes")
ax.plot(caps, [study_tok_s[c][1] for c in caps], "o-",
        label="continuous, KV reserved per request")
ax.set(xscale="log", yscale="log")
ax.set_xticks(caps, [str(c) for c in caps])
ax.xaxis.set_minor_locator(plt.NullLocator())
plain_log_ticks(ax.yaxis, [v for pair in study_tok_s.values() for v in pair])
legend_below(ax)
plt.show()

# %% [markdown] slideshow={"slide_type": "-"}
# **Figure 7.** Simulated throughput of OPT-13B on one A100 40GB against the cap on output
# length, counting prompt and output tokens as the study does, static batching at the study's
# batch sizes and continuous batching. The gap widens with the cap, which is the study's
# hypothesis: the more the output lengths vary, the more static batching loses to slots left
# empty, and here also to the smaller batches that longer outputs force on it. Both policies
# are fastest at the smallest cap, where the 512 prompt tokens, processed many hundreds to a
# step in prefill, are most of the tokens counted; as the cap grows, output tokens, one per request
# per step, take over. Static batching slows far more, because its batches shrink too;
# continuous batching levels off at the long caps, where the truncation hardly shortens the
# outputs any more and its batch stays as full as memory allows.

# %% slideshow={"slide_type": "skip"} tags=["hide-cell"]
# The numbers of section 5.6's prose, from the workloads and the simulated runs.
short = np.array([r.output_tokens for r in sv.throughput_workload(32)])
clipped = np.array([r.output_tokens for r in
                    sv.workload(1000, sv.Fixed(512), sv.Exponential(128, 32), seed=0)])
assert short.max() <= 32 and round(short.mean()) == 16
assert round(clipped.mean()) == 28 and 0.75 < np.mean(clipped == 32) < 0.8
ratios = [study_tok_s[c][1] / study_tok_s[c][0] for c in caps]
assert all(np.diff(ratios) > 0) and 1 < ratios[0] and ratios[-1] < 10
for policy in (0, 1):
    assert all(np.diff([study_tok_s[c][policy] for c in caps]) < 0)
slowdown = [study_tok_s[caps[0]][p] / study_tok_s[caps[-1]][p] for p in (0, 1)]
assert slowdown[0] > 3 * slowdown[1] and study_tok_s[512][1] / study_tok_s[1536][1] < 1.15

# %% [markdown] slideshow={"slide_type": "subslide"}
# The direction and the growth of the ratio agree with the study; the size of the ratio
# does not reach its 23x, and the reasons are instructive.
#
# - **Our baseline is much faster than theirs.** The simulated static batch runs at the
#   roofline, with every operator at the A100's datasheet bandwidth, and skips the finished
#   rows. Their baseline ran Hugging Face pipelines, which pad prompts and outputs, and whose
#   eager PyTorch code is far from the roofline. A ratio over a slow baseline is large.
# - **vLLM holds more requests at once.** Our scheduler reserves each request's whole KV
#   cache, prompt and output, when it is admitted (and knows the exact output length, which a
#   real server does not: the Orca (Oracle) baseline of {cite:t}`kwon2023vllm`, their
#   Figure 2). vLLM's paged memory allocates blocks as tokens are produced
#   {cite:p}`kwon2023vllm`, so more requests run at once, and at the long caps that is most of
#   its advantage over the other continuous systems.
# - **Memory.** Our capacity is the library's 40 GiB less the weights, about 21,000 tokens,
#   with nothing reserved for the runtime; the real systems had less.

# %% [markdown] slideshow={"slide_type": "fragment"}
# :::{important}
# The study's 23x is continuous batching *and* paged KV memory *and* an optimized kernel
# stack, measured against a slow static baseline. Scheduling alone, against a baseline at the
# same roofline, is worth several times, growing with the variance of output lengths.
# :::

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 5.7 A small leaderboard
#
# Public LLM performance leaderboards rank serving deployments by throughput and by latency
# percentiles on a fixed workload. Here is one for configurations of our own: a policy, a
# maximum batch and, for chunked prefill, a token budget; the workload is 200 chat requests
# all sent at once; the model is Llama 2 7B in fp16, simulated on three catalog GPUs with each
# part's KV capacity. Throughput counts output tokens over the makespan; TTFT includes
# queueing. As in section 5.5, every request reserves KV memory for its true output length:
# these are Orca (Oracle) servers in the terms of {cite:t}`kwon2023vllm` (their Figure 2),
# holding as many requests at once as a server that knew every output length in advance
# could, and fewer than paged memory would ([chapter 6](06_memory.ipynb)).

# %% slideshow={"slide_type": "-"}
configs = {
    "static B=8": dict(policy="static", max_batch=8),
    "static B=32": dict(policy="static", max_batch=32),
    "continuous B=8": dict(policy="continuous", max_batch=8),
    "continuous B=32": dict(policy="continuous", max_batch=32),
    "continuous B=128": dict(policy="continuous", max_batch=128),
    "chunked B=32/512": dict(policy="chunked", max_batch=32, token_budget=512),
    "chunked B=128/512": dict(policy="chunked", max_batch=128, token_budget=512),
}
burst = sv.chat_workload(200, rate_per_s=None, seed=1)
board = []
for gpu in ("A10", "L4", "H100 SXM"):
    steps = sv.RooflineStepTime(llama, gpu)
    for name, config in configs.items():
        run = sv.simulate(burst, step_time=steps, kv_capacity_tokens=bt.kv_capacity_tokens(llama, gpu),
                          **config)
        board.append((gpu, name, run.throughput_tok_s, run.percentile("ttft_s", 50),
                      run.percentile("ttft_s", 90), run.percentile("tpot_s", 50),
                      run.percentile("tpot_s", 90)))
board.sort(key=lambda row: -row[2])
lp.Table(["GPU", "configuration", "tokens/s", "TTFT p50", "TTFT p90", "TPOT p50", "TPOT p90"],
         board, title="Leaderboard: Llama 2 7B fp16, 200 chat requests at once (simulated)",
         formats={"tokens/s": ",.0f", "TTFT p50": lp.format_seconds,
                  "TTFT p90": lp.format_seconds, "TPOT p50": lp.format_seconds,
                  "TPOT p90": lp.format_seconds})

# %% slideshow={"slide_type": "fragment"}
def pareto(points):
    """Indices of the points (latency, throughput) that no other beats on both."""
    return [i for i, (x, y) in enumerate(points)
            if not any(x2 <= x and y2 >= y and (x2, y2) != (x, y) for x2, y2 in points)]


ax = new_axes("Throughput against latency per token (Llama 2 7B, simulated)",
              "median TPOT (ms)", "throughput (output tokens/s)")
for gpu, marker in zip(("A10", "L4", "H100 SXM"), ("o", "s", "^")):
    rows = [r for r in board if r[0] == gpu]
    points = [(r[5] * 1e3, r[2]) for r in rows]
    front = sorted(points[i] for i in pareto(points))
    line, = ax.plot(*zip(*front), "-", linewidth=1)
    ax.plot(*zip(*points), marker, color=line.get_color(), label=gpu)
    best = max(rows, key=lambda r: r[2])
    ax.annotate(best[1], (best[5] * 1e3, best[2]), fontsize=9, xytext=(-6, 4), ha="right",
                textcoords="offset points")
ax.set(xscale="log", yscale="log")
plain_log_ticks(ax.xaxis, [r[5] * 1e3 for r in board])
plain_log_ticks(ax.yaxis, [r[2] for r in board])
legend_below(ax, ncol=3)
plt.show()

# %% [markdown] slideshow={"slide_type": "-"}
# **Figure 8.** Each configuration of the leaderboard as a point, median TPOT against
# throughput, per GPU; the line joins each GPU's Pareto front, the configurations that no
# other beats on both counts. Up and to the left is better. Larger batches buy throughput
# with a longer TPOT, as section 5.1 predicts (each step reads more KV cache). Static
# configurations give at most about half the throughput of continuous ones with the same batch
# limit, because their slots idle; the emptied batches make their steps a little shorter, which
# puts the smallest static batch at the far left of each front. The H100's whole cloud
# sits higher, by more than its bandwidth ratio over the A10, because its 80 GiB also hold
# more requests at once. The L4 has half the A10's bandwidth and sits about half as high. A
# leaderboard row is a point on such a plot: a ranking by throughput alone hides which
# latency it was bought with.

# %% slideshow={"slide_type": "skip"} tags=["hide-cell"]
# The caption above, from the simulated leaderboard.
by = {(r[0], r[1]): r for r in board}
for gpu in ("A10", "L4", "H100 SXM"):
    small, large = by[(gpu, "continuous B=8")], by[(gpu, "continuous B=128")]
    assert large[2] > small[2] and large[5] > small[5]
    for b in (8, 32):
        static, continuous = by[(gpu, f"static B={b}")], by[(gpu, f"continuous B={b}")]
        assert static[2] < 0.55 * continuous[2] and static[5] < continuous[5]
    rows = [r for r in board if r[0] == gpu]
    assert min(rows, key=lambda r: r[5])[1] == "static B=8"
best = {gpu: max(r[2] for r in board if r[0] == gpu) for gpu in ("A10", "L4", "H100 SXM")}
h100 = lp.get_accelerator("H100 SXM")
assert best["H100 SXM"] / best["A10"] > h100.mem_bandwidth / a10.mem_bandwidth
assert 0.4 < best["L4"] / best["A10"] < 0.6

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 5.8 The real engine on this machine
#
# The simulator's numbers come from a step-time model. `llmperf.measured.engine` runs the same
# `Scheduler` on the reference model instead, the way vLLM and nano-vllm do. Each iteration is
# **one forward pass**: the admitted prompts (or their chunks) and one new token of every
# decoding request are laid end to end as one ragged batch of tokens, each with its own
# position, with no padding (`llmperf.measured.varlen.RaggedBatch`). The weights are read once
# per iteration, whatever the mix. Inside attention, each request's queries read only its own
# keys: a row of a contiguous KV cache, or its blocks in a paged one (chapter 6). After the
# pass, every request that finished its prompt or decoded samples its next token. A request
# ends at a stop token, or at its `output_tokens`, the most it may generate; the scheduler is
# told when that happens and never needs a request's length in advance.
#
# `Engine(...).run(requests)` returns the simulator's `RunResult`, so everything above applies
# to it unchanged. The requests here are small enough to keep the chapter quick: 24 of them,
# prompts of 8 to 32 tokens and outputs exponential with mean 24 tokens, capped at 64, on
# `ref-tiny`. They arrive either all at time 0 (heavy load) or as a Poisson process of 40 per
# second (light load: the engine is often idle between arrivals). Its matrices are so small
# that splitting each product over several CPU threads costs more than it saves, so on a CPU
# the engine runs on one thread.

# %% slideshow={"slide_type": "-"} tags=["nbval-ignore-output"]
from llmperf.measured.engine import Engine

if device == "cpu":
    torch.set_num_threads(1)
tiny = Transformer(lp.get_model("ref-tiny"), device=device, dtype=tdtype, seed=0)
loads = {"heavy": sv.workload(24, sv.Uniform(8, 32), sv.Exponential(24, 64), seed=3),
         "light": sv.workload(24, sv.Uniform(8, 32), sv.Exponential(24, 64), rate_per_s=40,
                              seed=3)}
engine_requests = loads["heavy"]
policies = {"static": {}, "continuous": {}, "chunked": dict(token_budget=16)}
Engine(tiny, max_batch=4).run(engine_requests[:4])  # warm-up: first calls allocate
engine_runs, samples = {}, []  # engine_runs[load, policy]: three runs, fastest first
with watch_load() as load:
    for _ in range(3):  # rounds: a busy moment hits every configuration alike
        for name, requests in loads.items():
            for policy, extra in policies.items():
                engine = Engine(tiny, max_batch=8, policy=policy, **extra)
                engine_runs.setdefault((name, policy), []).append(engine.run(requests))
                samples += engine.step_samples
median_run = {key: sorted(runs, key=lambda r: r.makespan_s)[1]
              for key, runs in engine_runs.items()}
iterations = {p: {len(r.iterations) for r in engine_runs["heavy", p]} for p in policies}
assert all(len(n) == 1 for n in iterations.values())  # all at time 0: no clock in the schedule
assert min(iterations["continuous"]) < min(iterations["static"])


def fit_step_time(samples):
    """The linear step time fitted to (tokens, KV tokens, seconds, after idle) samples; when
    noise makes the KV coefficient negative, the fit without it."""
    try:
        return sv.fit_linear_step_time(samples)
    except ValueError:
        design = np.array([(1.0, tokens, idle) for tokens, _, _, idle in samples])
        seconds = [s for _, _, s, _ in samples]
        (base, per_token, wake), *_ = np.linalg.lstsq(design, seconds, rcond=None)
        return sv.LinearStepTime(max(base, 0.0), max(per_token, 0.0), 0.0, max(wake, 0.0))


fitted = fit_step_time(samples)
predicted_runs = {(name, p): sv.simulate(loads[name], p, max_batch=8, step_time=fitted, **extra)
                  for name in loads for p, extra in policies.items()}
print(f"fitted step time: {lp.format_seconds(fitted.base_s)} per iteration + "
      f"{lp.format_seconds(fitted.per_token_s)} per token + "
      f"{lp.format_seconds(fitted.per_kv_token_s)} per KV token read, + "
      f"{lp.format_seconds(fitted.wake_s)} for an iteration that starts from idle")


gaps = {key: (predicted_runs[key].makespan_s / r.makespan_s - 1,
               predicted_runs[key].percentile("ttft_s", 50) / r.percentile("ttft_s", 50) - 1)
        for key, r in median_run.items()}
refit_rows = [(name, p, len(r.iterations), r.makespan_s, predicted_runs[name, p].makespan_s,
               gaps[name, p][0], r.percentile("ttft_s", 50),
               predicted_runs[name, p].percentile("ttft_s", 50), gaps[name, p][1])
              for (name, p), r in median_run.items()]
display(lp.Table(["load", "policy", "iterations", "measured makespan", "predicted", "off by",
                  "measured median TTFT", "predicted ", "off by "], refit_rows,
                 title=f"ref-tiny on {device}: the engine (median of three runs), and the "
                       "simulator with the step time fitted to it",
                 formats={"measured makespan": lp.format_seconds, "predicted": lp.format_seconds,
                          "measured median TTFT": lp.format_seconds,
                          "predicted ": lp.format_seconds, "off by": "+.0%", "off by ": "+.0%"}))
heavy_ttft = {p: median_run["heavy", p].percentile("ttft_s", 50) for p in policies}
print(f"heavy load, median TTFT, continuous against static: "
      f"x{heavy_ttft['continuous'] / heavy_ttft['static']:.2f} (the simulator: "
      f"x{predicted_runs['heavy', 'continuous'].percentile('ttft_s', 50) / predicted_runs['heavy', 'static'].percentile('ttft_s', 50):.2f})")
worst = max(abs(g) for pair in gaps.values() for g in pair)
print(f"largest gap between simulator and engine: {worst:.0%}")
print(load.note())

# %% [markdown] slideshow={"slide_type": "subslide"}
# The engine runs, on your machine, what the simulator ran. Continuous batching needs fewer
# iterations than static batching for the same tokens at heavy load (the iterations column,
# the same in every run: the scheduler's decisions do not depend on the clock when every
# request arrives at once). The line under the table sets the median TTFT factor measured
# here beside the one the simulator predicts. The step time fitted to the engine's own
# iterations has a fixed cost per iteration, a cost per token, a cost per KV token read and
# a cost of waking up, by least squares over all eighteen runs. The last term matters at
# light load: an iteration that starts after the engine sat idle runs slower on a CPU (the
# caches hold what other programs touched meanwhile, and the core may have slowed down), and
# at light load almost every request's first iteration is such a one, so its TTFT is that
# iteration. Because an iteration is one forward pass, those four terms are what it costs;
# an engine that ran each prompt chunk as a pass of its own would pay the fixed cost once
# per chunk, which no per-iteration model can follow. The
# simulator, run with the fitted step time, predicts the makespan and the median TTFT of
# every policy at both loads, and the table says how far off it is. Look at the last
# printed line: within about 25 percent is what to expect from a model this simple. A wider
# gap means the iterations' cost is not linear in those four terms on this machine (a cache
# boundary, a thread pool waking up, another program's load, which the note says whether
# there was). At light load, a median TTFT of a few milliseconds moves by a large fraction
# when a request lands in the middle of an iteration instead of at its start, so the light
# rows' TTFT gap is the noisiest.
#
# The same engine fills a leaderboard of its own: configurations of the reference model
# ranked by measured throughput, with measured TTFT and TPOT percentiles. Each configuration
# runs five times; the table shows the run of median throughput and the range of the five.

# %% slideshow={"slide_type": "-"} tags=["nbval-ignore-output"]
engine_configs = {
    "static B=4": dict(policy="static", max_batch=4),
    "static B=8": dict(policy="static", max_batch=8),
    "continuous B=4": dict(policy="continuous", max_batch=4),
    "continuous B=8": dict(policy="continuous", max_batch=8),
    "continuous B=16": dict(policy="continuous", max_batch=16),
    "chunked B=16/32": dict(policy="chunked", max_batch=16, token_budget=32),
}
engine_board = []
with watch_load() as load:
    for name, config in engine_configs.items():
        runs = sorted((Engine(tiny, **config).run(engine_requests) for _ in range(5)),
                      key=lambda r: r.throughput_tok_s)
        run = runs[2]
        engine_board.append((name, run.throughput_tok_s,
                             f"{runs[0].throughput_tok_s:,.0f} to {runs[-1].throughput_tok_s:,.0f}",
                             run.percentile("ttft_s", 50), run.percentile("ttft_s", 90),
                             run.percentile("tpot_s", 50), run.percentile("tpot_s", 90)))
engine_board.sort(key=lambda row: -row[1])
display(lp.Table(["configuration", "tokens/s", "five runs", "TTFT p50", "TTFT p90", "TPOT p50",
                  "TPOT p90"], engine_board,
                 title=f"Leaderboard: ref-tiny, 24 requests at once, measured on {device}",
                 formats={"tokens/s": ",.0f", **{c: lp.format_seconds for c in
                                                 ("TTFT p50", "TTFT p90", "TPOT p50", "TPOT p90")}}))
print(load.note())

# %% slideshow={"slide_type": "fragment"}
ax = new_axes(f"Measured throughput against latency per token (ref-tiny, {device})",
              "median TPOT (ms)", "throughput (output tokens/s)")
points = [(row[5] * 1e3, row[1]) for row in engine_board]
front = sorted(points[i] for i in pareto(points))
ax.plot(*zip(*front), "-", color="gray", linewidth=1, label="Pareto front")
for row, (x, y) in zip(engine_board, points):  # one colour per configuration, run after run
    marker = {"static": "o", "continuous": "s", "chunked": "^"}[row[0].split()[0]]
    ax.plot(x, y, marker, color=f"C{list(engine_configs).index(row[0])}", markersize=8, ls="",
            label=row[0])
legend_below(ax, ncol=3)
plt.show()

# %% [markdown] slideshow={"slide_type": "-"}
# **Figure 9.** The engine's leaderboard on your machine: each configuration's median TPOT
# against its throughput (circles static, squares continuous, the triangle chunked), with the
# Pareto front in gray. Compare its shape with Figure 8 rather than its numbers. Figure 8's
# larger batches move up (more tokens per step) and somewhat right (each step does more work),
# and its static configurations give far less throughput than continuous ones with the same
# batch limit; look whether yours do. Where a step's fixed cost dominates, as for a tiny model
# on a CPU, larger batches cost almost no TPOT and the front is nearly flat in latency. The
# table's range of five runs says how far each point could move on a rerun.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 5.9 What a decode step reads: padded against ragged
#
# A simple batched engine lays a decode step out as a rectangle: $B$ rows of one token, each
# row reading as many keys as the longest context in the batch, the shorter rows' extra keys
# masked. Four requests, one with a 200-token prompt and three with 4: every step reads
# $4 \times 201$ keys, while the requests hold 216. The scheduler's own count, the one the
# simulator's step time and the memory fit use, is 216, and so is what the engine's ragged
# step reads: each request attends to its own context only, so the step reads
# $\sum_i N_i$ keys instead of $B \max_i N_i$. The waste of the rectangle grows with the
# spread of the contexts, which continuous batching makes the normal case: requests join at
# every iteration, so the batch always mixes old and new ones. Below, a batch of 16 requests
# of Llama 2 7B whose contexts fall evenly from 2,048 tokens down to $2048(1 - s)$ for a
# spread $s$, and the same for a batch with one 2,048-token request among short ones.

# %% slideshow={"slide_type": "-"}
def spread_contexts(batch, longest, spread):
    """Contexts falling evenly from `longest` to longest * (1 - spread), at least 1."""
    return [max(1, round(longest * (1 - spread * i / (batch - 1)))) for i in range(batch)]


kv_per_token = llama.kv_bytes_per_token("fp16")
spreads = np.linspace(0, 1, 21)
padded_gb = [16 * 2048 * kv_per_token / 1e9 for _ in spreads]
ragged_gb = [sum(spread_contexts(16, 2048, s)) * kv_per_token / 1e9 for s in spreads]
one_long_gb = [(2048 + 15 * max(1, round(2048 * (1 - s)))) * kv_per_token / 1e9 for s in spreads]
ax = new_axes("KV bytes one decode step reads (Llama 2 7B, fp16, 16 requests)",
              "spread of the contexts s (shortest = 2,048 (1 - s) tokens)", "KV read per step (GB)")
ax.plot(spreads, padded_gb, "-", label="padded to the longest (both batches)")
ax.plot(spreads, ragged_gb, "-", label="ragged, contexts falling evenly")
ax.plot(spreads, one_long_gb, "--", label="ragged, one long and 15 short")
ax.set_ylim(0, None)
legend_below(ax)
plt.show()

# %% slideshow={"slide_type": "skip"} tags=["hide-cell"]
# The figure's numbers in the prose below, from the library.
assert round(padded_gb[0], 1) == 17.2 and round(llama.param_count() * 2 / 1e9, 1) == 13.5
assert abs(ragged_gb[-1] / padded_gb[-1] - 0.5) < 0.05 and one_long_gb[-1] / padded_gb[-1] < 0.07

# %% [markdown] slideshow={"slide_type": "-"}
# **Figure 10.** The KV bytes one decode step reads, from `ModelConfig.kv_bytes_per_token`: the
# padded step reads $16 \times 2048$ tokens' worth (17.2 GB) whatever the spread, the ragged
# one only what the requests hold, half of it when contexts fall evenly to nothing, and one
# sixteenth when one long request sits among very short ones. Decode is memory bound, so on
# a GPU those bytes are time (section 5.1), beside the weights' 13.5 GB read once per step.
#
# *Measured on this machine.* `llmperf.measured.decode_layouts.compare_decode_layouts` runs
# one decode step of `ref-small` both ways on the same cache, in alternating rounds: padded
# (`KVCache.slots`, the model's batched path) and ragged (`RaggedBatch`, the engine's), for 16
# requests of at most 1,024 tokens.

# %% slideshow={"slide_type": "-"} tags=["nbval-ignore-output"]
from llmperf.measured.decode_layouts import compare_decode_layouts

small = Transformer(lp.get_model("ref-small"), device=device, dtype=tdtype, max_seq_len=1024)
layout_cases = {"equal (s = 0)": spread_contexts(16, 1024, 0.0),
                "falling evenly to 32": spread_contexts(16, 1024, 1 - 32 / 1024),
                "one long, 15 of 32": [1024] + [32] * 15}
with watch_load() as load:
    layouts = {name: compare_decode_layouts(small, contexts, repeat=5, rounds=3)
               for name, contexts in layout_cases.items()}
display(lp.Table(["contexts", "KV read, padded", "KV read, ragged", "step, padded",
                  "step, ragged", "padded / ragged time"],
                 [(name, r.padded_kv_bytes, r.ragged_kv_bytes, r.padded_s, r.ragged_s,
                   r.padded_s / r.ragged_s) for name, r in layouts.items()],
                 title=f"ref-small on {device}: one decode step of 16 requests (median of "
                       "three rounds)",
                 formats={"KV read, padded": lp.format_bytes, "KV read, ragged": lp.format_bytes,
                          "step, padded": lp.format_seconds, "step, ragged": lp.format_seconds,
                          "padded / ragged time": ".2f"}))
print(load.note())

# %% [markdown] slideshow={"slide_type": "-"}
# Read the last column against the bytes. With equal contexts the two layouts read the same
# keys, and the ragged step pays for running each request's attention as a call of its own
# (a Python loop over requests on the CPU, where PyTorch ships no varlen attention kernel),
# so expect it level or a little slower. The more the contexts differ, the more the padded
# step reads keys it then masks, and the ragged one should pull ahead, most with one long
# request among short ones. How far depends on how large attention's share of the step is:
# `ref-small`'s weights are small beside these contexts' keys, which is the case the figure
# shows for long contexts on a GPU. FlashAttention's varlen kernel and vLLM's paged attention
# run all requests' attention in one kernel launch, so a real server pays no per-request
# overhead; this book's engine keeps the loop over requests on every device, for clarity, so
# on a GPU it pays a kernel launch per request and layer.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 5.10 Lengths a server does not know
#
# Every simulation so far knew each request's output length when it arrived. A server does
# not: a request ends when the model draws an end-of-sequence token, or at the `max_tokens`
# cap its client set. The engine works that way: `Engine(..., stop_tokens={ids})` ends a
# request at its first stop token (kept as its last output token) or at its
# `output_tokens`, now a cap, and tells the scheduler in that iteration. Below, eight
# requests with a cap of 24 tokens and one stop token, chosen as the token request 0 draws
# third, run through the engine and alone: each stops where generating it alone first draws
# that token.

# %% slideshow={"slide_type": "-"}
from llmperf.measured.generate import generate

stop_requests = sv.workload(8, sv.Uniform(8, 32), sv.Fixed(24), seed=5)
stop_prompts = [torch.randint(0, tiny.config.vocab_size, (r.prompt_tokens,),
                              generator=torch.Generator().manual_seed(i)).tolist()
                for i, r in enumerate(stop_requests)]
alone = [generate(tiny, p, 24).tokens[0].tolist() for p in stop_prompts]
stop_token = alone[0][2]
stopper = Engine(tiny, max_batch=4, stop_tokens={stop_token})
stop_run = stopper.run(stop_requests, stop_prompts)
for out, full in zip(stopper.outputs, alone):  # a prefix of the capped tokens, ending at the stop
    assert out == (full[:full.index(stop_token) + 1] if stop_token in full else full)
lp.Table(["request", "cap (tokens)", "generated", "ended by"],
         [(i, r.output_tokens, res.generated_tokens,
           "stop token" if stopper.outputs[i][-1] == stop_token else "cap")
          for i, (r, res) in enumerate(zip(stop_requests, stop_run.requests))],
         title=f"ref-tiny, stop token {stop_token}: tokens generated against the cap")

# %% [markdown] slideshow={"slide_type": "subslide"}
# Not knowing lengths costs memory when memory is reserved per request. A server that
# reserves must reserve what a request *may* need: its prompt and its cap (the engine's
# contiguous cache reserves a slot as long as the longest prompt plus cap of its run), or,
# knowing nothing of the request, the whole context window. The simulator still knows the true
# lengths (it is a study tool), so it can put a price on not knowing them. Section 5.5's chat
# requests on the A10 at 1.5 requests per second, continuous batching with up to 16 requests,
# under four memory policies: reservation of the true length (the oracle of section 5.5),
# reservation of each prompt plus a cap of 2,048 output tokens (the workload's own cap, so no
# request is cut short: `reserve_output_tokens`), reservation of Llama 2's whole 4,096-token
# context, and paged memory, which takes blocks as tokens arrive and needs no length at all
# ([chapter 6](06_memory.ipynb)).

# %% slideshow={"slide_type": "-"}
unknown_requests = sv.chat_workload(300, rate_per_s=1.5, seed=0)
memories = {"reserve the true length (oracle)": {},
            "reserve prompt + the 2,048-token cap": dict(reserve_output_tokens=sv.CHAT_CAP_TOKENS),
            "reserve the 4,096-token context": dict(reserve_tokens=llama.max_seq_len),
            "paged (no length needed)": dict(kv_memory="paged")}
unknown_runs = {name: sv.simulate(unknown_requests, "continuous", max_batch=16,
                                  step_time=a10_steps, kv_capacity_tokens=a10_kv, **kw)
                for name, kw in memories.items()}
lp.Table(["KV memory", "requests in flight (mean)", "output tokens/s", "median TTFT",
          "SLO attainment"],
         [(name, r.mean_in_flight, r.throughput_tok_s, r.percentile("ttft_s", 50),
           r.slo_attainment(TTFT_SLO, TPOT_SLO)) for name, r in unknown_runs.items()],
         title="Llama 2 7B on an A10, chat requests at 1.5/s, continuous B = 16 (simulated)",
         formats={"requests in flight (mean)": ".1f", "output tokens/s": ",.0f",
                  "median TTFT": lp.format_seconds, "SLO attainment": ".0%"})

# %% slideshow={"slide_type": "skip"} tags=["hide-cell"]
# The prose below: reserving the cap or the context admits fewer requests and misses the
# SLOs; paging matches the oracle without knowing any length.
_oracle, _cap, _context, _paged = unknown_runs.values()
assert _context.mean_in_flight < 0.5 * _oracle.mean_in_flight
assert _cap.mean_in_flight < 0.8 * _oracle.mean_in_flight
assert 0.85 <= _oracle.slo_attainment(TTFT_SLO, TPOT_SLO) < 0.95
assert _cap.slo_attainment(TTFT_SLO, TPOT_SLO) < 0.5 * _oracle.slo_attainment(TTFT_SLO, TPOT_SLO)
assert _context.slo_attainment(TTFT_SLO, TPOT_SLO) < 0.5 * _oracle.slo_attainment(TTFT_SLO, TPOT_SLO)
assert abs(_paged.throughput_tok_s / _oracle.throughput_tok_s - 1) < 0.05

# %% [markdown] slideshow={"slide_type": "-"}
# Reserving the cap holds fewer requests than the oracle, and the context-sized reservation
# far fewer: the reserved slots are held by requests that use a few hundred tokens of them.
# At this rate the oracle meets both SLOs for about nine requests in ten, so the few requests
# the others lose are enough for queues to build, and TTFT grows by orders of magnitude. Paged memory serves as if it
# knew every length. That is the case for paging, and chapter 6 takes it apart.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 5.11 Prefix caching
#
# Many requests begin alike: a system prompt shared by every request of an application, or
# the earlier turns of a conversation, sent again with each new turn. Their keys and values
# are the same, because a token's K and V depend only on the tokens before it. *Automatic
# prefix caching* (vLLM's name for it) keeps them: with paged memory, each full block of a
# prompt is identified by its tokens and everything before them; a new request reuses the
# cached blocks of its longest cached prefix and prefills only the rest. Blocks of finished
# requests stay cached until memory is needed, and then the least recently used go first.
# `Engine(..., kv_memory="paged", prefix_caching=True)` does it on the model, and
# `sv.simulate(..., kv_memory="paged", prefix_caching=True)` with the same policy in the
# simulator (both from the same `llmperf.serving.memory.PagedMemory`). The hit rate is the
# share of prompt tokens served from the cache.
#
# *Predict first.* Twenty-four requests share a system prompt of $S$ tokens and add 8 to 32
# tokens of their own. With the cache, what share of prompt tokens is computed, and how does
# TTFT change as $S$ grows?
#
# *Measured.* The engine serves them as a Poisson stream of 100 per second, with and without
# the cache, for four system prompts; the simulator runs the same requests with a step time
# fitted to the iterations of these runs and of section 5.8's.

# %% slideshow={"slide_type": "-"} tags=["nbval-ignore-output"]
system_sizes = (32, 96, 192, 288)
prefix_loads = {s: sv.shared_prefix_workload(24, s, sv.Uniform(8, 32), sv.Fixed(8),
                                             rate_per_s=100, seed=4,
                                             vocab_size=tiny.config.vocab_size)
                for s in system_sizes}
prefix_kv = 8 * 21 * 16  # 8 requests of up to 336 tokens, in blocks of 16: engine and simulator
prefix_runs, prefix_samples = {}, []
with watch_load() as load:
    for _ in range(3):
        for s, requests in prefix_loads.items():
            for cached in (False, True):
                engine = Engine(tiny, max_batch=8, kv_memory="paged", prefix_caching=cached,
                                kv_capacity_tokens=prefix_kv)
                prefix_runs.setdefault((s, cached), []).append(engine.run(requests))
                prefix_samples += engine.step_samples
prefix_fit = fit_step_time(samples + prefix_samples)
prefix_median = {key: sorted(runs, key=lambda r: r.percentile("ttft_s", 50))[1]
                 for key, runs in prefix_runs.items()}
prefix_sim = {(s, cached): sv.simulate(prefix_loads[s], "continuous", max_batch=8,
                                       step_time=prefix_fit, kv_memory="paged",
                                       kv_capacity_tokens=prefix_kv,
                                       prefix_caching=cached)
              for s, cached in prefix_median}
display(lp.Table(["system prompt", "cache", "hit rate", "prompt tokens computed",
                  "median TTFT, engine", "simulator", "hit rate, simulator"],
                 [(s, "on" if cached else "off", r.prefix_hit_rate,
                   r.prompt_tokens - r.cached_prompt_tokens, r.percentile("ttft_s", 50),
                   prefix_sim[s, cached].percentile("ttft_s", 50),
                   prefix_sim[s, cached].prefix_hit_rate)
                  for (s, cached), r in prefix_median.items()],
                 title=f"ref-tiny on {device}: a shared system prompt, 24 requests at 100/s "
                       "(median of three runs)",
                 formats={"hit rate": ".0%", "prompt tokens computed": ",d",
                          "median TTFT, engine": lp.format_seconds,
                          "simulator": lp.format_seconds, "hit rate, simulator": ".0%"}))
print(f"fitted step time: {lp.format_seconds(prefix_fit.base_s)} + "
      f"{lp.format_seconds(prefix_fit.per_token_s)} per token + "
      f"{lp.format_seconds(prefix_fit.per_kv_token_s)} per KV token + "
      f"{lp.format_seconds(prefix_fit.wake_s)} from idle")
print(load.note())

# %% slideshow={"slide_type": "skip"} tags=["hide-cell"]
# The prose: the engine and the simulator find the same hits (the same policy), and the hit
# rate grows with the shared share of the prompt.
for key, r in prefix_median.items():
    assert r.prefix_hit_rate == prefix_sim[key].prefix_hit_rate
_hits = [prefix_median[s, True].prefix_hit_rate for s in system_sizes]
assert _hits == sorted(_hits) and _hits[0] > 0.4

# %% slideshow={"slide_type": "fragment"}
ax = new_axes(f"Median TTFT against the prefix cache's hit rate (ref-tiny, {device})",
              "hit rate (prompt tokens served from the cache)", "median TTFT (ms)")
for cached, marker in ((False, "o"), (True, "s")):
    label = "cache on" if cached else "cache off"
    hits = [prefix_median[s, cached].prefix_hit_rate for s in system_sizes]
    ax.plot(hits, [prefix_median[s, cached].percentile("ttft_s", 50) * 1e3 for s in system_sizes],
            marker, color="C0" if cached else "C1", ls="", markersize=8,
            label=f"engine, {label}")
    ax.plot(hits, [prefix_sim[s, cached].percentile("ttft_s", 50) * 1e3 for s in system_sizes],
            marker, color="C0" if cached else "C1", ls="", markersize=8, fillstyle="none",
            label=f"simulator, {label}")
for s in system_sizes:
    ax.annotate(f"S={s}", (prefix_median[s, True].prefix_hit_rate,
                           prefix_median[s, True].percentile("ttft_s", 50) * 1e3),
                textcoords="offset points", xytext=(4, 4), fontsize=9)
legend_below(ax, ncol=2)
plt.show()

# %% [markdown] slideshow={"slide_type": "-"}
# **Figure 11.** Median TTFT of the engine (filled) and of the simulator (hollow), without the
# cache (all at hit rate 0, one point per system prompt) and with it. Without the cache, TTFT
# grows with the system prompt, which every request computes again; with it, the system
# prompt is computed once and each later request prefills only its own part, so TTFT stays
# nearly flat while the hit rate climbs toward $S/(S + \bar u)$ for a mean user part
# $\bar u$. The engine and the simulator find exactly the same hits, since they share the
# memory policy (the cell above checks); how close their TTFTs are depends on how well the
# fitted step time prices a prefill on this machine. The first requests find nothing cached:
# a block is cached only once its keys are computed, so requests that arrive together all
# compute the prefix, which is why the hit rate stays a little below the formula.
#
# The simulator carries this to a workload the engine cannot run here: conversations of four
# turns, each turn sending the whole conversation so far, with a 300-token system prompt,
# Llama 2 7B on the A10.

# %% slideshow={"slide_type": "-"}
conversations = sv.multi_turn_workload(40, 4, sv.LogNormal(100, 1.0, 1024),
                                       sv.LogNormal(200, 1.0, 1024), think_s=60,
                                       rate_per_s=0.5, system_tokens=300, seed=0)
turn_runs = {cached: sv.simulate(conversations, "continuous", max_batch=16,
                                 step_time=a10_steps, kv_capacity_tokens=a10_kv,
                                 kv_memory="paged", prefix_caching=cached)
             for cached in (False, True)}
lp.Table(["prefix cache", "hit rate", "prompt tokens computed", "median TTFT", "p90 TTFT"],
         [("on" if cached else "off", r.prefix_hit_rate, r.prompt_tokens - r.cached_prompt_tokens,
           r.percentile("ttft_s", 50), r.percentile("ttft_s", 90))
          for cached, r in turn_runs.items()],
         title="Llama 2 7B on an A10: 40 conversations of 4 turns (simulated)",
         formats={"hit rate": ".0%", "prompt tokens computed": ",d",
                  "median TTFT": lp.format_seconds, "p90 TTFT": lp.format_seconds})

# %% [markdown] slideshow={"slide_type": "-"}
# Later turns find the earlier turns' prompts cached (the replies themselves are not cached
# here: the simulator has no output token ids, so only prompt blocks are kept), so the
# prompt tokens computed fall by the hit rate and TTFT with them. On a GPU, where a long
# prefill is compute bound, that saving is the whole prefill of the shared part.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Worked problems
#
# **Problem 1 (the ceiling with grouped-query attention).** Llama 3 8B serves 2,048-token
# contexts on an H100 SXM in fp16. What is the ceiling of the decode step's intensity as $B$
# grows, and does any batch turn the step compute bound? What if the KV cache is stored in
# int8 ({term}`quantization`)?
#
# <details><summary>Answer</summary>
#
# The ceiling is $P/(b_{kv} L N h_{kv} d) + 2h/(b_{kv} h_{kv})$. With $P = 8.03$ billion,
# $L = 32$, $N = 2048$, $h_{kv} = 8$, $d = 128$ and $b_{kv} = 2$: $8.03\times10^9 / (2 \cdot 32
# \cdot 2048 \cdot 8 \cdot 128) \approx 59.8$, plus $32/8 = 4$, about 63.8 FLOP/byte. The H100
# SXM's fp16 ridge is about 295 FLOP/byte, so no batch makes the step compute bound. With an
# int8 cache ($b_{kv} = 1$) both terms double, to about 127.7: still below. Only shorter
# contexts (or fewer KV heads) bring the ceiling above the ridge.
#
# </details>
#
# **Problem 2 (the throughput ceiling).** Ignore capacity. For Llama 2 7B on an A10 with every
# sequence at $N = 1024$ cached tokens, what throughput in tokens per second does decode
# approach as $B$ grows?
#
# <details><summary>Answer</summary>
#
# Every step reads the weights once and each sequence's KV cache, $N \cdot 2 b_{kv} L h_{kv} d =
# 1024 \times 0.52$ MB $\approx 537$ MB, which takes $0.90$ ms per sequence at 600 GB/s.
# Past the critical batch the weights' products are compute bound and cost $2P/\Pi \approx
# 0.11$ ms per sequence at 125 TFLOP/s; the attention stays memory bound. So the step time
# grows as $B \cdot (2P/\Pi + 537\text{ MB}/\beta)$ and throughput approaches
# $1/(0.11 + 0.90)$ ms, about 1,000 tokens/s, less than the $\beta / 537\text{ MB} \approx
# 1{,}100$ that counting bytes alone would give. The per-operator model (`lp.decode_step_time`)
# levels off within a few percent of it (the cell below checks). Memory runs out long before:
# about twenty such sequences fit, where throughput is roughly
# $20 / ((13.5 + 20 \cdot 0.54)\text{ GB} / 600\text{ GB/s}) \approx 500$ tokens/s.
#
# </details>
#
# **Problem 3 (timelines by hand).** Four requests arrive at time 0 with output lengths 5, 2,
# 3 and 1 tokens; two slots; every iteration takes one second. Give each request's TTFT and
# finish time under static and under continuous batching.
#
# <details><summary>Answer</summary>
#
# Static: R0 and R1 are prefilled in iteration 0 (first tokens at 1 s) and decode together; R1
# finishes at 2 s, R0 at 5 s. Only then are R2 and R3 admitted: first tokens at 6 s, R3 done
# at 6 s, R2 at 8 s. TTFTs 1, 1, 6, 6 s. Continuous: R1 leaves at 2 s, so R2 takes its slot in
# iteration 2 (first token at 3 s, done at 5 s). R0 also finishes at 5 s, so R3 is admitted in
# iteration 5 and finishes at 6 s, its single token being its first. TTFTs 1, 1, 3, 6 s; the
# makespan is 6 s instead of 8.
#
# </details>
#
# **Problem 4 (requests that fit, with a reserve).** A server keeps 2 GiB aside for the
# runtime and activations. How many 2,048-token requests of Llama 2 13B fit on an A100 SXM
# 80GB in fp16?
#
# <details><summary>Answer</summary>
#
# Weights $2 \times 13.02 \approx 26.0$ GB; KV per token $2 \cdot 2 \cdot 40 \cdot 5120 =
# 819{,}200$ bytes, so 1.68 GB per request. The part has 80 GiB $= 85.9$ GB; less 2 GiB
# (2.15 GB) and the weights, 57.7 GB remain, room for 34 requests.
#
# </details>

# %% slideshow={"slide_type": "skip"} tags=["hide-cell"]
# The worked problems' answers, checked against llmperf.
h100 = lp.get_accelerator("H100 SXM")
assert round(bt.decode_intensity_limit(llama3, 2048), 1) == 63.8
assert bt.step_critical_batch(llama3, h100, 2048) is None
assert round(bt.decode_intensity_limit(llama3, 2048, kv_dtype="int8"), 1) == 127.7
kv_1024 = llama.kv_cache_bytes(1025)  # the step reads N cached tokens and the new one
per_sequence_s = 2 * llama.param_count() / a10.peak("fp16") + kv_1024 / a10.mem_bandwidth
ceiling = 1 / per_sequence_s
big = 4096
assert abs(big / lp.decode_step_time(llama, a10, 1024, batch=big) / ceiling - 1) < 0.05
assert 950 < ceiling < 1050 and 1050 < a10.mem_bandwidth / kv_1024 < 1150
fit = lp.max_batch_size(llama, a10, 1025)
assert abs(fit / lp.decode_step_time(llama, a10, 1024, batch=fit) / 500 - 1) < 0.1
hand = [sv.Request(0.0, 1, g) for g in (5, 2, 3, 1)]
static_hand = sv.simulate(hand, "static", max_batch=2, step_time=one_second)
continuous_hand = sv.simulate(hand, "continuous", max_batch=2, step_time=one_second)
assert [r.ttft_s for r in static_hand.requests] == [1, 1, 6, 6]
assert [r.finish_s for r in static_hand.requests] == [5, 2, 8, 6]
assert [r.ttft_s for r in continuous_hand.requests] == [1, 1, 3, 6]
assert [r.finish_s for r in continuous_hand.requests] == [5, 2, 5, 6]
assert lp.max_batch_size("llama-2-13b", "A100 SXM 80GB", 2048, reserved_bytes=2 * lp.GiB) == 34

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Summary
#
# - Batching across requests shares the weight reads: decode's linear operators gain about
#   one FLOP per byte per sequence, and turn compute bound near $B \approx I^{*}$ in 16-bit
#   formats (`lp.ffn_critical_batch`). Prefill is compute bound already, and attention gains
#   nothing, because each request's keys and values are its own.
# - A whole decode step has $I(B, N) = B(2P + 4LNhd)/(bP + 2 b_{kv} L N h_{kv} d B)$, which
#   saturates at $P/(b_{kv} L N h_{kv} d) + 2h/(b_{kv} h_{kv})$. For Llama 2 7B on an A10 the
#   ceiling drops below the ridge at about a hundred tokens of context; grouped-query
#   attention raises it by $h/h_{kv}$.
# - Capacity usually binds first: requests that fit $= \lfloor (C - bP)/\text{KV per
#   request}\rfloor$, with capacity in the right unit.
# - Static batching leaves the slots of early finishers empty and makes newcomers wait for
#   the longest request; continuous batching refills slots every iteration but stalls running
#   decodes behind a newcomer's prefill; chunked prefill bounds the stall.
# - TTFT and TPOT limits turn throughput into goodput; a configuration is a point on a
#   throughput-latency plane, and the useful ones lie on its Pareto front.
# - The engine runs the same scheduler on a real model on your machine, each iteration as one
#   forward pass over a ragged batch of every prompt chunk and decode token; a step time
#   fitted to its iterations lets the simulator predict its runs at light and heavy load, and
#   the chapter prints how closely.
# - A padded decode step reads $B \max_i N_i$ keys, a ragged one $\sum_i N_i$: the
#   difference grows with the spread of the contexts, which continuous batching makes normal.
# - A server does not know output lengths: requests end at a stop token or a cap. Reserving
#   memory for what a request may need costs most of the batch; paging needs no length.
# - Prefix caching reuses the KV blocks of a shared prompt prefix, so only the rest is
#   prefilled: prompt tokens computed fall by the hit rate, and TTFT with them.
# - The published 23x combines scheduling, paged memory and kernels against a slow baseline;
#   scheduling alone, in simulation at the roofline, gives several times, growing with the
#   variance of output lengths.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Exercises
#
# {doc}`Exercise set 5 </exercises/05_batching>` asks you to draw static and continuous
# timelines by hand, read TTFT and TPOT off a timeline, count the requests that fit, find the
# critical batch, and write a small scheduler of your own.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## References
#
# ```{bibliography}
# :filter: docname in docnames
# ```
