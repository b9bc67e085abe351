# %% [markdown]
# # Exercises 10: beyond one device
#
# These questions follow chapter 10. They ask how long a collective takes under the
# alpha-beta model, what a link's alpha and bandwidth are from two measurements, how many
# bytes tensor parallelism sends per token, how long a pipeline's pass takes and how much of it
# each stage idles, when each token of a disaggregated service appears, and the smallest
# tensor-parallel group that holds a model and its batch. Write each answer where the cell
# says `raise NotImplementedError(...)`, run the cell, then run the check cell below it: it
# calls your function on a few inputs and prints PASS or FAIL with the expected answer, what
# you returned and the tolerance. The grader runs the same checks plus hidden ones on other
# inputs, so write the general rule rather than the numbers of the visible examples.
#
# You may look things up in `llmperf`: a model's shape (`lp.get_model(name)` and its
# `n_layers`, `d_model`, `n_heads`, `n_kv_heads`, `d_head`, `weight_bytes(dtype)`,
# `kv_cache_bytes(tokens, batch, dtype)`), an accelerator's memory
# (`lp.get_accelerator(name).usable_capacity()`), and bytes per element
# (`lp.bytes_per_element(dtype)`). Write the arithmetic yourself: `llmperf.analytic.collectives`
# (`collective_time`, `fit_alpha_beta`), `llmperf.analytic.parallel`
# (`tensor_parallel_bytes_per_token`, `pipeline_bubble_fraction`, `tensor_parallel_decode`) and
# `llmperf.serving` (`simulate_disaggregated`) answer these questions for you and teach you
# nothing. The grader reports calls of them from your answers, and the checks that make one fail.

# %%

import llmperf as lp
from llmperf.grading import case, question

# %% [markdown]
# ## Question 1: a collective under the alpha-beta model (2 points)
#
# `world_size` devices (p below) are joined by links of `bandwidth_both_ways` bytes per second
# (both directions together, as datasheets print it: each direction gets half) and a latency
# of `latency_s` seconds per message. One message of `n` bytes costs `latency_s + n / B`, with
# `B` the one-way bandwidth. The ring algorithms proceed in steps, in each of which every
# device sends one piece while receiving another; `message_bytes` is the whole tensor:
#
# - `"all_reduce"`: `2 (p - 1)` steps, each piece `message_bytes / p`;
# - `"all_gather"`, `"reduce_scatter"` and `"all_to_all"`: `p - 1` steps, each piece
#   `message_bytes / p`;
# - `"send"`: one message of `message_bytes`.
#
# One device (`p = 1`) costs 0 seconds. Return the seconds the collective takes.

# %%
def collective_seconds(op, message_bytes, world_size, bandwidth_both_ways, latency_s):
    """Seconds of collective `op` on a tensor of `message_bytes` over `world_size` devices."""
    ### BEGIN SOLUTION
    p = world_size
    if p == 1:
        return 0.0
    one_way = bandwidth_both_ways / 2
    if op == "send":
        return latency_s + message_bytes / one_way
    steps = 2 * (p - 1) if op == "all_reduce" else p - 1
    return steps * (latency_s + message_bytes / p / one_way)
    ### END SOLUTION


# %%
def _collective(op, message_bytes, world_size, bandwidth_both_ways, latency_s):
    link = lp.Link("exercise", bandwidth_both_ways, latency_s, source="the question")
    return lp.collective_time(op, message_bytes, world_size, link)


question("collective_seconds", points=2,
         visible=[("all_reduce", 16384, 8, 900e9, 0.6e-6)],
         hidden=[case("all_gather", 64 * 2**20, 4, 600e9, 0.6e-6, why="an all-gather: p - 1 steps"),
                 case("reduce_scatter", 2**20, 2, 64e9, 1e-6, why="a reduce-scatter over two devices"),
                 case("all_to_all", 4096, 8, 100e9, 2.7e-6, why="an all-to-all over the network"),
                 case("send", 10**9, 2, 128e9, 1e-6, why="a send moves the whole tensor once"),
                 case("all_reduce", 10**6, 1, 900e9, 0.6e-6, why="one device: nothing to exchange"),
                 case("all_reduce", 4, 16, 50e9, 2.7e-6, why="a tiny message: latency alone")],
         reference=_collective, rel=1e-9, forbid=["llmperf.analytic.collectives"],
         on_forbidden="fail")

# %% [markdown]
# ## Question 2: a link's alpha and bandwidth from two measurements (2 points)
#
# You timed collective `op` over `world_size` devices at two message sizes:
# `sizes_bytes = [m1, m2]` took `seconds = [t1, t2]`. Assume the times follow the model of
# question 1 exactly. Return `[latency_s, one_way_bytes_per_s]`: the alpha and the one-way
# bandwidth `B` (not the both-ways figure) that reproduce both times. (Each time is
# `steps * alpha + bytes_sent / B`, where `bytes_sent` is what one device sends in all its
# steps: two equations, two unknowns.)

# %%
def alpha_and_bandwidth(op, world_size, sizes_bytes, seconds):
    """[alpha in seconds, one-way bandwidth in bytes/s] from two timed message sizes."""
    ### BEGIN SOLUTION
    p = world_size
    steps = 1 if op == "send" else (2 * (p - 1) if op == "all_reduce" else p - 1)
    sent = [m if op == "send" else steps * m / p for m in sizes_bytes]
    inverse_b = (seconds[1] - seconds[0]) / (sent[1] - sent[0])
    alpha = (seconds[0] - sent[0] * inverse_b) / steps
    return [alpha, 1 / inverse_b]
    ### END SOLUTION


# %%
def _fit(op, world_size, sizes_bytes, seconds):
    link = lp.fit_alpha_beta(sizes_bytes, seconds, op, world_size)
    return [link.latency_s, link.one_way]


def _timed(op, p, sizes, alpha, one_way):
    link = lp.Link("timed", 2 * one_way, alpha, source="the question")
    return [lp.collective_time(op, m, p, link) for m in sizes]


question("alpha_and_bandwidth", points=2,
         visible=[("all_reduce", 2, [4, 2**26], _timed("all_reduce", 2, [4, 2**26], 100e-6, 1.5e9))],
         hidden=[case("all_gather", 4, [1024, 2**24], _timed("all_gather", 4, [1024, 2**24], 5e-6, 25e9),
                      why="an all-gather over four devices"),
                 case("send", 2, [8, 2**30], _timed("send", 2, [8, 2**30], 2.7e-6, 50e9),
                      why="a send: one step of the whole tensor"),
                 case("all_to_all", 8, [2**20, 2**22], _timed("all_to_all", 8, [2**20, 2**22], 1e-6, 32e9),
                      why="an all-to-all, both sizes in the bandwidth-bound range"),
                 case("all_reduce", 8, [2**10, 2**28], _timed("all_reduce", 8, [2**10, 2**28], 0.6e-6, 450e9),
                      why="NVLink-like constants over eight devices")],
         reference=_fit, rel=1e-6, forbid=["llmperf.analytic.collectives"], on_forbidden="fail")

# %% [markdown]
# ## Question 3: the bytes tensor parallelism sends per token (2 points)
#
# `model_name` runs Megatron-style over `tp` GPUs: every layer ends its attention and its FFN
# with a ring all-reduce of one token's activation, `d_model` values in `dtype`. Return the
# bytes each GPU sends for one token through all the layers (0 when `tp = 1`). A ring
# all-reduce of `m` bytes makes each GPU send `2 (tp - 1) / tp * m` bytes.

# %%
def tp_bytes_per_token(model_name, tp, dtype):
    """Bytes one GPU sends per token under tensor parallelism over tp GPUs."""
    ### BEGIN SOLUTION
    m = lp.get_model(model_name)
    message = m.d_model * lp.bytes_per_element(dtype)
    return m.n_layers * 2 * (2 * (tp - 1) / tp * message)
    ### END SOLUTION


# %%
question("tp_bytes_per_token", points=2,
         visible=[("llama-2-70b", 8, "fp16")],
         hidden=[case("llama-2-13b", 4, "fp16", why="Llama 2 13B over four GPUs"),
                 case("llama-2-7b", 1, "fp16", why="one GPU: nothing sent"),
                 case("mixtral-8x7b", 2, "bf16", why="Mixtral over two GPUs: its attention and MoE layers"),
                 case("gpt2", 4, "fp32", why="a small model in fp32"),
                 case("llama-3-70b", 8, "fp8", why="one byte per value")],
         reference=lambda name, tp, dtype: lp.tensor_parallel_bytes_per_token(name, tp, dtype),
         rel=1e-9, forbid=["llmperf.analytic.parallel", "llmperf.analytic.collectives"],
         on_forbidden="fail")

# %% [markdown]
# ## Question 4: a pipeline's pass and its bubble (2 points)
#
# A model is cut into `stages` equal stages on as many devices; a batch is cut into
# `micro_batches` micro-batches, each taking `stage_s` seconds on every stage. Micro-batch `j`
# (from 0) runs on stage `s` (from 0) in the slot that starts at `(j + s) * stage_s`: it waits
# for the stage before it, and each stage takes the micro-batches in order. Return
# `[pass_s, idle_fraction]`: the seconds from the first micro-batch's start on the first stage
# to the last one's end on the last stage, and the fraction of that time each stage is idle.

# %%
def pipeline_pass(stages, micro_batches, stage_s):
    """[seconds of one pass, idle fraction of each stage] of a GPipe-style schedule."""
    ### BEGIN SOLUTION
    slots = micro_batches + stages - 1
    return [slots * stage_s, (stages - 1) / slots]
    ### END SOLUTION


# %%
question("pipeline_pass", points=2,
         visible=[(4, 12, 0.010)],
         hidden=[case(1, 5, 0.002, why="one stage: no bubble"),
                 case(8, 1, 0.004, why="one micro-batch: a stage works one slot in p"),
                 case(2, 2, 0.5, why="two stages, two micro-batches"),
                 case(16, 64, 0.001, why="a deep pipeline with many micro-batches"),
                 case(3, 100, 0.02, why="many micro-batches: the bubble nearly gone")],
         reference=lambda p, m, t: [(m + p - 1) * t, lp.pipeline_bubble_fraction(p, m)],
         rel=1e-9, abs=1e-15, forbid=["llmperf.analytic.parallel"], on_forbidden="fail")

# %% [markdown]
# ## Question 5: a disaggregated timeline by hand (3 points)
#
# One prefill instance and one decode instance serve `requests`, a list of
# `[arrival_s, output_tokens]` in order of arrival. Every prefill iteration takes `prefill_s`
# seconds and every decode iteration `decode_s`, whatever it holds; moving a request's KV
# cache takes `transfer_s`. Both instances batch without limit:
#
# - **Prefill instance.** When it is idle and a request arrives, it starts an iteration at
#   once; when an iteration ends and requests are waiting, it starts the next one then. An
#   iteration takes every request that has arrived by its start (a request arriving at the
#   very moment it starts is in it). A request's first token appears at the end of its
#   prefill iteration. A request of one output token is then finished.
# - **Transfer.** Otherwise its KV cache reaches the decode instance `transfer_s` later.
# - **Decode instance.** The same rule: an iteration starts at once when the instance is idle
#   and a KV cache arrives, or at the end of the one before when any request is running or
#   has arrived. It takes every running request and every one whose KV cache has arrived by
#   its start. Each iteration gives one token to each request in it; a request leaves after
#   its last token.
#
# Return, for each request in order, `[first_token_s, finish_s]` (the time of its last token).

# %%
def disaggregated_times(requests, prefill_s, decode_s, transfer_s):
    """[[first token time, last token time] for each request] of a prefill/decode pair."""
    ### BEGIN SOLUTION
    n = len(requests)
    first = [0.0] * n
    waiting, free_at = list(range(n)), 0.0
    while waiting:  # prefill: each iteration takes everything arrived by its start
        start = max(free_at, requests[waiting[0]][0])
        batch = [i for i in waiting if requests[i][0] <= start]
        for i in batch:
            first[i] = start + prefill_s
        waiting = [i for i in waiting if i not in batch]
        free_at = start + prefill_s
    finish = list(first)
    moving = sorted((first[i] + transfer_s, i) for i in range(n) if requests[i][1] > 1)
    left = {i: requests[i][1] - 1 for _, i in moving}
    running, t = [], 0.0
    while moving or running:
        if not running:
            t = max(t, moving[0][0])
        running += [i for ready, i in moving if ready <= t]
        moving = [(ready, i) for ready, i in moving if ready > t]
        t += decode_s
        for i in running:
            left[i] -= 1
            if left[i] == 0:
                finish[i] = t
        running = [i for i in running if left[i] > 0]
    return [[first[i], finish[i]] for i in range(n)]
    ### END SOLUTION


# %%
def _simulated(requests, prefill_s, decode_s, transfer_s):
    from llmperf import serving as sv
    from llmperf.serving.disaggregated import simulate_disaggregated

    steps = [sv.LinearStepTime(base_s=s, per_token_s=0.0, per_kv_token_s=0.0)
             for s in (prefill_s, decode_s)]
    run = simulate_disaggregated([sv.Request(float(a), 16, int(g)) for a, g in requests], 1, 1,
                                 *steps, kv_transfer_s=lambda request: transfer_s,
                                 max_batch=max(len(requests), 1))
    return [[r.first_token_s, r.finish_s] for r in run.requests]


question("disaggregated_times", points=3,
         visible=[([[0.0, 3]], 1.0, 1.0, 0.5)],
         hidden=[case([[0.0, 3], [0.5, 2]], 1.0, 1.0, 0.25,
                      why="a second request waits for the next prefill and joins a running decode"),
                 case([[0.0, 1], [0.2, 4]], 0.5, 0.1, 0.05, why="a one-token request never moves"),
                 case([[0.0, 2], [0.0, 5], [0.0, 3]], 0.3, 0.05, 0.02,
                      why="three requests arriving together share every iteration"),
                 case([[0.0, 2], [10.0, 2]], 1.0, 1.0, 1.0, why="the instances fall idle in between"),
                 case([[0.0, 6], [1.0, 2]], 1.0, 0.5, 0.5,
                      why="a KV cache that arrives exactly as an iteration starts joins it"),
                 case([[0.0, 4], [0.1, 4], [0.2, 4], [2.5, 3]], 0.4, 0.3, 0.15,
                      why="prefill batches and decode joins at iteration boundaries")],
         reference=_simulated, rel=1e-9, abs=1e-9, forbid=["llmperf.serving"],
         on_forbidden="fail")

# %% [markdown]
# ## Question 6: the smallest tensor-parallel group that fits (3 points)
#
# `model_name` must serve `batch` sequences of `context_tokens` tokens each on GPUs named
# `accelerator_name`, weights and KV cache in `dtype`. Over `p` GPUs (Megatron-style), each GPU
# holds `weight_bytes(dtype) / p` of the weights and, of each sequence's KV cache, the share of
# the KV heads it holds: `1 / p` when `p` divides the model's `n_kv_heads`, and
# `1 / n_kv_heads` when there are fewer KV heads than GPUs (each head then sits on
# `p / n_kv_heads` GPUs). A group size is possible when it divides `n_heads` and either
# divides `n_kv_heads` or is a multiple of it. It fits when each GPU's weights and KV bytes
# are at most the GPU's `usable_capacity()`. Return the smallest of 1, 2, 4, 8 that is possible
# and fits, or 0 if none does.

# %%
def smallest_tp(model_name, accelerator_name, context_tokens, batch, dtype):
    """Smallest p in (1, 2, 4, 8) whose GPUs each hold their share of weights and KV cache."""
    ### BEGIN SOLUTION
    m = lp.get_model(model_name)
    capacity = lp.get_accelerator(accelerator_name).usable_capacity()
    kv = m.kv_cache_bytes(context_tokens, batch, dtype)
    for p in (1, 2, 4, 8):
        if m.n_heads % p or (m.n_kv_heads % p and p % m.n_kv_heads):
            continue
        share = 1 / p if m.n_kv_heads % p == 0 else 1 / m.n_kv_heads
        if m.weight_bytes(dtype) / p + kv * share <= capacity:
            return p
    return 0
    ### END SOLUTION


# %%
def _smallest(model_name, accelerator_name, context_tokens, batch, dtype):
    from llmperf.analytic.parallel import kv_head_share
    from llmperf.analytic.perfmodel import requests_that_fit

    m = lp.get_model(model_name)
    capacity = lp.get_accelerator(accelerator_name).usable_capacity()
    for p in (1, 2, 4, 8):
        if m.n_heads % p or (m.n_kv_heads % p and p % m.n_kv_heads):
            continue  # kv_head_share refuses this p
        kv_per_sequence = m.kv_cache_bytes(context_tokens, 1, dtype) * kv_head_share(m, p)
        if requests_that_fit(capacity, m.weight_bytes(dtype) / p, kv_per_sequence) >= batch:
            return p
    return 0


question("smallest_tp", points=3,
         visible=[("llama-2-70b", "L40S", 4096, 1, "fp16")],
         hidden=[case("llama-2-70b", "H100 SXM", 4096, 64, "fp16", why="Llama 2 70B with a batch of 64"),
                 case("llama-2-7b", "A10", 4096, 4, "fp16", why="a model that fits one GPU with its batch"),
                 case("llama-2-7b", "A10", 4096, 16, "fp16", why="the batch, not the weights, needs more GPUs"),
                 case("mixtral-8x7b", "A100 SXM 80GB", 32768, 8, "fp16",
                      why="Mixtral with long contexts"),
                 case("llama-3-70b", "L4", 8192, 8, "int8", why="a 70B model on small GPUs in int8"),
                 case("llama-2-70b", "A10", 4096, 256, "fp16", why="nothing up to eight GPUs is enough")],
         reference=_smallest, forbid=["llmperf.analytic.parallel", "llmperf.analytic.perfmodel",
                                      "llmperf.analytic.batching"], on_forbidden="fail")
