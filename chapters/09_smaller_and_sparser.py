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
# # Chapter 9: Smaller and sparser: pruning, distillation, contextual sparsity, skipping work
#
# Every optimization so far kept the model and changed how it runs: fewer bytes per weight
# (chapter 6), fewer trips to memory (chapter 7), fewer active parameters or fewer sequential
# steps (chapter 8). This chapter changes the model's work itself, in four ways.
# {term}`Pruning <pruning>` removes weights a trained model barely uses. {term}`Distillation <distillation>` trains a small model to imitate
# a large one. {term}`Contextual sparsity <contextual sparsity>` skips, for each token, the FFN neurons that are zero for
# that token anyway. {term}`Early exit <early exit>` stops a token at a layer whose prediction is already
# confident. Each promises fewer FLOPs and fewer bytes; whether a step gets faster depends on
# whether the work removed is work the kernels would really have done.
#
# :::{admonition} After this chapter you will be able to
# :class: tip
#
# - prune a model by magnitude and by Wanda's activation-aware score, and explain why a mask of
#   zeros in a dense tensor buys no speed while removing whole neurons does;
# - count the parameters and bytes of a structurally pruned model, and say what the 2:4
#   pattern lets a sparse tensor core do;
# - write the distillation loss and say what it buys a student of a given size;
# - measure per-token activation sparsity, predict the FLOPs and bytes an oracle that skips
#   zero neurons saves, and see the saving fade as a batch grows;
# - compute the layers early exit saves from an exit profile, alone and in a batch;
# - map every optimization of chapters 6 to 9 to the resource of chapter 4 it relieves.
# :::
#
# Notation follows chapter 4: $D$ model width, $D_{\text{ff}}$ FFN width, $L$ layers, $h$ heads
# of width $d$, $P$ parameters, $b$ bytes per element, $\beta$ bandwidth, $B$ the batch. New
# here: $s$, a *sparsity* (the fraction of weights, or of a token's FFN neurons, that are
# zero), and $a = (1 - s) D_{\text{ff}}$, the active neurons of one token. The experiments use
# the small models trained on CPython's documentation (`llmperf.trained`, see its model card):
# the target (4 layers, $D = 256$, SwiGLU), the ReLU model (the same shape with a ReLU FFN) and
# two students 5.2 times smaller (3 layers, $D = 128$). They run on a GPU when there is one,
# else on the CPU.

# %% slideshow={"slide_type": "-"} tags=["nbval-ignore-output"]
import copy
import statistics

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import display

import llmperf as lp
from llmperf.analytic.layers import experts_touched
from llmperf.analytic.sparsity import (
    batch_expected_layers,
    expected_layers,
    gathered_ffn_cost,
    pruned_size,
    sparse_ffn_cost,
    sparsity_savings,
    two_four_bytes,
)
from llmperf.measured.distill import distillation_loss
from llmperf.measured.early_exit import early_exit_curve, layer_logits
from llmperf.measured.load import watch_load
from llmperf.measured.measure import benchmark, measure_decode, measure_host, windows
from llmperf.measured.model import MLP
from llmperf.measured.pruning import (
    importance,
    input_norms,
    prune,
    prune_levels,
    shrink,
    top_indices,
    weight_sparsity,
)
from llmperf.measured.sparsity import (
    GatheredFFN,
    fit_predictors,
    predicted_ffn,
    prediction_quality,
    trace_ffn,
)
from llmperf.plots import legend_below, new_axes, use_style
from llmperf.trained import agreement, evaluate, load, manifest
from llmperf.trained.corpus import split_text
from llmperf.trained.load import validation_tokens

torch.manual_seed(0)
use_style()
LEGEND = dict(fontsize="medium")  # legends as large as the axis labels


def with_range(values, fmt=lp.format_seconds):
    """Repeated measurements as 'median (lowest to highest)'."""
    return f"{fmt(statistics.median(values))} ({fmt(min(values))} to {fmt(max(values))})"


device = "cuda" if torch.cuda.is_available() else "cpu"
if device == "cpu":
    torch.set_num_threads(1)  # the small models' products cost more split over threads
target, relu = load("target", device=device), load("relu", device=device)
val = validation_tokens(target.tokenizer).to(device)
train_tokens = target.tokenizer.encode_tensor(split_text("train")).to(device)
calibration = train_tokens[:8 * 256].reshape(8, 256)  # Wanda's and the predictors' statistics
SLICE = 4  # validation windows of 256 tokens: a small fixed slice, to stay fast
dense_loss = evaluate(target.model, val, max_windows=SLICE).loss_nats
print(f"device: {device}; target {target.model.num_parameters():,} parameters")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 9.1 Pruning

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### Unstructured pruning: magnitude and Wanda
#
# A linear layer computes $y = W x$, with $W$ of shape (outputs, inputs). *Magnitude pruning*
# sets the weights of smallest $|W_{ij}|$ to zero. It ignores how large input $j$ usually is:
# a small weight on an input that is often huge can matter more than a large weight on an input
# that is nearly always zero. Wanda {cite:p}`sun2024wanda` scores each weight by
# $|W_{ij}| \cdot \lVert X_j \rVert_2$, the weight times the norm of its input feature over a few
# calibration tokens, and removes the lowest scores *within each output row*, so every output
# keeps the same number of inputs. (Our magnitude baseline compares within rows too, and our
# norms come from one pass of the dense model, where Wanda's code measures each layer's inputs
# after the layers before it are pruned.) Neither method updates the remaining weights; SparseGPT
# {cite:p}`frantar2023sparsegpt` does (it solves a layer-wise reconstruction problem), at more
# cost.
#
# `llmperf.measured.pruning.prune` applies either mask to every linear layer of the blocks (the
# embedding and LM head stay whole), removing exactly $\operatorname{round}(s \cdot
# \text{inputs})$ weights of every row. The prediction to check: the loss barely moves at low
# sparsity, then climbs; Wanda's curve stays below magnitude's where it climbs.

# %% slideshow={"slide_type": "-"}
sparsities = [0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
norms = input_norms(target.model, calibration)  # Wanda's ||X_j||, computed once
unstructured = {}
for method in ("magnitude", "wanda"):  # every level from one sort of each layer's scores
    levels = prune_levels(target.model, sparsities[1:], method, norms=norms)
    unstructured[method] = [dense_loss] + [evaluate(m, val, max_windows=SLICE).loss_nats
                                           for m in levels]
nonzero = [int(sum(int((p != 0).sum()) for p in m.parameters()))  # left non-zero by Wanda
           for m in [target.model] + levels]
two_four = {method: evaluate(prune(target.model, method=method, pattern="2:4", norms=norms),
                            val, max_windows=SLICE).loss_nats
            for method in ("magnitude", "wanda")}

# %% slideshow={"slide_type": "-"} tags=["nbval-ignore-output"]
lp.Table(["sparsity", "loss, magnitude (nats)", "loss, Wanda (nats)"],
         [(f"{s:.0%}", m, w) for s, m, w in zip(sparsities, unstructured["magnitude"],
                                                unstructured["wanda"])]
         + [("2:4 (50%)", two_four["magnitude"], two_four["wanda"])],
         formats={"loss, magnitude (nats)": ".4f", "loss, Wanda (nats)": ".4f"})

# %% slideshow={"slide_type": "fragment"}
ax = new_axes("Unstructured pruning of the trained target",
              "sparsity of every block's weights", "validation loss (nats/token)")
ax.plot(sparsities, unstructured["magnitude"], "o-", label="magnitude |W|")
ax.plot(sparsities, unstructured["wanda"], "s-", label="Wanda |W| x ||X||")
ax.plot([0.5], [two_four["magnitude"]], "^", color="C0", ms=9, label="2:4, magnitude")
ax.plot([0.5], [two_four["wanda"]], "v", color="C1", ms=9, label="2:4, Wanda")
ax.axhline(dense_loss, color="gray", ls=":", label="dense")
ax.legend(loc="upper left", **LEGEND)  # the curves stay low until they climb at the right
plt.show()

# %% [markdown] slideshow={"slide_type": "-"}
# **Figure 1.** Validation loss of the target (a fixed slice of 1,024 tokens) as a growing
# fraction of every block's weights is set to zero. Look for the knee: up to some sparsity the
# curves hug the dense line, because the smallest weights carried little; past it both rise
# fast. Through most of the climb Wanda's stays lower: weighing by the input's norm keeps the
# small weights that sit on large inputs (at the far end, where both have broken the model, the
# order can flip). The triangles are the 2:4 pattern at 50%: forcing exactly
# two zeros into every group of four inputs is a constraint, so it costs a little more loss
# than 50% chosen freely. A model this small has less redundancy than a 175-billion-parameter
# one, so its knee comes earlier than the published ones below.

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### What the zeros buy: nothing in a dense kernel
#
# A dense matrix product reads every element of $W$ and multiplies it, zero or not: a mask
# changes the values in the tensor, not its shape, so the FLOPs and bytes of chapter 4 are
# unchanged. To gain from zeros, a kernel must skip them, and unstructured zeros are scattered:
# a sparse format (CSR, say) stores an index beside every kept value, and its irregular reads
# waste bandwidth. At 50% sparsity in fp16, values plus 16-bit column indices take as many
# bytes as the dense matrix, before any loss of efficiency. Sparse kernels pay only at much
# higher sparsity.
#
# The **2:4 pattern** is the compromise hardware adopted: in every group of four consecutive
# inputs, at most two weights are non-zero. NVIDIA's Ampere and later tensor cores multiply
# such a matrix stored compressed (the two kept values of each group plus a 2-bit position for
# each) at twice the dense peak math rate {cite:p}`nvidia_cusparselt`, for 16- and 8-bit types
# (32-bit types use a 1:2 pattern instead {cite:p}`nvidia_cusparselt_types`); datasheets
# quote the sparse peak beside the dense one {cite:p}`nvidia_a100`. This book's peaks are dense
# (chapter 4). Bytes fall too, though by less than half:

# %% slideshow={"slide_type": "-"}
elements = 4096 * 4096
lp.Table(["4,096 x 4,096 matrix in fp16", "bytes", "of dense"],
         [("dense", lp.format_bytes(elements * 2, binary=True), "1.0000"),
          ("2:4 compressed", lp.format_bytes(two_four_bytes(elements, "fp16"), binary=True),
           f"{two_four_bytes(elements, 'fp16') / (elements * 2):.4f}")])

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### Structured pruning: whole neurons and whole heads
#
# *Structured* pruning removes rows and columns, so the matrices that remain are smaller dense
# matrices that any kernel runs faster. An FFN neuron $j$ is row $j$ of $W_{\text{up}}$ (and of
# $W_{\text{gate}}$ in SwiGLU) and column $j$ of $W_{\text{down}}$; a head is $d$ rows of each
# of $W_q$, $W_k$, $W_v$ and $d$ columns of $W_o$. `llmperf.measured.pruning.prune_structured` scores
# each neuron by its mean absolute activation times the norm of its column of
# $W_{\text{down}}$ (how much it adds to the residual stream), each head by the same product
# for its attention output and its columns of $W_o$, and builds a new reference `Transformer`
# from `llmperf.analytic.sparsity.pruned_config`: $D_{\text{ff}}$ and $h$ smaller, $d$ unchanged
# (`ModelConfig` takes $d$ as given, so $h d$ need not equal $D$). A head goes with its keys and
# values, which the target allows because it has one KV head per query head. Every layer loses
# the same number of neurons and heads, since one `ModelConfig` describes all the layers. The
# predicted sizes:

# %% slideshow={"slide_type": "-"}
structured_shapes = [(688, 4), (516, 4), (344, 4), (172, 4), (688, 3), (344, 3), (344, 2)]
size_rows = []
for d_ff, heads in structured_shapes:
    size = pruned_size(target.config, d_ff, heads, dtype="fp32")
    size_rows.append((d_ff, heads, size.params_after, size.param_ratio,
                      lp.format_bytes(size.bytes_after)))
lp.Table(["d_ff", "heads", "parameters", "of the target", "fp32 bytes"], size_rows,
         formats={"parameters": ",", "of the target": ".3f"})

# %% [markdown] slideshow={"slide_type": "-"}
# Now the measurement: loss against parameters kept for unstructured Wanda (the non-zero
# weights), for structured FFN pruning, and for structured pruning of one head per layer on top.
# Equal sizes, different shapes of what is removed.

# %% slideshow={"slide_type": "-"}
structured = []
neuron_scores, head_scores = importance(target.model, calibration)  # scored once
for d_ff, heads in structured_shapes:
    small = shrink(target.model, top_indices(neuron_scores, d_ff), top_indices(head_scores, heads))
    structured.append((d_ff, heads, small.num_parameters(),
                       evaluate(small, val, max_windows=SLICE).loss_nats))

# %% slideshow={"slide_type": "-"} tags=["nbval-ignore-output"]
lp.Table(["d_ff", "heads", "parameters", "loss (nats)", "loss - dense"],
         [(d, h, p, loss, loss - dense_loss) for d, h, p, loss in structured],
         formats={"parameters": ",", "loss (nats)": ".4f", "loss - dense": "+.4f"})

# %% slideshow={"slide_type": "fragment"}
ax = new_axes("Loss against size: what is removed matters",
              "parameters kept (non-zero), millions", "validation loss (nats/token)")
ax.plot([n / 1e6 for n in nonzero], unstructured["wanda"], "s-", color="C1",
        label="unstructured, Wanda")
for heads, marker, color in ((4, "o", "C2"), (3, "D", "C3"), (2, "x", "C4")):
    pts = [(p / 1e6, loss) for d, h, p, loss in structured if h == heads]
    ax.plot(*zip(*pts), marker, color=color, ms=8,
            label=f"structured, {heads} heads per layer")
ax.axhline(dense_loss, color="gray", ls=":", label="dense")
legend_below(ax)  # under the plot, where no data point can land
plt.show()

# %% [markdown] slideshow={"slide_type": "-"}
# **Figure 2.** Validation loss against the parameters left. Unstructured Wanda removes
# individual weights wherever they matter least and keeps the lowest loss at a given count of
# non-zero weights; structured FFN pruning (green) pays more loss for the same count, because
# it must drop a neuron's weights all together. Removing a head (red, purple) costs far more per
# parameter: four heads per layer is already few, and each one carries a distinct pattern of
# attention. The structured points are the only ones on this plot that are smaller *models*.

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### Measured: what each kind of sparsity buys in decode speed
#
# One batch-1 {term}`decode` step reads every weight once, so its predicted time scales with the
# model's bytes: `step_costs` of the pruned config against the target's. For the unstructured
# model the shape is the target's, so the prediction is no gain. We prune the FFNs only, to 50%,
# both ways, then also one head of every layer from the structured model, and time one step at
# position 128.

# %% slideshow={"slide_type": "-"}
half = target.config.d_ff // 2
models = {"dense": target.model,
          "unstructured Wanda, FFN 50%": prune(target.model, 0.5, "wanda", norms=norms,
                                                ffn_only=True),
          "structured, FFN 50%": shrink(target.model, top_indices(neuron_scores, half),
                                        top_indices(head_scores, 4)),
          "structured, FFN 50%, 3 heads": shrink(target.model, top_indices(neuron_scores, half),
                                                 top_indices(head_scores, 3))}
times = {name: [] for name in models}
with watch_load() as machine:
    host = measure_host(dtypes=("fp32",), quick=True, device=device, progress=False)
    for _ in range(5):  # alternate, so that a busy moment on the machine hits every model
        for name, m in models.items():
            times[name].append(measure_decode(m, 128, steps=10).timing.median_s)
predicted = {name: m.step_costs("decode", 1, 128).on(host).time_s  # from each model's shape
             for name, m in models.items()}
speedups = {name: [d / t for d, t in zip(times["dense"], times[name])] for name in models}

# %% slideshow={"slide_type": "-"} tags=["nbval-ignore-output"]
ratio = "{:.2f}".format
display(lp.Table(
    ["model", "FFN weights zero", "predicted step", "measured step, median of 5 rounds",
     "predicted speedup", "measured speedup", "loss (nats)"],
    [(name, "0% (removed)" if name.startswith("structured")
      else f"{weight_sparsity(m, ffn_only=True):.0%}", lp.format_seconds(predicted[name]),
      with_range(times[name]), predicted["dense"] / predicted[name],
      with_range(speedups[name], ratio), evaluate(m, val, max_windows=SLICE).loss_nats)
     for name, m in models.items()],
    formats={"predicted speedup": ".2f", "loss (nats)": ".4f"}))
for name in list(models)[1:]:
    print(f"{name}: measured {with_range(speedups[name], ratio)} against "
          f"{predicted['dense'] / predicted[name]:.2f} predicted")
print(machine.note())

# %% [markdown] slideshow={"slide_type": "-"}
# What to look for, in the printed lines. The unstructured model runs the same matmuls as the
# dense one, so the bytes predict no gain: its measured speedup should sit at 1 within the
# spread of the rounds, and where it does not, something other than the model changed between
# the rounds' turns (the note under the table says whether the machine was busy). The
# structured models run narrower matmuls: compare their measured speedups with the bytes'
# prediction. On a model this small the two can part either way: at batch 1 much of a step is
# per-operator overhead that no pruning removes (chapter 7 measured it), which holds the
# measured speedup below the prediction, while the pruned matrices, small enough to sit in a
# cache that the dense ones overflow, can lift it above. On a large model, whose step is its
# weight bytes, the measured speedup approaches the prediction.
# `benchmarks/pruning.py` repeats this at 25, 50 and 75% with more steps
# (`benchmarks/results/pruning.md`).

# %% [markdown] slideshow={"slide_type": "fragment"}
# :::{important}
# Zeros buy speed only where a kernel skips them. Unstructured sparsity saves nothing in a dense
# kernel; 2:4 sparsity doubles the peak math rate on tensor cores that support it (a peak: a
# kernel gains at most that, and in a {term}`memory-bound <memory bound>` step the gain is the bytes' ratio);
# structured pruning makes every kernel smaller, at a larger cost in loss per parameter
# removed.
# :::

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### Published figures beside ours
#
# SparseGPT {cite:p}`frantar2023sparsegpt` prunes OPT-175B and BLOOM-176B to 50 to 60%
# unstructured sparsity in one shot with a negligible increase in perplexity, and handles the
# 2:4 and 4:8 patterns. Wanda {cite:p}`sun2024wanda`, with no weight update at all, is
# competitive with it on LLaMA and LLaMA-2 and clearly better than magnitude pruning. Our small
# target reaches its knee earlier (Figure 1): large models are more over-parameterized, and
# their outlier input features, which Wanda's score was designed for, make magnitude pruning
# fail there far more sharply than it does here.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 9.2 Distillation
#
# Pruning starts from the large model and removes parts. Distillation starts from a small
# model and trains it to imitate the large one {cite:p}`hinton2015distilling`. The teacher's
# next-token distribution says more than the one correct token of the corpus: which other
# characters were nearly as likely. Dividing both models' logits by a temperature $T > 1$
# softens the distributions so that this information carries weight, and the student
# minimizes
#
# $$
# \mathcal{L} = (1 - \alpha)\,\mathrm{CE}(q, y) + \alpha\, T^2\,
# \mathrm{KL}\!\left(p_T \,\Vert\, q_T\right), \qquad
# p_T = \operatorname{softmax}(z_{\text{teacher}}/T),\; q_T = \operatorname{softmax}(z_{\text{student}}/T).
# $$
#
# The factor $T^2$ keeps the soft term's gradient, which scales as $1/T^2$, on the scale of
# the hard term's. `llmperf.measured.distill.distillation_loss` is the second term; the training script
# of the trained models calls it. A few steps, live, on a copy of the (undistilled) student,
# all on one fixed batch of training text so that each step's change is visible:

# %% slideshow={"slide_type": "-"}
student = copy.deepcopy(load("student", device=device).model).requires_grad_(True).train()
opt = torch.optim.AdamW(student.parameters(), lr=2e-3)
starts = torch.randint(0, len(train_tokens) - 129, (4,),
                       generator=torch.Generator().manual_seed(0)).tolist()
batch = torch.stack([train_tokens[i:i + 129] for i in starts])
with torch.no_grad():
    teacher_logits = target.model(batch[:, :-1])
alpha, T, steps_log = 0.5, 2.0, []
for step in range(6):
    logits = student(batch[:, :-1]).float()
    hard = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                             batch[:, 1:].reshape(-1))
    soft = distillation_loss(logits, teacher_logits, T)
    loss = (1 - alpha) * hard + alpha * soft
    opt.zero_grad()
    loss.backward()
    opt.step()
    steps_log.append((step, hard.item(), soft.item(), loss.item()))

# %% slideshow={"slide_type": "-"} tags=["nbval-ignore-output"]
lp.Table(["step", "cross-entropy", "T^2 KL(teacher || student)", "total"], steps_log,
         formats={"cross-entropy": ".4f", "T^2 KL(teacher || student)": ".4f", "total": ".4f"})

# %% [markdown] slideshow={"slide_type": "-"}
# The KL term measures, in nats scaled by $T^2$, how far the student's softened distribution is
# from the teacher's; it is zero only when they agree. Over these six steps on one batch it falls
# (an Adam step may still raise it now and then: the table shows each step).
# (A real run draws a new batch each step, so its loss falls more slowly and less evenly.)
# The committed students were trained once each, on the same budget (150 steps of 8 windows of
# 256 tokens, the same shape): one on the corpus alone, one with this loss ($\alpha = 0.5$,
# $T = 2$). Each is one run from its own fixed seed, so the gap between them also holds some
# seed-to-seed variation, which one run each does not measure.
# Their validation losses over the whole validation split come from the manifest; their
# agreement with the target and their distillation loss against it are measured here on the
# small slice.

# %% slideshow={"slide_type": "-"}
info = manifest()["models"]
slice_rows = []
slice_windows = windows(val, 256, SLICE)
with torch.inference_mode():
    target_logits = target.model(slice_windows[:, :-1])
for name in ("target", "student", "student-distilled"):
    m = load(name, device=device).model
    agree = agreement(m, target.model, val, max_windows=SLICE)
    with torch.inference_mode():
        kl = distillation_loss(m(slice_windows[:, :-1]), target_logits, T).item()
    slice_rows.append((name, info[name]["params"], info[name]["val_loss_nats"],
                       evaluate(m, val, max_windows=SLICE).loss_nats, agree.greedy,
                       agree.overlap, kl))
lp.Table(["model", "parameters", "val loss, whole split (manifest)"],
         [(n, p, v) for n, p, v, *_ in slice_rows],
         formats={"parameters": ",", "val loss, whole split (manifest)": ".4f"})

# %% slideshow={"slide_type": "-"} tags=["nbval-ignore-output"]
lp.Table(["model", "loss on the slice (nats)", "greedy agreement with target",
          "overlap with target", "T^2 KL from target"],
         [(n, s, g, o, k) for n, _, _, s, g, o, k in slice_rows],
         formats={"loss on the slice (nats)": ".4f", "greedy agreement with target": ".3f",
                  "overlap with target": ".3f", "T^2 KL from target": ".4f"})

# %% [markdown] slideshow={"slide_type": "-"}
# At equal size and equal training steps, the distilled student has the lower validation loss
# and agrees more often with the target (about 0.1 nats and 2 points of greedy agreement on the
# whole split, in the manifest), and its distribution is closer to the target's (a lower KL
# term, the quantity it was trained to lower). That is what distillation buys: a better model
# *of that size*, not a smaller model of the same quality; a 5.2 times smaller model remains
# well behind its teacher. For speed, the student is simply a smaller dense model: its decode
# step reads 5.2 times fewer weight bytes, every kernel benefits, and the {term}`speculative decoding`
# of chapter 8 can use it as a draft, where a higher agreement is a higher {term}`acceptance rate`.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 9.3 Contextual sparsity

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### Which neurons are zero for this token
#
# In an FFN with ReLU, $y = W_{\text{down}} \operatorname{relu}(W_{\text{up}} x)$, every neuron
# whose pre-activation is negative outputs exactly zero, and its column of $W_{\text{down}}$
# contributes nothing. Which neurons those are changes from token to token: the sparsity is
# *contextual*. Deja Vu {cite:p}`liu2023dejavu` found most of OPT's neurons (and many heads)
# inactive for any given token. `llmperf.measured.sparsity.trace_ffn` reads the trained ReLU model's FFN
# activations through forward hooks, on 1,024 tokens of validation text.

# %% slideshow={"slide_type": "-"}
text = val[:4 * 256].reshape(4, 256)
trace = trace_ffn(relu.model, text)
per_layer = [s.cpu().numpy() for s in trace.sparsity()]

# %% slideshow={"slide_type": "-"} tags=["nbval-ignore-output"]
lp.Table(["layer", "mean sparsity", "10th percentile", "90th percentile"],
         [(i + 1, s.mean(), np.percentile(s, 10), np.percentile(s, 90))
          for i, s in enumerate(per_layer)], formats={"mean sparsity": ".3f",
                                                    "10th percentile": ".3f",
                                                    "90th percentile": ".3f"})

# %% slideshow={"slide_type": "fragment"}
ax = new_axes("Per-token activation sparsity of the ReLU model's FFNs",
              "layer", "fraction of FFN neurons exactly zero")
ax.boxplot(per_layer, whis=(5, 95), showfliers=False)
ax.set_ylim(0, 1)
plt.show()

# %% [markdown] slideshow={"slide_type": "-"}
# **Figure 3.** For each layer, the spread over tokens of the fraction of the 1,032 neurons that
# are exactly zero (boxes: quartiles; whiskers: 5th and 95th percentiles). Most neurons are off
# for most tokens, more so in the middle layers; the spread shows that the count, not only the
# set, depends on the token.

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### What an oracle would save, predicted
#
# An oracle that knew each token's active neurons would compute $a$ of the $D_{\text{ff}}$ rows
# of $W_{\text{up}}$ and columns of $W_{\text{down}}$: FLOPs fall by the factor $a/D_{\text{ff}}$.
# Bytes fall by the same factor for one token. In a batch, each neuron any token needs must be
# read; if tokens chose their active sets independently and uniformly, a batch of $B$ would
# read $D_{\text{ff}}(1 - (1 - a/D_{\text{ff}})^B)$ distinct neurons, the expected-experts
# formula of {term}`MoE <mixture of experts>` (chapter 8) with every neuron an expert. `llmperf.analytic.sparsity.sparse_ffn_cost`
# counts it. First the prediction, at the measured mean sparsity, then a check of the
# independence assumption on the traced activations: the union of the active sets of $B$
# consecutive tokens, measured, against the formula.

# %% slideshow={"slide_type": "-"}
mean_sparsity = float(np.mean([s.mean() for s in per_layer]))
savings_rows = []
for B in (1, 8, 64):
    sv = sparsity_savings(relu.config, mean_sparsity, tokens=B, dtype="fp32")
    savings_rows.append((B, sv.sparse.flops / sv.dense.flops, sv.sparse.bytes / sv.dense.bytes))
batches = [1, 2, 4, 8, 16, 32, 64, 128]
union_measured = []
for B in batches:
    fractions = [float(a[i:i + B].any(0).float().mean()) for a in
                 (trace.active(layer) for layer in range(len(per_layer)))
                 for i in range(0, a.shape[0] - B + 1, B)]
    union_measured.append(float(np.mean(fractions)))
d_ff = relu.config.d_ff
active = round(d_ff * (1 - mean_sparsity))
union_predicted = [experts_touched(B, d_ff, active) / d_ff for B in batches]

# %% slideshow={"slide_type": "-"} tags=["nbval-ignore-output"]
print(f"mean activation sparsity over the layers: {mean_sparsity:.3f}")
lp.Table(["batch B", "oracle FFN FLOPs / dense", "oracle FFN bytes / dense"], savings_rows,
         formats={"oracle FFN FLOPs / dense": ".3f", "oracle FFN bytes / dense": ".3f"})

# %% slideshow={"slide_type": "fragment"}
ax = new_axes("Neurons a batch needs: union of its tokens' active sets",
              "tokens in the batch B", "fraction of FFN neurons active for some token")
ax.semilogx(batches, union_measured, "o-", base=2, label="measured (consecutive tokens)")
ax.semilogx(batches, union_predicted, "s--", base=2, label="predicted: independent tokens")
ax.set_xticks(batches, [str(b) for b in batches])
ax.set_ylim(0, 1.02)
ax.legend(loc="lower right", **LEGEND)  # below the curves at large batches
plt.show()

# %% [markdown] slideshow={"slide_type": "-"}
# **Figure 4.** The fraction of neurons whose weights a decode step must read when $B$ tokens
# share it, measured and as independent tokens would need, $1 - (1 - a/D_{\text{ff}})^B$. Both
# curves climb toward 1: contextual sparsity is a batch-1 saving, and by a few
# dozen tokens most neurons are needed by some token of the batch. The measured union sits *below* the
# independent prediction: tokens of real text share many active neurons (some neurons are on for
# almost every token), so a batch touches fewer than independent draws would; still, by
# $B = 64$ most neurons are needed.

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### Measured: a gathered FFN over the active rows
#
# `llmperf.measured.sparsity.GatheredFFN` computes $W_{\text{down}}[:, A]\,
# \operatorname{relu}(W_{\text{up}}[A]\, x)$ for an index set $A$: it copies the active rows of
# $W_{\text{up}}$ and multiplies them, and sums the active rows of $W_{\text{down}}^\top$ (stored
# transposed, as Deja Vu stores it) in place with `embedding_bag`. On the active set it equals
# the dense FFN exactly (tested). We time one token through one layer of the trained model at
# its own active set, and through a wider synthetic ReLU FFN ($D = 2048$, $D_{\text{ff}} = 8192$,
# random weights) with an active set of the same measured size. Two predictions, both dense
# bytes over sparse bytes: the oracle's, and the gathered FFN's own, which adds the copy of the
# active rows of $W_{\text{up}}$ (written once and read again:
# `llmperf.analytic.sparsity.gathered_ffn_cost`).

# %% slideshow={"slide_type": "-"}
x_token = trace.inputs[1][:1]
cases = [("trained ReLU, layer 2", relu.model.layers[1].feed_forward, x_token,
          trace.active(1)[0].nonzero().squeeze(1))]
wide = MLP(2048, 8192, "relu", bias=False).to(device).requires_grad_(False)
cases.append(("synthetic 2048 x 8192", wide, torch.randn(1, 2048, device=device),
              torch.randperm(8192, device=device)[:round(8192 * (1 - mean_sparsity))]
              .sort().values))
gather_rows, gather_rounds = [], {}
with watch_load() as machine, torch.inference_mode():
    for name, mlp, x, act in cases:
        cfg = lp.ModelConfig(name=name, n_layers=1, d_model=mlp.w1.in_features, n_heads=1,
                             d_ff=mlp.w1.out_features, vocab_size=1, ffn_kind="mlp",
                             activation="relu")
        s_here = 1 - len(act) / cfg.d_ff
        gathered = GatheredFFN(mlp)
        dense_s, sparse_s = [], []
        for _ in range(3):  # three rounds, the two in turn: a busy moment hits both
            dense_s.append(benchmark(lambda m=mlp, x=x: m(x), warmup=2, repeat=9,
                                     device=device).median_s)
            sparse_s.append(benchmark(lambda g=gathered, x=x, a=act: g(x, a), warmup=2,
                                      repeat=9, device=device).median_s)
        gains = [d / g for d, g in zip(dense_s, sparse_s)]
        gather_rounds[name] = gains
        dense_bytes = sparse_ffn_cost(cfg, 0.0, 1, "fp32").bytes
        gather_rows.append((name, s_here, with_range(dense_s), with_range(sparse_s),
                            dense_bytes / sparse_ffn_cost(cfg, s_here, 1, "fp32").bytes,
                            dense_bytes / gathered_ffn_cost(cfg, s_here, "fp32").bytes,
                            statistics.median(gains)))

# %% slideshow={"slide_type": "-"} tags=["nbval-ignore-output"]
display(lp.Table(["FFN", "sparsity", "dense, median of 3 rounds", "gathered", "predicted, oracle",
                  "predicted, with the copy", "measured speedup"],
                 [row[:6] + (with_range(gather_rounds[row[0]], "{:.2f}".format),)
                  for row in gather_rows],
                 formats={"sparsity": ".3f", "predicted, oracle": ".2f",
                          "predicted, with the copy": ".2f"}))
for name, _, _, _, oracle, with_copy, measured_gain in gather_rows:
    where = ("below both predictions" if measured_gain < with_copy
             else "between the two predictions" if measured_gain <= oracle
             else "above both predictions")
    print(f"{name}: measured {measured_gain:.2f}x, {where} "
          f"(with the copy {with_copy:.2f}x, oracle {oracle:.2f}x)")
print(machine.note())

# %% [markdown] slideshow={"slide_type": "-"}
# The two predictions bracket what the bytes allow. The oracle's is what the gather would
# gain if the copy cost nothing; the other is what it gains if every byte of the copy went to
# main memory: copying the active rows of $W_{\text{up}}$ reads them, writes them and reads
# them again, three times the oracle's traffic for that matrix. The printed lines place each
# measurement. Between the two predictions, the copy cost less than a round trip to memory (a
# copy that stays in cache does); below both, costs that no byte count sees outweigh part of
# the saving: the gather's extra operators, and scattered rows read less efficiently than a
# stream; above both, the gathered product came closer to its bytes' rate than the dense
# one did (its smaller working set may fit in a cache the whole matrix does not). The trained
# layer's two matrices are about a megabyte each in fp32, small enough for a processor's
# last-level cache, and its time is largely per-operator overhead (chapter 7), so expect its
# measured speedup to move most from one machine or run to another (compare the range of the
# rounds); the wider FFN's matrices, 64 MiB each, fit in no cache, so its time is closer to
# its bytes. Deja Vu's kernels read the selected rows in place, without the copy
# {cite:p}`liu2023dejavu`.

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### Predicting the active set
#
# The oracle is not available at run time: knowing which pre-activations are positive requires
# computing them, which is the cost of $W_{\text{up}}$ itself. Deja Vu trains a small predictor
# per layer with a low-rank bottleneck. Ours is fitted in closed form: the rank-$r$ map that
# best reproduces the layer's pre-activations on calibration text, $W_{\text{up}}^\top V_r V_r^\top$
# with $V_r$ the top right singular vectors of those pre-activations, costing $r(D +
# D_{\text{ff}})$ multiply-adds instead of $D \cdot D_{\text{ff}}$. A neuron is predicted active
# when its predicted pre-activation is positive. Recall is the fraction of the truly active
# neurons it finds; each miss is a neuron dropped from the product. Fitted on training text,
# judged on validation text:

# %% slideshow={"slide_type": "-"}
relu_loss = evaluate(relu.model, val, max_windows=SLICE).loss_nats
predictor_rows = []
for rank, predictors in fit_predictors(relu.model, calibration, (4, 8, 16, 32, 64)).items():
    quality = [prediction_quality(p.predict(x), trace.active(i))
               for i, (p, x) in enumerate(zip(predictors, trace.inputs))]
    with predicted_ffn(relu.model, predictors):
        loss = evaluate(relu.model, val, max_windows=SLICE).loss_nats
    predictor_rows.append((rank, rank * (relu.config.d_model + d_ff) / (relu.config.d_model * d_ff),
                           np.mean([q.recall for q in quality]),
                           np.mean([q.computed for q in quality]),
                           np.mean([q.true_active for q in quality]), loss, loss - relu_loss))

# %% slideshow={"slide_type": "-"} tags=["nbval-ignore-output"]
lp.Table(["rank r", "predictor cost / W_up", "recall", "neurons computed", "truly active",
          "loss (nats)", "loss - dense"], predictor_rows,
         formats={"predictor cost / W_up": ".3f", "recall": ".3f", "neurons computed": ".3f",
                  "truly active": ".3f", "loss (nats)": ".4f", "loss - dense": "+.4f"})

# %% [markdown] slideshow={"slide_type": "-"}
# Recall grows with the rank, and the loss follows it: at the lowest ranks the misses cost real
# loss, while a predictor of under a tenth of $W_{\text{up}}$'s work finds most active neurons
# and leaves the loss nearly unchanged: what it misses are mostly neurons barely above zero,
# which add little. A predictor is worth it when its cost plus the
# neurons it selects stays well below the dense FFN, which here holds at low ranks (on this
# small model the FFN is narrow, so the margin is thin). The wider the FFN, the smaller a
# predictor of a given rank is beside it: its cost $r(D + D_{\text{ff}})$ grows with the sum of
# the widths, the FFN's $D \cdot D_{\text{ff}}$ with their product.

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### Published figures beside ours
#
# Deja Vu {cite:p}`liu2023dejavu` reports contextual sparsity of about 85% on average on OPT
# models (attention heads and MLP neurons that can be skipped for a given input with the output
# nearly unchanged), and with its predictors and fused kernels more than 2 times lower latency
# than FasterTransformer (and more than 6 times lower than Hugging Face's implementation) on
# OPT-175B, without loss of quality. Figure 4 shows why such gains belong to small batches.
# Most recent models use SwiGLU, whose SiLU gate is negative but not zero below zero, so its
# activations are rarely exactly zero: exploiting contextual sparsity there means choosing a
# threshold (and accepting an approximation) or fine-tuning to ReLU.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 9.4 Skipping work: early exit
#
# A decode step runs every token through all $L$ layers. Some next tokens are obvious long
# before the last layer (a closing parenthesis, the rest of a keyword). *Early exit* reads a
# prediction after each layer, through the model's own final norm and LM head, and stops the
# token at the first layer whose top probability reaches a threshold $\tau$. CALM
# {cite:p}`schuster2022calm` trains models for it and bounds the quality it gives up; we apply
# the idea to the trained target as it is. `llmperf.measured.early_exit.layer_logits` reads every layer's
# output through forward hooks.

# %% slideshow={"slide_type": "-"}
wins = windows(val, 256, SLICE)
per_layer_logits = layer_logits(target.model, wins[:, :-1])
thresholds = [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99]
curve = early_exit_curve(per_layer_logits, wins[:, 1:], thresholds)

# %% slideshow={"slide_type": "-"} tags=["nbval-ignore-output"]
lp.Table(["threshold", "exit rate", "layers computed", "layers saved", "loss (nats)",
          "agrees with full depth"],
         [(p.threshold, p.exit_rate, p.mean_layers, p.layers_saved, p.loss_nats, p.agreement)
          for p in curve],
         formats={"exit rate": ".3f", "layers computed": ".3f", "layers saved": ".3f",
                  "loss (nats)": ".4f", "agrees with full depth": ".3f"})

# %% slideshow={"slide_type": "fragment"}
fig, (top, bottom) = plt.subplots(2, 1, figsize=(7.0, 7.0), sharex=True)
top.plot(thresholds, [p.exit_rate for p in curve], "o-", label="exit rate")
top.plot(thresholds, [p.layers_saved for p in curve], "s-", label="layer computations saved")
top.set_ylabel("fraction")
top.set_title("Early exit on the trained target")
top.legend(loc="upper right", **LEGEND)
bottom.plot(thresholds, [p.loss_nats for p in curve], "o-", color="C3")
bottom.axhline(curve[-1].loss_nats, color="gray", ls=":", label="full depth")
bottom.set_xlabel("confidence threshold (top probability)")
bottom.set_ylabel("validation loss (nats/token)")
bottom.set_title("The loss it costs")
bottom.legend(loc="upper right", **LEGEND)
fig.tight_layout()
plt.show()

# %% [markdown] slideshow={"slide_type": "-"}
# **Figure 5.** Top: the fraction of positions that exit before the last layer, and of layer
# computations skipped, against the threshold. Bottom: the loss when each position takes its
# exit layer's prediction. A low threshold exits often and pays in loss; a high one is nearly
# free and saves little. Four layers leave little room: each layer's prediction is a large
# share of the model's work, and the first layers' predictions are poor. The numbers are an
# upper bound on what early exit saves: later tokens here still see the keys and values every
# earlier token has at full depth, which a real early-exit decoder must supply for the layers
# it skipped (CALM copies the exiting hidden state upward).

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### Why batching makes skipping hard
#
# A batched decode step runs one layer for all $B$ tokens at once. It can stop only when every
# token has exited, so it runs the maximum of their exit layers, not the mean. If token exits
# follow a profile $p_l$ (the fraction leaving after layer $l$) with cumulative $F$, and tokens
# exit independently, a batch computes
#
# $$
# \mathbb{E}[\text{layers}] = \sum_{l=1}^{L} \bigl(1 - F(l-1)^B\bigr),
# $$
#
# which rises to $L$ quickly. `llmperf.analytic.sparsity.batch_expected_layers` computes it, here for
# the profile measured at threshold 0.7. Alone, the expected layers equal the measured mean
# (a check of the formula):

# %% slideshow={"slide_type": "-"}
point = next(p for p in curve if p.threshold == 0.7)
profile_rows = [(B, batch_expected_layers(point.exit_fractions, B)) for B in (1, 2, 8, 32)]

# %% slideshow={"slide_type": "-"} tags=["nbval-ignore-output"]
print(f"profile at threshold 0.7 (exit after layers 1..4): "
      f"{', '.join(f'{x:.3f}' for x in point.exit_fractions)}")
print(f"expected layers alone {expected_layers(point.exit_fractions):.3f}, "
      f"measured mean {point.mean_layers:.3f}")
lp.Table(["batch B", "expected layers the batch runs"], profile_rows,
         formats={"expected layers the batch runs": ".3f"})

# %% [markdown] slideshow={"slide_type": "-"}
# A handful of tokens in a batch is enough for one of them to need the last layer, and the
# saving is gone. Serving systems that batch (chapter 5) therefore get little from per-token
# exit unless they regroup tokens by depth, which breaks the one-step-for-all schedule and the
# {term}`KV cache`'s layout. Early exit also does not shorten the chain of sequential steps: token
# $t + 1$ still waits for token $t$.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 9.5 Which resource each optimization relieves
#
# Chapter 4 named the resources that bound a serving step: **compute** (FLOP/s),
# **bandwidth** (bytes per second from memory), **capacity** (bytes that must fit), and
# **communication** (bytes between devices); chapter 3 added the **sequential steps** of
# decoding, one token after another. Every optimization of chapters [6](06_memory.ipynb),
# [7](07_fusion.ipynb), [8](08_moe_and_speculative.ipynb) and this one relieves one or more of
# them, often by spending another.
#
# | chapter | optimization | relieves | how | communication (tensor or expert parallel, [chapter 10](10_beyond_one_device.ipynb)) | at what cost, or where it fades |
# |---|---|---|---|---|---|
# | 6 | paged KV allocation ({term}`PagedAttention`) | capacity | KV blocks reserved as tokens arrive, not for the longest possible answer | unchanged | block tables; preemption when blocks run out |
# | 6 | prefix sharing | capacity | requests sharing a prompt share its KV blocks | unchanged | copy on write |
# | 6 | {term}`grouped-query <GQA>` and multi-query attention | capacity, bandwidth | fewer KV heads: fewer KV bytes per token to hold and to read | unchanged: the all-reduces carry activations of width $D$, whatever the KV heads (`lp.tensor_parallel_bytes_per_token`) | a retrained model; some quality |
# | 6 | int8 KV cache | capacity, bandwidth | half the bytes per cached token | unchanged | attention error |
# | 6 | int8 / int4 weights ({term}`quantization`) | bandwidth, capacity | fewer bytes per weight for every decode step | unchanged: the activations exchanged stay 16-bit | quantization error; dequantizing costs compute |
# | 7 | {term}`operator fusion` | bandwidth | intermediates stay on chip; fewer kernel launches | unchanged | compile time |
# | 7 | {term}`FlashAttention` | bandwidth, capacity | $S$ and $P$ never written; memory linear in $N$ | unchanged | a tiled kernel per device; the same FLOPs |
# | 7 | split-K decoding | bandwidth | more pieces of work than SMs at small batch, so every SM reads the KV cache | none: the pieces are on one device | a final reduction across the pieces |
# | 8 | mixture of experts | compute (bandwidth at batch 1) | $k$ of $E$ experts per token | added: with the experts on different devices (expert parallelism), each MoE layer sends every token to its experts' devices and the results back, two all-to-all exchanges {cite:p}`lepikhin2021gshard` (`lp.collective_time("all_to_all", ...)`, chapter 10, section 10.5) | capacity (all experts held); bandwidth once a batch touches most experts |
# | 8 | speculative decoding | sequential steps | several tokens per target step | fewer per token: each target step's all-reduces serve its $\tau$ tokens, not one (plus the draft's own, if the draft is split too) | compute (drafts and rejected tokens); capacity (the draft's weights and its KV cache); fades under heavy batching |
# | 9 | unstructured pruning | capacity, only at high sparsity in a sparse format | fewer weights stored; at 50% in fp16 CSR, values and 16-bit column indices take as many bytes as the dense matrix | unchanged | no speed in dense kernels |
# | 9 | 2:4 sparsity | compute, some bandwidth | tensor cores at twice the peak math rate on compressed weights (a peak, not the achieved gain) | unchanged | hardware support; loss of the forced pattern |
# | 9 | structured pruning | compute, bandwidth, capacity | smaller dense matrices | unchanged per layer: $D$ is kept | more loss per parameter removed |
# | 9 | distillation | compute, bandwidth, capacity | a smaller model trained to imitate a larger one | fewer: fewer layers (fewer all-reduces), narrower ones if $D$ shrinks, none if the model fits on one device | a training run; quality of the smaller size |
# | 9 | contextual sparsity | bandwidth, compute | a token reads and multiplies only its active neurons | unchanged: the FFN's output still has width $D$ | predictor cost and misses; gone at large batch |
# | 9 | early exit | compute, bandwidth | fewer layers for confident tokens | fewer per token: a layer not run exchanges nothing | loss; missing KV of skipped layers; gone at large batch |
#
# Under tensor parallelism each layer exchanges its activations in two all-reduces (chapter 4;
# `lp.tensor_parallel_bytes_per_token` counts their bytes and `lp.collective_time` their time,
# chapter 10), whose size is set by the batch and $D$; most rows leave both unchanged. Three rows change
# the count per token: early exit and distillation run fewer layers, and speculation runs one
# target step for $\tau$ tokens. An MoE split over devices adds exchanges of its own. And every
# row that relieves capacity can remove communication altogether, when the model then fits on
# fewer devices.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Worked problems
#
# **Problem 1.** Prune the target (4 layers, $D = 256$, 4 heads of 64, SwiGLU $D_{\text{ff}} =
# 688$, vocabulary 104, untied head) to $D_{\text{ff}} = 344$ and 3 heads per layer. How many
# parameters remain, and how many bytes in fp16?
#
# <details><summary>Answer</summary>
#
# Per layer: attention $256 \cdot 3 \cdot 192 + 192 \cdot 256 = 196{,}608$; FFN $3 \cdot 256
# \cdot 344 = 264{,}192$; two norms $512$: $461{,}312$. Four layers: $1{,}845{,}248$; embedding
# and head $2 \cdot 104 \cdot 256 = 53{,}248$; final norm 256. Total $1{,}898{,}752$
# parameters, 59.0% of the target's 3,217,664; $3{,}797{,}504$ bytes in fp16.
#
# </details>
#
# **Problem 2.** OPT-13B (40 layers, $D = 5120$, ReLU FFN of $D_{\text{ff}} = 20480$) decodes
# one token in fp16 with 85% of its FFN neurons inactive. What fraction of the FFN matmuls'
# FLOPs does an oracle skip, and how many bytes does it not read?
#
# <details><summary>Answer</summary>
#
# $a = 0.15 \times 20480 = 3072$ neurons, so 85% of the FLOPs are skipped: $2 \cdot 2 \cdot 5120
# \cdot (20480 - 3072) \cdot 40 = 14.26$ GFLOP. Bytes not read: the weights of 17,408 neurons
# in two matrices, $2 \cdot 17408 \cdot 5120 \cdot 2 \cdot 40 = 14.26$ GB, plus 2.8 MB of
# skipped activations (the up projection's 17,408 outputs and the down projection's 17,408
# inputs in each layer): 14.26 GB of the 16.8 GB the FFN matmuls read.
#
# </details>
#
# **Problem 3.** Tokens exit a 4-layer model after layers 1, 2, 3, 4 with probabilities 0.3,
# 0.1, 0.1, 0.5. How many layers does one token run on average, and a batch of 8?
#
# <details><summary>Answer</summary>
#
# Alone: $0.3 + 2(0.1) + 3(0.1) + 4(0.5) = 2.8$ layers, 30% saved. A batch of 8:
# $\sum_l (1 - F(l-1)^8) = 1 + (1 - 0.3^8) + (1 - 0.4^8) + (1 - 0.5^8) = 3.9954$ layers:
# almost nothing saved.
#
# </details>
#
# **Problem 4.** A 4,096 by 4,096 fp16 weight matrix is pruned to 2:4 and stored compressed.
# How many bytes does it take, and how much faster can a sparse tensor core multiply it?
#
# <details><summary>Answer</summary>
#
# Half the values, $8{,}388{,}608 \times 2$ bytes, plus a 2-bit position for each, 2,097,152
# bytes: 18,874,368 bytes, 0.5625 of the dense 33,554,432. The peak math rate doubles, so a
# {term}`compute-bound <compute bound>` product runs at most twice as fast (the gain a kernel achieves is what to
# measure); in a memory-bound decode step the gain is the bytes' ratio instead,
# $1/0.5625 = 1.78$.
#
# </details>

# %% slideshow={"slide_type": "skip"} tags=["hide-cell"]
# The worked problems' answers, checked against llmperf.
size = pruned_size(target.config, 344, 3, dtype="fp16")
assert size.params_after == 1_898_752 and size.bytes_after == 3_797_504
assert round(size.param_ratio, 3) == 0.590
opt = lp.get_model("opt-13b")
sv = sparsity_savings(opt, 0.85, tokens=1, dtype="fp16")
assert abs(sv.flops_saved / sv.dense.flops - 0.85) < 1e-12
assert abs(sv.flops_saved - 14.26e9) < 0.01e9 and abs(sv.bytes_saved - 14.26e9) < 0.01e9
assert abs(sv.dense.bytes - 16.8e9) < 0.05e9
assert abs(expected_layers([0.3, 0.1, 0.1, 0.5]) - 2.8) < 1e-12
assert abs(batch_expected_layers([0.3, 0.1, 0.1, 0.5], 8) - 3.9954) < 1e-4
assert two_four_bytes(4096 * 4096, "fp16") == 18_874_368
# The closing table: 50% unstructured in fp16 CSR (2-byte values, 2-byte column indices, 4-byte
# row pointers) is no smaller than dense; at 75% it is about half.
_csr = lambda s, n=4096: round((1 - s) * n * n) * (2 + 2) + (n + 1) * 4  # noqa: E731
assert _csr(0.5) >= 4096 * 4096 * 2 and _csr(0.75) < 0.51 * 4096 * 4096 * 2
# The prose's figures: the students' size, the manifest's gaps, Figure 4's union.
assert round(info["target"]["params"] / info["student"]["params"], 1) == 5.2
gap = info["student"]["val_loss_nats"] - info["student-distilled"]["val_loss_nats"]
greedy = [info[n]["agreement_with_target"]["greedy"] for n in ("student", "student-distilled")]
assert 0.05 < gap < 0.15 and 0.01 < greedy[1] - greedy[0] < 0.03
assert all(m < p for m, p in zip(union_measured[1:], union_predicted[1:]))
assert union_measured[batches.index(64)] > 0.5
assert abs(expected_layers(point.exit_fractions) - point.mean_layers) < 1e-6
# Figure 1's caption: Wanda below magnitude through the climb (50 to 80%); the 2:4 pattern
# costs more loss than 50% chosen freely.
_at = {s: i for i, s in enumerate(sparsities)}
assert all(unstructured["wanda"][_at[s]] < unstructured["magnitude"][_at[s]]
           for s in (0.5, 0.6, 0.7, 0.8))
assert all(two_four[m] > unstructured[m][_at[0.5]] for m in ("magnitude", "wanda"))
# Figure 2's caption: at the same count of kept weights structured FFN pruning loses more than
# Wanda, and a head costs far more loss per parameter removed than FFN neurons do.
_order = np.argsort(nonzero)
_kept, _wanda = np.array(nonzero)[_order], np.array(unstructured["wanda"])[_order]
assert all(loss > np.interp(p, _kept, _wanda) for d, h, p, loss in structured if h == 4 and d < 688)
_by = {(d, h): (p, loss) for d, h, p, loss in structured}
_cost = {k: (_by[k][1] - dense_loss) / (target.model.num_parameters() - _by[k][0])
         for k in ((688, 3), (516, 4))}
assert _cost[688, 3] > 10 * _cost[516, 4]
# Section 9.2: over the live steps the KL term falls; the distilled student's is the lower on
# the slice.
assert steps_log[-1][2] < steps_log[0][2]
_kl = {row[0]: row[6] for row in slice_rows}
assert _kl["student-distilled"] < _kl["student"]
# Figure 3's caption: most neurons off in every layer, more so in the middle two.
_means = [float(x.mean()) for x in per_layer]
assert min(_means) > 0.5 and min(_means[1:3]) > max(_means[0], _means[3])
# The predictors: recall grows with the rank; the lowest rank costs real loss; a predictor of
# under a tenth of W_up's work finds most active neurons and leaves the loss nearly unchanged.
assert all(b[2] > a[2] for a, b in zip(predictor_rows, predictor_rows[1:]))
assert predictor_rows[0][6] > 0.1
assert any(c < 0.1 and recall > 0.8 and dl < 0.02 for _, c, recall, _, _, _, dl in predictor_rows)
# Figure 5's caption: a low threshold exits often and pays in loss, a high one saves little;
# and a batch of 8 runs nearly every layer.
assert all(b.exit_rate <= a.exit_rate for a, b in zip(curve, curve[1:]))
assert curve[0].loss_nats > curve[-1].loss_nats + 0.5 and curve[-1].layers_saved < 0.01
assert dict(profile_rows)[8] > 3.95

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Summary
#
# - Unstructured pruning removes the weights that matter least, and Wanda's activation-aware
#   score keeps loss lower than magnitude alone; but zeros inside dense tensors change no FLOP
#   and no byte, so they buy no speed. The 2:4 pattern is the sparsity hardware can use: twice
#   the peak math rate on sparse tensor cores (an upper bound on the gain), 0.5625 of the bytes
#   in fp16.
# - Structured pruning (whole neurons, whole heads) builds a smaller dense model whose every
#   kernel is faster, at a higher cost in loss per parameter; heads are the most expensive to
#   remove.
# - Distillation trains a small model on the teacher's softened distribution,
#   $T^2\,\mathrm{KL}(p_T \Vert q_T)$: at equal size it beats the same model trained on the
#   corpus alone, in loss and in agreement with the teacher.
# - A ReLU FFN is mostly zero for any given token. An oracle skipping the zeros saves FLOPs and
#   bytes in proportion at batch 1; in a batch the union of active sets approaches all neurons.
#   A low-rank predictor finds most active neurons cheaply; kernels must gather without copying
#   to turn that into time.
# - Early exit saves layers for confident tokens at a cost in loss, but a batch runs until its
#   slowest token exits, which erases the saving at modest batch sizes.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Exercises
#
# {doc}`Exercise set 9 </exercises/09_smaller_and_sparser>`: parameters and bytes after structured pruning, the
# FLOPs and bytes an oracle saves at a given activation sparsity, a magnitude-pruning mask
# written by hand, and the expected layers under an exit profile, alone and in a batch.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## References
#
# ```{bibliography}
# :filter: docname in docnames
# ```
