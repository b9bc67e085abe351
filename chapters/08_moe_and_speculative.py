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
# # Chapter 8: Fewer FLOPs per token, fewer steps per answer: mixture of experts and speculative decoding
#
# The chapters so far took the model as given and asked how fast its steps can run. This one
# changes the work itself, in two ways the lecture groups together. A {term}`mixture of experts`
# (MoE) keeps many feed-forward networks per layer and runs only a few of them for each token,
# so a model can hold far more parameters than it computes with. {term}`Speculative decoding <speculative decoding>` keeps
# the model as it is but lets a cheap draft guess several tokens ahead, so that one step of the
# large model can produce several tokens of the answer, with the large model's output
# distribution unchanged. Both trade one resource for another, and chapter 5's lesson decides
# when the trade pays: a {term}`decode` step at a small batch is {term}`bound by the bytes it reads <memory bound>`, not by
# its FLOPs.
#
# :::{admonition} After this chapter you will be able to
# :class: tip
#
# - count the total and active parameters of an MoE model, and say what each one costs
#   (memory capacity against FLOPs per token);
# - predict how many experts a decode batch touches, $E\,(1 - (1 - k/E)^B)$ under uniform
#   routing, and from it the bytes a decode step reads and the batch at which an MoE's experts
#   turn {term}`compute bound`;
# - measure routing on real text and see how far it is from uniform;
# - state the verification step of speculative sampling, and check that it keeps the target's
#   distribution exactly;
# - predict tokens per target step, $(1 - \alpha^{\gamma+1})/(1 - \alpha)$, and the speedup
#   $(1 - \alpha^{\gamma+1})/((1 - \alpha)(\gamma c + 1))$ from an {term}`acceptance rate` $\alpha$ and a
#   cost ratio $c$, choose $\gamma$, and compare with a measurement;
# - explain why speculation helps at batch 1 and can hurt a heavily batched server.
# :::
#
# Notation: $E$ experts per layer, $k$ of them per token, $B$ sequences in a decode batch,
# $P$ parameters ($P_{\text{total}}$, $P_{\text{active}}$), $b$ bytes per parameter. For
# speculation: the *target* is the model whose outputs we want, the *draft* the cheap guesser;
# $\gamma$ drafted tokens per step, $\alpha$ the probability that a drafted token is accepted,
# $c$ the time of one draft step over one target step, $\tau$ the expected tokens one target
# step emits. The measured parts use the small models
# of `llmperf.trained` (trained on CPython's documentation, one character per token): the
# dense *target* (about 3.2 M parameters), a *draft* 13 times smaller, and an *MoE* with 4
# experts of which 2 run per token, as many active parameters as the target. They run on a
# GPU when there is one and on the CPU otherwise.

# %% slideshow={"slide_type": "-"}
import dataclasses
import statistics

import matplotlib.pyplot as plt
import torch
from IPython.display import display
from matplotlib.ticker import FormatStrFormatter, LogLocator

import llmperf as lp
from llmperf.analytic.speculative import (
    batched_speculative_speedup,
    best_gamma,
    expected_tokens_per_step,
    speculative_speedup,
    verify_step_time,
)
from llmperf.measured.drafts import NgramDraft
from llmperf.measured.experiments import compare, step_after_other_s
from llmperf.measured.load import watch_load
from llmperf.measured.moe import decode_steps, record_routing
from llmperf.measured.speculative import verify
from llmperf.plots import legend_below, new_axes, use_style
from llmperf.trained import load, validation_tokens

torch.manual_seed(0)
use_style()
device = "cuda" if torch.cuda.is_available() else "cpu"
target, draft, moe = (load(name, device=device) for name in ("target", "draft", "moe"))
text = validation_tokens(target.tokenizer)
mixtral, h200 = lp.get_model("mixtral-8x7b"), lp.get_accelerator("H200 SXM")
LEGEND = dict(fontsize="medium")  # legends as large as the axis labels


def with_range(values, fmt=lp.format_seconds):
    """Repeated measurements as 'median (lowest to highest)'."""
    return f"{fmt(statistics.median(values))} ({fmt(min(values))} to {fmt(max(values))})"


print(f"device for the measurements: {device}")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 8.1 Mixture of experts

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### Total against active parameters
#
# An MoE layer replaces the one feed-forward network (FFN) of a block with $E$ of them, the
# *experts*, and a *router*: a matrix $W_g$ of shape $d \times E$ that scores every expert for
# every token. Each token goes to its $k$ best-scoring experts, and their outputs are added with
# weights given by a softmax over the chosen scores; the other $E - k$ experts do nothing for it.
# Mixtral 8x7B {cite:p}`jiang2024mixtral` does this in each of its 32 layers with $E = 8$ and
# $k = 2$, on the attention layers of Mistral 7B {cite:p}`jiang2023mistral`. Attention, norms
# and embeddings are shared; only the FFN is multiplied:
#
# $$
# P_{\text{total}} = P_{\text{shared}} + L\,E\,P_{\text{expert}}, \qquad
# P_{\text{active}} = P_{\text{shared}} + L\,k\,P_{\text{expert}},
# $$
#
# with $P_{\text{expert}} = 3\,d\,d_{\text{ff}}$ for a SwiGLU expert (plus the router's $dE$
# per layer, counted as shared).

# %% slideshow={"slide_type": "-"}
expert = 3 * mixtral.d_model * mixtral.d_ff
experts_all = mixtral.n_layers * mixtral.n_experts * expert
shared = mixtral.param_count() - experts_all
active = shared + mixtral.n_layers * mixtral.experts_per_token * expert
lp.Table(["model", "E", "k", "params per expert", "total params", "active params",
          "weights (fp16)", "active / total"],
         [("Mixtral 8x7B", mixtral.n_experts, mixtral.experts_per_token, expert,
           mixtral.param_count(), active, lp.format_bytes(mixtral.weight_bytes("fp16")),
           f"{active / mixtral.param_count():.1%}"),
          ("trained MoE", moe.config.n_experts, moe.config.experts_per_token,
           3 * moe.config.d_model * moe.config.d_ff, moe.config.param_count(),
           moe.config.active_param_count(), lp.format_bytes(moe.config.weight_bytes("fp32")),
           f"{moe.config.active_param_count() / moe.config.param_count():.1%}"),
          ("trained target (dense)", 1, 1, 3 * target.config.d_model * target.config.d_ff,
           target.config.param_count(), target.config.active_param_count(),
           lp.format_bytes(target.config.weight_bytes("fp32")), "100.0%")],
         formats={"params per expert": ",d", "total params": ",d", "active params": ",d"})

# %% slideshow={"slide_type": "skip"} tags=["hide-cell"]
# The derivation above, checked against llmperf and against the paper (46.7B total, 12.9B
# active: Jiang et al. 2024 and Mistral AI's announcement).
assert active == mixtral.active_param_count()
assert round(mixtral.param_count() / 1e9, 1) == 46.7 and round(active / 1e9, 1) == 12.9
assert abs(moe.config.active_param_count() - target.config.param_count()) < 0.01 * target.config.param_count()

# %% [markdown] slideshow={"slide_type": "-"}
# Counted from Mixtral's published configuration, it computes with 12.9 B parameters per token
# and holds 46.7 B (the paper rounds them to 13 B and 47 B {cite:p}`jiang2024mixtral`), a
# little under a third of what it holds:
# per token it costs the FLOPs of a 13 B dense model, but it needs the memory of a 47 B one.
# Its 93 GB of fp16 weights do not fit on one 80 GiB A100 or H100; on an H200 they do, with
# tens of gigabytes left for the {term}`KV cache`. The trained MoE is the same idea in miniature: its
# two active experts of $d_{\text{ff}} = 344$ match the target's one FFN of 688, so both models
# do the same FLOPs per token.
#
# The router's choices are learned, and nothing forces them to be balanced: a router that sends
# most tokens to one expert wastes the others and makes that expert the bottleneck of every
# batch. MoE layers are usually trained with an auxiliary loss that rewards even loads
# {cite:p}`shazeer2017outrageously`; our small MoE was trained without one, so the measurement
# below shows what an unconstrained router does.

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### The experts a decode batch touches
#
# In a decode step, each of $B$ sequences brings one token, and each token needs $k$ experts.
# If the router picked uniformly at random, an expert would escape one token with probability
# $1 - k/E$ and all $B$ with probability $(1 - k/E)^B$, so the expected number of experts
# touched is
#
# $$
# E_{\text{touched}}(B) = E\,\bigl(1 - (1 - k/E)^B\bigr).
# $$
#
# A decode step must read the weights of every expert touched. At $B = 1$ that is $k$ experts,
# the active parameters; for Mixtral, by $B = 8$ it is already 7.2 of the 8, and the step reads
# most of the 47 B parameters while computing with only 13 B per token.
# `lp.experts_touched` is this formula, and `lp.step_costs` charges a decode step the bytes of
# the experts it touches.

# %% slideshow={"slide_type": "fragment"}
batches = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
dense_twin = dataclasses.replace(mixtral, name="dense, Mixtral's active size", n_experts=1,
                                 experts_per_token=1, d_ff=2 * mixtral.d_ff)
fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(7.0, 7.6))
ax1.plot(batches[:7], [lp.experts_touched(b, 8, 2) for b in batches[:7]], "o-",
         label="Mixtral: E = 8, k = 2")
ax1.plot(batches[:7], [lp.experts_touched(b, 4, 2) for b in batches[:7]], "s-",
         label="trained MoE: E = 4, k = 2")
ax1.set(xscale="log", xlabel="decode batch B (sequences)", ylabel="experts touched per layer",
        title="Experts a batch touches (uniform routing)")
ax1.set_xticks(batches[:7], [str(b) for b in batches[:7]])
ax1.minorticks_off()
ax1.legend(loc="lower right", **LEGEND)
for m, style in ((mixtral, "o-"), (dense_twin, "s--"), (lp.get_model("mistral-7b"), "^:")):
    ax2.plot(batches, [lp.decode_step_time(m, h200, 1024, b) * 1e3 for b in batches], style,
             label=m.name)
ax2.set(xscale="log", yscale="log", xlabel="decode batch B (sequences)",
        ylabel="decode step time (ms)", title="Roofline decode step on an H200, 1,024 cached, fp16")
ax2.set_xticks(batches[::2], [str(b) for b in batches[::2]])
ax2.set_yticks([3, 5, 10, 20, 50], ["3", "5", "10", "20", "50"])
ax2.minorticks_off()
ax2.legend(loc="upper left", **LEGEND)
fig.tight_layout()
plt.show()

# %% [markdown] slideshow={"slide_type": "-"}
# **Figure 1.** Top: experts touched per layer against the batch, under uniform routing; both
# models touch nearly all their experts by $B \approx 8$. Bottom: the {term}`roofline` time of one decode
# step on an H200 (fp16, 1,024 cached tokens per sequence) for Mixtral, for a dense model with
# the same attention and the same active parameters (one FFN of twice Mixtral's width, a model
# built for the comparison), and for Mistral 7B. At $B = 1$ Mixtral and its dense twin read the
# same bytes. From $B = 2$ Mixtral reads more experts each step, and by $B = 16$ its step costs
# more than three times the twin's: it reads nearly 47 B parameters where the twin reads 13 B. At large
# batches both turn compute bound and, doing the same FLOPs per token, meet again.
#
# That is where an MoE helps and where it does not. At batch 1 it decodes like its active size;
# in a large, compute-bound batch it also runs like its active size; between the two, its step
# reads every expert and costs like its total size. Its FFN products also turn compute bound
# later: each expert sees only about $Bk/E$ of the batch's tokens, so the batch must be $E/k$
# times larger than for a dense model (`lp.ffn_critical_batch`, chapter 5).

# %% slideshow={"slide_type": "-"}
lp.Table(["accelerator", "memory", "Mixtral fits (fp16, one 4,096-token request)?",
          "critical batch, Mixtral", "critical batch, dense twin"],
         [(a, lp.format_bytes(lp.get_accelerator(a).mem_capacity, binary=True),
           "yes" if lp.memory_report(mixtral, a, batch=1, seq_len=4096).fits else "no",
           lp.ffn_critical_batch(mixtral, a), lp.ffn_critical_batch(dense_twin, a))
          for a in ("A100 SXM 80GB", "H100 SXM", "H200 SXM")],
         title="Mixtral 8x7B: memory and the batch at which its FFN products turn compute bound")

# %% [markdown] slideshow={"slide_type": "fragment"}
# :::{important}
# An MoE decouples the FLOPs per token (active parameters) from the parameters held (total).
# It pays in memory capacity always, and in bandwidth at the batches between 1 and its
# {term}`critical batch`, which is $E/k$ times a dense model's.
# :::

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### Measured: routing on real text, experts touched, and decode steps
#
# `llmperf.measured.moe.record_routing` runs the trained MoE over 1,024 characters of the validation
# text with a forward hook on each layer's router, and keeps the two experts each token was
# sent to. Predict first: under uniform routing each expert gets a quarter of the token-expert
# slots in every layer.

# %% slideshow={"slide_type": "-"} tags=["nbval-ignore-output"]
routing = record_routing(moe.model, text, max_windows=4)
shares = routing.shares()
lp.Table(["layer"] + [f"expert {e}" for e in range(moe.config.n_experts)] + ["largest / uniform"],
         [(layer, *[f"{s:.3f}" for s in row], f"{max(row) * moe.config.n_experts:.2f}")
          for layer, row in enumerate(shares.tolist())],
         title=f"Share of the token-expert slots, {routing.tokens} validation tokens "
               "(uniform: 0.250)")

# %% slideshow={"slide_type": "fragment"} tags=["nbval-ignore-output"]
small_batches = [1, 2, 3, 4, 6, 8, 16, 32]
measured_touched = torch.stack([routing.touched(b) for b in small_batches])  # (batches, layers)
ax = new_axes("Experts touched by B tokens of real text: trained MoE",
              "decode batch B (random validation tokens)", "experts touched per layer")
ax.plot(small_batches, [lp.experts_touched(b, 4, 2) for b in small_batches], "k--",
        label="uniform routing (predicted)")
for layer in range(moe.config.n_layers):
    ax.plot(small_batches, measured_touched[:, layer], "o-", label=f"layer {layer} (measured)")
ax.set_xscale("log")
ax.set_xticks(small_batches, [str(b) for b in small_batches])
ax.minorticks_off()
ax.set_ylim(1.4, 4.1)  # room for the legend below the curves
ax.legend(loc="lower right", **LEGEND)
plt.show()

# %% [markdown] slideshow={"slide_type": "-"}
# **Figure 2.** Experts touched by a batch of $B$ tokens drawn at random from the validation
# text, per layer (points), against the uniform prediction (dashed). A layer whose router
# prefers some experts touches fewer of them at a given batch: the unlucky expert is rarely
# called, so a batch reads its weights less often. That is not a saving a server can bank on:
# the busiest expert does a larger share of the work, and the step waits for it. In the trained
# MoE the first layer's router is nearly balanced and the later ones are not, which is what
# training without a balancing loss can give.
#
# Now the decode step. The MoE and the dense target do the same FLOPs per token, so the analytic
# layer predicts the same bytes at $B = 1$ and more for the MoE as soon as a batch touches more
# than two experts. Predict the ratio of step times from the bytes before reading the
# measurement.

# %% slideshow={"slide_type": "-"} tags=["nbval-ignore-output"]
step_batches = [1, 2, 4, 8, 16, 32, 64]
with watch_load() as machine:  # three rounds, the two models in turn: a busy moment hits both
    rounds = [(decode_steps(moe.model, step_batches, context=128, steps=5),
               decode_steps(target.model, step_batches, context=128, steps=5)) for _ in range(3)]
moe_rounds = [[r[0][i].median_s for r in rounds] for i in range(len(step_batches))]
dense_rounds = [[r[1][i].median_s for r in rounds] for i in range(len(step_batches))]
moe_s = [statistics.median(v) for v in moe_rounds]
dense_s = [statistics.median(v) for v in dense_rounds]
bytes_ratio = [m.predicted_bytes / d.predicted_bytes for m, d in zip(*rounds[0])]
display(lp.Table(
    ["batch", "MoE step", "dense step", "measured MoE / dense", "predicted bytes MoE / dense",
     "experts touched (uniform)"],
    [(b, with_range(m), with_range(d), with_range([x / y for x, y in zip(m, d)], "{:.2f}".format),
      f"{r:.2f}", f"{row.experts_touched:.2f}")
     for b, m, d, r, row in zip(step_batches, moe_rounds, dense_rounds, bytes_ratio, rounds[0][0])],
    title=f"Decode step after 128 cached tokens, {device}: median of 3 rounds (lowest to highest)"))
print(machine.note())

# %% slideshow={"slide_type": "fragment"} tags=["nbval-ignore-output"]
ax = new_axes("Decode step against batch: trained MoE and dense target",
              "decode batch B (sequences)", "step time (ms)")
for values, marker, label in ((moe_rounds, "o-", "MoE, 4 experts, top 2 (measured)"),
                              (dense_rounds, "s-", "dense target (measured)")):
    mid = [statistics.median(v) * 1e3 for v in values]
    ax.errorbar(step_batches, mid, yerr=[[m - min(v) * 1e3 for m, v in zip(mid, values)],
                                         [max(v) * 1e3 - m for m, v in zip(mid, values)]],
                fmt=marker, capsize=3, label=label)
ax.plot(step_batches, [d * r * 1e3 for d, r in zip(dense_s, bytes_ratio)], "o:", color="C0",
        mfc="none", label="MoE predicted: dense time x bytes ratio")
ax.set(xscale="log", yscale="log")
ax.set_xticks(step_batches, [str(b) for b in step_batches])
ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))  # 1, 2, 5, 10, 20, ... ms
ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
ax.minorticks_off()
legend_below(ax)  # under the plot, where no data point can land
plt.show()

# %% [markdown] slideshow={"slide_type": "-"}
# **Figure 3.** Measured decode steps of the two trained models against the batch (the median
# of three rounds; the bars reach from the lowest round to the highest), and the
# MoE's step predicted from the dense one's time scaled by the ratio of the bytes the analytic
# layer counts. The bytes predict the shape: equal at $B = 1$, an MoE step dearer once a batch
# touches more than two experts, the gap closing as the KV cache and activations grow. Where
# the measured MoE is slower even at $B = 1$, where both models read the same bytes, the reason
# is chapter 7's: these models are so small that a step's time is largely per-operator
# overhead, and the MoE launches more operators (a router, a top-k, and for each expert an
# index, a gather, two products and a scatter-add). On a large model on a GPU, where a step's
# time is its bytes, the prediction of figure 1 is the one to expect.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 8.2 Speculative decoding

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### Guess, then check in one step
#
# Decoding one token at a time is a chain: token $t+1$ needs token $t$. Chapter 5 showed that a
# decode step at batch 1 is bound by memory: it reads every weight to do two FLOPs per
# parameter, far below the {term}`ridge <ridge point>`. So a step over a few positions instead of one costs about the
# same as a step over one. Speculative decoding {cite:p}`leviathan2023fast,chen2023accelerating`
# spends that slack. A draft, much cheaper than the target, proposes $\gamma$ tokens one at a
# time. The target then runs once over the last committed token and the $\gamma$ drafts,
# $\gamma + 1$ positions appended to its KV cache, exactly like a short {term}`prefill` (an *append*),
# and gets its own next-token distribution at each of them. A rule compares the two and keeps
# a prefix of the drafts, then adds one token of the target's own, so every target step emits
# between 1 and $\gamma + 1$ tokens.

# %% slideshow={"slide_type": "-"}
lp.Table(["model", "accelerator", "batch", "decode step", "verify, gamma = 4 (5 positions)",
          "ratio"],
         [(m, a, b, lp.format_seconds(verify_step_time(m, a, b, 1, 512)),
           lp.format_seconds(verify_step_time(m, a, b, 5, 512)),
           f"{verify_step_time(m, a, b, 5, 512) / verify_step_time(m, a, b, 1, 512):.2f}")
          for m, a, b in (("llama-2-7b", "A10", 1), ("llama-3-8b", "H100 SXM", 1),
                          ("llama-3-8b", "H100 SXM", 256), ("mixtral-8x7b", "H200 SXM", 1))],
         title="Roofline time of a target step over 1 and 5 positions, 512 cached, fp16")

# %% [markdown] slideshow={"slide_type": "-"}
# `verify_step_time` counts this step with `lp.step_costs`: every product and expert as for
# $B(\gamma + 1)$ tokens (the LM head included, since verification needs the target's
# distribution at every position), and attention as $\gamma + 1$ queries per sequence against
# its cache, which is read once. At batch 1 the verification of four drafts costs within 1% of
# one decode step: it reads the same weights and KV cache, and its FLOPs are still far below
# what the part could do. At batch 256 on the H100, five positions per sequence make 1,280
# tokens, past the critical batch of chapter 5: the products turn compute bound and the step
# costs 2.6 times a decode step. An MoE is the exception at batch 1: five positions touch
# up to $8\,(1 - (3/4)^5) = 6.1$ of Mixtral's experts per layer where one token touches 2, so
# its verification reads up to nearly three times the bytes of a decode step, and speculation
# buys an MoE much less than a dense model of the same active size. The 6.1 is an upper
# bound: it assumes each position is routed independently of the others, and the five
# positions of a verification are consecutive tokens of one text, which Mixtral's router
# sends to the same experts more often than chance would {cite:p}`jiang2024mixtral` (its
# section 5, the routing analysis), so they touch fewer. The last part of this section
# returns to batching.

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### Verification that keeps the target's distribution
#
# Let $p_i$ be the target's distribution at position $i$ and $q_i$ the draft's, from which it
# drew $x_i$. `llmperf.measured.speculative.verify` applies Leviathan et al.'s rule:
#
# 1. keep $x_i$ with probability $\min(1, p_i(x_i)/q_i(x_i))$, for $i = 1, 2, \dots$ in order;
# 2. at the first rejection, stop and emit a token drawn from $\max(0, p_i - q_i)$, normalized;
# 3. if all $\gamma$ were kept, emit one more token drawn from $p_{\gamma+1}$.
#
# A token is emitted at a position either by being drafted and kept, with probability
# $q(x)\min(1, p(x)/q(x)) = \min(p(x), q(x))$, or by the residual after a rejection. The
# probability of a rejection is $1 - \sum_x \min(p, q)$, which is exactly the mass of
# $\max(0, p - q)$; so the residual adds $p(x) - \min(p(x), q(x))$, and the total is $p(x)$.
# The output is distributed as the target's own samples, whatever the draft; a better draft
# only makes acceptance likelier, $\alpha = \sum_x \min(p(x), q(x))$. Greedy decoding is the case
# where both are one-hot at their argmax: a draft is kept exactly when it is the target's
# argmax, and the output equals plain greedy decoding token for token.
#
# Predict, then measure: with a target and a draft over six tokens, far apart, the tokens
# `verify` emits first should follow $p_1$, and not $q_1$.

# %% slideshow={"slide_type": "fragment"} tags=["nbval-ignore-output"]
gen = torch.Generator().manual_seed(0)
p_toy = torch.tensor([[0.05, 0.35, 0.25, 0.05, 0.2, 0.1], [0.3, 0.1, 0.1, 0.2, 0.2, 0.1]],
                     dtype=torch.float64)
q_toy = torch.tensor([[0.4, 0.05, 0.05, 0.3, 0.1, 0.1]], dtype=torch.float64)
samples = 10_000
firsts = torch.zeros(6)
for _ in range(samples):
    drafted = int(torch.multinomial(q_toy[0], 1, generator=gen))
    firsts[verify(p_toy, q_toy, [drafted], generator=gen)[0]] += 1
ax = new_axes(f"First emitted token: {samples:,} verification steps, gamma = 1",
              "token id", "probability")
width = 0.27
ids = torch.arange(6)
ax.bar(ids - width, q_toy[0], width, label="draft q (what was proposed)", color="C7")
ax.bar(ids, p_toy[0], width, label="target p (predicted output)", color="C0")
ax.bar(ids + width, firsts / samples, width, label="emitted by verify (measured)", color="C1")
ax.set_ylim(0, 0.5)  # room for the legend above the bars
ax.legend(loc="upper right", **LEGEND)
plt.show()
print(f"alpha = sum min(p, q) = {torch.minimum(p_toy[0], q_toy[0]).sum():.2f}; "
      f"largest gap between emitted frequency and p: {(firsts / samples - p_toy[0]).abs().max():.4f}")

# %% [markdown] slideshow={"slide_type": "-"}
# **Figure 4.** The draft proposes mostly tokens 0 and 3, which the target finds unlikely; after
# verification the emitted tokens follow the target's distribution, within the sampling noise
# of 10,000 draws (a standard error of at most 0.005). The tests in `tests/test_speculative.py`
# make this a chi-square test, for the first token and for whole three-token sequences, with
# the draft far from and close to the target and $\gamma$ from 1 to 4, at a significance level
# of $10^{-6}$ each (a correct implementation fails one of them less than once in 10,000 runs),
# and show that the same test rejects a plausible wrong rule (resampling from $p$ instead of
# $\max(0, p - q)$).

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### Tokens per step and the speedup
#
# If each draft is accepted with the same probability $\alpha$, independently, the $i$-th draft
# survives with probability $\alpha^i$, and a target step emits on average
#
# $$
# \tau(\alpha, \gamma) = \mathbb{E}[\text{tokens per step}] = 1 + \alpha + \dots + \alpha^{\gamma}
# = \frac{1 - \alpha^{\gamma+1}}{1 - \alpha}
# $$
#
# tokens ($\gamma + 1$ in the limit $\alpha \to 1$). A step costs $\gamma$ draft steps and one
# target step, $\gamma c + 1$ target steps, so the speedup over plain decoding is
#
# $$
# S(\alpha, \gamma, c) = \frac{\tau(\alpha, \gamma)}{\gamma c + 1}
# = \frac{1 - \alpha^{\gamma+1}}{(1 - \alpha)(\gamma c + 1)},
# $$
#
# assuming the verification costs one decode step. More drafts raise the numerator ever more
# slowly and the denominator linearly, so there is a best $\gamma$ (`best_gamma`); and some
# $\gamma$ beats plain decoding exactly when $\alpha > c$.

# %% slideshow={"slide_type": "fragment"}
gammas = list(range(1, 17))
ax = new_axes("Predicted speedup against gamma (c = 0.05)", "drafted tokens per step, gamma",
              "speedup over plain decoding")
for alpha in (0.6, 0.7, 0.8, 0.9):
    ax.plot(gammas, [speculative_speedup(alpha, g, 0.05) for g in gammas], "o-",
            label=f"alpha = {alpha} (best gamma {best_gamma(alpha, 0.05)})")
ax.axhline(1, color="black", lw=0.8)
ax.set_ylim(0, 5)  # the band below 1, where no curve goes, holds the legend
ax.legend(loc="lower right", ncol=2, **LEGEND)
plt.show()
lp.Table(["alpha", "c", "best gamma", "tokens per step", "speedup"],
         [(a, c, best_gamma(a, c), expected_tokens_per_step(a, best_gamma(a, c)),
           speculative_speedup(a, best_gamma(a, c), c))
          for a, c in ((0.6, 0.05), (0.8, 0.05), (0.9, 0.05), (0.8, 0.2), (0.2, 0.01))],
         formats={"tokens per step": ".2f", "speedup": ".2f"})

# %% slideshow={"slide_type": "skip"} tags=["hide-cell"]
# The formulas as the chapter writes them, against llmperf.
for a in (0.6, 0.8, 0.9):
    for g in gammas:
        assert abs(expected_tokens_per_step(a, g) - (1 - a ** (g + 1)) / (1 - a)) < 1e-12
assert abs(expected_tokens_per_step(0.8, 4) - 3.3616) < 1e-12
assert abs(speculative_speedup(0.8, 4, 0.1) - 2.4011) < 1e-4
assert best_gamma(0.3, 0.3) == 0 and best_gamma(0.31, 0.3) > 0

# %% [markdown] slideshow={"slide_type": "-"}
# **Figure 5.** The predicted speedup for a draft costing 5% of a target step. The curves are
# flat near their best $\gamma$, so the exact choice matters less than $\alpha$. The last row of
# the table is a draft that costs almost nothing but is rarely right ($\alpha = 0.2$): a bigram
# model, say. It still pays a little, because a free guess is never a loss; with $c = 0$ the
# speedup tends to $1/(1 - \alpha) = 1.25$ as $\gamma$ grows.

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### Measured with the trained draft and target
#
# `llmperf.measured.speculative.speculative_generate` runs the loop on the trained models, each
# with its own KV cache. After a step that kept $n$ of $\gamma$ drafts, the positions past the
# kept prefix hold keys and values of rejected drafts; nothing reads them, because the next
# append writes its own tokens over them before attention reads the cache (the tests fill them
# with NaN and check that nothing changes). Two drafts: the trained draft model, and an *n-gram
# prompt lookup* {cite:p}`saxena2023prompt`, which needs no model: it finds the last few
# characters earlier in the text and proposes what followed them (serving engines such as vLLM
# offer it as an "n-gram" draft). Its guesses are one-hot, so $q(x) = 1$ for the drafted token.
#
# `llmperf.measured.experiments.compare` runs plain and speculative decoding on the same prompts
# and measures $\alpha$ (kept over examined drafts), tokens per target step, the speedup, and,
# on the same machine, $c$ and $r$, the cost of a verification over $\gamma + 1$ positions
# relative to a decode step. It prints two predictions beside the measurement: the paper's
# $S(\alpha, \gamma, c)$, and $\tau/(\gamma c + r)$, which prices the verification as measured.

# %% slideshow={"slide_type": "-"} tags=["nbval-ignore-output"]
prompts = [text[i:i + 48].tolist() for i in (0, 25_000)]
spec_gammas = [1, 2, 3, 4, 6]
drafts = {"draft model": draft.model, "n-gram lookup": NgramDraft()}
with watch_load() as machine:  # three rounds, each timing plain and speculative decoding in turn
    greedy_rounds = [compare(target.model, drafts, prompts, 64, spec_gammas, temperature=0.0,
                             rounds=1) for _ in range(3)]
    sampled_rounds = [compare(target.model, {"draft model": draft.model}, prompts, 64,
                              spec_gammas, temperature=1.0, rounds=1) for _ in range(3)]


def median_round(rounds):
    """For each (draft, gamma): the round of median speedup, and the speedups of all rounds."""
    chosen, speedups = [], []
    for results in zip(*rounds):  # one (draft, gamma) in every round
        chosen.append(sorted(results, key=lambda r: r.speedup)[len(results) // 2])
        speedups.append([r.speedup for r in results])
    return chosen, speedups


greedy, greedy_speedups = median_round(greedy_rounds)
sampled, sampled_speedups = median_round(sampled_rounds)
speedup_rounds = greedy_speedups + sampled_speedups  # beside greedy + sampled, row for row
ratio = "{:.2f}".format
display(lp.Table(
    ["temperature", "draft", "gamma", "alpha", "tokens / step", "predicted tokens / step",
     "speedup (lowest to highest)", "predicted S", "predicted S with r", "c", "r",
     "greedy identical"],
    [(r.temperature, r.draft, r.gamma, r.alpha, r.tokens_per_step,
      r.predicted_tokens_per_step, with_range(rounds, ratio), r.predicted_speedup,
      r.predicted_speedup_measured_verify, r.c, r.verify_ratio,
      "-" if r.identical is None else ("yes" if r.identical else "NO"))
     for r, rounds in zip(greedy + sampled, speedup_rounds)],
    formats={"alpha": ".3f", "tokens / step": ".2f", "predicted tokens / step": ".2f",
             "predicted S": ".2f", "predicted S with r": ".2f", "c": ".2f", "r": ".2f",
             "temperature": "g"},
    title=f"Speculative against plain decoding, trained target, batch 1, {device}: the round of "
          "median speedup of 3"))
model_rows, lookup_rows = greedy[:len(spec_gammas)], greedy[len(spec_gammas):]
print(f"greedy alpha: draft model {min(r.alpha for r in model_rows):.2f} to "
      f"{max(r.alpha for r in model_rows):.2f}, n-gram lookup "
      f"{min(r.alpha for r in lookup_rows):.2f} to {max(r.alpha for r in lookup_rows):.2f}")
print(f"draft model's c: {with_range([r.c for r in model_rows + sampled], ratio)} of a target "
      f"step, against {draft.config.param_count() / target.config.param_count():.3f} of its "
      "parameters")
print(machine.note())

# %% slideshow={"slide_type": "fragment"} tags=["nbval-ignore-output"]
fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(7.0, 7.6), sharex=True)
series = ((model_rows, greedy_speedups[:len(spec_gammas)], "draft model, greedy", "C0"),
          (lookup_rows, greedy_speedups[len(spec_gammas):], "n-gram lookup, greedy", "C1"),
          (sampled, sampled_speedups, "draft model, T = 1", "C2"))
for rows, rounds, label, color in series:
    g = [r.gamma for r in rows]
    ax1.plot(g, [r.tokens_per_step for r in rows], "o-", color=color, label=label)
    ax1.plot(g, [r.predicted_tokens_per_step for r in rows], ":", color=color)
    mid = [statistics.median(x) for x in rounds]
    ax2.errorbar(g, mid, yerr=[[m - min(x) for m, x in zip(mid, rounds)],
                               [max(x) - m for m, x in zip(mid, rounds)]],
                 fmt="o-", color=color, capsize=3)
    ax2.plot(g, [r.predicted_speedup_measured_verify for r in rows], ":", color=color)
ax1.plot([], [], "k:", label="dotted: predicted")
ax1.set(ylabel="tokens per target step", title="Tokens per target step")
ax1.set_ylim(1, max(r.predicted_tokens_per_step for r in greedy + sampled) + 1.4)
ax1.legend(loc="upper left", **LEGEND)
ax2.set(xlabel="drafted tokens per step, gamma", ylabel="speedup over plain decoding",
        title="Wall-time speedup (bars: lowest to highest of 3 rounds)")
ax2.axhline(1, color="black", lw=0.8)
ax2.set_xticks(spec_gammas)
fig.tight_layout()
plt.show()

# %% [markdown] slideshow={"slide_type": "-"}
# **Figure 6.** Top: tokens per target step against $\gamma$, measured (points) and predicted
# from the measured $\alpha$ (dotted). Bottom: the measured speedup (the median of three rounds,
# with bars from the lowest round to the highest) and the prediction that uses the measured $c$
# and verification cost $r$ (dotted). Things to read in the table, the printed lines and the
# figure:
#
# - greedy outputs must be identical to plain greedy decoding for both drafts and every
#   $\gamma$ (the table's last column; the tests check it too);
# - how far the measured tokens per step fall from the prediction as $\gamma$ grows. The formula
#   assumes every draft is accepted with the same probability, independently of the others,
#   while real acceptances can come in runs (easy stretches of text are easy throughout; the
#   per-position acceptance below shows whether they do here), and near the end of each answer
#   fewer than $\gamma$ drafts fit, which the formula does not know: both matter more the
#   longer the chain of drafts;
# - the two drafts' $\alpha$ at temperature 0 (the printed line). Greedy text from a small
#   character model repeats itself, which is what the n-gram lookup finds, and a lookup that
#   costs nothing ($c = 0$) needs a lower $\alpha$ than the draft model to buy the same
#   speedup. At temperature 1 the draft model's $\alpha$ should be near the overlap
#   $\sum_x \min(p, q)$ of the two models that `llmperf.trained`'s model card reports; a
#   sampled character is much harder to look up than a repeated one
#   (`benchmarks/speculative.py` measures the lookup's $\alpha$ there);
# - the draft model's $c$ beside its share of the target's parameters (the printed line): $c$ is
#   a ratio of step times, not of parameters. Where a step is mostly per-operator overhead
#   (chapter 7), the 2-layer draft launches about half the operators of the 4-layer target, so
#   its $c$ lies far above its share of the parameters (1/13), and the speedup it can buy
#   shrinks with it;
# - neither prediction counts the host work of a speculative step (building inputs, turning
#   logits into distributions, verification, sampling, the n-gram lookup), nor the prefill;
#   the next subsection measures both and checks whether they account for the gap between
#   the measured speedup and the prediction.
#
# The per-position acceptance, for the draft model at temperature 1, against the constant
# $\alpha$ the formula assumes:

# %% slideshow={"slide_type": "-"} tags=["nbval-ignore-output"]
deepest = sampled[-1]
lp.Table(["draft position i", "alpha_i (measured)", "alpha overall"],
         [(i + 1, "-" if a is None else f"{a:.3f}", f"{deepest.alpha:.3f}")
          for i, a in enumerate(deepest.alpha_by_position)],
         title=f"Acceptance by draft position, gamma = {deepest.gamma}, temperature 1")

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### Where the time goes: closing the budget
#
# `speculative_generate` reads the clock around every forward pass of the target and of the
# draft model (on a GPU it waits for each pass's work first and after) and at the end of
# every target step, so each step's wall time splits into the target's forward pass, the
# draft's forward passes, and the rest: *host time*, everything the step does outside the
# two models (building the input tensors, turning logits into distributions and copying them
# to the host, verification, sampling, the n-gram lookup, the cache bookkeeping). `compare`
# adds up these parts, per new token, over the prompts' runs (here the runs of the round of
# median speedup, the round the tables above show), beside the prefill; they sum to the
# measured time per token. The budget sets against the measured time
# per token what the benchmarks predict, $(\gamma c + r)\,t_{\text{step}}/\tau$ with the
# benchmarked target decode step $t_{\text{step}}$ and the measured $\tau$, plus the measured
# host and prefill time. The remainder is the part the budget leaves open: the forward passes
# inside the loop against their benchmarked price.

# %% slideshow={"slide_type": "-"} tags=["nbval-ignore-output"]
spec_rows = greedy + sampled
lp.Table(["temperature", "draft", "gamma", "measured", "predicted forwards", "host", "prefill",
          "predicted + host + prefill", "remainder"],
         [(r.temperature, r.draft, r.gamma, r.spec_s_per_token * 1e3,
           r.predicted_forward_s_per_token * 1e3, r.host_s_per_token * 1e3,
           r.prefill_s_per_token * 1e3, r.predicted_s_per_token_with_host * 1e3,
           f"{r.unexplained_s_per_token / r.spec_s_per_token:+.0%}") for r in spec_rows],
         formats={"temperature": "g", "measured": ".3f", "predicted forwards": ".3f",
                  "host": ".3f", "prefill": ".3f", "predicted + host + prefill": ".3f"},
         title=f"Speculative decoding: milliseconds per new token, {device}")

# %% slideshow={"slide_type": "-"} tags=["nbval-ignore-output"]
factor_names = list(spec_rows[0].speedup_factors())
lp.Table(["temperature", "draft", "gamma", "measured speedup"] + factor_names,
         [(r.temperature, r.draft, r.gamma, r.speedup, *r.speedup_factors().values())
          for r in spec_rows],
         formats={"temperature": "g", "measured speedup": ".2f",
                  **{name: ".2f" for name in factor_names}},
         title="The measured speedup: the prediction times four measured factors")

# %% slideshow={"slide_type": "-"} tags=["nbval-ignore-output"]
best = max(greedy[:len(spec_gammas)], key=lambda r: r.speedup)
factors = best.speedup_factors()
worst = max(spec_rows, key=lambda r: abs(r.unexplained_s_per_token) / r.spec_s_per_token)
print(f"draft model, greedy, gamma = {best.gamma}: measured {best.speedup:.2f}x against "
      f"tau / (gamma c + r) = {factors['tau / (gamma c + r)']:.2f}x.\n"
      f"  host time: {best.host_s_per_token * 1e3:.3f} ms per token, "
      f"{best.host_s_per_token / best.spec_s_per_token:.0%} of the measured "
      f"{best.spec_s_per_token * 1e3:.3f} ms (factor {factors['host']:.2f}); prefill "
      f"{best.prefill_s_per_token / best.spec_s_per_token:.0%} (factor {factors['prefill']:.2f}).\n"
      f"  predicted + host + prefill: {best.predicted_s_per_token_with_host * 1e3:.3f} ms, "
      f"remainder {best.unexplained_s_per_token / best.spec_s_per_token:+.0%} (factor "
      f"{factors['forward passes in the loop']:.2f}).\n"
      f"  plain decoding: {best.plain_s_per_token * 1e3:.3f} ms per token against a "
      f"benchmarked decode step of {best.target_step_s * 1e3:.3f} ms (factor "
      f"{factors['plain baseline']:.2f}).\n"
      f"largest remainder of any row: "
      f"{worst.unexplained_s_per_token / worst.spec_s_per_token:+.0%} "
      f"({worst.draft}, temperature {worst.temperature:g}, gamma {worst.gamma})")

# %% [markdown] slideshow={"slide_type": "-"}
# The first table is the budget in milliseconds per new token; the second turns it into the
# speedup: the measured speedup is exactly $\tau/(\gamma c + r)$ times four measured factors.
# "Host" is the benchmarked forward passes over those plus the host time, below 1 by what the
# host work costs speculation; "prefill" does the same for the prefill. "Forward passes in
# the loop" is 1 when the budget closes. "Plain baseline" is plain decoding's own time per
# token over the benchmarked decode step: plain decoding has host work (sampling, one
# synchronization per token) and a prefill too, which the prediction also leaves out. A factor
# above 1 raises the measured speedup: plain decoding pays its host work once per token,
# speculation once per target step. What to read:
#
# - the host column against the measured one: how much of a speculative step is host work
#   on this machine (the printed lines give it as a share for the fastest draft-model row).
#   Host work is Python and small tensor operations: a device that runs the small models'
#   forward passes faster leaves it a larger share;
# - the remainder: within a few percent, the loop's forward passes cost what the benchmarks
#   say, and host work, prefill and the plain baseline account for the whole gap between
#   prediction and measurement. A large remainder, of either sign, means the loop's forward
#   passes did not cost their benchmarked price: the benchmarks time one context (96 cached
#   tokens), in the same rounds as the runs but not at the same instants, while the runs'
#   contexts range from 47 to 111 tokens; the last steps of each answer propose fewer than
#   $\gamma$ drafts (which the budget prices as $\gamma$), and the n-gram lookup often finds
#   fewer than $\gamma$ (both make the remainder negative); the benchmarks run one model over
#   and over while the loop alternates two models and the host work; and on a shared machine
#   a busy moment that hits the benchmarks and not the runs (or the reverse) shows here too;
# - the plain-baseline factor, for the same reasons, measures how far plain decoding's time
#   per token is from the benchmarked step it is priced at.
#
# The alternation can be measured on its own: `step_after_other_s` times the target's decode
# step repeated by itself, as `cost_ratios` does, and right after $\gamma$ steps of the draft,
# as the loop runs it (the draft's steps untimed).

# %% slideshow={"slide_type": "-"} tags=["nbval-ignore-output"]
with watch_load() as machine:  # three rounds of 50 timed steps each way
    pairs = [step_after_other_s(target.model, draft.model, other_calls=best.gamma, rounds=1)
             for _ in range(3)]
alone_s, after_s = [a for a, _ in pairs], [b for _, b in pairs]
print(f"target decode step, 96 cached, median of 3 rounds (lowest to highest):\n"
      f"  repeated alone:                  {with_range(alone_s)}\n"
      f"  right after {best.gamma} draft steps:       {with_range(after_s)}\n"
      f"  change:                          {with_range([b / a - 1 for a, b in pairs], '{:+.0%}'.format)}\n"
      f"remainder of the draft model's rows (greedy): "
      f"{', '.join(f'{r.unexplained_s_per_token / r.spec_s_per_token:+.0%}' for r in model_rows)}")
print(machine.note())

# %% [markdown] slideshow={"slide_type": "-"}
# Where the step right after the draft's is dearer than the step repeated alone, the
# benchmarks underprice every target step of the loop by about that much (and the draft's
# steps, which follow the target's, may be dearer too): compare the printed change with the
# draft model's remainders. A likely reason is that these models are small enough for the
# processor's caches to hold much of one model while it is repeated, and a switch to the
# other evicts it; the measurement gives the size of the effect, not its cause. Whatever it
# does not account for is what the budget leaves open on this machine.

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### Published figures beside ours
#
# | source | target, draft | result |
# |---|---|---|
# | {cite:t}`leviathan2023fast` | T5-XXL (11 B) with smaller T5 drafts | 2x to 3x faster than the standard T5X implementation, identical outputs |
# | {cite:t}`leviathan2023fast` | several pairs of models | $\alpha$ from about 0.6 to 0.9, higher for larger drafts; even a bigram draft ($\alpha \approx 0.2$, $c \approx 0$) gives about 1.25x |
# | {cite:t}`chen2023accelerating` | Chinchilla 70 B, a 4 B draft | 2x to 2.5x in a distributed setup, the target's distribution recovered within hardware numerics |
#
# The T5-XXL and Chinchilla speedups are stated in the papers' abstracts; the acceptance rates,
# the bigram result and the size of Chen et al.'s draft come from the papers' experiment
# sections (Leviathan et al.'s section 4, Chen et al.'s section 4), which are the place to
# check them before quoting them.
#
# Set their speedups beside the largest in our table. A large target favours speculation, for
# the reason given above: a 70 B target's step on an accelerator is its bytes, nearly the
# same for $\gamma + 1$ positions as for one, and the draft is cheap beside it. Chen et al.'s
# 4 B draft samples a token in 1.8 ms against 14.1 ms for the 70 B Chinchilla target
# {cite:p}`chen2023accelerating`, so $c = 1.8/14.1 \approx 0.13$: more than twice the ratio of
# their parameters ($4/70 \approx 0.057$), since a step costs more than its parameters' bytes
# (compare our draft's measured $c$ with its 1/13), but low enough that their acceptance
# rates buy a 2x to 2.5x speedup. Our measurement has the same ingredients
# ($\alpha$, $c$, $r$, and the host time of the last subsection); only their values differ.

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### Why speculation helps at batch 1 and can hurt under heavy batching
#
# Speculation spends idle FLOPs to save sequential steps. At batch 1, chapter 5's decode step
# uses a tiny fraction of the part's FLOPs, so the verification's extra $\gamma$ positions are
# free and $r \approx 1$. A server that batches many requests has already spent those FLOPs:
# past the critical batch the target's step is compute bound, a verification over $\gamma + 1$
# positions per sequence costs up to $\gamma + 1$ steps, and the rejected drafts are pure
# waste. `batched_speculative_speedup` prices the verification with `verify_step_time`:

# %% slideshow={"slide_type": "fragment"}
spec_batches = [1, 4, 16, 64, 128, 256, 512, 1024, 2048]
ax = new_axes("Speculation in a batch: Llama 3 8B on an H100 (fp16, 128 cached)",
              "decode batch B (sequences)", "speedup over plain decoding")
for alpha, gamma in ((0.8, 4), (0.8, 2), (0.6, 2)):
    ax.plot(spec_batches, [batched_speculative_speedup("llama-3-8b", "H100 SXM", b, alpha, gamma,
                                                       0.05, context=128)
                           for b in spec_batches], "o-",
            label=f"alpha = {alpha}, gamma = {gamma}, c = 0.05")
ax.axhline(1, color="black", lw=0.8)
ax.axvline(lp.ffn_critical_batch("llama-3-8b", "H100 SXM"), color="C3", ls="--",
           label="critical batch (chapter 5)")
ax.set_xscale("log")
ax.set_xticks([1, 4, 16, 64, 256, 1024], ["1", "4", "16", "64", "256", "1024"])
ax.minorticks_off()
ax.set_ylim(0, 3)  # the band below the curves at small batches holds the legend
ax.legend(loc="lower left", **LEGEND)
plt.show()

# %% [markdown] slideshow={"slide_type": "-"}
# **Figure 7.** The predicted speedup of speculation against the batch, for a draft costing 5%
# of a target step (its cost taken as a fixed share of the target's step at every batch). While
# the verification's $B(\gamma + 1)$ positions stay below the critical batch, they ride on idle
# FLOPs and speculation keeps most of its batch-1 speedup. Beyond that the extra positions cost real
# time, and once the plain step is compute bound too (past the dashed line) a verification costs
# nearly $\gamma + 1$ steps (a little less: attention still reads each sequence's cache once for
# all its positions), and the speedup is below 1; it drops below 1 sooner for a longer
# $\gamma$ or a lower $\alpha$ (for $\gamma = 4$, before the dashed line). This is why
# serving engines turn speculation down or off under high load.

# %% [markdown] slideshow={"slide_type": "fragment"}
# :::{important}
# Speculation trades FLOPs, which a batch-1 decode step leaves idle, for sequential steps. It
# keeps the target's outputs exactly, it pays when $\alpha$ is well above $c$, and it stops
# paying once batching has already put the idle FLOPs to work.
# :::

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Worked problems
#
# **Problem 1.** An MoE has 32 layers, $d = 4096$, SwiGLU experts of $d_{\text{ff}} = 14336$,
# $E = 8$, $k = 2$, and 1.6 B shared parameters. How many parameters does it hold, and how many
# does a token use?
#
# <details><summary>Answer</summary>
#
# One expert: $3 \times 4096 \times 14336 = 176{,}160{,}768$. All experts:
# $32 \times 8 \times 176{,}160{,}768 = 45.10$ B, so $46.7$ B in total; a token uses
# $32 \times 2 \times 176{,}160{,}768 = 11.27$ B of them, $12.9$ B with the shared part. These
# are Mixtral 8x7B's numbers.
#
# </details>
#
# **Problem 2.** How many of Mixtral's experts does a decode batch of 4 touch per layer under
# uniform routing, and what share of the expert weights does the step read?
#
# <details><summary>Answer</summary>
#
# $8\,(1 - (3/4)^4) = 8 \times 0.6836 = 5.47$ experts, 68% of the expert weights, against 25% at
# batch 1.
#
# </details>
#
# **Problem 3.** A draft is accepted with $\alpha = 0.7$ and costs $c = 0.1$ of a target step.
# What speedup does $\gamma = 3$ give, and which $\gamma$ is best?
#
# <details><summary>Answer</summary>
#
# $\tau = 1 + 0.7 + 0.49 + 0.343 = 2.533$ tokens per step, over $3 \times 0.1 + 1 = 1.3$ target
# steps: 1.95x. $\gamma = 4$ gives $2.773/1.4 = 1.98$x, $\gamma = 5$ gives $2.941/1.5 = 1.96$x:
# the best is $\gamma = 4$.
#
# </details>
#
# **Problem 4.** The target is certain of token 2 ($p = $ one-hot at 2) and the draft proposed
# token 5 with $q(5) = 0.6$. What does verification emit?
#
# <details><summary>Answer</summary>
#
# $p(5) = 0$, so the draft is rejected with probability 1, and the residual $\max(0, p - q)$ is
# one-hot at 2: the step emits token 2, as plain decoding would.
#
# </details>

# %% slideshow={"slide_type": "skip"} tags=["hide-cell"]
# The numbers the prose quotes and the worked problems' answers, checked against llmperf.
assert round(lp.experts_touched(8, 8, 2), 1) == 7.2
assert verify_step_time("llama-3-8b", "H100 SXM", 1, 5, 512) < 1.01 * verify_step_time("llama-3-8b", "H100 SXM", 1, 1, 512)
assert round(verify_step_time("llama-3-8b", "H100 SXM", 256, 5, 512) / verify_step_time("llama-3-8b", "H100 SXM", 256, 1, 512), 1) == 2.6
assert round(lp.experts_touched(5, 8, 2), 1) == 6.1
assert round(1.8 / 14.1, 2) == 0.13 and round(4 / 70, 3) == 0.057 and 1.8 / 14.1 > 2 * 4 / 70
_spec = {b: batched_speculative_speedup("llama-3-8b", "H100 SXM", b, 0.8, 4, 0.05, context=128) for b in (1, 16, 256, 2048)}
assert abs(_spec[1] / speculative_speedup(0.8, 4, 0.05) - 1) < 0.01 and _spec[16] > 0.9 * _spec[1]
assert _spec[256] < 1 and _spec[2048] < 1 and lp.ffn_critical_batch("llama-3-8b", "H100 SXM") > 256
assert batched_speculative_speedup("llama-3-8b", "H100 SXM", 256, 0.8, 2, 0.05, context=128) > 1
assert 2.5 < verify_step_time(mixtral, h200, 1, 5, 512) / verify_step_time(mixtral, h200, 1, 1, 512) < 3
assert lp.decode_step_time(mixtral, h200, 1024, 16) > 3 * lp.decode_step_time(dense_twin, h200, 1024, 16)
assert mixtral.weight_bytes("fp16") > lp.get_accelerator("H100 SXM").mem_capacity
assert 3 * 4096 * 14336 == 176_160_768 == expert
assert round(shared / 1e9, 1) == 1.6 and round(experts_all / 1e9, 2) == 45.10
assert round(mixtral.param_count() / 1e9, 1) == 46.7 and round(mixtral.active_param_count() / 1e9, 1) == 12.9
assert abs(lp.experts_touched(4, 8, 2) - 5.46875) < 1e-12
assert abs(speculative_speedup(0.7, 3, 0.1) - 2.533 / 1.3) < 1e-3
assert best_gamma(0.7, 0.1) == 4
_eye = torch.eye(6, dtype=torch.float64)
_q = torch.full((1, 6), 0.08, dtype=torch.float64)
_q[0, 5] = 0.6
assert verify(_eye[[2, 0]], _q, [5]) == [2]
# The prose's measured-but-deterministic figures: the draft 13 times smaller than the target;
# Figure 2's first router nearly balanced and the later ones not; Figure 4 within three
# standard errors of p.
assert round(target.config.param_count() / draft.config.param_count()) == 13
assert max(shares[0].tolist()) * moe.config.n_experts < 1.25
assert all(max(row) * moe.config.n_experts > 1.4 for row in shares[1:].tolist())
assert float((firsts / samples - p_toy[0]).abs().max()) < 3 * 0.005

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Summary
#
# - An MoE holds $E$ experts per layer and runs $k$ per token: FLOPs per token follow the active
#   parameters (12.9 B for Mixtral 8x7B), memory the total (46.7 B).
# - A decode batch of $B$ touches $E(1 - (1 - k/E)^B)$ experts under uniform routing, so the
#   bytes a step reads grow from the active to the total parameters within a few sequences, and
#   the FFN turns compute bound only at $E/k$ times a dense model's critical batch.
# - Learned routing is not uniform unless training asks for it; our small MoE's later layers
#   favour some experts. On a model so small that a step is mostly per-operator overhead, the
#   MoE's extra operators can cost more than its bytes (compare the measured and predicted
#   ratios of section 8.1).
# - Speculative decoding verifies $\gamma$ drafts in one append step of the target, and its
#   accept/reject rule keeps the target's distribution exactly (greedy: identical outputs).
# - It emits $(1 - \alpha^{\gamma+1})/(1 - \alpha)$ tokens per target step, and speeds decoding
#   up by that over $\gamma c + 1$; it pays when $\alpha > c$, most at batch 1 (less for an MoE,
#   whose verification touches more experts), and not once the batch makes the target's step
#   compute bound.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Exercises
#
# {doc}`Exercise set 8 </exercises/08_moe_and_speculative>`: active and total parameters of an MoE configuration,
# experts touched by a batch, tokens per step and speedup, the best $\gamma$, and the
# accept/reject step written by hand.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## References
#
# ```{bibliography}
# :filter: docname in docnames
# ```
