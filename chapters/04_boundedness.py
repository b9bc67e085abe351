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
# # Chapter 4: Compute or memory bound?
#
# The first three chapters took a transformer apart, ran its two workloads and followed the
# state it keeps between steps. This chapter asks the question the rest of the book turns
# on: **when a model serves a request, what is the hardware waiting for?** Either the
# arithmetic units are busy while memory idles, or they starve while bytes trickle in from
# memory. Which one holds decides which optimizations help, which GPU to buy, and what
# batching (chapter 5) can buy.
#
# :::{admonition} After this chapter you will be able to
# :class: tip
#
# 1. name the four resources that bound inference (compute, memory bandwidth, memory
#    capacity, communication) and say which one limits a given workload;
# 2. compute an accelerator's balance point (its *{term}`ridge <ridge point>`*) and an operator's
#    {term}`arithmetic intensity`, and decide from the two whether the operator is
#    {term}`compute bound` or {term}`memory bound`;
# 3. derive, term by term, the FLOPs and bytes of attention under the standard algorithm
#    and of a linear layer, and explain why the first is memory bound and the second is not,
#    until {term}`decode` turns it into a matrix-vector product;
# 4. read a {term}`roofline` plot, for a catalog GPU and for your own machine, with measured points;
# 5. predict the latency of a request with the lecture's simple model, say why real runs take
#    longer, and check the prediction against a run of the reference model on your machine;
# 6. estimate the bytes that tensor parallelism sends between GPUs for each token.
# :::
#
# The running example stays the lecture's {cite:p}`krishnamurthy2024lecture`: Llama 2 7B
# {cite:p}`touvron2023llama2` on an NVIDIA A10 {cite:p}`nvidia_a10`. The chapter uses a GPU
# when one is present and the CPU otherwise; either way, "your machine" below means the device
# the notebook runs on.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Notation
#
# | symbol | meaning | Llama 2 7B / A10 |
# |---|---|---|
# | $P$ | parameters of the model | 6.74 billion |
# | $L$ | layers | 32 |
# | $d$ | dimension of one attention head | 128 |
# | $h$ | attention heads | 32 |
# | $D = h\,d$ | model width | 4096 |
# | $D_{\text{ff}}$ | FFN width | 11008 |
# | $N$ | tokens in a sequence (the attention's length) | up to 4096 |
# | $S$, $G$ | prompt tokens, generated tokens | 350, 150 in section 4.5 |
# | $B$ | sequences in a batch | 1 unless stated |
# | $b$ | bytes per element | 2 (fp16) |
# | $\Pi$ | dense peak compute rate of the accelerator | 125 TFLOP/s (fp16) |
# | $\beta$ | memory bandwidth | 600 GB/s |
# | $I$ | arithmetic intensity: FLOPs per byte moved | |
# | $I^{*} = \Pi/\beta$ | ridge point of the accelerator | 208.3 FLOP/byte |
# | $C$ | memory capacity | 24 GiB |
# | $p$ | GPUs in a tensor-parallel group | |
#
# A multiply-add counts as 2 FLOPs; a byte is a byte read from or written to off-chip memory
# (HBM or GDDR on a GPU, DRAM on a CPU). GB means $10^9$ bytes and GiB $2^{30}$. Bandwidths
# are decimal, as datasheets print them; memory comes in binary sizes, so the "24 GB" of the
# A10's datasheet is 24 GiB. A linear layer multiplies $X$ ($N \times K$) by a weight matrix
# $W$ ($K \times M$); $W$ is never a bandwidth and $M$ never a byte count.

# %% slideshow={"slide_type": "-"}
import math
from functools import partial

import matplotlib.pyplot as plt
import numpy as np
import torch

import llmperf as lp
from llmperf.plots import legend_below, new_axes, use_style

torch.manual_seed(0)
np.random.seed(0)
use_style()
device = "cuda" if torch.cuda.is_available() else "cpu"


# On a GPU we measure in fp16 like the lecture; a CPU has no fast fp16 matmul, so fp32 there.
mdtype = "fp16" if device == "cuda" else "fp32"
tdtype = torch.float16 if device == "cuda" else torch.float32

llama = lp.get_model("llama-2-7b")
a10 = lp.get_accelerator("A10")
print(f"device for the measurements: {device}, dtype {mdtype}")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 4.1 What determines the speed of an LLM
#
# Four resources of an accelerator bound how fast it serves a model.
#
# - **Compute.** The arithmetic units do at most $\Pi$ FLOPs per second. A forward pass over
#   one token does about $2P$ FLOPs (one multiply-add per parameter, chapter 1), plus the
#   attention's work, which grows with the context.
# - **Memory bandwidth.** Every weight the pass uses, and every cached key and value it
#   attends to, travels from off-chip memory into the chip at no more than $\beta$ bytes per
#   second. On-chip caches are far faster but far too small to hold a model.
# - **Memory capacity.** Weights and the {term}`KV cache` must *fit* in $C$ bytes. Capacity does not slow a step;
#   it caps how many requests can be in flight, and so how much work a step can share
#   (chapter 5).
# - **Communication.** A model too large for one device is split across several, which
#   must then exchange activations at every layer over links far slower than their memory.
#
# A first pass at the numbers for one decode step of Llama 2 7B on an A10 makes the
# contrast between the first two concrete.

# %% slideshow={"slide_type": "-"}
P = llama.param_count()
flops_per_token = 2 * P
weight_bytes = llama.weight_bytes("fp16")
compute_s = flops_per_token / a10.peak("fp16")
memory_s = weight_bytes / a10.mem_bandwidth
lp.Table(["quantity", "value"],
         [("parameters", f"{P:,}"),
          ("FLOPs for one token (2P)", lp.format_flops(flops_per_token)),
          ("fp16 weights read per step", lp.format_bytes(weight_bytes)),
          ("A10 memory capacity", lp.format_bytes(a10.mem_capacity, binary=True)),
          ("time to do the FLOPs", lp.format_seconds(compute_s)),
          ("time to read the weights", lp.format_seconds(memory_s)),
          ("memory time / compute time", f"{memory_s / compute_s:.0f}x")],
         title="One decode step of Llama 2 7B on an A10, batch 1")

# %% slideshow={"slide_type": "skip"} tags=["hide-cell"]
# The paragraph below, from the table above.
assert 0.05e-3 < compute_s < 0.15e-3 and memory_s > 20e-3 and 1 - compute_s / memory_s > 0.99
assert weight_bytes > a10.mem_capacity / 2

# %% [markdown] slideshow={"slide_type": "subslide"}
# Generating one token asks the A10 for about a tenth of a millisecond of arithmetic but
# over twenty milliseconds of reading: the arithmetic units sit idle more than 99 % of the
# time. The weights use more than half of the card's 24 GiB before a single request is
# admitted.

# %% [markdown] slideshow={"slide_type": "fragment"}
# :::{important}
# For one request at a time, decode is a memory-bandwidth problem, and capacity is already
# tight.
# :::

# %% [markdown] slideshow={"slide_type": "-"}
# The rest of the chapter makes this precise per operator and per phase. The lecture frames the analysis as a cross product:
#
# $$[\text{prefill},\ \text{decode}] \times [\text{attention block},\ \text{FFN block}].$$
#
# {term}`Prefill <prefill>` pushes all $S$ prompt tokens through each weight matrix at once;
# decode pushes one.
# The attention block holds the Q, K, V and output projections plus the attention proper
# (scores, softmax, weighted sum of values); the FFN block holds the three SwiGLU matrices.
# `lp.step_costs` sums FLOPs and bytes operator by operator for one forward step, and
# `block_total` adds up the rows of one block. Here are the four corners for $N = 4096$ on
# the A10, the lecture's sizes.

# %% slideshow={"slide_type": "-"}
def cross_product(model, acc, seq_len, batch=1, dtype="fp16"):
    """FLOPs, bytes, intensity and roofline time of the attention and FFN blocks, per phase,
    and the share of each block's time that its memory-bound operators take."""
    rows = []
    for phase in ("prefill", "decode"):
        step = lp.step_costs(model, phase, batch=batch, seq_len=seq_len, dtype=dtype).on(acc)
        for block in ("attention", "ffn"):
            c = step.block_total(block)
            memory_s = sum(r.time_s for r in step if r.block == block and r.bound == "memory")
            rows.append((phase, block, c.flops, c.bytes, c.intensity, step.block_time_s(block),
                         memory_s / step.block_time_s(block)))
    return lp.Table(["phase", "block", "FLOP", "bytes", "FLOP/B", "time", "memory-bound share"], rows,
                    title=f"{model.name} on {acc.name}, {seq_len} tokens, {dtype}",
                    formats={"FLOP": lp.format_flops, "bytes": lp.format_bytes, "FLOP/B": ".1f",
                             "time": lp.format_seconds, "memory-bound share": ".0%"})


cross_product(llama, a10, seq_len=4096)

# %% [markdown] slideshow={"slide_type": "subslide"}
# Read the intensity column: hundreds to a thousand FLOPs per byte in prefill, about one in
# decode. Whether something is compute or memory bound (the next section gives the rule) is a
# property of each *operator*, not of a block: a block's summed intensity averages operators
# that behave differently. The last column, the memory-bound share, therefore sums the time
# of the block's memory-bound operators and divides it by the block's time. It holds two
# surprises. In prefill the attention block's projections
# are compute bound, like the FFN's matrices, yet most of the block's time goes to its
# memory-bound operators, the scores, softmax and weighted sum over the same 4096 tokens
# (section 4.3); and a decode step costs tens of milliseconds while doing thousands of times
# fewer FLOPs than prefill, every operator of it memory bound (section 4.4).

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 4.2 The balance of an accelerator
#
# An operator that does $\text{FLOPs}$ floating-point operations and moves $\text{bytes}$
# bytes needs at least $\text{FLOPs}/\Pi$ seconds of arithmetic and $\text{bytes}/\beta$
# seconds of data movement. If the two overlap perfectly, which good kernels approach, its
# time is the larger of the two:
#
# $$t \;\ge\; \max\!\left(\frac{\text{FLOPs}}{\Pi},\ \frac{\text{bytes}}{\beta}\right).$$
#
# Compute dominates exactly when $\text{FLOPs}/\Pi > \text{bytes}/\beta$, that is when
#
# $$I \;=\; \frac{\text{FLOPs}}{\text{bytes}} \;>\; \frac{\Pi}{\beta} \;=\; I^{*}.$$
#
# The left side, the **arithmetic intensity**, belongs to the operator; the right side, the
# **ridge point** (the lecture's "ops per byte"), belongs to the hardware. For the A10 in fp16:
#
# $$I^{*}_{\text{A10}} = \frac{125 \times 10^{12}\ \text{FLOP/s}}{600 \times 10^{9}\ \text{B/s}}
#   = 208.3\ \text{FLOP/byte}.$$
#
# An operator must do about 208 FLOPs for every byte it brings in to keep the A10's tensor
# cores busy; below that, it waits on memory.

# %% [markdown] slideshow={"slide_type": "fragment"}
# :::{important}
# The ridge point is the exchange rate between compute and bandwidth, and every boundedness
# question reduces to comparing an operator's intensity with it.
# :::

# %% slideshow={"slide_type": "-"}
ridge_a10 = a10.ridge_point("fp16")
assert abs(ridge_a10 - 125e12 / 600e9) < 1e-9
print(f"A10 ridge point: {ridge_a10:.1f} FLOP/byte")

# %% [markdown] slideshow={"slide_type": "subslide"}
# The catalog in `llmperf.hardware` holds the datasheet figures of common inference
# accelerators (dense peaks, without 2:4 sparsity; each entry cites its datasheet in the
# code). The table lists them with their fp16 ridge points.

# %% slideshow={"slide_type": "-"}
ACCELERATOR_COLUMNS = ["part", "dtype", "peak", "bandwidth", "memory", "ridge (FLOP/B)"]
ACCELERATOR_FORMATS = {"peak": lp.format_flop_rate, "bandwidth": lp.format_bandwidth,
                       "memory": partial(lp.format_bytes, binary=True), "ridge (FLOP/B)": ".1f"}


def accelerator_row(acc, dtype="fp16", label=None):
    return (label or acc.name, dtype, acc.peak(dtype), acc.mem_bandwidth, acc.mem_capacity,
            acc.ridge_point(dtype))


lp.Table(ACCELERATOR_COLUMNS, [accelerator_row(lp.get_accelerator(name)) for name in lp.list_accelerators()],
         title="Catalog accelerators: dense peaks from their datasheets", formats=ACCELERATOR_FORMATS)

# %% slideshow={"slide_type": "skip"} tags=["hide-cell"]
# The paragraph below, from the catalog.
ridges = {name: lp.get_accelerator(name).ridge_point("fp16") for name in lp.list_accelerators()}
peaks = [lp.get_accelerator(name).peak("fp16") for name in lp.list_accelerators()]
assert 100 < min(ridges.values()) and max(ridges.values()) < 420 and max(peaks) / min(peaks) > 15
assert ridges["L4"] > 400 and ridges["L40S"] > 400 and ridges["A10G"] < 0.6 * ridges["A10"]

# %% [markdown] slideshow={"slide_type": "subslide"}
# Two things stand out. First, the ridge points stay between about 100 and 420 FLOP/byte
# even though peak compute spans a factor of twenty: vendors scale bandwidth and compute
# together, roughly. Second, within that range the spread matters. The L4 and L40S pair large
# tensor throughput with GDDR memory and sit above 400, so an operator balanced on an A10 is
# twice as memory bound there; the A10G, the A10's variant in AWS instances, has the A10's
# bandwidth with little more than half its tensor throughput, and so a much lower ridge.

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### Your machine
#
# `llmperf.measured.measure.measure_host()` measures the device this notebook runs on: a large matrix
# multiplication for the peak FLOP/s in each dtype, and a large copy for the memory bandwidth.
# It returns an `Accelerator` like the catalog's, so every tool in this chapter applies to it.
# The numbers below are *measured*, not from a datasheet, and will differ from machine to
# machine and from run to run. The bandwidth varies most: on a shared cloud machine, repeated
# runs of the same probe minutes apart can differ by half or more, because the memory system
# is shared with other tenants and the copy's speed depends on where its pages land. Read it
# as a rough roof, not a constant of your machine, and compare measurements against a roof
# measured in the same run, as this chapter does. The cell probes three times, keeps the median
# of each figure, and prints the range of the three: how much the probe moved on your machine
# within a few seconds.

# %% slideshow={"slide_type": "-"} tags=["nbval-ignore-output"]

from IPython.display import display

from llmperf.measured.host import median_host
from llmperf.measured.load import watch_load
from llmperf.measured.measure import benchmark, measure_host

with watch_load() as load:
    probes = [measure_host(dtypes=(mdtype,), device=device, progress=False) for _ in range(3)]
host = median_host(probes)
if mdtype not in host.dtypes:  # a GPU without fast fp16: fall back to fp32
    mdtype, tdtype = "fp32", torch.float32
print(host.name)
display(lp.Table(ACCELERATOR_COLUMNS, [accelerator_row(a10, "fp16", label="A10 (datasheet)")]
                 + [accelerator_row(host, dtype, label="this machine (measured)")
                    for dtype in host.dtypes],
                 title="The A10 against the machine running this notebook (median of three probes)",
                 formats=ACCELERATOR_FORMATS))
for d in host.dtypes:
    print(f"peak {d}, three probes: " + ", ".join(lp.format_flop_rate(a.peak(d)) for a in probes))
print("bandwidth, three probes: " + ", ".join(lp.format_bandwidth(a.mem_bandwidth) for a in probes))
print(load.note())

# %% [markdown] slideshow={"slide_type": "subslide"}
# A CPU's ridge is usually well below a GPU's. A low ridge means that an operator needs
# fewer FLOPs per byte to keep the arithmetic units busy: an operator of modest intensity,
# say a few dozen FLOP/byte, can be memory bound on a GPU yet compute bound on a CPU. It does
# not make the CPU fast (its peak and its bandwidth are both far below a GPU's); it only moves
# the line between the two regimes to the left. Whatever your output says, the same
# comparison of intensity against ridge decides what is bound on your machine.
#
# The roofline plot {cite:p}`williams2009roofline` draws the whole rule at once, and is the
# usual lens for LLM inference {cite:p}`yuan2024unveiled`. Its horizontal axis is arithmetic
# intensity; its vertical axis is the highest FLOP/s an operator of that intensity can reach,
# $\min(\Pi,\ I \cdot \beta)$. Left of the ridge the roof slopes up with the bandwidth; right of it
# the roof is flat at the peak.

# %% slideshow={"slide_type": "fragment"}
ax = new_axes("Rooflines of catalog accelerators (fp16, dense)")
for name in ("A10G", "A10", "L4", "A100 SXM 80GB", "H100 SXM"):
    lp.plot_roofline(name, dtype="fp16", ax=ax, annotate_ridge=False)  # ridges go in the legend
ax.set_xlim(0.5, 1e4)
legend_below(ax)
plt.show()

# %% [markdown] slideshow={"slide_type": "-"}
# **Figure 1.** Rooflines of five catalog GPUs, log-log. The dotted vertical line of each
# marks its ridge point, whose value the legend gives. Every roof has the same shape; they differ in the height of the
# flat part (peak compute) and the height of the sloped part (bandwidth). A memory-bound
# operator sits on the slope, where only bandwidth matters: there an H100 beats an A10 by its
# bandwidth ratio (about 5.6), not by its compute ratio (about 8).

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 4.3 Attention under the standard algorithm
#
# The lecture analyses one attention head with the standard (unfused) algorithm, in which
# $Q, K, V \in \mathbb{R}^{N \times d}$ live in off-chip memory and every intermediate goes
# back there:
#
# 1. load $Q$ and $K$, compute $S = QK^{\top}$, write $S$ ($N \times N$);
# 2. read $S$, compute $P = \operatorname{softmax}(S)$, write $P$ ($N \times N$);
# 3. load $P$ and $V$, compute $O = PV$, write $O$ ($N \times d$).
#
# (In this section, as in the lecture, $S$ is the score matrix, not the prompt length, and $P$
# is the probability matrix, not the parameter count.)
#
# **FLOPs.** Step 1 is $N^2$ dot products of length $d$: $2dN^2$. Step 2 costs, in the
# lecture's count, 3 operations per score (exponentiate, sum, divide): $3N^2$. Step 3 is $Nd$
# dot products of length $N$: $2N^2 d$. In total
#
# $$\text{FLOPs}_{\text{attn}} = 2dN^2 + 3N^2 + 2N^2 d = (4d + 3)\,N^2 .$$
#
# **Bytes**, at 2 bytes per fp16 element, step by step:
#
# $$
# \begin{aligned}
# \text{step 1:}\quad & \underbrace{2 \cdot 2dN}_{\text{read } Q,\,K} + \underbrace{2N^2}_{\text{write } S} \\
# \text{step 2:}\quad & \underbrace{2N^2}_{\text{read } S} + \underbrace{2N^2}_{\text{write } P} \\
# \text{step 3:}\quad & \underbrace{2(N^2 + Nd)}_{\text{read } P,\,V} + \underbrace{2Nd}_{\text{write } O}
# \end{aligned}
# \qquad\Longrightarrow\qquad \text{bytes}_{\text{attn}} = 8N^2 + 8Nd .
# $$
#
# The intensity is
#
# $$I_{\text{attn}} = \frac{(4d+3)N^2}{8N^2 + 8Nd} = \frac{(4d+3)\,N}{8(N+d)} .$$
#
# At $d = 128$ and $N = 4096$ this is $\dfrac{515 \cdot 4096}{8 \cdot 4224} \approx 62.4$
# FLOP/byte. The cell below computes the same numbers by hand and checks them against
# `lp.attention_cost`.

# %% slideshow={"slide_type": "-"}
d, N = 128, 4096
hand_flops = 2 * d * N * N + 3 * N * N + 2 * N * N * d
hand_bytes = 2 * 2 * d * N + 2 * N * N + 2 * N * N + 2 * N * N + 2 * (N * N + N * d) + 2 * N * d
attn = lp.attention_cost(seq_len=N, d_head=d, dtype="fp16")
assert attn.flops == hand_flops == (4 * d + 3) * N * N
assert attn.bytes == hand_bytes == 8 * N * N + 8 * N * d
print(f"FLOPs {hand_flops:,}   bytes {hand_bytes:,}")
print(f"intensity {attn.intensity:.1f} FLOP/byte against the A10's ridge {ridge_a10:.1f}")
print(f"roofline time of one head on the A10: {lp.format_seconds(lp.roofline_time(attn, a10))}"
      f" ({lp.bound(attn, a10)} bound)")

# %% [markdown] slideshow={"slide_type": "subslide"}
# Sixty-two FLOPs per byte is less than a third of the 208 the A10 needs.

# %% [markdown] slideshow={"slide_type": "fragment"}
# :::{important}
# Attention under the standard algorithm is memory bound on the A10, by a factor of more
# than three.
# :::

# %% [markdown] slideshow={"slide_type": "-"}
# *Why?* Look at where the $N^2$ terms sit. The FLOPs grow as $4dN^2$; the bytes grow as
# $8N^2$, and every one of those $N^2$ bytes belongs to $S$ or $P$: the score matrix is
# written once and read once, the probability matrix is written once and read once. For
# large $N$ the intensity therefore does not grow with the sequence; it saturates at
#
# $$\lim_{N\to\infty} I_{\text{attn}} = \frac{4d+3}{8} = 64.4 \approx \frac{d}{2} \quad (d = 128).$$
#
# No sequence length makes this algorithm compute bound on an A10. The only lever in the
# formula is the head dimension $d$, which the model fixes. The bottleneck is not the
# attention's arithmetic; it is the round trip of two $N \times N$ intermediates that exist
# only to be consumed by the next step.
#
# *What fixes it?* Do not write $S$ and $P$ at all. {term}`FlashAttention`
# {cite:p}`dao2022flashattention` tiles $Q$, $K$ and $V$ into blocks that fit in on-chip shared
# memory, computes the softmax incrementally as blocks of keys stream past (an
# {term}`online softmax`), and writes only $O$. The FLOPs are
# the same; the $8N^2$ bytes disappear, and the remaining traffic is rereading $K$ and $V$
# once per block of queries. Chapter 7 builds and measures it; here `lp.flash_attention_cost`
# estimates its bytes. The estimate needs the on-chip memory one block of work may use. Each
# streaming multiprocessor (SM) of the A10's GA102 chip has 128 KiB of L1 cache and shared
# memory combined {cite:p}`nvidia_ga102`, but a kernel can claim at most 100 KiB of it as
# shared memory (compute capability 8.6 in NVIDIA's Ampere tuning guide
# {cite:p}`nvidia_ampere_tuning`); we take 100 KiB as a
# round figure. A block of queries, its output accumulator, and a block each of keys and
# values must fit in it, which allows blocks of about a hundred rows at $d = 128$ in fp16.
# The result is an *estimate*, and an upper bound on traffic, far above what the kernel
# really moves: it charges every reread of $K$ and $V$ to off-chip memory.

# %% slideshow={"slide_type": "fragment"}
seq = np.array([128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768])
sram = 100 * lp.KiB  # usable shared memory per SM, a round figure (see the text)
standard = [lp.attention_cost(int(n), d).intensity for n in seq]
flash = [lp.flash_attention_cost(int(n), d, sram_bytes=sram).intensity for n in seq]
print(f"N = 4096: standard {standard[5]:.1f}, tiled (FlashAttention) {flash[5]:.1f} FLOP/byte")
print(f"limit of the standard algorithm: (4d + 3) / 8 = {(4 * d + 3) / 8:.1f}")

ax = new_axes("Attention intensity of one head (d = 128, fp16)",
              "sequence length N (tokens)", "arithmetic intensity (FLOP/byte)")
ax.plot(seq, standard, "o-", label="standard algorithm (S, P through memory)")
ax.plot(seq, flash, "s-", label="tiled, online softmax (upper bound on bytes)")
ax.axhline(ridge_a10, color="gray", linestyle=":", label=f"A10 ridge {ridge_a10:.0f}")
ax.axhline((4 * d + 3) / 8, color="C0", linestyle="--", linewidth=1, label="limit (4d+3)/8")
ax.set_xscale("log", base=2)
ax.set_yscale("log")
ax.set_yticks([30, 50, 100, 200], ["30", "50", "100", "200"])
ax.yaxis.set_minor_formatter(plt.NullFormatter())
legend_below(ax)
plt.show()

# %% [markdown] slideshow={"slide_type": "-"}
# **Figure 2.** Arithmetic intensity of one attention head against sequence length. The
# standard algorithm flattens out just above 64 FLOP/byte, under the A10's ridge at every
# length. The tiled algorithm's traffic no longer contains the $N^2$ matrices, only $K$ and
# $V$ reread once per block of queries, so its intensity is set by the block size, not by
# $N$, and sits well above the standard algorithm's. Do not read the curve as "FlashAttention
# is still memory bound": the count is an upper bound on traffic, and a loose one. The blocks
# of queries run at the same time on different SMs and read the same blocks of $K$ and $V$ at
# nearly the same moment, so the on-chip L2 cache serves most rereads, and off-chip traffic
# comes close to reading $Q$, $K$, $V$ and writing $O$ once each. Counted that way, one head
# at $N = 4096$ does thousands of FLOPs per byte, far right of every ridge. Measured kernels
# agree: FlashAttention-2 reaches 50 to 73 % of the A100's peak fp16 throughput in the forward
# pass {cite:p}`dao2023flashattention2`, which the standard algorithm's ceiling could not
# allow: at $d = 128$ its intensity stays under $(4d+3)/8 \approx 64$ FLOP/byte, which caps
# it at 42 % of the peak of an A100 80GB (ridge about 153) and 32 % on the 40 GB one (ridge
# about 201), half that at $d = 64$. Chapter 7 measures the difference.

# %% slideshow={"slide_type": "skip"} tags=["hide-cell"]
# The ceiling of the standard algorithm on the A100s, as the paragraph above says.
_limit = (4 * d + 3) / 8
_a100s = [lp.get_accelerator(n) for n in ("A100 SXM 80GB", "A100 SXM 40GB")]
assert d == 128 and round(_limit) == 64
assert [round(a.ridge_point("fp16")) for a in _a100s] == [153, 201]
assert [round(_limit / a.ridge_point("fp16"), 2) for a in _a100s] == [0.42, 0.32]
assert [round((4 * 64 + 3) / 8 / a.ridge_point("fp16"), 2) for a in _a100s] == [0.21, 0.16]  # d = 64

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 4.4 Linear layers: GEMM in prefill, GEMV in decode
#
# Everything else with weights (the Q, K, V and output projections and the three FFN
# matrices) is a linear layer $Y = XW$ with $X \in \mathbb{R}^{N\times K}$ holding $N$ token
# vectors and $W \in \mathbb{R}^{K\times M}$ the weights. It does $N \cdot M$ dot products of
# length $K$ and, if each operand crosses the memory boundary once, moves $X$, $W$ and $Y$:
#
# $$\text{FLOPs}_{\text{GEMM}} = 2NKM, \qquad \text{bytes}_{\text{GEMM}} = b\,(NK + KM + NM),$$
#
# with $b = 2$ bytes per element in fp16, so that
#
# $$I_{\text{GEMM}} = \frac{NKM}{NK + KM + NM} = \frac{1}{\frac1M + \frac1N + \frac1K}.$$
#
# The intensity is the harmonic-mean-like combination of the three sizes: it is large only
# if *all three* are large, and the smallest one dominates. At $N = K = M = 4096$ it is
# $4096/3 \approx 1365$ FLOP/byte, more than six times the A10's ridge: a linear layer fed
# a long prompt is compute bound.
#
# Decode feeds the same weights one token at a time, $N = 1$. The product becomes a
# matrix-vector product (GEMV), and
#
# $$I_{\text{GEMV}} = \frac{KM}{K + KM + M} \approx 1 \ \text{FLOP/byte}:$$
#
# each 2-byte weight is read to do one multiply-add (2 FLOPs) and is never used again.

# %% [markdown] slideshow={"slide_type": "fragment"}
# :::{important}
# A linear layer fed a long prompt is compute bound; in decode the linear layers, which hold
# nearly all the FLOPs, are memory bound by a factor of about 200 on an A10.
# :::

# %% slideshow={"slide_type": "fragment"}
gemm = lp.matmul_cost(4096, 4096, 4096, dtype="fp16")
gemv = lp.matmul_cost(1, 4096, 4096, dtype="fp16")
assert gemm.flops == 2 * 4096**3 and gemm.bytes == 2 * 3 * 4096**2
print(f"GEMM 4096^3: {gemm.intensity:.1f} FLOP/byte, {lp.bound(gemm, a10)} bound on the A10")
print(f"GEMV 1x4096x4096: {gemv.intensity:.3f} FLOP/byte, {lp.bound(gemv, a10)} bound on the A10")
rows = np.arange(1, 4097)
intensity = [lp.matmul_cost(int(n), 4096, 4096).intensity for n in rows]
crossing = next(int(n) for n, i in zip(rows, intensity) if i >= ridge_a10)
print(f"smallest N past the A10's ridge: N = {crossing}")

ax = new_axes("Linear layer X(N, 4096) @ W(4096, 4096), fp16",
              "tokens N in the product", "arithmetic intensity (FLOP/byte)")
ax.plot(rows, intensity, "-", label="GEMM intensity")
ax.axhline(ridge_a10, color="gray", linestyle=":", label=f"A10 ridge {ridge_a10:.0f}")
ax.set_xscale("log", base=2)
ax.set_yscale("log")
ax.legend(fontsize="medium")
plt.show()

# %% [markdown] slideshow={"slide_type": "-"}
# **Figure 3.** Intensity of a 4096 by 4096 linear layer against the number of tokens
# multiplied at once. For $N \ll K, M$ the intensity is about $N$ (each weight byte serves
# $N$ tokens); it crosses the A10's ridge at a couple of hundred tokens and levels off at
# $4096/3$. Decode sits at the far left. Chapter 5 moves decode to the right by batching
# requests, which is exactly why it works for the linear layers, and why it does not work for
# attention, whose "weights" (each request's K and V) are not shared.

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### Predict, then measure: matrix products on your machine
#
# The roofline predicts how fast a matrix product of intensity $I$ can run on your machine,
# $\min(\Pi, I\cdot \beta)$, using the peak and bandwidth `measure_host()` found. The cell below
# times products $X(N, K) \cdot W(K, K)$ with `benchmark` (which synchronizes the device,
# repeats the call and keeps every sample) for $N$ from 1 (a GEMV) upwards, and prints the
# attained FLOP/s beside the prediction. The roof is an upper bound on speed, so the
# question is how close the machine can come to it: the table uses the *fastest* of the
# repeats (`min_s`), which a noisy neighbour can slow but never speed up, and prints the
# median and the interquartile range beside it to show the spread. The weight matrix is large
# enough that it cannot sit in the CPU's caches, so the GEMV really streams it from memory.

# %% slideshow={"slide_type": "-"} tags=["nbval-ignore-output"]
K = 4096
sizes = [1, 4, 16, 64, 256] if device == "cpu" else [1, 4, 16, 64, 256, 1024, 4096]
weight = torch.randn(K, K, dtype=tdtype, device=device)
measured_points, predicted_points, rows, timings = [], [], [], []
with watch_load() as load:
    for n in sizes:
        x = torch.randn(n, K, dtype=tdtype, device=device)
        timings.append(benchmark(partial(torch.matmul, x, weight), warmup=2, repeat=9, device=device))
for n, timing in zip(sizes, timings):
    cost = lp.matmul_cost(n, K, K, dtype=mdtype)
    achieved = cost.flops / timing.min_s  # best achieved rate: fastest repeat
    typical = cost.flops / timing.median_s
    predicted = lp.attainable_flops(cost.intensity, host, mdtype)
    label = "GEMV" if n == 1 else f"N={n}"
    measured_points.append((label, cost.intensity, achieved))
    predicted_points.append((label, cost.intensity))
    rows.append((n, cost.intensity, predicted, achieved, achieved / predicted, typical / predicted,
                 timing.spread))
    if n == 1:  # the GEMV only streams the weights: its rate in bytes
        gemv_bandwidth = cost.bytes / timing.min_s
print(f"GEMV: weights streamed at {lp.format_bandwidth(gemv_bandwidth)}, "
      f"{gemv_bandwidth / host.mem_bandwidth:.0%} of the bandwidth measure_host() measured "
      f"({lp.format_bandwidth(host.mem_bandwidth)})")
display(lp.Table(["N", "FLOP/B", "predicted", "best", "best/pred", "median/pred", "IQR/median"],
                 rows, title=f"X(N, {K}) @ W({K}, {K}) in {mdtype} on this machine",
                 formats={"FLOP/B": ".1f", "predicted": lp.format_flop_rate,
                          "best": lp.format_flop_rate, "best/pred": ".2f", "median/pred": ".2f",
                          "IQR/median": ".0%"}))
best_rates = [rate for _, _, rate in measured_points]
print(f"best rate rises with N at every step: {all(np.diff(best_rates) > 0)}; the largest product "
      f"reached {best_rates[-1] / host.peak(mdtype):.0%} of the peak measure_host() measured")
print(load.note())

# %% [markdown] slideshow={"slide_type": "subslide"}
# Read the `best/pred` column: near 1, the roofline predicted the product's speed; well below 1,
# something the roofline ignores got in the way. The GEMV's row is a bandwidth measurement in
# disguise: it does nothing but stream the weights, so its `best/pred` is the fraction of the
# measured bandwidth that PyTorch's matrix-vector kernel reaches, printed in bytes above the
# table. (A value above 1 means that the copy of `measure_host()` ran slower than this
# stream, as it can on a busy machine: the roof is a measurement too.) How large that fraction is depends on the machine and on the BLAS library behind
# PyTorch. `benchmarks/decode_bandwidth.py` times it beside NumPy's kernel: in the results
# recorded in `benchmarks/README.md`, PyTorch's kernel streamed a matrix at nearly the host
# bandwidth on one Intel Xeon, but at under half of it on an AMD EPYC, where NumPy's came
# close; a kernel that keeps too few loads in flight cannot saturate the memory system the
# way the large copy of `measure_host()` does. Look next at the sizes near the ridge: where
# compute and memory do not overlap perfectly, a product falls below the roof even on a quiet
# machine. The largest product is the one closest in shape to the large product with which
# `measure_host()` found the peak; the line printed under the table says how close to that
# peak it came. On a GPU the smallest products also pay a fixed kernel-launch cost that the
# roofline does not model.

# %% slideshow={"slide_type": "fragment"}
from matplotlib.ticker import EngFormatter, LogLocator

fig, axes = plt.subplots(2, 1, figsize=(7.0, 8.4), layout="constrained")
lp.plot_roofline(a10, points=[("GEMV (N=1)", gemv.intensity), ("attention, N=4096", attn.intensity),
                              ("GEMM 4096^3", gemm.intensity)], dtype="fp16", ax=axes[0])
axes[0].set_title("A10 (datasheet), the lecture's operators")
for text in axes[0].texts:  # the operators' names below their points, clear of the roof
    if not text.get_text().startswith("ridge"):
        text.xyann = (8, -14)
# Measured squares land anywhere below (or above) their circles, so the products are named
# on the top axis, not beside the points.
lp.plot_roofline(host, points=[("", intensity) for _, intensity in predicted_points], dtype=mdtype,
                 ax=axes[1], measured=[("", intensity, rate) for _, intensity, rate in measured_points])
top = axes[1].secondary_xaxis("top")
top.set_xticks([intensity for _, intensity in predicted_points],
               [label.removeprefix("N=") for label, _ in predicted_points], rotation=90)
top.xaxis.set_minor_locator(plt.NullLocator())
top.set_xlabel("tokens N in the product")
axes[1].set_title("This machine (measured peak and bandwidth)")
axes[1].yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
for ax in axes:
    ax.set_xlim(0.1, 1e4)
    ax.legend(loc="lower right", fontsize="medium")
    ax.yaxis.set_major_formatter(EngFormatter(places=0, sep=""))
    ax.yaxis.set_minor_formatter(plt.NullFormatter())
    for text in ax.texts:
        text.set_fontsize("medium")
plt.show()

# %% [markdown] slideshow={"slide_type": "-"}
# **Figure 4.** Top: the A10's roofline with the lecture's three operators. The GEMV
# (intensity about 1) and standard attention (62) sit on the sloped, memory-bound part; the
# 4096-cube GEMM (1365) sits on the flat, compute-bound part. Bottom: your machine's roofline,
# drawn from the peak and bandwidth `measure_host()` measured, with the predicted position of
# each timed product (filled circles, on the roof; the top axis names each product by its
# $N$) and where it actually landed (hollow squares at the same intensity, at the fastest
# repeat). The vertical gap between a circle and its square is the `best/pred` ratio in the
# table above.
# The *shape* is what to look for: the model says that as $N$ grows the points climb with the
# intensity and level off toward the peak. The line printed under the table says whether the
# measured rate rose at every step on your machine; how close the squares come to the roof is
# your machine's efficiency at each size.

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### The whole step, operator by operator
#
# `lp.step_costs` applies these formulas to every operator of Llama 2 7B, with the real
# shapes: grouped heads where a model has them ({term}`GQA`), RoPE, the norms, residual additions, the
# SwiGLU activation, and the LM head (computed for the last position only, since generation
# needs no other logits). Here are the per-operator tables of a 4096-token prefill and of one
# decode step with 4096 tokens in the cache, on the A10.

# %% slideshow={"slide_type": "-"}
lp.step_costs(llama, "prefill", batch=1, seq_len=4096).on(a10)

# %% slideshow={"slide_type": "-"}
lp.step_costs(llama, "decode", batch=1, seq_len=4096).on(a10)

# %% [markdown] slideshow={"slide_type": "subslide"}
# Notice, in prefill:
#
# - The projections and FFN matrices run at 1000 or more FLOP/byte (for the square
#   projections, about $4096/3$ as derived): compute bound, and together most of the step's time.
# - `qk`, `softmax` and `sv` are the standard attention, now summed over 32 heads and 32
#   layers: memory bound, and at $N = 4096$ they already cost a large share of the step because
#   they carry the $N^2$ matrices. Their FLOPs grow as $N^2$ while the projections' grow as
#   $N$, so the longer the prompt, the larger their share.
# - The norms, RoPE, the activation and the residual additions do at most about one FLOP per byte:
#   cheap in FLOPs, not free in time. {term}`Fusing <operator fusion>` them into their
#   neighbours (chapter 7) removes
#   most of their bytes.
#
# And in decode every single row is memory bound, at one FLOP per byte or less. The time column is
# almost exactly "bytes divided by 600 GB/s", and the bytes are almost exactly the weights
# plus the KV cache: the step reads about 13.2 GB of weights (all but the embedding table)
# and, at 4096 cached tokens, another
# 2.1 GB of keys and values (the `qk` and `sv` rows), to produce one token.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 4.5 The simple end-to-end model
#
# The lecture condenses all of this into a two-term model of a request with $S$ prompt
# tokens and $G$ generated tokens, assuming prefill is compute bound and decode is memory
# bound and ignoring attention's own work:
#
# $$t \;\approx\; S\cdot\frac{2P}{\Pi} \;+\; G\cdot\frac{2P}{\beta}.$$
#
# The first term does the prompt's FLOPs at the peak rate; the second reads the fp16 weights
# ($2P$ bytes) once per generated token at full bandwidth. It is an *optimistic estimate*, not a
# lower bound: it assumes peak rates, but it also charges work a step does not do (it reads
# one row of the embedding table, not all of it, and needs the LM head only at the last
# position), so where those matrices are a large share of $P$ it can predict *more* time
# than the operators really need. The per-step roofline model of section 4.4 is optimistic in
# the same way (every operand crossing memory exactly once, at full bandwidth); section 4.6
# shows when each of the two comes out above the other.
# `lp.simple_latency` implements it; for the lecture's request, $S = 350$ and $G = 150$ on
# an A10, by hand:
#
# $$t_{\text{prefill}} = 350 \cdot \frac{2 \cdot 6.74\times10^{9}}{125\times10^{12}} \approx 37.7\ \text{ms},\qquad
#   t_{\text{decode}} = 150 \cdot \frac{2 \cdot 6.74\times10^{9}}{600\times10^{9}} \approx 3.37\ \text{s}.$$
#
# `lp.simple_latency` charges one decode step fewer, $G - 1 = 149$ of them (3.35 s): the prefill
# yields the first token, and the lecture's $G\cdot 2P/\beta$ rounds that token's step in.

# %% slideshow={"slide_type": "-"}
S, G = 350, 150
est = lp.simple_latency(llama, a10, prompt_tokens=S, output_tokens=G)
assert math.isclose(est.prefill_s, S * 2 * P / 125e12)
assert math.isclose(est.decode_s, (G - 1) * 2 * P / 600e9)  # the prefill yields the first token
print(f"A10: prefill {lp.format_seconds(est.prefill_s)}, decode {lp.format_seconds(est.decode_s)}, "
      f"total {lp.format_seconds(est.total_s)}")
print(f"decode share of the total: {est.decode_s / est.total_s:.1%}")

# %% [markdown] slideshow={"slide_type": "subslide"}
# Ninety-nine percent of the predicted time is decode. A user waits about 38 ms for the first
# token and then 22 ms for each of the next ones. The same request on the other catalog
# accelerators, from the T4 of older cloud instances to current parts:

# %% slideshow={"slide_type": "-"}
names = ["T4", "A10G", "L4", "A10", "L40S", "RTX 4090", "A100 SXM 40GB", "A100 SXM 80GB",
         "H100 PCIe", "H100 SXM", "H200 SXM", "MI300X"]
estimates = {n: lp.simple_latency(llama, n, prompt_tokens=S, output_tokens=G) for n in names}
lp.Table(["part", "prefill", "decode", "total", "tokens/s"],
         [(n, e.prefill_s, e.decode_s, e.total_s, G / e.total_s) for n, e in estimates.items()],
         title=f"Simple model, Llama 2 7B in fp16, {S} prompt + {G} output tokens",
         formats={"prefill": lp.format_seconds, "decode": lp.format_seconds,
                  "total": lp.format_seconds, "tokens/s": ".1f"})

# %% slideshow={"slide_type": "fragment"}

ax = new_axes(f"Simple model, Llama 2 7B fp16, {S} prompt + {G} output tokens",
              None, "predicted time (s)")
x = np.arange(len(names))
ax.bar(x, [estimates[n].decode_s for n in names], label="decode: (G − 1) · 2P / β")
ax.bar(x, [estimates[n].prefill_s for n in names],
       bottom=[estimates[n].decode_s for n in names], label="prefill: S · 2P / Π")
ax.set_xticks(x, names, rotation=40, ha="right")
ax.legend(fontsize="medium")
plt.tight_layout()
plt.show()

# %% [markdown] slideshow={"slide_type": "-"}
# **Figure 5.** Predicted end-to-end time of one request across accelerators. The prefill
# slice is a sliver on top of every bar: the ranking is by memory bandwidth, not by FLOP/s.
# The A10G, with little more than half the A10's tensor throughput, is predicted almost as fast
# as the A10; the L4, with a similar peak but half the bandwidth, is predicted about twice as
# slow. For single requests, buy bandwidth. Two of these parts deserve a caveat on the
# prefill side: the T4 (70 W) and the L4 (72 W) are power-capped cards, and under sustained
# tensor-core load their clocks drop below the boost clock their datasheet peaks assume, so
# they rarely hold those peaks for long (70 W and 72 W are the maximum power in NVIDIA's T4
# {cite:p}`nvidia_t4` and L4 {cite:p}`nvidia_l4` datasheets).

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### Why real runs take longer
#
# The lecture's comparison slide, "Comparison of Generation Time and Predicted Time Across
# Instance Types" (adapted from Baseten's guide {cite:p}`shenoy2023baseten`, the lecture's
# source also for the A10 balance and the attention and GEMM intensities), puts predictions of this kind beside
# generation times measured on cloud instances of each GPU type, and the measured times
# come in above the predictions. We do not quote the factor: the slide gives no numbers to
# check it against. An optimistic estimate should be beaten by real runs, and the gap has
# identifiable causes:
#
# 1. **Achieved bandwidth is below the datasheet figure.** Real kernels reach a large
#    fraction of the nominal bandwidth, not all of it, and every decode estimate scales with
#    $1/\beta$. (`measure_host()` reports what a stream achieves: the honest $\beta$ of your
#    machine.)
# 2. **Decode reads more than the weights.** Each step also reads the KV cache: about
#    0.5 MB per cached token for Llama 2 7B in fp16, which at 500 tokens of context adds
#    a quarter of a gigabyte per step.
# 3. **Operators the model ignores.** Norms, RoPE, residuals, the activation and the
#    softmax each stream activations through memory, and each is a separate kernel launch.
# 4. **Fixed overhead per step.** A decode step of a 32-layer model launches hundreds of
#    kernels, each costing microseconds that no roofline counts; sampling and the serving
#    stack add more per token.
# 5. **Prefill below peak.** Matrices of 350 rows rarely keep every tensor core busy at the
#    dense peak, and the attention inside prefill is memory bound.
#
# The first four all act on decode, which is almost the whole total, so a measured time of,
# say, twice the prediction means the run achieved roughly half the bandwidth-bound rate
# overall.
# `lp.roofline_latency` adds items 2, 3 and 5 (per-operator rooflines for the prefill and
# for every decode step as the cache grows); it cannot add items 1 and 4, which are properties
# of the implementation and the machine rather than of the model.

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### Predict, then measure: the reference model on your machine
#
# Llama 2 7B is out of reach here, but the same experiment runs at a smaller scale: the
# reference models `ref-small` (about 20 million parameters) and `ref-medium` (about 156
# million, whose fp32 weights exceed any CPU cache), built by `llmperf.measured.model.Transformer` from the
# same `ModelConfig` the analytic layer uses. `measure_prefill` times the prefill of a random
# prompt (shorter than the lecture's, to keep the notebook quick on a laptop), and
# `measure_decode` one decode step with the cache filled halfway through the generation, the
# average step of the request. Each repeats its step several times, and the table uses the
# *median* repeat, with the interquartile range beside it as a share of the median: the
# question here is what a run typically takes, not the best it can do.
#
# A prediction must count the work the model actually does. The reference model runs
# attention as one fused, causal kernel in prefill (PyTorch's `scaled_dot_product_attention`,
# which keeps $S$ and $P$ on chip and skips the masked scores) and as two matrix products and
# a softmax in decode (`model.attention_kernel`), so its roofline prediction,
# `Measurement.predicted_s(host)`, counts attention that way; the A10 and Llama 2 analysis
# of this chapter keeps the lecture's standard algorithm, and chapter 7 covers
# FlashAttention. Both predictions use the measured `host`.

# %% slideshow={"slide_type": "-"} tags=["nbval-ignore-output"]
from llmperf.measured.measure import measure_decode, measure_prefill
from llmperf.measured.model import Transformer

print(f"attention kernel per phase: {Transformer.attention_kernel}")
experiments = {"ref-small": (S, 48), "ref-medium": (128, 16)}
results, rows, runs = {}, [], {}
with watch_load() as load:
    for name, (s, g) in experiments.items():
        model = Transformer(lp.get_model(name), device=device, dtype=tdtype, max_seq_len=s + g)
        runs[name] = (measure_prefill(model, s, warmup=1, repeat=7),
                      measure_decode(model, s + g // 2, steps=15, warmup=3))
for name, (s, g) in experiments.items():
    cfg = lp.get_model(name)
    prefill, decode = runs[name]
    simple = lp.simple_latency(cfg, host, prompt_tokens=s, output_tokens=g, dtype=mdtype)
    results[name] = dict(
        prefill=(prefill.timing.median_s, simple.prefill_s, prefill.predicted_s(host)),
        decode=(decode.timing.median_s, simple.tpot_s, decode.predicted_s(host)),
    )
    for phase, m in (("prefill", prefill), ("decode", decode)):
        meas, pred_simple, pred_roof = results[name][phase]
        what = f"prefill of {s}" if phase == "prefill" else f"decode step at {s + g // 2}"
        rows.append((name, what, meas, m.timing.spread, pred_simple, meas / pred_simple,
                     pred_roof, meas / pred_roof))
times = ("measured (median)", "simple", "roofline")
display(lp.Table(["model", "step", times[0], "IQR/median", times[1], "measured/simple", times[2],
                  "measured/roofline"], rows,
                 title="Reference models on this machine: median measured time against both predictions",
                 formats={**dict.fromkeys(times, lp.format_seconds), "IQR/median": ".0%",
                          "measured/simple": ".2f", "measured/roofline": ".2f"}))
larger = [f"{row[0]} {row[1]}" for row in rows if row[4] > row[6]]
print(f"the simple model predicts more time than the roofline model for {len(larger)} of "
      f"{len(rows)} steps: {', '.join(larger) or 'none'}")
print(load.note())

# %% slideshow={"slide_type": "fragment"}
ax = new_axes("Measured time / predicted time on this machine", None, "ratio (log scale)")
labels, simple_ratio, roof_ratio = [], [], []
for name, phases in results.items():
    for phase, (meas, pred_simple, pred_roof) in phases.items():
        labels.append(f"{name}\n{'prefill' if phase == 'prefill' else 'decode step'}")
        simple_ratio.append(meas / pred_simple)
        roof_ratio.append(meas / pred_roof)
x = np.arange(len(labels))
ax.bar(x - 0.2, simple_ratio, width=0.4, label="against the simple model")
ax.bar(x + 0.2, roof_ratio, width=0.4, label="against the per-step roofline model")
ax.axhline(1.0, color="black", linewidth=1)
ax.axhline(2.0, color="gray", linestyle=":", label="twice the prediction")
ax.set_yscale("log")
ax.set_xticks(x, labels)
legend_below(ax)
plt.show()

# %% [markdown] slideshow={"slide_type": "-"}
# **Figure 6.** Median measured time over predicted time on your machine, for the prefill
# (the {term}`time to first token <TTFT>`, less sampling) and for one decode step of each reference model.
# A bar at 1 would mean the machine ran at its measured roofline; a bar above 1 is the gap
# listed above. A bar below 1 is possible for the simple model here, and the end of this
# caption says why: it is an optimistic estimate, not a lower bound, and it overcharges where
# the matrices a step does not read in full are a large share of the parameters. Look for three things in your bars. Does decode of `ref-medium`, whose
# weights cannot hide in a cache, come closer to its prediction than decode of `ref-small`,
# whose steps are so short that fixed per-step overhead (item 4) weighs more? Does prefill
# sit further from its bound than decode, since a short prompt through narrow matrices
# rarely reaches the peak of the large square product `measure_host()` timed? And why do the
# two predictions differ at all? The simple model charges $2P$ for *every* parameter,
# including the embedding table, of which a step reads one row per token, and, in prefill,
# for the LM head at every position, where generation needs only the last. In the reference
# models each of these matrices is about a fifth of the parameters (2 % in Llama 2 7B), so
# the simple model can predict more time than the per-step roofline model, despite leaving
# out the KV cache and the element-wise operators. The line printed under the table says for
# which steps it does on your machine. Where the roofline model's time is the larger, look for
# a prefill that is not compute bound on your machine's roofline, as the simple model assumes
# every prefill is (with a high ridge, as on a GPU, a short prompt through narrow matrices is
# memory bound).

# %% slideshow={"slide_type": "skip"} tags=["hide-cell"]
# The paragraph above: the embedding table's share of the parameters.
shares = {n: lp.get_model(n).vocab_size * lp.get_model(n).d_model / lp.get_model(n).param_count()
          for n in ("ref-small", "ref-medium", "llama-2-7b")}
assert all(0.18 < shares[n] < 0.23 for n in ("ref-small", "ref-medium"))
assert round(shares["llama-2-7b"], 2) == 0.02

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 4.6 Where the simple model stops holding
#
# For Llama 2 7B at 350 plus 150 tokens on the A10, the per-step roofline model and the
# simple model agree to within about one percent. Do not read that as proof that the simple
# model is accurate: the agreement comes from errors of opposite sign that happen to
# cancel. Because every decode operator is memory bound, the roofline model's decode time
# splits exactly into the weight reads of the matrix products, the attention's reads of the
# KV cache, and the element-wise operators; the cell below takes the pieces from
# `lp.step_costs` and sets each against the simple model's total.

# %% slideshow={"slide_type": "-"}
simple_est = lp.simple_latency(llama, a10, S, G)
roof_est = lp.roofline_latency(llama, a10, S, G)
one_step = lp.simple_decode_step_time(llama, a10)  # 2P / beta: the simple model's step
kv_rows = ("qk", "softmax", "sv")                   # attention proper: reads the KV cache
matmul_rows = ("q_proj", "k_proj", "v_proj", "o_proj", "ffn_gate", "ffn_up", "ffn_down", "lm_head")
weights_s = kv_s = other_s = 0.0
for step in range(G - 1):  # the roofline model's decode steps, as the cache grows
    table = lp.step_costs(llama, "decode", seq_len=S + step).on(a10)
    assert all(row.bound == "memory" for row in table)
    weights_s += sum(table[r].time_s for r in matmul_rows)
    kv_s += sum(table[r].time_s for r in kv_rows)
    other_s += sum(r.time_s for r in table if r.name not in matmul_rows + kv_rows)
pieces = {
    "matrix products read less than 2P bytes": weights_s - (G - 1) * one_step,
    "attention over the KV cache (qk, softmax, sv)": kv_s,
    "element-wise operators (norms, RoPE, ...)": other_s,
    "prefill, per operator instead of S 2P / Pi": roof_est.prefill_s - simple_est.prefill_s,
}
assert math.isclose(simple_est.total_s + sum(pieces.values()), roof_est.total_s, rel_tol=1e-9)
embedding_share = llama.vocab_size * llama.d_model / P
print(f"embedding table (V x D) as a share of P: {embedding_share:.2%}")
lp.Table(["term", "time", "share of the simple model"],
         [("simple model", simple_est.total_s, None)]
         + [(what, None, seconds / simple_est.total_s) for what, seconds in pieces.items()],
         title=f"Llama 2 7B on the A10, S = {S}, G = {G}: from the simple model to the roofline model",
         formats={"time": lp.format_seconds, "share of the simple model": "+.2%"},
         footer=[("roofline model", roof_est.total_s, roof_est.total_s / simple_est.total_s - 1)])

# %% [markdown] slideshow={"slide_type": "subslide"}
# The two largest pieces nearly cancel. The matrix products of a decode step read about
# 2 % fewer bytes than the simple model's $2P$, because $P$ counts the embedding table
# ($V \times D$ parameters) of which a step reads one row; the KV cache, which the simple
# model leaves out, adds back a percent or two at 350 to 500 cached tokens. Both models charge
# $G-1$ decode steps (the prefill yields the first token; the lecture's formula, with $G$, would
# add one more, about 0.7 % of the total), and the prefill's attention and the element-wise operators add
# fractions of a percent. Change the workload and the balance goes: the KV term grows with
# the context and the batch, while the embedding term stays fixed. The simple model drops
# two terms that grow with the workload:
#
# - the **KV-cache reads** of decode, $B \cdot 2 \cdot 2 \cdot L \cdot D \cdot N$ bytes per
#   step for $B$ sequences holding $N$ tokens each (in fp16; with grouped-query attention,
#   the number of KV heads times $d$ replaces $D$), against $2P$ bytes of weights; and
# - the **attention work** of prefill, which grows as $N^2$ (and, under the standard
#   algorithm, its $8N^2$ bytes per head), against the projections' $2PN$.
#
# The first is linear in both context and batch. At batch 1 and 4096 tokens the cache is
# 2.1 GB beside 13.5 GB of weights; at batch 8 it is 17 GB, more than the weights, and more
# than an A10 can hold beside them. The figure sweeps both: the ratio of the roofline
# model's time to the simple model's, per decode step and for the whole prefill.

# %% slideshow={"slide_type": "fragment"}
contexts = np.array([128, 256, 512, 1024, 2048, 4096])
simple_step = lp.simple_decode_step_time(llama, a10)  # 2P / beta
fig, axes = plt.subplots(2, 1, figsize=(7.0, 8.4), layout="constrained")
for batch in (1, 2, 4, 8, 16):
    ratio = np.array([lp.decode_step_time(llama, a10, int(n), batch=batch) / simple_step
                      for n in contexts])
    # the step's cache holds n + 1 tokens per sequence: does a batch of them fit beside the weights?
    fits = np.array([batch <= lp.max_batch_size(llama, a10, int(n) + 1, ecc=False) for n in contexts])
    line, = axes[0].plot(contexts[fits], ratio[fits], "o-", label=f"batch {batch}")
    axes[0].plot(contexts[~fits], ratio[~fits], "x:", color=line.get_color())
axes[0].set(xscale="log", xlabel="tokens in the KV cache per sequence",
            ylabel="roofline step time / simple step time",
            title="Decode step, Llama 2 7B on A10")
axes[0].set_xscale("log", base=2)
axes[0].legend(loc="upper left", fontsize="medium")

prompts = np.array([128, 256, 512, 1024, 2048, 4096])
prefill_ratio = [lp.prefill_time(llama, a10, int(n)) / lp.simple_latency(llama, a10, int(n), 1).prefill_s
                 for n in prompts]
axes[1].plot(prompts, prefill_ratio, "o-", color="C5")
axes[1].set_xscale("log", base=2)
axes[1].set(xlabel="prompt tokens S", ylabel="roofline prefill time / (S · 2P / Π)",
            title="Prefill, Llama 2 7B on A10")
plt.show()
print(f"decode at 4096 tokens: batch 1 x{lp.decode_step_time(llama, a10, 4096) / simple_step:.2f}, "
      f"batch 4 x{lp.decode_step_time(llama, a10, 4096, batch=4) / simple_step:.2f}")
print(f"prefill of 4096 tokens: x{prefill_ratio[-1]:.2f} the simple model's time")

# %% [markdown] slideshow={"slide_type": "-"}
# **Figure 7.** Where the two models part ways. Top: one decode step. At batch 1 and short
# contexts the roofline model's step is the simple model's $2P/\beta$; as the cache grows, every
# step also streams the keys and values, and with more sequences per batch the cache reads
# outgrow the weight reads. Crosses mark configurations whose weights and cache do not fit in
# the A10's 24 GiB (`lp.max_batch_size`): capacity, not bandwidth, ends those lines. Bottom: the prefill. A short
# prompt is not compute bound at all: with fewer than about 230 tokens per product the
# linear layers sit left of the ridge (Figure 3), so a 128-token prefill is bound by reading
# the weights, like a decode step, and takes well over $S\cdot 2P/\Pi$. Around 256 tokens the
# simple model is nearly right; beyond, the $N^2$ attention and the traffic of its score and
# probability matrices take over.

# %% slideshow={"slide_type": "skip"} tags=["hide-cell"]
# The caption above, from the sweep.
assert 220 < crossing < 240 and prefill_ratio[0] > 1.5 and abs(prefill_ratio[1] - 1) < 0.15
assert prefill_ratio[-1] > prefill_ratio[2] > prefill_ratio[1]

# %% [markdown] slideshow={"slide_type": "fragment"}
# :::{important}
# The simple model is a good first answer for short contexts and single requests; long
# contexts and large batches need the KV cache and the attention in the model.
# :::

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 4.7 Communication across GPUs
#
# A model whose weights do not fit in one device (Llama 2 70B needs about 138 GB in fp16)
# must be split. *Tensor parallelism* in the style of Megatron-LM {cite:p}`shoeybi2019megatron`
# splits every layer across $p$ GPUs: the attention heads are divided among the GPUs, and
# the FFN's first matrices are split by columns and its last matrix by rows. Each GPU then
# holds $1/p$ of every weight matrix and computes a *partial sum* of the layer's output.
# The partial sums must be added before the next layer: one all-reduce of the activation
# after the attention block and one after the FFN block, two per layer. For $T$ tokens in
# flight and width $D$, each all-reduce combines a message of
#
# $$m = T \cdot D \cdot 2\ \text{bytes (fp16)}.$$
#
# A ring all-reduce (a reduce-scatter followed by an all-gather) makes each GPU send, and
# receive, $2\frac{p-1}{p}\,m$ bytes, which approaches $2m$ for large $p$ and is optimal in
# bandwidth {cite:p}`patarasuk2009allreduce`. A whole forward pass over $T$ tokens
# therefore makes each GPU send
#
# $$\text{bytes sent per GPU} = 2L \cdot 2\frac{p-1}{p} \cdot T \cdot D \cdot 2 ,$$
#
# which for one decode token ($T = 1$) is the per-token figure.
#
# `lp.tensor_parallel_bytes_per_token` holds this formula, and `lp.INTERCONNECTS` the link
# speeds, cited to NVIDIA's datasheets: NVLink on an H100 SXM is 900 GB/s
# {cite:p}`nvidia_h100` and on an A100 SXM 600 GB/s {cite:p}`nvidia_a100`, both counted in
# the two directions together; the A10 has no NVLink and talks over PCIe Gen4 at 64 GB/s
# {cite:p}`nvidia_a10`, likewise counted both ways. A ring sends and receives
# at the same time, so each direction's half (`link.one_way`) is the rate that matters.

# %% slideshow={"slide_type": "-"}
llama70 = lp.get_model("llama-2-70b")
h100 = lp.get_accelerator("H100 SXM")
p = 8
one_token = lp.tensor_parallel_bytes_per_token(llama70, tp=p, dtype="fp16")
assert one_token == 2 * 80 * 2 * 7 / 8 * 8192 * 2  # the formula above, by hand
weights_per_gpu = llama70.weight_bytes("fp16") / p
print(f"Llama 2 70B, p = {p}: {lp.format_bytes(one_token)} sent per GPU per token")
print(f"reading 1/{p} of the weights per decode step on an H100 SXM: "
      f"{lp.format_seconds(weights_per_gpu / h100.mem_bandwidth)}")
# a 4096-token prefill, attention as one fused causal kernel (as serving stacks run it),
# its FLOPs split evenly over the p GPUs
prefill70 = lp.step_costs(llama70, "prefill", seq_len=4096, attention="fused")
print(f"4096-token prefill: {lp.format_flops(prefill70.total.flops / p)} per GPU, "
      f"{lp.format_seconds(prefill70.total.flops / p / h100.peak('fp16'))} at the H100 peak "
      f"(2P per token alone: {lp.format_flops(2 * llama70.param_count() * 4096 / p)})")
lp.Table(["link", "one way", "decode token", "4096-token prefill"],
         [(link.name, link.one_way, one_token / link.one_way, 4096 * one_token / link.one_way)
          for link in lp.INTERCONNECTS],
         title=f"Tensor-parallel traffic of Llama 2 70B over {p} GPUs: time on each link",
         formats={"one way": lp.format_bandwidth, "decode token": lp.format_seconds,
                  "4096-token prefill": lp.format_seconds})

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Worked problems
#
# **Worked problem 1 (tensor parallelism).** Llama 2 70B ($L = 80$, $D = 8192$) runs with
# 8-way tensor parallelism on H100 SXM GPUs connected by NVLink. (a) How many bytes does each
# GPU send for one decode token? (b) How long does that take on NVLink, against the time to
# read the GPU's share of the weights? (c) Repeat for a 4096-token prefill, against the
# prefill's compute time. (d) What changes over PCIe?
#
# <details><summary>Answer</summary>
#
# (a) One all-reduce message is $1 \cdot 8192 \cdot 2 = 16{,}384$ bytes; a ring all-reduce
# over 8 GPUs sends $2 \cdot \tfrac78 \cdot 16{,}384 = 28{,}672$ bytes per GPU; with two per
# layer and 80 layers that is $160 \cdot 28{,}672 \approx 4.59$ MB per token.
#
# (b) At 450 GB/s in each direction, about 10 µs, against about 5.1 ms to read
# $138/8 \approx 17$ GB of weights at 3.35 TB/s. In decode the *bandwidth* of the links is
# irrelevant. What does matter is that those bytes travel in 160 separate collectives per
# token, each with a fixed start-up latency of its own. Assume a small all-reduce within one
# NVLink domain costs on the order of 5 to 10 µs of latency (measure it on your system: NCCL's
# `all_reduce_perf` reports it); then $160 \times (5\text{ to }10)$ µs is 0.8 to 1.6 ms per
# token, against about 5 ms of weight reads per GPU. Decode communication is bounded by
# latency, not bandwidth, and it is a visible share of the step unless it overlaps.
#
# (c) A 4096-token prefill sends 4096 times as much, about 18.8 GB per GPU, or about 42 ms at
# 450 GB/s, while its FLOPs (about $2P$ per token plus the causal attention, from
# `lp.step_costs`) take about 74 ms per GPU at the dense peak. Communication is now
# the same order as compute: it must overlap with the matrix products, or it adds more than
# half as much again to the time to first token.
#
# (d) Over PCIe Gen4 at 32 GB/s per direction the prefill's 18.8 GB take about 0.6 s, many
# times the compute time. In decode the bandwidth is again not the issue: its 4.59 MB per
# token take about 0.14 ms at 32 GB/s, small beside the weight reads. Latency is, and it
# matters more here than on NVLink: the 160 all-reduces per token each move a small message
# (16,384 bytes, 28,672 sent per GPU), so their time is mostly per-transfer start-up
# latency, and a ring over 8 GPUs takes $2(p-1) = 14$ transfers per all-reduce, each paying
# it across PCIe. At
# 32 µs per all-reduce the 160 of them would take as long as the 5.1 ms of weight reads of
# (b); measure yours with NCCL's `all_reduce_perf` at a size of 16,384 bytes. Tensor
# parallelism over PCIe can still serve decode, and it is used that way on GPUs without
# NVLink, but its cost per token is set by that latency, not by the bytes. In the long
# prefill it is the bytes that cost, unless its all-reduces overlap with the matrix
# products. The alternative is to split the model by layers (pipeline parallelism): one
# activation transfer per stage boundary instead of two all-reduces per layer, at the price
# of stages that wait for each other.
#
# </details>

# %% [markdown] slideshow={"slide_type": "-"}
# **Worked problem 2 (the attention ceiling).** The standard algorithm's intensity tends to
# $(4d+3)/8$ as $N$ grows. Which head dimension would make standard attention compute bound
# on an A10 at very long sequences? On an H100 SXM?
#
# <details><summary>Answer</summary>
#
# We need $(4d+3)/8 > I^{*}$, so $d > (8I^{*} - 3)/4 \approx 2I^{*}$. On the A10,
# $I^{*} = 208.3$ gives $d > 416$; on the H100 SXM ($989.5$ TFLOP/s over 3.35 TB/s,
# $I^{*} \approx 295$), $d > 590$. Real models use $d$ of 64 to 256, so the standard algorithm
# is memory bound on both, at every length. The fix is to remove the $N^2$ traffic, not to
# change the model.
#
# </details>
#
# **Worked problem 3 (when decode's linear layers turn compute bound).** For
# $X(N, D) \cdot W(D, D_{\text{ff}})$ with $D = 4096$ and $D_{\text{ff}} = 11008$ (Llama 2's FFN up
# projection) in fp16, how many tokens
# $N$ must share one weight read for the product to reach the A10's ridge?
#
# <details><summary>Answer</summary>
#
# For $N \ll K, M$ the intensity is $NKM/(NK + KM + NM) \approx N/(1 + N/K + N/M)$, roughly
# $N$ for small $N$. Solving $N \cdot 4096 \cdot 11008 / (4096N + 4096\cdot 11008 + 11008N) = 208.3$
# gives $N \approx 224$. `lp.ffn_critical_batch(llama, a10)` returns the same number (checked
# in the folded cell below): it is the FFN's {term}`critical batch`. Chapter 5 asks whether
# 224 sequences fit in 24 GiB.
#
# </details>
#
# **Worked problem 4 (choosing a GPU).** Using the simple model, which is faster for the
# lecture's request (350 prompt tokens, 150 output tokens, Llama 2 7B in fp16), an L4 or an
# A10G? By how much, and why is the answer not given by the ratio of their FLOP/s?
#
# <details><summary>Answer</summary>
#
# The A10G: about 3.4 s against about 6.7 s. The L4 has more fp16 tensor throughput
# (121 against 70 TFLOP/s), which shortens its prefill, but the prefill is about 1 % of the
# total. Decode, the other 99 %, reads the weights at 600 GB/s on the A10G and at 300 GB/s
# on the L4, so the ratio is close to 2, the ratio of their bandwidths.
#
# </details>
#
# **Worked problem 5 (KV reads).** At what context length does one decode step of Llama 2 7B
# (batch 1, fp16) read as many bytes of KV cache as of weights? And for Llama 3 8B, each of
# whose 8 KV heads is shared by a group of 4 query heads?
#
# <details><summary>Answer</summary>
#
# Llama 2 7B stores $2 \cdot 2 \cdot 32 \cdot 4096 = 524{,}288$ bytes per token, and its
# weights are 13.48 GB, so the crossover is near 25,700 tokens, beyond its 4096-token window
# at batch 1. At batch 8 it happens at about 3,200 tokens. Llama 3 8B stores a quarter as
# much per token (8 KV heads of 128 instead of 32), 131,072 bytes, against about 16 GB of
# weights: the crossover is near 122,500 tokens. Grouped-query attention is, among other
# things, a bandwidth optimization for decode.
#
# </details>

# %% slideshow={"slide_type": "skip"} tags=["hide-cell"]
# The worked problems' answers, checked against llmperf.
nvlink, pcie4 = (next(link for link in lp.INTERCONNECTS if link.name.startswith(prefix))
                 for prefix in ("NVLink 4", "PCIe Gen4"))
assert round(one_token / 1e6, 2) == 4.59 and round(one_token / nvlink.one_way * 1e6) == 10
assert round(weights_per_gpu / h100.mem_bandwidth * 1e3, 1) == 5.1
assert round(4096 * one_token / 1e9, 1) == 18.8 and round(4096 * one_token / nvlink.one_way * 1e3) == 42
assert round(prefill70.total.flops / p / h100.peak("fp16") * 1e3) == 74
assert round(4096 * one_token / pcie4.one_way, 1) == 0.6 and round(one_token / pcie4.one_way * 1e3, 2) == 0.14
assert one_token / 160 == 28_672 == 2 * (p - 1) / p * 16_384 and 2 * (p - 1) == 14
assert round(weights_per_gpu / h100.mem_bandwidth / 160 * 1e6) == 32  # latency that equals the weight reads
assert math.ceil((8 * ridge_a10 - 3) / 4) == 416 and round(h100.ridge_point("fp16")) == 295
assert math.ceil((8 * h100.ridge_point("fp16") - 3) / 4) == 590
assert lp.ffn_critical_batch(llama, a10) == 224
assert round(estimates["A10G"].total_s, 1) == 3.4 and round(estimates["L4"].total_s, 1) == 6.7
llama3 = lp.get_model("llama-3-8b")
assert llama.kv_bytes_per_token("fp16") == 524_288 and llama3.kv_bytes_per_token("fp16") == 131_072
assert round(llama.weight_bytes("fp16") / llama.kv_bytes_per_token("fp16"), -2) == 25_700
assert round(llama.weight_bytes("fp16") / llama.kv_bytes_per_token("fp16") / 8, -2) == 3_200
assert round(llama3.weight_bytes("fp16") / llama3.kv_bytes_per_token("fp16"), -2) == 122_500

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Summary
#
# - Four resources bound inference: compute ($\Pi$), memory bandwidth ($\beta$), memory
#   capacity ($C$), and, for models split across GPUs, communication.
# - An operator is compute bound when its arithmetic intensity exceeds the accelerator's
#   ridge point $I^{*} = \Pi/\beta$: 208.3 FLOP/byte for the A10 in fp16, between about 100 and 420 across
#   the catalog, and whatever `measure_host()` finds on your machine.
# - Standard attention does $(4d+3)N^2$ FLOPs and moves $8N^2 + 8Nd$ bytes per head: 62.4
#   FLOP/byte at $d = 128$, $N = 4096$, and never more than about $d/2$, because the $N\times N$
#   matrices $S$ and $P$ round-trip through memory. Tiled attention with an online softmax
#   (FlashAttention, chapter 7) removes that traffic. Charging every reread of $K$ and $V$ to
#   off-chip memory (an upper bound on traffic) already lifts the intensity to about the block
#   size; in practice a cache serves those rereads and the kernel is compute bound
#   (FlashAttention-2: 50 to 73 % of an A100's peak).
# - Linear layers are GEMMs of intensity $NKM/(NK+KM+NM)$: 1365 FLOP/byte at $4096^3$,
#   compute bound in prefill; in decode $N = 1$ and they become memory-bound GEMVs at about
#   1 FLOP/byte.
# - The simple model $t \approx S\cdot 2P/\Pi + G\cdot 2P/\beta$ (`lp.simple_latency` charges $G - 1$ decode steps: the prefill yields the first token) is an optimistic estimate
#   dominated by decode, not a lower bound; measured runs take longer (the lecture's slide
#   "Comparison of Generation Time and Predicted Time Across Instance Types", adapted from
#   Baseten's guide, shows it) because of achieved bandwidth, KV reads, element-wise operators
#   and per-step overhead. On your machine, the ratio plot set the reference models against both models,
#   predicted with the attention kernel they actually run; for models this small the simple
#   model can even overestimate the prefill, because it charges the embedding table and the
#   LM head at every position.
# - For Llama 2 7B at 350 + 150 tokens the simple model lands within about one percent of the
#   per-step roofline model only because errors cancel: the embedding table it charges but a
#   step does not read, against the KV-cache reads it leaves out.
# - The simple model fails for long contexts and large batches, where KV-cache reads and the
#   $N^2$ attention grow past the weights; the per-step roofline model keeps them.
# - Tensor parallelism sends about $4L\,D\,T\cdot 2$ bytes per GPU per forward pass (two
#   ring all-reduces per layer): negligible bandwidth in decode (where the latency of 160
#   collectives per token matters instead), comparable with compute in a long prefill on
#   NVLink, and several times the compute of a long prefill over PCIe.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Exercises
#
# {doc}`Exercise set 4 </exercises/04_boundedness>` asks you to derive intensities, place
# operators on rooflines, predict request latencies and reproduce parts of this chapter's
# measurements; its checks tell you immediately whether you got them right.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## References
#
# ```{bibliography}
# :filter: docname in docnames
# ```
