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
# # Chapter 7: Fewer trips to memory: operator fusion and FlashAttention
#
# Chapter 4 counted the bytes of attention under the standard algorithm and found an
# {term}`arithmetic intensity` of about 62 FLOP per byte for one Llama 2 head at 4,096
# tokens, a third of the A10's {term}`ridge point`, what it needs to keep its arithmetic
# units busy. Nothing in that count was about arithmetic: the bytes were
# intermediates (the score matrix $S$ and the probabilities $P$) written to memory only to be
# read back by the next operator. This chapter removes such round trips, first for the short
# chains of element-wise operators that sit between the matrix products of every block
# ({term}`operator fusion`), then for attention itself ({term}`FlashAttention`), and checks at each step
# that the answer does not change.
#
# :::{admonition} After this chapter you will be able to
# :class: tip
#
# - say which neighbouring operators of a transformer block may run as one kernel, and why an
#   intermediate with a second consumer cannot disappear;
# - count the bytes that fusing a {term}`memory-bound <memory bound>` chain saves, and predict the time it saves on a
#   catalog GPU and on your machine;
# - measure fusion with `torch.compile`, and tell its two gains apart: bytes at large sizes,
#   per-operator overhead at small ones;
# - write attention with the {term}`online softmax`, block by block, and show it equals the standard
#   algorithm;
# - compare the off-chip memory accesses of standard attention, $\Theta(Nd + N^2)$, with
#   FlashAttention's $\Theta(N^2 d^2/M)$, and explain what split-K {term}`decoding <decode>` adds.
# :::
#
# Notation follows chapter 4: $N$ tokens, head dimension $d$, $h$ heads, model width $D$, FFN
# width $D_{\text{ff}}$, $L$ layers, $b$ bytes per element, bandwidth $\beta$. New here: $M$,
# the on-chip memory (SRAM, shared memory) one block of work may use, and $B_r$, $B_c$, the
# rows of a block of queries and of keys. "Bytes" are bytes that cross the boundary to
# off-chip memory (HBM or GDDR on a GPU, DRAM on a CPU). The measured parts run on a GPU when
# there is one and on the CPU otherwise.

# %% slideshow={"slide_type": "-"}
import math
import statistics
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from IPython.display import display
from matplotlib.ticker import FormatStrFormatter

import llmperf as lp
from llmperf.analytic.fusion import (
    CHAINS,
    chain_cost,
    chain_costs,
    chain_table,
    decode_attention,
    flash_attention_accesses,
    flash_attention_order,
    splits_to_fill,
    standard_attention_accesses,
)
from llmperf.measured.cache import KVCache
from llmperf.measured.kernels import (
    chain_inputs,
    flash_attention,
    peak_tensor_bytes,
    standard_attention,
)
from llmperf.measured.load import watch_load
from llmperf.measured.measure import benchmark, measure_host
from llmperf.measured.model import Transformer
from llmperf.plots import legend_below, new_axes, use_style

torch.manual_seed(0)
use_style()
LEGEND = dict(fontsize="medium")  # legends as large as the axis labels
device = "cuda" if torch.cuda.is_available() else "cpu"
tdtype = torch.float16 if device == "cuda" else torch.float32
llama, a10, a100 = lp.get_model("llama-2-7b"), lp.get_accelerator("A10"), lp.get_accelerator("A100 SXM 80GB")
print(f"device for the measurements: {device}, {tdtype}")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 7.1 Operator fusion

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### Which operators may fuse
#
# Read a transformer block as a graph: each node an operator, each edge a tensor. Run eagerly
# (PyTorch's default), every node is a kernel of its own: it reads its inputs from memory and
# writes its output back, and the next node reads that output again. *Fusing* two neighbours
# means running them as one kernel, so that the tensor between them stays in registers or
# on-chip memory and never travels. Two conditions decide whether a pair may fuse:
#
# 1. **the intermediate has no other consumer.** If a second operator needs the tensor later,
#    it must be written anyway; fusion then saves only the re-read, not the write;
# 2. **the consumer needs only a small, local piece of the producer's output at a time.** An
#    element-wise operator consumes element $i$ as soon as element $i$ exists, so a chain of
#    them fuses trivially. A matrix product needs whole rows and columns; fusing across it
#    takes a tiled algorithm (that is what FlashAttention is, section 7.2), or folding a cheap
#    element-wise step into the product's *epilogue*, where it writes its result.
#
# Figure 1 draws the block of the reference model (`llmperf.measured.model.Block`) with the
# memory-bound chains `torch.compile` fuses, and the edges that stay in memory.

# %% slideshow={"slide_type": "fragment"}
nodes = [  # (label, kind, chain it belongs to or None)
    ("x (residual stream)", "tensor", None), ("RMSNorm", "elementwise", "norm"),
    ("W_qkv matmul", "matmul", None), ("RoPE on q, k", "elementwise", "rotary"),
    ("Q K^T", "matmul", None), ("scale, mask, softmax", "elementwise", "softmax"),
    ("P V", "matmul", None), ("W_o matmul", "matmul", None),
    ("residual add + RMSNorm", "elementwise", "residual_norm"), ("W_13 matmul", "matmul", None),
    ("silu(gate) * up", "elementwise", "swiglu_gate"), ("W_2 matmul", "matmul", None),
    ("residual add", "elementwise", "residual_norm"),
]
colors = {"matmul": "#c6dbef", "elementwise": "#fdd0a2", "tensor": "#eeeeee"}
fig, ax = plt.subplots(figsize=(7.5, 7))
for i, (label, kind, _) in enumerate(nodes):
    y = len(nodes) - i
    ax.add_patch(plt.Rectangle((0.15, y - 0.35), 0.5, 0.7, color=colors[kind], ec="black"))
    ax.text(0.4, y, label, ha="center", va="center", fontsize=9)
    if i:
        ax.annotate("", (0.4, y + 0.35), (0.4, y + 0.65), arrowprops=dict(arrowstyle="<-"))
# the residual stream's second consumers: h is read again by the residual adds
for start, end in ((0, 8), (8, 12)):
    ax.annotate("", (0.65, len(nodes) - end), (0.65, len(nodes) - start),
                arrowprops=dict(arrowstyle="->", connectionstyle="arc3,rad=-0.4", color="C3"))
ax.text(0.9, len(nodes) - 4, "residual stream:\nsecond consumer,\nmust be written",
        color="C3", fontsize=10, va="center")
ax.text(0.02, -0.5, "orange: element-wise, memory bound, fusable into one kernel per chain\n"
        "blue: matrix products", fontsize=10)
ax.set_xlim(0, 1.25)
ax.set_ylim(-0.6, len(nodes) + 1)
ax.axis("off")
ax.set_title("One block of the reference model as a graph of operators")
plt.show()

# %% [markdown] slideshow={"slide_type": "-"}
# **Figure 1.** One decoder block as a graph. Orange operators are element-wise and memory
# bound; each orange box is a chain that one fused kernel can run (the RMSNorm of the attention
# input is the same chain as the residual add and norm of the previous block). Blue operators
# are matrix products: a chain stops at them, because a product needs whole rows of its input
# (FlashAttention's tiling is what fuses across $QK^{\top}$, softmax and $PV$). The red arcs are
# the residual stream: the sum $h = x + \text{branch}$ feeds the next norm *and* the next
# residual add, so even a fused kernel must write $h$. Fusion saves the trips that the other
# edges make.

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### The bytes fusion saves
#
# `llmperf.analytic.fusion.CHAINS` lists, for each chain, the kernels the model's code launches eagerly,
# with the tensors each reads and writes, and what a fused kernel must still move. The rotary
# embedding is the most wasteful: `apply_rotary` computes $x\cos + \operatorname{rot}(x)\sin$
# as a multiply, a negation of half the tensor, a concatenation, a second multiply and an add,
# ten passes over the tensor where one read and one write suffice.

# %% slideshow={"slide_type": "-"}
lp.Table(["chain", "eager kernels", "passes eager", "passes fused", "runs per layer", "why not fewer"],
         [(c.name, " + ".join(k.name for k in c.kernels), c.unfused_passes, c.fused_passes,
           c.per_layer, c.note) for c in CHAINS.values()],
         formats={"passes eager": "g", "passes fused": "g"})

# %% [markdown] slideshow={"slide_type": "-"}
# A *pass* is one read or one write of a tensor of the chain's size. The fused passes are what
# `lp.step_costs` already charges for these operators (it counts each of them as one kernel),
# which the cell below checks. For the running example, Llama 2 7B on an A10 in fp16, a
# 2,048-token {term}`prefill` with the lecture's standard attention:

# %% slideshow={"slide_type": "-"}
rows = lp.step_costs(llama, "prefill", 1, 2048)
prefill_chains = {c.name: c for c in chain_costs(llama, "prefill", 1, 2048)}
assert prefill_chains["rotary"].fused.bytes == rows["rope"].bytes
assert prefill_chains["swiglu_gate"].fused.bytes == rows["activation"].bytes
assert prefill_chains["masked_softmax"].fused.bytes == rows["softmax"].bytes
chain_table(llama, "prefill", 1, 2048, accelerator=a10)

# %% slideshow={"slide_type": "-"}
saved_s = sum(c.saved_bytes for c in prefill_chains.values()) / a10.mem_bandwidth
step_s = rows.on(a10).time_s
decode_chains = chain_costs(llama, "decode", 1, 2048)
decode_saved_s = sum(c.saved_bytes for c in decode_chains) / a10.mem_bandwidth
lp.Table(["step (A10, fp16)", "roofline time of the step", "time fusion saves", "share"],
         [("prefill, 2,048 tokens", lp.format_seconds(step_s), lp.format_seconds(saved_s),
           f"{saved_s / step_s:.0%}"),
          ("decode, 2,048 cached", lp.format_seconds(rows_d := lp.step_costs(llama, "decode", 1, 2048).on(a10).time_s),
           lp.format_seconds(decode_saved_s), f"{decode_saved_s / rows_d:.2%}")])

# %% [markdown] slideshow={"slide_type": "-"}
# In the prefill the chains move tens of gigabytes, and the biggest by far is the softmax
# chain: with the standard algorithm it runs over all $hN^2$ scores of every layer. Fusing
# scale, mask and softmax into one kernel divides its bytes by three, yet what remains is still
# the largest memory-bound term of the step; only removing $S$ and $P$ altogether
# (section 7.2) gets rid of it. In decode, one token's chains move a few tens of megabytes against
# the 13.5 GB of weights: fusion saves a negligible share of the bytes.

# %% [markdown] slideshow={"slide_type": "fragment"}
# :::{important}
# Fusion removes the write and re-read of every intermediate that has a single consumer. It
# saves bytes where the element-wise chains are large (prefill, and anything over $N^2$ scores);
# in decode their bytes are negligible, and what fusion saves there is kernel launches.
# :::

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### Measured: each chain eager against compiled
#
# `torch.compile` {cite:p}`ansel2024pytorch2` traces a function into a graph and generates
# code for it: on a CPU, C++ with one loop nest per fused group, compiled by the system's C++
# compiler; on an NVIDIA GPU, Triton kernels. We run each chain exactly as the model writes it
# (`llmperf.measured.kernels` calls the model's own `RMSNorm` and `apply_rotary`), on one layer of the
# reference model `ref-small` over 512 tokens, eagerly and compiled. Compiling takes seconds
# per chain the first time (the compiled code is cached on disk for later runs); the cell
# reports it apart from the run time.

# %% slideshow={"slide_type": "-"}
ref = lp.get_model("ref-small")
tokens = 512
inputs = chain_inputs(ref, tokens, device=device, dtype=tdtype)
measured_dtype = "fp16" if tdtype == torch.float16 else "fp32"
# Compile in this process: a pool of compiler workers can still be busy when a timing starts,
# and the load note would rightly count it as another process's work.
torch._inductor.config.compile_threads = 1
compiled, compile_s = {}, {}
with torch.inference_mode():  # compile first: the compiler's processes would count as load
    for name, chain in inputs.items():
        start = time.perf_counter()
        compiled[name] = torch.compile(chain.fn)
        compiled[name](*chain.args)
        compile_s[name] = time.perf_counter() - start
chain_results = []
with watch_load() as machine, torch.inference_mode():
    host = measure_host(dtypes=("fp32",), quick=True, device=device, progress=False)
    for name, chain in inputs.items():
        elements = {"residual_norm": tokens * ref.d_model, "swiglu_gate": tokens * ref.d_ff,
                    "rotary": tokens * ref.q_dim, "masked_softmax": ref.n_heads * tokens * tokens}[name]
        eager = benchmark(lambda c=chain: c.fn(*c.args), warmup=1, repeat=9, device=device)
        fused = benchmark(lambda f=compiled[name], c=chain: f(*c.args), warmup=1, repeat=9,
                          device=device)
        chain_results.append((name, elements, eager, fused, compile_s[name]))


def median_iqr(timing):
    """A Timing as 'median (IQR ...)'."""
    return f"{lp.format_seconds(timing.median_s)} (IQR {lp.format_seconds(timing.iqr_s)})"

# %% slideshow={"slide_type": "-"}
chain_rows = []
for name, elements, eager, fused, compile_s in chain_results:
    extra = ref.d_model * lp.bytes_per_element(measured_dtype) if name == "residual_norm" else 0
    c = chain_cost(name, elements, measured_dtype, extra)
    chain_rows.append((name, c.unfused.bytes, c.fused.bytes, eager.median_s, fused.median_s,
                       eager.median_s / fused.median_s, c.unfused.bytes / c.fused.bytes,
                       compile_s, eager, fused))

# %% slideshow={"slide_type": "-"} tags=["nbval-ignore-output"]
display(lp.Table(
    ["chain", "bytes eager", "bytes fused", "time eager, median of 9", "time compiled",
     "speedup", "bytes ratio", "compile time"],
    [(name, b_eager, b_fused, median_iqr(eager), median_iqr(fused), speedup, ratio, compile_s)
     for name, b_eager, b_fused, _, _, speedup, ratio, compile_s, eager, fused in chain_rows],
    formats={"bytes eager": lp.format_bytes, "bytes fused": lp.format_bytes,
             "speedup": ".2f", "bytes ratio": ".2f", "compile time": lp.format_seconds}))
print(f"measured bandwidth (measure_host): {lp.format_bandwidth(host.mem_bandwidth)}")
print(machine.note())

# %% slideshow={"slide_type": "fragment"}
ax = new_axes(f"Memory-bound chains of one ref-small layer, {tokens} tokens ({device})",
              "bytes moved (predicted)", "time (s)")
for i, (name, b_eager, b_fused, t_eager, t_fused, *_) in enumerate(chain_rows):
    ax.loglog([b_eager, b_fused], [t_eager, t_fused], "-", color=f"C{i}", label=name)
    ax.loglog(b_eager, t_eager, "o", color=f"C{i}")
    ax.loglog(b_fused, t_fused, "s", color=f"C{i}")
sizes = np.logspace(5.5, 8.5)
ax.loglog(sizes, sizes / host.mem_bandwidth, "k:", label="bytes / measured bandwidth")
ax.plot([], [], "ko", mfc="none", label="circle: eager")
ax.plot([], [], "ks", mfc="none", label="square: compiled")
legend_below(ax)  # under the plot, where no data point can land
plt.show()

# %% [markdown] slideshow={"slide_type": "-"}
# **Figure 2.** Each chain's time against the bytes it moves, eager (circle) and compiled
# (square), on this machine; the dotted line is the time at the bandwidth `measure_host`
# measured. If fusion removes bytes and the chain is memory bound, the square sits left of and
# below its circle, close to the dotted line, and the speedup in the table is near the ratio
# of bytes. Look for two departures. A chain whose eager kernels are themselves slow (several
# passes inside one operator, or a poorly vectorized one) gains more than its bytes suggest.
# And at sizes that fit in the CPU's caches, "bytes to memory" overstates the cost of an
# intermediate: it never leaves the cache, so fusion gains less than the count says. A speedup
# below 1 is possible too, most often for the chains with a reduction (the norm's mean of
# squares, the softmax's maximum and sum): PyTorch's own CPU kernels for those are hand-tuned
# and vectorized, the generated loop nest may be less so, and what fusion saves in bytes it
# then loses in arithmetic. Fusion removes traffic; it does not promise a better kernel.

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### Measured: a whole decode step, eager against compiled
#
# Chapter 2 measured the reference model's decode step at several times its {term}`roofline` on a
# small model. The bytes of a decode step are almost all weights, which fusion cannot remove,
# so a compiled step should be no faster *by bytes*. What it removes is the work per operator
# that is not arithmetic: Python dispatching each operator, allocating each output, launching
# each kernel. A step of the tiny model `ref-tiny` launches a few hundred operators over
# matrices of a few kilobytes, so that overhead is nearly all of its time.

# %% slideshow={"slide_type": "-"}
tiny = Transformer("ref-tiny", device=device, dtype=tdtype, max_seq_len=128)
cache = KVCache(tiny, 1, 128)
token = torch.zeros(1, 1, dtype=torch.long, device=device)
with torch.inference_mode():  # compile first: the compiler's processes would count as load
    start = time.perf_counter()
    compiled_tiny = torch.compile(tiny, fullgraph=True)
    compiled_tiny(token, 64, cache, last_only=True)
    tiny_compile_s = time.perf_counter() - start
with watch_load() as machine, torch.inference_mode():
    eager_step = benchmark(lambda: tiny(token, 64, cache, last_only=True), warmup=2, repeat=15,
                           device=device)
    compiled_step = benchmark(lambda: compiled_tiny(token, 64, cache, last_only=True), warmup=2,
                              repeat=15, device=device)
tiny_pred_s = tiny.step_costs("decode", 1, 64).on(host).time_s

# %% slideshow={"slide_type": "-"} tags=["nbval-ignore-output"]
display(lp.Table(["ref-tiny decode step", "time, median of 15", "against the roofline"],
                 [("roofline prediction (measure_host)", lp.format_seconds(tiny_pred_s), "1.0"),
                  ("eager", median_iqr(eager_step), f"{eager_step.median_s / tiny_pred_s:.0f}x"),
                  ("compiled", median_iqr(compiled_step),
                   f"{compiled_step.median_s / tiny_pred_s:.0f}x"),
                  ("compile time (once)", lp.format_seconds(tiny_compile_s), "")]))
saved_per_step = eager_step.median_s - compiled_step.median_s
print(f"compiled over eager: {compiled_step.median_s / eager_step.median_s:.2f} of the time; "
      + (f"the compile time is repaid after {tiny_compile_s / saved_per_step:,.0f} steps"
         if saved_per_step > 0 else "compiling does not pay here"))
print(machine.note())

# %% [markdown] slideshow={"slide_type": "-"}
# Read the ratios, not the times. Where the eager step takes many times what its bytes and
# FLOPs predict, its cost is the number of operators, not their size. Compiled, the same step
# runs as a handful of generated kernels: compare its ratio with the eager one. How much closer
# to the prediction it comes depends on what each operator costs beyond its work on your
# machine (on a GPU, where every kernel launch costs microseconds, the gain is largest). The
# compile time, paid once, is repaid after (compile time) / (eager step - compiled step)
# steps: the cell prints that count for your machine. On a larger model the
# weights dominate and the two converge; `benchmarks/fusion.py` measures both, with its
# results in `benchmarks/results/fusion.md`.

# %% [markdown] slideshow={"slide_type": "-"}
# :::{caution}
# `torch.compile` on a CPU needs a C++ compiler, and on a GPU Triton. Where neither is
# present, compiling fails at the first call: the prediction above still holds, but the
# measured rows cannot be produced. A decode step compiled for one position is compiled again
# the first time the position changes (then once for all positions, with the position as a
# symbol): time that a benchmark must not count.
# :::

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 7.2 FlashAttention

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### Tiling with the online softmax
#
# The softmax of a row needs its maximum and its sum over *all* keys, which seems to demand the
# whole row of scores at once. It does not {cite:p}`milakov2018online`. Keep for each query a
# running maximum $m$, a running sum $\ell$ of $e^{s_j - m}$, and an unnormalized output
# $a = \sum_j e^{s_j - m} v_j$. When a new block of scores $s'$ with values $V'$ arrives,
#
# $$
# m' = \max(m, \max_j s'_j),\qquad \ell' = e^{m - m'}\,\ell + \sum_j e^{s'_j - m'},\qquad
# a' = e^{m - m'}\,a + \sum_j e^{s'_j - m'}\, v'_j ,
# $$
#
# and after the last block the output is $a/\ell$, exactly $\operatorname{softmax}(s)\,V$: the
# factor $e^{m - m'}$ rescales what was summed against the old maximum. FlashAttention
# {cite:p}`dao2022flashattention` builds attention on this update, block by block, and neither
# $S$ nor $P$ is ever written. We put the queries in the outer loop, as FlashAttention-2 does
# {cite:p}`dao2023flashattention2`: a block of $B_r$ queries stays on chip while the keys and
# values stream past in blocks of $B_c$ (the first paper's Algorithm 1 swaps the loops, holding
# a block of keys and values while the queries stream past).
# `llmperf.measured.kernels.flash_attention` is that algorithm in plain PyTorch, causal or not;
# a causal block of queries skips the key blocks that lie wholly after its last visible key.
# Here it is checked against the standard algorithm and PyTorch's fused
# `scaled_dot_product_attention` at lengths that are not multiples of the block size; the
# test suite checks it with random lengths and block sizes (`tests/test_kernels.py`).

# %% slideshow={"slide_type": "-"}
gen = torch.Generator().manual_seed(0)
for n, block, causal in [(100, 64, False), (100, 64, True), (257, 32, True), (5, 64, True)]:
    q, k, v = (torch.randn(1, 4, n, 32, generator=gen) for _ in range(3))
    tiled = flash_attention(q, k, v, causal=causal, block_size=block)
    reference = standard_attention(q, k, v, causal=causal)
    fused = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    assert torch.allclose(tiled, reference, atol=1e-5) and torch.allclose(fused, reference, atol=1e-5)
print("tiled attention equals the standard algorithm and PyTorch's SDPA in every case")

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### Its memory traffic
#
# Count accesses to off-chip memory, in elements, for one head. The standard algorithm reads
# $Q$ and $K$, writes and reads $S$, writes and reads $P$, reads $V$ and writes $O$:
# $4N^2 + 4Nd$, which is $\Theta(Nd + N^2)$. Tiled attention with the queries outside reads $Q$
# and writes $O$ once, and reads $K$ and $V$ once per block of queries. With an on-chip memory of
# $M$ elements, a block each of $Q$, $O$, $K$ and $V$ must fit. The paper's Algorithm 1
# {cite:p}`dao2022flashattention` sizes the block of its outer loop, keys and values, at
# $\lceil M/4d \rceil$ rows with no cap, and caps only the block of its inner loop, queries, at
# $d$ rows. With the queries outside, the block of queries is the large one:
# $B_r = \lfloor M/4d \rfloor$ rows (Algorithm 1 rounds up; we round down so that the blocks
# fit), at most $N$, and $B_c = \min(B_r, d)$. The count is
#
# $$
# 2Nd + 2Nd\,\left\lceil \frac{N}{B_r} \right\rceil \approx \frac{8N^2 d^2}{M}
# \quad (B_r = M/4d < N).
# $$
#
# This is $\Theta(N^2 d^2 / M)$, the paper's Theorem 2 {cite:p}`dao2022flashattention`, which
# also proves that no exact attention algorithm can do asymptotically better for all $M$
# between $d$ and $Nd$. The standard count is about $M/2d^2$ times the tiled one: the gain grows
# with the on-chip memory and shrinks with the square of the head size. It stops growing only
# when one block holds all $N$ queries: then $K$ and $V$ are read once and the count is $4Nd$,
# the fused kernel's. The paper measures the same trend: in its Figure 2 (GPT-2 medium,
# $N = 1024$, $d = 64$, an A100), off-chip accesses keep falling as the block grows past 64
# rows {cite:p}`dao2022flashattention`. For the A10, chapter 4
# took $M$ = 100 KiB, the shared memory per SM {cite:p}`nvidia_ampere_tuning`; an A100 SM
# has 164 KiB {cite:p}`nvidia_ampere_tuning`. The cell prints the block of queries each allows
# and checks the count by hand against `llmperf`.

# %% slideshow={"slide_type": "-"}
d, N, sram_a10, sram_a100 = 128, 4096, 100 * lp.KiB, 164 * lp.KiB


def query_rows(sram, dd, n=N):
    """B_r = floor(M / 4d), at most N, with M in fp16 elements."""
    return min(math.floor(sram / 2 / (4 * dd)), n)


for dd in (128, 64):
    print(f"d = {dd}: B_r = {query_rows(sram_a10, dd)} on the A10, "
          f"{query_rows(sram_a100, dd)} on the A100")
assert standard_attention_accesses(N, d) == 4 * N * N + 4 * N * d
for sram in (sram_a10, sram_a100):
    for dd in (128, 64):
        by_hand = 2 * N * dd + 2 * N * dd * math.ceil(N / query_rows(sram, dd))
        assert flash_attention_accesses(N, dd, sram) == by_hand
lp.Table(["one head, N = 4,096", "accesses (elements)", "against standard"],
         [(label, acc, acc / standard_attention_accesses(N, dd))
          for label, acc, dd in [
              ("standard, d = 128", standard_attention_accesses(N, 128), 128),
              ("tiled, A10 (100 KiB), d = 128", flash_attention_accesses(N, 128, sram_a10), 128),
              ("tiled, A100 (164 KiB), d = 128", flash_attention_accesses(N, 128, sram_a100), 128),
              ("standard, d = 64", standard_attention_accesses(N, 64), 64),
              ("tiled, A10 (100 KiB), d = 64", flash_attention_accesses(N, 64, sram_a10), 64),
              ("tiled, A100 (164 KiB), d = 64", flash_attention_accesses(N, 64, sram_a100), 64)]],
         formats={"accesses (elements)": "{:,.0f}".format, "against standard": ".2f"})

# %% slideshow={"slide_type": "fragment"}
seq = 2 ** np.arange(8, 17)
ax = new_axes("Off-chip accesses of one attention head (fp16)", "sequence length N (tokens)",
              "accesses (elements)")
for dd, style in ((128, "-"), (64, "--")):
    ax.loglog(seq, [standard_attention_accesses(int(n), dd) for n in seq], "k" + style)
    for sram, color in ((sram_a10, "C0"), (sram_a100, "C1")):
        ax.loglog(seq, [flash_attention_accesses(int(n), dd, sram) for n in seq], style,
                  color=color)
order = [flash_attention_order(int(n), 64, sram_a100) for n in seq]
ax.loglog(seq, order, ":", color="gray")
# one legend entry per color and per line style, below the axes
for label, color in (("standard", "k"), (f"tiled on A10 ({sram_a10 // lp.KiB} KiB)", "C0"),
                     (f"tiled on A100 ({sram_a100 // lp.KiB} KiB)", "C1")):
    ax.plot([], [], color=color, label=label)
for label, style in (("solid: d = 128", "-"), ("dashed: d = 64", "--")):
    ax.plot([], [], "k" + style, label=label)
ax.plot([], [], ":", color="gray", label="N^2 d^2 / M (A100, d = 64)")
legend_below(ax)  # under the plot, where no data point can land
plt.show()

# %% [markdown] slideshow={"slide_type": "-"}
# **Figure 3.** Off-chip accesses of one head against $N$. Every curve grows as $N^2$ at long
# sequences; what tiling changes is the constant, from 4 to about $8d^2/M$, and more on-chip
# memory keeps lowering it: nothing caps the block of queries at $d$ rows. At $N = 4096$ and
# $d = 64$ the tiled count is 0.17 of the standard one on the A10 and 0.11 on the A100; at
# $d = 128$, where a block holds half as many queries in the same memory, 0.64 and 0.39 (the
# table above). Where a block holds all $N$ queries (on the A100 at $d = 64$, up to 328
# tokens), the curve is the fused kernel's $4Nd$. The count is an *upper
# bound* on traffic, as chapter 4 said: blocks of queries run at the same time on different
# SMs and read the same blocks of $K$ and $V$ at nearly the same moment, so the L2 cache serves
# most rereads. The table sets the intensity of the count on each GPU beside that GPU's ridge,
# and beside the intensity counted at one read of $Q$, $K$, $V$ and one write of $O$, the fused
# kernel's; the last column is the roofline's bound, $\min(1, I/I^{*})$ of the peak:

# %% slideshow={"slide_type": "-"}
intensity_rows = [
    ("standard algorithm", "A10", lp.attention_cost(N, d).intensity, a10),
    ("tiled, every reread from memory (100 KiB)", "A10",
     lp.flash_attention_cost(N, d, sram_bytes=sram_a10).intensity, a10),
    ("tiled, every reread from memory (164 KiB)", a100.name,
     lp.flash_attention_cost(N, d, sram_bytes=sram_a100).intensity, a100),
    ("tiled, K and V read once (L2 serves rereads)", "A10",
     lp.fused_attention_cost(N, d, causal=False).intensity, a10)]
lp.Table(["one head, N = 4,096, d = 128", "GPU", "FLOP per byte", "ridge", "bound (share of peak)"],
         [(label, gpu, i, acc.ridge_point("fp16"), min(1.0, i / acc.ridge_point("fp16")))
          for label, gpu, i, acc in intensity_rows],
         formats={"FLOP per byte": ".1f", "ridge": ".1f", "bound (share of peak)": ".0%"})

# %% slideshow={"slide_type": "skip"} tags=["hide-cell"]
# The numbers of Figure 3's caption and of the next paragraph, checked against llmperf.
share = {(gpu, dd): flash_attention_accesses(N, dd, sram) / standard_attention_accesses(N, dd)
         for gpu, sram in (("A10", sram_a10), ("A100", sram_a100)) for dd in (64, 128)}
assert [round(share[k], 2) for k in [("A10", 64), ("A100", 64), ("A10", 128), ("A100", 128)]] \
    == [0.17, 0.11, 0.64, 0.39]
assert query_rows(sram_a100, 64, n=10**6) == 328 and query_rows(sram_a100, 128) == 164
assert flash_attention_accesses(328, 64, sram_a100) == 4 * 328 * 64
assert flash_attention_accesses(329, 64, sram_a100) > 4 * 329 * 64
a100_40 = lp.get_accelerator("A100 SXM 40GB")
tiled_a10 = lp.flash_attention_cost(N, d, sram_bytes=sram_a10).intensity
tiled_a100 = lp.flash_attention_cost(N, d, sram_bytes=sram_a100).intensity
assert round(tiled_a10) == 98 and round(a10.ridge_point("fp16")) == 208
assert tiled_a10 / a10.ridge_point("fp16") < 0.5
assert round(tiled_a100) == 158 and round(a100.ridge_point("fp16")) == 153
assert tiled_a100 > a100.ridge_point("fp16")
assert round(a100_40.ridge_point("fp16")) == 201 and round(tiled_a100 / a100_40.ridge_point("fp16"), 2) == 0.79

# %% [markdown] slideshow={"slide_type": "-"}
# Read the count as a pessimistic bound, not as the kernel's traffic. On the A10 it would cap
# a kernel at 98 FLOP per byte, under half of the peak at a ridge of 208. On the A100 80GB,
# whose 164 KiB per SM hold blocks of 164 queries at $d = 128$, it gives about 158 FLOP per
# byte, just above the ridge of about 153: even with every reread of $K$ and $V$ charged to
# memory, the bytes do not keep the kernel from its peak (on the 40 GB A100, with less
# bandwidth and a ridge of about 200, they would cap it near 79 %). FlashAttention-2 reaches
# 50 to 73 % of an A100's peak fp16 rate in the forward pass; its authors trace the shortfall
# of the first FlashAttention (25 to 40 %) not to off-chip traffic but to how the work is split
# among thread blocks and warps, and they also cut the work outside the matrix products
# {cite:p}`dao2023flashattention2`. A count of off-chip bytes sees neither. Real kernels also beat
# the count where blocks of queries running side by side read the same blocks of $K$ and $V$
# and the L2 cache serves the rereads; the count alone cannot tell how much.

# %% [markdown] slideshow={"slide_type": "fragment"}
# :::{important}
# Tiling removes the $N \times N$ matrices from memory; what remains is $Q$, $K$, $V$ and $O$,
# with $K$ and $V$ reread once per block of queries at worst, and fewer blocks the more on-chip
# memory there is. Attention stops being memory bound, and its memory footprint stops growing
# as $N^2$.
# :::

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### Measured: time and peak memory against N
#
# Three implementations of one layer's attention (4 heads of $d = 64$, causal): the standard
# algorithm, our tiled one, and PyTorch's fused `scaled_dot_product_attention` (SDPA). Peak
# memory is what the tensors each holds at once, beyond its inputs. On a GPU we read it from
# the allocator (`torch.cuda.max_memory_allocated`). A CPU has no such counter, so
# `peak_tensor_bytes` follows every tensor an operator returns until it is freed and keeps the
# largest total; it cannot see scratch memory a kernel allocates and frees inside itself (the
# fused kernel's small per-thread buffers). We give the standard algorithm a budget of 64 MiB
# of live tensors and do not run it where its two $N \times N$ matrices would exceed it.

# %% slideshow={"slide_type": "-"}
heads, dh, budget = 4, 64, 64 * lp.MiB
lengths = [128, 256, 512, 1024, 2048]
attention_rows = []
with watch_load() as machine:
    for n in lengths:
        q, k, v = (torch.randn(1, heads, n, dh, generator=gen).to(device, tdtype) for _ in range(3))
        runs = {"standard": lambda q, k, v: standard_attention(q, k, v, causal=True),
                "tiled (ours)": lambda q, k, v: flash_attention(q, k, v, causal=True,
                                                                block_size=128),
                "SDPA (fused)": lambda q, k, v: F.scaled_dot_product_attention(q, k, v,
                                                                               is_causal=True)}
        for name, fn in runs.items():
            if name == "standard" and 2 * heads * n * n * q.element_size() > budget:
                attention_rows.append((name, n, None, None))  # S and P alone exceed the budget
                continue
            with torch.inference_mode():
                peak = peak_tensor_bytes(fn, q, k, v)
                timing = benchmark(lambda f=fn, a=(q, k, v): f(*a), warmup=1,
                                   repeat=5 if n >= 1024 else 9, device=device)
            attention_rows.append((name, n, timing, peak))

# %% slideshow={"slide_type": "-"} tags=["nbval-ignore-output"]
display(lp.Table(["implementation", "N", "time, median (IQR)", "peak tensor memory"],
                 [(name, n, "" if t is None else median_iqr(t), p)
                  for name, n, t, p in attention_rows],
                 formats={"peak tensor memory": lp.format_bytes}))
standard_s = {n: t.median_s for name, n, t, _ in attention_rows
              if name == "standard" and t is not None}
tiled_s = {n: t.median_s for name, n, t, _ in attention_rows if name == "tiled (ours)"}
print("tiled time / standard time, where both ran: "
      + ", ".join(f"N = {n}: {tiled_s[n] / standard_s[n]:.2f}" for n in standard_s))
tiled_faster = [n for n in standard_s if tiled_s[n] < standard_s[n]]
print("lengths where the tiled one is faster: " + (", ".join(map(str, tiled_faster)) or "none"))
print(machine.note())

# %% slideshow={"slide_type": "skip"} tags=["hide-cell"]
# Figure 4's caption: the standard algorithm's peak memory grows as N^2 (eight times N gives
# far more than eight times the bytes), the tiled algorithm's and SDPA's as N or slower.
_peak = {(name, n): p for name, n, _, p in attention_rows if p is not None}
assert _peak["standard", 1024] > 30 * _peak["standard", 128]
assert all(_peak[name, 2048] < 20 * _peak[name, 128] for name in ("tiled (ours)", "SDPA (fused)"))

# %% slideshow={"slide_type": "fragment"}
fig, (top, bottom) = plt.subplots(2, 1, figsize=(7.0, 7.6), sharex=True)
for i, name in enumerate(["standard", "tiled (ours)", "SDPA (fused)"]):
    pts = [(n, t, p) for nm, n, t, p in attention_rows if nm == name and t is not None]
    ns, ts, ps = zip(*pts)
    quartiles = [statistics.quantiles(t.samples_s, n=4) for t in ts]
    mid = [t.median_s for t in ts]
    top.errorbar(ns, mid, yerr=[[m - q[0] for m, q in zip(mid, quartiles)],
                                [q[2] - m for m, q in zip(mid, quartiles)]],
                 fmt="o-", color=f"C{i}", capsize=3, label=name)
    bottom.plot(ns, [p / lp.MiB for p in ps], "o-", color=f"C{i}")
bottom.axhline(budget / lp.MiB, color="gray", linestyle=":", label="budget (64 MiB)")
for ax in (top, bottom):
    ax.set(xscale="log", yscale="log")
    ax.set_xticks(lengths, [str(n) for n in lengths])
    ax.minorticks_off()
top.set(title=f"Causal attention, 4 heads, d = 64 ({device}): time", ylabel="time (s)")
bottom.set(title="Peak tensor memory", xlabel="N (tokens)", ylabel="MiB")
bottom.yaxis.set_major_formatter(FormatStrFormatter("%g"))
fig.legend(loc="lower center", ncol=4, **LEGEND)  # one legend for both panels, below them
fig.tight_layout(rect=(0, 0.05, 1, 1))
plt.show()

# %% [markdown] slideshow={"slide_type": "-"}
# **Figure 4.** Top: time against $N$ (the median, with bars from the first to the third
# quartile of the runs); bottom: the most memory the tensors of each
# implementation hold at once. The standard algorithm's memory grows as $N^2$ (it holds $S$
# and $P$) and leaves the budget; its last point is the longest sequence that fits. The tiled
# algorithm and SDPA grow as $N$ at most: they hold $Q$, $K$, $V$, $O$ and a block of scores. The
# times tell a different story from the memory. Our tiled version is plain PyTorch: for every
# pair of blocks the Python interpreter runs a handful of small operators (a product, the
# mask on the diagonal, the online-softmax update), each its own kernel, one after another,
# while the standard algorithm is a few large matrix products and one softmax, so expect the
# standard algorithm to be the faster of the two. What to look for: the ratio the cell prints
# under the table, the tiled time over the standard one at each length where both ran (above
# 1 where the standard algorithm is faster), and the lengths, if any, where the tiled one is
# faster. Tiling's saving of memory traffic is a GPU effect, and our loop does not get it: a
# fused kernel keeps its blocks in each SM's on-chip SRAM and never writes $S$ or $P$ to
# memory, while our loop writes every block's scores to ordinary memory like any other
# tensor. It demonstrates the
# algorithm and its footprint, not the speed, which comes only when the loop is one kernel
# that keeps its blocks on chip, as SDPA's is.

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### Decode, and split-K
#
# In a decode step a sequence has one query per head: there is no $N \times N$ matrix to
# avoid, only a vector of $N$ scores per head, and the step's bytes are the {term}`KV cache`'s, which
# any algorithm must read once. FlashAttention's gain is therefore mostly in the prefill. What
# decode needs is parallelism: a fused kernel gives each (sequence, head) pair to one block of
# threads, so a batch of one on a 32-head model keeps 32 streaming multiprocessors (SMs) busy,
# fewer than a GPU has. Split-K decoding (Flash-Decoding {cite:p}`dao2023flashdecoding`) also
# splits each sequence's keys into chunks processed in parallel, each producing a partial
# $(m, \ell, a)$, and merges them with the same rescaling as the online softmax.
# `llmperf.analytic.fusion.decode_attention` models the step's attention time as its bytes over the
# share of the bandwidth the busy SMs draw, under an assumption of the model, not a measured
# property of the GPU: each busy SM draws an equal share, so that the bandwidth grows in
# proportion to the busy SMs and is reached only when all of them are busy. A real GPU may
# reach most of its bandwidth with fewer SMs, each keeping more loads in flight, and split-K
# then gains less. The A10 has 72 SMs (one per RT core in its datasheet
# {cite:p}`nvidia_a10`).

# %% slideshow={"slide_type": "-"}
sms_a10 = 72
split_rows = []
for ctx in (1024, 4096, 16384):
    one = decode_attention(llama, a10, ctx, sms=sms_a10)
    split = decode_attention(llama, a10, ctx, sms=sms_a10, splits=splits_to_fill(llama, sms_a10))
    split_rows.append((ctx, one.pieces, one.time_s * llama.n_layers, split.pieces,
                       split.time_s * llama.n_layers, one.time_s / split.time_s))
lp.Table(["context", "pieces", "attention per step", "pieces split-K", "split-K", "speedup"],
         split_rows, title="Llama 2 7B decode attention on the A10, batch 1 (prediction)",
         formats={"attention per step": lp.format_seconds, "split-K": lp.format_seconds,
                  "speedup": ".2f"})

# %% [markdown] slideshow={"slide_type": "-"}
# The prediction: at batch 1 split-K lets all 72 SMs read the cache, and under the
# assumption of bandwidth in proportion to busy SMs the attention time falls by
# $72/32 = 2.25$ at every context (less, if 32 SMs already draw more than 32/72 of the
# bandwidth). The gain matters when attention is a large share
# of the step (long contexts) and vanishes once $B \cdot h$ alone fills the GPU (batch 3 and
# more here). The published measurements are larger at very long contexts: the Flash-Decoding
# authors report up to 8 times faster generation for very long sequences on CodeLlama 34B
# {cite:p}`dao2023flashdecoding`, because there the standard kernels also lose bandwidth to
# other causes our model leaves out.

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### Published figures beside ours
#
# The FlashAttention paper {cite:p}`dao2022flashattention` reports, on A100 GPUs: up to
# 7.6 times faster attention computation on GPT-2 than PyTorch's standard implementation;
# 3 times faster end-to-end training of GPT-2 at a sequence length of 1K; and 15 % faster
# training of BERT-large (sequence length 512) than the MLPerf 1.1 training record. Those are
# training figures with head dimension 64, where Figure 3 predicts the largest saving of
# accesses. The end-to-end gains are smaller than the attention-only one for the reason of
# chapter 4: the rest of the step, the matrix products, does not change.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Worked problems
#
# **Problem 1.** How many bytes does fusing the rotary embedding save in one 2,048-token
# prefill of Llama 2 7B in fp16?
#
# <details><summary>Answer</summary>
#
# Rotary runs on $q$ and $k$: $T(D + D) = 2048 \times 8192 = 16{,}777{,}216$ elements per
# layer. Eager, 10 passes; fused, 2. Saved: $8 \times 16{,}777{,}216 \times 2 \times 32 =
# 8.59$ GB, 14.3 ms at the A10's 600 GB/s.
#
# </details>
#
# **Problem 2.** Why can the residual add and the following RMSNorm not be fused into a kernel
# that writes only the norm's output?
#
# <details><summary>Answer</summary>
#
# The sum $h = x + \text{branch}$ has a second consumer, the next residual add. A fused kernel
# still writes $h$ (and the norm's output), so it moves 4 passes instead of 7, not 3.
#
# </details>
#
# **Problem 3.** One head of $d = 64$, $N = 2048$, on-chip memory of 64 KiB in fp16. How many
# elements does tiled attention read and write, and how many does the standard algorithm?
#
# <details><summary>Answer</summary>
#
# $M = 32{,}768$ elements, $B_r = M/4d = 128$ queries (less than $N$), $B_c = \min(128, 64) =
# 64$ keys: 16 blocks of queries. Tiled: $2Nd + 2Nd \times 16 = 34 \times 131{,}072 =
# 4{,}456{,}448$. Standard: $4N^2 + 4Nd = 16{,}777{,}216 + 524{,}288 = 17{,}301{,}504$, almost
# four times as many.
#
# </details>

# %% slideshow={"slide_type": "skip"} tags=["hide-cell"]
# The worked problems' answers, checked against llmperf.
rope = chain_costs(llama, "prefill", 1, 2048)[2]
assert rope.name == "rotary" and rope.saved_bytes == 8 * 16_777_216 * 2 * 32
assert abs(rope.saved_bytes / a10.mem_bandwidth - 0.0143) < 1e-4
assert CHAINS["residual_norm"].unfused_passes == 7 and CHAINS["residual_norm"].fused_passes == 4
assert flash_attention_accesses(2048, 64, 64 * lp.KiB) == 4_456_448 == 34 * 131_072
assert standard_attention_accesses(2048, 64) == 17_301_504
assert 3.8 < 17_301_504 / 4_456_448 < 4
# The summary: fusing the chains divides their bytes by 1.6 to 5.
_ratios = [c.unfused.bytes / c.fused.bytes for c in chain_costs(llama, "prefill", 1, 2048)]
assert 1.6 < min(_ratios) and round(max(_ratios), 2) == 5.0

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Summary
#
# - An operator fuses with its neighbour when the tensor between them has no other consumer
#   and the consumer needs only a local piece of it at a time. Element-wise chains fuse
#   freely; matrix products end a chain unless a tiled algorithm spans them.
# - Fusing a block's memory-bound chains divides their bytes by 1.6 to 5. It saves time where
#   they are large: in the prefill, and above all in the softmax over $hN^2$ scores.
# - In decode the chains' bytes are negligible; compiling a small model's step can still pay,
#   because it removes per-operator overhead, the reason small models decode far above their
#   roofline (section 7.1 measures by how much on your machine).
# - FlashAttention computes exact attention with the online softmax, block by block, and
#   never writes $S$ or $P$: $\Theta(N^2 d^2/M)$ accesses against $\Theta(Nd + N^2)$, memory
#   linear in $N$, and in practice (with the L2 cache) a {term}`compute-bound <compute bound>` kernel.
# - Its gain is in the prefill; in decode, split-K (Flash-Decoding) fills the GPU when the
#   batch and heads alone do not.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Exercises
#
# {doc}`Exercise set 7 </exercises/07_fusion>`: bytes saved by fusing a chain, which pairs of a small graph may
# fuse, the online-softmax update written by hand, and the accesses of standard and tiled
# attention.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## References
#
# ```{bibliography}
# :filter: docname in docnames
# ```
