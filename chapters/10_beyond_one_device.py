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
# # Chapter 10: Beyond one device: parallelism and serving at cluster scale
#
# Every experiment so far ran inside one process on one device. A 70-billion-parameter model's
# 16-bit weights (140 GB) fit no 80 GB GPU and leave little room for the KV cache on the
# largest, a 13-billion one's (26 GB) leave little on most, and the serving designs of the last
# two years (replicas behind a router that knows their caches, prefill and decode on separate
# machines, experts spread over GPUs) are all about what crosses a link between devices. This
# chapter makes the book's habit, derive then measure, hold across a process boundary. The
# derivations are `llmperf`'s: collectives under the $\alpha$–$\beta$ model, the bytes and
# times of each parallel layout, and a simulator of many instances. The measurements use a real
# distributed engine, PyTorch's `torch.distributed` {cite:p}`pytorch_distributed` (gloo between
# processes on a CPU, NCCL between GPUs), with the processes launched from this notebook.
#
# :::{admonition} After this chapter you will be able to
# :class: tip
#
# - time an {term}`all-reduce`, all-gather, reduce-scatter, all-to-all or send of $m$ bytes
#   over $p$ devices with the $\alpha$–$\beta$ model, fit $\alpha$ and $\beta_\ell$ to
#   measured times, and say whether a message is latency- or bandwidth-bound;
# - split a transformer Megatron-style ({term}`tensor parallelism`), count the bytes each
#   device sends per token, and predict the decode step on $p$ devices, compute and
#   communication apart;
# - say at what model size and on which link tensor parallelism starts to pay, and why it does
#   not on a laptop;
# - compute the bubble of a {term}`pipeline <pipeline parallelism>` schedule, and the
#   all-to-all traffic of {term}`expert parallelism`;
# - choose a layout that fits Llama 2 70B or Mixtral on 2, 4 or 8 GPUs, by memory, latency
#   and throughput per GPU;
# - compare routers of a replicated service, draw the timeline of {term}`disaggregated serving`
#   by hand, and compare {term}`goodput` per GPU of colocated and disaggregated serving, and
#   the cost per million tokens.
# :::
#
# Notation follows chapters 4 and 5. New here:
#
# | symbol | meaning | unit |
# |---|---|---|
# | $p$ | devices (processes, ranks) a model or a collective spans; stages of a pipeline | – |
# | $m$ | bytes of the whole tensor a collective works on | bytes |
# | $\alpha$ | latency of one message on a link, whatever its size | s |
# | $\beta_\ell$ | one-way bandwidth of a link (half the both-ways figure datasheets print) | B/s |
# | $M$ | micro-batches of a pipeline | – |
#
# The measured parts start two processes on this machine and exchange tensors between them
# (gloo over TCP on the loopback device; NCCL where two GPUs are present). The simulated and
# analytic parts print the same numbers on every machine.

# %% slideshow={"slide_type": "-"}
import dataclasses

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import display

import llmperf as lp
from llmperf import serving as sv
from llmperf.analytic import batching as bt
from llmperf.measured.collectives import measure_collectives
from llmperf.measured.expert_parallel import run_expert_parallel
from llmperf.measured.generate import generate
from llmperf.measured.load import watch_load
from llmperf.measured.measure import benchmark, measure_host
from llmperf.measured.model import Transformer
from llmperf.measured.pipeline_parallel import run_pipeline_parallel
from llmperf.measured.tensor_parallel import run_tensor_parallel
from llmperf.plots import legend_below, new_axes, use_style
from llmperf.serving.cluster import simulate_cluster
from llmperf.serving.disaggregated import kv_transfer, simulate_disaggregated
from llmperf.trained import load as load_trained

use_style()
torch.manual_seed(0)
LEGEND = dict(fontsize="medium")  # legends as large as the axis labels
BACKEND = "nccl" if torch.cuda.device_count() >= 2 else "gloo"
torch.set_num_threads(1)  # one core for each process: one process, or each of two
WORLD = 2  # the measured runs use two processes: a laptop has few cores


def ms(seconds):
    return f"{seconds * 1e3:.3f} ms"


# %% [markdown] slideshow={"slide_type": "slide"}
# ## 10.1 Collectives, derived and measured
#
# When a computation spans $p$ devices, they exchange tensors in a few standard patterns
# called *collectives*. An **{term}`all-reduce`** leaves every device with the sum of
# everyone's tensor; an **all-gather** leaves every device with the concatenation of
# everyone's piece; a **reduce-scatter** leaves each device with one $1/p$ piece of the sum;
# an **all-to-all** sends a different piece from every device to every other; a **send**
# moves a tensor from one device to another.
#
# The *$\alpha$–$\beta$ model* prices one message of $n$ bytes over a link at
# $\alpha + n/\beta_\ell$: a fixed latency $\alpha$ (software, the adapter, the switch) plus
# the bytes over the one-way bandwidth $\beta_\ell$. The ring algorithms run the collectives in
# steps in which every device sends one piece to its neighbour while receiving another
# {cite:p}`thakur2005collectives,patarasuk2009allreduce`. With $m$ the whole tensor (what each
# device holds before an all-reduce, or after an all-gather):
#
# | collective | steps | bytes per step | time |
# |---|---|---|---|
# | all-reduce | $2(p-1)$ | $m/p$ | $2(p-1)\,(\alpha + m/(p\beta_\ell))$ |
# | all-gather, reduce-scatter | $p-1$ | $m/p$ | $(p-1)\,(\alpha + m/(p\beta_\ell))$ |
# | all-to-all (one peer at a time) | $p-1$ | $m/p$ | $(p-1)\,(\alpha + m/(p\beta_\ell))$ |
# | send | 1 | $m$ | $\alpha + m/\beta_\ell$ |
#
# An all-reduce is a reduce-scatter followed by an all-gather, hence twice their steps; and
# $p = 1$ costs nothing. `lp.collective_time(op, m, p, link)` computes the last column on a
# catalog `Link` (bandwidth both ways as datasheets print it, and $\alpha$). The catalog's
# latencies are NCCL's own modelling constants, not measurements: 0.6 µs a step over NVLink,
# 1.0 µs over PCIe, 2.7 µs over the network, and NCCL adds a few microseconds per call that
# the model leaves out {cite:p}`nccl_tuning`.
#
# The latency term and the bandwidth term of an all-reduce are equal at $m^\ast = p\,\alpha\,
# \beta_\ell$. Tensor parallelism all-reduces one activation of $D$ values per token in flight
# (chapter 4, section 4.7): 16 KiB for one {term}`decode` token of Llama 2 70B in fp16, 64 MiB
# for a 4,096-token {term}`prefill`. Where do they fall?

# %% slideshow={"slide_type": "-"}
llama70 = lp.get_model("llama-2-70b")
messages = {"decode, 1 token": 1 * llama70.d_model * 2, "prefill, 4,096 tokens": 4096 * llama70.d_model * 2}
catalog_links = [lp.get_link(name) for name in ("NVLink 4", "PCIe Gen4", "NDR")]
p = 8
rows = []
for link in catalog_links:
    crossover = p * link.latency_s * link.one_way  # m* = p alpha beta
    for label, m in messages.items():
        total = lp.collective_time("all_reduce", m, p, link)
        latency = lp.collective_steps("all_reduce", p) * link.latency_s
        rows.append((link.name, lp.format_bytes(crossover, binary=True), label,
                     lp.format_bytes(m, binary=True), total, latency / total))
lp.Table(["link", "m* = p alpha beta", "message", "m", "all-reduce over 8", "latency share"],
         rows, title="One all-reduce of Llama 2 70B's activation, p = 8, alpha-beta model",
         formats={"all-reduce over 8": lp.format_seconds, "latency share": ".0%"})

# %% [markdown] slideshow={"slide_type": "-"}
# **A decode token's all-reduce is latency-bound on every link, a long prefill's is
# bandwidth-bound.** Decode makes $2L = 160$ such all-reduces per token, so its communication
# cost is about $160 \cdot 2(p-1)\alpha$: the number of messages, not their bytes.

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### Measured: collectives between two processes on this machine
#
# `llmperf.measured.collectives.measure_collectives` starts a group of processes with
# `torch.distributed`, and times each collective at each message size from 4 B to 64 MiB
# (powers of 4): a barrier, then the call; a call lasts as long as its slowest process, and a
# row keeps the median of the repeats. `lp.fit_alpha_beta` then finds the $\alpha$ and
# $\beta_\ell$ that fit those times best, in relative error, so that the 4-byte messages
# weigh as much as the 64 MiB ones.
#
# *Predict first.* Two processes on one machine talk through the operating system's loopback
# TCP: each message crosses the kernel's network stack and is copied through memory twice. Expect
# an $\alpha$ of tens of microseconds or more, hundreds of times NCCL's over NVLink, and a
# $\beta_\ell$ of a few GB/s, below the machine's memory bandwidth. Look, in the figure, for
# the flat part on the left (latency) and the rising part on the right (bandwidth), and for
# where the knee falls.

# %% slideshow={"slide_type": "-"} tags=["nbval-ignore-output"]
SIZES = tuple(4 ** k for k in range(1, 14))  # 4 B .. 64 MiB
OPS = ("all_reduce", "all_gather", "all_to_all")
with watch_load() as load:
    timings = measure_collectives(OPS, world_size=WORLD, sizes_bytes=SIZES, repeats=7, warmup=1,
                                  backend=BACKEND)
measured = {op: [t for t in timings if t.op == op] for op in OPS}
fitted = {op: lp.fit_alpha_beta([t.message_bytes for t in rows], [t.median_s for t in rows], op,
                                WORLD, name=f"{BACKEND}, fitted to {op}")
          for op, rows in measured.items()}
local_link = fitted["all_reduce"]  # the link of this machine, as the all-reduces see it
display(lp.Table(["collective", "alpha (latency)", "beta (one way)", "m* = p alpha beta",
                  "smallest, measured", "at", "64 MiB, measured"],
                 [(op, link.latency_s, link.one_way,
                   lp.format_bytes(WORLD * link.latency_s * link.one_way, binary=True),
                   measured[op][0].median_s, lp.format_bytes(measured[op][0].message_bytes),
                   measured[op][-1].median_s)
                  for op, link in fitted.items()],
                 title=f"Collectives over {WORLD} processes ({BACKEND}), medians of 7",
                 formats={"alpha (latency)": lp.format_seconds, "beta (one way)": lp.format_bandwidth,
                          "smallest, measured": lp.format_seconds,
                          "64 MiB, measured": lp.format_seconds}))
nvlink = lp.get_link("NVLink 4")
print(f"fitted all-reduce alpha: {local_link.latency_s / nvlink.latency_s:,.0f} times NCCL's "
      f"NVLink 4 figure; beta: {nvlink.one_way / local_link.one_way:,.0f} times lower")
print(load.note())

# %% slideshow={"slide_type": "fragment"}
ax = new_axes(f"Collectives over {WORLD} processes: measured, fitted, and catalog links",
              "message m (bytes, the whole tensor)", "time (s)")
sizes = np.logspace(np.log10(4), np.log10(64 * 2**20), 60)
for i, op in enumerate(OPS):
    ax.plot([t.message_bytes for t in measured[op]], [t.median_s for t in measured[op]], "o",
            color=f"C{i}", label=f"{op}, measured ({BACKEND})")
    ax.plot(sizes, [lp.collective_time(op, s, WORLD, fitted[op]) for s in sizes], "-",
            color=f"C{i}", lw=1, label=f"{op}, alpha-beta fit")
for link, style in zip(catalog_links, (":", "--", "-.")):
    ax.plot(sizes, [lp.collective_time("all_reduce", s, WORLD, link) for s in sizes], style,
            color="gray", label=f"all_reduce, {link.name}")
ax.set(xscale="log", yscale="log")
legend_below(ax)
plt.show()

# %% [markdown] slideshow={"slide_type": "-"}
# **Figure 1.** Time of three collectives over two processes against the size of the tensor,
# measured (dots) and fitted by the $\alpha$–$\beta$ model (lines), with the same model's
# all-reduce on three catalog links (gray). Each curve is flat while $\alpha$ dominates and
# climbs with slope one once the bytes do; the knee sits near $m^\ast$ of the table above.
# The catalog links sit orders of magnitude below the loopback in both regimes: their
# latency is microseconds, their bandwidth tens to hundreds of GB/s each way. Where the dots
# leave the fitted line at the small sizes, the fixed cost of a gloo call (a few system calls,
# waking the peer) is not one per step, as the model assumes; where they leave it at the large
# sizes, the copy through the kernel competes with the machine's other memory traffic.

# %% slideshow={"slide_type": "skip"} tags=["hide-cell"]
# The prose's numbers: m* per link, latency- and bandwidth-bound messages, 160 all-reduces.
assert rows[0][2] == "decode, 1 token" and messages["decode, 1 token"] == 16 * 1024
assert messages["prefill, 4,096 tokens"] == 64 * 2**20
for link in catalog_links:
    m_star = p * link.latency_s * link.one_way
    assert messages["decode, 1 token"] < m_star < messages["prefill, 4,096 tokens"]
assert 2 * llama70.n_layers == 160
assert all(m[-1].median_s > m[0].median_s for m in measured.values())  # 64 MiB takes longer

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 10.2 Tensor parallelism, run for real
#
# Megatron-LM's split {cite:p}`shoeybi2019megatron` gives each of $p$ devices whole attention
# heads (its columns of $W_Q$, $W_K$, $W_V$ and its rows of $W_O$) and $1/p$ of the FFN's
# hidden units (columns of the gate and up matrices, rows of the down matrix). Each device then
# computes a partial sum of the attention output and of the FFN output, and two all-reduces per
# layer add them up. With {term}`grouped-query attention <GQA>`, the key/value heads are split
# too when $p$ divides their number; when there are fewer KV heads than devices, the devices
# whose query heads share a KV head each hold a copy of it. The norms, embedding and head are
# repeated on every device.
#
# `llmperf.measured.tensor_parallel.run_tensor_parallel(model, p, prompt, new_tokens)` does
# this to a reference `Transformer` over $p$ processes: each builds its shard from the full
# weights, runs the model's own forward pass with an all-reduce after each row-split matrix, and
# decodes greedily. Its tokens must equal one process's, and the time of each decode step is
# split into the part spent inside the all-reduces and the rest.
#
# *Predict first.* One process on one core does the whole step; two processes each do half
# the matrix work on a core of their own, then meet $2L$ times per step. The prediction for two
# processes is half the measured one-process step plus $2L$ all-reduces of $D$ fp32 values on
# the link fitted in section 10.1:
#
# $$
# t_2 \approx \frac{t_1}{2} + 2L \cdot 2(p-1)\left(\alpha + \frac{4D}{p\,\beta_\ell}\right).
# $$
#
# Three models: the trained target of chapters 8 and 9 (4 layers, $D = 256$), and the
# reference configurations `ref-small` ($D = 512$) and `ref-medium` ($D = 1024$, 8 layers)
# with random weights (greedy tokens are as deterministic with random weights as with trained
# ones).

# %% slideshow={"slide_type": "-"} tags=["nbval-ignore-output"]
target = load_trained("target").model
tp_models = {"trained target": target,
             "ref-small": Transformer("ref-small", max_seq_len=64, seed=0),
             "ref-medium": Transformer("ref-medium", max_seq_len=64, seed=0)}
TP_NEW = 10  # tokens generated; the first comes from the prefill
tp_runs, tp_equal = {}, {}
with watch_load() as load:
    for name, model in tp_models.items():
        prompt = torch.randint(0, model.config.vocab_size, (1, 32),
                               generator=torch.Generator().manual_seed(0))
        single = generate(model, prompt, TP_NEW).tokens
        for world in (1, WORLD):
            run = run_tensor_parallel(model, world, prompt, TP_NEW, threads=1, backend=BACKEND)
            tp_runs[name, world] = run
            tp_equal[name, world] = torch.equal(run.tokens.cpu(), single)


def predicted_tp_step(name, world, link=local_link):
    """Half the measured one-process step, plus 2L all-reduces of one token's activation."""
    cfg, one = tp_models[name].config, tp_runs[name, 1].decode.step_s
    message = cfg.d_model * tp_models[name].dtype.itemsize
    communication = 2 * cfg.n_layers * lp.collective_time("all_reduce", message, world, link)
    return one / world, communication


tp_rows = []
for (name, world), run in tp_runs.items():
    compute_pred, comm_pred = predicted_tp_step(name, world)
    tp_rows.append((name, tp_models[name].num_parameters(), world, tp_equal[name, world],
                    run.decode.step_s, run.decode.communication_s, run.decode.compute_s,
                    compute_pred + comm_pred, comm_pred))
display(lp.Table(["model", "parameters", "p", "tokens equal", "step, measured",
                  "all-reduces", "the rest", "step, predicted", "all-reduces, predicted"],
                 tp_rows, title=f"Decode step (medians over {TP_NEW - 1} steps), {BACKEND}, "
                                "one core per process",
                 formats={"parameters": ",", "step, measured": ms, "all-reduces": ms,
                          "the rest": ms, "step, predicted": ms, "all-reduces, predicted": ms}))
for name in tp_models:
    one, two = tp_runs[name, 1].decode.step_s, tp_runs[name, WORLD].decode.step_s
    verdict = "faster" if two < one else "slower"
    print(f"{name}: {WORLD} processes {one / two:.2f}x the speed of one ({verdict}); "
          f"all-reduces {tp_runs[name, WORLD].decode.communication_s / two:.0%} of the step")
print(load.note())

# %% slideshow={"slide_type": "fragment"}
fig, axes = plt.subplots(1, len(tp_models), figsize=(8, 3.8))
for k, (ax, name) in enumerate(zip(axes, tp_models)):
    base = tp_runs[name, 1].decode.step_s
    compute_pred, comm_pred = predicted_tp_step(name, WORLD)
    bars = [("1 process", tp_runs[name, 1].decode.compute_s, 0.0),
            (f"{WORLD},\nmeasured", tp_runs[name, WORLD].decode.compute_s,
             tp_runs[name, WORLD].decode.communication_s),
            (f"{WORLD},\npredicted", compute_pred, comm_pred)]
    x = np.arange(len(bars))
    compute = [c / base for _, c, _ in bars]
    ax.bar(x, compute, color="C0", label="compute and the rest" if k == 0 else None)
    ax.bar(x, [c / base for _, _, c in bars], bottom=compute, color="C3",
           label="inside all-reduces" if k == 0 else None)
    ax.axhline(1.0, color="gray", lw=1, ls=":")
    ax.axhline(1 / WORLD, color="gray", lw=1, ls="--", label=f"1/{WORLD}: perfect split" if k == 0 else None)
    ax.set_xticks(x, [label for label, _, _ in bars], fontsize="small")
    ax.set_title(name)
axes[0].set_ylabel("decode step / one-process step")
fig.suptitle(f"Tensor-parallel decode on this machine: {WORLD} processes against one")
legend_below(axes[0], ncol=3)
plt.show()

# %% [markdown] slideshow={"slide_type": "-"}
# **Figure 2.** Each model's decode step on one process, on two measured, and on two
# predicted, as a share of the one-process step; the red part is the time inside
# all-reduces. A perfect split would halve the step (dashed line). What to look for: where the
# red part alone is taller than the one-process bar, the all-reduces cost more than the whole
# step they split, and two processes are slower whatever the split saves; as $D$ and a layer's
# work grow, the blue part halves while the all-reduces, set by $\alpha$ and the number of
# layers, barely change, so the two-process bars fall toward the dashed line, and below the
# dotted one once the split pays. Measured all-reduces usually exceed the prediction:
# gloo returns from a call only when the slower process has joined it, so any imbalance
# between the two processes (one descheduled for a moment by the machine's other work) counts
# as communication. The printed lines say which models ran faster on two processes here.
#
# :::{important}
# On a laptop, tensor parallelism makes small models slower: each layer pays two round trips
# through the operating system, tens of microseconds or more, to save a fraction of a
# millisecond of arithmetic. It pays when a layer's work split in $p$ saves more than its two
# all-reduces cost.
# :::

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### At what model size does tensor parallelism pay?
#
# `lp.tensor_parallel_decode(model, accelerator, link, tp, batch, seq_len)` answers it for any
# catalog model on any accelerator and link: each device's share of the step on the
# accelerator's roofline (the norms and residual adds repeated on every device, the KV reads
# at the device's share of the KV heads), plus $2L$ all-reduces of the batch's activation on
# the link, with no overlap. The ratio $t_2/t_1$ of the step on two devices to the step on one
# says whether two devices cut the per-token latency: below 1 they do, at 0.5 perfectly. For
# this machine, the accelerator is one core (measured with `measure_host`, one thread) and the
# link is the one fitted to the all-reduces above; the crosses are the measured ratios.

# %% slideshow={"slide_type": "-"} tags=["nbval-ignore-output"]
with watch_load() as load:
    core = measure_host(dtypes=("fp32",), quick=True, progress=False)  # one thread: one core
print(f"one core of this machine: {lp.format_flop_rate(core.peak('fp32'))} fp32, "
      f"{lp.format_bandwidth(core.mem_bandwidth)}")
print(load.note())

# %% slideshow={"slide_type": "-"}
ladder = ["ref-tiny", "ref-small", "ref-medium", "gpt2-medium", "gpt2-large", "llama-2-7b",
          "llama-2-13b", "llama-2-70b"]
gpu_pairs = {"H100 SXM, NVLink 4": ("H100 SXM", "NVLink 4", "fp16"),
             "A10, PCIe Gen4": ("A10", "PCIe Gen4", "fp16"),
             "H100 SXM, InfiniBand NDR (two servers)": ("H100 SXM", "NDR", "fp16")}


def tp_ratio(model, accelerator, link, dtype, world=2, seq_len=512):
    """Decode step at batch 1 on `world` devices over the step on one."""
    split = lp.tensor_parallel_decode(model, accelerator, link, world, 1, seq_len, dtype)
    whole = lp.tensor_parallel_decode(model, accelerator, link, 1, 1, seq_len, dtype)
    return split.step_s / whole.step_s


params = [lp.get_model(n).param_count() for n in ladder]
ratios = {label: [tp_ratio(n, *pair) for n in ladder] for label, pair in gpu_pairs.items()}


def crossing(r):
    """Parameters where a ratio curve first drops below 1, interpolated on log scales."""
    i = next(k for k, v in enumerate(r) if v < 1)
    f = np.log(r[i - 1]) / (np.log(r[i - 1]) - np.log(r[i]))
    return float(np.exp(np.log(params[i - 1]) + f * (np.log(params[i]) - np.log(params[i - 1]))))


display(lp.Table(["model", "parameters"] + list(gpu_pairs),
                 [(n, P, *(ratios[label][i] for label in gpu_pairs))
                  for i, (n, P) in enumerate(zip(ladder, params))],
                 title="t2 / t1: decode step (batch 1, 512 cached tokens) on 2 GPUs over 1 GPU",
                 formats={"parameters": ",", **{label: ".3f" for label in gpu_pairs}}))
for label, r in ratios.items():
    print(f"{label}: two GPUs beat one from about {crossing(r) / 1e6:,.0f} M parameters")

# %% slideshow={"slide_type": "fragment"} tags=["nbval-ignore-output"]
here = [tp_ratio(n, core, local_link, "fp32") for n in ladder]
print(f"this machine (model): two processes beat one from about {crossing(here) / 1e6:,.0f} M "
      "parameters" if min(here) < 1 else "this machine (model): two processes never beat one here")
ax = new_axes("Where two devices beat one: decode step on 2 over the step on 1",
              "parameters", "t2 / t1 (below 1: tensor parallelism pays)")
for i, (label, r) in enumerate(ratios.items()):
    ax.plot(params, r, "o-", color=f"C{i}", label=label)
ax.plot(params, here, "s--", color="C3", label=f"this machine, one core each, {BACKEND} (model)")
ax.plot([m.num_parameters() for m in tp_models.values()],
        [tp_runs[n, WORLD].decode.step_s / tp_runs[n, 1].decode.step_s for n in tp_models],
        "X", ms=11, color="C3", label="this machine, measured")
ax.axhline(1.0, color="gray", ls=":", lw=1)
ax.axhline(0.5, color="gray", ls="--", lw=1)
ax.set(xscale="log", yscale="log")
legend_below(ax)
plt.show()

# %% [markdown] slideshow={"slide_type": "-"}
# **Figure 3.** The ratio of the decode step on two devices to the step on one, against the
# model's size, from the roofline and the $\alpha$–$\beta$ model, for catalog GPUs and for this
# machine; crosses are this machine's measured ratios. Every curve starts above 1, where the
# all-reduces cost more than half a step, and falls toward 0.5 as the model grows. Where a
# curve crosses 1 depends on the link's latency *relative to the device's step*: the slow A10
# hides PCIe's microsecond latencies behind a long step and crosses first; the fast H100 over
# NVLink crosses later; the same H100s in two servers, over InfiniBand's longer latency, need a
# model of billions of parameters (the printed lines give each crossing, this machine's
# included). The model of this machine is a lower bound on both terms; where the measured
# crosses sit above it: on a small model a step is mostly per-operator overhead
# (chapter 7) that does not shrink when the matrices do, and gloo's calls cost more than one
# $\alpha$ each when a process waits for its peer.

# %% slideshow={"slide_type": "skip"} tags=["hide-cell"]
# Figure 3's caption: every GPU curve starts above 1 and falls toward 0.5; A10 over PCIe crosses
# first, H100 over NVLink next, two H100 servers over InfiniBand last, at billions.
for r in ratios.values():
    assert r[0] > 1 and r[-1] < 0.6 and r[-1] == min(r)
_cross = {label: crossing(r) for label, r in ratios.items()}
assert (_cross["A10, PCIe Gen4"] < _cross["H100 SXM, NVLink 4"]
        < _cross["H100 SXM, InfiniBand NDR (two servers)"])
assert _cross["H100 SXM, InfiniBand NDR (two servers)"] > 1e9
assert 1e7 < _cross["H100 SXM, NVLink 4"] < 1e8

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 10.3 Which layout serves Llama 2 70B or Mixtral
#
# Llama 2 70B takes 138 GB in fp16 and Mixtral 8x7B 93 GB: neither fits one 80 GB GPU. On $p$
# GPUs under tensor parallelism, each holds $1/p$ of the weights and its share of the
# {term}`KV cache`; `tensor_parallel_decode` reports, for a decode step: whether a batch fits
# beside the weights (`max_batch` at 4,096 cached tokens each), the per-token latency at
# batch 1, the share of it spent in all-reduces, and the throughput per GPU at a batch of 64
# (or the most that fits). Mixtral's step counts the experts its tokens touch
# ({term}`MoE`, chapter 8): at batch 1 two of eight per layer, at batch 64 nearly all.

# %% slideshow={"slide_type": "-"}
layouts = [("H100 SXM", "NVLink 4"), ("A100 SXM 80GB", "NVLink 3"), ("L40S", "PCIe Gen4")]
layout_rows = []
for name in ("llama-2-70b", "mixtral-8x7b"):
    for acc, link in layouts:
        for tp in (2, 4, 8):
            one = lp.tensor_parallel_decode(name, acc, link, tp, batch=1, seq_len=4096)
            if one.max_batch == 0:
                layout_rows.append((name, acc, tp, lp.format_bytes(one.weight_bytes_per_gpu),
                                    0, "does not fit", "", ""))
                continue
            full = lp.tensor_parallel_decode(name, acc, link, tp, batch=min(64, one.max_batch),
                                             seq_len=4096)
            layout_rows.append((name, acc, tp, lp.format_bytes(one.weight_bytes_per_gpu),
                                one.max_batch, ms(one.step_s), f"{one.communication_share:.0%}",
                                f"{full.tokens_per_s_per_gpu:,.0f} at B = {full.batch}"))
lp.Table(["model", "GPU", "p", "weights per GPU", "max batch, 4,096 tokens",
          "latency per token, B = 1", "all-reduce share", "tokens/s per GPU"], layout_rows,
         title="Tensor-parallel decode (fp16), 4,096 cached tokens per sequence")

# %% [markdown] slideshow={"slide_type": "-"}
# Read the table by its three questions. *Memory*: on two GPUs of 80 GB Llama 2 70B fits
# with room for a modest batch; on 48 GB L40S cards it needs four. *Latency*: each doubling of
# $p$ nearly halves the per-token latency over NVLink, while the all-reduces' share grows; over
# PCIe it grows faster. *Throughput per GPU*: at the same batch, more GPUs buy latency, not
# efficiency: each GPU reads a smaller slice of the weights per step while the all-reduces do
# not shrink, so tokens per second per GPU fall from $p = 4$ to $p = 8$. Memory comes first,
# though: on $p = 2$ only a small batch fits beside the weights, and that group has the lowest
# throughput per GPU of the three. Mixtral reads only its active experts at batch 1, so its
# latency is a fraction of Llama 2 70B's; at batch 64 its tokens touch most of the experts,
# and its lead in throughput per GPU is much smaller than its lead in latency.
#
# *The other layouts.* Pipeline parallelism (section 10.4) splits the layers instead: a token
# still runs every layer one after another, so its latency is about the whole model's step on
# one GPU, plus a send per stage boundary, and more GPUs buy throughput (more micro-batches in
# flight), not latency:

# %% slideshow={"slide_type": "-"}
h100 = lp.get_accelerator("H100 SXM")
whole_step = lp.tensor_parallel_decode("llama-2-70b", h100, "NVLink 4", 1, 1, 4096).compute_s
sends = 7 * lp.collective_time("send", llama70.d_model * 2, 2, "NVLink 4")
tp8 = lp.tensor_parallel_decode("llama-2-70b", h100, "NVLink 4", 8, 1, 4096)
print(f"Llama 2 70B on 8 H100 SXM, one token: pipeline {ms(whole_step + sends)} "
      f"(the whole step on one GPU's roofline, plus 7 sends of {llama70.d_model * 2:,} bytes: "
      f"{ms(sends)}); tensor parallel {ms(tp8.step_s)}")

# %% [markdown] slideshow={"slide_type": "-"}
# Expert parallelism (section 10.5) suits Mixtral: each GPU holds whole experts instead of
# slices of all of them, and tokens travel to their experts and back in two all-to-alls per MoE
# layer.

# %% slideshow={"slide_type": "fragment"}
fig, axes = plt.subplots(1, 2, figsize=(8, 3.8), sharey=True)
for ax, name in zip(axes, ("llama-2-70b", "mixtral-8x7b")):
    x, ticks = 0, []
    for acc, link in (("H100 SXM", "NVLink 4"), ("L40S", "PCIe Gen4")):
        for tp in (2, 4, 8):
            r = lp.tensor_parallel_decode(name, acc, link, tp, batch=1, seq_len=4096)
            faded = 1.0 if r.max_batch else 0.35
            ax.bar(x, r.compute_s * 1e3, color="C0", alpha=faded,
                   label="compute (roofline)" if x == 0 else None)
            ax.bar(x, r.communication_s * 1e3, bottom=r.compute_s * 1e3, color="C3", alpha=faded,
                   label="all-reduces" if x == 0 else None)
            ticks.append((x, f"{acc.split()[0]}\np={tp}"))
            x += 1
        x += 0.5
    ax.set_xticks(*zip(*ticks), fontsize="small")
    ax.set_title(name)
axes[0].set_ylabel("latency per token, batch 1 (ms)")
legend_below(axes[0])
fig.suptitle("Tensor-parallel decode: H100 SXM over NVLink, L40S over PCIe (pale: does not fit)")
plt.show()

# %% [markdown] slideshow={"slide_type": "-"}
# **Figure 4.** Per-token latency at batch 1 and 4,096 cached tokens, split into compute
# (roofline) and all-reduces, for the two models on 2, 4 and 8 GPUs. Pale bars are layouts
# whose weights and one sequence's KV cache do not fit. The compute part halves with each
# doubling of $p$; the red part grows with $p$, and over PCIe it is a visible share of the
# step at $p = 8$.

# %% slideshow={"slide_type": "skip"} tags=["hide-cell"]
# The prose of section 10.3.
assert round(llama70.weight_bytes("fp16") / 1e9) == 138
assert round(lp.get_model("mixtral-8x7b").weight_bytes("fp16") / 1e9) == 93
fits = {(r[0], r[1], r[2]): r[4] for r in layout_rows}
assert fits["llama-2-70b", "H100 SXM", 2] > 0 and fits["llama-2-70b", "L40S", 2] == 0
assert fits["llama-2-70b", "L40S", 4] > 0
_lat = {tp: lp.tensor_parallel_decode("llama-2-70b", h100, "NVLink 4", tp, 1, 4096) for tp in (2, 4, 8)}
assert all(_lat[2 * tp].step_s < 0.6 * _lat[tp].step_s for tp in (2, 4))
assert _lat[8].communication_share > _lat[2].communication_share
_tput = {tp: lp.tensor_parallel_decode("llama-2-70b", h100, "NVLink 4", tp, 64, 4096).tokens_per_s_per_gpu
         for tp in (2, 4, 8)}
assert _tput[2] > _tput[4] > _tput[8]
_table_tput = {(r[0], r[1], r[2]): float(r[7].split()[0].replace(",", "")) for r in layout_rows if r[4]}
assert all(_table_tput[m_, a_, 2] < min(_table_tput[m_, a_, 4], _table_tput[m_, a_, 8])
           for m_, a_ in (("llama-2-70b", "H100 SXM"), ("llama-2-70b", "A100 SXM 80GB")))
_mix1 = lp.tensor_parallel_decode("mixtral-8x7b", h100, "NVLink 4", 8, 1, 4096)
_mix64 = lp.tensor_parallel_decode("mixtral-8x7b", h100, "NVLink 4", 8, 64, 4096)
_l64 = lp.tensor_parallel_decode("llama-2-70b", h100, "NVLink 4", 8, 64, 4096)
assert _mix1.step_s < 0.5 * _lat[8].step_s
assert _mix64.tokens_per_s_per_gpu / _l64.tokens_per_s_per_gpu < 0.6 * _lat[8].step_s / _mix1.step_s
assert whole_step + sends > 5 * tp8.step_s

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 10.4 Pipeline parallelism and its bubble
#
# {term}`Pipeline parallelism <pipeline parallelism>` cuts the model's layers into $p$
# consecutive stages, one per device; activations cross a stage boundary with one send. Alone,
# a batch would keep only one stage busy at a time. GPipe {cite:p}`huang2019gpipe` cuts the
# batch into $M$ micro-batches that follow each other through the stages: while stage 2 works
# on micro-batch 1, stage 1 already works on micro-batch 2. With equal stages, one pass takes
# $M + p - 1$ stage-times, during $M$ of which each stage is busy, so each stage idles a
# fraction
#
# $$
# \text{bubble} = \frac{p - 1}{M + p - 1}
# $$
#
# of the time (`lp.pipeline_bubble_fraction(p, M)`). More micro-batches shrink the bubble,
# but each is smaller, and a small piece of work runs less efficiently. Decoding makes many
# passes, a micro-batch's next pass starting when its token comes back from the last stage, so
# with $M \ge p$ the stages stay busy after the first pass
# (`lp.pipeline_bubble_fraction(p, M, passes)` counts it for any number of passes).
#
# `run_pipeline_parallel(model, p, prompts, new_tokens, micro_batches)` runs the trained
# target in two stages of two layers each, eight prompts of 64 tokens, and measures each
# stage's idle share of the prefill pass from when it computed. *Predict*: the measured
# bubble follows the formula while micro-batches are large, then exceeds it when a
# micro-batch's work gets as short as the sends, receives and Python around it, which the
# formula counts as free; and the two stages are not equal (the first also embeds, the last
# runs the head).

# %% slideshow={"slide_type": "-"} tags=["nbval-ignore-output"]
pp_prompts = torch.randint(0, target.config.vocab_size, (8, 64),
                           generator=torch.Generator().manual_seed(1))
PP_NEW = 4
pp_single = generate(target, pp_prompts, PP_NEW).tokens
pp_runs = {}
with watch_load() as load:
    for micro in (1, 2, 4, 8):
        pp_runs[micro] = run_pipeline_parallel(target, WORLD, pp_prompts, PP_NEW,
                                               micro_batches=micro, threads=1)
display(lp.Table(["micro-batches M", "tokens equal", "prefill bubble, (p-1)/(M+p-1)",
                  "prefill idle, measured (mean of stages)", "decode bubble, formula",
                  "decode idle, measured"],
                 [(m_, torch.equal(r.tokens, pp_single), lp.pipeline_bubble_fraction(WORLD, m_),
                   r.prefill.mean_idle, r.decode.predicted_idle, r.decode.mean_idle)
                  for m_, r in pp_runs.items()],
                 title=f"Trained target in {WORLD} stages, 8 prompts of 64 tokens, {PP_NEW} tokens each",
                 formats={"prefill bubble, (p-1)/(M+p-1)": ".3f",
                          "prefill idle, measured (mean of stages)": ".3f",
                          "decode bubble, formula": ".3f", "decode idle, measured": ".3f"}))
print(load.note())

# %% slideshow={"slide_type": "fragment"}
ax = new_axes(f"Pipeline bubble of the prefill, {WORLD} stages", "micro-batches M",
              "idle share of each stage")
grid = np.arange(1, 9)
ax.plot(grid, [lp.pipeline_bubble_fraction(WORLD, int(m_)) for m_ in grid], "-", color="gray",
        label="(p - 1) / (M + p - 1)")
ax.plot(list(pp_runs), [r.prefill.mean_idle for r in pp_runs.values()], "o", color="C0",
        ms=8, label="measured, mean of the stages")
for s in range(WORLD):
    ax.plot(list(pp_runs), [r.prefill.idle[s] for r in pp_runs.values()], "_", color="C0",
            ms=14, label="measured, each stage" if s == 0 else None)
ax.set_xticks(list(pp_runs))
ax.set_ylim(0, 1)
legend_below(ax, ncol=3)
plt.show()

# %% [markdown] slideshow={"slide_type": "-"}
# **Figure 5.** The prefill's idle share of each stage against the number of micro-batches:
# GPipe's formula (line), and the measured mean and each stage (marks). The table says where
# they agree and where the measured bubble parts from the formula. In decode, compare the
# table's measured idle share with the formula's: a micro-batch's decode step is a few tokens'
# work, comparable to the round trip of its token from the last stage back to the first, a
# cost the formula leaves out, so expect the measured share well above the formula. Pipelines
# serve large batches, where a stage's work dwarfs the sends.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 10.5 Expert parallelism
#
# A mixture-of-experts layer ({term}`MoE`, chapter 8) has $E$ expert FFNs, of which each token
# uses $k$. {term}`Expert parallelism` puts $E/p$ whole experts on each of $p$ devices and keeps
# the rest of the model (attention, router) on every device, each working on its own share of
# the batch. In every MoE layer, each token travels to the devices of its $k$ experts and its
# results travel back: two all-to-alls {cite:p}`lepikhin2021gshard`. For $T$ tokens of width
# $D$ spread evenly over the devices with uniform routing, a share $(p-1)/p$ of the $T k$
# token-expert pairs leave their device, so the layer moves about
#
# $$
# 2 \cdot T k D\, b \cdot \frac{p-1}{p} \ \text{bytes in all}
# $$
#
# and each all-to-all is one of $T k D b / p$ bytes per device (`lp.collective_time("all_to_all",
# ...)` times it). For Mixtral ($E = 8$, $k = 2$, $D = 4096$, 32 layers) over 8 GPUs:

# %% slideshow={"slide_type": "-"}
mixtral = lp.get_model("mixtral-8x7b")
ep_rows = []
for tokens in (1 * 8, 64 * 8, 4096):  # a decode of batch 8 and 64, a 4,096-token prefill
    per_device = tokens * mixtral.experts_per_token * mixtral.d_model * 2 / 8  # fp16
    for link in ("NVLink 4", "NDR"):
        one = lp.collective_time("all_to_all", per_device, 8, link)
        ep_rows.append((tokens, lp.format_bytes(per_device, binary=True), lp.get_link(link).name,
                        one, 2 * mixtral.n_layers * one))
lp.Table(["tokens T", "all-to-all input per GPU", "link", "one all-to-all", "per forward pass (64)"],
         ep_rows, title="Mixtral 8x7B, expert parallel over 8 GPUs, alpha-beta model",
         formats={"one all-to-all": lp.format_seconds, "per forward pass (64)": lp.format_seconds})

# %% [markdown] slideshow={"slide_type": "-"}
# Measured: `llmperf.measured.expert_parallel.run_expert_parallel(model, p, prompts)` runs one
# forward pass of the trained MoE model of chapter 8 (4 layers, 4 experts of which 2 per token)
# with two experts on each of two processes, each process taking half of the sequences; in
# every MoE layer the (token, expert) rows go to their experts' process and back with
# `torch.distributed`'s all-to-all. *Predict*: its logits equal one process's; the bytes that
# cross are near the uniform-routing figure $2 T k D b (p-1)/p$, above it or below it by how
# often the router picks an expert on the token's own process; and on this machine the
# exchanges make the pass slower than one process.

# %% slideshow={"slide_type": "-"} tags=["nbval-ignore-output"]
moe = load_trained("moe").model
ep_prompts = torch.randint(0, moe.config.vocab_size, (8, 64), generator=torch.Generator().manual_seed(2))
with watch_load() as load:
    ep = run_expert_parallel(moe, WORLD, ep_prompts, repeats=5, threads=1)
    with torch.inference_mode():
        ep_single = moe(ep_prompts)
        one_pass = benchmark(lambda: moe(ep_prompts), warmup=1, repeat=5)
print(f"logits equal one process's: {torch.allclose(ep.logits, ep_single, atol=1e-4)} "
      f"(largest difference {(ep.logits - ep_single).abs().max().item():.1e})")
print(f"bytes exchanged {ep.bytes_exchanged:,}; uniform routing predicts {ep.bytes_uniform:,.0f} "
      f"({ep.bytes_exchanged / ep.bytes_uniform:.2f}x); if every row left its process "
      f"{ep.bytes_if_all_leave:,}")
print(f"rows each process's experts ran: {ep.rows_run}")
print(f"forward pass: {ms(ep.forward_s)} on {WORLD} processes, of which {ms(ep.communication_s)} "
      f"in all-to-alls; {ms(one_pass.median_s)} on one process")
print(load.note())

# %% [markdown] slideshow={"slide_type": "-"}
# As with tensor parallelism, decode's exchanges are latency-bound: $2 \cdot 32 = 64$
# all-to-alls per token step, each of $p - 1$ messages. Two facts the model leaves out matter
# in practice: routing is not uniform, so the busiest device sets the pace, and serving systems
# cap each expert's load per step, dropping or rerouting the excess.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 10.6 Serving at cluster scale
#
# Beyond a model that fits (on one GPU or on a tensor-parallel group), a service grows by
# *replicas*: identical instances, each running the single-instance scheduler of chapter 5,
# behind a router that sends each request to one of them. `simulate_cluster(requests,
# replicas, router, ...)` runs them together in simulated time, with three routers:
# `round_robin` (request $i$ to replica $i \bmod R$), `least_loaded` (the fewest outstanding
# tokens at the arrival) and `prefix` (the replica whose prefix cache holds the longest
# prefix of the prompt, ties to the least loaded; chapter 6's prefix caching).
#
# The workload: multi-turn chats, each turn's prompt the whole conversation so far, so a turn
# that reaches the replica holding its conversation's KV blocks computes only its new tokens.
# Llama 2 7B on four A10s (the running example), paged KV memory with prefix caching.
# *Predict*: round robin ignores both load and caches; least loaded balances load; the prefix
# router keeps conversations where their caches are, and should cut the time to first token.

# %% slideshow={"slide_type": "-"}
llama7 = lp.get_model("llama-2-7b")
a10 = lp.get_accelerator("A10")
a10_steps = sv.RooflineStepTime(llama7, a10)
a10_kv = bt.kv_capacity_tokens(llama7, a10)
ROUTERS = ("round_robin", "least_loaded", "prefix")


def conversations(rate_per_s, system_tokens=0, n=60):
    """n four-turn chats starting at rate_per_s, each turn 30 to 40 s after the one before
    (a uniform extra 0 to 10 s per turn, so that users interleave at random), sorted by
    arrival: the order a router sees them in."""
    requests = sv.multi_turn_workload(n, 4, sv.LogNormal(300, 1.0, 800), sv.LogNormal(150, 1.0, 300),
                                      think_s=30.0, rate_per_s=rate_per_s,
                                      system_tokens=system_tokens, seed=0)
    rng = np.random.default_rng(0)
    jittered = [dataclasses.replace(q, arrival_s=q.arrival_s + float(rng.uniform(0, 10)))
                for q in requests]  # below 30 s: a turn still comes after the one before
    return sorted(jittered, key=lambda q: q.arrival_s)


def serve_cluster(requests, router, replicas=4):
    return simulate_cluster(requests, replicas, router, policy="continuous", max_batch=16,
                            step_time=a10_steps, kv_capacity_tokens=a10_kv, kv_memory="paged",
                            prefix_caching=True)


chat_rates = (0.5, 1.0, 2.0, 4.0)
router_runs = {(router, rate): serve_cluster(conversations(rate), router)
               for router in ROUTERS for rate in chat_rates}
shared = serve_cluster(conversations(1.0, system_tokens=200), "prefix")
lp.Table(["router", "TTFT p50", "TTFT p90", "TPOT p50", "prompt tokens cached",
          "requests per replica"],
         [(router, r.percentile("ttft_s", 50), r.percentile("ttft_s", 90),
           r.percentile("tpot_s", 50), f"{r.prefix_hit_rate:.0%}",
           " / ".join(map(str, r.requests_served())))
          for router in ROUTERS for r in [router_runs[router, 2.0]]]
         + [("prefix, 200-token system prompt shared by all", shared.percentile("ttft_s", 50),
             shared.percentile("ttft_s", 90), shared.percentile("tpot_s", 50),
             f"{shared.prefix_hit_rate:.0%}", " / ".join(map(str, shared.requests_served())))],
         title="Llama 2 7B on 4 A10s, 240 turns of 60 chats starting at 2 per second",
         formats={"TTFT p50": lp.format_seconds, "TTFT p90": lp.format_seconds,
                  "TPOT p50": lp.format_seconds})

# %% slideshow={"slide_type": "fragment"}
ax = new_axes("Routers of 4 replicas (Llama 2 7B, A10): tail time to first token",
              "conversations started per second", "TTFT, 90th percentile (ms)")
for i, router in enumerate(ROUTERS):
    ax.plot(chat_rates, [router_runs[router, r].percentile("ttft_s", 90) * 1e3 for r in chat_rates],
            "o-", color=f"C{i}", label=router)
ax.set_ylim(bottom=0)
ax.set_xticks(chat_rates)
legend_below(ax, ncol=3)
plt.show()

# %% [markdown] slideshow={"slide_type": "-"}
# **Figure 6.** The 90th percentile of the time to first token against the rate at which chats
# start, for each router. Round robin and least loaded both send a conversation's next turn
# to whichever replica their rule picks, which holds its earlier turns only by chance (one in
# four), so most of each prompt is computed again; at these loads their tails are alike. The
# prefix router keeps each conversation on the replica that holds its cache: about half of all
# prompt tokens are never recomputed, and the tail of the time to first token falls by about
# half. The table's last row shows the prefix rule's trap: when every prompt starts with the
# same system prompt, the first replica to cache it holds the longest prefix for every request
# and receives all of them, and its queue sets everyone's latency. Production routers therefore
# weigh load and cache hits together (for example, falling back to the least loaded replica
# when the loads drift apart).

# %% slideshow={"slide_type": "skip"} tags=["hide-cell"]
# Section 10.6's first claims, from the simulated runs.
_p90 = {k: v.percentile("ttft_s", 90) for k, v in router_runs.items()}
assert all(_p90["prefix", r] < 0.7 * min(_p90["round_robin", r], _p90["least_loaded", r])
           for r in chat_rates)
for rate in chat_rates:
    _hits = {router: router_runs[router, rate].prefix_hit_rate for router in ROUTERS}
    assert 0.4 < _hits["prefix"] > 2 * max(_hits["round_robin"], _hits["least_loaded"])
assert max(shared.requests_served()) == len(shared.requests)
assert shared.percentile("ttft_s", 90) > _p90["prefix", 1.0]

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### Disaggregated prefill and decode
#
# Prefill and decode want different things (chapter 4): a prefill is a large matrix product,
# bound by compute; a decode step reads every weight for a few tokens, bound by bandwidth.
# Run on the same GPU, they interfere: a newcomer's prefill lengthens the step of every
# running decode (chapter 5's prefill stall), and one instance's parallelism must suit both.
# {term}`Disaggregated serving` runs them on separate pools of instances: a prefill instance
# computes a prompt and its first token, the prompt's KV cache moves to a decode instance, and
# the decode instance generates the rest {cite:p}`zhong2024distserve,patel2024splitwise`.
#
# `simulate_disaggregated(requests, prefill_replicas, decode_replicas, prefill_step_time,
# decode_step_time, kv_transfer_s)` simulates it: each pool runs chapter 5's scheduler; a
# request's first token appears at the end of the iteration that completes its prompt; its KV
# then takes `kv_transfer_s(request)` seconds to arrive; it joins the decode instance's
# running batch at the next iteration boundary (an idle instance starts at once) and yields
# one token per iteration there. By hand first: one request, prompt of 8 tokens, 3 output
# tokens, one-second iterations on both sides, a 0.5 s transfer. The prefill iteration ends at
# 1.0 s with the first token; the KV arrives at 1.5 s; the idle decode instance starts at once
# and yields token 2 at 2.5 s and token 3 at 3.5 s; TPOT is $(3.5 - 1.0)/2 = 1.25$ s, where a
# colocated instance would give 1 s.

# %% slideshow={"slide_type": "-"}
one_second = sv.LinearStepTime(base_s=1.0, per_token_s=0.0, per_kv_token_s=0.0)
by_hand = simulate_disaggregated([sv.Request(0.0, 8, 3)], 1, 1, one_second, one_second,
                                 kv_transfer_s=lambda request: 0.5)
r = by_hand.requests[0]
print(f"first token {r.first_token_s} s, KV at the decode instance {by_hand.kv_arrival_s[0]} s, "
      f"last token {r.finish_s} s, TPOT {r.tpot_s} s")

# %% [markdown] slideshow={"slide_type": "-"}
# The transfer is the price of disaggregation, paid once per request, between its first and
# second token. `kv_transfer(model, link)` prices it from the KV bytes of the prompt and a
# catalog link (`lp.kv_transfer_time`, one send):

# %% slideshow={"slide_type": "-"}
llama13 = lp.get_model("llama-2-13b")
lp.Table(["model", "prompt tokens", "KV bytes"] + [lp.get_link(n).name for n in ("NVLink 3", "PCIe Gen4", "NDR")],
         [(m_.name, n, lp.format_bytes(m_.kv_cache_bytes(n, 1, "fp16")),
           *(lp.kv_transfer_time(m_, n, link) for link in ("NVLink 3", "PCIe Gen4", "NDR")))
          for m_ in (llama13, llama70) for n in (161, 2048)],
         title="Moving a prompt's KV cache (fp16) from a prefill GPU to a decode GPU",
         formats={lp.get_link(n).name: lp.format_seconds for n in ("NVLink 3", "PCIe Gen4", "NDR")})

# %% [markdown] slideshow={"slide_type": "-"}
# Set each row beside a decode step of tens of milliseconds: for a chat-sized prompt the
# transfer is a small part of one step on every link, while a 2,048-token prompt of Llama 2
# 13B takes about as long as a whole step, or longer, over PCIe and over the network (read the
# table's last columns); the transfer overlaps
# other requests' work, but it adds to that request's time to its second token. Llama 2 70B's
# grouped-query attention makes its cache per token smaller than Llama 2 13B's.

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### Goodput per GPU: colocated against disaggregated
#
# DistServe's measure is {term}`goodput` per GPU: the highest request rate at which 90% of
# requests meet both the {term}`TTFT` and the {term}`TPOT` limit, divided by the GPUs used
# {cite:p}`zhong2024distserve`. We compare, for Llama 2 13B on A100 SXM 80GB GPUs serving
# chapter 5's chat workload (ShareGPT's mean lengths): two colocated instances
# ({term}`continuous batching`, and {term}`chunked prefill` with a budget of 256 tokens), and
# disaggregated pools of one prefill instance and two or three decode instances, the KV moving
# over NVLink 3. Each configuration runs at rates per GPU from 3 to 10 requests per second, and
# each run is judged against a tight SLO (TTFT 0.25 s, TPOT 30 ms) and a loose one (TTFT 1 s,
# TPOT 100 ms). (For orientation: DistServe's artifact scripts set 200 ms and 100 ms for
# OPT-13B on ShareGPT {cite:p}`distserve_artifact`.)
#
# A run of 2,000 requests fills up, runs, and drains; only the middle half of the requests, in
# order of arrival, sees the steady state, so attainment is counted over them.
#
# *Predict*: chat prompts are short (about 160 tokens) and outputs long (about 340), so decode
# dominates, and a prefill pool of one instance needs two or three decode instances behind it.
# Whether disaggregation wins depends on how much a prefill in a batch slows its decodes.

# %% slideshow={"slide_type": "-"}
a100 = lp.get_accelerator("A100 SXM 80GB")
a100_steps = sv.RooflineStepTime(llama13, a100)
a100_kv = bt.kv_capacity_tokens(llama13, a100)
nvlink_transfer = kv_transfer(llama13, "NVLink 3")
N_CHAT = 2000
SLOS = {"tight": (0.25, 0.030), "loose": (1.0, 0.100)}
CONFIGS = {"colocated, continuous (2 GPUs)": ("colocated", 2, 0, {}),
           "colocated, chunked 256 (2 GPUs)": ("colocated", 2, 0, dict(policy="chunked", token_budget=256)),
           "disaggregated 1P + 2D (3 GPUs)": ("disaggregated", 1, 2, {}),
           "disaggregated 1P + 3D (4 GPUs)": ("disaggregated", 1, 3, {})}
PER_GPU_RATES = (3, 4, 5, 6, 7, 8, 10)


def serve(config, rate_per_gpu):
    kind, a, b, extra = CONFIGS[config]
    requests = sv.chat_workload(N_CHAT, rate_per_s=rate_per_gpu * (a + b), seed=0)
    args = dict(policy="continuous", max_batch=128, kv_capacity_tokens=a100_kv) | extra
    if kind == "colocated":
        return simulate_cluster(requests, a, "least_loaded", step_time=a100_steps, **args)
    return simulate_disaggregated(requests, a, b, a100_steps, a100_steps, nvlink_transfer, **args)


def steady_attainment(run, ttft_s, tpot_s):
    """Share of the middle half of the requests (in order of arrival) meeting both limits."""
    middle = run.requests[len(run.requests) // 4: 3 * len(run.requests) // 4]
    return float(np.mean([q.meets(ttft_s, tpot_s) for q in middle]))


attainment = {(c, s): [] for c in CONFIGS for s in SLOS}
for config in CONFIGS:
    for rate in PER_GPU_RATES:
        run = serve(config, rate)
        for slo, limits in SLOS.items():
            attainment[config, slo].append(steady_attainment(run, *limits))


def goodput_per_gpu(curve, goal=0.9):
    """The rate per GPU where attainment falls through the goal (linear between the runs)."""
    for (r0, a0), (r1, a1) in zip(zip(PER_GPU_RATES, curve), zip(PER_GPU_RATES[1:], curve[1:])):
        if a0 >= goal > a1:
            return r0 + (a0 - goal) / (a0 - a1) * (r1 - r0)
    return PER_GPU_RATES[-1] if curve[-1] >= goal else 0.0


goodputs = {key: goodput_per_gpu(curve) for key, curve in attainment.items()}
display(lp.Table(["configuration"] + [f"goodput per GPU, {s} (req/s)" for s in SLOS],
                 [(c, *(goodputs[c, s] for s in SLOS)) for c in CONFIGS],
                 title="Llama 2 13B, A100 SXM 80GB, chat workload: 90% of requests within both limits",
                 formats={f"goodput per GPU, {s} (req/s)": ".2f" for s in SLOS}))
for slo in SLOS:
    best_colocated = max(goodputs[c, slo] for c in CONFIGS if c.startswith("colocated"))
    best_split = max(goodputs[c, slo] for c in CONFIGS if c.startswith("disaggregated"))
    print(f"{slo} SLO: best disaggregated / best colocated goodput per GPU = "
          f"{best_split / best_colocated:.2f}")

# %% slideshow={"slide_type": "fragment"}
fig, axes = plt.subplots(1, 2, figsize=(8, 3.8), sharey=True)
for ax, (slo, (ttft, tpot)) in zip(axes, SLOS.items()):
    for i, config in enumerate(CONFIGS):
        ax.plot(PER_GPU_RATES, attainment[config, slo], "o-", color=f"C{i}", label=config)
    ax.axhline(0.9, color="gray", ls=":", lw=1)
    ax.set(title=f"{slo}: TTFT {ttft} s, TPOT {tpot * 1e3:.0f} ms",
           xlabel="requests per second per GPU")
axes[0].set_ylabel("SLO attainment (middle half)")
legend_below(axes[0])
plt.show()

# %% [markdown] slideshow={"slide_type": "-"}
# **Figure 7.** SLO attainment against the request rate per GPU, for the colocated and the
# disaggregated configurations, under the tight and the loose SLO; goodput per GPU is where a
# curve crosses 90% (dotted line). The printed ratios say which family serves more requests
# per GPU under each SLO: in this simulation the answer differs between the tight and the
# loose SLO, and by tens of percent, not by factors.

# %% [markdown] slideshow={"slide_type": "-"}
# **Published figures beside ours.** DistServe reports that across several models,
# applications and SLOs it serves up to 7.4 times more requests, or meets a 12.6 times
# tighter SLO, than the colocated systems it compares with, with over 90% of requests within
# both limits (the abstract of the OSDI version) {cite:p}`zhong2024distserve`. Splitwise reports up to 1.4 times the throughput at 20% lower
# cost, or 2.35 times the throughput at the same cost and power (abstract)
# {cite:p}`patel2024splitwise`. Our simulation gives much smaller differences, in either
# direction, for reasons it makes visible:
#
# - *Interference.* Our step-time model costs a mixed iteration at the roofline of its
#   operators. A batch of decodes is bound by reading the weights, so the few hundred prompt
#   tokens mixed into it mostly fill arithmetic units that were idle: the prefill rides along
#   for little extra time, and colocation loses little. Real kernels interfere more than the
#   roofline says, which is the effect DistServe measured.
# - *Waste.* A GPU that only prefills chat prompts is busy a fraction of the time: its
#   bandwidth goes unused, where a colocated GPU spends it on decodes.
# - *Search.* DistServe chooses each pool's tensor and pipeline parallelism and the ratio of
#   the pools for the SLO; we try two ratios and no parallelism.
# - *Finite runs and averages.* TPOT is each request's average, so a request that waits for a
#   decode slot after its first token can still meet a loose TPOT (100 ms against 30 ms steps
#   leaves seconds of slack over 340 tokens). An overloaded decode pool fails only once its
#   queue has grown past that slack, which a run of 2,000 requests may not reach: the loose
#   column flatters the disaggregated pools. A tight TPOT leaves no such slack.
#
# The shape that survives: the best ratio of pools follows the workload (decode-heavy chat
# wants several decode instances per prefill instance), and disaggregation's advantage depends
# on how far prefill slows decode, on the SLO and on how much each pool's hardware suits its
# phase, which is Splitwise's point, next.

# %% slideshow={"slide_type": "skip"} tags=["hide-cell"]
# The hand-worked timeline, and the prose's figures.
assert (r.first_token_s, by_hand.kv_arrival_s[0], r.finish_s, r.tpot_s) == (1.0, 1.5, 3.5, 1.25)
assert lp.kv_transfer_time(llama70, 2048, "NVLink 3") < lp.kv_transfer_time(llama13, 2048, "NVLink 3")
_lens = sv.chat_workload(N_CHAT, rate_per_s=1.0, seed=0)
assert 150 < np.mean([q.prompt_tokens for q in _lens]) < 175
assert 320 < np.mean([q.output_tokens for q in _lens]) < 360
assert all(g > 0 for g in goodputs.values())
# Figure 7's caption: the winner differs between the SLOs, by tens of percent.
_ratio = {slo: max(goodputs[c, slo] for c in CONFIGS if c.startswith("disaggregated"))
          / max(goodputs[c, slo] for c in CONFIGS if c.startswith("colocated")) for slo in SLOS}
assert 0.7 < _ratio["tight"] < 1 < _ratio["loose"] < 1.5
# "Waste": the lone prefill instance of 1P + 3D is busy a small share of the time.
_split = serve("disaggregated 1P + 3D (4 GPUs)", 6)
_busy = sum(it.duration_s for it in _split.prefill.iterations) / _split.prefill.makespan_s
assert _busy < 0.5

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### Different hardware for each phase, and the cost per million tokens
#
# Splitwise's observation {cite:p}`patel2024splitwise`: from A100 to H100, compute grew
# much more than memory bandwidth, so a newer GPU speeds prefill far more than decode. A
# prefill pool on the newest GPUs and a decode pool on older ones may serve more per dollar.
# The roofline shows it for Llama 2 13B: a 1,024-token prefill, and a decode step of 64
# sequences of 1,024 cached tokens, on three catalog GPUs. The prices are **assumptions** for
# illustration, round figures of the order of on-demand cloud rates per GPU-hour; put in your
# own.

# %% slideshow={"slide_type": "-"}
PRICE_PER_GPU_HOUR = {"A10": 1.00, "A100 SXM 80GB": 2.00, "H100 SXM": 3.00}  # assumptions, USD
phase_rows = []
for name, price in PRICE_PER_GPU_HOUR.items():
    gpu = lp.get_accelerator(name)
    prefill_s = lp.step_costs(llama13, "prefill", 1, 1024).on(gpu).time_s
    decode = lp.step_costs(llama13, "decode", 64, 1024).on(gpu).time_s
    fits = lp.max_batch_size(llama13, gpu, seq_len=2048) >= 1
    usd_per_s = price / 3600
    phase_rows.append((name, f"{gpu.peak('fp16') / 1e12:.0f} TFLOP/s, "
                             f"{gpu.mem_bandwidth / 1e9:,.0f} GB/s", fits, prefill_s,
                       usd_per_s * prefill_s / 1024 * 1e6, decode,
                       usd_per_s * decode / 64 * 1e6))
display(lp.Table(["GPU", "peak fp16, bandwidth", "13B fits", "prefill, 1,024 tokens",
                  "USD per M prompt tokens", "decode step, B = 64", "USD per M output tokens"],
                 phase_rows,
                 title="Llama 2 13B on the roofline (fp16), priced at assumed USD per GPU-hour",
                 formats={"prefill, 1,024 tokens": lp.format_seconds,
                          "USD per M prompt tokens": ".3f", "decode step, B = 64": lp.format_seconds,
                          "USD per M output tokens": ".3f"}))
_ph = {row[0]: row for row in phase_rows}
prefill_speedup = _ph["A100 SXM 80GB"][3] / _ph["H100 SXM"][3]
decode_speedup = _ph["A100 SXM 80GB"][5] / _ph["H100 SXM"][5]
print(f"H100 SXM over A100 SXM 80GB: prefill {prefill_speedup:.2f}x faster, decode step "
      f"{decode_speedup:.2f}x faster. An H100-hour is worth up to {prefill_speedup:.2f} A100-hours "
      f"for prompt tokens, but only {decode_speedup:.2f} for output tokens.")

# %% [markdown] slideshow={"slide_type": "-"}
# From A100 to H100 the prefill gets faster by about the ratio of peak compute, the decode step
# by about the ratio of bandwidths, the smaller of the two. So whatever the prices, an H100 is
# worth more per hour to a prefill pool than to a decode pool: at any price ratio between the
# two printed speedups, prompt tokens are cheaper on H100s and output tokens on A100s, and a
# cluster that splits the phases across the two kinds beats either kind alone. (The A10 cannot
# hold the 13B model at all.) The same arithmetic turns any goodput into a cost: a service that sustains
# $g$ requests per second per GPU, of $G$ output tokens each, at $c$ dollars per GPU-hour,
# spends $c / (3600\, g\, G) \times 10^6$ dollars per million output tokens:

# %% slideshow={"slide_type": "-"}
mean_output = np.mean([q.output_tokens for q in sv.chat_workload(N_CHAT, rate_per_s=1.0, seed=0)])
lp.Table(["configuration", "SLO", "goodput per GPU (req/s)", "output tokens/s per GPU",
          "USD per M output tokens"],
         [(c, s, goodputs[c, s], goodputs[c, s] * mean_output,
           PRICE_PER_GPU_HOUR["A100 SXM 80GB"] / 3600 / (goodputs[c, s] * mean_output) * 1e6)
          for c in CONFIGS for s in SLOS],
         title="Cost per million output tokens on A100 SXM 80GB at an assumed 2.00 USD per GPU-hour",
         formats={"goodput per GPU (req/s)": ".2f", "output tokens/s per GPU": ",.0f",
                  "USD per M output tokens": ".3f"})

# %% slideshow={"slide_type": "skip"} tags=["hide-cell"]
# Splitwise's shape on the roofline: the H100 speeds prefill by about the compute ratio and
# decode by about the bandwidth ratio, much less.
assert prefill_speedup > 2.5 and 1.2 < decode_speedup < 1.8 and prefill_speedup > 1.5 * decode_speedup
assert not _ph["A10"][2]
_h, _a = lp.get_accelerator("H100 SXM"), a100
assert _h.peak("fp16") / _a.peak("fp16") > 1.5 * _h.mem_bandwidth / _a.mem_bandwidth

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Worked problems
#
# **Problem 1 (an all-reduce by hand).** Eight H100 SXM GPUs all-reduce one decode token's
# activation of Llama 2 70B (8,192 values in fp16) over NVLink 4 ($\alpha = 0.6$ µs,
# 450 GB/s each way). How long does it take, and what share is latency? How long do a token's
# 160 all-reduces take?
#
# <details><summary>Answer</summary>
#
# $m = 16{,}384$ bytes. $2(p-1) = 14$ steps of $\alpha + m/(p\beta_\ell) = 0.6\ \mu\text{s} +
# 2{,}048 / 450 \times 10^{9}\ \text{s} = 0.6 + 0.00455$ µs: $14 \times 0.60455 = 8.46$ µs,
# 99.2% of it latency. 160 of them: 1.35 ms per token, against about 5.1 ms of weight reads
# per GPU (chapter 4): latency, not bandwidth, is what tensor parallelism costs in decode.
#
# </details>
#
# **Problem 2 (tensor-parallel bytes per token).** Llama 2 13B ($L = 40$, $D = 5120$) runs
# with $p = 4$ in fp16. How many bytes does each GPU send per decode token?
#
# <details><summary>Answer</summary>
#
# Each all-reduce of $m = 5120 \cdot 2 = 10{,}240$ bytes sends $2 \cdot \tfrac34 \cdot 10{,}240
# = 15{,}360$ bytes per GPU; two per layer, 40 layers: $80 \cdot 15{,}360 = 1{,}228{,}800$
# bytes, about 1.23 MB per token.
#
# </details>
#
# **Problem 3 (the bubble).** A pipeline of 4 stages runs 12 micro-batches, each taking 10 ms
# per stage. How long does the pass take, and what fraction of the time does each stage idle?
# How many micro-batches bring the bubble under 10%?
#
# <details><summary>Answer</summary>
#
# $M + p - 1 = 15$ stage-times: 150 ms, of which each stage works 120 ms: idle $3/15 = 20\%$.
# Under 10% needs $3/(M + 3) < 0.1$, $M > 27$: 28 micro-batches.
#
# </details>
#
# **Problem 4 (a disaggregated timeline).** Two requests reach a disaggregated pair at 0 s
# (prompt 100 tokens, 3 output tokens) and at 0.5 s (prompt 100 tokens, 2 output tokens).
# Prefill iterations take 1 s, decode iterations 1 s, the KV transfer 0.25 s; both instances
# batch whatever is ready. When does each token appear?
#
# <details><summary>Answer</summary>
#
# Request A: its prefill runs 0 to 1 s (first token at 1.0 s); request B arrives during it and
# is prefilled 1 to 2 s (first token at 2.0 s). A's KV reaches the idle decode instance at
# 1.25 s, which starts at once: A's tokens at 2.25 and 3.25 s. B's KV arrives at 2.25 s, just
# as that first decode iteration ends, so B joins the second: its second token at 3.25 s.
# TTFT: 1.0 and 1.5 s; TPOT: A $(3.25 - 1.0)/2 = 1.125$ s, B $3.25 - 2.0 = 1.25$ s.
#
# </details>
#
# **Problem 5 (which layout fits).** Llama 2 70B (137.95 GB in fp16; 80 layers, 8 KV heads
# of 128) must serve sequences of 4,096 tokens on L40S GPUs (48 GiB of GDDR6, of which ECC
# leaves 15/16: 48.32 GB). What is the smallest power-of-two tensor-parallel group that
# holds the weights and one sequence, and how many sequences fit on it?
#
# <details><summary>Answer</summary>
#
# One sequence's KV cache: $2 \cdot 2 \cdot 80 \cdot 8 \cdot 128 \cdot 4096 = 1.342$ GB.
# Two GPUs: 68.98 GB of weights each, beyond 48.32 GB. Four GPUs: 34.49 GB of weights each,
# and each holds 2 of the 8 KV heads, a quarter of each sequence's cache, 335.5 MB; so
# $\lfloor (48.32 - 34.49) / 0.3355 \rfloor = 41$ sequences, the `max batch` that
# `lp.tensor_parallel_decode` gives in section 10.3's table.
#
# </details>

# %% slideshow={"slide_type": "skip"} tags=["hide-cell"]
# The worked problems' answers, checked against llmperf.
_t = lp.collective_time("all_reduce", 16384, 8, "NVLink 4")
assert abs(_t - 8.46e-6) < 0.01e-6 and abs(14 * 0.6e-6 / _t - 0.992) < 0.001
assert abs(160 * _t - 1.35e-3) < 0.01e-3
assert lp.tensor_parallel_bytes_per_token("llama-2-13b", 4, "fp16") == 1_228_800
assert abs(lp.pipeline_bubble_fraction(4, 12) - 0.2) < 1e-12
assert lp.pipeline_bubble_fraction(4, 28) < 0.0968 and abs(lp.pipeline_bubble_fraction(4, 27) - 0.1) < 1e-12
_two = simulate_disaggregated([sv.Request(0.0, 100, 3), sv.Request(0.5, 100, 2)], 1, 1,
                              one_second, one_second, kv_transfer_s=lambda q: 0.25)
assert [(q.first_token_s, q.finish_s) for q in _two.requests] == [(1.0, 3.25), (2.0, 3.25)]
assert [q.tpot_s for q in _two.requests] == [1.125, 1.25]
_fit = {tp: lp.tensor_parallel_decode("llama-2-70b", "L40S", "PCIe Gen4", tp, 1, 4096)
        for tp in (2, 4)}
assert _fit[2].max_batch == 0 and _fit[4].max_batch == 41
assert round(llama70.weight_bytes("fp16") / 1e9, 2) == 137.95
assert round(lp.get_accelerator("L40S").usable_capacity() / 1e9, 2) == 48.32
assert llama70.kv_cache_bytes(4096, 1, "fp16") == 2 * 2 * 80 * 8 * 128 * 4096

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Summary
#
# - Collectives cost $\alpha$ per step plus bytes over the one-way bandwidth; a ring
#   all-reduce takes $2(p-1)$ steps. Decode's messages are small and latency-bound, a long
#   prefill's large and bandwidth-bound. Processes on one machine, talking through the
#   operating system, see a far larger $\alpha$ and a far smaller $\beta_\ell$ than GPUs on
#   NVLink.
# - Tensor parallelism splits every layer and all-reduces twice per layer; its tokens equal one
#   process's. It cuts per-token latency once a layer's work split in $p$ saves more than two
#   all-reduces cost, which depends on the link's latency against the device's step: on H100s
#   over NVLink from tens of millions of parameters, across two servers over InfiniBand from
#   billions. It buys latency and memory, not throughput per GPU.
# - Pipeline parallelism exchanges one activation per stage boundary; its bubble is
#   $(p-1)/(M+p-1)$, and it does not shorten a token's latency. Expert parallelism moves
#   tokens to their experts and back in two all-to-alls per MoE layer.
# - A service grows by replicas; a router that knows the replicas' caches and loads cuts the
#   time to first token, and one that follows caches alone can pile every request on one
#   replica.
# - Disaggregated serving moves each prompt's KV cache once and lets each pool suit its phase;
#   whether it beats colocation per GPU depends on how much prefill slows decode, on the
#   SLOs and on the hardware of each pool. Goodput per GPU and a price per GPU-hour give the
#   cost per million tokens.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Exercises
#
# {doc}`Exercise set 10 </exercises/10_beyond_one_device>`: collective times by hand under the
# $\alpha$–$\beta$ model, $\alpha$ and $\beta_\ell$ from two measurements, the bytes tensor
# parallelism sends per token, a pipeline's schedule and bubble, a disaggregated timeline by
# hand, and the smallest tensor-parallel group that fits a model.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## References
#
# ```{bibliography}
# :filter: docname in docnames
# ```
