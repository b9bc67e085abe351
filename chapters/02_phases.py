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
# # Chapter 2: Phases: prefill and autoregression
#
# A user sends a prompt and watches the answer appear. Two waits shape the experience: how long
# until the first word shows up, and how fast the words follow. They come from the two phases
# every request goes through. In **{term}`prefill`** the model reads the whole prompt in one forward
# pass and produces the first new token. In **autoregression** ({term}`decode`) it produces the
# remaining tokens one at a time, each step feeding the token just chosen back in. Chapter 1
# showed that both phases do about $2P$ FLOPs per token; this chapter measures how differently
# they behave in time, on your machine, and sets the predictions of `llmperf` beside every
# measurement.
#
# :::{admonition} After this chapter you will be able to
# :class: tip
#
# - explain why prefill processes a prompt in one pass while decode needs one pass per token;
# - predict prefill time against prompt length and decode time per token against context
#   length from FLOPs, bytes and your machine's measured limits, and check the predictions;
# - define and compute time to first token ({term}`TTFT`), time per output token ({term}`TPOT`)
#   and tokens per second from the timestamps of a real generation, and draw a request's timeline;
# - sample the next token greedily, with a temperature, or from the top $k$, reproducibly.
# :::
#
# Notation follows chapter 1 ($L$, $D$, $P$, $N$, $S$ prompt tokens, $G$ generated tokens, $b$
# bytes per element, $\Pi$ peak FLOP/s, $\beta$ memory bandwidth). New
# here: $t_i$, the time at which output token $i$ is available ($i = 0, \dots, G-1$), measured
# from the arrival of the request.
#
# The experiments run the reference model `ref-small` on a GPU when one is present and on the
# CPU otherwise. Its weights are random: the tokens it produces mean nothing, but its timing is
# that of a trained model of the same shape, since the arithmetic does not depend on the values.

# %% slideshow={"slide_type": "-"}
import matplotlib.pyplot as plt
import numpy as np
import torch

import llmperf as lp
from llmperf.measured.cache import KVCache
from llmperf.measured.generate import Generation, generate
from llmperf.measured.model import Transformer
from llmperf.plots import legend_below, new_axes, use_style

use_style()
torch.manual_seed(0)
np.random.seed(0)
device = "cuda" if torch.cuda.is_available() else "cpu"


ref = lp.get_model("ref-small")
llama = lp.get_model("llama-2-7b")
a10 = lp.get_accelerator("A10")
print(f"device: {device}; torch {torch.__version__}")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 2.1 Two phases
#
# Let the prompt be tokens $x_1, \dots, x_S$. The model maps a sequence to a distribution over
# the next token, $p(x_{S+1} \mid x_1, \dots, x_S)$. All $S$ prompt tokens are known when the
# request arrives, so **prefill** runs them through the model together: one forward pass over
# an $(S \times D)$ matrix of token vectors, every weight matrix multiplied by all $S$ rows at
# once. The causal mask lets position $i$ attend only to positions $\le i$, so the pass computes
# the same thing as $S$ separate passes would, but with large matrix-matrix products. Its result
# is the distribution of $x_{S+1}$, from which the first output token is sampled, and, as a
# by-product, the keys and values of all $S$ positions in every layer.
#
# **Autoregression** then repeats: append the chosen token, run the model on it, sample the
# next; serving systems schedule requests at the granularity of these steps
# {cite:p}`yu2022orca`. Step $j$ cannot begin before step $j-1$ has chosen its token, because that token is
# step $j$'s input. With a {term}`KV cache` (the subject of chapter 3) each step processes a single new
# token: step $j$ attends to the $S + j - 1$ keys and values already cached (the prompt and the
# $j - 1$ tokens fed back before it) plus its own. Writing $T_{\text{step}}(N)$ for a step with
# $N$ cached tokens, generating $G$ tokens takes one prefill and $G - 1$ decode steps:
#
# $$
# T_{\text{request}} = T_{\text{prefill}}(S) + \sum_{j=1}^{G-1} T_{\text{step}}(S + j - 1) .
# $$
#
# The cell below checks the definition on the reference model: the first token `generate`
# returns is the most likely next token under the logits of one forward pass over the prompt.

# %% slideshow={"slide_type": "-"}
model = Transformer(ref, device=device, max_seq_len=1152, seed=0)
prompt = torch.randint(0, ref.vocab_size, (1, 64), generator=torch.Generator().manual_seed(1))
with torch.inference_mode():
    logits = model(prompt)  # no cache: (1, S, vocab), one distribution per position
out = generate(model, prompt, max_new_tokens=2)  # greedy by default
print("logits of the prefill:", tuple(logits.shape))
assert out.tokens[0, 0].item() == logits[0, -1].argmax().item()
print("first generated token equals argmax of the prefill's last logits: True")

# %% [markdown] slideshow={"slide_type": "fragment"}
# :::{important}
# The prefill yields the first token; each further token costs one decode step that
# must wait for the token before it.
# :::

# %% [markdown] slideshow={"slide_type": "-"}
# Both phases do about the same arithmetic per token. The difference is the shape of the work.
# A prefill multiplies each weight matrix $W \in \mathbb{R}^{K \times M}$ by $S$ token vectors:
# $2SKM$ FLOPs against roughly $KM$ weights read, an {term}`arithmetic intensity` that grows with $S$.
# A decode step multiplies it by one vector: $2KM$ FLOPs for $KM$ weights, about one FLOP per
# byte in 16-bit formats, two FLOPs per four bytes in fp32 {cite:p}`pope2023scaling`. The
# lecture's simple model {cite:p}`krishnamurthy2024lecture,shenoy2023baseten` turns this
# into a formula. If prefill runs at the peak arithmetic rate $\Pi$ and each decode step reads all
# $P$ weights at the memory bandwidth $\beta$, with $b$ bytes per parameter,
#
# $$
# T_{\text{prefill}} \approx \frac{2PS}{\Pi}, \qquad T_{\text{step}} \approx \frac{bP}{\beta} .
# $$
#
# For Llama 2 7B in fp16 ($b = 2$) on an A10 (125 TFLOP/s, 600 GB/s {cite:p}`nvidia_a10`), with
# a prompt of 350 tokens and 150 output tokens:

# %% slideshow={"slide_type": "-"}
est = lp.simple_latency(llama, a10, prompt_tokens=350, output_tokens=150, dtype="fp16")
fine = lp.roofline_latency(llama, a10, prompt_tokens=350, output_tokens=150, dtype="fp16")
simple_step = est.tpot_s  # 2P / beta
crossover = next(n for n in range(1, 4096) if lp.decode_step_time(llama, a10, n) > simple_step)
print(f"a decode step costs as much time as a prefill of "
      f"{lp.decode_step_time(llama, a10, 350) / fine.prefill_s * 350:.0f} prompt tokens")
print(f"per-operator decode step below the simple model's {simple_step * 1e3:.2f} ms up to "
      f"{crossover - 1} cached tokens, above it from {crossover}")
lp.Table(["model", "prefill", "per decode step", "decode steps", "total"], [
    ("simple", est.prefill_s, simple_step, est.decode_steps, est.total_s),
    ("per-operator roofline", fine.prefill_s, fine.tpot_s, fine.decode_steps, fine.total_s),
], formats={"prefill": lp.format_seconds, "per decode step": lp.format_seconds,
            "total": lp.format_seconds})

# %% slideshow={"slide_type": "skip"} tags=["hide-cell"]
# The numbers of the paragraph below, from the cell above.
assert 175 < lp.decode_step_time(llama, a10, 350) / fine.prefill_s * 350 < 200  # "nearly two hundred"
assert abs(fine.total_s / est.total_s - 1) < 0.01  # "within about one percent"
assert lp.decode_step_time(llama, a10, 1) < simple_step < lp.decode_step_time(llama, a10, 4096)

# %% [markdown] slideshow={"slide_type": "subslide"}
# On the A10, one decode step takes about as long as the prefill of nearly two hundred prompt
# tokens, even though it processes a single token (the cell prints the count). The simple model charges only weight traffic and
# weight arithmetic, $2P$ of each per token. The per-operator {term}`roofline` model
# {cite:p}`williams2009roofline,yuan2024unveiled` (`lp.roofline_latency`, which sums `lp.step_costs` over the prefill and every decode step) adds attention, the KV cache
# reads and the element-wise operators, and it charges each matrix only for what a step really
# does with it: the embedding table is a lookup (a step reads one row of it) and the LM head runs for
# the last position only. (Both models charge $G - 1$ decode steps, not $G$, because the prefill
# yields the first token.) These differences have opposite signs and nearly cancel here, so the
# two totals in the table land within about one percent of each other; chapter 4 (section 4.6)
# prints the split term by term.
#
# Neither model is a lower bound on time. Both are *optimistic estimates* under stated
# assumptions: every operator runs at the peak arithmetic rate or at the full bandwidth, each
# operand crosses memory exactly as counted, and nothing else costs time. Nor is one always above
# the other: a per-operator decode step of Llama 2 7B on the A10 is *below* the simple model's
# $2P/\beta$ at short contexts (it reads no embedding table) and above it at long ones (the KV
# cache grows); the crossover is printed below. Real kernels reach neither the peak arithmetic
# rate nor the full bandwidth, so measurements usually land above both.
#
# To make the same predictions for your machine, we need its $\Pi$ and $\beta$. `measure_host()`
# measures them, with a large matrix multiplication and a large copy, and returns an
# `Accelerator` that every `llmperf` calculator accepts. `lp.ffn_critical_batch` then gives the
# number of tokens per pass from which the FFN's weight products turn {term}`compute bound` on it,
# the FFN's {term}`critical batch`
# (for a $b$-byte format, about the {term}`ridge point` $\Pi/\beta$ times $b/2$). A single probe
# can catch the machine in a busy moment, so the cell probes three times and keeps the median
# peak and the median bandwidth, printing the range of the three beside them; the last line
# says whether other programs used the processor meanwhile.

# %% slideshow={"slide_type": "-"} tags=["nbval-ignore-output"]

from IPython.display import display

from llmperf.measured.host import median_host
from llmperf.measured.load import watch_load
from llmperf.measured.measure import measure_decode, measure_host, measure_prefill

dtype = "fp32"
with watch_load() as load:
    probes = [measure_host(dtypes=(dtype,), device=device, progress=False) for _ in range(3)]
peaks, bandwidths = [a.peak(dtype) for a in probes], [a.mem_bandwidth for a in probes]
host = median_host(probes)
print(f"{host.name}: {lp.format_flop_rate(host.peak(dtype))} ({dtype}; three probes "
      f"{lp.format_flop_rate(min(peaks))} to {lp.format_flop_rate(max(peaks))}), "
      f"{lp.format_bandwidth(host.mem_bandwidth)} (three probes {lp.format_bandwidth(min(bandwidths))} "
      f"to {lp.format_bandwidth(max(bandwidths))}), ridge point {host.ridge_point(dtype):.1f} FLOP/B")
print(f"FFN weight products turn compute bound from about "
      f"{lp.ffn_critical_batch(ref, host, dtype=dtype)} tokens per pass")
print(load.note())

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 2.2 Prefill time against prompt length
#
# **Prediction.** `lp.prefill_time(ref, host, S)` sums the roofline time of every operator of a
# prefill of $S$ tokens on the measured machine. The reference model runs a prefill's attention
# as one fused causal kernel (`model.attention_kernel["prefill"]`, in the manner of
# {term}`FlashAttention`), so the prediction counts it
# that way: `model.step_costs("prefill", 1, S)` is the cost table of the step as the model runs
# it, placed on the measured machine's roofline with `.on(host)`, which is also what
# `Measurement.predicted_s` uses; the lecture's standard algorithm stays the count for the A10
# analysis above. For short prompts the weights dominate the
# traffic and the work is small, so the predicted time is nearly flat. A weight matrix read once
# and applied to $S$ tokens does $2S$ FLOPs per $b$ bytes, so once $S$ exceeds the ridge point
# times $b/2$ (printed above) the products become compute bound and the time grows in proportion
# to $S$; for long prompts the $S^2$ attention term adds curvature.
#
# **Measurement.** `measure_prefill` times one forward pass over a random prompt of each length,
# nine times after a warm-up. The table and the figure use the median, which a few runs disturbed
# by other programs do not move, and the table prints the interquartile range (IQR) of the nine
# beside it: a wide IQR says the runs scattered. The achieved rate is the `Measurement`'s
# `flops_per_s`: the FLOPs of the same step over that median. Below the table the cell prints
# the two numbers Figure 1 is about: how much longer a prompt of 8 tokens takes than a prompt of
# one, and the slope between the two longest prompts (1 means twice the prompt, twice the time),
# each measured and predicted.

# %% slideshow={"slide_type": "-"} tags=["nbval-ignore-output"]
prompt_lens = [1, 8, 64, 256, 512]
prefill_pred = [model.step_costs("prefill", 1, n).on(host).time_s for n in prompt_lens]
assert prefill_pred == [lp.prefill_time(ref, host, n, dtype=dtype,
                                        attention=model.attention_kernel["prefill"])
                        for n in prompt_lens]
with watch_load() as load:
    prefill_runs = [measure_prefill(model, n, repeat=9) for n in prompt_lens]
assert all(m.predicted_s(host) == p for m, p in zip(prefill_runs, prefill_pred))  # the same work
prefill_meas = [m.timing.median_s for m in prefill_runs]
display(lp.Table(["S", "predicted", "measured (median)", "IQR", "measured / predicted", "tokens/s",
                  "achieved"],
                 [(n, p, m.timing.median_s, m.timing.iqr_s, m.timing.median_s / p,
                   m.tokens_per_s, m.flops_per_s)
                  for n, p, m in zip(prompt_lens, prefill_pred, prefill_runs)],
                 formats={"predicted": lp.format_seconds, "measured (median)": lp.format_seconds,
                          "IQR": lp.format_seconds, "measured / predicted": ".2f",
                          "tokens/s": ",.0f", "achieved": lp.format_flop_rate}))


def slope(times, lengths):
    """Slope on log-log axes between the last two points: 1 means time proportional to length."""
    return float(np.log(times[-1] / times[-2]) / np.log(lengths[-1] / lengths[-2]))


print(f"S = 8 against S = 1: measured x{prefill_meas[1] / prefill_meas[0]:.2f}, "
      f"predicted x{prefill_pred[1] / prefill_pred[0]:.2f}")
print(f"slope from S = {prompt_lens[-2]} to {prompt_lens[-1]}: measured "
      f"{slope(prefill_meas, prompt_lens):.2f}, predicted {slope(prefill_pred, prompt_lens):.2f}")
print(load.note())

# %% slideshow={"slide_type": "fragment"}
ax = new_axes("Prefill time against prompt length (ref-small)", "prompt length S (tokens)",
              "time of the prefill (s)")
ax.loglog(prompt_lens, prefill_meas, "o-", label="measured")
ax.loglog(prompt_lens, prefill_pred, "s--", label="predicted: roofline on measure_host()")
ax.set_xscale("log", base=2)
ax.set_xticks(prompt_lens, [str(n) for n in prompt_lens])
ax.minorticks_off()
legend_below(ax)
plt.show()

# %% [markdown] slideshow={"slide_type": "-"}
# **Figure 1.** Median time of one prefill of the reference model against prompt length, both
# axes logarithmic, with the roofline prediction for this machine beside it. Look at the
# prediction first. At the left it is nearly flat while the prompt stays below the number of
# tokens from which the FFN's products turn compute bound (printed with the machine's roofline
# above): a prompt of a few tokens then costs about as much as a prompt of one, because the time
# goes into reading the weights, not into arithmetic. At the right it rises with slope about
# one: twice the prompt, twice the time. The cell above prints both ratios for the measurement
# too: whether your machine's curve is flat at the left and has slope one at the right is the
# question the rest of this section answers.
#
# The printed ratio of measured to predicted time is the efficiency gap, and its shape over $S$
# tells more than any one value. Look first at the shortest prompts (the first printed line). On many CPUs the measured
# time *climbs* from $S = 1$ to a few tokens while the prediction stays flat, so the ratio grows
# there. A fixed cost per operator cannot do that (it would be the same at every $S$); the kernel
# does. With one token each weight product is a matrix-vector product (GEMV), which the math
# library runs as a streaming kernel that reads each weight once. With a few tokens it becomes a
# matrix product with only a few rows (a small-$M$ GEMM), which goes through the general GEMM
# path: that path first repacks blocks of the weight matrix into a cache-friendly layout (reading
# and writing the weights once more) and then runs register tiles sized for many rows, most of
# them empty. It pays the full price of a large product for the work of a small one. As $S$
# grows the tiles fill and the ratio falls. For long prompts it settles at the factor by which
# the model's matrix products, of modest width ($D = 512$), fall short of the large square
# multiplication with which `measure_host()` measured the peak; attention, RMSNorm, RoPE and SiLU
# run well below that peak too. The achieved-rate column shows the same thing from the other
# side. Where your table does not climb at the left, your library handles small-$M$ products
# well; fixed per-operator costs (Python overhead per layer, on a GPU the launch latency of each
# kernel) then show as a ratio that is simply largest for the shortest prompts. Finally, if other
# programs share your processor while the cell runs, every measured time rises and scatters; the
# median of several runs dampens that but cannot remove it. The IQR column shows the scatter,
# and the last line of the cell's output says whether other programs were running.

# %% [markdown] slideshow={"slide_type": "fragment"}
# :::{important}
# Prefill time is nearly constant for short prompts and proportional to the prompt
# for long ones; the cost per prompt token falls until the machine's arithmetic is saturated.
# :::

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 2.3 Decode time per token against context length
#
# **Prediction.** One decode step reads every weight once and the cached keys and values of all
# earlier tokens, and does about $2P + 4LNhd$ FLOPs. At batch 1 it is {term}`memory bound`, so
#
# $$
# T_{\text{step}}(N) \approx \frac{b\,P + 2\,b\,L\,N\,h_{kv} d}{\beta},
# $$
#
# flat in $N$ as long as the KV cache is small beside the weights, rising once it is not.
# `lp.decode_step_time(ref, host, N)` sums the roofline time of each operator of the step. In
# decode the reference model runs attention as two matrix products and a softmax, the standard
# algorithm (`model.attention_kernel["decode"]`), so that is what the prediction,
# `model.step_costs("decode", 1, N).on(host)`, counts.
#
# **Measurement.** For each context length $N$, `measure_decode` times single-token steps at
# position $N$, attending to the $N$ cached keys and values plus the new token's own. Each timed
# step overwrites the same cache slot, so the context stays at $N$ throughout. (The values in the
# cache do not matter: they change no FLOP and no byte.) A step is short, so the cell times 32 of
# them and prints their median and IQR. Below the table it prints what Figure 2 is about: how
# much longer a step with the longest context takes than one with the shortest, and how many
# times longer a decode step takes than the prefill spends on one prompt token (at $S = 512$,
# from section 2.2).

# %% slideshow={"slide_type": "-"} tags=["nbval-ignore-output"]
contexts = [16, 128, 512, 1024]
decode_pred = [model.step_costs("decode", 1, n).on(host).time_s for n in contexts]
assert decode_pred == [lp.decode_step_time(ref, host, n, dtype=dtype,
                                           attention=model.attention_kernel["decode"])
                       for n in contexts]
with watch_load() as load:
    decode_runs = [measure_decode(model, n, steps=32) for n in contexts]
assert all(m.predicted_s(host) == p for m, p in zip(decode_runs, decode_pred))  # the same work
decode_meas = [m.timing.median_s for m in decode_runs]
kv_share = ref.kv_cache_bytes(contexts[-1], dtype=dtype) / ref.weight_bytes(dtype)
print(f"KV cache at N = {contexts[-1]} is {kv_share:.1%} of the weights' bytes")
display(lp.Table(["N", "predicted", "measured (median)", "IQR", "measured / predicted", "tokens/s"],
                 [(n, p, m.timing.median_s, m.timing.iqr_s, m.timing.median_s / p, m.tokens_per_s)
                  for n, p, m in zip(contexts, decode_pred, decode_runs)],
                 formats={"predicted": lp.format_seconds, "measured (median)": lp.format_seconds,
                          "IQR": lp.format_seconds, "measured / predicted": ".2f",
                          "tokens/s": ",.0f"}))
per_prompt_token = prefill_meas[-1] / prompt_lens[-1]
print(f"step at N = {contexts[-1]} against N = {contexts[0]}: measured "
      f"x{decode_meas[-1] / decode_meas[0]:.2f}, predicted x{decode_pred[-1] / decode_pred[0]:.2f}")
print(f"a decode step at N = {contexts[-1]} took {decode_meas[-1] / per_prompt_token:.0f} times the "
      f"prefill's time per prompt token at S = {prompt_lens[-1]}")
print(load.note())

# %% slideshow={"slide_type": "fragment"}
ax = new_axes("Decode step time against context length (ref-small)", "context length N (tokens)",
              "time of one decode step (s)")
ax.plot(contexts, decode_meas, "o-", label="measured")
ax.plot(contexts, decode_pred, "s--", label="predicted: roofline on measure_host()")
per_prefill_token = [t / n for t, n in zip(prefill_meas, prompt_lens)]
ax.plot(prompt_lens[2:], per_prefill_token[2:], "^:", label="measured prefill time per prompt token")
ax.set_xscale("log", base=2)
ax.set_yscale("log")
legend_below(ax)
plt.show()

# %% [markdown] slideshow={"slide_type": "-"}
# **Figure 2.** Time of one decode step against the number of cached tokens, measured and
# predicted, with the prefill's time *per prompt token* from Figure 1 for comparison. The
# predicted decode curve is nearly flat: at these context lengths the reference model's KV cache
# is a small fraction of its weights (printed above), so each step costs about one pass over the
# weights. Check the measured curve against it with the first line printed under the table: a
# factor near the predicted one means your machine's steps, too, cost one pass over the weights
# whatever the context. The gap between the decode curve and the prefill-per-token curve is the
# central fact of LLM serving: generating a token costs far more time than reading one. The
# second printed line says how many times more on your machine.
#
# The roofline leaves out effects that push the measured step in both directions. Overheads
# raise it: a step of this small model is short, so per-step costs (Python, the dispatch of each
# operator, on a GPU the kernel launches) are a visible share of it; and other programs sharing
# the processor slow every step, most of all on a CPU, where each operator splits its work
# across threads and waits for the slowest of them. Cache effects can lower it: the model's
# weights may fit partly in the processor's caches, and then the "memory" the step reads from is
# faster than the DRAM bandwidth `measure_host()` measured, so the measurement can come out
# below the prediction. Which effect wins depends on the machine; chapter 4 measures decode on a
# model too large for any cache, where the bandwidth bound is tight.

# %% [markdown] slideshow={"slide_type": "fragment"}
# :::{important}
# At batch 1 a decode step costs about one read of all weights, nearly independent of
# the context until the KV cache grows comparable with the weights.
# :::

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 2.4 TTFT, TPOT and tokens per second
#
# Users and service-level objectives (SLOs) describe these phases with three numbers, which
# serving benchmarks report {cite:p}`daniel2023anyscale`.
#
# - **Time to first token** (TTFT): from the arrival of the request until the first output token
#   is available, $\text{TTFT} = t_0$. It is the prefill plus any queueing.
# - **Time per output token** (TPOT): the mean gap between output tokens after the first,
#
# $$
# \text{TPOT} = \frac{t_{G-1} - t_0}{G - 1} .
# $$
#
# - **Tokens per second** of a request, $G / t_{G-1}$, which mixes both; for a batch of requests,
#   the output tokens of all of them per second of wall time, the batch's {term}`throughput`
#   (chapter 5). A request's steady-state decode rate is $1/\text{TPOT}$.
#
# The end-to-end latency is $t_{G-1} = \text{TTFT} + (G - 1)\,\text{TPOT}$. `generate` records
# $t_i$ for every token, synchronising a GPU before each stamp so the stamp is when the token
# really exists. We generate 32 tokens after a 256-token prompt, five times, read the
# timestamps of the median request, and print the range of TTFT and TPOT over the five. The
# prediction beside them counts each phase with the attention kernel the model runs in it: a
# fused causal prefill for the TTFT, standard decode steps (each with $S + j - 1$ cached tokens)
# for the rest.

# %% slideshow={"slide_type": "-"} tags=["nbval-ignore-output"]
S, G = 256, 32
prompt = torch.randint(0, ref.vocab_size, (1, S), generator=torch.Generator().manual_seed(2))
generate(model, prompt, max_new_tokens=4)  # warm-up
with watch_load() as load:
    runs = sorted((generate(model, prompt, max_new_tokens=G) for _ in range(5)),
                  key=lambda r: r.timestamps_s[-1])
run = runs[2]  # the median of five requests by end-to-end time: one busy moment does not decide
t = np.array(run.timestamps_s)
ttft = t[0]
tpot = (t[-1] - t[0]) / (G - 1)
assert abs(ttft - run.ttft_s) < 1e-12 and abs(tpot - run.tpot_s) < 1e-12
step_pred = [model.step_costs("decode", 1, S + j - 1).on(host).time_s  # step j: S + j - 1 cached
             for j in range(1, G)]
pred = lp.LatencyEstimate(model.step_costs("prefill", 1, S).on(host).time_s, sum(step_pred), G)
steps = lp.roofline_latency(ref, host, prompt_tokens=S, output_tokens=G, dtype=dtype,
                            attention=model.attention_kernel["decode"])
assert abs(pred.decode_s / steps.decode_s - 1) < 1e-12  # the library sums the same steps
print(f"tokens/s of this request: {G / t[-1]:.0f}; steady decode rate 1/TPOT: {1 / tpot:.0f} tokens/s")
span = {"TTFT": [r.ttft_s for r in runs], "TPOT": [r.tpot_s for r in runs],
        "end-to-end": [r.timestamps_s[-1] for r in runs]}
display(lp.Table(["quantity", "predicted", "measured (median request)", "five requests: min",
                  "max", "measured / predicted"],
                 [(name, p, m, min(span[name]), max(span[name]), m / p)
                  for name, p, m in (("TTFT", pred.ttft_s, ttft), ("TPOT", pred.tpot_s, tpot),
                                     ("end-to-end", pred.total_s, t[-1]))],
                 formats={"predicted": lp.format_seconds,
                          "measured (median request)": lp.format_seconds,
                          "five requests: min": lp.format_seconds, "max": lp.format_seconds,
                          "measured / predicted": ".2f"}))
decode_gaps = np.diff(t)  # the G - 1 decode steps of the median request
q1, q3 = np.percentile(decode_gaps, [25, 75])
print(f"decode steps of the median request: median {lp.format_seconds(float(np.median(decode_gaps)))}, "
      f"IQR {(q3 - q1) / np.median(decode_gaps):.0%} of it, longest "
      f"x{decode_gaps.max() / np.median(decode_gaps):.1f} the median")
print(load.note())

# %% slideshow={"slide_type": "fragment"}
gaps = np.diff(np.concatenate([[0.0], t]))
pred_stamps = pred.ttft_s + np.concatenate([[0.0], np.cumsum(step_pred)])
assert abs(pred_stamps[-1] / pred.total_s - 1) < 1e-9
fig, (top, bottom) = plt.subplots(2, 1, figsize=(7.0, 5.0), gridspec_kw={"height_ratios": [1, 2]})
for row, stamps in ((1.2, t), (0.0, pred_stamps)):
    top.broken_barh([(0, stamps[0])], (row, 1), color="C1")
    top.broken_barh([(a, b - a) for a, b in zip(stamps[:-1], stamps[1:])], (row, 1), color="C0",
                    edgecolor="white", linewidth=0.2)
top.set_yticks([0.5, 1.7], ["predicted", "measured"])
top.set_xlim(0, max(t[-1], pred_stamps[-1]) * 1.01)
top.set_xlabel("time since the request arrived (s)")
top.set_title(f"One request of ref-small: {S}-token prompt, {G} output tokens")
bottom.bar(np.arange(G), gaps * 1e3, color=["C1"] + ["C0"] * (G - 1))
bottom.axhline(tpot * 1e3, color="black", lw=0.8, ls="--", label="measured TPOT (mean gap after the first)")
bottom.axhline(pred.tpot_s * 1e3, color="gray", lw=0.8, ls=":", label="predicted TPOT")
bottom.set_yscale("log")
bottom.set_xlabel("output token i")
bottom.set_ylabel("$t_i - t_{i-1}$ (ms)")
legend_below(bottom)
plt.show()

# %% [markdown] slideshow={"slide_type": "-"}
# **Figure 3.** The timeline of one request, drawn from the timestamps `generate` recorded. Top:
# the prefill (orange) ends at the TTFT, and each decode step (blue) ends with one more token;
# the row below is the same request as the roofline model predicts it on this machine.
# Bottom: the gap before each token, on a log scale: the first gap is the prefill, the rest
# are decode steps, whose mean is the TPOT. The roofline predicts them nearly equal (the KV cache
# grows by one token a step); the line about them under the table says how much the measured
# ones vary: their IQR as a share of their median, and the longest against the median. Steps
# that stand out are moments when the operating system, other programs, or a garbage collection
# took the processor.
#
# The prediction for the request combines §2.2 and §2.3 and inherits their gaps: TTFT is a
# prefill, TPOT a decode step. A long prompt makes TTFT large; a long answer makes the total
# large through $G \cdot \text{TPOT}$. Which one a user notices depends on the application: a
# chat interface streams tokens and is judged by both, a batch summarisation job only by the
# total.

# %% [markdown] slideshow={"slide_type": "fragment"}
# :::{important}
# TTFT is the prefill, TPOT is the decode step; the end-to-end latency is
# $\text{TTFT} + (G-1)\,\text{TPOT}$.
# :::

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 2.5 Choosing the next token: greedy, temperature, top-k
#
# Each step ends with logits $z \in \mathbb{R}^V$ for the next token. The model's distribution
# is $p_i = e^{z_i} / \sum_j e^{z_j}$; a *decoding strategy* picks one token from it.
#
# - **Greedy** takes $\arg\max_i z_i$: deterministic, and prone to repetition in real models.
# - **Temperature** $\tau > 0$ samples from $\operatorname{softmax}(z / \tau)$. $\tau < 1$ sharpens
#   the distribution towards greedy ($\tau \to 0$), $\tau > 1$ flattens it towards uniform.
# - **Top-k** keeps the $k$ largest logits, sets the others to $-\infty$, renormalises and samples
#   {cite:p}`fan2018hierarchical`. It removes the long tail of unlikely tokens, which at high temperature
#   would otherwise be drawn often. (Nucleus or top-p sampling keeps the smallest set whose
#   probability reaches $p$ {cite:p}`holtzman2020curious`; it is not used in this book.)
#
# The cost of sampling is a softmax and a draw over $V$ numbers per step, negligible beside the
# forward pass. What matters for reproducibility is the random generator: `generate` seeds its
# own generator, so the same seed gives the same tokens. The two functions printed below, from
# `llmperf.measured.generate`, are the whole of the strategy; the cell after them runs the decode
# loop by hand with `sample_next`, keeping the keys and values in a `KVCache` as `generate`
# does, and checks that the result is exactly what `generate` returns.

# %% slideshow={"slide_type": "-"}
import inspect

from llmperf.measured.generate import next_token_distribution, sample_next

print(inspect.getsource(next_token_distribution))
print(inspect.getsource(sample_next))


# %% slideshow={"slide_type": "-"}
@torch.inference_mode()
def decode_by_hand(prompt, new_tokens, temperature=0.0, top_k=None, seed=0):
    gen = torch.Generator(device=model.device).manual_seed(seed)
    cache = KVCache(model, batch=1)  # the keys and values of every position so far
    logits = model(prompt.to(model.device), 0, cache, last_only=True)  # prefill
    out = []
    for i in range(new_tokens):
        nxt = sample_next(logits[:, -1], temperature, top_k, gen)
        out.append(nxt.item())
        logits = model(nxt.unsqueeze(1), prompt.shape[1] + i, cache)  # one decode step
    return out


short = torch.randint(0, ref.vocab_size, (1, 32), generator=torch.Generator().manual_seed(3))
settings = [("greedy", 0.0, None), ("tau = 0.1", 0.1, None), ("tau = 1", 1.0, None),
            ("tau = 1, top-k 5", 1.0, 5)]
drawn, reseeded, same = {}, {}, []
for name, tau, k in settings:
    by_hand = decode_by_hand(short, 6, tau, k, seed=0)
    lib = generate(model, short, 6, temperature=tau, top_k=k, seed=0).tokens[0].tolist()
    assert by_hand == lib
    drawn[name] = lib
    reseeded[name] = generate(model, short, 6, temperature=tau, top_k=k, seed=1).tokens[0].tolist()
    same.append((name, by_hand == lib))
assert reseeded["greedy"] == drawn["greedy"]  # greedy ignores the seed
lp.Table(["strategy", "decode loop by hand gives generate()'s tokens (same seed)"], same)

# %% slideshow={"slide_type": "-"} tags=["nbval-ignore-output"]
lp.Table(["strategy", "seed 0", "seed 1"],
         [(name, str(tokens), str(reseeded[name])) for name, tokens in drawn.items()])

# %% [markdown] slideshow={"slide_type": "subslide"}
# The first cell checks, on every machine, that the decode loop written out by hand with
# `sample_next` reproduces `generate` token for token when both start from the same seed: the
# strategy really is that one function, and a seeded generator makes it repeatable. The second
# cell shows the tokens themselves, which depend on the floating-point details of your processor
# and so are not part of the book's checked output. Greedy decoding ignores the seed (asserted
# above); sampling with another seed almost always gives other tokens, except at very low
# temperature, where nearly all the probability sits on the favourite. An untrained model's
# greedy output tends to cycle through a few tokens: its random logits have fixed favourites.
#
# Figure 4 shows what temperature and top-k do to the model's distribution for the next token of
# the prompt above: the probabilities of the 200 most likely tokens, sorted.

# %% slideshow={"slide_type": "fragment"}
with torch.inference_mode():
    z = model(short.to(model.device), 0, last_only=True)[0, -1].float().cpu()
ax = new_axes("How temperature and top-k reshape the next-token distribution",
              "rank of the token (most likely first)", "probability")
ranks = np.arange(1, 201)
for tau in (0.05, 0.2, 1.0, 5.0):
    probs = next_token_distribution(z, tau).sort(descending=True).values[:200].numpy()
    ax.plot(ranks, probs, label=f"temperature {tau}")
kept = next_token_distribution(z, 1.0, top_k=20).sort(descending=True).values[:20].numpy()
ax.plot(np.arange(1, 21), kept, "k.", label="temperature 1, top-k 20")
ax.axhline(1 / ref.vocab_size, color="gray", lw=0.8, ls=":", label="uniform 1/V")
ax.set_xscale("log")
ax.set_yscale("log")
legend_below(ax, ncol=3)
plt.show()

# %% [markdown] slideshow={"slide_type": "-"}
# **Figure 4.** Sorted next-token probabilities of the reference model under four temperatures,
# and under top-k with $k = 20$. Low temperature piles the probability onto the first few
# ranks (greedy is the limit); high temperature flattens it towards the uniform $1/V$. Top-k cuts
# the tail at rank $k$ and renormalises, raising the kept probabilities. An untrained model's
# logits are nearly uniform to begin with, so temperature 1 is already flat here; a trained
# model's distribution is far more peaked, which is why temperatures near 1 are useful there.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Worked problems
#
# **Problem 1.** A request's tokens arrived at $t = (0.42, 0.47, 0.52, 0.58, 0.63)$ s after it was
# sent. What are its TTFT, TPOT, end-to-end latency and tokens per second?
#
# <details><summary>Answer</summary>
#
# TTFT $= t_0 = 0.42$ s. TPOT $= (0.63 - 0.42)/4 = 0.0525$ s. End-to-end $= 0.63$ s, which is
# $0.42 + 4 \times 0.0525$. Tokens per second of the request: $5 / 0.63 \approx 7.9$; its steady
# decode rate is $1/\text{TPOT} \approx 19$ tokens/s. The two differ because the request's rate
# includes the prefill.
#
# </details>
#
# **Problem 2.** With the lecture's simple model, how long does Llama 2 7B in fp16 take on an A10
# for a 350-token prompt and 150 output tokens? Which phase dominates?
#
# <details><summary>Answer</summary>
#
# Prefill: $2PS/\Pi = 2 \times 6.74 \times 10^9 \times 350 / (125 \times 10^{12}) \approx 38$ ms.
# Decode: $G \cdot 2P/\beta = 150 \times 13.5\text{ GB} / 600\text{ GB/s} \approx 3.37$ s. Decode
# is about 99 % of the total: 150 generated tokens cost ninety times more than 350 prompt
# tokens. `lp.simple_latency(llama, a10, 350, 150)` charges one step fewer, $G - 1 = 149$, because
# the prefill yields the first token (the lecture's formula rounds that token's step in): 3.35 s,
# the same split.
#
# </details>
#
# **Problem 3.** On the A10, how many prompt tokens does a prefill of Llama 2 7B process in the
# time of one decode step, by the simple model?
#
# <details><summary>Answer</summary>
#
# A decode step reads $bP$ bytes; a prompt token costs $2P$ FLOPs. The ratio is
# $\dfrac{bP/\beta}{2P/\Pi} = \dfrac{\Pi}{\beta}\cdot\dfrac{b}{2} = I^* \cdot \dfrac{b}{2}$ prompt
# tokens. In fp16 ($b = 2$) that is exactly the ridge point, $208$ tokens on the A10; with int8
# weights ($b = 1$) half as many, with fp32 weights twice as many. Any machine's ridge point,
# scaled by $b/2$, tells you how much more a decode token costs than a prompt token at batch 1.
#
# </details>
#
# **Problem 4.** A service promises TTFT $\le$ 0.5 s and TPOT $\le$ 50 ms. By the simple model on an
# A10, what is the longest prompt Llama 2 7B can accept, and is the TPOT objective met?
#
# <details><summary>Answer</summary>
#
# TTFT $= 2PS/\Pi \le 0.5$ s gives $S \le 0.5 \times 125 \times 10^{12} / (2 \times 6.74 \times 10^9)
# \approx 4{,}600$ tokens, beyond Llama 2's 4,096-token context: *under the simple model* every
# valid prompt meets the objective. The simple model leaves out attention, whose prefill work
# grows as $S^2$. The per-operator roofline model counts it: with the lecture's standard
# attention, which writes the $S \times S$ score matrices to memory, a 4,096-token prefill takes
# about 0.70 s and the longest prompt that meets 0.5 s is about 3,150 tokens; with a fused
# kernel (FlashAttention, chapter 7), which keeps them on chip, 4,096 tokens take about 0.50 s,
# right at the objective. TPOT $= 2P/\beta \approx 22.5$ ms $\le$ 50 ms: met, at batch 1 and with
# no queueing. Real kernels reach neither the peak rate nor the full bandwidth (Figures 1 and 2
# show the gap on your machine), so a real service needs a margin.
#
# </details>
#
# **Problem 5.** With temperature $\tau$, what is the probability of the most likely token when
# the logits are $z = (2, 1, 0)$, for $\tau = 1$ and $\tau = 0.5$? What does top-k with $k = 2$
# change at $\tau = 1$?
#
# <details><summary>Answer</summary>
#
# $\tau = 1$: $e^2 / (e^2 + e + 1) = 7.389/11.107 \approx 0.665$. $\tau = 0.5$: logits
# $(4, 2, 0)$, $e^4/(e^4 + e^2 + 1) = 54.6/63.0 \approx 0.867$. Top-2 at $\tau = 1$ drops the last
# token: $e^2/(e^2 + e) \approx 0.731$.
#
# </details>

# %% slideshow={"slide_type": "skip"} tags=["hide-cell"]
# The worked problems' answers, checked against llmperf.
t1 = [0.42, 0.47, 0.52, 0.58, 0.63]
record = Generation(torch.zeros(1, len(t1), dtype=torch.long), t1, prompt_len=1)  # as generate returns
assert record.ttft_s == 0.42 and abs(record.tpot_s - 0.0525) < 1e-12
assert round(len(t1) / t1[-1], 1) == 7.9 and round(1 / record.tpot_s) == 19
e2 = lp.simple_latency(llama, a10, 350, 150)
assert round(e2.prefill_s * 1e3) == 38 and round(150 * 2 * llama.param_count() / 600e9, 2) == 3.37
assert e2.decode_steps == 149 and round(e2.decode_s, 2) == 3.35
assert round(e2.decode_s / e2.total_s, 2) == 0.99 and round(e2.decode_s / e2.prefill_s, -1) == 90
assert round(a10.ridge_point("fp16")) == 208  # problem 3: I* x b/2 prompt tokens, b = 2
one = lp.simple_latency(llama, a10, 1, 1)
assert round(0.5 / one.prefill_s, -2) == 4_600 and round(lp.simple_decode_step_time(llama, a10) * 1e3, 1) == 22.5
assert abs(lp.prefill_time(llama, a10, 4096) - 0.70) < 0.005  # standard attention
assert abs(lp.prefill_time(llama, a10, 4096, attention="fused") - 0.50) < 0.005
longest = max(n for n in range(1, 4097) if lp.prefill_time(llama, a10, n) <= 0.5)
assert abs(longest - 3_150) < 25
z = torch.tensor([2.0, 1.0, 0.0])
assert [round(next_token_distribution(z, tau)[0].item(), 3) for tau in (1.0, 0.5)] == [0.665, 0.867]
assert round(next_token_distribution(z, 1.0, top_k=2)[0].item(), 3) == 0.731

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Summary
#
# - Prefill processes all $S$ prompt tokens in one pass and yields the first token; decode adds
#   one token per step, each step waiting for the token before it.
# - Prefill time is nearly flat for short prompts and proportional to $S$ beyond: its matrix
#   products reuse each weight across all prompt tokens and approach the machine's arithmetic
#   rate.
# - A decode step at batch 1 reads every weight for a single token; its time is about $bP/\beta$,
#   nearly independent of the context until the KV cache rivals the weights.
# - TTFT is the prefill (plus queueing), TPOT the mean decode step, end-to-end latency
#   $\text{TTFT} + (G-1)\,\text{TPOT}$; tokens per second of a request is $G$ over that.
# - Greedy, temperature and top-k sampling choose the next token; a seeded generator makes the
#   choice reproducible, and its cost is negligible beside the forward pass.
#
# **Exercises:** {doc}`Exercise set 2 </exercises/02_phases>` (TTFT, TPOT and tokens/s from timestamps, the simple
# latency model, the prefill-decode crossover, a sampler).

# %% [markdown] slideshow={"slide_type": "slide"}
# ## References
#
# ```{bibliography}
# :filter: docname in docnames
# ```
