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
# # Chapter 0: How to use this book
#
# This book asks one question over and over: when a transformer language model
# answers a request, **where does the time go?** Each chapter answers it twice.
# First it *derives* the answer with a small analytic model, written once in the
# companion library `llmperf` (FLOPs, bytes, {term}`rooflines <roofline>`, memory capacity). Then it
# *measures* the answer with a real PyTorch experiment on the machine in front of
# you, and prints the two side by side. Where they disagree, the chapter says by
# how much and why. That habit, **predict, then measure**, is the spine of the book.
#
# **Who it is for.** Readers who know what a matrix multiplication is and have
# met the transformer, and want to reason about its speed the way inference
# engineers do: students in a systems or ML course, instructors who teach one,
# and practitioners who want their intuitions checked by numbers.
#
# :::{admonition} After this chapter you will be able to
# :class: tip
#
# - run every chapter on a laptop CPU, or on a GPU when you have one;
# - read the units and conventions the rest of the book uses without ambiguity;
# - compute the first numbers of the running example, Llama 2 7B on an NVIDIA A10,
#   and locate that GPU among other common accelerators by its {term}`ridge point`.
# :::

# %% [markdown] slideshow={"slide_type": "slide"}
# ## How to run it
#
# From a clone of the repository, two commands do everything:
#
# | command | what it does |
# |---|---|
# | `make book` | creates `.venv` (CPU build of PyTorch on a machine without a GPU), executes every chapter and writes the rendered pages to `_build/html/index.html` |
# | `make test` | runs the test suite: the library's unit tests, the notebook checks and the grader's checks |
#
# To read interactively, `make lab` opens JupyterLab on `chapters/`. Each chapter
# is a pair of files: `NN_topic.py` is the source, and it is the file to open in
# JupyterLab (it opens as a notebook, showing the outputs kept in its pair);
# `NN_topic.ipynb` is the same notebook executed, with its outputs as they came out
# when the book was built, for reading on GitHub or opening in Colab. Run a
# chapter top to bottom: each is sized to finish within a minute on a two-core laptop CPU.
#
# **On a GPU.** Nothing changes: the measured cells pick `cuda` when PyTorch sees
# a GPU (and Apple's `mps` where it applies), and the predictions switch to the
# catalog entry you choose. **On Colab**, upload or clone the repository, run
# `pip install -e .` in a cell, and open the chapters from the `chapters/` folder.
#
# The numbers you will see in measured cells are *your* machine's. The prose never
# states them as facts; it tells you what to look for.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Conventions
#
# | quantity | unit in code | printed as | note |
# |---|---|---|---|
# | time | seconds (`_s`) | s, ms, µs | |
# | work | FLOP | GFLOP, TFLOP | a multiply-add is **2 FLOP** |
# | compute rate | FLOP/s | TFLOP/s | peaks are **dense**: no 2:4 structured sparsity |
# | data | bytes (`_bytes`) | GB = $10^9$ B or GiB = $2^{30}$ B, always said which | |
# | bandwidth | B/s | GB/s (decimal, as datasheets print it) | |
# | {term}`arithmetic intensity` | FLOP/byte | FLOP/byte | work divided by off-chip traffic |
#
# Two traps deserve a sentence each. **GB against GiB**: bandwidths, model sizes and
# everything this library prints count $1\,\text{GB} = 10^9$ bytes, while memory chips
# come in binary sizes (a "24 GB" card holds 24 GiB) and `nvidia-smi` and most operating
# systems print binary units; the two differ by 7.4 %, enough to change how many
# requests fit on a GPU (chapter 3 counts them). **Dense against sparse peaks**: datasheets of
# recent NVIDIA parts print the 2:4-sparse throughput, twice the dense one, with an
# asterisk; a dense matrix multiplication can never reach it, so `llmperf` stores
# dense peaks only.
#
# One notation serves the whole book; it follows the lecture where the lecture has a
# symbol.
#
# | symbol | meaning | unit |
# |---|---|---|
# | $d$ | size of one attention head | elements |
# | $h$, $h_{kv}$ | query heads, key/value heads ($h_{kv} < h$ under {term}`grouped-query attention <GQA>`) | |
# | $D = h\,d$ | model width | elements |
# | $D_{ff}$ | feed-forward width (11008 for Llama 2 7B) | elements |
# | $L$ | layers | |
# | $V$ | vocabulary size | tokens |
# | $P$ | parameters | |
# | $N$ | tokens in a sequence (the context) | tokens |
# | $S$, $G$ | prompt tokens, generated tokens | tokens |
# | $B$ | batch: sequences processed together | |
# | $b$ | bytes per element (2 for fp16) | bytes |
# | $\Pi$ | dense peak compute rate | FLOP/s |
# | $\beta$ | memory bandwidth | B/s |
# | $I$ | arithmetic intensity | FLOP/byte |
# | $I^* = \Pi / \beta$ | ridge point | FLOP/byte |
# | $C$ | memory capacity | bytes |
# | $p$ | tensor-parallel degree (GPUs sharing a layer) | |
#
# A matrix product multiplies $X$ of shape $(N, K)$ by a weight matrix $W$ of shape $(K, M)$.

# %% slideshow={"slide_type": "-"}
import matplotlib.pyplot as plt

import llmperf as lp
from llmperf.plots import new_axes

print(f"1 GB  = {lp.GB:>13,.0f} bytes")
print(f"1 GiB = {lp.GiB:>13,.0f} bytes  ({lp.GiB / lp.GB - 1:.1%} more)")
print("bytes per element:", {k: v for k, v in lp.BYTES_PER_ELEMENT.items() if k != "fp64"})

# %% [markdown] slideshow={"slide_type": "slide"}
# ## The running example: Llama 2 7B on an NVIDIA A10
#
# The lecture this book follows {cite:p}`krishnamurthy2024lecture` studies one model
# on one GPU, and so do we, before asking the same questions of other parts and of your
# own machine. The lecture itself draws on Baseten's guide to inference performance
# {cite:p}`shenoy2023baseten`, Anyscale's account of {term}`continuous batching`
# {cite:p}`daniel2023anyscale` and the roofline survey of {cite:t}`yuan2024unveiled`.
# Llama 2 7B has $L = 32$ layers of width $D = 4096$ ($h = 32$ heads of $d = 128$),
# a feed-forward width of 11008 and a vocabulary of 32000 tokens (its published
# `config.json`, {cite:p}`meta2023llama2config`). The A10 does 125 TFLOP/s in fp16 and
# moves 600 GB/s, with 24 GB of memory {cite:p}`nvidia_a10`. That last "GB" is
# the one place where a datasheet means GiB: memory chips come in binary sizes, so the
# A10 holds $24 \times 2^{30}$ bytes, and `llmperf` stores capacities that way.

# %% slideshow={"slide_type": "-"}
llama = lp.get_model("llama-2-7b")
a10 = lp.get_accelerator("A10")

weights, kv = llama.weight_bytes("fp16"), llama.kv_cache_bytes(4096, dtype="fp16")
print("A10 datasheet:", a10.source)
lp.Table(["quantity", "value"], [
    ("parameters", f"{llama.param_count():,}"),
    ("weights in fp16", f"{lp.format_bytes(weights)} = {lp.format_bytes(weights, binary=True)}"),
    ("KV cache, 4096 tokens", f"{lp.format_bytes(kv)} = {lp.format_bytes(kv, binary=True)}"),
    ("A10 ridge point", f"{a10.ridge_point('fp16'):.1f} FLOP/byte"),
])

# %% [markdown] slideshow={"slide_type": "-"}
# Three numbers already tell most of the story of this book. The weights take
# about 13.5 GB, more than half of the A10's memory. Every generated token must
# read all of them, and the A10 moves 600 GB/s, so a token costs about
# $13.5 / 600 \approx 22$ ms even with the memory at its full rate and the arithmetic
# free (real kernels reach neither, so this is an optimistic estimate). And the A10 can
# do about 208 FLOP for every byte it reads: an operation that does less work per
# byte than that leaves compute idle. The lecture's simple end-to-end model turns
# this into a latency estimate for a request with a 350-token prompt and 150
# generated tokens:

# %% slideshow={"slide_type": "-"}
estimate = lp.simple_latency(llama, a10, prompt_tokens=350, output_tokens=150)
lp.Table(["phase", "time", "per token"], [
    ("prefill (compute bound)", estimate.prefill_s, None),
    ("decode (memory bound)", estimate.decode_s, estimate.tpot_s),
], footer=[("total", estimate.total_s, None)],
    formats={"time": lp.format_seconds, "per token": lp.format_seconds})

# %% [markdown] slideshow={"slide_type": "fragment"}
# :::{important}
# On an A10, reading the prompt takes tens of milliseconds and writing the answer
# takes seconds.
# :::

# %% [markdown] slideshow={"slide_type": "-"}
# Chapters 2 and 4 explain why, and measure it.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## The accelerators in the catalog
#
# `llmperf` carries a small catalog of common inference accelerators. Each entry
# cites its datasheet in the code, and its ridge point, peak FLOP/s divided by
# memory bandwidth {cite:p}`williams2009roofline`, says how much work an operation
# must do per byte before the arithmetic, not the memory, limits it.

# %% slideshow={"slide_type": "-"}
lp.Table(
    ["accelerator", "fp16 TFLOP/s", "GB/s", "memory GiB", "ridge FLOP/B"],
    [(acc.name, acc.peak("fp16") / 1e12, acc.mem_bandwidth / 1e9,
      acc.mem_capacity / lp.GiB, acc.ridge_point("fp16")) for acc in lp.ACCELERATORS],
    formats={"fp16 TFLOP/s": ".1f", "GB/s": ".0f", "memory GiB": ".0f", "ridge FLOP/B": ".1f"},
)

# %% slideshow={"slide_type": "fragment"}
ax = new_axes(title="Where the roofline bends (fp16, dense)",
              xlabel="memory bandwidth (GB/s)", ylabel="peak fp16 (TFLOP/s)")
label_below = {"A100 SXM 80GB", "H200 SXM"}  # their neighbours share the same peak
for acc in lp.ACCELERATORS:
    ax.scatter(acc.mem_bandwidth / 1e9, acc.peak("fp16") / 1e12, color="C0")
    ax.annotate(acc.name, (acc.mem_bandwidth / 1e9, acc.peak("fp16") / 1e12), fontsize=8,
                textcoords="offset points", xytext=(4, -11 if acc.name in label_below else 4))
for ridge in (100, 200, 400):
    xs = [200, 6000]
    ax.plot(xs, [x * ridge / 1e3 for x in xs], ":", color="grey", linewidth=1)
    ax.annotate(f"{ridge} FLOP/B", (6000, 6000 * ridge / 1e3), fontsize=7, color="grey")
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_xticks([300, 600, 1000, 2000, 5000], labels=["300", "600", "1000", "2000", "5000"])
ax.set_xticks([], minor=True)
plt.show()

# %% [markdown] slideshow={"slide_type": "-"}
# **Figure 1.** Each accelerator by its memory bandwidth (x) and dense fp16 peak
# (y). The dotted lines join parts with the same ridge point. Parts to the upper
# left need more work per byte to keep their arithmetic busy: an H100 SXM
# sits near 300 FLOP/byte, the T4 and L4 near 200 and 400, and none of them come
# close to the 1 FLOP/byte of a batch-1 {term}`decode` step (chapter 4).

# %% [markdown] slideshow={"slide_type": "slide"}
# ## The chapters
#
# | chapter | question |
# |---|---|
# | 1. Components | what is inside a transformer, and where do its parameters live? |
# | 2. Phases | how do {term}`prefill` and token-by-token decoding differ in time? |
# | 3. State and dependencies | what must be kept between steps, and what waits for what? |
# | 4. {term}`Compute <compute bound>` or {term}`memory bound` | which resource limits each part, and how long does a request take? |
# | 5. Batching | how many requests can share a step, and how should they be scheduled? |
# | 6. Fewer bytes | what do {term}`KV cache` management and {term}`quantization` buy? |
# | 7. Fewer trips to memory | what do {term}`operator fusion` and {term}`FlashAttention` save? |
# | 8. Less work per token | what do {term}`mixture of experts` and {term}`speculative decoding` change? |
# | 9. Smaller and sparser models | what do {term}`pruning`, {term}`distillation` and {term}`contextual sparsity` buy? |
#
# Each chapter ends with worked problems (answers folded away) and points to a set of
# exercises whose questions are graded automatically: the {doc}`Exercises </exercises/index>`
# page says how students download, fill in and check them, and the
# {doc}`For instructors </instructors/index>` page how instructors release and grade them.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Summary
#
# - Every claim comes twice: derived by `llmperf`, measured on your machine.
# - Units are explicit: FLOP against FLOP/s, GB ($10^9$) against GiB ($2^{30}$),
#   dense peaks only, 2 FLOP per multiply-add.
# - Llama 2 7B has 6,738,415,616 parameters, 13.5 GB in fp16; the A10's ridge point
#   is 208.3 FLOP/byte.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## References
#
# ```{bibliography}
# :filter: docname in docnames
# ```
